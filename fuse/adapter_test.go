package fuse_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/fuse"
	"github.com/integrity-sys/integrity/fuse/memfs"
	"golang.org/x/sys/unix"
)

// spyFS counts calls into a memfs and can fail chosen ones.
type spyFS struct {
	*memfs.FS
	mu     sync.Mutex
	calls  map[string]int
	failOn map[string]error // op name -> error to return
}

func newSpy() *spyFS {
	return &spyFS{FS: memfs.New(), calls: map[string]int{}, failOn: map[string]error{}}
}

func (s *spyFS) note(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	return s.failOn[op]
}

func (s *spyFS) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// waitCount waits for op to have been called want times: RELEASE, and the
// flush it may carry, reach the FS after close(2) has returned.
func (s *spyFS) waitCount(t *testing.T, op string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.count(op) < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond) // and no more than want
	if n := s.count(op); n != want {
		t.Errorf("%s called %d times, want %d", op, n, want)
	}
}

func (s *spyFS) fail(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failOn[op] = err
}

func (s *spyFS) Read(ctx context.Context, ino uint64, off int64, dest []byte) (int, error) {
	if err := s.note("read"); err != nil {
		return 0, err
	}
	return s.FS.Read(ctx, ino, off, dest)
}

func (s *spyFS) Write(ctx context.Context, ino uint64, off int64, data []byte) (int, error) {
	if err := s.note("write"); err != nil {
		return 0, err
	}
	return s.FS.Write(ctx, ino, off, data)
}

func (s *spyFS) Flush(ctx context.Context, ino uint64) error {
	if err := s.note("flush"); err != nil {
		return err
	}
	return s.FS.Flush(ctx, ino)
}

func (s *spyFS) Fsync(ctx context.Context, ino uint64) error {
	if err := s.note("fsync"); err != nil {
		return err
	}
	return s.FS.Fsync(ctx, ino)
}

func (s *spyFS) GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error) {
	if err := s.note("getxattr"); err != nil {
		return nil, err
	}
	return s.FS.GetXattr(ctx, ino, name)
}

func (s *spyFS) Forget(ino uint64) {
	_ = s.note("forget")
	s.FS.Forget(ino)
}

func TestErrorMapping(t *testing.T) {
	spy := newSpy()
	dir, lb := mount(t, spy, fuse.Options{})
	fn := filepath.Join(dir, "f")
	if err := os.WriteFile(fn, []byte("data"), 0644); err != nil {
		t.Fatal(err)
	}

	// A plain error is a fault of the tree: EIO, and a log line saying what.
	spy.fail("getxattr", errors.New("chain unreachable"))
	_, err := unix.Getxattr(fn, "user.x", make([]byte, 16))
	wantErrno(t, "getxattr", err, syscall.EIO)
	if log := lb.String(); !strings.Contains(log, "chain unreachable") || !strings.Contains(log, "op=getxattr") {
		t.Errorf("log lacks the failure:\n%s", log)
	}

	// A wrapped errno passes through.
	spy.fail("write", fmt.Errorf("wallet: no funds: %w", syscall.ENOSPC))
	f, err := os.OpenFile(fn, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write([]byte("more"))
	wantErrno(t, "write", err, syscall.ENOSPC)
	f.Close()

	// A context error the kernel did not cause (no interrupt) is a fault,
	// not EINTR, which programs would retry for ever.
	spy.fail("fsync", fmt.Errorf("broadcast: %w", context.Canceled))
	f, err = os.OpenFile(fn, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "fsync", f.Sync(), syscall.EIO)
	f.Close()

	// Reads through an uncached open fail the same way.
	spy.fail("read", errors.New("blob server gone"))
	f, err = os.OpenFile(fn, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Read(make([]byte, 4096))
	wantErrno(t, "read", err, syscall.EIO)
	f.Close()
}

func TestFlushFsync(t *testing.T) {
	spy := newSpy()
	dir, _ := mount(t, spy, fuse.Options{})
	fn := filepath.Join(dir, "f")

	if err := os.WriteFile(fn, []byte("one"), 0644); err != nil {
		t.Fatal(err)
	}
	spy.waitCount(t, "flush", 1) // create+write+close
	if _, err := os.ReadFile(fn); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fn, 0600); err != nil {
		t.Fatal(err)
	}
	spy.waitCount(t, "flush", 1) // read-only open and chmod: none
	if err := os.Truncate(fn, 1); err != nil {
		t.Fatal(err)
	}
	spy.waitCount(t, "flush", 2) // truncate(2): at once, or at the release of a lingering handle
	if err := os.WriteFile(fn, []byte("two"), 0644); err != nil {
		t.Fatal(err)
	}
	spy.waitCount(t, "flush", 3) // O_TRUNC open, write, close: one

	f, err := os.OpenFile(fn, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("xyz"), 10); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := spy.count("fsync"); n != 1 {
		t.Errorf("fsyncs: %d, want 1", n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	spy.waitCount(t, "flush", 3) // fsync already handed the write on
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	d.Close()
	if n := spy.count("fsync"); n != 2 {
		t.Errorf("fsyncs after the directory's: %d, want 2", n)
	}
}

// TestKeepCache checks that an unchanged file is read from the kernel's page
// cache on the next open, and a file changed behind the mount is not.
func TestKeepCache(t *testing.T) {
	spy := newSpy()
	dir, _ := mount(t, spy, fuse.Options{})
	fn := filepath.Join(dir, "f")
	content := bytes.Repeat([]byte("a"), 64<<10)
	if err := os.WriteFile(fn, content, 0644); err != nil {
		t.Fatal(err)
	}
	read := func(want []byte) int {
		t.Helper()
		before := spy.count("read")
		got, err := os.ReadFile(fn)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read: %d bytes, %v", len(got), err)
		}
		return spy.count("read") - before
	}
	read(content)
	if n := read(content); n != 0 {
		t.Errorf("second read of an unchanged file went to the FS %d times", n)
	}
	// Another device changes the file (same size, new mtime).
	ctx := t.Context()
	at, err := spy.Lookup(ctx, spy.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Repeat([]byte("b"), len(content))
	time.Sleep(2 * time.Millisecond) // a new mtime
	if _, err := spy.FS.Write(ctx, at.Ino, 0, changed); err != nil {
		t.Fatal(err)
	}
	if n := read(changed); n == 0 {
		t.Error("read after an outside change was served from the stale cache")
	}
}

func TestUnsupported(t *testing.T) {
	dir, _ := mount(t, populate(t), fuse.Options{})
	p := func(s string) string { return filepath.Join(dir, s) }

	wantErrno(t, "link", os.Link(p("f"), p("g")), syscall.EPERM)
	wantErrno(t, "mkfifo", syscall.Mkfifo(p("fifo"), 0644), syscall.EPERM)
	wantErrno(t, "mknod chr", syscall.Mknod(p("chr"), syscall.S_IFCHR|0644, 0), syscall.EPERM)
	if err := syscall.Mknod(p("reg"), syscall.S_IFREG|0640, 0); err != nil {
		t.Errorf("mknod of a regular file: %v", err)
	}
	wantErrno(t, "RENAME_EXCHANGE", unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("reg"), unix.RENAME_EXCHANGE), syscall.EINVAL)
	wantErrno(t, "RENAME_NOREPLACE", unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("reg"), unix.RENAME_NOREPLACE), syscall.EEXIST)
	if err := unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("g"), unix.RENAME_NOREPLACE); err != nil {
		t.Errorf("RENAME_NOREPLACE to a free name: %v", err)
	}
	wantErrno(t, "setxattr security.*", unix.Setxattr(p("g"), "security.x", []byte("v"), 0), syscall.EOPNOTSUPP)
	_, err := unix.Getxattr(p("g"), "trusted.x", nil)
	wantErrno(t, "getxattr trusted.*", err, syscall.EOPNOTSUPP)
	_, err = unix.Getxattr(p("g"), "user.none", nil)
	wantErrno(t, "getxattr of a missing name", err, syscall.ENODATA)
	wantErrno(t, "XATTR_REPLACE of a missing name", unix.Setxattr(p("g"), "user.a", []byte("v"), unix.XATTR_REPLACE), syscall.ENODATA)
	if err := unix.Setxattr(p("g"), "user.a", []byte("v"), unix.XATTR_CREATE); err != nil {
		t.Error(err)
	}
	wantErrno(t, "XATTR_CREATE of a present name", unix.Setxattr(p("g"), "user.a", []byte("v"), unix.XATTR_CREATE), syscall.EEXIST)

	long := strings.Repeat("n", fuse.MaxNameLen+1)
	wantErrno(t, "create a long name", os.WriteFile(p(long), nil, 0644), syscall.ENAMETOOLONG)
	if err := os.WriteFile(p(long[1:]), nil, 0644); err != nil {
		t.Errorf("create a name of %d bytes: %v", fuse.MaxNameLen, err)
	}

	if os.Geteuid() == 0 {
		wantErrno(t, "chown to another user", os.Chown(p("g"), 1000, 1000), syscall.EPERM)
	}
	if err := os.Chown(p("g"), os.Geteuid(), os.Getegid()); err != nil {
		t.Errorf("chown to the owner: %v", err)
	}
	if err := syscall.Fallocate(-1, 0, 0, 0); err == nil {
		t.Error("fallocate on fd -1 succeeded")
	}
	f, err := os.OpenFile(p("g"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantErrno(t, "punch hole", syscall.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1), syscall.EOPNOTSUPP)
}

// TestUnlinkedOpen: a removed file stays usable through an open
// descriptor, and is forgotten (dropped by the FS) after the last close.
func TestUnlinkedOpen(t *testing.T) {
	spy := newSpy()
	dir, _ := mount(t, spy, fuse.Options{})
	fn := filepath.Join(dir, "f")
	if err := os.WriteFile(fn, []byte("hello"), 0644); err != nil {
		t.Fatal(err)
	}
	nodes := spy.Len()
	f, err := os.OpenFile(fn, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(fn); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(" world"), 5); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	buf := make([]byte, 32)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "hello world" {
		t.Errorf("read after unlink: %q %v", buf[:n], err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 || st.Size != 11 {
		t.Errorf("fstat after unlink: nlink %d size %d %v", st.Nlink, st.Size, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for spy.Len() >= nodes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if spy.Len() >= nodes {
		t.Errorf("removed node not forgotten after close: %d nodes, had %d (forgets: %d)", spy.Len(), nodes, spy.count("forget"))
	}
}

// TestManyFiles is the shape of the benchmark's small-file workload, scaled
// down: create, list with attributes (READDIRPLUS), remove.
func TestManyFiles(t *testing.T) {
	m := memfs.New()
	dir, _ := mount(t, m, fuse.Options{})
	const dirs, files = 5, 100
	data := bytes.Repeat([]byte("x"), 1024)
	for d := range dirs {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(sub, 0755); err != nil {
			t.Fatal(err)
		}
		for i := range files {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", i)), data, 0644); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := 0
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n++
			if fi.Size() != 1024 {
				t.Errorf("%s: size %d", path, fi.Size())
			}
		}
		return nil
	})
	if err != nil || n != dirs*files {
		t.Errorf("walk: %d files, %v", n, err)
	}
	for d := range dirs {
		if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("d%d", d))); err != nil {
			t.Fatal(err)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("after rm -rf: %v %v", ents, err)
	}
}
