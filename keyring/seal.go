package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// Sealed values are nonce ‖ ciphertext ‖ tag: AES-256-GCM with a fresh
// random 96-bit nonce prepended (paper: "Initialization vectors are
// prepended to the beginning of the ciphertext"). Random nonces keep the
// format stateless across devices; NIST SP 800-38D allows 2^32 random-nonce
// messages per key, far more than any one key here seals.
const (
	NonceSize = 12
	TagSize   = 16
	// Overhead is how many bytes Seal adds to the plaintext.
	Overhead = NonceSize + TagSize
)

// ErrDecrypt is returned (possibly wrapped) by Open for every failure: a
// wrong key, a wrong AAD, a truncated or altered ciphertext. The causes are
// deliberately not told apart.
var ErrDecrypt = errors.New("decryption failed: wrong key or tampered data")

// Seal encrypts and authenticates plaintext under key, binding aad (for
// on-chain messages, envelope.AAD(type, addrHash160)) without storing it.
func Seal(key Key, plaintext, aad []byte) ([]byte, error) {
	gcm, err := newGCM(&key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, NonceSize, Overhead+len(plaintext))
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("keyring: generating nonce: %w", err)
	}
	return gcm.Seal(out, out[:NonceSize], plaintext, aad), nil
}

// Open authenticates and decrypts a value produced by Seal with the same
// key and aad. Every failure wraps ErrDecrypt. It never panics.
func Open(key Key, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w (%d bytes is shorter than the %d-byte minimum)", ErrDecrypt, len(sealed), Overhead)
	}
	gcm, err := newGCM(&key)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, sealed[:NonceSize], sealed[NonceSize:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func newGCM(key *Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("keyring: aes: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keyring: gcm: %w", err)
	}
	return gcm, nil
}
