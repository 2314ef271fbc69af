package delta

import (
	"bytes"
	"testing"
)

// FuzzApply feeds arbitrary bases and deltas to Apply: it must never panic,
// never return more than maxSize bytes, and never return output with an
// error. The fuzzer cannot forge checksums, so each delta whose ops are
// valid is also retried with its checksums fixed, to reach the code that
// writes the output.
func FuzzApply(f *testing.F) {
	old := []byte("the quick brown fox jumps over the lazy dog")
	f.Add(old, Diff(old, []byte("the quick red fox jumps over the lazy dog!")), int64(100))
	f.Add(old, Diff(old, nil), int64(0))
	f.Add([]byte{}, Diff(nil, old), int64(10))
	f.Add(old, []byte{Version}, int64(1))
	stale := Diff(old, []byte("the quick brown fox jumps over the lazy cat"))
	stale[2] ^= 1 // base checksum: valid ops, reached only with checksums fixed
	f.Add(old, stale, int64(100))
	f.Fuzz(func(t *testing.T, old, delta []byte, maxSize int64) {
		maxSize %= 1 << 20 // the fuzzer must not make us allocate gigabytes
		check := func(delta []byte) ([]byte, error) {
			out, err := Apply(old, delta, maxSize)
			if err != nil {
				if out != nil {
					t.Fatalf("output with error %v", err)
				}
				return nil, err
			}
			if int64(len(out)) > max(maxSize, 0) {
				t.Fatalf("output of %d bytes over limit %d", len(out), maxSize)
			}
			if n, err := OutputSize(delta); err != nil || n != int64(len(out)) {
				t.Fatalf("OutputSize = %d, %v; Apply produced %d bytes", n, err, len(out))
			}
			return out, nil
		}
		if _, err := check(delta); err == nil {
			return
		}
		h, err := parseHeader(delta)
		if err != nil || h.baseLen != int64(len(old)) || h.outLen > maxSize || runOps(nil, old, delta, h) != nil {
			return
		}
		want := make([]byte, h.outLen)
		if err := runOps(want, old, delta, h); err != nil {
			t.Fatalf("ops valid in a dry run fail when writing: %v", err)
		}
		fixed := bytes.Clone(delta)
		sum := checksum(old)
		copy(fixed[h.opsAt-checksumLen-uvarintLen(uint64(h.outLen))-checksumLen:], sum[:])
		sum = checksum(want)
		copy(fixed[h.opsAt-checksumLen:], sum[:])
		got, err := check(fixed)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("delta with fixed checksums: %v", err)
		}
	})
}

// FuzzRoundTrip checks Apply(old, Diff(old, new)) == new. The fuzzer's new
// is also spliced into old so that shared content (the case Diff exists
// for) is common.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("hello world"), []byte("hello, world"), uint16(0))
	f.Add(bytes.Repeat([]byte{0}, 100), []byte{1}, uint16(50))
	f.Add(bytes.Repeat([]byte("abcdefghijklmnopq"), 20), []byte("XYZ"), uint16(170))
	f.Fuzz(func(t *testing.T, old, ins []byte, at uint16) {
		p := int(at) % (len(old) + 1)
		for _, nw := range [][]byte{ins, cat(old[:p], ins, old[p:]), cat(ins, old[p:]), cat(old[:p], ins)} {
			d := Diff(old, nw)
			got, err := Apply(old, d, int64(len(nw)))
			if err != nil {
				t.Fatalf("Apply(Diff): %v", err)
			}
			if !bytes.Equal(got, nw) {
				t.Fatalf("round trip differs")
			}
			if len(d) > len(nw)+maxHeaderLen+5 {
				t.Fatalf("delta %d bytes for a %d-byte output", len(d), len(nw))
			}
		}
	})
}
