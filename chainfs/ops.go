package chainfs

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/internal/addrsafe"
)

// Lookup finds name in directory dir.
func (t *Tree) Lookup(dir uint64, name string) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.node(dir)
	if err != nil {
		return Attr{}, err
	}
	if d.local.Kind != node.KindDir {
		return Attr{}, errnoOf(syscall.ENOTDIR, "%s", d.path())
	}
	c, err := t.child(d, name)
	if err != nil {
		return Attr{}, err
	}
	return t.attr(c), nil
}

// GetAttr returns a node's attributes.
func (t *Tree) GetAttr(ino uint64) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return Attr{}, err
	}
	return t.attr(n), nil
}

// ReadDir lists a directory, sorted by name.
func (t *Tree) ReadDir(dir uint64) ([]DirEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.node(dir)
	if err != nil {
		return nil, err
	}
	if d.local.Kind != node.KindDir {
		return nil, errnoOf(syscall.ENOTDIR, "%s", d.path())
	}
	var out []DirEntry
	for name, c := range d.kids {
		out = append(out, DirEntry{Name: name, Ino: c.ino, Kind: node.KindDir})
		if !c.virtual {
			out[len(out)-1].Kind = c.local.Kind
		}
	}
	for _, e := range t.sortedEntries(d) {
		if _, shadowed := d.kids[e.Name]; shadowed {
			continue
		}
		c, err := t.childFor(d, e)
		if err != nil {
			t.log.Warn("chainfs: unreadable entry skipped", "dir", d.path(), "name", e.Name, "err", err)
			continue
		}
		out = append(out, DirEntry{Name: e.Name, Ino: c.ino, Kind: e.Kind})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// writable checks that n may be changed (t.mu held).
func (t *Tree) writable(n *Node) error {
	if t.closed {
		return errnoOf(syscall.EROFS, "tree is closed")
	}
	if n.virtual {
		return errnoOf(syscall.EROFS, "%s only shows what others shared", n.path())
	}
	if !n.keys.HasWrite {
		return errnoOf(syscall.EROFS, "%s is shared with you read-only", n.path())
	}
	if t.noFunds != nil {
		return fmt.Errorf("%s: the wallet cannot pay for commits (%v): %w", n.path(), t.noFunds, syscall.ENOSPC)
	}
	return nil
}

// mutable makes n.local n's own copy, ready to change (t.mu held).
func (n *Node) mutable() *node.State {
	if n.local == n.committed {
		n.local = n.committed.Clone()
		n.ownContent = false
	}
	return n.local
}

// mutableContent makes n.local.Content n's own buffer (t.mu held).
func (n *Node) mutableContent() []byte {
	s := n.mutable()
	if !n.ownContent {
		s.Content = slices.Clone(s.Content)
		n.ownContent = true
	}
	return s.Content
}

// touch records a local change of n (t.mu held).
func (t *Tree) touch(n *Node, mtime bool) {
	s := n.mutable()
	if mtime {
		s.Mtime = t.cfg.Now().UnixNano()
	}
	n.ver++
	t.dirty[n] = struct{}{}
	t.overlayUp(n)
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Create makes a file, directory or symlink (target) in dir.
func (t *Tree) Create(dir uint64, name string, kind node.Kind, mode uint32, target string) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.node(dir)
	if err != nil {
		return Attr{}, err
	}
	if d.local.Kind != node.KindDir {
		return Attr{}, errnoOf(syscall.ENOTDIR, "%s", d.path())
	}
	if err := node.ValidName(name); err != nil {
		if len(name) > node.MaxName {
			return Attr{}, fmt.Errorf("%v: %w", err, syscall.ENAMETOOLONG)
		}
		return Attr{}, fmt.Errorf("%v: %w", err, syscall.EINVAL)
	}
	if _, ok := d.local.Entries[name]; ok {
		return Attr{}, errnoOf(syscall.EEXIST, "%s/%s", d.path(), name)
	}
	if _, ok := d.kids[name]; ok {
		return Attr{}, errnoOf(syscall.EEXIST, "%s/%s", d.path(), name)
	}
	if err := t.writable(d); err != nil {
		return Attr{}, err
	}
	if kind == node.KindSymlink && (target == "" || len(target) > 4096) {
		return Attr{}, errnoOf(syscall.EINVAL, "symlink target of %d bytes", len(target))
	}
	c, err := t.allocate(d, name, kind)
	if err != nil {
		return Attr{}, err
	}
	s := c.mutable()
	s.Mode = mode & 0o7777
	s.Target = target
	t.touch(c, true)
	t.touch(d, true)
	return t.attr(c), nil
}

// allocate adds a new native child to d's local entries: the next child
// index of d's key trees (t.mu held).
func (t *Tree) allocate(d *Node, name string, kind node.Kind) (*Node, error) {
	idx, keys := t.nextChild(d)
	d.mutable().Entries[name] = node.Entry{Name: name, Kind: kind, Addr: keys.Addr, Native: true, Index: idx}
	c := t.newNode(d, name, keys, kind)
	// A node with no commits has an empty committed state; its first
	// commit creates it on chain.
	c.local = c.committed.Clone()
	return c, nil
}

// nextChild takes d's next usable child index and its keys (t.mu held).
func (t *Tree) nextChild(d *Node) (uint32, node.Keys) {
	s := d.mutable()
	for {
		idx := s.NextIndex
		s.NextIndex++
		keys, err := d.keys.Child(idx, [20]byte{})
		if err != nil || !addrsafe.Queryable(keys.Addr[:]) {
			// An invalid BIP32 child (p < 2^-127), or an address btcd
			// cannot look up (docs/PROTOCOL.md): skip the index.
			continue
		}
		if _, taken := t.byAddr[keys.Addr]; taken {
			continue
		}
		return idx, keys
	}
}

// Remove deletes name from dir (unlink, or rmdir when isDir).
func (t *Tree) Remove(dir uint64, name string, isDir bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.node(dir)
	if err != nil {
		return err
	}
	e, ok := d.local.Entries[name]
	if !ok {
		return errnoOf(syscall.ENOENT, "%s/%s", d.path(), name)
	}
	if err := t.writable(d); err != nil {
		return err
	}
	switch {
	case isDir && e.Kind != node.KindDir:
		return errnoOf(syscall.ENOTDIR, "%s/%s", d.path(), name)
	case !isDir && e.Kind == node.KindDir:
		return errnoOf(syscall.EISDIR, "%s/%s", d.path(), name)
	}
	if isDir {
		c, err := t.childFor(d, e)
		if err != nil {
			return err
		}
		if len(c.local.Entries) > 0 {
			return errnoOf(syscall.ENOTEMPTY, "%s", c.path())
		}
	}
	delete(d.mutable().Entries, name)
	if c, ok := t.byAddr[e.Addr]; ok {
		t.detach(c)
	}
	t.touch(d, true)
	return nil
}

// detach forgets a removed node's pending changes: it is no longer
// reachable, so committing them would only spend money (t.mu held). Open
// handles keep working on its in-memory state.
func (t *Tree) detach(n *Node) {
	n.parent = nil
	delete(t.dirty, n)
	for _, e := range n.local.Entries {
		if c, ok := t.byAddr[e.Addr]; ok && c.parent == n {
			t.detach(c)
		}
	}
}

// Rename moves oldDir/oldName to newDir/newName. noReplace is
// RENAME_NOREPLACE.
func (t *Tree) Rename(oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	od, err := t.node(oldDir)
	if err != nil {
		return err
	}
	nd, err := t.node(newDir)
	if err != nil {
		return err
	}
	if nd.local.Kind != node.KindDir {
		return errnoOf(syscall.ENOTDIR, "%s", nd.path())
	}
	e, ok := od.local.Entries[oldName]
	if !ok {
		return errnoOf(syscall.ENOENT, "%s/%s", od.path(), oldName)
	}
	if err := node.ValidName(newName); err != nil {
		return fmt.Errorf("%v: %w", err, syscall.EINVAL)
	}
	if err := t.writable(od); err != nil {
		return err
	}
	if err := t.writable(nd); err != nil {
		return err
	}
	c, err := t.childFor(od, e)
	if err != nil {
		return err
	}
	if od != nd && (od.inImage() || nd.inImage() || c.inImage()) {
		// An image is a mount: mv copies across it.
		return errnoOf(syscall.EXDEV, "%s and %s are not in the same image", od.path(), nd.path())
	}
	// Moving a directory into itself or below it.
	for p := nd; p != nil; p = p.parent {
		if p == c {
			return errnoOf(syscall.EINVAL, "cannot move %s into itself", c.path())
		}
	}
	if od == nd && oldName == newName {
		return nil
	}
	if te, exists := nd.local.Entries[newName]; exists {
		if noReplace {
			return errnoOf(syscall.EEXIST, "%s/%s", nd.path(), newName)
		}
		switch {
		case te.Kind == node.KindDir && e.Kind != node.KindDir:
			return errnoOf(syscall.EISDIR, "%s/%s", nd.path(), newName)
		case te.Kind != node.KindDir && e.Kind == node.KindDir:
			return errnoOf(syscall.ENOTDIR, "%s/%s", nd.path(), newName)
		case te.Kind == node.KindDir:
			tc, err := t.childFor(nd, te)
			if err != nil {
				return err
			}
			if len(tc.local.Entries) > 0 {
				return errnoOf(syscall.ENOTEMPTY, "%s/%s", nd.path(), newName)
			}
		}
		if tc, ok := t.byAddr[te.Addr]; ok && tc != c {
			t.detach(tc)
		}
	}
	delete(od.mutable().Entries, oldName)
	ne := e
	ne.Name = newName
	ne.Image = false // an image entry under a new name is an overlay node
	if od != nd {
		if od.allocated(e) {
			// The child keeps its address and history; the new parent's
			// entry carries its keys (docs/PROTOCOL.md, OpEntryLink).
			sealed, err := nd.keys.SealChildWrite(c.keys)
			if err != nil {
				return err
			}
			ne = node.Entry{Name: newName, Kind: e.Kind, Addr: e.Addr, Genesis: c.genesis,
				ReadKey: c.keys.Read, SealedWrite: sealed}
		} else {
			// Never on chain: it becomes a new child of its new parent.
			ne = t.rekey(nd, c, newName)
		}
	}
	nd.mutable().Entries[newName] = ne
	c.parent, c.name = nd, newName
	t.touch(od, true)
	t.touch(nd, true)
	return nil
}

// allocated reports whether entry e of d exists on chain (its allocating
// commit was broadcast).
func (d *Node) allocated(e node.Entry) bool {
	return !e.Native || e.Index < d.committed.NextIndex
}

// rekey gives a node that was never committed (nor any of its children)
// fresh keys under its new parent; its inode stays (t.mu held).
func (t *Tree) rekey(nd, c *Node, name string) node.Entry {
	idx, keys := t.nextChild(nd)
	delete(t.byAddr, c.keys.Addr)
	c.keys = keys
	t.byAddr[keys.Addr] = c
	// Its children were allocated by it, so they move with it.
	cs := c.mutable()
	cs.NextIndex = 0
	old := cs.Entries
	cs.Entries = map[string]node.Entry{}
	for n2, e2 := range old {
		if gc, ok := t.byAddr[e2.Addr]; ok {
			cs.Entries[n2] = t.rekey(c, gc, n2)
		}
	}
	t.touch(c, false)
	return node.Entry{Name: name, Kind: c.local.Kind, Addr: keys.Addr, Native: true, Index: idx}
}

// ReadLink returns a symlink's target.
func (t *Tree) ReadLink(ino uint64) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return "", err
	}
	if n.local.Kind != node.KindSymlink {
		return "", errnoOf(syscall.EINVAL, "%s is not a symlink", n.path())
	}
	return n.local.Target, nil
}

// Read copies content at off into dest.
func (t *Tree) Read(ino uint64, off int64, dest []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return 0, err
	}
	if n.local.Kind == node.KindDir {
		return 0, errnoOf(syscall.EISDIR, "%s", n.path())
	}
	if n.unavailable && n.local == n.committed {
		return 0, errnoOf(syscall.EIO, "%s: its content is in a blob this device cannot fetch (no image server holds it)", n.path())
	}
	if n.imgFile != nil {
		return t.readImage(n, off, dest)
	}
	c := n.local.Content
	if off >= int64(len(c)) || off < 0 {
		return 0, nil
	}
	return copy(dest, c[off:]), nil
}

// Write writes data at off.
func (t *Tree) Write(ino uint64, off int64, data []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return 0, err
	}
	if n.local.Kind != node.KindFile {
		return 0, errnoOf(syscall.EISDIR, "%s", n.path())
	}
	if err := t.writable(n); err != nil {
		return 0, err
	}
	end := off + int64(len(data))
	if off < 0 || end > node.MaxFileSize {
		return 0, errnoOf(syscall.EFBIG, "write past %d bytes", node.MaxFileSize)
	}
	if err := t.loadContent(n); err != nil {
		return 0, err
	}
	c := n.mutableContent()
	if end > int64(len(c)) {
		if end > int64(cap(c)) {
			c = slices.Grow(c, int(end)-len(c))
		}
		c = c[:end]
	}
	copy(c[off:], data)
	n.local.Content = c
	n.unflushed = true
	t.touch(n, true)
	return len(data), nil
}

// SetAttr changes mode, size (truncate) or mtime.
func (t *Tree) SetAttr(ino uint64, in SetAttr) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return Attr{}, err
	}
	if err := t.writable(n); err != nil {
		return Attr{}, err
	}
	if in.Size != nil {
		if n.local.Kind != node.KindFile {
			return Attr{}, errnoOf(syscall.EISDIR, "%s", n.path())
		}
		size := *in.Size
		if size < 0 || size > node.MaxFileSize {
			return Attr{}, errnoOf(syscall.EINVAL, "size %d", size)
		}
		if err := t.loadContent(n); err != nil {
			return Attr{}, err
		}
		c := n.mutableContent()
		if size <= int64(len(c)) {
			clear(c[size:])
			c = c[:size]
		} else {
			c = slices.Grow(c, int(size)-len(c))[:size]
		}
		n.local.Content = c
		n.unflushed = true
		t.touch(n, true)
	}
	if in.Mode != nil {
		n.mutable().Mode = *in.Mode & 0o7777
		t.touch(n, false)
	}
	if in.Mtime != nil {
		n.mutable().Mtime = in.Mtime.UnixNano()
		t.touch(n, false)
	}
	return t.attr(n), nil
}

// GetXattr returns an extended attribute (ENODATA if absent).
func (t *Tree) GetXattr(ino uint64, name string) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return nil, err
	}
	v, ok := n.local.Xattrs[name]
	if !ok {
		return nil, errnoOf(syscall.ENODATA, "%s", name)
	}
	return slices.Clone(v), nil
}

// ListXattr lists extended attribute names.
func (t *Tree) ListXattr(ino uint64) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return nil, err
	}
	var names []string
	for k := range n.local.Xattrs {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, nil
}

// Xattr flags (as in setxattr(2)).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// SetXattr sets an extended attribute.
func (t *Tree) SetXattr(ino uint64, name string, value []byte, flags uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return err
	}
	if err := t.writable(n); err != nil {
		return err
	}
	if len(name) == 0 || len(name) > node.MaxName {
		return errnoOf(syscall.ERANGE, "xattr name of %d bytes", len(name))
	}
	if len(value) > node.MaxXattr {
		return errnoOf(syscall.E2BIG, "xattr value of %d bytes", len(value))
	}
	_, exists := n.local.Xattrs[name]
	if flags&XattrCreate != 0 && exists {
		return errnoOf(syscall.EEXIST, "%s", name)
	}
	if flags&XattrReplace != 0 && !exists {
		return errnoOf(syscall.ENODATA, "%s", name)
	}
	n.mutable().Xattrs[name] = slices.Clone(value)
	t.touch(n, false)
	return nil
}

// RemoveXattr removes an extended attribute.
func (t *Tree) RemoveXattr(ino uint64, name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return err
	}
	if err := t.writable(n); err != nil {
		return err
	}
	if _, ok := n.local.Xattrs[name]; !ok {
		return errnoOf(syscall.ENODATA, "%s", name)
	}
	delete(n.mutable().Xattrs, name)
	t.touch(n, false)
	return nil
}

// Flush is close(2): the node's changes (and its unsaved ancestors') are
// written to the journal now and committed soon.
func (t *Tree) Flush(ino uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return err
	}
	if n.unflushed {
		n.unflushed = false
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
	// Journaled within journalDelay by the journal loop, in one batch
	// with everything else closed meanwhile: close(2) promises no
	// durability (fsync does), and rewriting a big folder's record at
	// every file's close would make creating files quadratic.
	for c := n; c != nil; c = c.parent {
		if _, dirty := t.dirty[c]; dirty {
			t.jpending[c] = struct{}{}
		}
	}
	return nil
}

// Sync is fsync(2): it returns once n's changes — and the ancestors'
// entries that make it reachable — are committed, broadcast and the
// journal is on disk.
func (t *Tree) Sync(ctx context.Context, ino uint64) error {
	t.mu.Lock()
	n, err := t.node(ino)
	t.mu.Unlock()
	if err != nil {
		return err
	}
	t.prestage(ctx, n) // a large file's blob, encrypted without the lock
	t.mu.Lock()
	n.unflushed = false
	var chs []chan error
	for c := n; c != nil; c = c.parent {
		if _, dirty := t.dirty[c]; dirty {
			ch := make(chan error, 1)
			c.waiters = append(c.waiters, waiter{ver: c.ver, ch: ch})
			chs = append(chs, ch)
		}
	}
	if err := t.journalLocked(n, true); err != nil {
		t.mu.Unlock()
		return err
	}
	t.mu.Unlock()
	t.urgent()
	return waitAll(ctx, chs)
}

// waitAll waits for every channel, returning the first error at once: a
// parent whose commit failed fails the Sync of a child that waits for it.
func waitAll(ctx context.Context, chs []chan error) error {
	results := make(chan error, len(chs))
	stop := make(chan struct{})
	defer close(stop)
	for _, ch := range chs {
		go func(ch chan error) {
			select {
			case err := <-ch:
				results <- err
			case <-ctx.Done():
				results <- ctx.Err()
			case <-stop:
			}
		}(ch)
	}
	for range chs {
		if err := <-results; err != nil {
			return err
		}
	}
	return nil
}

// SyncAll commits everything pending and waits.
func (t *Tree) SyncAll(ctx context.Context) error {
	t.mu.Lock()
	var chs []chan error
	for n := range t.dirty {
		n.unflushed = false
		ch := make(chan error, 1)
		n.waiters = append(n.waiters, waiter{ver: n.ver, ch: ch})
		chs = append(chs, ch)
	}
	t.mu.Unlock()
	t.urgent()
	return waitAll(ctx, chs)
}

// StatFS reports sizes for statfs(2): the chain has no fixed capacity, so
// free space is what the wallet could pay for at the current fee rate.
type StatFS struct {
	Blocks, Bfree, Files, Ffree uint64
	Bsize                       uint32
}

// StatFS describes the filesystem.
func (t *Tree) StatFS() StatFS {
	t.mu.Lock()
	defer t.mu.Unlock()
	used := uint64(0)
	for _, n := range t.byIno {
		used += uint64(len(n.local.Content)/4096 + 1)
	}
	free := uint64(1 << 30)
	if t.noFunds != nil {
		free = 0
	}
	return StatFS{Bsize: 4096, Blocks: used + free, Bfree: free, Files: uint64(len(t.byIno)) + 1<<20, Ffree: 1 << 20}
}

var _ = time.Second

// Rekey moves a node onto fresh keys — the way to revoke a share: a new
// node under the same name in the same folder, with every descendant
// re-created below it, and the old one dropped from the folder. What was
// committed under the old keys stays readable to whoever held them; what
// is written from now on is not. It returns the new inode.
func (t *Tree) Rekey(ino uint64) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return 0, err
	}
	p := n.parent
	if p == nil || n == t.root {
		return 0, errnoOf(syscall.EINVAL, "cannot move / onto new keys")
	}
	if err := t.writable(p); err != nil {
		return 0, err
	}
	if e, ok := p.local.Entries[n.name]; !ok || e.Addr != n.keys.Addr {
		return 0, errnoOf(syscall.ENOENT, "%s", n.path())
	}
	if n.inImage() || t.holdsImage(n) {
		// An image's records are sealed with its folder's keys: new keys
		// need a new image (re-image, then share that folder again).
		return 0, errnoOf(syscall.EXDEV, "%s holds a mountable image: unmount it, or share a folder without one", n.path())
	}
	fresh, err := t.allocate(p, n.name, n.local.Kind)
	if err != nil {
		return 0, err
	}
	if err := t.copyTree(fresh, n); err != nil {
		return 0, err
	}
	t.detach(n)
	t.touch(p, true)
	return fresh.ino, nil
}

// copyTree makes dst (a node just allocated) a copy of src and of all of
// src's descendants, each on keys of its own (t.mu held).
func (t *Tree) copyTree(dst, src *Node) error {
	s := dst.mutable()
	from := src.local
	s.Mode, s.Mtime, s.Target = from.Mode, from.Mtime, from.Target
	s.Content = from.Content // shared, copied on the next write
	dst.ownContent = false
	s.Xattrs = maps.Clone(from.Xattrs)
	if s.Xattrs == nil {
		s.Xattrs = map[string][]byte{}
	}
	for _, e := range t.sortedEntries(src) {
		c, err := t.childFor(src, e)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name, err)
		}
		nc, err := t.allocate(dst, e.Name, e.Kind)
		if err != nil {
			return err
		}
		if err := t.copyTree(nc, c); err != nil {
			return err
		}
	}
	t.touch(dst, false)
	return nil
}
