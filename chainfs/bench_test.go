package chainfs

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"

	"github.com/integrity-sys/integrity/chainfs/node"
)

// chainBytes sums the serialized size of every transaction that spends
// from (commits of) a node.
func chainBytes(b *testing.B, e *env, keys node.Keys) int64 {
	addr, _ := address.NewAddressPubKeyHash(keys.Addr[:], e.backend.Params())
	txs, err := e.backend.AddressTxs(context.Background(), addr)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for i := range txs {
		if txs[i].SpendsFrom(p2pkh(keys.Addr)) {
			n += int64(txs[i].MsgTx.SerializeSize())
		}
	}
	return n
}

func dirBytes(b *testing.B, dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// BenchmarkStorage reports bytes stored (chain + blobs) per byte of new
// content, and chain bytes of a 1-byte edit.
func BenchmarkStorage(b *testing.B) {
	for _, size := range []int{1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("file-%dMiB", size>>20), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				e := newEnv(b)
				tr := e.openDelay("", "a", 20*time.Millisecond)
				content := make([]byte, size)
				_, _ = rand.Read(content)
				blobsBefore := dirBytes(b, e.blobDir)
				ino := writeFile(b, tr, "/f.bin", content)
				ctx := context.Background()
				if err := tr.Sync(ctx, ino); err != nil {
					b.Fatal(err)
				}
				tr.mu.Lock()
				keys := tr.byIno[ino].keys
				tr.mu.Unlock()
				stored := chainBytes(b, e, keys) + dirBytes(b, e.blobDir) - blobsBefore
				before := chainBytes(b, e, keys)
				if _, err := tr.Write(ino, int64(size/2), []byte{^content[size/2]}); err != nil {
					b.Fatal(err)
				}
				if err := tr.Sync(ctx, ino); err != nil {
					b.Fatal(err)
				}
				edit := chainBytes(b, e, keys) - before
				b.ReportMetric(float64(stored)/float64(size), "stored/byte")
				b.ReportMetric(float64(edit), "chain-bytes/1-byte-edit")
				_ = tr.Close(ctx)
			}
		})
	}
	b.Run("tree-of-1KiB-files", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			e := newEnv(b)
			tr := e.openDelay("", "a", 20*time.Millisecond)
			ctx := context.Background()
			dir, err := tr.Create(RootIno, "d", node.KindDir, 0o755, "")
			if err != nil {
				b.Fatal(err)
			}
			const n = 200
			var inos []uint64
			for k := 0; k < n; k++ {
				a, err := tr.Create(dir.Ino, fmt.Sprintf("f%03d", k), node.KindFile, 0o644, "")
				if err != nil {
					b.Fatal(err)
				}
				c := make([]byte, 1024)
				_, _ = rand.Read(c)
				if _, err := tr.Write(a.Ino, 0, c); err != nil {
					b.Fatal(err)
				}
				inos = append(inos, a.Ino)
			}
			if err := tr.SyncAll(ctx); err != nil {
				b.Fatal(err)
			}
			var total int64
			tr.mu.Lock()
			all := []node.Keys{tr.byIno[dir.Ino].keys}
			for _, ino := range inos {
				all = append(all, tr.byIno[ino].keys)
			}
			tr.mu.Unlock()
			for _, k := range all {
				total += chainBytes(b, e, k)
			}
			b.ReportMetric(float64(total)/float64(n*1024), "stored/byte")
			_ = tr.Close(ctx)
		}
	})
}

// BenchmarkRebuild reports the time to rebuild a tree of N nodes on a new
// device from an empty cache.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("nodes-%d", n), func(b *testing.B) {
			e := newEnv(b)
			tr := e.openDelay("", "a", time.Hour)
			ctx := context.Background()
			perDir := 100
			for d := 0; d < n/perDir; d++ {
				dir, err := tr.Create(RootIno, fmt.Sprintf("dir%03d", d), node.KindDir, 0o755, "")
				if err != nil {
					b.Fatal(err)
				}
				for f := 0; f < perDir-1; f++ {
					a, err := tr.Create(dir.Ino, fmt.Sprintf("file%03d", f), node.KindFile, 0o644, "")
					if err != nil {
						b.Fatal(err)
					}
					if _, err := tr.Write(a.Ino, 0, []byte(fmt.Sprintf("content of %d/%d", d, f))); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := tr.SyncAll(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := e.backend.Mine(ctx, 1, e.wallet.Address()); err != nil {
				b.Fatal(err)
			}
			_ = tr.Close(ctx)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				tr2 := e.openDelay("", "b", time.Hour)
				el := time.Since(t0)
				st := tr2.Status()
				if st.Nodes < n {
					b.Fatalf("rebuilt %d nodes, want %d", st.Nodes, n)
				}
				b.ReportMetric(el.Seconds(), "s/rebuild")
				_ = tr2.Close(ctx)
			}
		})
	}
}

// BenchmarkPutLatency: from a write to its commit accepted by the chain
// (what `integrity put` waits for).
func BenchmarkPutLatency(b *testing.B) {
	e := newEnv(b)
	tr := e.openDelay("", "a", time.Hour)
	ctx := context.Background()
	a, err := tr.Create(RootIno, "f", node.KindFile, 0o644, "")
	if err != nil {
		b.Fatal(err)
	}
	if err := tr.Sync(ctx, a.Ino); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tr.Write(a.Ino, 0, []byte(fmt.Sprintf("version %d", i))); err != nil {
			b.Fatal(err)
		}
		if err := tr.Sync(ctx, a.Ino); err != nil {
			b.Fatal(err)
		}
	}
	_ = tr.Close(ctx)
}
