package envelope

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTripSizes(t *testing.T) {
	// One field of each push form boundary, and the 50 KB case the chain
	// tests commit.
	for _, n := range []int{0, 1, 16, 75, 76, 255, 256, 65535, 65536, 50_000} {
		f := bytes.Repeat([]byte{0xab}, n)
		s, err := Encode(TypeNodeCommit, f, []byte("x"))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(s) != EncodedSize(n, 1) {
			t.Fatalf("n=%d: EncodedSize %d, script %d", n, EncodedSize(n, 1), len(s))
		}
		m, err := Decode(s)
		if err != nil {
			t.Fatalf("n=%d: decode: %v", n, err)
		}
		if m.Type != TypeNodeCommit || len(m.Fields) != 2 || !bytes.Equal(m.Fields[0], f) || string(m.Fields[1]) != "x" {
			t.Fatalf("n=%d: round trip mismatch: type %v, %d fields", n, m.Type, len(m.Fields))
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(TypeBootSalt, []byte("abc"))
	cases := []struct {
		name   string
		script []byte
		want   error
	}{
		{"empty", nil, ErrNotIntegrity},
		{"p2pkh", []byte{0x76, 0xa9, 0x14}, ErrNotIntegrity},
		{"bare OP_RETURN", []byte{opReturn}, ErrNotIntegrity},
		{"other prefix", append([]byte{opReturn, 4}, "OMNI"...), ErrNotIntegrity},
		{"no header", append([]byte{opReturn, 4}, Prefix...), ErrMalformed},
		{"short header", append(append([]byte{opReturn, 4}, Prefix...), 1, 1), ErrMalformed},
		{"future version", append(append([]byte{opReturn, 4}, Prefix...), 2, 9, 1), ErrVersion},
		{"truncated push", good[:len(good)-1], ErrMalformed},
		{"non-push opcode", append(append([]byte{}, good...), 0xac), ErrMalformed},
		{"pushdata4 huge", append(append([]byte{}, good...), opPushData4, 0xff, 0xff, 0xff, 0xff), ErrMalformed},
		{"pushdata2 truncated len", append(append([]byte{}, good...), opPushData2, 1), ErrMalformed},
		{"too big", append(append([]byte{}, good...), make([]byte, MaxScriptSize)...), ErrMalformed},
	}
	for _, c := range cases {
		_, err := Decode(c.script)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestDecodeSmallIntPushes(t *testing.T) {
	// Other encoders write one-byte data 1..16 as OP_1..OP_16.
	s := append([]byte{opReturn, 4}, Prefix...)
	s = append(s, 2, Version, byte(TypeBootSalt), op1+4, op1Negate, op0)
	m, err := Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Fields) != 3 || !bytes.Equal(m.Fields[0], []byte{5}) || !bytes.Equal(m.Fields[1], []byte{0x81}) || len(m.Fields[2]) != 0 {
		t.Fatalf("fields %x", m.Fields)
	}
}

func TestEncodeLimits(t *testing.T) {
	if _, err := Encode(TypeNodeCommit, make([]byte, MaxScriptSize)); err == nil {
		t.Fatal("oversized field accepted")
	}
	if _, err := Encode(TypeNodeCommit, make([][]byte, MaxFields+1)...); err == nil {
		t.Fatal("too many fields accepted")
	}
	if _, err := Encode(TypeNodeCommit, make([][]byte, MaxFields)...); err != nil {
		t.Fatalf("MaxFields fields refused: %v", err)
	}
}

func TestAADDistinguishes(t *testing.T) {
	a := AAD(TypeNodeCommit, bytes.Repeat([]byte{1}, 20))
	b := AAD(TypeBootSalt, bytes.Repeat([]byte{1}, 20))
	c := AAD(TypeNodeCommit, bytes.Repeat([]byte{2}, 20))
	if bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("AAD does not bind type and address")
	}
}

func FuzzDecode(f *testing.F) {
	s, _ := Encode(TypeNodeCommit, []byte("hello"), make([]byte, 300))
	f.Add(s)
	f.Add([]byte{opReturn})
	f.Add(append([]byte{opReturn, 4}, Prefix...))
	f.Fuzz(func(t *testing.T, script []byte) {
		m, err := Decode(script)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		s2, err := Encode(m.Type, m.Fields...)
		if err != nil {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
		m2, err := Decode(s2)
		if err != nil || m2.Type != m.Type || len(m2.Fields) != len(m.Fields) {
			t.Fatalf("re-encoded message differs: %v", err)
		}
		for i := range m.Fields {
			if !bytes.Equal(m.Fields[i], m2.Fields[i]) {
				t.Fatalf("field %d differs", i)
			}
		}
	})
}
