package imageserver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/node"
)

// Benchmarks of the image path end to end on loopback, for many
// photo-sized files (2 MiB each; INTEGRITY_IMAGE_BENCH_MB sets the total,
// default 32 — `make bench` runs 500). MB/s is of file content.
//
//	go test -run '^$' -bench . -benchtime 3x ./chainfs/imageserver/

func benchTotal() int {
	if v, err := strconv.Atoi(os.Getenv("INTEGRITY_IMAGE_BENCH_MB")); err == nil && v > 0 {
		return v
	}
	return 32
}

const benchFile = 2 << 20

type benchEnv struct {
	src   string
	total int64
	mount node.Keys
	c     *Client
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	n := benchTotal() << 20 / benchFile
	src := b.TempDir()
	for i := range n {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("IMG_%04d.jpg", i)), randBytes(benchFile, uint64(i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	var r, w [64]byte
	for i := range r {
		r[i], w[i] = byte(i+1), byte(2*i+3)
	}
	mount, err := node.RootKeys(r, w)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{DataDir: b.TempDir(), Policy: Policy{MaxSize: 8 << 30}, IPRate: RateLimit{PerSecond: 1e9, Burst: 1e9}, Logger: quietLogger(), SweepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	b.Cleanup(func() { hs.Close(); srv.Close() })
	c, err := NewClient(hs.URL, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{src: src, total: int64(n) * benchFile, mount: mount, c: c}
}

// packUpload packs the photos into a local file (the CLI's "image
// create") and uploads it.
func (e *benchEnv) packUpload(b *testing.B, public bool) image.Ref {
	ctx := context.Background()
	src, err := image.LocalDir(e.src)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	f, err := os.CreateTemp(b.TempDir(), "image-*")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ref, err := image.Pack(ctx, f, src, image.PackOptions{Public: public, Keys: &e.mount})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := e.c.Host(ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Public: public, Body: f}); err != nil {
		b.Fatal(err)
	}
	return ref
}

func BenchmarkPackUpload(b *testing.B) {
	for _, public := range []bool{false, true} {
		b.Run(visibility(public), func(b *testing.B) {
			e := newBenchEnv(b)
			b.SetBytes(e.total)
			b.ResetTimer()
			for range b.N {
				e.packUpload(b, public)
			}
		})
	}
}

// BenchmarkDownloadUnpack: "download" fetches the whole image into a
// local cache (hash verified) and unpacks it from there; "ranged" unpacks
// straight from the server, fetching each file's chunks by range.
func BenchmarkDownloadUnpack(b *testing.B) {
	for _, mode := range []string{"download", "ranged"} {
		b.Run(mode, func(b *testing.B) {
			e := newBenchEnv(b)
			ref := e.packUpload(b, false)
			ctx := context.Background()
			b.SetBytes(e.total)
			b.ResetTimer()
			for range b.N {
				var s blob.Store = NewStore(e.c, StoreOptions{})
				if mode == "download" {
					cache, err := blob.NewDir(b.TempDir())
					if err != nil {
						b.Fatal(err)
					}
					if err := blob.Copy(ctx, cache, s, ref.Hash, ref.Size); err != nil {
						b.Fatal(err)
					}
					s = cache
				}
				im, err := image.Open(ctx, s, ref, image.Options{Keys: &e.mount})
				if err != nil {
					b.Fatal(err)
				}
				if err := image.Extract(ctx, im, filepath.Join(b.TempDir(), "out"), image.ExtractOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
