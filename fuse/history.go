package fuse

// The history view: <mount>/.history mirrors the tree read-only. A directory
// of the tree is a directory there; a file or symlink is a directory whose
// entries are its revisions, named 1, 2, ..., each a read-only file holding
// that revision's content (a symlink's revision holds its target). The entry
// is left out of the root's listing, like NetApp's .snapshot, so `ls -a`,
// find and backups of the mount do not descend into every old version, but
// it can be looked up by name.

import (
	"context"
	"strconv"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// HistoryDir is the name of the history view in the mount's root. The name
// is reserved there: the tree's own entry of that name, if any, is hidden.
const HistoryDir = ".history"

// Kinds of virtual nodes, for their inode numbers.
const (
	virtHistDir uint8 = iota + 1 // mirror of a tree directory
	virtRevDir                   // revisions of a file or symlink
	virtRevFile                  // one revision
)

type virtKey struct {
	kind uint8
	ino  uint64
	rev  int
}

// virtInos hands out stable inode numbers, from virtualInoBase up, to the
// nodes of the history view, so `ls -i`, find and du see one number per
// node for the life of the mount.
type virtInos struct {
	mu   sync.Mutex
	m    map[virtKey]uint64
	next uint64
}

func (v *virtInos) get(k virtKey) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ino, ok := v.m[k]; ok {
		return ino
	}
	if v.m == nil {
		v.m = make(map[virtKey]uint64)
		v.next = virtualInoBase
	}
	ino := v.next
	v.next++
	if v.next == ^uint64(0) { // reserved by go-fuse; never reached in practice
		v.next = virtualInoBase
	}
	v.m[k] = ino
	return ino
}

// fillVirt fills attributes of a history node: read-only for everyone who
// may see the mount, owned by the mounting user.
func (a *adapter) fillVirt(out *gofuse.Attr, ino uint64, mode uint32, size int64, mtime, ctime time.Time) {
	out.Ino = ino
	out.Mode = mode
	out.Size = uint64(max(size, 0))
	out.Nlink = 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		out.Nlink = 2
	}
	setTimes(out, mtime, ctime)
	out.Uid, out.Gid = a.uid, a.gid
	out.Blksize = blockSize
	out.Blocks = (out.Size + 511) / 512
}

// historyRoot answers the lookup of .history in the root.
func (a *adapter) historyRoot(ctx context.Context, root *gofs.Inode, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	rootIno := a.fsys.Root()
	at, err := a.fsys.GetAttr(ctx, rootIno)
	if err != nil {
		return nil, a.errno(ctx, "lookup .history", rootIno, err)
	}
	return a.newVirtChild(ctx, root, &at, out)
}

// newVirtChild makes the history node that mirrors the tree node at.
func (a *adapter) newVirtChild(ctx context.Context, parent *gofs.Inode, at *Attr, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := a.checkAttr("history lookup", at); e != 0 {
		return nil, e
	}
	var ops gofs.InodeEmbedder
	var ino uint64
	if at.Kind == KindDir {
		ino = a.virt.get(virtKey{kind: virtHistDir, ino: at.Ino})
		ops = &histDir{virtNode: virtNode{a: a}, target: at.Ino}
	} else {
		ino = a.virt.get(virtKey{kind: virtRevDir, ino: at.Ino})
		ops = &revDir{virtNode: virtNode{a: a}, target: at.Ino}
	}
	a.fillVirt(&out.Attr, ino, syscall.S_IFDIR|0555, 0, at.Mtime, at.Ctime)
	return parent.NewInode(ctx, ops, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), 0
}

// virtNode gives the history nodes their read-only behaviour: every
// mutation is EROFS, whatever the mount's options.
type virtNode struct {
	gofs.Inode
	a *adapter
}

var (
	_ gofs.NodeSetattrer     = (*virtNode)(nil)
	_ gofs.NodeMkdirer       = (*virtNode)(nil)
	_ gofs.NodeMknoder       = (*virtNode)(nil)
	_ gofs.NodeCreater       = (*virtNode)(nil)
	_ gofs.NodeSymlinker     = (*virtNode)(nil)
	_ gofs.NodeUnlinker      = (*virtNode)(nil)
	_ gofs.NodeRmdirer       = (*virtNode)(nil)
	_ gofs.NodeRenamer       = (*virtNode)(nil)
	_ gofs.NodeLinker        = (*virtNode)(nil)
	_ gofs.NodeSetxattrer    = (*virtNode)(nil)
	_ gofs.NodeRemovexattrer = (*virtNode)(nil)
	_ gofs.NodeAllocater     = (*virtNode)(nil)
	_ gofs.NodeStatfser      = (*virtNode)(nil)
)

func (v *virtNode) Setattr(ctx context.Context, f gofs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (v *virtNode) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (v *virtNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (v *virtNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (v *virtNode) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (v *virtNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }
func (v *virtNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EROFS }
func (v *virtNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}
func (v *virtNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (v *virtNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}
func (v *virtNode) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.EROFS }
func (v *virtNode) Allocate(ctx context.Context, f gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	return syscall.EROFS
}
func (v *virtNode) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	return v.a.statfs(ctx, out)
}

// histDir mirrors the tree directory target.
type histDir struct {
	virtNode
	target uint64
}

var (
	_ gofs.NodeGetattrer = (*histDir)(nil)
	_ gofs.NodeLookuper  = (*histDir)(nil)
	_ gofs.NodeReaddirer = (*histDir)(nil)
)

func (d *histDir) Getattr(ctx context.Context, f gofs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	at, err := d.a.fsys.GetAttr(ctx, d.target)
	if err != nil {
		return d.a.errno(ctx, "history getattr", d.target, err)
	}
	d.a.fillVirt(&out.Attr, d.StableAttr().Ino, syscall.S_IFDIR|0555, 0, at.Mtime, at.Ctime)
	return 0
}

func (d *histDir) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(name) > MaxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	at, err := d.a.fsys.Lookup(ctx, d.target, name)
	if err != nil {
		return nil, d.a.errno(ctx, "history lookup", d.target, err)
	}
	return d.a.newVirtChild(ctx, &d.Inode, &at, out)
}

func (d *histDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := d.a.fsys.ReadDir(ctx, d.target)
	if err != nil {
		return nil, d.a.errno(ctx, "history readdir", d.target, err)
	}
	list := make([]gofuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if _, ok := kindMode(e.Kind); !ok || e.Ino == 0 || e.Ino >= virtualInoBase || e.Name == "" {
			continue // logged by the live tree's listing
		}
		if d.target == d.a.fsys.Root() && e.Name == HistoryDir {
			continue
		}
		k := virtRevDir
		if e.Kind == KindDir {
			k = virtHistDir
		}
		list = append(list, gofuse.DirEntry{
			Name: e.Name,
			Ino:  d.a.virt.get(virtKey{kind: k, ino: e.Ino}),
			Mode: syscall.S_IFDIR,
		})
	}
	return gofs.NewListDirStream(list), 0
}

// revDir lists the revisions of the file or symlink target.
type revDir struct {
	virtNode
	target uint64
}

var (
	_ gofs.NodeGetattrer = (*revDir)(nil)
	_ gofs.NodeLookuper  = (*revDir)(nil)
	_ gofs.NodeReaddirer = (*revDir)(nil)
)

func (d *revDir) Getattr(ctx context.Context, f gofs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	at, err := d.a.fsys.GetAttr(ctx, d.target)
	if err != nil {
		return d.a.errno(ctx, "history getattr", d.target, err)
	}
	d.a.fillVirt(&out.Attr, d.StableAttr().Ino, syscall.S_IFDIR|0555, 0, at.Mtime, at.Ctime)
	return 0
}

func (d *revDir) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	rev, err := strconv.Atoi(name)
	if err != nil || rev < 1 || strconv.Itoa(rev) != name {
		return nil, syscall.ENOENT // "01", "+1", "x" name no revision
	}
	revs, err := d.a.fsys.History(ctx, d.target)
	if err != nil {
		return nil, d.a.errno(ctx, "history", d.target, err)
	}
	for _, r := range revs {
		if r.Rev == rev {
			ino := d.a.virt.get(virtKey{kind: virtRevFile, ino: d.target, rev: rev})
			d.a.fillVirt(&out.Attr, ino, syscall.S_IFREG|0444, r.Size, r.Time, r.Time)
			f := &revFile{virtNode: virtNode{a: d.a}, target: d.target, rev: r}
			return d.NewInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), 0
		}
	}
	return nil, syscall.ENOENT
}

func (d *revDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	revs, err := d.a.fsys.History(ctx, d.target)
	if err != nil {
		return nil, d.a.errno(ctx, "history", d.target, err)
	}
	list := make([]gofuse.DirEntry, 0, len(revs))
	for _, r := range revs {
		if r.Rev < 1 {
			continue
		}
		list = append(list, gofuse.DirEntry{
			Name: strconv.Itoa(r.Rev),
			Ino:  d.a.virt.get(virtKey{kind: virtRevFile, ino: d.target, rev: r.Rev}),
			Mode: syscall.S_IFREG,
		})
	}
	return gofs.NewListDirStream(list), 0
}

// revFile is one revision. A revision never changes, so its content is
// fetched once per open and the kernel may keep it cached across opens.
type revFile struct {
	virtNode
	target uint64

	mu  sync.Mutex
	rev Revision
}

// revHandle holds an open revision's content.
type revHandle struct{ data []byte }

var (
	_ gofs.NodeGetattrer = (*revFile)(nil)
	_ gofs.NodeOpener    = (*revFile)(nil)
	_ gofs.NodeReader    = (*revFile)(nil)
)

func (f *revFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	f.mu.Lock()
	r := f.rev
	f.mu.Unlock()
	f.a.fillVirt(&out.Attr, f.StableAttr().Ino, syscall.S_IFREG|0444, r.Size, r.Time, r.Time)
	return 0
}

func (f *revFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	f.mu.Lock()
	rev := f.rev
	f.mu.Unlock()
	data, err := f.a.fsys.ReadRevision(ctx, f.target, rev.Rev)
	if err != nil {
		return nil, 0, f.a.errno(ctx, "read revision", f.target, err)
	}
	flagsOut := uint32(gofuse.FOPEN_KEEP_CACHE)
	if int64(len(data)) != rev.Size {
		// The listed size was wrong; the kernel would cut reads at it. Serve
		// this open uncached and report the real size from now on.
		f.a.log.Warn("fuse: revision size differs from its content", "ino", f.target, "rev", rev.Rev, "listed", rev.Size, "actual", len(data))
		f.mu.Lock()
		f.rev.Size = int64(len(data))
		f.mu.Unlock()
		flagsOut = gofuse.FOPEN_DIRECT_IO
	}
	return &revHandle{data: data}, flagsOut, 0
}

func (f *revFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*revHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(h.data)) {
		return gofuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return gofuse.ReadResultData(h.data[off:end]), 0
}
