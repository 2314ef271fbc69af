package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"golang.org/x/crypto/hkdf"

	"github.com/integrity-sys/integrity/keyring"
)

// Keys are what one holds of a node: its read tree key (always) and write
// tree key (with write access), each a BIP32 extended private key as
// key ‖ chain code. Children are derived hardened only, so a child's keys
// together with anything public about the parent never yield the parent's
// keys (docs/SECURITY.md, "No privilege escalation").
type Keys struct {
	Read     [64]byte
	Write    [64]byte
	HasWrite bool
	// Addr is HASH160 of the write key's public key: the node's address.
	// Readers without the write key learn it from the parent's entry.
	Addr [20]byte
}

// RootKeys are the keys of "/" from the two tree roots.
func RootKeys(read, write [64]byte) (Keys, error) {
	k := Keys{Read: read, Write: write, HasWrite: true}
	a, err := addrOf(write)
	if err != nil {
		return Keys{}, err
	}
	k.Addr = a
	return k, nil
}

func ext(k [64]byte) *hdkeychain.ExtendedKey {
	return keyring.TreeRoot(k)
}

// derive is BIP32 hardened child derivation (CKDpriv with i ≥ 2³¹):
// I = HMAC-SHA512(chain code, 0x00 ‖ key ‖ ser32(i)); child key =
// parse256(I_L) + key (mod n); child chain code = I_R. Written out rather
// than through hdkeychain, which also computes the parent's public key (an
// elliptic-curve multiplication) for a fingerprint integrity never uses;
// TestDeriveMatchesHDKeychain checks both agree.
func derive(parent [64]byte, index uint32) ([64]byte, error) {
	var out [64]byte
	if index >= hdkeychain.HardenedKeyStart {
		return out, fmt.Errorf("child index %d out of range", index)
	}
	var data [37]byte
	copy(data[1:33], parent[:32])
	binary.BigEndian.PutUint32(data[33:], hdkeychain.HardenedKeyStart+index)
	m := hmac.New(sha512.New, parent[32:])
	m.Write(data[:])
	ilr := m.Sum(nil)
	defer keyring.Wipe(ilr)
	keyring.Wipe(data[:])
	var il, k btcec.ModNScalar
	if il.SetByteSlice(ilr[:32]) {
		return out, fmt.Errorf("derive child %d: %w", index, hdkeychain.ErrInvalidChild)
	}
	if k.SetByteSlice(parent[:32]) || k.IsZero() {
		return out, errors.New("derive: invalid parent key")
	}
	il.Add(&k)
	k.Zero()
	if il.IsZero() {
		return out, fmt.Errorf("derive child %d: %w", index, hdkeychain.ErrInvalidChild)
	}
	b := il.Bytes()
	il.Zero()
	copy(out[:32], b[:])
	copy(out[32:], ilr[32:])
	keyring.Wipe(b[:])
	return out, nil
}

func addrOf(write [64]byte) ([20]byte, error) {
	priv, _ := btcec.PrivKeyFromBytes(write[:32])
	var a [20]byte
	if priv.Key.IsZero() {
		return a, errors.New("zero write key")
	}
	copy(a[:], address.Hash160(priv.PubKey().SerializeCompressed()))
	return a, nil
}

// Child derives child index's keys. With write access the child's address
// follows; without, the caller supplies the address from the entry.
func (k Keys) Child(index uint32, addr [20]byte) (Keys, error) {
	r, err := derive(k.Read, index)
	if err != nil {
		return Keys{}, err
	}
	c := Keys{Read: r, Addr: addr}
	if k.HasWrite {
		if c.Write, err = derive(k.Write, index); err != nil {
			return Keys{}, err
		}
		c.HasWrite = true
		if c.Addr, err = addrOf(c.Write); err != nil {
			return Keys{}, err
		}
	}
	return c, nil
}

// ReadOnly drops the write key.
func (k Keys) ReadOnly() Keys {
	k.Write, k.HasWrite = [64]byte{}, false
	return k
}

// ContentKey is the AES-256 key of the node's commits: HKDF of the read
// key, so the BIP32 private key itself is never used as a cipher key.
func (k Keys) ContentKey() keyring.Key {
	return hk(k.Read[:32], "integrity node content key v1")
}

// sealKey protects the write keys of moved-in children in this node's
// entries: only holders of this node's write key can open them.
func (k Keys) sealKey() keyring.Key {
	return hk(k.Write[:32], "integrity entry seal key v1")
}

func hk(secret []byte, info string) keyring.Key {
	var out keyring.Key
	r := hkdf.New(sha256.New, secret, nil, []byte(info))
	_, _ = io.ReadFull(r, out[:])
	return out
}

// WritePriv returns the node's write private key for signing commits.
func (k Keys) WritePriv() (*btcec.PrivateKey, error) {
	if !k.HasWrite {
		return nil, errors.New("no write access to this node")
	}
	p, _ := btcec.PrivKeyFromBytes(k.Write[:32])
	return p, nil
}

// SealChildWrite seals a child's write key for this directory's writers
// (an OpEntryLink of a moved-in child).
func (k Keys) SealChildWrite(child Keys) ([]byte, error) {
	if !k.HasWrite || !child.HasWrite {
		return nil, nil
	}
	sk := k.sealKey()
	defer sk.Wipe()
	return keyring.Seal(sk, child.Write[:], sealAAD(k.Addr, child.Addr))
}

// ChildKeys returns the keys of a child named by an entry of this
// directory.
func (k Keys) ChildKeys(e Entry) (Keys, error) {
	if e.Native {
		c, err := k.Child(e.Index, e.Addr)
		if err != nil {
			return Keys{}, err
		}
		if c.Addr != e.Addr {
			return Keys{}, fmt.Errorf("entry %q names address %x, but index %d derives %x", e.Name, e.Addr, e.Index, c.Addr)
		}
		return c, nil
	}
	c := Keys{Read: e.ReadKey, Addr: e.Addr}
	if k.HasWrite && len(e.SealedWrite) > 0 {
		sk := k.sealKey()
		w, err := keyring.Open(sk, e.SealedWrite, sealAAD(k.Addr, e.Addr))
		sk.Wipe()
		if err != nil {
			return Keys{}, fmt.Errorf("entry %q: write key: %w", e.Name, err)
		}
		if len(w) != 64 {
			return Keys{}, fmt.Errorf("entry %q: write key of %d bytes", e.Name, len(w))
		}
		copy(c.Write[:], w)
		keyring.Wipe(w)
		a, err := addrOf(c.Write)
		if err != nil || a != e.Addr {
			return Keys{}, fmt.Errorf("entry %q: write key does not match its address", e.Name)
		}
		c.HasWrite = true
	}
	return c, nil
}

func sealAAD(dir, child [20]byte) []byte {
	a := append([]byte("integrity entry seal v1"), dir[:]...)
	return append(a, child[:]...)
}
