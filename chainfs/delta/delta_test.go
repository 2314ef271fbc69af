package delta

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

const (
	kb = 1 << 10
	mb = 1 << 20
)

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// roundTrip diffs, applies, and fails the test unless the result is new.
func roundTrip(t testing.TB, old, new []byte) []byte {
	t.Helper()
	d := Diff(old, new)
	got, err := Apply(old, d, int64(len(new)))
	if err != nil {
		t.Fatalf("Apply(Diff): %v (old %d bytes, new %d bytes, delta %d bytes)", err, len(old), len(new), len(d))
	}
	if !bytes.Equal(got, new) {
		t.Fatalf("Apply(Diff) differs from new (old %d bytes, new %d bytes)", len(old), len(new))
	}
	if n, err := OutputSize(d); err != nil || n != int64(len(new)) {
		t.Fatalf("OutputSize = %d, %v; want %d", n, err, len(new))
	}
	return d
}

func TestDocExample(t *testing.T) {
	old := []byte("integrity: every change is a transaction")
	nw := []byte("integrity: every single change is a transaction")
	want := "01" + "28" + "70d859e3a33085ca" + "2f" + "abb541ee35e0cd58" +
		"2300" + "0c73696e676c65" + "3101"
	d := roundTrip(t, old, nw)
	if got := hex.EncodeToString(d); got != want {
		t.Fatalf("delta = %s\nwant    %s", got, want)
	}
}

func TestEdgeCases(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	blob := randBytes(r, 5000)
	cases := []struct {
		name     string
		old, new []byte
	}{
		{"both empty", nil, nil},
		{"empty old", nil, []byte("abc")},
		{"empty new", []byte("abc"), nil},
		{"one byte", []byte("a"), []byte("b")},
		{"identical tiny", []byte("abcdefgh"), []byte("abcdefgh")},
		{"identical", blob, blob},
		{"new shorter than a word", blob, blob[:7]},
		{"old shorter than a block", blob[:15], blob[:30]},
		{"prefix", blob, blob[:2500]},
		{"suffix", blob, blob[2500:]},
		{"doubled", blob, cat(blob, blob)},
		{"halved", cat(blob, blob), blob},
		{"reversed halves", blob, cat(blob[2500:], blob[:2500])},
		{"empty new from big", blob, []byte{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := roundTrip(t, c.old, c.new)
			if len(d) > len(c.new)+maxHeaderLen+5 {
				t.Errorf("delta %d bytes for a %d-byte output", len(d), len(c.new))
			}
		})
	}
}

// TestSizes holds Diff to the compactness targets: chain bytes per byte
// changed must stay tiny.
func TestSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	one := randBytes(r, mb)
	ten := randBytes(r, 10*mb)
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0xff
		return c
	}
	extra := randBytes(r, kb)
	unrelated := randBytes(r, mb)
	cases := []struct {
		name     string
		old, new []byte
		max      int
	}{
		{"1 byte changed mid 1MB", one, flip(one, mb/2), 100},
		{"1 byte changed mid 10MB", ten, flip(ten, 5*mb+3), 200},
		{"1 byte changed at start of 1MB", one, flip(one, 0), 100},
		{"1 byte changed at end of 1MB", one, flip(one, mb-1), 100},
		{"10 bytes inserted at start of 1MB", one, cat(extra[:10], one), 200},
		{"10 bytes inserted mid 10MB", ten, cat(ten[:5*mb+1], extra[:10], ten[5*mb+1:]), 200},
		{"10 bytes deleted mid 1MB", one, cat(one[:mb/2+5], one[mb/2+15:]), 100},
		{"1KB appended to 1MB", one, cat(one, extra), kb + 64},
		{"truncated to half", one, one[:mb/2], 64},
		{"64KB block moved", one, cat(one[:100], one[200*kb:264*kb], one[100:200*kb], one[264*kb:]), 100},
		{"unrelated", one, unrelated, mb + maxHeaderLen + 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := roundTrip(t, c.old, c.new)
			t.Logf("delta %d bytes", len(d))
			if len(d) > c.max {
				t.Errorf("delta %d bytes, want ≤ %d", len(d), c.max)
			}
		})
	}
}

// TestRepetitive guards against blowups on data where every block looks
// alike: time and memory must stay linear, deltas small.
func TestRepetitive(t *testing.T) {
	zeros := make([]byte, 10*mb)
	edited := bytes.Clone(zeros)
	for _, at := range []int{0, 12345, 5 * mb, 10*mb - 1} {
		edited[at] = 1
	}
	inserted := cat(zeros[:3*mb], []byte("inserted"), zeros[3*mb:])
	pattern := bytes.Repeat([]byte("abcdefghijklmnopqrstuvw"), 10*mb/23)
	patternEdited := cat(pattern[:mb], []byte("X"), pattern[mb+1:7*mb], pattern[7*mb+5:])
	cases := []struct {
		name     string
		old, new []byte
		max      int
	}{
		{"zeros, 4 bytes changed", zeros, edited, 200},
		{"zeros, insert", zeros, inserted, 100},
		{"zeros to zeros twice as long", zeros[:5*mb], zeros, 100},
		{"period 23, edits", pattern, patternEdited, 200},
		{"zeros vs pattern", zeros, pattern, len(pattern) + maxHeaderLen + 5},
		// Runs inside new are not copied from new itself: INSERT.
		{"pattern vs zeros", pattern, zeros, len(zeros) + maxHeaderLen + 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			d := Diff(c.old, c.new)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("delta %d bytes, %v, %d bytes allocated", len(d), elapsed, alloc)
			// Generous: the machine is shared; a quadratic blowup
			// would take minutes, not seconds.
			if elapsed > 3*time.Second {
				t.Errorf("Diff took %v", elapsed)
			}
			if limit := uint64(len(d)) + uint64(len(c.old)) + 1*mb; alloc > limit {
				t.Errorf("Diff allocated %d bytes, want ≤ %d", alloc, limit)
			}
			if len(d) > c.max {
				t.Errorf("delta %d bytes, want ≤ %d", len(d), c.max)
			}
			got, err := Apply(c.old, d, int64(len(c.new)))
			if err != nil || !bytes.Equal(got, c.new) {
				t.Fatalf("round trip failed: %v", err)
			}
		})
	}
}

// edit applies one random edit of the kinds people make.
func edit(r *rand.Rand, b []byte, alphabet []byte) []byte {
	pos := func() int { return r.IntN(len(b) + 1) }
	size := func() int {
		if r.IntN(4) == 0 {
			return r.IntN(5000)
		}
		return 1 + r.IntN(20)
	}
	fill := func(n int) []byte {
		s := make([]byte, n)
		for i := range s {
			s[i] = alphabet[r.IntN(len(alphabet))]
		}
		return s
	}
	switch r.IntN(6) {
	case 0: // insert
		p := pos()
		return cat(b[:p], fill(size()), b[p:])
	case 1: // delete
		p := pos()
		e := min(len(b), p+size())
		return cat(b[:p], b[e:])
	case 2: // replace
		p := pos()
		e := min(len(b), p+size())
		return cat(b[:p], fill(e-p), b[e:])
	case 3: // move a block elsewhere
		p := pos()
		e := min(len(b), p+size())
		rest := cat(b[:p], b[e:])
		q := r.IntN(len(rest) + 1)
		return cat(rest[:q], b[p:e], rest[q:])
	case 4: // append
		return cat(b, fill(size()))
	default: // truncate
		return b[:len(b)-min(len(b), size())]
	}
}

func TestRandomEdits(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	sources := []struct {
		name     string
		alphabet []byte
		gen      func(n int) []byte
	}{
		{"random", all, func(n int) []byte { return randBytes(r, n) }},
		{"zeros", []byte{0, 1}, func(n int) []byte { return make([]byte, n) }},
		{"two letters", []byte("ab"), func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = "ab"[r.IntN(2)]
			}
			return b
		}},
		{"short period", []byte("xyz"), func(n int) []byte {
			return bytes.Repeat([]byte("xyz"), n/3)
		}},
		{"text", []byte("the quick brown fox\n"), func(n int) []byte {
			words := [][]byte{[]byte("the "), []byte("quick "), []byte("brown "), []byte("fox\n"), []byte("        ")}
			var b []byte
			for len(b) < n {
				b = append(b, words[r.IntN(len(words))]...)
			}
			return b
		}},
	}
	for _, s := range sources {
		t.Run(s.name, func(t *testing.T) {
			for i := 0; i < 150; i++ {
				size := r.IntN(200)
				if i%3 == 0 {
					size = r.IntN(200 * kb)
				}
				old := s.gen(size)
				nw := old
				edits := 1 + r.IntN(8)
				for range edits {
					nw = edit(r, nw, s.alphabet)
				}
				d := roundTrip(t, old, nw)
				if len(d) > len(nw)+maxHeaderLen+5 {
					t.Fatalf("delta %d bytes for a %d-byte output", len(d), len(nw))
				}
			}
		})
	}
}

// TestLargeBlocks covers block sizes only huge bases get, where matches
// are often shorter than a block.
func TestLargeBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, bs := range []int{minBlock, 64, 1024, maxBlock} {
		for i := 0; i < 40; i++ {
			old := randBytes(r, r.IntN(64*kb))
			if i%2 == 1 {
				old = bytes.Repeat(old[:min(len(old), 1+r.IntN(40))], 1+r.IntN(2000))
			}
			nw := old
			for range 1 + r.IntN(10) {
				nw = edit(r, nw, []byte("ab"))
			}
			d := diff(old, nw, bs)
			got, err := Apply(old, d, int64(len(nw)))
			if err != nil || !bytes.Equal(got, nw) {
				t.Fatalf("bs=%d: round trip failed: %v", bs, err)
			}
		}
	}
}

// TestDenseEdits: one byte in every 16 changed, so every match is shorter
// than a block; time must stay linear.
func TestDenseEdits(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	old := randBytes(r, 10*mb)
	nw := bytes.Clone(old)
	for i := 0; i < len(nw); i += 16 {
		nw[i] ^= 0x55
	}
	start := time.Now()
	d := roundTrip(t, old, nw)
	t.Logf("delta %d bytes (%.2f per edit), %v", len(d), float64(len(d))/float64(len(nw)/16), time.Since(start))
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if len(d) > len(nw)/16*5 {
		t.Errorf("delta %d bytes for %d one-byte edits", len(d), len(nw)/16)
	}
}

// TestApplyRejects checks that each kind of bad delta gets its error.
func TestApplyRejects(t *testing.T) {
	old := []byte("the quick brown fox jumps over the lazy dog")
	nw := []byte("the quick red fox jumps over the lazy dog!")
	good := Diff(old, nw)
	h, err := parseHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	// build assembles a delta with a valid header for old and nw around
	// hand-written ops.
	build := func(outLen uint64, ops ...byte) []byte {
		d := []byte{Version}
		d = binary.AppendUvarint(d, uint64(len(old)))
		d = append(d, h.baseSum[:]...)
		d = binary.AppendUvarint(d, outLen)
		return append(append(d, h.outSum[:]...), ops...)
	}
	mutate := func(f func(d []byte)) []byte {
		d := bytes.Clone(good)
		f(d)
		return d
	}
	cases := []struct {
		name  string
		old   []byte
		delta []byte
		max   int64
		want  error
	}{
		{"empty delta", old, nil, 100, ErrCorrupt},
		{"version 0", old, mutate(func(d []byte) { d[0] = 0 }), 100, ErrVersion},
		{"version 2", old, mutate(func(d []byte) { d[0] = 2 }), 100, ErrVersion},
		{"truncated header", old, good[:10], 100, ErrCorrupt},
		{"wrong base length", old[1:], good, 100, ErrWrongBase},
		{"wrong base content", bytes.ToUpper(old), good, 100, ErrWrongBase},
		{"output over limit", old, good, int64(len(nw) - 1), ErrTooLarge},
		{"negative limit", old, good, -1, ErrTooLarge},
		{"huge declared output", old, build(1<<63 - 1), 1 << 62, ErrTooLarge},
		{"output checksum", old, mutate(func(d []byte) { d[h.opsAt-1] ^= 1 }), 100, ErrCorrupt},
		{"truncated ops", old, good[:len(good)-1], 100, ErrCorrupt},
		{"trailing byte", old, append(bytes.Clone(good), 0), 100, ErrCorrupt},
		{"zero-length insert", old, build(0, 0x00), 100, ErrCorrupt},
		{"zero-length copy", old, build(0, 0x01, 0x00), 100, ErrCorrupt},
		{"insert past output", old, build(1, 0x04, 'a', 'b'), 100, ErrCorrupt},
		{"insert past delta", old, build(2, 0x04, 'a'), 100, ErrCorrupt},
		{"copy before base", old, build(2, 0x05, 0x01), 100, ErrCorrupt},
		{"copy past base", old, build(2, 0x05, byte(2*(len(old)-1))), 100, ErrCorrupt},
		{"copy far past base", old, build(2, 0x05, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), 100, ErrCorrupt},
		{"copy offset missing", old, build(2, 0x05), 100, ErrCorrupt},
		{"short output", old, build(3, 0x04, 'a', 'b'), 100, ErrCorrupt},
		{"non-minimal varint", old, build(1, 0x82, 0x00, 'a'), 100, ErrCorrupt},
		{"11-byte varint", old, build(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00), 100, ErrCorrupt},
		{"varint ≥ 2^63", old, build(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), 100, ErrCorrupt},
		{"valid ops, wrong output", old, build(1, 0x02, 'a'), 100, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Apply(c.old, c.delta, c.max)
			if !errors.Is(err, c.want) {
				t.Fatalf("Apply = %q, %v; want %v", out, err, c.want)
			}
			if out != nil {
				t.Errorf("Apply returned output with error %v", err)
			}
			t.Logf("%v", err)
		})
	}
	if got, err := Apply(old, good, int64(len(nw))); err != nil || !bytes.Equal(got, nw) {
		t.Fatalf("good delta: %v", err)
	}
}

func TestOutputSize(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 1 << 20} {
		d := Diff([]byte("base"), make([]byte, n))
		got, err := OutputSize(d)
		if err != nil || got != int64(n) {
			t.Errorf("OutputSize = %d, %v; want %d", got, err, n)
		}
	}
	if _, err := OutputSize([]byte{Version, 0}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated header: %v", err)
	}
	if _, err := OutputSize([]byte{9}); !errors.Is(err, ErrVersion) {
		t.Errorf("version 9: %v", err)
	}
}

// TestApplyMaxSizeIsExact: a limit equal to the output is enough.
func TestApplyMaxSizeIsExact(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		nw := bytes.Repeat([]byte{7}, n)
		d := Diff([]byte("x"), nw)
		if _, err := Apply([]byte("x"), d, int64(n)); err != nil {
			t.Errorf("n=%d: %v", n, err)
		}
		if n > 0 {
			if _, err := Apply([]byte("x"), d, int64(n-1)); !errors.Is(err, ErrTooLarge) {
				t.Errorf("n=%d, limit n-1: %v", n, err)
			}
		}
	}
}

func ExampleDiff() {
	old := []byte("integrity: every change is a transaction")
	nw := []byte("integrity: every single change is a transaction")
	d := Diff(old, nw)
	out, err := Apply(old, d, 1<<20)
	fmt.Println(string(out), err)
	// Output: integrity: every single change is a transaction <nil>
}
