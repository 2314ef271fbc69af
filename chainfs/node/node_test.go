package node

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"

	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/keyring"
)

func randRoot(t testing.TB) [64]byte {
	var r [64]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	return r
}

func rootKeys(t testing.TB) Keys {
	k, err := RootKeys(randRoot(t), randRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sampleBody() Body {
	var addr [20]byte
	addr[3] = 9
	return Body{Ops: []Op{
		{Code: OpKind, Kind: KindDir},
		{Code: OpAttr, Mode: 0o750, Mtime: 1_700_000_000_123_456_789},
		{Code: OpXattrSet, Name: "user.colour", Data: []byte("blue")},
		{Code: OpXattrDel, Name: "user.old"},
		{Code: OpEntryNew, Entry: Entry{Name: "report.txt", Kind: KindFile, Index: 7, Addr: addr}},
		{Code: OpEntryLink, Entry: Entry{Name: "moved", Kind: KindDir, Addr: addr, Genesis: OutPoint{TxID: [32]byte{1}, Index: 3}, ReadKey: [64]byte{5}, SealedWrite: []byte("sealed")}},
		{Code: OpEntryLink, Entry: Entry{Name: "renamed", Kind: KindFile, Addr: addr, Genesis: OutPoint{Index: 2}, Native: true, Index: 1}},
		{Code: OpEntryDel, Name: "gone"},
		{Code: OpDelete},
	}}
}

func TestBodyRoundTrip(t *testing.T) {
	b := sampleBody()
	got, err := Unmarshal(b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), b.Marshal()) || len(got.Ops) != len(b.Ops) {
		t.Fatal("round trip differs")
	}
	fb := Body{Ops: []Op{{Code: OpKind, Kind: KindFile}, {Code: OpData, Data: []byte("hello")}, {Code: OpPatch, Data: []byte{1, 2}}, {Code: OpTruncate, Size: 3}}}
	if g, err := Unmarshal(fb.Marshal()); err != nil || string(g.Ops[1].Data) != "hello" || g.Ops[3].Size != 3 {
		t.Fatalf("file body: %+v %v", g, err)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	bad := func(name string, ops ...Op) {
		t.Helper()
		if _, err := Unmarshal(Body{Ops: ops}.Marshal()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad("slash in name", Op{Code: OpEntryNew, Entry: Entry{Name: "a/b", Kind: KindFile}})
	bad("dotdot", Op{Code: OpEntryNew, Entry: Entry{Name: "..", Kind: KindFile}})
	bad("nul", Op{Code: OpEntryDel, Name: "a\x00b"})
	bad("long name", Op{Code: OpEntryDel, Name: string(bytes.Repeat([]byte{'a'}, 256))})
	bad("bad kind", Op{Code: OpKind, Kind: 9})
	bad("bad mode", Op{Code: OpAttr, Mode: 0o170000})
	bad("unknown op", Op{Code: 0x7f})
	if _, err := Unmarshal(nil); !errors.Is(err, ErrCorrupt) {
		t.Error("empty body accepted")
	}
	if _, err := Unmarshal([]byte{2}); !errors.Is(err, ErrCorrupt) {
		t.Error("future version accepted")
	}
	if _, err := Unmarshal([]byte{1, OpData, 10, 1}); !errors.Is(err, ErrCorrupt) {
		t.Error("truncated op accepted")
	}
}

func TestApplyEntriesAndGenesis(t *testing.T) {
	s := NewState(KindDir)
	var tx [32]byte
	tx[0] = 0xaa
	b := Body{Ops: []Op{
		{Code: OpEntryNew, Entry: Entry{Name: "a", Kind: KindFile, Index: 0}},
		{Code: OpEntryNew, Entry: Entry{Name: "b", Kind: KindDir, Index: 1}},
	}}
	if err := s.Apply(b, tx, nil); err != nil {
		t.Fatal(err)
	}
	if g := s.Entries["b"].Genesis; g.TxID != tx || g.Index != 3 || s.Entries["a"].Genesis.Index != 2 || s.NextIndex != 2 {
		t.Fatalf("genesis outputs: %+v", s.Entries)
	}
	// Reusing an index is refused and leaves the state unchanged.
	reuse := Body{Ops: []Op{{Code: OpEntryDel, Name: "a"}, {Code: OpEntryNew, Entry: Entry{Name: "c", Kind: KindFile, Index: 1}}}}
	if err := s.Apply(reuse, tx, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("index reuse: %v", err)
	}
	if _, ok := s.Entries["a"]; !ok {
		t.Fatal("a refused commit changed the state")
	}
	if err := s.Apply(Body{Ops: []Op{{Code: OpData, Data: []byte("x")}}}, tx, nil); !errors.Is(err, ErrInvalid) {
		t.Fatal("content op on a directory accepted")
	}
}

func TestApplyFileOps(t *testing.T) {
	s := NewState(KindFile)
	old := bytes.Repeat([]byte("0123456789"), 1000)
	if err := s.Apply(Body{Ops: []Op{{Code: OpData, Data: old}}}, [32]byte{}, nil); err != nil {
		t.Fatal(err)
	}
	newer := append([]byte{}, old...)
	newer[5000] = 'X'
	if err := s.Apply(Body{Ops: []Op{{Code: OpPatch, Data: delta.Diff(old, newer)}}}, [32]byte{}, nil); err != nil || !bytes.Equal(s.Content, newer) {
		t.Fatalf("patch: %v", err)
	}
	// A patch made against another base is refused.
	if err := s.Apply(Body{Ops: []Op{{Code: OpPatch, Data: delta.Diff(old, old[:10])}}}, [32]byte{}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("patch against wrong base: %v", err)
	}
	if err := s.Apply(Body{Ops: []Op{{Code: OpTruncate, Size: 20_000}}}, [32]byte{}, nil); err != nil || len(s.Content) != 20_000 || s.Content[15_000] != 0 {
		t.Fatal("truncate up")
	}
	if err := s.Apply(Body{Ops: []Op{{Code: OpTruncate, Size: 3}}}, [32]byte{}, nil); err != nil || string(s.Content) != "012" {
		t.Fatal("truncate down")
	}
}

func TestSealBindsNode(t *testing.T) {
	root := rootKeys(t)
	a, err := root.Child(0, [20]byte{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := root.Child(1, [20]byte{})
	sealed, err := SealBody(a, sampleBody())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBody(a, sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBody(b, sealed); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("another node opened the commit: %v", err)
	}
	// Same read key, other address (a commit replayed to another node):
	// the AAD refuses it.
	moved := a
	moved.Addr = b.Addr
	if _, err := OpenBody(moved, sealed); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("replayed to another address: %v", err)
	}
}

// TestHardenedNoEscalation: read access never yields write access, and a
// child's keys never yield the parent's (docs/SECURITY.md).
func TestHardenedNoEscalation(t *testing.T) {
	root := rootKeys(t)
	a, _ := root.Child(3, [20]byte{})
	ab, _ := a.Child(0, [20]byte{})
	ro := a.ReadOnly()
	roChild, err := ro.Child(0, ab.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if roChild.HasWrite || roChild.Read != ab.Read {
		t.Fatal("read-only keys derived a write key, or the wrong read key")
	}
	if _, err := roChild.WritePriv(); err == nil {
		t.Fatal("read-only node gave a write key")
	}
	// Deriving from the child never reaches the parent's keys.
	for i := uint32(0); i < 64; i++ {
		c, _ := ab.Child(i, [20]byte{})
		if c.Write == a.Write || c.Read == a.Read || c.Write == root.Write {
			t.Fatal("a descendant's key equals an ancestor's")
		}
	}
	// A moved-in child's write key is sealed for the directory's writers
	// only.
	sealed, err := root.SealChildWrite(ab)
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{Name: "x", Kind: KindDir, Addr: ab.Addr, ReadKey: ab.Read, SealedWrite: sealed}
	got, err := root.ChildKeys(e)
	if err != nil || !got.HasWrite || got.Write != ab.Write {
		t.Fatalf("writer: %v", err)
	}
	got, err = root.ReadOnly().ChildKeys(e)
	if err != nil || got.HasWrite {
		t.Fatalf("reader got write access through a moved entry: %v", err)
	}
	// A forged native entry naming another address is refused.
	if _, err := root.ChildKeys(Entry{Name: "y", Native: true, Index: 3, Addr: ab.Addr}); err == nil {
		t.Fatal("native entry with a foreign address accepted")
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(sampleBody().Marshal())
	f.Add([]byte{1, OpData, 3, 'a', 'b', 'c'})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Unmarshal(data)
		if err != nil {
			return
		}
		again, err := Unmarshal(b.Marshal())
		if err != nil || len(again.Ops) != len(b.Ops) {
			t.Fatalf("decoded body does not re-encode: %v", err)
		}
		// Applying never panics.
		s := NewState(KindDir)
		_ = s.Apply(b, [32]byte{}, nil)
		f := NewState(KindFile)
		_ = f.Apply(b, [32]byte{}, nil)
	})
}

func TestDeriveMatchesHDKeychain(t *testing.T) {
	root := randRoot(t)
	for _, idx := range []uint32{0, 1, 7, 1 << 20, 1<<31 - 1} {
		got, err := derive(root, idx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ext(root).Derive(hdkeychain.HardenedKeyStart + idx)
		if err != nil {
			t.Fatal(err)
		}
		priv, _ := want.ECPrivKey()
		b := priv.Key.Bytes()
		if !bytes.Equal(got[:32], b[:]) || !bytes.Equal(got[32:], want.ChainCode()) {
			t.Fatalf("index %d: derive differs from hdkeychain", idx)
		}
	}
}
