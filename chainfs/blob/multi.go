package blob

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
)

// Multi is a Store over several stores holding copies of the same blobs —
// a local cache and image servers, say. Reads try the stores in order and
// skip one that fails or serves wrong bytes, reporting it; writes go to
// every store.
//
// What "wrong bytes" can be detected depends on the read: Copy, Load and
// Get verify the whole hash, and Reader/DecryptRange authenticate every
// chunk, so all of them move on to the next store when a copy is bad.
// GetRange alone cannot check anything (it has no key). Get keeps each copy
// in a temporary file until its hash checks out (a whole-blob hash cannot
// be checked piecewise), so no byte of a bad copy reaches its caller.
type Multi struct {
	stores []Store
	report func(store int, err error)
	spool  string // where Get keeps a copy while checking it ("": os.TempDir())
}

// NewMulti returns a Multi over stores, tried in the given order. report,
// if not nil, is called for every store skipped because it failed or held
// a wrong copy (not for one that simply lacks the blob); store is its
// index in stores. report must be safe for concurrent use if the Multi is.
func NewMulti(report func(store int, err error), stores ...Store) *Multi {
	return &Multi{stores: append([]Store(nil), stores...), report: report}
}

// SpoolDir sets the folder where Get keeps a copy while it checks it
// (default os.TempDir()); the file is unlinked at once and gone when the
// reader is closed. Call it before the Multi is used. It returns m.
func (m *Multi) SpoolDir(dir string) *Multi {
	m.spool = dir
	return m
}

func (m *Multi) skip(i int, err error) {
	if m.report != nil && !errors.Is(err, ErrNotFound) {
		m.report(i, err)
	}
}

// Each calls fn with each store in turn until fn succeeds, and returns nil
// then. An error that is the store's fault — ErrNotFound, ErrHashMismatch,
// ErrDecrypt, or a failure of the store itself (an error from its methods
// or readers, as Copy and Reader mark them) — is reported and the next
// store tried; any other error (the destination of a copy failing, say)
// stops the loop and is returned. If every store fails, the error joins
// all of theirs, so errors.Is(err, ErrNotFound) holds when none had it.
func (m *Multi) Each(ctx context.Context, hash [32]byte, fn func(Store) error) error {
	var errs []error
	for i, s := range m.stores {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("blob %x: %w", hash, err)
		}
		err := fn(s)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !isSourceFault(err) {
			return err
		}
		m.skip(i, err)
		errs = append(errs, fmt.Errorf("store %d: %w", i, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: %x (no stores)", ErrNotFound, hash)
	}
	return fmt.Errorf("blob %x: no store could serve it: %w", hash, errors.Join(errs...))
}

// Put stores the blob in every store: read once from r into the first,
// then copied from the first to the others. Errors from all stores are
// joined; a store that succeeded keeps its copy.
func (m *Multi) Put(ctx context.Context, hash [32]byte, r io.Reader, size int64) error {
	if len(m.stores) == 0 {
		return errors.New("blob: put to a Multi with no stores")
	}
	if err := m.stores[0].Put(ctx, hash, r, size); err != nil {
		return fmt.Errorf("store 0: %w", err)
	}
	var errs []error
	for i, s := range m.stores[1:] {
		if err := Copy(ctx, s, m.stores[0], hash, size); err != nil {
			errs = append(errs, fmt.Errorf("store %d: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}

// Get returns the blob from the first store whose copy hashes right. Each
// copy is read whole into a temporary file (SpoolDir) and checked before
// Get returns, so a store that fails or serves wrong bytes is reported and
// the next one tried, as with Copy; the reader then serves checked bytes.
func (m *Multi) Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error) {
	var out *os.File
	err := m.Each(ctx, hash, func(s Store) error {
		f, err := m.spoolFrom(ctx, s, hash)
		if err != nil {
			return err
		}
		out = f
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// spoolFrom copies s's copy of the blob into an unlinked temporary file
// and checks its hash. Failures of s are sourceErrors; a failure of the
// temporary file (a full disk) is not s's fault and stops the Multi.
func (m *Multi) spoolFrom(ctx context.Context, s Store, hash [32]byte) (*os.File, error) {
	rc, err := s.Get(ctx, hash)
	if err != nil {
		return nil, sourceError{err}
	}
	defer rc.Close()
	f, err := os.CreateTemp(m.spool, "blob-get-*")
	if err != nil {
		return nil, fmt.Errorf("blob %x: spooling a download: %w", hash[:8], err)
	}
	_ = os.Remove(f.Name()) // gone when closed
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), sourceReader{ctxReader{ctx, rc}}); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob %x: %w", hash[:8], err)
	}
	if sum := h.Sum(nil); subtle.ConstantTimeCompare(sum, hash[:]) != 1 {
		f.Close()
		return nil, fmt.Errorf("%w: a copy of %x hashes to %x", ErrHashMismatch, hash, sum)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob %x: spooling a download: %w", hash[:8], err)
	}
	return f, nil
}

// GetRange returns the range from the first store that serves it. The
// bytes cannot be checked here; Reader authenticates them and, given the
// Multi itself, skips stores whose chunks fail. ErrRange from one store
// (a truncated copy) also moves on to the next.
func (m *Multi) GetRange(ctx context.Context, hash [32]byte, off, n int64) ([]byte, error) {
	var out []byte
	err := m.Each(ctx, hash, func(s Store) error {
		b, err := s.GetRange(ctx, hash, off, n)
		if err != nil {
			return sourceError{err}
		}
		if int64(len(b)) != n {
			return sourceError{fmt.Errorf("%w: range [%d, +%d) of %x returned %d bytes", ErrHashMismatch, off, n, hash, len(b))}
		}
		out = b
		return nil
	})
	return out, err
}

// Has reports whether any store holds the blob. Failing stores are
// reported and skipped; their error is returned only if no store has it.
func (m *Multi) Has(ctx context.Context, hash [32]byte) (bool, error) {
	var errs []error
	for i, s := range m.stores {
		ok, err := s.Has(ctx, hash)
		if err != nil {
			if ctx.Err() != nil {
				return false, fmt.Errorf("blob %x: %w", hash, ctx.Err())
			}
			m.skip(i, err)
			errs = append(errs, fmt.Errorf("store %d: %w", i, err))
			continue
		}
		if ok {
			return true, nil
		}
	}
	return false, errors.Join(errs...)
}

// Delete removes the blob from every store; errors are joined.
func (m *Multi) Delete(ctx context.Context, hash [32]byte) error {
	var errs []error
	for i, s := range m.stores {
		if err := s.Delete(ctx, hash); err != nil {
			errs = append(errs, fmt.Errorf("store %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}
