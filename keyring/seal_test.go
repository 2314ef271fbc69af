package keyring

import (
	"bytes"
	"errors"
	"testing"

	"github.com/integrity-sys/integrity/internal/envelope"
)

func TestSealRoundTrip(t *testing.T) {
	key, _ := NewRandomKey()
	aad := envelope.AAD(envelope.TypeBootWrapPwPres, bytes.Repeat([]byte{7}, 20))
	for _, n := range []int{0, 1, 32, 1000} {
		pt := bytes.Repeat([]byte{0x5a}, n)
		s, err := Seal(key, pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != n+Overhead {
			t.Fatalf("sealed %d bytes into %d, want %d", n, len(s), n+Overhead)
		}
		got, err := Open(key, s, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("n=%d: open: %v", n, err)
		}
	}
	// Fresh nonce each time: the same plaintext seals differently.
	a, _ := Seal(key, []byte("x"), nil)
	b, _ := Seal(key, []byte("x"), nil)
	if bytes.Equal(a[:NonceSize], b[:NonceSize]) {
		t.Fatal("nonce reused")
	}
}

func TestSealTamper(t *testing.T) {
	key, _ := NewRandomKey()
	aad := envelope.AAD(envelope.TypeBootWrapPwPres, bytes.Repeat([]byte{7}, 20))
	pt := []byte("primary key goes here, 32 bytes!")
	s, err := Seal(key, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	// Every bit of every byte of the sealed value.
	for i := range s {
		for bit := 0; bit < 8; bit++ {
			m := append([]byte(nil), s...)
			m[i] ^= 1 << bit
			if _, err := Open(key, m, aad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("flipped bit %d of byte %d: %v", bit, i, err)
			}
		}
	}
	// Every byte of the AAD.
	for i := range aad {
		m := append([]byte(nil), aad...)
		m[i] ^= 0x01
		if _, err := Open(key, s, m); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("flipped aad byte %d: %v", i, err)
		}
	}
	// Another message type or another address.
	if _, err := Open(key, s, envelope.AAD(envelope.TypeBootWrapPwBackup, bytes.Repeat([]byte{7}, 20))); !errors.Is(err, ErrDecrypt) {
		t.Fatal("opened under another message type")
	}
	if _, err := Open(key, s, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatal("opened without AAD")
	}
	other, _ := NewRandomKey()
	if _, err := Open(other, s, aad); !errors.Is(err, ErrDecrypt) {
		t.Fatal("opened under another key")
	}
	for n := 0; n < len(s); n++ {
		if _, err := Open(key, s[:n], aad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	if _, err := Open(key, append(append([]byte(nil), s...), 0), aad); !errors.Is(err, ErrDecrypt) {
		t.Fatal("opened with a trailing byte")
	}
	if ErrDecrypt.Error() != "decryption failed: wrong key or tampered data" {
		t.Fatalf("message %q", ErrDecrypt)
	}
}

func FuzzOpen(f *testing.F) {
	key := Key{1, 2, 3}
	aad := []byte("fuzz aad")
	// A fixed nonce keeps the seed identical in every fuzz worker process
	// (Seal's random nonce would differ from one process to the next).
	gcm, _ := newGCM(&key)
	good := gcm.Seal(make([]byte, NonceSize), make([]byte, NonceSize), []byte("hello"), aad)
	f.Add(good, aad)
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, Overhead), aad)
	f.Fuzz(func(t *testing.T, sealed, a []byte) {
		pt, err := Open(key, sealed, a)
		if err == nil {
			// Only the seed we sealed may open; the fuzzer cannot forge a
			// GCM tag.
			if !bytes.Equal(sealed, good) || !bytes.Equal(a, aad) || string(pt) != "hello" {
				t.Fatalf("forged value opened: %x / %x", sealed, a)
			}
			return
		}
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("error does not wrap ErrDecrypt: %v", err)
		}
	})
}
