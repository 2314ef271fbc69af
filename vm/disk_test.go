package vm

import (
	"context"
	"io"
	"io/fs"
	"strings"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
)

func TestDiskOperations(t *testing.T) {
	tree := newMemTree()
	d := NewDisk(context.Background(), tree, nil)
	const (
		rdonly = experimentalsys.O_RDONLY
		rdwr   = experimentalsys.O_RDWR
		wronly = experimentalsys.O_WRONLY
		creat  = experimentalsys.O_CREAT
		excl   = experimentalsys.O_EXCL
		trunc  = experimentalsys.O_TRUNC
		appnd  = experimentalsys.O_APPEND
	)
	must := func(e experimentalsys.Errno) {
		t.Helper()
		if e != 0 {
			t.Fatal(e)
		}
	}
	must(d.Mkdir("a", 0o755))
	if e := d.Mkdir("a", 0o755); e != experimentalsys.EEXIST {
		t.Fatalf("mkdir twice: %v", e)
	}
	f, e := d.OpenFile("a/f", wronly|creat|excl, 0o644)
	must(e)
	if _, e := d.OpenFile("a/f", wronly|creat|excl, 0o644); e != experimentalsys.EEXIST {
		t.Fatalf("O_EXCL on an existing file: %v", e)
	}
	if n, e := f.Write([]byte("hello world")); e != 0 || n != 11 {
		t.Fatalf("write: %d %v", n, e)
	}
	if _, e := f.Read(make([]byte, 4)); e != experimentalsys.EBADF {
		t.Fatalf("read on a write-only file: %v", e)
	}
	must(f.Sync())
	must(f.Close())
	if len(tree.flushed) == 0 || len(tree.synced) == 0 {
		t.Fatalf("close/fsync did not reach the tree: %v %v", tree.flushed, tree.synced)
	}
	if _, e := f.Write([]byte("x")); e != experimentalsys.EBADF {
		t.Fatalf("write after close: %v", e)
	}
	// Append, seek, pread, truncate.
	f, e = d.OpenFile("a/f", rdwr|appnd, 0)
	must(e)
	_, _ = f.Write([]byte("!"))
	if off, e := f.Seek(-6, io.SeekEnd); e != 0 || off != 6 {
		t.Fatalf("seek: %d %v", off, e)
	}
	buf := make([]byte, 16)
	n, _ := f.Read(buf)
	if string(buf[:n]) != "world!" {
		t.Fatalf("read %q", buf[:n])
	}
	if n, _ := f.Pread(buf[:5], 0); string(buf[:n]) != "hello" {
		t.Fatalf("pread %q", buf[:n])
	}
	if _, e := f.Seek(-100, io.SeekStart); e != experimentalsys.EINVAL {
		t.Fatalf("seek before start: %v", e)
	}
	must(f.Truncate(5))
	must(f.Close())
	if st, e := d.Stat("a/f"); e != 0 || st.Size != 5 || st.Mode.Perm() != 0o644 {
		t.Fatalf("stat %+v %v", st, e)
	}
	f, e = d.OpenFile("a/f", wronly|trunc, 0)
	must(e)
	must(f.Close())
	if st, _ := d.Stat("a/f"); st.Size != 0 {
		t.Fatalf("O_TRUNC left %d bytes", st.Size)
	}
	// Symlinks: relative and absolute, loops.
	must(d.Symlink("f", "a/rel"))
	must(d.Symlink("/a", "abs"))
	must(d.Symlink("loop", "loop"))
	if st, e := d.Stat("abs/rel"); e != 0 || st.Mode.Type() != 0 {
		t.Fatalf("stat through symlinks: %+v %v", st, e)
	}
	if st, e := d.Lstat("abs"); e != 0 || st.Mode&fs.ModeSymlink == 0 {
		t.Fatalf("lstat: %+v %v", st, e)
	}
	if target, e := d.Readlink("abs"); e != 0 || target != "/a" {
		t.Fatalf("readlink %q %v", target, e)
	}
	if _, e := d.Stat("loop"); e != experimentalsys.ELOOP {
		t.Fatalf("symlink loop: %v", e)
	}
	if _, e := d.OpenFile("a/rel", rdonly|experimentalsys.O_NOFOLLOW, 0); e != experimentalsys.ELOOP {
		t.Fatalf("O_NOFOLLOW: %v", e)
	}
	// Directories.
	dir, e := d.OpenFile("a", rdonly|experimentalsys.O_DIRECTORY, 0)
	must(e)
	ents, e := dir.Readdir(-1)
	must(e)
	if len(ents) != 2 || ents[0].Name != "f" || ents[1].Name != "rel" {
		t.Fatalf("readdir %v", ents)
	}
	must(dir.Close())
	if _, e := d.OpenFile("a", wronly, 0); e != experimentalsys.EISDIR {
		t.Fatalf("open a folder for writing: %v", e)
	}
	if _, e := d.OpenFile("a/f", rdonly|experimentalsys.O_DIRECTORY, 0); e != experimentalsys.ENOTDIR {
		t.Fatalf("O_DIRECTORY on a file: %v", e)
	}
	// Rename, unlink, rmdir.
	must(d.Rename("a/f", "g"))
	if _, e := d.Stat("a/f"); e != experimentalsys.ENOENT {
		t.Fatalf("after rename: %v", e)
	}
	if e := d.Rmdir("a"); e != experimentalsys.ENOTEMPTY {
		t.Fatalf("rmdir non-empty: %v", e)
	}
	must(d.Unlink("a/rel"))
	must(d.Rmdir("a"))
	if e := d.Unlink("g/x"); e != experimentalsys.ENOTDIR {
		t.Fatalf("unlink below a file: %v", e)
	}
	if e := d.Link("g", "h"); e != experimentalsys.ENOSYS {
		t.Fatalf("hard link: %v", e)
	}
	// Owner permissions.
	must(d.Chmod("g", 0o444))
	if _, e := d.OpenFile("g", wronly, 0); e != experimentalsys.EACCES {
		t.Fatalf("write to a read-only file: %v", e)
	}
	f, e = d.OpenFile("new", wronly|creat, 0o444)
	must(e) // a file this open created is writable
	must(f.Close())
}

func TestDiskRejectsBadPaths(t *testing.T) {
	d := NewDisk(context.Background(), newMemTree(), nil)
	for _, p := range []string{"../x", "a/../../x", "x\x00y", strings.Repeat("n", 300), strings.Repeat("a/", 3000)} {
		if _, e := d.OpenFile(p, experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644); e == 0 {
			t.Errorf("open %.30q accepted", p)
		}
		if e := d.Mkdir(p, 0o755); e == 0 {
			t.Errorf("mkdir %.30q accepted", p)
		}
		if _, e := d.Stat(p); e == 0 {
			t.Errorf("stat %.30q accepted", p)
		}
	}
	if e := d.Symlink("x\x00", "l"); e != experimentalsys.EINVAL {
		t.Errorf("symlink to a NUL target: %v", e)
	}
	if e := d.Rmdir(""); e == 0 {
		t.Error("rmdir of the root accepted")
	}
}
