package vm

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/tetratelabs/wazero"
)

// KeyPair selects one of the identity's key pairs.
type KeyPair uint32

// The key pairs (paper, "Identity Interface").
const (
	PrimaryPair    KeyPair = 0
	PrivilegedPair KeyPair = 1
)

// IdentityInfo is what any program may know about the user.
type IdentityInfo struct {
	User             string `json:"user,omitempty"`
	PrimaryPubKey    string `json:"primary_pub"`
	PrivilegedPubKey string `json:"privileged_pub"`
	RootAddress      string `json:"root_address,omitempty"`
	Network          string `json:"network,omitempty"`
}

// Identity performs operations with the user's keys on the guest's behalf;
// the keys never leave it. Privileged operations (Sign with
// PrivilegedPair, ECDH) return (a wrap of) ErrPrivLocked while the
// privileged key is locked.
type Identity interface {
	Info(ctx context.Context) (IdentityInfo, error)
	// PublicKey returns a key pair's compressed public key.
	PublicKey(ctx context.Context, which KeyPair) ([]byte, error)
	// Encrypt seals data under a key derived from the primary key for
	// guest use only (it can never open the System's own ciphertexts).
	Encrypt(ctx context.Context, plaintext []byte) ([]byte, error)
	// Decrypt opens what Encrypt sealed (ErrBadCipher otherwise).
	Decrypt(ctx context.Context, sealed []byte) ([]byte, error)
	// Sign returns a DER ECDSA signature of MessageDigest(msg).
	Sign(ctx context.Context, which KeyPair, msg []byte) ([]byte, error)
	// ECDH returns SharedSecret of the privileged key pair and peer.
	ECDH(ctx context.Context, peer []byte) ([]byte, error)
}

// Unlocker is the user's say over what the guest does with their keys.
type Unlocker interface {
	// Unlock gets the privileged key unlocked for a privileged identity
	// operation: nil once it is (the agent asked the user for the
	// password, at most once every keyring.PrivilegedTTL), or an error
	// (ErrPrivLocked when the user cannot be asked or declined). reason
	// says what the guest asked for.
	Unlock(ctx context.Context, reason string) error
	// Approve asks the user to allow one operation that gives the
	// System's keys or content to someone else or spends their money
	// (share, publish, image_create): every time, whatever the state of
	// the privileged key, since an unlocked key must not let a guest
	// quietly hand the tree to its author. It also unlocks the
	// privileged key (as Unlock). kind is the operation ("share",
	// "publish", "image"), reason the sentence shown to the user. An
	// error wrapping ErrNotApproved (or ErrPrivLocked) refuses it.
	Approve(ctx context.Context, kind, reason string) error
}

// MessageDigest is what identity signatures sign: a tagged hash (as in
// BIP-340) that no Bitcoin transaction digest and no other integrity
// protocol produces, so a signature obtained by a guest can never be
// replayed as one of those.
func MessageDigest(msg []byte) [32]byte {
	tag := sha256.Sum256([]byte("integrity/vm/sign/v1"))
	h := sha256.New()
	h.Write(tag[:])
	h.Write(tag[:])
	h.Write(msg)
	return [32]byte(h.Sum(nil))
}

// SharedSecret is what identity.ecdh returns: a tagged hash of the shared
// point's x coordinate, so the guest never holds a raw ECDH value another
// protocol may use with the same key pair.
func SharedSecret(x []byte) [32]byte {
	tag := sha256.Sum256([]byte("integrity/vm/ecdh/v1"))
	h := sha256.New()
	h.Write(tag[:])
	h.Write(tag[:])
	h.Write(x)
	return [32]byte(h.Sum(nil))
}

// Verify checks a DER signature of MessageDigest(msg) by pub (33 or 65
// bytes). It needs no key material.
func Verify(pub, msg, sig []byte) bool {
	pk, err := btcec.ParsePubKey(pub)
	if err != nil {
		return false
	}
	s, err := ecdsa.ParseDERSignature(sig)
	if err != nil {
		return false
	}
	d := MessageDigest(msg)
	return s.Verify(d[:], pk)
}

// Input limits of the identity module.
const (
	maxMessage = 1 << 20
	maxPubKey  = 65
	maxSig     = 72
)

func identityModule(r wazero.Runtime, dev Identity, unlock Unlocker, log *slog.Logger) wazero.HostModuleBuilder {
	if dev == nil {
		dev = noIdentity{}
	}
	// privileged runs op, asking the Unlocker once if the key is locked.
	privileged := func(ctx context.Context, reason string, op func() ([]byte, error)) ([]byte, error) {
		b, err := op()
		if !errors.Is(err, ErrPrivLocked) || unlock == nil {
			return b, err
		}
		if uerr := unlock.Unlock(ctx, reason); uerr != nil {
			log.Info("vm: privileged operation refused", "op", reason, "err", uerr)
			if errors.Is(uerr, context.Canceled) || errors.Is(uerr, context.DeadlineExceeded) {
				return nil, uerr
			}
			return nil, ErrPrivLocked
		}
		return op()
	}
	which := func(w uint32) (KeyPair, Code) {
		switch KeyPair(w) {
		case PrimaryPair, PrivilegedPair:
			return KeyPair(w), OK
		}
		return 0, ErrInvalid
	}
	return export(r.NewHostModuleBuilder("identity"), "identity", log, []hostFunc{
		// info(out, out_cap, out_len) → JSON (IdentityInfo).
		{"info", 3, func(ctx context.Context, g memory, p []uint32) Code {
			if !g.writable(p[2], 4) || !g.writable(p[0], p[1]) {
				return ErrFault
			}
			in, err := dev.Info(ctx)
			if err != nil {
				return codeOf(err)
			}
			b, err := json.Marshal(in)
			if err != nil {
				return ErrInternal
			}
			return g.out(p[0], p[1], p[2], b)
		}},
		// public_key(which, out, out_cap, out_len) → 33 bytes.
		{"public_key", 4, func(ctx context.Context, g memory, p []uint32) Code {
			w, c := which(p[0])
			if c != OK {
				return c
			}
			if !g.writable(p[3], 4) || !g.writable(p[1], p[2]) {
				return ErrFault
			}
			pub, err := dev.PublicKey(ctx, w)
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[1], p[2], p[3], pub)
		}},
		// encrypt(data, len, out, out_cap, out_len) → nonce ‖ ciphertext ‖ tag.
		{"encrypt", 5, func(ctx context.Context, g memory, p []uint32) Code {
			pt, c := g.bytes(p[0], p[1], maxMessage)
			if c != OK {
				return c
			}
			if !g.writable(p[4], 4) || !g.writable(p[2], p[3]) {
				return ErrFault
			}
			ct, err := dev.Encrypt(ctx, pt)
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[2], p[3], p[4], ct)
		}},
		// decrypt(data, len, out, out_cap, out_len).
		{"decrypt", 5, func(ctx context.Context, g memory, p []uint32) Code {
			ct, c := g.bytes(p[0], p[1], maxMessage+64)
			if c != OK {
				return c
			}
			if !g.writable(p[4], 4) || !g.writable(p[2], p[3]) {
				return ErrFault
			}
			pt, err := dev.Decrypt(ctx, ct)
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[2], p[3], p[4], pt)
		}},
		// sign(which, msg, msg_len, out, out_cap, out_len) → DER signature.
		{"sign", 6, func(ctx context.Context, g memory, p []uint32) Code {
			w, c := which(p[0])
			if c != OK {
				return c
			}
			msg, c := g.bytes(p[1], p[2], maxMessage)
			if c != OK {
				return c
			}
			if !g.writable(p[5], 4) || !g.writable(p[3], p[4]) {
				return ErrFault
			}
			op := func() ([]byte, error) { return dev.Sign(ctx, w, msg) }
			var sig []byte
			var err error
			if w == PrivilegedPair {
				sig, err = privileged(ctx, "sign with the privileged key pair", op)
			} else {
				sig, err = op()
			}
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[3], p[4], p[5], sig)
		}},
		// verify(pub, pub_len, msg, msg_len, sig, sig_len) → ok or bad_signature.
		{"verify", 6, func(_ context.Context, g memory, p []uint32) Code {
			pub, c := g.bytes(p[0], p[1], maxPubKey)
			if c != OK {
				return c
			}
			msg, c := g.bytes(p[2], p[3], maxMessage)
			if c != OK {
				return c
			}
			sig, c := g.bytes(p[4], p[5], maxSig)
			if c != OK {
				return c
			}
			if _, err := btcec.ParsePubKey(pub); err != nil {
				return ErrInvalid
			}
			if !Verify(pub, msg, sig) {
				return ErrBadSig
			}
			return OK
		}},
		// ecdh(pub, pub_len, out, out_cap, out_len) → 32 bytes.
		{"ecdh", 5, func(ctx context.Context, g memory, p []uint32) Code {
			pub, c := g.bytes(p[0], p[1], maxPubKey)
			if c != OK {
				return c
			}
			if _, err := btcec.ParsePubKey(pub); err != nil {
				return ErrInvalid
			}
			if !g.writable(p[4], 4) || !g.writable(p[2], p[3]) {
				return ErrFault
			}
			sec, err := privileged(ctx, "ECDH with the privileged key pair", func() ([]byte, error) { return dev.ECDH(ctx, pub) })
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[2], p[3], p[4], sec)
		}},
	})
}

// noIdentity answers a machine booted without an identity.
type noIdentity struct{}

func (noIdentity) Info(context.Context) (IdentityInfo, error) { return IdentityInfo{}, ErrNotSupported }
func (noIdentity) PublicKey(context.Context, KeyPair) ([]byte, error) {
	return nil, ErrNotSupported
}
func (noIdentity) Encrypt(context.Context, []byte) ([]byte, error) { return nil, ErrNotSupported }
func (noIdentity) Decrypt(context.Context, []byte) ([]byte, error) { return nil, ErrNotSupported }
func (noIdentity) Sign(context.Context, KeyPair, []byte) ([]byte, error) {
	return nil, ErrNotSupported
}
func (noIdentity) ECDH(context.Context, []byte) ([]byte, error) { return nil, ErrNotSupported }
