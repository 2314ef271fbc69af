package blob

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash"
	"io"
)

// Store holds encrypted blobs by content address. Implementations: Dir
// (local directory), Multi (several stores tried in turn), and later the
// image-server client (the same contract over HTTP). A Store never needs a
// blob's key.
type Store interface {
	// Put stores the size bytes read from r under hash. It reads exactly
	// size bytes (and checks that r ends there) and refuses, with
	// ErrHashMismatch, bytes that do not hash to hash; nothing becomes
	// visible before the whole blob is verified and durable. Putting a
	// blob the store already holds succeeds.
	Put(ctx context.Context, hash [32]byte, r io.Reader, size int64) error
	// Get streams the whole blob. The reader re-verifies the hash: its
	// final Read fails with ErrHashMismatch if the stored bytes are wrong,
	// so a caller must not use the data until it has read to the end
	// without error. A missing blob is ErrNotFound.
	Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error)
	// GetRange returns bytes [off, off+n) of the blob without reading the
	// rest; the range must lie within the blob (ErrRange). The bytes are
	// not verified here: the chunk tags do that when they are decrypted.
	GetRange(ctx context.Context, hash [32]byte, off, n int64) ([]byte, error)
	// Has reports whether the store holds the blob.
	Has(ctx context.Context, hash [32]byte) (bool, error)
	// Delete removes the blob; deleting a missing blob succeeds.
	Delete(ctx context.Context, hash [32]byte) error
}

// Copy copies the blob named hash (size bytes) from src to dst. dst.Put
// verifies it, so a wrong copy is never stored; given a Multi as src, a
// store that fails or serves wrong bytes is skipped and the next tried —
// how a client downloads a blob into its local cache from whichever image
// server serves it correctly.
func Copy(ctx context.Context, dst, src Store, hash [32]byte, size int64) error {
	return eachSource(ctx, src, hash, func(s Store) error {
		rc, err := s.Get(ctx, hash)
		if err != nil {
			return sourceError{err}
		}
		defer rc.Close()
		if err := dst.Put(ctx, hash, sourceReader{rc}, size); err != nil {
			return fmt.Errorf("blob: copying %x: %w", hash, err)
		}
		return nil
	})
}

// eachSource calls fn with s, or, if s is a Multi, with each of its stores
// in turn until fn succeeds or fails for a reason that is not the store's
// fault.
func eachSource(ctx context.Context, s Store, hash [32]byte, fn func(Store) error) error {
	if m, ok := s.(*Multi); ok {
		return m.Each(ctx, hash, fn)
	}
	return fn(s)
}

// sourceReader marks read errors as the source store's fault.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = sourceError{err}
	}
	return n, err
}

// ctxReader stops a long copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verifyReader passes a blob's bytes through and checks, on the Read that
// completes the blob's size bytes, that they hash to want. If they do not,
// that Read withholds its bytes and fails, so even io.ReadFull of exactly
// the size (which never sees EOF, and ignores an error that comes with the
// last bytes) reports a wrong blob.
type verifyReader struct {
	r       io.Reader
	c       io.Closer
	h       hash.Hash
	want    [32]byte
	left    int64 // bytes still expected
	what    string
	checked bool
}

func newVerifyReader(rc io.ReadCloser, want [32]byte, size int64, what string) *verifyReader {
	return &verifyReader{r: rc, c: rc, h: sha256.New(), want: want, left: size, what: what}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.checked {
		return 0, io.EOF
	}
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	n, err := 0, error(nil)
	if len(p) > 0 {
		n, err = v.r.Read(p)
		v.h.Write(p[:n])
		v.left -= int64(n)
	}
	if v.left > 0 {
		if err == io.EOF {
			return n, fmt.Errorf("%w: %s: ends %d bytes early", ErrHashMismatch, v.what, v.left)
		}
		return n, err
	}
	v.checked = true
	if sum := v.h.Sum(nil); subtle.ConstantTimeCompare(sum, v.want[:]) != 1 {
		return 0, fmt.Errorf("%w: %s: stored bytes hash to %x", ErrHashMismatch, v.what, sum)
	}
	return n, nil
}

func (v *verifyReader) Close() error { return v.c.Close() }
