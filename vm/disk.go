package vm

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	wsys "github.com/tetratelabs/wazero/sys"
)

// Kind is a node's type.
type Kind uint8

// Node kinds.
const (
	KindFile Kind = iota + 1
	KindDir
	KindSymlink
)

// Attr describes a node of the Tree.
type Attr struct {
	Ino   uint64
	Kind  Kind
	Mode  uint32 // permission bits
	Size  int64
	Mtime time.Time
	Ctime time.Time
	Nlink uint32
}

// DirEntry is one directory entry.
type DirEntry struct {
	Name string
	Ino  uint64
	Kind Kind
}

// SetAttr changes attributes; nil fields stay.
type SetAttr struct {
	Mode  *uint32
	Size  *int64
	Mtime *time.Time
}

// Tree is what the guest's disk needs of the user's tree: inode-based
// operations, as chainfs.Tree offers them (vm/hostdev adapts it). Errors
// wrap a syscall.Errno (ENOENT, EEXIST, ENOTDIR, EROFS, ...), which the
// disk passes on to the guest.
type Tree interface {
	Root() uint64
	Lookup(dir uint64, name string) (Attr, error)
	GetAttr(ino uint64) (Attr, error)
	SetAttr(ino uint64, in SetAttr) (Attr, error)
	ReadDir(dir uint64) ([]DirEntry, error)
	Create(dir uint64, name string, kind Kind, mode uint32, target string) (Attr, error)
	Remove(dir uint64, name string, isDir bool) error
	Rename(oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error
	ReadLink(ino uint64) (string, error)
	Read(ino uint64, off int64, dest []byte) (int, error)
	Write(ino uint64, off int64, data []byte) (int, error)
	// Flush is close(2): the file's changes become a commit soon.
	Flush(ino uint64) error
	// Sync is fsync(2): it returns once the changes are committed.
	Sync(ctx context.Context, ino uint64) error
}

// Limits on what the guest may name (as Linux: PATH_MAX, NAME_MAX).
const (
	maxPath     = 4096
	maxName     = 255
	maxSymlinks = 40
)

// disk is the guest's filesystem: wazero's experimental sys.FS over a Tree,
// read-write. Paths arrive relative to the preopened "/" and already
// cleaned by wazero; disk checks them again (length, NUL, "..") rather than
// trust that.
type disk struct {
	experimentalsys.UnimplementedFS
	t   Tree
	ctx context.Context // the machine's: bounds fsync
	log *slog.Logger
}

// NewDisk returns t as a wazero filesystem (mount it with
// sysfs.FSConfig.WithSysFSMount). ctx bounds fsync calls.
func NewDisk(ctx context.Context, t Tree, log *slog.Logger) experimentalsys.FS {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &disk{t: t, ctx: ctx, log: log}
}

// errno converts a Tree error for the guest.
func (d *disk) errno(op, path string, err error) experimentalsys.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		switch e {
		case syscall.ENOSPC, syscall.EFBIG, syscall.E2BIG, syscall.EDQUOT:
			// wasip1's subset in wazero has no ENOSPC: the guest sees EIO,
			// the log says why (usually: the wallet cannot pay).
			d.log.Warn("vm: disk write refused", "op", op, "path", path, "err", err)
		}
		if ee := experimentalsys.UnwrapOSError(e); ee != 0 {
			return ee
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return experimentalsys.EINTR
	}
	d.log.Debug("vm: disk error", "op", op, "path", path, "err", err)
	return experimentalsys.EIO
}

// split checks a guest path and returns its components.
func splitPath(p string) ([]string, experimentalsys.Errno) {
	if len(p) > maxPath {
		return nil, experimentalsys.ENAMETOOLONG
	}
	if strings.IndexByte(p, 0) >= 0 {
		return nil, experimentalsys.EINVAL
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			// wazero resolves ".." before us; one that still arrives
			// would climb out of the preopen.
			return nil, experimentalsys.EPERM
		}
		if len(c) > maxName {
			return nil, experimentalsys.ENAMETOOLONG
		}
		parts = append(parts, c)
	}
	return parts, 0
}

// walk resolves parts from the root, following symlinks in every component
// but the last (and the last too when follow is set).
func (d *disk) walk(parts []string, follow bool) (Attr, experimentalsys.Errno) {
	budget := maxSymlinks
	return d.walkFrom(d.t.Root(), nil, parts, follow, &budget)
}

// walkFrom resolves parts from directory dir, whose ancestors (for
// relative symlink targets with "..") are stack.
func (d *disk) walkFrom(dir uint64, stack []uint64, parts []string, follow bool, budget *int) (Attr, experimentalsys.Errno) {
	cur, err := d.t.GetAttr(dir)
	if err != nil {
		return Attr{}, d.errno("stat", "", err)
	}
	for i, name := range parts {
		if name == ".." {
			if len(stack) > 0 {
				dir, stack = stack[len(stack)-1], stack[:len(stack)-1]
				if cur, err = d.t.GetAttr(dir); err != nil {
					return Attr{}, d.errno("stat", "", err)
				}
			}
			continue
		}
		if cur.Kind != KindDir {
			return Attr{}, experimentalsys.ENOTDIR
		}
		a, err := d.t.Lookup(dir, name)
		if err != nil {
			return Attr{}, d.errno("lookup", name, err)
		}
		last := i == len(parts)-1
		if a.Kind == KindSymlink && (!last || follow) {
			*budget--
			if *budget < 0 {
				return Attr{}, experimentalsys.ELOOP
			}
			target, err := d.t.ReadLink(a.Ino)
			if err != nil {
				return Attr{}, d.errno("readlink", name, err)
			}
			if len(target) > maxPath || strings.IndexByte(target, 0) >= 0 {
				return Attr{}, experimentalsys.EINVAL
			}
			// The guest's "/" is the tree's root: absolute targets stay
			// inside the tree.
			base, bstack := dir, stack
			if strings.HasPrefix(target, "/") {
				base, bstack = d.t.Root(), nil
			}
			var tparts []string
			for _, c := range strings.Split(target, "/") {
				if c != "" && c != "." {
					tparts = append(tparts, c)
				}
			}
			if a, e := d.walkFrom(base, slices.Clip(bstack), tparts, true, budget); e != 0 {
				return Attr{}, e
			} else {
				cur = a
			}
			stack = append(stack, dir)
			dir = cur.Ino
			continue
		}
		stack = append(stack, dir)
		dir, cur = a.Ino, a
	}
	return cur, 0
}

// parent resolves all but the last component (following symlinks) and
// returns the parent directory and the last name.
func (d *disk) parent(p string) (Attr, string, experimentalsys.Errno) {
	parts, e := splitPath(p)
	if e != 0 {
		return Attr{}, "", e
	}
	if len(parts) == 0 {
		return Attr{}, "", experimentalsys.EINVAL // the root has no parent
	}
	dir, e := d.walk(parts[:len(parts)-1], true)
	if e != 0 {
		return Attr{}, "", e
	}
	if dir.Kind != KindDir {
		return Attr{}, "", experimentalsys.ENOTDIR
	}
	return dir, parts[len(parts)-1], 0
}

func (d *disk) stat(p string, follow bool) (Attr, experimentalsys.Errno) {
	parts, e := splitPath(p)
	if e != 0 {
		return Attr{}, e
	}
	return d.walk(parts, follow)
}

func statOf(a Attr) wsys.Stat_t {
	mode := fs.FileMode(a.Mode & 0o777)
	switch a.Kind {
	case KindDir:
		mode |= fs.ModeDir
	case KindSymlink:
		mode |= fs.ModeSymlink
	}
	nl := uint64(a.Nlink)
	if nl == 0 {
		nl = 1
	}
	return wsys.Stat_t{
		Dev: 1, Ino: a.Ino, Mode: mode, Nlink: nl, Size: a.Size,
		Atim: a.Mtime.UnixNano(), Mtim: a.Mtime.UnixNano(), Ctim: a.Ctime.UnixNano(),
	}
}

// Stat implements sys.FS.
func (d *disk) Stat(p string) (wsys.Stat_t, experimentalsys.Errno) {
	a, e := d.stat(p, true)
	if e != 0 {
		return wsys.Stat_t{}, e
	}
	return statOf(a), 0
}

// Lstat implements sys.FS.
func (d *disk) Lstat(p string) (wsys.Stat_t, experimentalsys.Errno) {
	a, e := d.stat(p, false)
	if e != 0 {
		return wsys.Stat_t{}, e
	}
	return statOf(a), 0
}

// OpenFile implements sys.FS.
func (d *disk) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	parts, e := splitPath(p)
	if e != 0 {
		return nil, e
	}
	access := flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY)
	write := access == experimentalsys.O_RDWR || access == experimentalsys.O_WRONLY
	var a Attr
	created := false
	if len(parts) == 0 {
		if a, e = d.walk(nil, true); e != 0 {
			return nil, e
		}
		if flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0 {
			return nil, experimentalsys.EEXIST
		}
	} else {
		dir, name, e := d.parent(p)
		if e != 0 {
			return nil, e
		}
		la, err := d.t.Lookup(dir.Ino, name)
		switch {
		case err == nil:
			if flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0 {
				return nil, experimentalsys.EEXIST
			}
			a = la
			if a.Kind == KindSymlink {
				if flag&experimentalsys.O_NOFOLLOW != 0 {
					return nil, experimentalsys.ELOOP
				}
				if a, e = d.walk(parts, true); e != 0 {
					return nil, e
				}
			}
		case errors.Is(err, syscall.ENOENT) && flag&experimentalsys.O_CREAT != 0:
			if flag&experimentalsys.O_DIRECTORY != 0 {
				return nil, experimentalsys.EINVAL
			}
			ca, err := d.t.Create(dir.Ino, name, KindFile, uint32(perm.Perm()), "")
			if err != nil {
				return nil, d.errno("create", p, err)
			}
			a, created = ca, true
		default:
			return nil, d.errno("open", p, err)
		}
	}
	if flag&experimentalsys.O_DIRECTORY != 0 && a.Kind != KindDir {
		return nil, experimentalsys.ENOTDIR
	}
	if a.Kind == KindDir && write {
		return nil, experimentalsys.EISDIR
	}
	// The guest is the owner: the owner's mode bits apply, as on the
	// mount (default_permissions) for a user other than root; a file
	// this open created is writable whatever its mode (POSIX).
	if a.Kind == KindFile && !created && ((write && a.Mode&0o200 == 0) || (access != experimentalsys.O_WRONLY && a.Mode&0o400 == 0)) {
		return nil, experimentalsys.EACCES
	}
	f := &file{d: d, ino: a.Ino, kind: a.Kind, write: write, read: access != experimentalsys.O_WRONLY,
		append: flag&experimentalsys.O_APPEND != 0, path: p}
	f.seeker.f = f
	if write && flag&experimentalsys.O_TRUNC != 0 && a.Kind == KindFile && a.Size > 0 {
		zero := int64(0)
		if _, err := d.t.SetAttr(a.Ino, SetAttr{Size: &zero}); err != nil {
			return nil, d.errno("truncate", p, err)
		}
		f.dirty = true
	}
	return f, 0
}

// Mkdir implements sys.FS.
func (d *disk) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	dir, name, e := d.parent(p)
	if e != 0 {
		if e == experimentalsys.EINVAL {
			return experimentalsys.EEXIST // mkdir "/"
		}
		return e
	}
	if _, err := d.t.Create(dir.Ino, name, KindDir, uint32(perm.Perm()), ""); err != nil {
		return d.errno("mkdir", p, err)
	}
	return 0
}

// Chmod implements sys.FS.
func (d *disk) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	a, e := d.stat(p, true)
	if e != 0 {
		return e
	}
	m := uint32(perm.Perm())
	if _, err := d.t.SetAttr(a.Ino, SetAttr{Mode: &m}); err != nil {
		return d.errno("chmod", p, err)
	}
	return 0
}

// Rename implements sys.FS.
func (d *disk) Rename(from, to string) experimentalsys.Errno {
	od, on, e := d.parent(from)
	if e != 0 {
		return e
	}
	nd, nn, e := d.parent(to)
	if e != 0 {
		return e
	}
	if err := d.t.Rename(od.Ino, on, nd.Ino, nn, false); err != nil {
		return d.errno("rename", from, err)
	}
	return 0
}

// Rmdir implements sys.FS.
func (d *disk) Rmdir(p string) experimentalsys.Errno {
	dir, name, e := d.parent(p)
	if e != 0 {
		return e
	}
	if err := d.t.Remove(dir.Ino, name, true); err != nil {
		return d.errno("rmdir", p, err)
	}
	return 0
}

// Unlink implements sys.FS.
func (d *disk) Unlink(p string) experimentalsys.Errno {
	dir, name, e := d.parent(p)
	if e != 0 {
		return e
	}
	if err := d.t.Remove(dir.Ino, name, false); err != nil {
		return d.errno("unlink", p, err)
	}
	return 0
}

// Link implements sys.FS: the tree has no hard links (a node has exactly
// one parent).
func (d *disk) Link(string, string) experimentalsys.Errno { return experimentalsys.ENOSYS }

// Symlink implements sys.FS.
func (d *disk) Symlink(oldPath, linkName string) experimentalsys.Errno {
	if oldPath == "" || len(oldPath) > maxPath || strings.IndexByte(oldPath, 0) >= 0 {
		return experimentalsys.EINVAL
	}
	dir, name, e := d.parent(linkName)
	if e != 0 {
		return e
	}
	if _, err := d.t.Create(dir.Ino, name, KindSymlink, 0o777, oldPath); err != nil {
		return d.errno("symlink", linkName, err)
	}
	return 0
}

// Readlink implements sys.FS.
func (d *disk) Readlink(p string) (string, experimentalsys.Errno) {
	a, e := d.stat(p, false)
	if e != 0 {
		return "", e
	}
	if a.Kind != KindSymlink {
		return "", experimentalsys.EINVAL
	}
	t, err := d.t.ReadLink(a.Ino)
	if err != nil {
		return "", d.errno("readlink", p, err)
	}
	return t, 0
}

// Utimens implements sys.FS.
func (d *disk) Utimens(p string, _, mtim int64) experimentalsys.Errno {
	a, e := d.stat(p, true)
	if e != 0 {
		return e
	}
	return d.utimens(a.Ino, mtim)
}

func (d *disk) utimens(ino uint64, mtim int64) experimentalsys.Errno {
	if mtim == experimentalsys.UTIME_OMIT {
		return 0
	}
	t := time.Unix(0, mtim)
	if _, err := d.t.SetAttr(ino, SetAttr{Mtime: &t}); err != nil {
		return d.errno("utimens", "", err)
	}
	return 0
}

// file is an open file or directory of the disk.
type file struct {
	seeker[int64]
	d           *disk
	path        string
	ino         uint64
	kind        Kind
	read, write bool
	append      bool

	mu     sync.Mutex
	off    int64
	dirty  bool // written: flush on close
	closed bool
	// dirents is a directory's listing, read on the first Readdir.
	dirents []experimentalsys.Dirent
	listed  bool
}

func (f *file) Ino() (wsys.Inode, experimentalsys.Errno) { return f.ino, 0 }
func (f *file) Dev() (uint64, experimentalsys.Errno)     { return 1, 0 }
func (f *file) IsDir() (bool, experimentalsys.Errno)     { return f.kind == KindDir, 0 }
func (f *file) IsAppend() bool                           { return f.append }

func (f *file) SetAppend(on bool) experimentalsys.Errno {
	if f.kind == KindDir {
		return experimentalsys.EISDIR
	}
	f.append = on
	return 0
}

func (f *file) Stat() (wsys.Stat_t, experimentalsys.Errno) {
	a, err := f.d.t.GetAttr(f.ino)
	if err != nil {
		return wsys.Stat_t{}, f.d.errno("fstat", f.path, err)
	}
	return statOf(a), 0
}

func (f *file) Read(buf []byte) (int, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, e := f.pread(buf, f.off)
	f.off += int64(n)
	return n, e
}

func (f *file) Pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pread(buf, off)
}

func (f *file) pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	switch {
	case f.closed:
		return 0, experimentalsys.EBADF
	case f.kind == KindDir:
		return 0, experimentalsys.EISDIR
	case !f.read:
		return 0, experimentalsys.EBADF
	case off < 0:
		return 0, experimentalsys.EINVAL
	}
	n, err := f.d.t.Read(f.ino, off, buf)
	if err != nil {
		return n, f.d.errno("read", f.path, err)
	}
	return n, 0
}

// seeker carries file's Seek. sys.File's Seek returns an Errno where
// io.Seeker returns an error, which go vet's stdmethods check reports on a
// plain method; a method of a generic type is not checked.
type seeker[T ~int64] struct{ f *file }

func (s seeker[T]) Seek(offset T, whence int) (T, experimentalsys.Errno) {
	n, e := s.f.seekTo(int64(offset), whence)
	return T(n), e
}

var _ experimentalsys.File = (*file)(nil)

func (f *file) seekTo(offset int64, whence int) (int64, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	if f.kind == KindDir {
		if offset != 0 || whence != io.SeekStart {
			return 0, experimentalsys.EINVAL
		}
		f.listed, f.dirents = false, nil
		return 0, 0
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.off
	case io.SeekEnd:
		a, err := f.d.t.GetAttr(f.ino)
		if err != nil {
			return 0, f.d.errno("seek", f.path, err)
		}
		base = a.Size
	default:
		return 0, experimentalsys.EINVAL
	}
	n := base + offset
	if n < 0 || (offset > 0 && n < base) {
		return 0, experimentalsys.EINVAL
	}
	f.off = n
	return n, 0
}

func (f *file) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.kind != KindDir {
		return nil, experimentalsys.EBADF
	}
	if !f.listed {
		ents, err := f.d.t.ReadDir(f.ino)
		if err != nil {
			return nil, f.d.errno("readdir", f.path, err)
		}
		f.dirents = make([]experimentalsys.Dirent, 0, len(ents))
		for _, e := range ents {
			var typ fs.FileMode
			switch e.Kind {
			case KindDir:
				typ = fs.ModeDir
			case KindSymlink:
				typ = fs.ModeSymlink
			}
			f.dirents = append(f.dirents, experimentalsys.Dirent{Name: e.Name, Ino: e.Ino, Type: typ})
		}
		f.listed = true
	}
	if n <= 0 || n > len(f.dirents) {
		n = len(f.dirents)
	}
	out := f.dirents[:n:n]
	f.dirents = f.dirents[n:]
	return out, 0
}

func (f *file) Write(buf []byte) (int, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.append && f.kind == KindFile {
		a, err := f.d.t.GetAttr(f.ino)
		if err != nil {
			return 0, f.d.errno("write", f.path, err)
		}
		f.off = a.Size
	}
	n, e := f.pwrite(buf, f.off)
	f.off += int64(n)
	return n, e
}

func (f *file) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pwrite(buf, off)
}

func (f *file) pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	switch {
	case f.closed:
		return 0, experimentalsys.EBADF
	case f.kind == KindDir:
		return 0, experimentalsys.EISDIR
	case !f.write:
		return 0, experimentalsys.EBADF
	case off < 0:
		return 0, experimentalsys.EINVAL
	}
	if len(buf) == 0 {
		return 0, 0
	}
	n, err := f.d.t.Write(f.ino, off, buf)
	if n > 0 {
		f.dirty = true
	}
	if err != nil {
		return n, f.d.errno("write", f.path, err)
	}
	return n, 0
}

func (f *file) Truncate(size int64) experimentalsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return experimentalsys.EBADF
	case f.kind == KindDir:
		return experimentalsys.EISDIR
	case !f.write:
		return experimentalsys.EBADF
	case size < 0:
		return experimentalsys.EINVAL
	}
	if _, err := f.d.t.SetAttr(f.ino, SetAttr{Size: &size}); err != nil {
		return f.d.errno("truncate", f.path, err)
	}
	f.dirty = true
	return 0
}

// Sync is fsync(2): it waits for the commit.
func (f *file) Sync() experimentalsys.Errno {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return experimentalsys.EBADF
	}
	if err := f.d.t.Sync(f.d.ctx, f.ino); err != nil {
		return f.d.errno("fsync", f.path, err)
	}
	return 0
}

func (f *file) Datasync() experimentalsys.Errno { return f.Sync() }

func (f *file) Utimens(_, mtim int64) experimentalsys.Errno {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return experimentalsys.EBADF
	}
	return f.d.utimens(f.ino, mtim)
}

// Close flushes a written file: its changes become a commit like any
// other close on the mount.
func (f *file) Close() experimentalsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0
	}
	f.closed = true
	if f.dirty {
		if err := f.d.t.Flush(f.ino); err != nil {
			return f.d.errno("close", f.path, err)
		}
	}
	return 0
}
