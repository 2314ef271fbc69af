package blob

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
)

// Decrypt checks that encrypted is the blob ref names (length and SHA-256)
// and returns its plaintext. Every failure is a clear error, never a panic:
// ErrFormat (bad ref), ErrHashMismatch (wrong bytes), ErrDecrypt (wrong key
// or a forged blob).
func Decrypt(encrypted []byte, ref Ref) ([]byte, error) {
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	if int64(len(encrypted)) != ref.Size {
		return nil, fmt.Errorf("%w: %s: got %d bytes, want %d", ErrHashMismatch, ref, len(encrypted), ref.Size)
	}
	if sum := sha256.Sum256(encrypted); subtle.ConstantTimeCompare(sum[:], ref.Hash[:]) != 1 {
		return nil, fmt.Errorf("%w: %s: bytes hash to %x", ErrHashMismatch, ref, sum)
	}
	return openBlob(encrypted, ref)
}

// openBlob authenticates and decrypts a blob of the right length, without
// checking its hash (the chunk tags alone protect it).
func openBlob(encrypted []byte, ref Ref) ([]byte, error) {
	if int64(len(encrypted)) != EncryptedSize(ref.PlainSize) {
		return nil, fmt.Errorf("%w: %s: got %d bytes, want %d", ErrHashMismatch, ref, len(encrypted), EncryptedSize(ref.PlainSize))
	}
	hdr := header()
	if err := checkHeader(encrypted[:HeaderSize]); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	aead, err := newAEAD(&ref.Key)
	if err != nil {
		return nil, err
	}
	aad, nb := hdr[:], make([]byte, nonceSize)
	n := numChunks(ref.PlainSize)
	out := make([]byte, ref.PlainSize)
	for i := range n {
		plen := chunkPlainLen(ref.PlainSize, i)
		start := chunkOffset(i)
		// Open appends into out's capacity: plaintext lands in place.
		dst := out[i*ChunkSize : i*ChunkSize]
		if _, err := aead.Open(dst, setNonce(nb, i, i == n-1), encrypted[start:start+plen+TagSize], aad); err != nil {
			return nil, fmt.Errorf("%w: %s: chunk %d of %d", ErrDecrypt, ref, i, n)
		}
	}
	return out, nil
}

func checkHeader(b []byte) error {
	hdr := header()
	if bytes.Equal(b, hdr[:]) {
		return nil
	}
	if bytes.Equal(b[:HeaderSize-1], hdr[:HeaderSize-1]) {
		return fmt.Errorf("%w: blob format version %d, this build reads %d", ErrFormat, b[HeaderSize-1], Version)
	}
	return fmt.Errorf("%w: not an integrity blob (header %x)", ErrFormat, b)
}

// DecryptStream reads the blob ref names from r and writes its plaintext to
// w, one chunk at a time (bounded memory for any size). Each chunk is
// authenticated before it is written, but a failure can come after some
// plaintext has been written (a truncated or altered later chunk, or a
// hash mismatch found at the end): on error, discard everything written.
func DecryptStream(ctx context.Context, w io.Writer, r io.Reader, ref Ref) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	aead, err := newAEAD(&ref.Key)
	if err != nil {
		return err
	}
	h := sha256.New()
	tr := io.TeeReader(r, h)
	buf := make([]byte, sealedChunkSize)
	if _, err := io.ReadFull(tr, buf[:HeaderSize]); err != nil {
		return fmt.Errorf("%w: %s: reading header: %w", ErrHashMismatch, ref, err)
	}
	if err := checkHeader(buf[:HeaderSize]); err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	hdr := header()
	aad, nb := hdr[:], make([]byte, nonceSize)
	n := numChunks(ref.PlainSize)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("blob: decrypting %s: %w", ref, err)
		}
		sealed := buf[:chunkPlainLen(ref.PlainSize, i)+TagSize]
		if _, err := io.ReadFull(tr, sealed); err != nil {
			return fmt.Errorf("%w: %s: reading chunk %d of %d: %w", ErrHashMismatch, ref, i, n, err)
		}
		if _, err := openChunk(aead, sealed, i, n, aad, nb); err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		if _, err := w.Write(sealed[:len(sealed)-TagSize]); err != nil {
			return fmt.Errorf("blob: writing plaintext of %s: %w", ref, err)
		}
	}
	var extra [1]byte
	if k, _ := io.ReadFull(r, extra[:]); k > 0 {
		return fmt.Errorf("%w: %s: data continues past %d bytes", ErrHashMismatch, ref, ref.Size)
	}
	if sum := h.Sum(nil); subtle.ConstantTimeCompare(sum, ref.Hash[:]) != 1 {
		return fmt.Errorf("%w: %s: bytes hash to %x", ErrHashMismatch, ref, sum)
	}
	return nil
}

// openChunk authenticates and decrypts sealed chunk i of n in place and
// returns its plaintext (a prefix of sealed); aad is the header and nb a reusable nonce buffer.
func openChunk(aead cipher.AEAD, sealed []byte, i, n int64, aad, nb []byte) ([]byte, error) {
	pt, err := aead.Open(sealed[:0], setNonce(nb, i, i == n-1), sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %d of %d", ErrDecrypt, i, n)
	}
	return pt, nil
}

// windowChunks is how many chunks a ranged read fetches per request (4 MiB
// of plaintext): large reads are split so that memory stays bounded and a
// bad copy in a Multi costs at most one window.
const windowChunks = 64

// Reader decrypts byte ranges of one blob, fetching only the sealed chunks
// that cover each range. It is safe for concurrent use.
type Reader struct {
	s    Store
	ref  Ref
	aead cipher.AEAD
}

// NewReader returns a Reader of the blob ref names in s. It does no I/O.
func NewReader(s Store, ref Ref) (*Reader, error) {
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	aead, err := newAEAD(&ref.Key)
	if err != nil {
		return nil, err
	}
	return &Reader{s: s, ref: ref, aead: aead}, nil
}

// Size is the plaintext size.
func (r *Reader) Size() int64 { return r.ref.PlainSize }

// ReadRange returns plaintext bytes [off, off+n), cut short at the end of
// the blob. off may equal Size (an empty result); beyond it is ErrRange.
func (r *Reader) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > r.ref.PlainSize {
		return nil, fmt.Errorf("%w: [%d, +%d) of %s", ErrRange, off, n, r.ref)
	}
	out := make([]byte, min(n, r.ref.PlainSize-off))
	if err := r.readInto(ctx, out, off); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadAtContext is io.ReaderAt with a context: it fills p from plaintext
// offset off and returns io.EOF with a short count at the end of the blob.
func (r *Reader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrRange, off)
	}
	if off >= r.ref.PlainSize {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), r.ref.PlainSize-off))
	if err := r.readInto(ctx, p[:k], off); err != nil {
		return 0, err
	}
	if k < len(p) {
		return k, io.EOF
	}
	return k, nil
}

// readInto fills dst with plaintext from off; the range is within the blob.
func (r *Reader) readInto(ctx context.Context, dst []byte, off int64) error {
	if len(dst) == 0 {
		return nil
	}
	end := off + int64(len(dst))
	first, last := off/ChunkSize, (end-1)/ChunkSize
	for a := first; a <= last; a += windowChunks {
		b := min(a+windowChunks-1, last)
		if err := r.readWindow(ctx, dst, off, end, a, b); err != nil {
			return err
		}
	}
	return nil
}

// readWindow fetches sealed chunks a..b in one request and writes the part
// of their plaintext inside [off, end) to dst (which starts at off). Given
// a Multi, a store whose chunks fail authentication is skipped.
func (r *Reader) readWindow(ctx context.Context, dst []byte, off, end, a, b int64) error {
	n := numChunks(r.ref.PlainSize)
	encOff := chunkOffset(a)
	encLen := chunkOffset(b) + chunkPlainLen(r.ref.PlainSize, b) + TagSize - encOff
	hdr := header()
	aad, nb := hdr[:], make([]byte, nonceSize)
	return eachSource(ctx, r.s, r.ref.Hash, func(s Store) error {
		data, err := s.GetRange(ctx, r.ref.Hash, encOff, encLen)
		if err != nil {
			return sourceError{err}
		}
		if int64(len(data)) != encLen {
			return sourceError{fmt.Errorf("%w: %s: range [%d, +%d) returned %d bytes", ErrHashMismatch, r.ref, encOff, encLen, len(data))}
		}
		for i := a; i <= b; i++ {
			start := chunkOffset(i) - encOff
			sealed := data[start : start+chunkPlainLen(r.ref.PlainSize, i)+TagSize]
			pt, err := openChunk(r.aead, sealed, i, n, aad, nb)
			if err != nil {
				return fmt.Errorf("%s: %w", r.ref, err)
			}
			// Copy the overlap of chunk i's plaintext with [off, end).
			cStart := i * ChunkSize
			lo, hi := max(cStart, off), min(cStart+int64(len(pt)), end)
			copy(dst[lo-off:hi-off], pt[lo-cStart:hi-cStart])
		}
		return nil
	})
}

// DecryptRange returns plaintext bytes [off, off+n) of the blob ref names,
// fetching and decrypting only the chunks that cover them (one request per
// 4 MiB). See Reader.ReadRange; keep a Reader for repeated reads.
func DecryptRange(ctx context.Context, s Store, ref Ref, off, n int64) ([]byte, error) {
	r, err := NewReader(s, ref)
	if err != nil {
		return nil, err
	}
	return r.ReadRange(ctx, off, n)
}

// Load fetches the whole blob ref names from s, checks its hash and
// returns the plaintext. Given a Multi, copies that fail or are wrong are
// skipped. For large blobs prefer a Reader or DecryptStream.
func Load(ctx context.Context, s Store, ref Ref) ([]byte, error) {
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	var out []byte
	err := eachSource(ctx, s, ref.Hash, func(s Store) error {
		rc, err := s.Get(ctx, ref.Hash)
		if err != nil {
			return sourceError{err}
		}
		defer rc.Close()
		data, err := io.ReadAll(io.LimitReader(rc, ref.Size+1))
		if err != nil {
			return sourceError{fmt.Errorf("reading %s: %w", ref, err)}
		}
		out, err = Decrypt(data, ref)
		return err
	})
	return out, err
}

// sourceError marks an error as the fault of the store being read (not of
// the destination or the caller), so that Multi moves on to the next store.
type sourceError struct{ err error }

func (e sourceError) Error() string { return e.err.Error() }
func (e sourceError) Unwrap() error { return e.err }

// isSourceFault reports whether err means "this copy is unusable, try
// another": a missing or wrong blob, failed authentication, or any failure
// of the source store itself.
func isSourceFault(err error) bool {
	var se sourceError
	return errors.As(err, &se) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrDecrypt)
}
