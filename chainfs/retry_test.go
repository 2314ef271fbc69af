package chainfs

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
)

// flakyImages is image servers that can be unreachable.
type flakyImages struct {
	inner ImageStores
	down  atomic.Bool
}

func (f *flakyImages) Store(ctx context.Context, servers []string) (blob.Store, error) {
	if f.down.Load() {
		return nil, errors.New("image servers unreachable")
	}
	return f.inner.Store(ctx, servers)
}

// TestImageFolderFillsIn: a device that reads the tree while the image
// servers are down shows the image folder empty, and fills it in by
// itself once they answer again — no restart, no new commit.
func TestImageFolderFillsIn(t *testing.T) {
	e := newImageEnv(t)
	ctx := context.Background()
	a := e.open("", "writer")
	photos := mkdir(t, a, "/photos")
	ref := packFor(t, e, a, photos, localSource(t, photoDir(t)), false)
	if err := a.MountImage(ctx, photos, ImageMount{Ref: ref, Servers: []string{"http://images.test"}}); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	want := names(t, a, "/photos")
	closeTree(t, a)

	fl := &flakyImages{inner: e.images}
	fl.down.Store(true)
	b, err := Open(ctx, Config{
		Backend: e.backend, Wallet: e.wallet, RootKeys: e.root, RootGenesis: e.genesis,
		CacheDir: t.TempDir(), CacheKey: e.key, Blobs: e.blobs, Device: "reader", CommitDelay: 20 * time.Millisecond,
		Images: fl, RetryInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeTree(t, b)
	if got := names(t, b, "/photos"); len(got) != 0 {
		t.Fatalf("servers down, yet the folder lists %v", got)
	}
	fl.down.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(names(t, b, "/photos"), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the folder did not fill in: %v, want %v", names(t, b, "/photos"), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := readFile(t, b, "/photos/photo07.jpg"); !bytes.Equal(got, photo(7)) {
		t.Fatalf("photo07 after filling in: %d bytes", len(got))
	}
}
