// Package memfs is an in-memory implementation of fuse.FS, for tests of the
// FUSE adapter (posixtest against a real mount) and as a reference for what
// the adapter expects of a tree: POSIX errors, stable inode numbers, removed
// nodes kept until Forget, and a revision recorded at each Flush or Fsync
// that follows a change.
package memfs

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/integrity-sys/integrity/fuse"
	"golang.org/x/sys/unix"
)

const (
	rootIno = 1
	// maxSize bounds a file; larger writes fail with EFBIG rather than
	// exhausting memory on a bad offset.
	maxSize = 1 << 40
	// capacity is what StatFS reports as the size of the store.
	capacity  = 1 << 40
	statBlock = 4096
	// xattrSizeMax is Linux's XATTR_SIZE_MAX.
	xattrSizeMax = 64 << 10
)

type node struct {
	ino    uint64
	kind   fuse.Kind
	mode   uint32
	mtime  time.Time
	ctime  time.Time
	parent *node // nil for the root and for removed nodes
	linked bool

	children map[string]*node // directories
	subdirs  int              // directories among children, for Nlink
	data     []byte           // files
	target   string           // symlinks
	xattrs   map[string][]byte

	changed bool // content changed since the last revision
	revs    []revision
}

type revision struct {
	fuse.Revision
	data []byte
}

// FS is an in-memory tree. The zero value is not usable; call New.
type FS struct {
	mu    sync.RWMutex
	nodes map[uint64]*node
	next  uint64
	used  int64 // bytes of file content, for StatFS
	now   func() time.Time
}

var _ fuse.FS = (*FS)(nil)

// New returns an empty tree whose root directory has mode 0755.
func New() *FS {
	now := time.Now()
	root := &node{ino: rootIno, kind: fuse.KindDir, mode: 0755, mtime: now, ctime: now,
		linked: true, children: map[string]*node{}}
	return &FS{nodes: map[uint64]*node{rootIno: root}, next: rootIno + 1, now: time.Now}
}

// Len is the number of nodes held, removed ones not yet forgotten included.
func (f *FS) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.nodes)
}

func (f *FS) Root() uint64 { return rootIno }

func (f *FS) get(ino uint64) (*node, error) {
	n := f.nodes[ino]
	if n == nil {
		return nil, fmt.Errorf("memfs: inode %d: %w", ino, syscall.ENOENT)
	}
	return n, nil
}

func (f *FS) dir(ino uint64) (*node, error) {
	n, err := f.get(ino)
	if err != nil {
		return nil, err
	}
	if n.kind != fuse.KindDir {
		return nil, fmt.Errorf("memfs: inode %d: %w", ino, syscall.ENOTDIR)
	}
	return n, nil
}

func (n *node) attr() fuse.Attr {
	a := fuse.Attr{Ino: n.ino, Kind: n.kind, Mode: n.mode, Mtime: n.mtime, Ctime: n.ctime}
	switch n.kind {
	case fuse.KindFile:
		a.Size = int64(len(n.data))
	case fuse.KindSymlink:
		a.Size = int64(len(n.target))
	case fuse.KindDir:
		a.Size = int64(len(n.children))
	}
	if n.linked {
		a.Nlink = 1
		if n.kind == fuse.KindDir {
			a.Nlink = uint32(2 + n.subdirs)
		}
	}
	return a
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("memfs: name %q: %w", name, syscall.EINVAL)
	case len(name) > fuse.MaxNameLen:
		return fmt.Errorf("memfs: name of %d bytes: %w", len(name), syscall.ENAMETOOLONG)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return fmt.Errorf("memfs: name %q: %w", name, syscall.EINVAL)
		}
	}
	return nil
}

func (f *FS) Lookup(ctx context.Context, dir uint64, name string) (fuse.Attr, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, err := f.dir(dir)
	if err != nil {
		return fuse.Attr{}, err
	}
	c := d.children[name]
	if c == nil {
		return fuse.Attr{}, syscall.ENOENT
	}
	return c.attr(), nil
}

func (f *FS) GetAttr(ctx context.Context, ino uint64) (fuse.Attr, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(ino)
	if err != nil {
		return fuse.Attr{}, err
	}
	return n.attr(), nil
}

func (f *FS) SetAttr(ctx context.Context, ino uint64, in fuse.SetAttrIn) (fuse.Attr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(ino)
	if err != nil {
		return fuse.Attr{}, err
	}
	now := f.now()
	if in.Size != nil {
		if n.kind != fuse.KindFile {
			return fuse.Attr{}, fmt.Errorf("memfs: truncate inode %d: %w", ino, syscall.EISDIR)
		}
		sz := *in.Size
		if sz < 0 {
			return fuse.Attr{}, syscall.EINVAL
		}
		if sz > maxSize {
			return fuse.Attr{}, syscall.EFBIG
		}
		f.resize(n, sz)
		n.mtime, n.changed = now, true
	}
	if in.Mode != nil {
		n.mode = *in.Mode & 07777
	}
	if in.Mtime != nil {
		n.mtime = *in.Mtime
	}
	n.ctime = now
	return n.attr(), nil
}

func (f *FS) resize(n *node, sz int64) {
	old := int64(len(n.data))
	switch {
	case sz < old:
		clear(n.data[sz:])
		n.data = n.data[:sz]
	case sz > old:
		n.data = slices.Grow(n.data, int(sz-old))[:sz]
	}
	f.used += sz - old
}

func (f *FS) ReadDir(ctx context.Context, dir uint64) ([]fuse.DirEntry, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, err := f.dir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]fuse.DirEntry, 0, len(d.children))
	for name, c := range d.children {
		out = append(out, fuse.DirEntry{Name: name, Ino: c.ino, Kind: c.kind})
	}
	// A stable order: directory offsets are positions in this list.
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *FS) Create(ctx context.Context, dir uint64, name string, kind fuse.Kind, mode uint32, target string) (fuse.Attr, error) {
	if err := checkName(name); err != nil {
		return fuse.Attr{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dir(dir)
	if err != nil {
		return fuse.Attr{}, err
	}
	if !d.linked {
		return fuse.Attr{}, fmt.Errorf("memfs: create in removed directory %d: %w", dir, syscall.ENOENT)
	}
	if d.children[name] != nil {
		return fuse.Attr{}, syscall.EEXIST
	}
	now := f.now()
	n := &node{ino: f.next, kind: kind, mode: mode & 07777, mtime: now, ctime: now, parent: d, linked: true}
	switch kind {
	case fuse.KindDir:
		n.children = map[string]*node{}
		d.subdirs++
	case fuse.KindSymlink:
		if target == "" {
			return fuse.Attr{}, fmt.Errorf("memfs: empty symlink target: %w", syscall.ENOENT)
		}
		n.target = target
		n.mode = 0777
		n.revs = []revision{{fuse.Revision{Rev: 1, Time: now, Size: int64(len(target)), Summary: "symlink"}, []byte(target)}}
	case fuse.KindFile:
		n.changed = true
	default:
		return fuse.Attr{}, fmt.Errorf("memfs: create kind %v: %w", kind, syscall.EINVAL)
	}
	f.next++
	f.nodes[n.ino] = n
	d.children[name] = n
	d.mtime, d.ctime = now, now
	return n.attr(), nil
}

// unlink takes n out of its directory; it stays in f.nodes until Forget.
func (f *FS) unlink(d *node, name string, n *node, now time.Time) {
	delete(d.children, name)
	if n.kind == fuse.KindDir {
		d.subdirs--
	}
	d.mtime, d.ctime = now, now
	n.parent, n.linked = nil, false
	n.ctime = now
}

func (f *FS) Remove(ctx context.Context, dir uint64, name string, isDir bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dir(dir)
	if err != nil {
		return err
	}
	n := d.children[name]
	switch {
	case n == nil:
		return syscall.ENOENT
	case isDir && n.kind != fuse.KindDir:
		return syscall.ENOTDIR
	case !isDir && n.kind == fuse.KindDir:
		return syscall.EISDIR
	case isDir && len(n.children) > 0:
		return syscall.ENOTEMPTY
	}
	f.unlink(d, name, n, f.now())
	return nil
}

func (f *FS) Rename(ctx context.Context, oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error {
	if err := checkName(newName); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	od, err := f.dir(oldDir)
	if err != nil {
		return err
	}
	nd, err := f.dir(newDir)
	if err != nil {
		return err
	}
	n := od.children[oldName]
	if n == nil {
		return syscall.ENOENT
	}
	if !nd.linked {
		return syscall.ENOENT
	}
	if n.kind == fuse.KindDir {
		// No directory may move below itself.
		for p := nd; p != nil; p = p.parent {
			if p == n {
				return syscall.EINVAL
			}
		}
	}
	dst := nd.children[newName]
	if dst == n {
		return nil // same node: rename(2) does nothing
	}
	if dst != nil {
		switch {
		case noReplace:
			return syscall.EEXIST
		case n.kind == fuse.KindDir && dst.kind != fuse.KindDir:
			return syscall.ENOTDIR
		case n.kind != fuse.KindDir && dst.kind == fuse.KindDir:
			return syscall.EISDIR
		case dst.kind == fuse.KindDir && len(dst.children) > 0:
			return syscall.ENOTEMPTY
		}
	}
	now := f.now()
	if dst != nil {
		f.unlink(nd, newName, dst, now)
	}
	delete(od.children, oldName)
	nd.children[newName] = n
	if n.kind == fuse.KindDir {
		od.subdirs--
		nd.subdirs++
	}
	n.parent = nd
	n.ctime = now
	od.mtime, od.ctime = now, now
	nd.mtime, nd.ctime = now, now
	return nil
}

func (f *FS) ReadLink(ctx context.Context, ino uint64) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(ino)
	if err != nil {
		return "", err
	}
	if n.kind != fuse.KindSymlink {
		return "", syscall.EINVAL
	}
	return n.target, nil
}

func (f *FS) file(ino uint64) (*node, error) {
	n, err := f.get(ino)
	if err != nil {
		return nil, err
	}
	switch n.kind {
	case fuse.KindFile:
		return n, nil
	case fuse.KindDir:
		return nil, syscall.EISDIR
	}
	return nil, syscall.EINVAL
}

func (f *FS) Read(ctx context.Context, ino uint64, off int64, dest []byte) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.file(ino)
	if err != nil {
		return 0, err
	}
	if off >= int64(len(n.data)) {
		return 0, nil
	}
	return copy(dest, n.data[off:]), nil
}

func (f *FS) Write(ctx context.Context, ino uint64, off int64, data []byte) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	end := off + int64(len(data))
	if end > maxSize || end < off {
		return 0, syscall.EFBIG
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.file(ino)
	if err != nil {
		return 0, err
	}
	if end > int64(len(n.data)) {
		if end > int64(cap(n.data)) {
			// Grow by half again at least, so sequential appends cost
			// amortised constant time.
			grown := make([]byte, len(n.data), max(end, int64(cap(n.data))*3/2))
			copy(grown, n.data)
			n.data = grown
		}
		f.used += end - int64(len(n.data))
		n.data = n.data[:end]
	}
	copy(n.data[off:], data)
	now := f.now()
	n.mtime, n.ctime, n.changed = now, now, true
	return len(data), nil
}

// commit records a revision if the content changed since the last one.
func (f *FS) commit(ino uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(ino)
	if err != nil {
		return err
	}
	if !n.changed || n.kind != fuse.KindFile {
		return nil
	}
	n.changed = false
	r := revision{fuse.Revision{Rev: len(n.revs) + 1, Time: n.mtime, Size: int64(len(n.data)),
		Summary: fmt.Sprintf("%d bytes", len(n.data))}, slices.Clone(n.data)}
	n.revs = append(n.revs, r)
	return nil
}

func (f *FS) Flush(ctx context.Context, ino uint64) error { return f.commit(ino) }
func (f *FS) Fsync(ctx context.Context, ino uint64) error { return f.commit(ino) }

func (f *FS) GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(ino)
	if err != nil {
		return nil, err
	}
	v, ok := n.xattrs[name]
	if !ok {
		return nil, syscall.ENODATA
	}
	return v, nil
}

func (f *FS) SetXattr(ctx context.Context, ino uint64, name string, value []byte, flags uint32) error {
	if len(value) > xattrSizeMax {
		return syscall.E2BIG
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(ino)
	if err != nil {
		return err
	}
	_, exists := n.xattrs[name]
	switch {
	case flags&unix.XATTR_CREATE != 0 && exists:
		return syscall.EEXIST
	case flags&unix.XATTR_REPLACE != 0 && !exists:
		return syscall.ENODATA
	}
	if n.xattrs == nil {
		n.xattrs = map[string][]byte{}
	}
	n.xattrs[name] = slices.Clone(value)
	n.ctime = f.now()
	return nil
}

func (f *FS) ListXattr(ctx context.Context, ino uint64) ([]string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(ino)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(n.xattrs))
	for k := range n.xattrs {
		names = append(names, k)
	}
	sort.Strings(names)
	return names, nil
}

func (f *FS) RemoveXattr(ctx context.Context, ino uint64, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(ino)
	if err != nil {
		return err
	}
	if _, ok := n.xattrs[name]; !ok {
		return syscall.ENODATA
	}
	delete(n.xattrs, name)
	n.ctime = f.now()
	return nil
}

func (f *FS) StatFS(ctx context.Context) (fuse.StatFS, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	usedBlocks := uint64(f.used+statBlock-1) / statBlock
	total := uint64(capacity / statBlock)
	free := total - min(usedBlocks, total)
	const files = 1 << 32
	return fuse.StatFS{
		BlockSize: statBlock, Blocks: total, BlocksFree: free, BlocksAvail: free,
		Files: files, FilesFree: files - min(uint64(len(f.nodes)), files),
		NameLen: fuse.MaxNameLen,
	}, nil
}

func (f *FS) History(ctx context.Context, ino uint64) ([]fuse.Revision, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(ino)
	if err != nil {
		return nil, err
	}
	out := make([]fuse.Revision, len(n.revs))
	for i, r := range n.revs {
		out[i] = r.Revision
	}
	return out, nil
}

func (f *FS) ReadRevision(ctx context.Context, ino uint64, rev int) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(ino)
	if err != nil {
		return nil, err
	}
	if rev < 1 || rev > len(n.revs) {
		return nil, fmt.Errorf("memfs: inode %d revision %d: %w", ino, rev, syscall.ENOENT)
	}
	return n.revs[rev-1].data, nil
}

// Forget drops a removed node; linked nodes stay (they are the tree).
func (f *FS) Forget(ino uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[ino]; n != nil && !n.linked && ino != rootIno {
		if n.kind == fuse.KindFile {
			f.used -= int64(len(n.data))
		}
		delete(f.nodes, ino)
	}
}
