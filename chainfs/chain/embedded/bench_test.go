package embedded

import (
	"testing"

	"github.com/integrity-sys/integrity/chainfs/chain/chaintest"
)

func BenchmarkCommits(b *testing.B) {
	c := open(b, b.TempDir())
	defer c.Close()
	chaintest.BenchCommits(b, c)
}

func BenchmarkBlockConnect(b *testing.B) {
	c := open(b, b.TempDir())
	defer c.Close()
	chaintest.BenchBlockConnect(b, c)
}
