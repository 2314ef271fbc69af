package btcdrpc

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/chain/chaintest"
)

// BenchmarkCommits: 1 KB commits through a real btcd over RPC, mined.
func BenchmarkCommits(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "btcd")
	n, err := startNodeWith(b, nodeOpts{dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer stopNode(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := Dial(ctx, n.url, nil)
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chaintest.BenchCommits(b, c)
}
