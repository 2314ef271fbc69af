package keyring

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
)

// KeySize is the size in bytes of every symmetric key in the keyring
// (AES-256 keys, XOR wrappers, presentation key slices).
const KeySize = 32

// Key is a 256-bit secret. It is an array, not a slice, so copies are
// explicit and Wipe clears the storage the caller holds.
//
// Key deliberately implements fmt.Formatter so that printing it with any
// verb (%v, %x, %s...) shows "keyring.Key(redacted)" rather than the
// secret: a key dropped into a log line by mistake does not leak. Use
// k[:] to get at the bytes on purpose.
type Key [KeySize]byte

// ErrNotScalar is returned when a key is not a valid secp256k1 private key
// (zero, or not below the curve order n).
var ErrNotScalar = errors.New("key is not a valid secp256k1 private key (must be 0 < k < n)")

// Wipe overwrites the key with zeros. Best effort: see the package doc.
func (k *Key) Wipe() {
	clear(k[:])
}

// IsZero reports, in constant time, whether every byte of the key is zero
// (an all-zero key is never a valid key: it means "unset" or "wiped").
func (k *Key) IsZero() bool {
	var zero Key
	return subtle.ConstantTimeCompare(k[:], zero[:]) == 1
}

// Equal reports, in constant time, whether two keys are equal.
func (k *Key) Equal(o *Key) bool {
	return subtle.ConstantTimeCompare(k[:], o[:]) == 1
}

// Format implements fmt.Formatter so that no format verb prints the secret.
func (k Key) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte("keyring.Key(redacted)"))
}

// IsScalar reports, in constant time, whether the key is a valid secp256k1
// private key: 0 < k < n.
func (k *Key) IsScalar() bool {
	var s btcec.ModNScalar
	overflow := s.SetBytes((*[32]byte)(k))
	ok := overflow == 0 && !s.IsZero()
	s.Zero()
	return ok
}

// PrivateKey returns the key as a secp256k1 private key. The presentation
// key doubles as the private key of the chain address that receives the
// secret server's faucet payment and publishes the bootstrap messages
// (paper, Initial Bootstrap Process steps 6–7).
func (k *Key) PrivateKey() (*btcec.PrivateKey, error) {
	if !k.IsScalar() {
		return nil, ErrNotScalar
	}
	priv, _ := btcec.PrivKeyFromBytes(k[:])
	return priv, nil
}

// Wipe overwrites b with zeros. Best effort: see the package doc.
func Wipe(b []byte) {
	clear(b)
}

// XOR returns a XOR b, the paper's XOR(Key A, Key B) wrapper.
func XOR(a, b Key) Key {
	var out Key
	subtle.XORBytes(out[:], a[:], b[:])
	return out
}

// XORAll returns the XOR of all keys: how a client rebuilds a presentation
// key from the slices held by several secret servers (paper, footnote 1).
// With no keys it returns the zero key.
func XORAll(keys ...Key) Key {
	var out Key
	for i := range keys {
		subtle.XORBytes(out[:], out[:], keys[i][:])
	}
	return out
}

// NewRandomKey returns a key of 32 bytes from crypto/rand.
func NewRandomKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("keyring: reading random bytes: %w", err)
	}
	return k, nil
}

// NewScalarKey returns a random key that is also a valid secp256k1 private
// key (0 < k < n), as the presentation key must be. A uniformly random
// 256-bit value falls outside that range with probability about 2^-128, so
// the loop practically never repeats; it is bounded anyway.
func NewScalarKey() (Key, error) {
	for range 64 {
		k, err := NewRandomKey()
		if err != nil {
			return Key{}, err
		}
		if k.IsScalar() {
			return k, nil
		}
		k.Wipe()
	}
	return Key{}, errors.New("keyring: random source produced no valid secp256k1 scalar in 64 draws")
}

// KeyFromBytes copies a 32-byte slice into a Key.
func KeyFromBytes(b []byte) (Key, error) {
	var k Key
	if len(b) != KeySize {
		return k, fmt.Errorf("keyring: key of %d bytes, want %d", len(b), KeySize)
	}
	copy(k[:], b)
	return k, nil
}

// SplitKey splits k into n slices whose XOR is k (paper, footnote 1): n-1
// random slices and a last one that completes the XOR. Each slice alone, or
// any n-1 of them together, is uniformly random and says nothing about k.
// The caller gives slice i to secret server i.
func SplitKey(k Key, n int) ([]Key, error) {
	if n < 1 || n > 255 {
		return nil, fmt.Errorf("keyring: cannot split a key into %d slices (want 1..255)", n)
	}
	slices := make([]Key, n)
	last := k
	for i := 0; i < n-1; i++ {
		s, err := NewRandomKey()
		if err != nil {
			return nil, err
		}
		slices[i] = s
		subtle.XORBytes(last[:], last[:], s[:])
	}
	slices[n-1] = last
	last.Wipe()
	return slices, nil
}
