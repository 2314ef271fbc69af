package image

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"

	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/keyring"
)

const recordKeyInfo = "integrity image record key v1"

// recordAAD is bound into every sealed record: format version and
// purpose, so a record cannot pass for anything else sealed under a key
// derived from the same node.
var recordAAD = []byte("IGI\x01record")

// recordKey is the AES-256 key of a node's image record:
// HKDF-SHA256(read private key, no salt, "integrity image record key v1").
// It differs from the node's commit key (node.Keys.ContentKey), so an
// image record and a commit at the same node never share a key.
func recordKey(k *node.Keys) (keyring.Key, error) {
	var out keyring.Key
	b, err := hkdf.Key(sha256.New, k.Read[:32], nil, recordKeyInfo, len(out))
	if err != nil {
		return out, fmt.Errorf("image: deriving record key: %w", err)
	}
	copy(out[:], b)
	keyring.Wipe(b)
	return out, nil
}

func sealRecord(k *node.Keys, plain []byte) ([]byte, error) {
	key, err := recordKey(k)
	if err != nil {
		return nil, err
	}
	defer key.Wipe()
	return keyring.Seal(key, plain, recordAAD)
}

func openRecord(k *node.Keys, sealed []byte) ([]byte, error) {
	key, err := recordKey(k)
	if err != nil {
		return nil, err
	}
	defer key.Wipe()
	pt, err := keyring.Open(key, sealed, recordAAD)
	if err != nil {
		return nil, ErrKeys
	}
	return pt, nil
}

// NodeKeys derives the keys of the node at indexes below the mount node
// (an entry's Indexes): the keys a private entry is sealed with, and
// where the tree's overlay commits for that entry go. With the mount
// node's write key the result has write access and its address.
func NodeKeys(mount node.Keys, indexes []uint32) (node.Keys, error) {
	k := mount
	for _, i := range indexes {
		c, err := k.Child(i, [20]byte{})
		if err != nil {
			return node.Keys{}, fmt.Errorf("image: deriving child %d: %w", i, err)
		}
		k = c
	}
	return k, nil
}
