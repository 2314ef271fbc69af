package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
)

func FuzzRefUnmarshal(f *testing.F) {
	for _, l := range []int64{0, 1, 1_000_000, MaxPlainSize} {
		r := Ref{PlainSize: l, Size: EncryptedSize(l), Key: testKey(3)}
		r.Hash[0] = byte(l)
		b, _ := r.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{1})
	f.Add(bytes.Repeat([]byte{0xff}, 80))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Ref
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded ref is invalid: %v", err)
		}
		// Canonical: the accepted encoding is the only one.
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
		}
	})
}

// FuzzDecrypt feeds arbitrary bytes as a blob, with a ref whose hash
// matches them (so decoding goes past the hash check) and a fuzzed
// plaintext size. Decrypt, DecryptStream and DecryptRange must never panic
// and must agree.
func FuzzDecrypt(f *testing.F) {
	key := testKey(9)
	// Small seeds only: the fuzzer minimizes every new input it finds, and
	// minimizing a 64 KiB input stalls it for its whole time budget.
	// Multi-chunk blobs are covered by the unit tests.
	for _, n := range []int{0, 1, 100} {
		enc, _, _ := encryptWithKey(randBytes(n, uint64(n)), key)
		f.Add(enc, int64(n))
	}
	f.Add([]byte("IGB\x01"), int64(0))
	f.Add([]byte{}, int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, plainSize int64) {
		ref := Ref{Hash: sha256.Sum256(data), Size: EncryptedSize(plainSize), PlainSize: plainSize, Key: key}
		plain, err := Decrypt(data, ref)
		var out bytes.Buffer
		serr := DecryptStream(context.Background(), &out, bytes.NewReader(data), ref)
		if (err == nil) != (serr == nil) || (err == nil && !bytes.Equal(plain, out.Bytes())) {
			t.Fatalf("Decrypt (%v) and DecryptStream (%v) disagree", err, serr)
		}
		if err != nil {
			return
		}
		// Only a real blob under this key decrypts: it must re-encrypt to
		// the same bytes.
		again, _, _ := encryptWithKey(plain, key)
		if !bytes.Equal(again, data) {
			t.Fatal("accepted bytes that are not the encryption of their plaintext")
		}
		s := newMemStore()
		s.m[ref.Hash] = data
		got, err := DecryptRange(context.Background(), s, ref, plainSize/3, plainSize/2+1)
		if err != nil || !bytes.Equal(got, plain[plainSize/3:min(plainSize, plainSize/3+plainSize/2+1)]) {
			t.Fatalf("DecryptRange: %v", err)
		}
	})
}
