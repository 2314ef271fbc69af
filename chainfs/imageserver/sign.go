package imageserver

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
)

// Signer signs for an image's owner: the mount node's write key (paper
// 3.f, 4.a, 4.e). In integrity the agent holds that key and implements
// Signer over its socket; KeySigner wraps a key held in process.
type Signer interface {
	// PublicKey is the compressed secp256k1 public key (33 bytes).
	PublicKey() []byte
	// Sign returns a DER-encoded ECDSA signature of digest.
	Sign(digest [32]byte) ([]byte, error)
}

// KeySigner signs with priv (node.Keys.WritePriv gives a node's).
func KeySigner(priv *btcec.PrivateKey) Signer { return keySigner{priv} }

type keySigner struct{ priv *btcec.PrivateKey }

func (k keySigner) PublicKey() []byte { return k.priv.PubKey().SerializeCompressed() }

func (k keySigner) Sign(digest [32]byte) ([]byte, error) {
	return ecdsa.Sign(k.priv, digest[:]).Serialize(), nil
}

// signPrefix starts every signed message, so a signature made here can
// never pass for a transaction signature or any other signed message.
const signPrefix = "integrity image-server v1\x00"

// SignedMessage is the canonical message an owner signs:
//
//	"integrity image-server v1" 0x00 ‖ action ‖ 0x00 ‖ nonce (32) ‖ hash (32) ‖ arg (32)
//
// action is "own" (at upload; nonce = the quote's challenge), "patch"
// (arg = the new image hash), "release" or "forward" (arg = SHA-256 of
// the target URL ‖ 0x00 ‖ the target quote id); arg is zero otherwise.
// The signature is ECDSA over SHA-256 of the message.
func SignedMessage(action string, nonce, hash, arg [32]byte) []byte {
	m := make([]byte, 0, len(signPrefix)+len(action)+1+96)
	m = append(m, signPrefix...)
	m = append(m, action...)
	m = append(m, 0)
	m = append(m, nonce[:]...)
	m = append(m, hash[:]...)
	return append(m, arg[:]...)
}

// forwardArg binds a forward signature to its target and quote.
func forwardArg(to, quote string) [32]byte {
	return sha256.Sum256([]byte(to + "\x00" + quote))
}

// sign signs the canonical message.
func sign(s Signer, action string, nonce, hash, arg [32]byte) (pub, sig []byte, err error) {
	sig, err = s.Sign(sha256.Sum256(SignedMessage(action, nonce, hash, arg)))
	if err != nil {
		return nil, nil, fmt.Errorf("image server: signing %s: %w", action, err)
	}
	return s.PublicKey(), sig, nil
}

// maxSigLen bounds a DER signature (72 bytes, plus slack for encoders).
const maxSigLen = 80

// verify checks a signature of the canonical message by pub.
func verify(pub, sig []byte, action string, nonce, hash, arg [32]byte) error {
	if len(pub) != btcec.PubKeyBytesLenCompressed {
		return errors.New("public key must be 33 bytes (compressed)")
	}
	pk, err := btcec.ParsePubKey(pub)
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	s, err := ecdsa.ParseDERSignature(sig)
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	digest := sha256.Sum256(SignedMessage(action, nonce, hash, arg))
	if !s.Verify(digest[:], pk) {
		return errors.New("signature does not verify")
	}
	return nil
}
