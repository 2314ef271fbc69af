package delta

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// Tuning. Matches are found through an index of old's aligned blocks, then
// extended byte by byte in both directions, so the block size only decides
// the shortest moved run Diff can find (about two blocks) and the index's
// size, never the granularity of an edit.
const (
	minBlock  = 16
	maxBlock  = 4096
	maxBlocks = 1 << 19 // beyond this many blocks, blocks grow instead
	// minMatch is the shortest match Diff considers at all; shorter ones
	// cannot pay for the COPY op that would encode them.
	minMatch = 8
	// hashBase is the rolling hash's multiplier (odd, so no information is
	// shifted out mod 2^64).
	hashBase = 0x100000001b3
	// hashMix spreads the rolling hash over the table's index bits.
	hashMix = 0x9e3779b97f4a7c15
)

// Diff returns a delta that turns old into new (see the package comment for
// the format). The delta is never longer than new plus a header and one op
// tag, and for the usual edits — bytes changed, inserted or deleted
// anywhere, appends, truncations, moved blocks — it is a few bytes per edit.
// Diff is deterministic. Time is linear in len(old)+len(new); memory is the
// delta plus an index of 8 to 16 bytes per block of old (blocks of 16 bytes
// up to 8 MiB of old, larger beyond, keeping the index under 8 MiB for
// bases up to 2 GiB).
func Diff(old, new []byte) []byte {
	return diff(old, new, blockSize(len(old)))
}

// blockSize picks the index's block size for a base of n bytes: small
// blocks find short moved runs, but the index must stay small.
func blockSize(n int) int {
	bs := minBlock
	for bs < maxBlock && n/bs > maxBlocks {
		bs *= 2
	}
	return bs
}

// diff is Diff with a chosen block size (≥ minBlock), so tests can cover
// large blocks without gigabyte inputs.
func diff(old, new []byte, bs int) []byte {
	e := encoder{buf: make([]byte, 0, maxHeaderLen+64)}
	e.buf = append(e.buf, Version)
	e.buf = binary.AppendUvarint(e.buf, uint64(len(old)))
	sum := checksum(old)
	e.buf = append(e.buf, sum[:]...)
	e.buf = binary.AppendUvarint(e.buf, uint64(len(new)))
	sum = checksum(new)
	e.buf = append(e.buf, sum[:]...)
	if len(new) == 0 {
		return e.buf
	}

	ix := newIndex(old, bs)
	// Splitting an INSERT to make room for a COPY costs at most one more
	// op tag; a match must save more than that plus its own encoding.
	e.tagMax = uvarintLen(uint64(len(new)) << 1)

	anchor := 0 // new[anchor:q] is pending, to be sent as an INSERT
	q := 0
	var h uint64 // rolling hash of new[hashAt:hashAt+ix.bs]
	hashAt := -1 // -1 until h is first computed
	for q+minMatch <= len(new) {
		// First try the line the previous COPY was on: after a replaced
		// run the old bytes continue where they left off. Trying it
		// before the index matters for repetitive data, where the
		// index holds only the first of many identical blocks.
		if o := e.cursor + (q - anchor); o <= len(old)-minMatch && load64(old, o) == load64(new, q) {
			n := minMatch + matchLen(old[o+minMatch:], new[q+minMatch:])
			if e.worth(o, n) {
				e.insert(new[anchor:q])
				e.copy(o, n)
				q += n
				anchor = q
				continue
			}
		}
		if ix != nil && q <= len(new)-ix.bs {
			// Rolling over a short jump instead of rehashing keeps
			// the cost per byte bounded when matches are shorter
			// than a block.
			if hashAt >= 0 && q-hashAt < ix.bs {
				for ; hashAt < q; hashAt++ {
					h = ix.roll(h, new[hashAt], new[hashAt+ix.bs])
				}
			} else {
				h = ix.hash(new[q : q+ix.bs])
				hashAt = q
			}
			if c := ix.table[(h*hashMix)>>ix.shift]; c != 0 {
				// Blocks are ≥ minBlock > minMatch long, so o+8 is in old.
				o := int(c-1) * ix.bs
				if load64(old, o) == load64(new, q) {
					fwd := minMatch + matchLen(old[o+minMatch:], new[q+minMatch:])
					back := 0
					for back < q-anchor && back < o && old[o-back-1] == new[q-back-1] {
						back++
					}
					if e.worth(o-back, fwd+back) {
						e.insert(new[anchor : q-back])
						e.copy(o-back, fwd+back)
						q += fwd
						anchor = q
						continue
					}
				}
			}
		}
		q++
	}
	e.insert(new[anchor:])
	return e.buf
}

// encoder appends ops to a delta.
type encoder struct {
	buf    []byte
	cursor int // end in old of the previous COPY
	tagMax int // longest op tag this delta can need
}

func (e *encoder) insert(b []byte) {
	if len(b) == 0 {
		return
	}
	e.buf = binary.AppendUvarint(e.buf, uint64(len(b))<<1)
	e.buf = append(e.buf, b...)
}

func (e *encoder) copy(o, n int) {
	e.buf = binary.AppendUvarint(e.buf, uint64(n)<<1|1)
	e.buf = binary.AppendVarint(e.buf, int64(o-e.cursor)) // zigzag, as documented
	e.cursor = o + n
}

// worth reports whether a COPY of old[o:o+n] is shorter than sending the n
// bytes inside an INSERT, counting the tag of the INSERT it may split. This
// is what bounds a delta of unrelated inputs by len(new) plus a header.
func (e *encoder) worth(o, n int) bool {
	d := int64(o - e.cursor)
	zz := uint64(d<<1) ^ uint64(d>>63)
	return n > uvarintLen(uint64(n)<<1|1)+uvarintLen(zz)+e.tagMax
}

// index maps the rolling hash of each aligned block of old to the first
// block with that hash. Keeping one candidate per slot bounds work per
// position; a lost candidate (collision or repeat) costs nothing when a
// neighbouring block is found instead, since matches extend backwards.
type index struct {
	bs    int
	shift uint     // 64 - log2(len(table))
	pow   uint64   // hashBase^(bs-1), to roll the oldest byte out
	table []uint32 // block number + 1; 0 is empty
}

// newIndex indexes old's blocks of bs bytes, or returns nil when old has
// no full block.
func newIndex(old []byte, bs int) *index {
	nblocks := len(old) / bs
	if nblocks == 0 {
		return nil
	}
	// Block numbers are stored in uint32; a variable keeps this
	// compiling where int is 32 bits.
	if limit := uint64(math.MaxUint32 - 1); uint64(nblocks) > limit {
		nblocks = int(limit)
	}
	logSize := bits.Len(uint(2*nblocks - 1)) // table at least twice the blocks
	ix := &index{
		bs:    bs,
		shift: uint(64 - logSize),
		pow:   1,
		table: make([]uint32, 1<<logSize),
	}
	for i := 1; i < bs; i++ {
		ix.pow *= hashBase
	}
	for k := 0; k < nblocks; k++ {
		slot := &ix.table[(ix.hash(old[k*bs:(k+1)*bs])*hashMix)>>ix.shift]
		if *slot == 0 {
			*slot = uint32(k + 1)
		}
	}
	return ix
}

// hash is a polynomial hash mod 2^64 of one block.
func (ix *index) hash(b []byte) uint64 {
	var h uint64
	for _, c := range b {
		h = h*hashBase + uint64(c)
	}
	return h
}

// roll slides the hash window by one byte: out leaves, in enters.
func (ix *index) roll(h uint64, out, in byte) uint64 {
	return (h-uint64(out)*ix.pow)*hashBase + uint64(in)
}

// matchLen returns the length of the common prefix of a and b.
func matchLen(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)>>3
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

func load64(b []byte, i int) uint64 {
	return binary.LittleEndian.Uint64(b[i:])
}

func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}
