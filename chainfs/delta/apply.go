package delta

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
)

// Version is the format version Diff writes and the only one Apply reads.
const Version = 1

// checksumLen is how many leading bytes of SHA-256 the header keeps: enough
// to make a wrong base or a buggy writer fail loudly, short enough to be
// negligible on chain.
const checksumLen = 8

// maxHeaderLen bounds the header: version, two 10-byte varints, two checksums.
const maxHeaderLen = 1 + 10 + checksumLen + 10 + checksumLen

// Errors Apply and OutputSize wrap, so callers can branch with errors.Is.
var (
	// ErrCorrupt: the delta is malformed, or applying it did not produce
	// the output it declares.
	ErrCorrupt = errors.New("delta: corrupt delta")
	// ErrVersion: the delta has a format version this code does not read.
	ErrVersion = errors.New("delta: unsupported delta version")
	// ErrWrongBase: the delta was made against another old version (its
	// length or checksum differs).
	ErrWrongBase = errors.New("delta: delta does not apply to this base")
	// ErrTooLarge: the declared output is larger than the caller allows.
	ErrTooLarge = errors.New("delta: output too large")
)

// header is the fixed part of a delta.
type header struct {
	baseLen int64
	baseSum [checksumLen]byte
	outLen  int64
	outSum  [checksumLen]byte
	opsAt   int // offset of the first op
}

// checksum is the short hash stored in headers.
func checksum(b []byte) [checksumLen]byte {
	sum := sha256.Sum256(b)
	return [checksumLen]byte(sum[:checksumLen])
}

// OutputSize returns the output length a delta declares, without applying
// it, so a caller can budget before calling Apply. Apply still checks that
// the ops produce exactly this many bytes.
func OutputSize(delta []byte) (int64, error) {
	h, err := parseHeader(delta)
	if err != nil {
		return 0, err
	}
	return h.outLen, nil
}

// Apply applies delta to old and returns the new version. It rejects a delta
// whose declared output exceeds maxSize bytes (a negative maxSize allows
// only empty outputs) before allocating anything, checks the whole delta's
// structure and the base checksum before allocating the output, and never
// allocates more than the declared output length.
func Apply(old, delta []byte, maxSize int64) ([]byte, error) {
	h, err := parseHeader(delta)
	if err != nil {
		return nil, err
	}
	if h.outLen > maxSize && h.outLen > 0 {
		return nil, fmt.Errorf("%w: delta declares %d bytes, limit is %d", ErrTooLarge, h.outLen, maxSize)
	}
	if h.baseLen != int64(len(old)) {
		return nil, fmt.Errorf("%w: delta is for a %d-byte base, got %d bytes", ErrWrongBase, h.baseLen, len(old))
	}
	if h.outLen > int64(math.MaxInt) {
		return nil, fmt.Errorf("%w: output of %d bytes does not fit in memory on this platform", ErrTooLarge, h.outLen)
	}
	// A dry run first: a malformed delta must not cost an allocation of
	// its declared size, nor a hash of the base.
	if err := runOps(nil, old, delta, h); err != nil {
		return nil, err
	}
	if checksum(old) != h.baseSum {
		return nil, fmt.Errorf("%w: base checksum mismatch (same length, different content)", ErrWrongBase)
	}
	out := make([]byte, h.outLen)
	if err := runOps(out, old, delta, h); err != nil {
		return nil, err // unreachable: the dry run accepted the same ops
	}
	if checksum(out) != h.outSum {
		return nil, fmt.Errorf("%w: output checksum mismatch", ErrCorrupt)
	}
	return out, nil
}

// parseHeader reads and checks the header.
func parseHeader(delta []byte) (header, error) {
	var h header
	if len(delta) == 0 {
		return h, fmt.Errorf("%w: empty delta", ErrCorrupt)
	}
	if delta[0] != Version {
		return h, fmt.Errorf("%w: version %d (this code reads version %d)", ErrVersion, delta[0], Version)
	}
	r := reader{buf: delta, pos: 1}
	var err error
	if h.baseLen, err = r.uvarint("base length"); err != nil {
		return h, err
	}
	if err = r.bytes(h.baseSum[:], "base checksum"); err != nil {
		return h, err
	}
	if h.outLen, err = r.uvarint("output length"); err != nil {
		return h, err
	}
	if err = r.bytes(h.outSum[:], "output checksum"); err != nil {
		return h, err
	}
	h.opsAt = r.pos
	return h, nil
}

// runOps checks every op against the header and old and, when out is not
// nil (it then has length h.outLen), writes the output into it.
func runOps(out, old, delta []byte, h header) error {
	r := reader{buf: delta, pos: h.opsAt}
	var written, cursor int64 // bytes produced; end of the previous COPY
	for r.pos < len(r.buf) {
		at := r.pos
		tag, err := r.uvarint("op")
		if err != nil {
			return err
		}
		n := tag >> 1
		if n == 0 {
			return fmt.Errorf("%w: zero-length op at byte %d", ErrCorrupt, at)
		}
		if n > h.outLen-written {
			return fmt.Errorf("%w: op at byte %d writes past the declared output length %d", ErrCorrupt, at, h.outLen)
		}
		if tag&1 == 0 { // INSERT
			if n > int64(len(r.buf)-r.pos) {
				return fmt.Errorf("%w: INSERT at byte %d runs past the end of the delta", ErrCorrupt, at)
			}
			if out != nil {
				copy(out[written:], r.buf[r.pos:r.pos+int(n)])
			}
			r.pos += int(n)
		} else { // COPY
			d, err := r.svarint("COPY offset")
			if err != nil {
				return err
			}
			// cursor ≤ baseLen < 2^63 and |d| < 2^63, so o cannot
			// overflow unless it is far out of range anyway; check
			// with subtraction to stay exact.
			if (d < 0 && -d > cursor) || (d > 0 && d > h.baseLen-cursor) {
				return fmt.Errorf("%w: COPY at byte %d starts outside the base", ErrCorrupt, at)
			}
			o := cursor + d
			if n > h.baseLen-o {
				return fmt.Errorf("%w: COPY at byte %d reads past the end of the base", ErrCorrupt, at)
			}
			if out != nil {
				copy(out[written:], old[o:o+n])
			}
			cursor = o + n
		}
		written += n
	}
	if written != h.outLen {
		return fmt.Errorf("%w: ops produce %d bytes, header declares %d", ErrCorrupt, written, h.outLen)
	}
	return nil
}

// reader decodes the varints of the format with the checks it requires.
type reader struct {
	buf []byte
	pos int
}

func (r *reader) bytes(dst []byte, what string) error {
	if len(r.buf)-r.pos < len(dst) {
		return fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	r.pos += copy(dst, r.buf[r.pos:])
	return nil
}

// uvarint reads a minimal LEB128 value below 2^63.
func (r *reader) uvarint(what string) (int64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		if r.pos >= len(r.buf) {
			return 0, fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
		}
		b := r.buf[r.pos]
		r.pos++
		if i == 9 && b > 1 {
			return 0, fmt.Errorf("%w: %s overflows 64 bits", ErrCorrupt, what)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: %s is not minimally encoded", ErrCorrupt, what)
			}
			if v > math.MaxInt64 {
				return 0, fmt.Errorf("%w: %s is 2^63 or more", ErrCorrupt, what)
			}
			return int64(v), nil
		}
	}
	return 0, fmt.Errorf("%w: %s is longer than 10 bytes", ErrCorrupt, what)
}

// svarint reads a zigzag-encoded signed value.
func (r *reader) svarint(what string) (int64, error) {
	u, err := r.uvarint(what)
	if err != nil {
		return 0, err
	}
	return int64(uint64(u)>>1) ^ -(u & 1), nil
}
