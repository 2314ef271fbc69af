// Package share is the on-chain format of sharing and publishing
// (docs/PROTOCOL.md, "Sharing"): a node's keys sent to another user's inbox
// encrypted under an ECDH secret between the two primary key pairs (paper:
// Shared Folders), and a node's keys published in the clear from the node's
// own address. It does no I/O.
package share

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"golang.org/x/crypto/hkdf"

	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/internal/envelope"
	"github.com/integrity-sys/integrity/keyring"
)

// Version of the share and publish payloads.
const Version = 1

// Flags of a grant.
const (
	FlagWrite   = 1 << 0 // the write key is included
	FlagRevoked = 1 << 1 // the share is withdrawn: no keys
	FlagPublic  = 1 << 2 // a note to self: the node was published
)

// Limits.
const (
	MaxPath = 4096
	payload = 1 + 16 + 1 + 1 + 20 + 36 + 64 + 64 + 33 + 33 + 8
)

// ErrCorrupt wraps every decoding failure.
var ErrCorrupt = errors.New("corrupt share message")

// Grant is what a share says: a node and its keys, for someone.
type Grant struct {
	ID      [16]byte // identifies the share for updates and revocation
	Flags   byte
	Kind    node.Kind
	Addr    [20]byte
	Genesis node.OutPoint
	Read    [64]byte
	Write   [64]byte // only with FlagWrite
	To      [33]byte // the recipient's primary public key
	// For, in the sharer's note to self, is whom the share went to (zero
	// in the recipient's copy).
	For  [33]byte
	Sent time.Time
	// Name is the shared folder's name; Path its place in the sharer's
	// tree (only in the sharer's own copy).
	Name string
	Path string
}

// NewID returns a random share id.
func NewID() ([16]byte, error) {
	var id [16]byte
	_, err := rand.Read(id[:])
	return id, err
}

// Keys are the node keys the grant carries.
func (g *Grant) Keys() node.Keys {
	k := node.Keys{Read: g.Read, Addr: g.Addr}
	if g.Flags&FlagWrite != 0 {
		k.Write, k.HasWrite = g.Write, true
	}
	return k
}

// Marshal encodes the grant.
func (g *Grant) Marshal() []byte {
	b := make([]byte, 0, payload+len(g.Name)+len(g.Path)+6)
	b = append(b, Version)
	b = append(b, g.ID[:]...)
	b = append(b, g.Flags, byte(g.Kind))
	b = append(b, g.Addr[:]...)
	b = append(b, g.Genesis.TxID[:]...)
	b = binary.LittleEndian.AppendUint32(b, g.Genesis.Index)
	b = append(b, g.Read[:]...)
	if g.Flags&FlagWrite != 0 {
		b = append(b, g.Write[:]...)
	}
	b = append(b, g.To[:]...)
	b = append(b, g.For[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(g.Sent.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(g.Name)))
	b = append(b, g.Name...)
	b = binary.AppendUvarint(b, uint64(len(g.Path)))
	return append(b, g.Path...)
}

// Unmarshal decodes a grant from untrusted bytes.
func Unmarshal(b []byte) (Grant, error) {
	var g Grant
	r := b
	take := func(n int) ([]byte, error) {
		if len(r) < n {
			return nil, fmt.Errorf("%w: truncated", ErrCorrupt)
		}
		x := r[:n]
		r = r[n:]
		return x, nil
	}
	h, err := take(1 + 16 + 1 + 1 + 20 + 36 + 64)
	if err != nil {
		return g, err
	}
	if h[0] != Version {
		return g, fmt.Errorf("%w: version %d", ErrCorrupt, h[0])
	}
	copy(g.ID[:], h[1:17])
	g.Flags, g.Kind = h[17], node.Kind(h[18])
	if g.Flags&^(FlagWrite|FlagRevoked|FlagPublic) != 0 {
		return g, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, g.Flags)
	}
	if g.Kind < node.KindDir || g.Kind > node.KindSymlink {
		return g, fmt.Errorf("%w: kind %d", ErrCorrupt, g.Kind)
	}
	copy(g.Addr[:], h[19:39])
	copy(g.Genesis.TxID[:], h[39:71])
	g.Genesis.Index = binary.LittleEndian.Uint32(h[71:75])
	copy(g.Read[:], h[75:139])
	if g.Flags&FlagWrite != 0 {
		w, err := take(64)
		if err != nil {
			return g, err
		}
		copy(g.Write[:], w)
	}
	t, err := take(33 + 33 + 8)
	if err != nil {
		return g, err
	}
	copy(g.To[:], t[:33])
	copy(g.For[:], t[33:66])
	g.Sent = time.Unix(0, int64(binary.LittleEndian.Uint64(t[66:])))
	str := func() (string, error) {
		n, k := binary.Uvarint(r)
		if k <= 0 || n > MaxPath {
			return "", fmt.Errorf("%w: bad string length", ErrCorrupt)
		}
		r = r[k:]
		s, err := take(int(n))
		return string(s), err
	}
	if g.Name, err = str(); err != nil {
		return g, err
	}
	if g.Name != "" {
		if err := node.ValidName(g.Name); err != nil {
			return g, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	if g.Path, err = str(); err != nil {
		return g, err
	}
	if len(r) != 0 {
		return g, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r))
	}
	if g.Flags&FlagWrite != 0 {
		// The write key must be the key of the address it names: a grant
		// cannot hand out a key for someone else's node.
		priv, _ := btcec.PrivKeyFromBytes(g.Write[:32])
		if [20]byte(address.Hash160(priv.PubKey().SerializeCompressed())) != g.Addr {
			return g, fmt.Errorf("%w: write key does not match the node's address", ErrCorrupt)
		}
	}
	return g, nil
}

// InboxAddr is where a user receives shares: the P2PKH address of their
// primary public key (published at bootstrap, message 0x07).
func InboxAddr(primaryPub []byte) [20]byte {
	return [20]byte(address.Hash160(primaryPub))
}

// secret derives the key two users share (paper: "an ECDH shared secret
// between the private component of our Primary Key Pair and the public
// component of the other User's Primary Key Pair").
func secret(priv *btcec.PrivateKey, pub *btcec.PublicKey) keyring.Key {
	x := btcec.GenerateSharedSecret(priv, pub)
	defer keyring.Wipe(x)
	var k keyring.Key
	r := hkdf.New(sha256.New, x, nil, []byte("integrity share v1"))
	_, _ = io.ReadFull(r, k[:])
	return k
}

func aad(inbox [20]byte, from, to []byte) []byte {
	a := envelope.AAD(envelope.TypeShare, inbox[:])
	a = append(a, from...)
	return append(a, to...)
}

// Seal encrypts a grant for its recipient (g.To) from the sender's primary
// key pair: the fields of a share message (envelope.TypeShare), to be paid
// to InboxAddr(g.To).
func Seal(from *btcec.PrivateKey, g Grant) ([][]byte, error) {
	to, err := btcec.ParsePubKey(g.To[:])
	if err != nil {
		return nil, fmt.Errorf("share: recipient key: %w", err)
	}
	k := secret(from, to)
	defer k.Wipe()
	fromPub := from.PubKey().SerializeCompressed()
	sealed, err := keyring.Seal(k, g.Marshal(), aad(InboxAddr(g.To[:]), fromPub, g.To[:]))
	if err != nil {
		return nil, err
	}
	return [][]byte{fromPub, sealed}, nil
}

// Open decrypts a share message found in the inbox of the key pair me.
// It fails for anything not made by the holder of the sender's key for
// this recipient and this inbox.
func Open(me *btcec.PrivateKey, fields [][]byte) (from [33]byte, g Grant, err error) {
	if len(fields) != 2 || len(fields[0]) != 33 {
		return from, g, fmt.Errorf("%w: want 2 fields", ErrCorrupt)
	}
	fromKey, err := btcec.ParsePubKey(fields[0])
	if err != nil {
		return from, g, fmt.Errorf("%w: sender key: %v", ErrCorrupt, err)
	}
	myPub := me.PubKey().SerializeCompressed()
	k := secret(me, fromKey)
	defer k.Wipe()
	plain, err := keyring.Open(k, fields[1], aad(InboxAddr(myPub), fields[0], myPub))
	if err != nil {
		return from, g, err
	}
	defer keyring.Wipe(plain)
	if g, err = Unmarshal(plain); err != nil {
		return from, g, err
	}
	if string(g.To[:]) != string(myPub) {
		return from, g, fmt.Errorf("%w: addressed to another key", ErrCorrupt)
	}
	copy(from[:], fields[0])
	return from, g, nil
}

// Published are the fields of a publish message (envelope.TypePublish),
// sent from the node's own address: its keys in the clear (paper: "To make
// the folder completely public, simply broadcast the key(s), unencrypted,
// to the Blockchain at the address for the filesystem node").
func Published(g Grant) [][]byte {
	g.To, g.For, g.Path = [33]byte{}, [33]byte{}, ""
	return [][]byte{g.Marshal()}
}

// OpenPublished decodes a publish message's fields.
func OpenPublished(fields [][]byte) (Grant, error) {
	if len(fields) != 1 {
		return Grant{}, fmt.Errorf("%w: want 1 field", ErrCorrupt)
	}
	return Unmarshal(fields[0])
}
