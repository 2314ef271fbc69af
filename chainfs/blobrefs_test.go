package chainfs

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/wallet"
)

// TestBlobRefs: a large file's blob is listed once committed, with its
// path and size; small inline files are not; a deleted file's blob
// disappears, a rewritten file lists its new blob, and another device
// rebuilding the tree from the chain lists the same.
func TestBlobRefs(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	defer closeTree(t, tr)
	mkdir(t, tr, "/docs")
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)
	writeFile(t, tr, "/docs/big.bin", big)
	writeFile(t, tr, "/small.txt", []byte("inline"))
	other := make([]byte, 3<<20)
	_, _ = rand.Read(other)
	writeFile(t, tr, "/other.bin", other)
	syncAll(t, tr)

	refs := tr.BlobRefs()
	if len(refs) != 2 || refs[0].Path != "/docs/big.bin" || refs[1].Path != "/other.bin" {
		t.Fatalf("blob refs: %+v", refs)
	}
	if refs[0].Size != int64(len(big)) || refs[0].Ref.PlainSize != int64(len(big)) || refs[0].Boot {
		t.Fatalf("big.bin listed as %d bytes (ref %d)", refs[0].Size, refs[0].Ref.PlainSize)
	}
	if ok, err := e.blobs.Has(t.Context(), refs[0].Ref.Hash); !ok || err != nil {
		t.Fatalf("listed blob not in the store: %v", err)
	}
	if ms := tr.ImageMounts(); len(ms) != 0 {
		t.Fatalf("image mounts of a tree without images: %+v", ms)
	}

	// Another device reads the same from the chain.
	tr2 := e.open("", "b")
	if got := tr2.BlobRefs(); len(got) != 2 || got[0].Ref.Hash != refs[0].Ref.Hash || got[1].Ref.Hash != refs[1].Ref.Hash {
		t.Fatalf("second device lists %+v", got)
	}
	closeTree(t, tr2)

	// Bob's tree shows Alice's /docs, even writable: her blobs are not
	// his to renew.
	tr.mu.Lock()
	docsNode, _ := tr.resolve("/docs")
	keys, genesis := docsNode.keys, docsNode.genesis
	tr.mu.Unlock()
	bob := &env{t: t, backend: e.backend, wallet: e.wallet, blobs: e.blobs, key: e.key}
	var r, w [64]byte
	_, _ = rand.Read(r[:])
	_, _ = rand.Read(w[:])
	bob.root, _ = node.RootKeys(r, w)
	tx, _, err := e.wallet.Pay(context.Background(), []wallet.Output{{PkScript: p2pkh(bob.root.Addr), Value: 10_000}})
	if err != nil {
		t.Fatal(err)
	}
	bob.genesis = node.OutPoint{TxID: tx.TxHash(), Index: 0}
	b := bob.open("", "bob")
	if _, err := b.AddRoot(context.Background(), Root{Path: []string{"shared", "alice", "docs"}, Keys: keys, Kind: node.KindDir, Genesis: genesis}); err != nil {
		t.Fatal(err)
	}
	if len(readFile(t, b, "/shared/alice/docs/big.bin")) != len(big) {
		t.Fatal("bob does not read the shared large file")
	}
	if got := b.BlobRefs(); len(got) != 0 {
		t.Fatalf("bob lists another System's blobs: %+v", got)
	}
	closeTree(t, b)

	// Deleted: gone. Rewritten: the new blob, not the old one.
	docs, err := tr.Resolve("/docs")
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Remove(docs, "big.bin", false); err != nil {
		t.Fatal(err)
	}
	_, _ = rand.Read(other)
	writeFile(t, tr, "/other.bin", other)
	syncAll(t, tr)
	got := tr.BlobRefs()
	if len(got) != 1 || got[0].Path != "/other.bin" || got[0].Ref.Hash == refs[1].Ref.Hash {
		t.Fatalf("after deleting big.bin and rewriting other.bin: %+v", got)
	}

	// Small again: inline, no blob.
	writeFile(t, tr, "/other.bin", []byte("small now"))
	syncAll(t, tr)
	if got := tr.BlobRefs(); len(got) != 0 {
		t.Fatalf("after other.bin became small: %+v", got)
	}
}

// TestImageMountsListing: the image mounted at a folder is listed with
// its path and mount; its entries are not blobs of the tree, but a large
// file added inside the image folder (an overlay node) is.
func TestImageMountsListing(t *testing.T) {
	e := newImageEnv(t)
	ctx := context.Background()
	a := e.open("", "a")
	defer closeTree(t, a)
	mkdir(t, a, "/backups")
	photos := mkdir(t, a, "/backups/photos")
	ref := packFor(t, e, a, photos, localSource(t, photoDir(t)), false)
	if err := a.MountImage(ctx, photos, ImageMount{Ref: ref, Servers: []string{"http://images.test"}}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)
	writeFile(t, a, "/backups/photos/big.bin", big)
	syncAll(t, a)
	ms := a.ImageMounts()
	if len(ms) != 1 || ms[0].Path != "/backups/photos" || ms[0].Mount.Ref.Hash != ref.Hash || !ms[0].Keys.HasWrite {
		t.Fatalf("image mounts: %+v", ms)
	}
	if got := a.BlobRefs(); len(got) != 1 || got[0].Path != "/backups/photos/big.bin" {
		t.Fatalf("blob refs of a tree with an image: %+v", got)
	}
	if err := a.UnmountImage(photos); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	if ms := a.ImageMounts(); len(ms) != 0 {
		t.Fatalf("image mounts after unmounting: %+v", ms)
	}
}
