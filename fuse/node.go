package fuse

// The adapter is built on go-fuse's fs package (InodeEmbedder nodes), not on
// its raw protocol API. The fs package already does the parts that are easy
// to get subtly wrong and have nothing to do with our tree: kernel lookup
// counting and FORGET, node IDs with generations, open-file handles,
// directory offsets and seekdir, READDIRPLUS, interrupted readdirs, and
// rename bookkeeping. Its cost per request is a few map lookups and mutexes,
// small next to a context switch: over memfs the mount lists 5,000 files
// (ls -lR) in about 0.06 s and moves 128 KiB requests at 1.8-4 GiB/s, so the
// raw API would buy no measurable speed for a lot of duplicated code.
// Nodes carry only the FS's inode number (StableAttr.Ino) and small cache
// state, never paths, so a rename elsewhere cannot leave them stale.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// blockSize is reported as st_blksize: programs that size their buffers by it
// (cp, stdio) then move data in the large requests the mount is tuned for.
const blockSize = 128 << 10

// virtualInoBase is the first inode number the adapter uses for its own
// nodes (the .history view); FS numbers must stay below it.
const virtualInoBase = 1 << 63

// adapter is what all nodes of one mount share.
type adapter struct {
	fsys     FS
	log      *slog.Logger
	ro       bool
	uid, gid uint32
	virt     virtInos
}

func (a *adapter) errno(ctx context.Context, op string, ino uint64, err error) syscall.Errno {
	return errno(ctx, a.log, op, ino, err)
}

func kindMode(k Kind) (uint32, bool) {
	switch k {
	case KindFile:
		return syscall.S_IFREG, true
	case KindDir:
		return syscall.S_IFDIR, true
	case KindSymlink:
		return syscall.S_IFLNK, true
	}
	return 0, false
}

// checkAttr rejects attributes the kernel must never see: a zero or
// adapter-range inode number, or an unknown kind. Either is an FS bug.
func (a *adapter) checkAttr(op string, at *Attr) syscall.Errno {
	if _, ok := kindMode(at.Kind); !ok || at.Ino == 0 || at.Ino >= virtualInoBase {
		a.log.Error("fuse: FS returned invalid attributes", "op", op, "ino", at.Ino, "kind", at.Kind)
		return syscall.EIO
	}
	return 0
}

func setTimes(out *gofuse.Attr, mtime, ctime time.Time) {
	m, c := unixTime(mtime), unixTime(ctime)
	// No atime is kept: showing mtime keeps `ls -lu` sensible and reads
	// free of writes.
	out.Atime, out.Atimensec = m.sec, m.nsec
	out.Mtime, out.Mtimensec = m.sec, m.nsec
	out.Ctime, out.Ctimensec = c.sec, c.nsec
}

type ts struct {
	sec  uint64
	nsec uint32
}

func unixTime(t time.Time) ts {
	if t.IsZero() {
		return ts{}
	}
	// The kernel reads the seconds as signed, so times before 1970 survive
	// the conversion.
	return ts{uint64(t.Unix()), uint32(t.Nanosecond())}
}

func (a *adapter) fill(at *Attr, out *gofuse.Attr) {
	mode, _ := kindMode(at.Kind)
	size := at.Size
	if size < 0 {
		size = 0
	}
	out.Ino = at.Ino
	out.Size = uint64(size)
	out.Mode = mode | at.Mode&07777
	out.Nlink = at.Nlink
	setTimes(out, at.Mtime, at.Ctime)
	out.Uid, out.Gid = a.uid, a.gid
	out.Blksize = blockSize
	out.Blocks = (uint64(size) + 511) / 512
}

// newChild makes (or finds, go-fuse dedups by inode number) the kernel-facing
// node for at below parent and fills the entry reply.
func (a *adapter) newChild(ctx context.Context, op string, parent *gofs.Inode, at Attr, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := a.checkAttr(op, &at); e != 0 {
		return nil, e
	}
	a.fill(&at, &out.Attr)
	mode, _ := kindMode(at.Kind)
	return parent.NewInode(ctx, &node{a: a}, gofs.StableAttr{Mode: mode, Ino: at.Ino}), 0
}

// node is a file, directory or symlink of the tree.
type node struct {
	gofs.Inode
	a *adapter

	// dirty is set by anything that changes content through this mount and
	// cleared by the Flush or Fsync that hands the change to the FS.
	dirty atomic.Bool
	// opens counts open file handles. A truncate with none open (truncate(2)
	// on a path) is flushed at once, as no close will follow; one with a
	// handle open (O_TRUNC, ftruncate) is flushed when the handle closes,
	// together with what is written next.
	opens atomic.Int32

	// The size and mtime the kernel's page cache was last known to match:
	// an open that finds them unchanged keeps the cache (FOPEN_KEEP_CACHE).
	mu         sync.Mutex
	cacheValid bool
	cacheSize  int64
	cacheMtime time.Time
}

var (
	_ gofs.NodeLookuper      = (*node)(nil)
	_ gofs.NodeGetattrer     = (*node)(nil)
	_ gofs.NodeSetattrer     = (*node)(nil)
	_ gofs.NodeReaddirer     = (*node)(nil)
	_ gofs.NodeMkdirer       = (*node)(nil)
	_ gofs.NodeMknoder       = (*node)(nil)
	_ gofs.NodeCreater       = (*node)(nil)
	_ gofs.NodeSymlinker     = (*node)(nil)
	_ gofs.NodeReadlinker    = (*node)(nil)
	_ gofs.NodeUnlinker      = (*node)(nil)
	_ gofs.NodeRmdirer       = (*node)(nil)
	_ gofs.NodeRenamer       = (*node)(nil)
	_ gofs.NodeLinker        = (*node)(nil)
	_ gofs.NodeOpener        = (*node)(nil)
	_ gofs.NodeReader        = (*node)(nil)
	_ gofs.NodeWriter        = (*node)(nil)
	_ gofs.NodeFlusher       = (*node)(nil)
	_ gofs.NodeFsyncer       = (*node)(nil)
	_ gofs.NodeReleaser      = (*node)(nil)
	_ gofs.NodeAllocater     = (*node)(nil)
	_ gofs.NodeGetxattrer    = (*node)(nil)
	_ gofs.NodeSetxattrer    = (*node)(nil)
	_ gofs.NodeListxattrer   = (*node)(nil)
	_ gofs.NodeRemovexattrer = (*node)(nil)
	_ gofs.NodeStatfser      = (*node)(nil)
	_ gofs.NodeOnForgetter   = (*node)(nil)
)

func (n *node) ino() uint64 { return n.StableAttr().Ino }

// reserved reports whether name is the history view's entry in the root,
// which no mutation may touch.
func (n *node) reserved(name string) bool { return name == HistoryDir && n.IsRoot() }

// creatable checks a name about to be created here.
func (n *node) creatable(name string) syscall.Errno {
	switch {
	case n.a.ro:
		return syscall.EROFS
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	case n.reserved(name):
		return syscall.EEXIST
	}
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.reserved(name) {
		return n.a.historyRoot(ctx, &n.Inode, out)
	}
	if len(name) > MaxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	at, err := n.a.fsys.Lookup(ctx, n.ino(), name)
	if err != nil {
		return nil, n.a.errno(ctx, "lookup", n.ino(), err)
	}
	return n.a.newChild(ctx, "lookup", &n.Inode, at, out)
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	at, err := n.a.fsys.GetAttr(ctx, n.ino())
	if err != nil {
		return n.a.errno(ctx, "getattr", n.ino(), err)
	}
	n.a.fill(&at, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	if n.a.ro {
		return syscall.EROFS
	}
	// Ownership is not stored: a chown to the owner everyone sees is a
	// no-op, any other is refused like on a filesystem without owners.
	if uid, ok := in.GetUID(); ok && uid != n.a.uid {
		return syscall.EPERM
	}
	if gid, ok := in.GetGID(); ok && gid != n.a.gid {
		return syscall.EPERM
	}
	var sin SetAttrIn
	if m, ok := in.GetMode(); ok {
		sin.Mode = &m
	}
	if in.Valid&gofuse.FATTR_KILL_SUIDGID != 0 && sin.Mode == nil {
		// A write or truncate by a process without CAP_FSETID.
		if e := n.killPriv(ctx); e != 0 {
			return e
		}
	}
	if mt, ok := in.GetMTime(); ok {
		sin.Mtime = &mt
	}
	resize := false
	if sz, ok := in.GetSize(); ok {
		if sz > 1<<62 {
			return syscall.EFBIG
		}
		s := int64(sz)
		sin.Size = &s
		resize = true
	}
	var at Attr
	var err error
	if sin.Mode == nil && sin.Size == nil && sin.Mtime == nil {
		// atime or ctime only: nothing we keep, report the attributes.
		at, err = n.a.fsys.GetAttr(ctx, n.ino())
	} else {
		if resize {
			n.dirty.Store(true)
		}
		at, err = n.a.fsys.SetAttr(ctx, n.ino(), sin)
	}
	if err != nil {
		return n.a.errno(ctx, "setattr", n.ino(), err)
	}
	if resize && f == nil && n.opens.Load() == 0 {
		if e := n.flushIfDirty(ctx); e != 0 {
			return e
		}
	}
	n.a.fill(&at, &out.Attr)
	return 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := n.a.fsys.ReadDir(ctx, n.ino())
	if err != nil {
		return nil, n.a.errno(ctx, "readdir", n.ino(), err)
	}
	root := n.IsRoot()
	list := make([]gofuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		mode, ok := kindMode(e.Kind)
		if !ok || e.Ino == 0 || e.Ino >= virtualInoBase || e.Name == "" || len(e.Name) > MaxNameLen {
			n.a.log.Error("fuse: FS listed an invalid entry", "dir", n.ino(), "name", e.Name, "ino", e.Ino, "kind", e.Kind)
			continue
		}
		if root && e.Name == HistoryDir {
			continue // shadowed by the history view
		}
		list = append(list, gofuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: mode})
	}
	return gofs.NewListDirStream(list), 0
}

func (n *node) create(ctx context.Context, op, name string, kind Kind, mode uint32, target string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.creatable(name); e != 0 {
		return nil, e
	}
	at, err := n.a.fsys.Create(ctx, n.ino(), name, kind, mode&07777, target)
	if err != nil {
		return nil, n.a.errno(ctx, op, n.ino(), err)
	}
	if at.Kind != kind {
		n.a.log.Error("fuse: FS created a node of the wrong kind", "op", op, "want", kind, "got", at.Kind)
		return nil, syscall.EIO
	}
	return n.a.newChild(ctx, op, &n.Inode, at, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, "mkdir", name, KindDir, mode, "", out)
}

// Mknod makes regular files only: the tree has no device nodes, FIFOs or
// sockets, and EPERM is what Linux filesystems without them answer.
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if t := mode & syscall.S_IFMT; t != 0 && t != syscall.S_IFREG {
		if n.a.ro {
			return nil, syscall.EROFS
		}
		return nil, syscall.EPERM
	}
	ch, e := n.create(ctx, "mknod", name, KindFile, mode, "", out)
	if e == 0 {
		// No handle is opened, so no close will flush the creation.
		if err := n.a.fsys.Flush(ctx, ch.StableAttr().Ino); err != nil {
			n.a.errno(ctx, "mknod flush", ch.StableAttr().Ino, err)
		}
	}
	return ch, e
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ch, e := n.create(ctx, "create", name, KindFile, mode, "", out)
	if e != 0 {
		return nil, nil, 0, e
	}
	if cn, ok := ch.Operations().(*node); ok {
		// A new file gets its Flush at close even if nothing is written,
		// so the creation is handed on like any other change.
		cn.dirty.Store(true)
		cn.opens.Add(1)
		cn.mu.Lock()
		cn.cacheValid = false
		cn.mu.Unlock()
	}
	return ch, &handle{}, 0, 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, "symlink", name, KindSymlink, 0777, target, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := n.a.fsys.ReadLink(ctx, n.ino())
	if err != nil {
		return nil, n.a.errno(ctx, "readlink", n.ino(), err)
	}
	return []byte(s), 0
}

func (n *node) remove(ctx context.Context, op, name string, isDir bool) syscall.Errno {
	switch {
	case n.a.ro:
		return syscall.EROFS
	case n.reserved(name):
		return syscall.EPERM
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	}
	return n.a.errno(ctx, op, n.ino(), n.a.fsys.Remove(ctx, n.ino(), name, isDir))
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, "unlink", name, false)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, "rmdir", name, true)
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	// RENAME_EXCHANGE and RENAME_WHITEOUT are not offered: EINVAL is what
	// rename(2) answers for flags a filesystem does not support.
	if flags&^uint32(unix.RENAME_NOREPLACE) != 0 {
		return syscall.EINVAL
	}
	if n.a.ro {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EROFS // into the history view
	}
	if n.reserved(name) || np.reserved(newName) {
		return syscall.EPERM
	}
	if len(name) > MaxNameLen || len(newName) > MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	err := n.a.fsys.Rename(ctx, n.ino(), name, np.ino(), newName, flags&unix.RENAME_NOREPLACE != 0)
	return n.a.errno(ctx, "rename", n.ino(), err)
}

// Link refuses hard links: a node has exactly one parent. EPERM is what
// link(2) documents for a filesystem that does not support them.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.a.ro {
		return nil, syscall.EROFS
	}
	return nil, syscall.EPERM
}

// handle is an open file. The node does the work; the handle exists so
// go-fuse tracks opens (fstat on an unlinked file finds its node), and
// remembers whether the file had set-ID bits a write must clear.
type handle struct {
	killPriv atomic.Bool
}

// privBits are the mode bits that a write or truncate by a process without
// CAP_FSETID clears: set-user-ID, and set-group-ID if group-executable.
func privBits(mode uint32) uint32 {
	bits := mode & syscall.S_ISUID
	if mode&(syscall.S_ISGID|syscall.S_IXGRP) == syscall.S_ISGID|syscall.S_IXGRP {
		bits |= syscall.S_ISGID
	}
	return bits
}

// privileged approximates CAP_FSETID, which lets a writer keep set-ID
// bits: the caller is root.
func privileged(ctx context.Context) bool {
	c, ok := gofuse.FromContext(ctx)
	return ok && c.Uid == 0
}

// killPriv clears the set-ID bits, as Linux does when a process without
// CAP_FSETID writes or truncates a file. The mount takes this job from the
// kernel (HANDLE_KILLPRIV_V2) because the kernel then checks for file
// capabilities once per inode instead of with a GETXATTR on every write.
// The kernel flags such a truncate with FATTR_KILL_SUIDGID, which Setattr
// sees; it flags such a write too, but go-fuse does not pass write flags on,
// so Write decides from the mode seen at open and the caller.
func (n *node) killPriv(ctx context.Context) syscall.Errno {
	at, err := n.a.fsys.GetAttr(ctx, n.ino())
	if err != nil {
		return n.a.errno(ctx, "kill suid", n.ino(), err)
	}
	if bits := privBits(at.Mode); bits != 0 {
		m := at.Mode &^ bits
		if _, err := n.a.fsys.SetAttr(ctx, n.ino(), SetAttrIn{Mode: &m}); err != nil {
			return n.a.errno(ctx, "kill suid", n.ino(), err)
		}
	}
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY && n.a.ro {
		return nil, 0, syscall.EROFS
	}
	at, err := n.a.fsys.GetAttr(ctx, n.ino())
	if err != nil {
		return nil, 0, n.a.errno(ctx, "open", n.ino(), err)
	}
	var fuseFlags uint32
	n.mu.Lock()
	if n.cacheValid && at.Size == n.cacheSize && at.Mtime.Equal(n.cacheMtime) {
		fuseFlags = gofuse.FOPEN_KEEP_CACHE
	}
	n.cacheValid, n.cacheSize, n.cacheMtime = true, at.Size, at.Mtime
	n.mu.Unlock()
	n.opens.Add(1)
	h := &handle{}
	h.killPriv.Store(privBits(at.Mode) != 0)
	return h, fuseFlags, 0
}

func (n *node) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	cnt, err := n.a.fsys.Read(ctx, n.ino(), off, dest)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, n.a.errno(ctx, "read", n.ino(), err)
	}
	if cnt < 0 || cnt > len(dest) {
		n.a.log.Error("fuse: FS read returned a bad count", "ino", n.ino(), "n", cnt, "want", len(dest))
		return nil, syscall.EIO
	}
	return gofuse.ReadResultData(dest[:cnt]), 0
}

func (n *node) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.a.ro {
		return 0, syscall.EROFS
	}
	if h, ok := f.(*handle); ok && h.killPriv.Load() && !privileged(ctx) {
		if e := n.killPriv(ctx); e != 0 {
			return 0, e
		}
		h.killPriv.Store(false)
	}
	n.dirty.Store(true)
	cnt, err := n.a.fsys.Write(ctx, n.ino(), off, data)
	if err != nil {
		return 0, n.a.errno(ctx, "write", n.ino(), err)
	}
	if cnt < 0 || cnt > len(data) {
		n.a.log.Error("fuse: FS write returned a bad count", "ino", n.ino(), "n", cnt, "want", len(data))
		return 0, syscall.EIO
	}
	return uint32(cnt), 0
}

// flushIfDirty hands staged changes to the FS (which schedules a commit)
// and records the resulting size and mtime as what the page cache holds:
// our own writes went through it.
func (n *node) flushIfDirty(ctx context.Context) syscall.Errno {
	if !n.dirty.Swap(false) {
		return 0
	}
	if err := n.a.fsys.Flush(ctx, n.ino()); err != nil {
		n.dirty.Store(true) // let the release try again
		return n.a.errno(ctx, "flush", n.ino(), err)
	}
	if at, err := n.a.fsys.GetAttr(ctx, n.ino()); err == nil {
		n.mu.Lock()
		n.cacheValid, n.cacheSize, n.cacheMtime = true, at.Size, at.Mtime
		n.mu.Unlock()
	}
	return 0
}

// Flush is close(2) of one descriptor. Read-only descriptors of an
// unchanged file cost nothing.
func (n *node) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return n.flushIfDirty(ctx)
}

func (n *node) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if n.a.ro {
		return 0 // nothing can have changed through this mount
	}
	n.dirty.Store(false)
	if err := n.a.fsys.Fsync(ctx, n.ino()); err != nil {
		n.dirty.Store(true)
		return n.a.errno(ctx, "fsync", n.ino(), err)
	}
	return 0
}

func (n *node) Release(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	n.opens.Add(-1)
	// Changes made through a mapping reach us after close(2); hand them on.
	if e := n.flushIfDirty(ctx); e != 0 {
		n.a.log.Warn("fuse: flush at release failed", "ino", n.ino(), "err", e)
	}
	return 0
}

// Allocate supports plain fallocate (extend the size; space is not
// reserved, as on other copy-on-write stores) and FALLOC_FL_KEEP_SIZE (a
// no-op). Punching holes and the other modes are EOPNOTSUPP.
func (n *node) Allocate(ctx context.Context, f gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if n.a.ro {
		return syscall.EROFS
	}
	end := off + size
	if end < off || end > 1<<62 {
		return syscall.EFBIG
	}
	switch mode {
	case 0:
	case unix.FALLOC_FL_KEEP_SIZE:
		return 0
	default:
		return syscall.EOPNOTSUPP
	}
	at, err := n.a.fsys.GetAttr(ctx, n.ino())
	if err != nil {
		return n.a.errno(ctx, "fallocate", n.ino(), err)
	}
	if int64(end) <= at.Size {
		return 0
	}
	sz := int64(end)
	n.dirty.Store(true)
	_, err = n.a.fsys.SetAttr(ctx, n.ino(), SetAttrIn{Size: &sz})
	return n.a.errno(ctx, "fallocate", n.ino(), err)
}

// Only the user namespace is stored. The others (security, trusted,
// system) are answered like a filesystem without handlers for them:
// EOPNOTSUPP, which the kernel and tools treat as "no such attributes".
func userXattr(name string) bool {
	return len(name) > len("user.") && name[:len("user.")] == "user."
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !userXattr(attr) {
		return 0, syscall.EOPNOTSUPP
	}
	v, err := n.a.fsys.GetXattr(ctx, n.ino(), attr)
	if err != nil {
		return 0, n.a.errno(ctx, "getxattr", n.ino(), err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.a.ro {
		return syscall.EROFS
	}
	if !userXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	if flags&^uint32(unix.XATTR_CREATE|unix.XATTR_REPLACE) != 0 {
		return syscall.EINVAL
	}
	err := n.a.fsys.SetXattr(ctx, n.ino(), attr, data, flags)
	return n.a.errno(ctx, "setxattr", n.ino(), err)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.a.fsys.ListXattr(ctx, n.ino())
	if err != nil {
		return 0, n.a.errno(ctx, "listxattr", n.ino(), err)
	}
	size := 0
	for _, nm := range names {
		if userXattr(nm) {
			size += len(nm) + 1
		}
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, nm := range names {
		if userXattr(nm) {
			off += copy(dest[off:], nm)
			dest[off] = 0
			off++
		}
	}
	return uint32(size), 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.a.ro {
		return syscall.EROFS
	}
	if !userXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	return n.a.errno(ctx, "removexattr", n.ino(), n.a.fsys.RemoveXattr(ctx, n.ino(), attr))
}

func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	return n.a.statfs(ctx, out)
}

func (a *adapter) statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	st, err := a.fsys.StatFS(ctx)
	if err != nil {
		return a.errno(ctx, "statfs", 0, err)
	}
	out.Bsize = st.BlockSize
	out.Frsize = st.BlockSize
	out.Blocks = st.Blocks
	out.Bfree = st.BlocksFree
	out.Bavail = st.BlocksAvail
	out.Files = st.Files
	out.Ffree = st.FilesFree
	out.NameLen = st.NameLen
	if out.NameLen == 0 || out.NameLen > MaxNameLen {
		out.NameLen = MaxNameLen
	}
	return 0
}

func (n *node) OnForget() {
	n.a.fsys.Forget(n.ino())
}
