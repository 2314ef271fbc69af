package hostdev

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"golang.org/x/crypto/hkdf"

	"github.com/integrity-sys/integrity/keyring"
	"github.com/integrity-sys/integrity/vm"
)

// Identity performs the identity module's operations with a
// keyring.Identity. The keys never leave it: the guest gets public keys,
// signatures of vm.MessageDigest, ciphertexts under a key derived for the
// VM alone, and vm.SharedSecret values.
type Identity struct {
	// Get returns the logged-in identity (it changes on logout and
	// login, so it is asked for on every call).
	Get    func() (*keyring.Identity, error)
	User   string
	Params *chaincfg.Params
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

var _ vm.Identity = (*Identity)(nil)

// vmKeyInfo names the key the VM's encrypt/decrypt use. Deriving it (rather
// than using the primary key) is what keeps decrypt from opening anything
// the System sealed under the primary key — such as the primary key pair
// on chain (docs/VM-ABI.md).
const vmKeyInfo = "integrity/vm/encrypt/v1"

var vmAAD = []byte(vmKeyInfo)

func (d *Identity) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Identity) Info(context.Context) (vm.IdentityInfo, error) {
	id, err := d.Get()
	if err != nil {
		return vm.IdentityInfo{}, err
	}
	in := vm.IdentityInfo{User: d.User, PrimaryPubKey: hex.EncodeToString(id.PrimaryPub),
		PrivilegedPubKey: hex.EncodeToString(id.PrivilegedPub)}
	if d.Params != nil {
		in.RootAddress, in.Network = rootAddress(id.RootAddr, d.Params), d.Params.Name
	}
	return in, nil
}

func (d *Identity) PublicKey(_ context.Context, which vm.KeyPair) ([]byte, error) {
	id, err := d.Get()
	if err != nil {
		return nil, err
	}
	if which == vm.PrivilegedPair {
		return slices.Clone(id.PrivilegedPub), nil
	}
	return slices.Clone(id.PrimaryPub), nil
}

// vmKey derives the VM's sealing key from the primary key.
func vmKey(primary keyring.Key) (keyring.Key, error) {
	var k keyring.Key
	if _, err := io.ReadFull(hkdf.New(sha256.New, primary[:], nil, []byte(vmKeyInfo)), k[:]); err != nil {
		return k, fmt.Errorf("derive VM key: %w", err)
	}
	return k, nil
}

func (d *Identity) Encrypt(_ context.Context, plaintext []byte) ([]byte, error) {
	id, err := d.Get()
	if err != nil {
		return nil, err
	}
	k, err := vmKey(id.Primary)
	if err != nil {
		return nil, err
	}
	defer k.Wipe()
	return keyring.Seal(k, plaintext, vmAAD)
}

func (d *Identity) Decrypt(_ context.Context, sealed []byte) ([]byte, error) {
	id, err := d.Get()
	if err != nil {
		return nil, err
	}
	k, err := vmKey(id.Primary)
	if err != nil {
		return nil, err
	}
	defer k.Wipe()
	pt, err := keyring.Open(k, sealed, vmAAD)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", vm.ErrBadCipher, err)
	}
	return pt, nil
}

// privileged returns the privileged key pair while it is unlocked.
func (d *Identity) privileged(id *keyring.Identity) (*btcec.PrivateKey, error) {
	_, pair, err := id.Privileged(d.now())
	if errors.Is(err, keyring.ErrLocked) {
		return nil, fmt.Errorf("%w: %v", vm.ErrPrivLocked, err)
	}
	return pair, err
}

func (d *Identity) Sign(_ context.Context, which vm.KeyPair, msg []byte) ([]byte, error) {
	id, err := d.Get()
	if err != nil {
		return nil, err
	}
	key := id.PrimaryPair
	if which == vm.PrivilegedPair {
		if key, err = d.privileged(id); err != nil {
			return nil, err
		}
	}
	if key == nil {
		return nil, fmt.Errorf("no key pair: %w", vm.ErrNotSupported)
	}
	digest := vm.MessageDigest(msg)
	return ecdsa.Sign(key, digest[:]).Serialize(), nil
}

func (d *Identity) ECDH(_ context.Context, peer []byte) ([]byte, error) {
	pub, err := btcec.ParsePubKey(peer)
	if err != nil {
		return nil, fmt.Errorf("public key: %w (%v)", vm.ErrBadInput, err)
	}
	id, err := d.Get()
	if err != nil {
		return nil, err
	}
	pair, err := d.privileged(id)
	if err != nil {
		return nil, err
	}
	x := btcec.GenerateSharedSecret(pair, pub)
	defer keyring.Wipe(x)
	s := vm.SharedSecret(x)
	return s[:], nil
}
