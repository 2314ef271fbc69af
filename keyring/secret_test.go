package keyring

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
)

func TestXOR(t *testing.T) {
	a, _ := NewRandomKey()
	b, _ := NewRandomKey()
	x := XOR(a, b)
	if back := XOR(x, b); back != a {
		t.Fatal("XOR(XOR(a,b),b) != a")
	}
	if XOR(a, a) != (Key{}) {
		t.Fatal("XOR(a,a) != 0")
	}
	if XORAll(a, b) != x || XORAll() != (Key{}) || XORAll(a) != a {
		t.Fatal("XORAll disagrees with XOR")
	}
}

func TestSplitKey(t *testing.T) {
	k, err := NewScalarKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 7} {
		slices, err := SplitKey(k, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(slices) != n || XORAll(slices...) != k {
			t.Fatalf("n=%d: slices do not XOR back to the key", n)
		}
		if n > 1 && slices[0] == k {
			t.Fatalf("n=%d: first slice equals the key", n)
		}
	}
	for _, n := range []int{0, -1, 256} {
		if _, err := SplitKey(k, n); err == nil {
			t.Fatalf("SplitKey(%d) succeeded", n)
		}
	}
}

func TestScalar(t *testing.T) {
	k, err := NewScalarKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := k.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv.Serialize(), k[:]) {
		t.Fatal("private key bytes differ from the key")
	}
	// n itself, n+1, all-ones and zero are not scalars; n-1 is.
	n := btcec.S256().N.Bytes()
	var kn Key
	copy(kn[:], n)
	if kn.IsScalar() {
		t.Fatal("n accepted as a scalar")
	}
	if _, err := kn.PrivateKey(); !errors.Is(err, ErrNotScalar) {
		t.Fatalf("PrivateKey(n): %v", err)
	}
	var ones Key
	for i := range ones {
		ones[i] = 0xff
	}
	var zero Key
	if ones.IsScalar() || zero.IsScalar() {
		t.Fatal("all-ones or zero accepted as a scalar")
	}
	kn[31]-- // n-1
	if !kn.IsScalar() {
		t.Fatal("n-1 refused")
	}
}

func TestWipeAndRedaction(t *testing.T) {
	k, _ := NewRandomKey()
	if k.IsZero() {
		t.Fatal("random key is zero")
	}
	for _, verb := range []string{"%v", "%x", "%s", "%+v", "%#v", "%X", "%d"} {
		out := fmt.Sprintf(verb, k)
		if bytes.Contains([]byte(out), []byte(fmt.Sprintf("%x", k[:4]))) || out != "keyring.Key(redacted)" {
			t.Fatalf("%s printed %q", verb, out)
		}
	}
	k2 := k
	if !k.Equal(&k2) {
		t.Fatal("copy not equal")
	}
	k.Wipe()
	if !k.IsZero() || k.Equal(&k2) {
		t.Fatal("Wipe left data")
	}
	b := []byte{1, 2, 3}
	Wipe(b)
	if !bytes.Equal(b, []byte{0, 0, 0}) {
		t.Fatal("Wipe([]byte) left data")
	}
	if _, err := KeyFromBytes(make([]byte, 31)); err == nil {
		t.Fatal("KeyFromBytes accepted 31 bytes")
	}
	if kk, err := KeyFromBytes(k2[:]); err != nil || kk != k2 {
		t.Fatal("KeyFromBytes round trip")
	}
}
