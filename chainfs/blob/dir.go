package blob

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Dir is a Store in a local directory:
//
//	<root>/tmp/put-*.tmp       blobs being written (locked by their writer)
//	<root>/<hh>/<64 hex>       blobs, fanned out by the hash's first byte
//
// A blob appears under its final name only by rename, after its hash has
// been checked and its bytes fsynced, so a crash (kill -9, power loss)
// leaves at most a temp file, never a partial blob. Each writer holds an
// flock on its temp file; NewDir removes temp files nobody holds, i.e.
// those whose writer died. Several Dir values and processes may share one
// directory.
type Dir struct {
	root string
}

const (
	dirTmp     = "tmp"
	tmpPattern = "put-*.tmp"
	copyBuf    = 256 << 10
)

// NewDir opens (creating if needed) the blob directory at path and removes
// temp files left by writers that died.
func NewDir(path string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(path, dirTmp), 0o700); err != nil {
		return nil, fmt.Errorf("blob: opening directory store: %w", err)
	}
	d := &Dir{root: path}
	if err := d.cleanTemps(); err != nil {
		return nil, err
	}
	return d, nil
}

// Path is the directory's root.
func (d *Dir) Path() string { return d.root }

func (d *Dir) path(hash [32]byte) string {
	h := hex.EncodeToString(hash[:])
	return filepath.Join(d.root, h[:2], h)
}

// cleanTemps removes temp files whose flock it can take: their writer is
// gone (a live writer holds the lock until its file is renamed).
func (d *Dir) cleanTemps() error {
	names, err := filepath.Glob(filepath.Join(d.root, dirTmp, tmpPattern))
	if err != nil {
		return fmt.Errorf("blob: listing temp files: %w", err)
	}
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			continue // renamed or removed meanwhile
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil && sameFile(name, f) {
			if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				_ = f.Close()
				return fmt.Errorf("blob: removing stale temp file: %w", err)
			}
		}
		_ = f.Close()
	}
	return nil
}

// sameFile reports whether name still refers to the open file f.
func sameFile(name string, f *os.File) bool {
	a, err := os.Stat(name)
	if err != nil {
		return false
	}
	b, err := f.Stat()
	return err == nil && os.SameFile(a, b)
}

// createTemp creates a locked temp file. A concurrent NewDir may delete a
// file between its creation and its lock; the check after locking catches
// that, and a fresh file is made.
func (d *Dir) createTemp() (*os.File, error) {
	for range 8 {
		f, err := os.CreateTemp(filepath.Join(d.root, dirTmp), tmpPattern)
		if err != nil {
			return nil, fmt.Errorf("blob: creating temp file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			return nil, fmt.Errorf("blob: locking temp file: %w", err)
		}
		if sameFile(f.Name(), f) {
			return f, nil
		}
		_ = f.Close()
	}
	return nil, errors.New("blob: temp files keep disappearing (another process cleaning the directory?)")
}

// abort discards a temp file.
func abort(f *os.File) {
	_ = os.Remove(f.Name())
	_ = f.Close()
}

// commit makes the temp file f the blob named hash: fsync, rename, fsync
// the directory (so the rename itself survives a crash), then release the
// lock. f is closed in all cases, and removed on failure.
func (d *Dir) commit(f *os.File, hash [32]byte) error {
	if err := f.Sync(); err != nil {
		abort(f)
		return fmt.Errorf("blob: syncing %x: %w", hash, err)
	}
	final := d.path(hash)
	sub := filepath.Dir(final)
	if _, err := os.Stat(sub); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(sub, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			abort(f)
			return fmt.Errorf("blob: creating %s: %w", sub, err)
		}
		if err := syncDir(d.root); err != nil {
			abort(f)
			return err
		}
	}
	if err := os.Rename(f.Name(), final); err != nil {
		abort(f)
		return fmt.Errorf("blob: storing %x: %w", hash, err)
	}
	err := syncDir(sub)
	_ = f.Close()
	return err
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("blob: syncing directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blob: syncing directory %s: %w", path, err)
	}
	return nil
}

// Put implements Store. A blob already present with the right size is kept
// and r is not read (content addressing makes the bytes the same); to
// repair a corrupted copy, Delete it first. So a Put that succeeds proves
// nothing about r: a caller that must know its client had the bytes (a
// server selling storage) must not rely on Put for it (the image server
// charges a hold on stored content exactly as an upload instead).
func (d *Dir) Put(ctx context.Context, hash [32]byte, r io.Reader, size int64) error {
	if size < 0 || size > EncryptedSize(MaxPlainSize) {
		return fmt.Errorf("blob: put %x: size %d out of range", hash, size)
	}
	if fi, err := os.Stat(d.path(hash)); err == nil && fi.Size() == size {
		return nil
	}
	f, err := d.createTemp()
	if err != nil {
		return err
	}
	h := sha256.New()
	src := io.TeeReader(ctxReader{ctx, io.LimitReader(r, size)}, h)
	got, err := io.CopyBuffer(f, src, make([]byte, copyBuf))
	if err != nil {
		abort(f)
		return fmt.Errorf("blob: put %x: after %d of %d bytes: %w", hash, got, size, err)
	}
	if got < size {
		abort(f)
		return fmt.Errorf("%w: put %x: input ended after %d of %d bytes", ErrHashMismatch, hash, got, size)
	}
	var extra [1]byte
	if k, _ := io.ReadFull(r, extra[:]); k > 0 {
		abort(f)
		return fmt.Errorf("%w: put %x: input is longer than %d bytes", ErrHashMismatch, hash, size)
	}
	if sum := h.Sum(nil); subtle.ConstantTimeCompare(sum, hash[:]) != 1 {
		abort(f)
		return fmt.Errorf("%w: refusing to store %d bytes hashing to %x under %x", ErrHashMismatch, size, sum, hash)
	}
	return d.commit(f, hash)
}

// PutEncrypted encrypts r (EncryptReader) straight into the directory and
// returns the new blob's Ref: one pass over the data, bounded memory. It is
// how content of any size enters the system; Copy then uploads it.
func (d *Dir) PutEncrypted(ctx context.Context, r io.Reader) (Ref, error) {
	f, err := d.createTemp()
	if err != nil {
		return Ref{}, err
	}
	w := bufio.NewWriterSize(f, copyBuf) // chunks are 64 KiB: fewer syscalls
	ref, err := EncryptReader(ctx, r, w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		abort(f)
		return Ref{}, err
	}
	if err := d.commit(f, ref.Hash); err != nil {
		return Ref{}, err
	}
	return ref, nil
}

// Size returns a stored blob's size (ErrNotFound if it is not here).
func (d *Dir) Size(hash [32]byte) (int64, error) {
	f, n, err := d.open(hash)
	if err != nil {
		return 0, err
	}
	f.Close()
	return n, nil
}

func (d *Dir) open(hash [32]byte) (*os.File, int64, error) {
	f, err := os.Open(d.path(hash))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %x", ErrNotFound, hash)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob: opening %x: %w", hash, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("blob: stat %x: %w", hash, err)
	}
	return f, fi.Size(), nil
}

// Get implements Store; the reader re-hashes the file as it is read.
func (d *Dir) Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, size, err := d.open(hash)
	if err != nil {
		return nil, err
	}
	return newVerifyReader(f, hash, size, "blob file "+f.Name()), nil
}

// GetRange implements Store with one positioned read.
func (d *Dir) GetRange(ctx context.Context, hash [32]byte, off, n int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("%w: [%d, +%d) of %x", ErrRange, off, n, hash)
	}
	f, size, err := d.open(hash)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if off > size || n > size-off {
		return nil, fmt.Errorf("%w: [%d, +%d) of %x, which has %d bytes", ErrRange, off, n, hash, size)
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("blob: reading %x at %d: %w", hash, off, err)
	}
	return buf, nil
}

// Has implements Store.
func (d *Dir) Has(ctx context.Context, hash [32]byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	_, err := os.Stat(d.path(hash))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blob: stat %x: %w", hash, err)
	}
	return true, nil
}

// Delete implements Store.
func (d *Dir) Delete(ctx context.Context, hash [32]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(d.path(hash)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: deleting %x: %w", hash, err)
	}
	return nil
}

// List calls fn with the hash of every blob in the directory (in no
// particular order), for garbage collection and inventory. Files that are
// not blobs are ignored.
func (d *Dir) List(ctx context.Context, fn func(hash [32]byte) error) error {
	subs, err := os.ReadDir(d.root)
	if err != nil {
		return fmt.Errorf("blob: listing %s: %w", d.root, err)
	}
	for _, sub := range subs {
		if !sub.IsDir() || len(sub.Name()) != 2 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(d.root, sub.Name()))
		if err != nil {
			return fmt.Errorf("blob: listing %s: %w", sub.Name(), err)
		}
		for _, file := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			var hash [32]byte
			name := file.Name()
			if len(name) != 64 || !strings.HasPrefix(name, sub.Name()) || !file.Type().IsRegular() {
				continue
			}
			if _, err := hex.Decode(hash[:], []byte(name)); err != nil || hex.EncodeToString(hash[:]) != name {
				continue
			}
			if err := fn(hash); err != nil {
				return err
			}
		}
	}
	return nil
}
