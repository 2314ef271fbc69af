package keyring

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

var backupShape = regexp.MustCompile(`^([0-9A-HJKMNP-TV-Z]{4}-){7}[0-9A-HJKMNP-TV-Z]{4}$`)

func TestBackupKeyRoundTrip(t *testing.T) {
	for range 200 {
		b, err := NewBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		s := b.Text()
		if !backupShape.MatchString(s) {
			t.Fatalf("bad shape %q", s)
		}
		got, err := ParseBackupKey(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got.Key() != b.Key() || got.Text() != s {
			t.Fatal("round trip changed the key")
		}
	}
}

func TestBackupKeyTolerance(t *testing.T) {
	b, _ := NewBackupKey()
	s := b.Text()
	plain := strings.ReplaceAll(s, "-", "")
	variants := []string{
		strings.ToLower(s),
		plain,
		strings.ReplaceAll(s, "-", " "),
		"  " + s + "\n",
		plain[:5] + "-" + plain[5:],
		strings.ReplaceAll(strings.ReplaceAll(s, "0", "O"), "1", "l"),
		strings.ReplaceAll(s, "1", "I"),
		strings.ReplaceAll(strings.ToLower(s), "0", "o"),
	}
	for _, v := range variants {
		got, err := ParseBackupKey(v)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if got.Key() != b.Key() {
			t.Fatalf("%q parsed to another key", v)
		}
	}
}

func TestBackupKeyErrors(t *testing.T) {
	b, _ := NewBackupKey()
	s := b.Text()
	// Wrong length.
	if _, err := ParseBackupKey(s[:len(s)-1]); !errors.Is(err, ErrInvalidBackupKey) || !strings.Contains(err.Error(), "31 characters, want 32") {
		t.Fatalf("short: %v", err)
	}
	if _, err := ParseBackupKey(s + "A"); err == nil || !strings.Contains(err.Error(), "33 characters") {
		t.Fatalf("long: %v", err)
	}
	if _, err := ParseBackupKey(strings.Repeat("A", 10_000)); !errors.Is(err, ErrInvalidBackupKey) {
		t.Fatalf("huge: %v", err)
	}
	// Invalid character, with its position as typed.
	bad := s[:6] + "U" + s[7:]
	if _, err := ParseBackupKey(bad); err == nil || !strings.Contains(err.Error(), `invalid character 'U' at position 7`) {
		t.Fatalf("U: %v", err)
	}
	if _, err := ParseBackupKey(s[:3] + "é" + s[4:]); err == nil || !strings.Contains(err.Error(), "position 4") {
		t.Fatalf("é: %v", err)
	}
	// Every single-character typo is caught by the checksum and located.
	caught := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			continue
		}
		for _, c := range crockford {
			if byte(c) == s[i] {
				continue
			}
			typo := s[:i] + string(c) + s[i+1:]
			_, err := ParseBackupKey(typo)
			if !errors.Is(err, ErrBackupKeyChecksum) {
				t.Fatalf("typo %q at %d: %v", c, i, err)
			}
			if !strings.Contains(err.Error(), "a character is mistyped") || !strings.Contains(err.Error(), fmt.Sprintf("position %d as typed", i+1)) {
				t.Fatalf("typo at %d: unhelpful error %q", i, err)
			}
			caught++
		}
	}
	if caught != 32*31 {
		t.Fatalf("checked %d typos", caught)
	}
	// A transposition of two different adjacent characters is caught.
	r := []byte(s)
	for i := 0; i+1 < len(r); i++ {
		if r[i] != '-' && r[i+1] != '-' && r[i] != r[i+1] {
			r[i], r[i+1] = r[i+1], r[i]
			break
		}
	}
	if _, err := ParseBackupKey(string(r)); !errors.Is(err, ErrBackupKeyChecksum) {
		t.Fatalf("transposition: %v", err)
	}
	if fmt.Sprint(b) != "keyring.BackupKey(redacted)" {
		t.Fatal("BackupKey printed")
	}
}

func TestBackupKeyDerivation(t *testing.T) {
	// Known answer: all-zero entropy, so the text and key are fixed
	// forever (they are what users write down and what wraps their keys).
	var b BackupKey
	if got := b.Text(); got != "0000-0000-0000-0000-0000-0000-00VM-E27Z" {
		t.Fatalf("text of zero entropy: %s", got)
	}
	// SHA-256 of 16 zero bytes starts 374708ff: 128 zero bits then those
	// 32 bits in base32 give the "00VM-E27Z" tail. The key is HKDF-SHA256
	// (RFC 5869, empty salt = 32 zero bytes) computed here by hand with HMAC.
	k := b.Key()
	extract := hmac.New(sha256.New, make([]byte, 32))
	extract.Write(make([]byte, 16))
	prk := extract.Sum(nil)
	expand := hmac.New(sha256.New, prk)
	expand.Write([]byte("integrity backup key v1"))
	expand.Write([]byte{1})
	if want := expand.Sum(nil); !bytes.Equal(k[:], want) {
		t.Fatalf("backup key of zero entropy: %x, want %x", k[:], want)
	}
	b2, _ := NewBackupKey()
	if b2.Key() == b.Key() {
		t.Fatal("different entropy gave the same key")
	}
	b2.Wipe()
	if b2.Key() != b.Key() {
		t.Fatal("Wipe did not clear the entropy")
	}
}

func FuzzParseBackupKey(f *testing.F) {
	b, _ := NewBackupKey()
	f.Add(b.Text())
	f.Add("")
	f.Add("0000-0000-0000-0000-0000-0000-0000-0000")
	f.Add("ilo-u")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseBackupKey(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidBackupKey) {
				t.Fatalf("error does not wrap ErrInvalidBackupKey: %v", err)
			}
			return
		}
		text := k.Text()
		again, err := ParseBackupKey(text)
		if err != nil || again.Key() != k.Key() {
			t.Fatalf("%q parsed but its text %q does not: %v", s, text, err)
		}
	})
}
