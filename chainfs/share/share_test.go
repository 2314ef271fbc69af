package share

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/keyring"
)

func grant(t *testing.T, to *btcec.PrivateKey, write bool) Grant {
	var r, w [64]byte
	_, _ = rand.Read(r[:])
	_, _ = rand.Read(w[:])
	k, err := node.RootKeys(r, w)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := NewID()
	g := Grant{ID: id, Kind: node.KindDir, Addr: k.Addr, Genesis: node.OutPoint{TxID: [32]byte{1}, Index: 3}, Read: k.Read, Name: "docs", Path: "/docs", Sent: time.Unix(0, 12345)}
	if write {
		g.Flags |= FlagWrite
		g.Write = k.Write
	}
	copy(g.To[:], to.PubKey().SerializeCompressed())
	return g
}

func TestSealOpen(t *testing.T) {
	alice, _ := btcec.NewPrivateKey()
	bob, _ := btcec.NewPrivateKey()
	carol, _ := btcec.NewPrivateKey()
	for _, write := range []bool{false, true} {
		g := grant(t, bob, write)
		fields, err := Seal(alice, g)
		if err != nil {
			t.Fatal(err)
		}
		from, got, err := Open(bob, fields)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(from[:], alice.PubKey().SerializeCompressed()) || got.Read != g.Read || got.Keys().HasWrite != write || got.Name != "docs" {
			t.Fatalf("round trip: %+v", got)
		}
		if _, _, err := Open(carol, fields); !errors.Is(err, keyring.ErrDecrypt) {
			t.Fatalf("a third party opened the share: %v", err)
		}
		// A forged sender: Carol claims to be Alice.
		forged, _ := Seal(carol, g)
		forged[0] = fields[0]
		if _, _, err := Open(bob, forged); err == nil {
			t.Fatal("a share with a forged sender opened")
		}
	}
}

func TestGrantRejectsForeignWriteKey(t *testing.T) {
	bob, _ := btcec.NewPrivateKey()
	g := grant(t, bob, true)
	g.Addr[0] ^= 1 // claims write access to another node
	if _, err := Unmarshal(g.Marshal()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write key for another address accepted: %v", err)
	}
}

func TestPublished(t *testing.T) {
	bob, _ := btcec.NewPrivateKey()
	g := grant(t, bob, false)
	got, err := OpenPublished(Published(g))
	if err != nil || got.Read != g.Read || got.Path != "" {
		t.Fatalf("published: %+v %v", got, err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	bob, _ := btcec.NewPrivateKey()
	var r, w [64]byte
	k, _ := node.RootKeys(r, w)
	g := Grant{Kind: node.KindFile, Addr: k.Addr, Name: "x", Flags: FlagWrite, Write: k.Write}
	copy(g.To[:], bob.PubKey().SerializeCompressed())
	f.Add(g.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Unmarshal(b)
		if err != nil {
			return
		}
		if _, err := Unmarshal(g.Marshal()); err != nil {
			t.Fatalf("decoded grant does not re-encode: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	me, _ := btcec.NewPrivateKey()
	from, _ := btcec.NewPrivateKey()
	var r, w [64]byte
	k, _ := node.RootKeys(r, w)
	g := Grant{Kind: node.KindDir, Addr: k.Addr, Name: "d"}
	copy(g.To[:], me.PubKey().SerializeCompressed())
	fields, _ := Seal(from, g)
	f.Add(fields[0], fields[1])
	f.Fuzz(func(t *testing.T, a, b []byte) {
		_, _, _ = Open(me, [][]byte{a, b})
	})
}
