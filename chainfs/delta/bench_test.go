package delta

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchInput is a random file and a copy with a few small edits: one byte
// changed, ten inserted, ten deleted, a kilobyte appended.
func benchInput(size int) (old, new []byte) {
	r := rand.New(rand.NewPCG(7, 8))
	old = randBytes(r, size)
	new = bytes.Clone(old)
	new[size/4] ^= 1
	new = cat(new[:size/2], []byte("0123456789"), new[size/2:])
	new = cat(new[:3*size/4], new[3*size/4+10:])
	return old, cat(new, randBytes(r, kb))
}

func BenchmarkDiff(b *testing.B) {
	for _, size := range []int{mb, 10 * mb} {
		old, nw := benchInput(size)
		b.Run(fmt.Sprintf("%dMB", size/mb), func(b *testing.B) {
			b.SetBytes(int64(len(nw)))
			var d []byte
			for b.Loop() {
				d = Diff(old, nw)
			}
			b.ReportMetric(float64(len(d)), "delta-bytes")
		})
	}
}

func BenchmarkApply(b *testing.B) {
	for _, size := range []int{mb, 10 * mb} {
		old, nw := benchInput(size)
		d := Diff(old, nw)
		b.Run(fmt.Sprintf("%dMB", size/mb), func(b *testing.B) {
			b.SetBytes(int64(len(nw)))
			for b.Loop() {
				if _, err := Apply(old, d, int64(len(nw))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDiffUnrelated is the worst case for speed: nothing matches, so
// every byte of new is hashed and looked up.
func BenchmarkDiffUnrelated(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	old, nw := randBytes(r, 10*mb), randBytes(r, 10*mb)
	b.SetBytes(int64(len(nw)))
	for b.Loop() {
		Diff(old, nw)
	}
}
