package keyring

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// Argon2id known answers from the reference implementation's test suite
// (phc-winner-argon2, src/test.c, version 0x13; password "password", salt
// "somesalt", no secret, no associated data). RFC 9106's own §5.3 vector
// uses a secret key and associated data, which x/crypto/argon2 does not
// expose, so it cannot be reproduced through this API.
func TestArgon2idKnownAnswers(t *testing.T) {
	vectors := []struct {
		t, m uint32
		p    uint8
		pw   string
		salt string
		want string
		slow bool
	}{
		{2, 1 << 8, 1, "password", "somesalt", "9dfeb910e80bad0311fee20f9c0e2b12c17987b4cac90c2ef54d5b3021c68bfe", false},
		{2, 1 << 8, 2, "password", "somesalt", "6d093c501fd5999645e0ea3bf620d7b8be7fd2db59c20d9fff9539da2bf57037", false},
		{2, 1 << 16, 1, "password", "somesalt", "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7", true},
	}
	for _, v := range vectors {
		if v.slow && testing.Short() {
			continue
		}
		p := KDFParams{Algorithm: KDFArgon2id, Time: v.t, MemoryKiB: v.m, Threads: v.p, Salt: []byte(v.salt)}
		k, err := deriveUnchecked([]byte(v.pw), p)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(k[:]); got != v.want {
			t.Errorf("t=%d m=%d p=%d: got %s want %s", v.t, v.m, v.p, got, v.want)
		}
	}
}

// PBKDF2-HMAC-SHA256 known answers from RFC 7914 §11 (first 32 bytes of
// the 64-byte outputs; PBKDF2 output blocks are independent, so a prefix
// of the derived key is the shorter derivation).
func TestPBKDF2KnownAnswers(t *testing.T) {
	vectors := []struct {
		pw, salt string
		iter     uint32
		want     string
	}{
		{"passwd", "salt", 1, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"},
		{"Password", "NaCl", 80000, "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"},
	}
	for _, v := range vectors {
		p := KDFParams{Algorithm: KDFPBKDF2HMACSHA256, Iterations: v.iter, Salt: []byte(v.salt)}
		k, err := deriveUnchecked([]byte(v.pw), p)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(k[:]); got != v.want {
			t.Errorf("%q/%q/%d: got %s want %s", v.pw, v.salt, v.iter, got, v.want)
		}
	}
}

func TestDeriveKey(t *testing.T) {
	p := TestKDFParams()
	a, err := DeriveKey([]byte("correct horse"), p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DeriveKey([]byte("correct horse"), p)
	c, _ := DeriveKey([]byte("correct horsf"), p)
	q := TestKDFParams()
	d, _ := DeriveKey([]byte("correct horse"), q)
	if a != b || a == c || a == d || a.IsZero() {
		t.Fatal("derivation not deterministic or not sensitive to password and salt")
	}
	if _, err := DeriveKey(nil, p); err == nil {
		t.Fatal("empty password accepted")
	}
	weak := p
	weak.MemoryKiB = 1024
	if _, err := DeriveKey([]byte("x"), weak); !errors.Is(err, ErrKDFParams) {
		t.Fatalf("weak parameters derived: %v", err)
	}
}

func TestDefaultsValid(t *testing.T) {
	p, err := NewKDFParams()
	if err != nil {
		t.Fatal(err)
	}
	if p.Algorithm != KDFArgon2id || p.Time != 3 || p.MemoryKiB != 64*1024 || p.Threads != 4 || len(p.Salt) != 16 {
		t.Fatalf("defaults changed: %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	q, err := NewPBKDF2Params(0)
	if err != nil || q.Iterations != 600_000 {
		t.Fatalf("pbkdf2 defaults: %+v %v", q, err)
	}
	if _, err := NewPBKDF2Params(599_999); !errors.Is(err, ErrKDFParams) {
		t.Fatal("pbkdf2 below floor accepted")
	}
	if err := TestKDFParams().Validate(); err != nil {
		t.Fatalf("test parameters must pass production validation: %v", err)
	}
}

func TestKDFParamsEncoding(t *testing.T) {
	a, _ := NewKDFParams()
	b, _ := NewPBKDF2Params(1_000_000)
	for _, p := range []KDFParams{a, b, TestKDFParams()} {
		enc, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseKDFParams(enc)
		if err != nil {
			t.Fatal(err)
		}
		if got.Algorithm != p.Algorithm || got.Time != p.Time || got.MemoryKiB != p.MemoryKiB ||
			got.Threads != p.Threads || got.Iterations != p.Iterations || !bytes.Equal(got.Salt, p.Salt) {
			t.Fatalf("round trip: %+v != %+v", got, p)
		}
		var q KDFParams
		if err := q.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		// Every truncation and any trailing byte is refused.
		for n := range len(enc) {
			if _, err := ParseKDFParams(enc[:n]); !errors.Is(err, ErrKDFParams) {
				t.Fatalf("truncated to %d: %v", n, err)
			}
		}
		if _, err := ParseKDFParams(append(append([]byte(nil), enc...), 0)); !errors.Is(err, ErrKDFParams) {
			t.Fatal("trailing byte accepted")
		}
	}
	// The documented layout, byte for byte.
	p := KDFParams{Algorithm: KDFArgon2id, Time: 3, MemoryKiB: 65536, Threads: 4, Salt: bytes.Repeat([]byte{0xaa}, 16)}
	enc, _ := p.MarshalBinary()
	want := "0101" + "03000000" + "00000100" + "04" + "10" + hex.EncodeToString(p.Salt)
	if hex.EncodeToString(enc) != want {
		t.Fatalf("argon2id layout %x, want %s", enc, want)
	}
	p = KDFParams{Algorithm: KDFPBKDF2HMACSHA256, Iterations: 600000, Salt: bytes.Repeat([]byte{0xbb}, 16)}
	enc, _ = p.MarshalBinary()
	want = "0102" + "c0270900" + "10" + hex.EncodeToString(p.Salt)
	if hex.EncodeToString(enc) != want {
		t.Fatalf("pbkdf2 layout %x, want %s", enc, want)
	}
}

func TestKDFParamsLimits(t *testing.T) {
	salt := bytes.Repeat([]byte{1}, 16)
	argon := func(tt, m uint32, p uint8, s []byte) KDFParams {
		return KDFParams{Algorithm: KDFArgon2id, Time: tt, MemoryKiB: m, Threads: p, Salt: s}
	}
	pb := func(it uint32, s []byte) KDFParams {
		return KDFParams{Algorithm: KDFPBKDF2HMACSHA256, Iterations: it, Salt: s}
	}
	ok := []KDFParams{
		argon(2, 19*1024, 1, salt),
		argon(1, 46*1024, 1, salt),
		argon(3, 64*1024, 4, salt),
		argon(4, 4*1024*1024, 16, salt),
		argon(16, 1024*1024, 1, salt),
		argon(3, 64*1024, 4, bytes.Repeat([]byte{1}, 64)),
		pb(600_000, salt),
		pb(10_000_000, salt),
	}
	bad := []KDFParams{
		argon(0, 64*1024, 4, salt),             // t=0
		argon(1, 19*1024, 1, salt),             // t·m below floor
		argon(3, 19*1024-1, 1, salt),           // m below floor
		argon(1, 4*1024*1024+1, 1, salt),       // m above ceiling
		argon(5, 4*1024*1024, 1, salt),         // t·m above ceiling
		argon(17, 64*1024, 1, salt),            // t above ceiling
		argon(3, 64*1024, 0, salt),             // p=0
		argon(3, 64*1024, 17, salt),            // p above ceiling
		argon(3, 64*1024, 4, salt[:15]),        // short salt
		argon(3, 64*1024, 4, make([]byte, 65)), // long salt
		pb(599_999, salt),
		pb(10_000_001, salt),
		{Algorithm: 0x03, Salt: salt},
		{Algorithm: KDFArgon2id, Time: 3, MemoryKiB: 65536, Threads: 4, Iterations: 1, Salt: salt},
		{Algorithm: KDFPBKDF2HMACSHA256, Iterations: 600_000, Time: 1, Salt: salt},
	}
	for _, p := range ok {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v refused: %v", p, err)
		}
	}
	for _, p := range bad {
		if err := p.Validate(); !errors.Is(err, ErrKDFParams) {
			t.Errorf("%+v accepted (%v)", p, err)
		}
		if _, err := p.MarshalBinary(); err == nil {
			t.Errorf("%+v encoded", p)
		}
	}
	// The decoder refuses what the encoder would refuse: hand-built bytes.
	weak := []byte{0x01, 0x01, 1, 0, 0, 0, 0, 0x04, 0, 0, 1, 16}
	weak = append(weak, salt...)
	if _, err := ParseKDFParams(weak); !errors.Is(err, ErrKDFParams) {
		t.Fatalf("decoded m=1 MiB: %v", err)
	}
	huge := []byte{0x01, 0x01, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 16}
	huge = append(huge, salt...)
	if _, err := ParseKDFParams(huge); !errors.Is(err, ErrKDFParams) {
		t.Fatalf("decoded m=4 TiB: %v", err)
	}
	if _, err := ParseKDFParams([]byte{0x02, 0x01}); !errors.Is(err, ErrKDFParams) {
		t.Fatal("decoded format version 2")
	}
}

func FuzzParseKDFParams(f *testing.F) {
	a, _ := NewKDFParams()
	b, _ := NewPBKDF2Params(0)
	ea, _ := a.MarshalBinary()
	eb, _ := b.MarshalBinary()
	f.Add(ea)
	f.Add(eb)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseKDFParams(data)
		if err != nil {
			if !errors.Is(err, ErrKDFParams) {
				t.Fatalf("error does not wrap ErrKDFParams: %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded invalid parameters: %v", err)
		}
		enc, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("not canonical: %x vs %x (%v)", enc, data, err)
		}
	})
}

// BenchmarkDeriveDefault measures one password-key derivation with the
// default parameters (Argon2id t=3, m=64 MiB, p=4). Benchmarks run only
// with -bench, never in a plain go test.
func BenchmarkDeriveDefault(b *testing.B) {
	p, err := NewKDFParams()
	if err != nil {
		b.Fatal(err)
	}
	pw := []byte("correct horse battery staple")
	for b.Loop() {
		if _, err := DeriveKey(pw, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDerivePBKDF2 measures PBKDF2-HMAC-SHA256 at 600,000 iterations.
func BenchmarkDerivePBKDF2(b *testing.B) {
	p, err := NewPBKDF2Params(0)
	if err != nil {
		b.Fatal(err)
	}
	pw := []byte("correct horse battery staple")
	for b.Loop() {
		if _, err := DeriveKey(pw, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeriveTest measures the test parameter set.
func BenchmarkDeriveTest(b *testing.B) {
	p := TestKDFParams()
	pw := []byte("correct horse battery staple")
	for b.Loop() {
		if _, err := DeriveKey(pw, p); err != nil {
			b.Fatal(err)
		}
	}
}
