package chainfs

// Mountable images in the tree (docs/PROTOCOL.md, "Mountable images").
//
// A folder with an image shows the image's entries as its own. Each entry
// is the node it would be if the image's files were part of the tree —
// the child at its image index, of its folder's keys — with the state the
// image gives it and no commits: an entry marked Image in its folder's
// state. Changing one makes it an overlay node: its folder commits
// OpEntryOver, funding its genesis, and the node commits its change like
// any node (a patch against the image's content when that is small).
// Deleting one is OpHide at its folder. Re-imaging packs the folder's view
// (image and overlay) into a new image, and OpImage installs it in place
// of the old one and its overlay. A folder below the one packed that has
// an image mounted is packed as a nested image (its mount, not its
// content): the paper's movie that incorporates a song.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/internal/addrsafe"
)

// ImageMount is what a folder's OpImage names: the image and the servers
// that host it.
type ImageMount struct {
	Ref     image.Ref
	Servers []string
}

// maxImageEntries bounds how many entries of an image (nested ones
// included) a tree loads: a hostile image cannot make it build millions
// of nodes.
const maxImageEntries = 1 << 20

// MarshalBinary encodes a mount: uvarint(len) ‖ ref ‖ uvarint(n) ‖
// n × (uvarint(len) ‖ URL).
func (m ImageMount) MarshalBinary() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	ref, err := m.Ref.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(nil, uint64(len(ref)))
	b = append(b, ref...)
	b = binary.AppendUvarint(b, uint64(len(m.Servers)))
	for _, s := range m.Servers {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// UnmarshalBinary decodes a mount from a commit (untrusted bytes).
func (m *ImageMount) UnmarshalBinary(b []byte) error {
	var out ImageMount
	take := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errors.New("image mount: truncated")
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, nil
	}
	ref, err := take()
	if err != nil {
		return err
	}
	if err := out.Ref.UnmarshalBinary(ref); err != nil {
		return fmt.Errorf("image mount: %w", err)
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > image.MaxServers {
		return errors.New("image mount: bad server count")
	}
	b = b[k:]
	for range n {
		s, err := take()
		if err != nil {
			return err
		}
		out.Servers = append(out.Servers, string(s))
	}
	if len(b) != 0 {
		return fmt.Errorf("image mount: %d trailing bytes", len(b))
	}
	if err := out.validate(); err != nil {
		return err
	}
	*m = out
	return nil
}

func (m ImageMount) validate() error {
	if err := m.Ref.Validate(); err != nil {
		return err
	}
	if len(m.Servers) > image.MaxServers {
		return fmt.Errorf("image mount: %d servers, at most %d", len(m.Servers), image.MaxServers)
	}
	for _, s := range m.Servers {
		if err := image.ValidServerURL(s); err != nil {
			return err
		}
	}
	return nil
}

// ImageStores finds where images are stored: a blob.Store over their
// servers, trying each in turn and skipping any that serves wrong bytes
// (the agent wires image-server clients in).
type ImageStores interface {
	Store(ctx context.Context, servers []string) (blob.Store, error)
}

// imgDir is a folder of an image, loaded whole when the image is mounted
// (its entries and every folder below; reading content stays lazy).
type imgDir struct {
	im      *image.Image
	mount   []byte // the OpImage mount this came from (the mount folder only)
	next    uint32
	entries map[uint32]image.Entry
	subs    map[uint32]*imgDir
}

// imgFile reads a file of an image that the tree has not loaded.
type imgFile struct {
	im *image.Image
	e  image.Entry

	mu sync.Mutex
	f  *image.File
}

func (f *imgFile) open(ctx context.Context) (*image.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		h, err := f.im.OpenFile(ctx, f.e)
		if err != nil {
			return nil, err
		}
		f.f = h
	}
	return f.f, nil
}

func (f *imgFile) readAll(ctx context.Context) ([]byte, error) {
	h, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	return h.ReadAll(ctx, node.MaxFileSize)
}

// imageTimeout bounds one read from image servers made for a filesystem
// operation (which carries no context).
const imageTimeout = 2 * time.Minute

// loadImage opens a mount's image with the folder's keys and loads its
// folders (no t.mu: this talks to image servers).
func (t *Tree) loadImage(ctx context.Context, keys node.Keys, raw []byte) (*imgDir, error) {
	var m ImageMount
	if err := m.UnmarshalBinary(raw); err != nil {
		return nil, err
	}
	if t.cfg.Images == nil {
		return nil, errors.New("this device has no image servers configured")
	}
	store, err := t.cfg.Images.Store(ctx, m.Servers)
	if err != nil {
		return nil, err
	}
	ro := keys.ReadOnly()
	im, err := image.Open(ctx, store, m.Ref, image.Options{Keys: &ro})
	if err != nil {
		return nil, err
	}
	budget := maxImageEntries
	d, err := t.loadImageDir(ctx, im, im.Root(), &budget, 0)
	if err != nil {
		return nil, err
	}
	d.mount = raw
	return d, nil
}

func (t *Tree) loadImageDir(ctx context.Context, im *image.Image, dir image.Entry, budget *int, depth int) (*imgDir, error) {
	if depth > 64 {
		return nil, fmt.Errorf("%w: images nested deeper than 64", image.ErrFormat)
	}
	es, err := im.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	if *budget -= len(es); *budget < 0 {
		return nil, fmt.Errorf("%w: more than %d entries", image.ErrTooLarge, maxImageEntries)
	}
	d := &imgDir{im: im, next: dir.NextIndex, entries: make(map[uint32]image.Entry, len(es)), subs: map[uint32]*imgDir{}}
	for _, e := range es {
		d.entries[e.Index] = e
		switch e.Kind {
		case image.KindDir:
			sub, err := t.loadImageDir(ctx, im, e, budget, depth+1)
			if err != nil {
				return nil, err
			}
			d.subs[e.Index] = sub
		case image.KindImage:
			store, err := t.cfg.Images.Store(ctx, e.Nested.Servers)
			if err != nil {
				return nil, err
			}
			nested, err := im.OpenNested(ctx, e, store)
			if err != nil {
				return nil, err
			}
			sub, err := t.loadImageDir(ctx, nested, nested.Root(), budget, depth+1)
			if err != nil {
				return nil, err
			}
			d.subs[e.Index] = sub
		}
	}
	return d, nil
}

func imageKind(k image.Kind) node.Kind {
	switch k {
	case image.KindFile:
		return node.KindFile
	case image.KindSymlink:
		return node.KindSymlink
	}
	return node.KindDir // folders and nested images
}

// inject adds to s the entries of its folder's image that are not hidden,
// overlaid (an entry of the same index) or shadowed by a name in use.
// keys are the folder's, for entries that do not record their address.
func inject(s *node.State, d *imgDir, keys node.Keys) {
	if d == nil || s.Kind != node.KindDir {
		return
	}
	taken := make(map[uint32]bool, len(s.Entries))
	for _, e := range s.Entries {
		if e.Native {
			taken[e.Index] = true
		}
	}
	for idx, e := range d.entries {
		if s.Hidden[idx] || taken[idx] {
			continue
		}
		if _, used := s.Entries[e.Name]; used {
			continue
		}
		addr := e.Addr
		if addr == ([20]byte{}) || keys.HasWrite {
			c, err := keys.Child(idx, e.Addr)
			if err != nil || !addrsafe.Queryable(c.Addr[:]) {
				continue
			}
			addr = c.Addr
		}
		s.Entries[e.Name] = node.Entry{Name: e.Name, Kind: imageKind(e.Kind), Addr: addr, Native: true, Index: idx, Image: true}
	}
}

// imageBase is the state the image gives entry e of a folder: its commits,
// if it has any, apply on top.
func imageBase(e image.Entry, sub *imgDir, keys node.Keys) *node.State {
	s := node.NewState(imageKind(e.Kind))
	s.Mode = e.Mode
	if s.Mode == 0 && s.Kind == node.KindDir {
		s.Mode = node.DefaultDirMode
	}
	s.Mtime = e.ModTime.UnixNano()
	switch s.Kind {
	case node.KindSymlink:
		s.Target = e.Target
	case node.KindDir:
		if sub != nil {
			s.ImageNext, s.NextIndex = sub.next, sub.next
			inject(s, sub, keys)
		}
	}
	return s
}

// setImageBase makes c the node of image entry idx of folder n: its base
// state, content read lazily, and for a folder its own image folder
// (t.mu held). A node already based on that entry keeps its state.
func (t *Tree) setImageBase(n, c *Node, idx uint32) {
	d := n.imgDir
	e, ok := d.entries[idx]
	if !ok {
		return
	}
	sub := d.subs[idx]
	if c.imgOf == d && c.imgIndex == idx {
		return
	}
	if _, dirty := t.dirty[c]; dirty && c.imgOf != nil {
		return // being changed: its next sync sets it on the new image
	}
	c.imgOf, c.imgIndex = d, idx
	c.imgDir = sub
	c.imgFile = nil
	base := imageBase(e, sub, c.keys)
	if base.Kind == node.KindFile {
		c.imgFile = &imgFile{im: d.im, e: e}
		c.imgSize = e.Size
	}
	c.committed, c.local, c.revs = base, base, nil
	c.ownContent = false
}

// baseOf is the state a node's replay starts from (t.mu held).
func (t *Tree) baseOf(n *Node) *node.State {
	if n.imgOf == nil {
		return node.NewState(n.committed.Kind)
	}
	e := n.imgOf.entries[n.imgIndex]
	return imageBase(e, n.imgDir, n.keys)
}

// inImage reports whether n is part of an image: the mount folder, or a
// node an image gives.
func (n *Node) inImage() bool { return n.imgDir != nil || n.imgOf != nil || n.local.Image != nil }

// holdsImage reports whether an image is mounted at n or below (t.mu held).
func (t *Tree) holdsImage(n *Node) bool {
	if n.inImage() {
		return true
	}
	for _, e := range n.local.Entries {
		if c, ok := t.byAddr[e.Addr]; ok && c.parent == n && t.holdsImage(c) {
			return true
		}
	}
	return false
}

// overlayUp turns the image entries that lead to a changed node into
// overlay entries, so that each is funded and committed (t.mu held).
func (t *Tree) overlayUp(n *Node) {
	for c := n; c.parent != nil && !c.parent.virtual; c = c.parent {
		p := c.parent
		e, ok := p.local.Entries[c.name]
		if !ok || !e.Image || e.Addr != c.keys.Addr {
			return
		}
		e.Image = false
		p.mutable().Entries[c.name] = e
		p.ver++
		t.dirty[p] = struct{}{}
	}
}

// loadContent reads a lazily read image file into memory before it is
// changed (t.mu held; released while reading).
func (t *Tree) loadContent(n *Node) error {
	for n.imgFile != nil {
		f := n.imgFile
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), imageTimeout)
		data, err := f.readAll(ctx)
		cancel()
		t.mu.Lock()
		if err != nil {
			return fmt.Errorf("%s: reading it from its image: %v: %w", n.path(), err, syscall.EIO)
		}
		if n.imgFile != f {
			continue // replaced meanwhile: try again
		}
		n.imgFile = nil
		n.committed.Content = data
		if n.local != n.committed {
			n.local.Content = data
		}
		n.ownContent = false
	}
	return nil
}

// readImage reads a lazily read image file's bytes at off (t.mu held;
// released while reading).
func (t *Tree) readImage(n *Node, off int64, dest []byte) (int, error) {
	f := n.imgFile
	t.mu.Unlock()
	defer t.mu.Lock()
	if off >= f.e.Size {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), imageTimeout)
	defer cancel()
	h, err := f.open(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading from the image: %v: %w", err, syscall.EIO)
	}
	k, err := h.ReadAtContext(ctx, dest[:min(int64(len(dest)), f.e.Size-off)], off)
	if err != nil && k == 0 {
		return 0, fmt.Errorf("reading from the image: %v: %w", err, syscall.EIO)
	}
	return k, nil
}

// MountImage mounts an image at folder ino, which must be empty and hold
// no image (one image per folder: unmount the old one first). A folder
// created inside another image's folder may take one: it is an overlay
// change that re-imaging the outer image packs as a nested image. The
// image is opened and its folders read first, so a mount that cannot be
// read is refused. The OpImage commit follows in the background (Sync
// waits for it).
func (t *Tree) MountImage(ctx context.Context, ino uint64, m ImageMount) error {
	return t.mountImage(ctx, ino, m, false)
}

// ReplaceWithImage mounts at folder ino an image packed from its own
// content (FolderSource, or ImageSource when re-imaging): the folder's
// entries give way to the image's, which are the same files at the same
// indexes.
func (t *Tree) ReplaceWithImage(ctx context.Context, ino uint64, m ImageMount) error {
	return t.mountImage(ctx, ino, m, true)
}

func (t *Tree) mountImage(ctx context.Context, ino uint64, m ImageMount, replace bool) error {
	raw, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	t.mu.Lock()
	n, err := t.node(ino)
	if err == nil {
		err = t.writable(n)
	}
	if err == nil && n.local.Kind != node.KindDir {
		err = errnoOf(syscall.ENOTDIR, "%s", n.path())
	}
	if err == nil && n.imgOf != nil {
		// Its state is the image's entry: an OpImage on top would fight
		// the entry the image gives it at every re-read.
		if n.imgOf.entries[n.imgIndex].Kind == image.KindImage {
			err = errnoOf(syscall.EBUSY, "%s already has an image mounted (one image per folder; it is nested in the image above)", n.path())
		} else {
			err = errnoOf(syscall.EBUSY, "%s is a folder of the image mounted above it: mount on a new empty folder inside it (mkdir), then `integrity image update` of the outer image folds it in as a nested image", n.path())
		}
	}
	if err == nil && !replace && n.local.Image != nil {
		err = errnoOf(syscall.EBUSY, "%s already has an image mounted (one image per folder): unmount it first", n.path())
	}
	if err == nil && !replace && len(n.local.Entries) > 0 {
		err = errnoOf(syscall.ENOTEMPTY, "%s is not empty: an image mounts on an empty folder", n.path())
	}
	keys := n.keys
	t.mu.Unlock()
	if err != nil {
		return err
	}
	d, err := t.loadImage(ctx, keys, raw)
	if err != nil {
		return fmt.Errorf("mount image: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.writable(n); err != nil {
		return err
	}
	reimage := n.local.Image != nil // the same files, newly packed: mtime stays
	t.forgetChildren(n)
	s := n.mutable()
	s.Image, s.ImageNext, s.Hidden = raw, d.next, nil
	s.NextIndex = max(s.NextIndex, d.next)
	s.Entries = map[string]node.Entry{}
	n.imgDir = d
	inject(s, d, n.keys)
	t.touch(n, !reimage)
	t.overlayUp(n)
	return nil
}

// remount reads the image of a journaled, uncommitted mount after a
// restart (no t.mu).
func (t *Tree) remount(n *Node) {
	t.mu.Lock()
	keys, raw := n.keys, n.local.Image
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), imageTimeout)
	defer cancel()
	d, err := t.loadImage(ctx, keys, raw)
	if err != nil {
		t.log.Warn("chainfs: the image of a journaled mount cannot be read; the folder shows empty until it can", "err", err)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if bytes.Equal(n.local.Image, raw) {
		n.imgDir = d
		inject(n.local, d, keys)
	}
}

// Keys returns a node's keys (the write key included when this tree has
// it): to pack an image for a folder and to sign for it at image servers.
func (t *Tree) Keys(ino uint64) (node.Keys, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return node.Keys{}, err
	}
	if n.virtual {
		return node.Keys{}, errnoOf(syscall.EINVAL, "%s is a virtual folder", n.path())
	}
	return n.keys, nil
}

// UnmountImage unmounts folder ino's image: the folder is empty again.
func (t *Tree) UnmountImage(ino uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return err
	}
	if err := t.writable(n); err != nil {
		return err
	}
	if n.local.Image == nil {
		return errnoOf(syscall.EINVAL, "%s has no image mounted", n.path())
	}
	t.forgetChildren(n)
	s := n.mutable()
	s.Image, s.ImageNext, s.Hidden = nil, 0, nil
	s.Entries = map[string]node.Entry{}
	n.imgDir = nil
	t.touch(n, true)
	return nil
}

// forgetChildren drops n's children from the tree before its image
// changes: a new image's entries sit at the same addresses, and must not
// find the old nodes' states (t.mu held).
func (t *Tree) forgetChildren(n *Node) {
	for _, e := range n.local.Entries {
		if c, ok := t.byAddr[e.Addr]; ok && c.parent == n {
			t.forgetSubtree(c)
		}
	}
}

func (t *Tree) forgetSubtree(n *Node) {
	for _, e := range n.local.Entries {
		if c, ok := t.byAddr[e.Addr]; ok && c.parent == n {
			t.forgetSubtree(c)
		}
	}
	n.parent = nil
	delete(t.dirty, n)
	if t.byAddr[n.keys.Addr] == n {
		delete(t.byAddr, n.keys.Addr)
	}
}

// ImageInfo describes a folder's image.
type ImageInfo struct {
	Mount ImageMount
	// Keys are the mount folder's: its write key signs for the image at
	// its servers (patches, releases).
	Keys node.Keys
	// Overlay counts the entries changed, added or deleted since the image
	// was mounted.
	Overlay int
	// Nested are the images the image incorporates, at every depth, in
	// path order.
	Nested []NestedImage
}

// NestedImage is an image incorporated in another at Path (slash path
// below the outer image's folder): readers fetch it from its own servers.
type NestedImage struct {
	Path  string
	Mount ImageMount
}

// nestedIn lists the nested images of image folder d, at path p.
func nestedIn(d *imgDir, p string, out *[]NestedImage) {
	for i, e := range d.entries {
		cp := e.Name
		if p != "" {
			cp = p + "/" + e.Name
		}
		if e.Kind == image.KindImage && e.Nested != nil {
			*out = append(*out, NestedImage{Path: cp, Mount: ImageMount{Ref: e.Nested.Ref, Servers: slices.Clone(e.Nested.Servers)}})
		}
		if sub := d.subs[i]; sub != nil {
			nestedIn(sub, cp, out)
		}
	}
}

// Image returns folder ino's image (ENOENT-wrapped EINVAL when it has
// none).
func (t *Tree) Image(ino uint64) (ImageInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return ImageInfo{}, err
	}
	if n.local.Image == nil {
		if n.imgOf != nil && n.imgOf.entries[n.imgIndex].Kind == image.KindImage {
			return ImageInfo{}, errnoOf(syscall.EINVAL, "%s holds an image nested in the image of a folder above it: that folder's image info lists it", n.path())
		}
		return ImageInfo{}, errnoOf(syscall.EINVAL, "%s has no image mounted", n.path())
	}
	var m ImageMount
	if err := m.UnmarshalBinary(n.local.Image); err != nil {
		return ImageInfo{}, err
	}
	info := ImageInfo{Mount: m, Keys: n.keys, Overlay: t.overlayCount(n)}
	if n.imgDir != nil {
		nestedIn(n.imgDir, "", &info.Nested)
		slices.SortFunc(info.Nested, func(a, b NestedImage) int { return strings.Compare(a.Path, b.Path) })
	}
	return info, nil
}

func (t *Tree) overlayCount(n *Node) int {
	k := 0
	shown := map[uint32]bool{}
	for _, e := range n.local.Entries {
		if e.Native {
			shown[e.Index] = true
		}
	}
	if n.imgDir != nil {
		for idx := range n.imgDir.entries {
			if !shown[idx] {
				k++ // deleted
			}
		}
	}
	for _, e := range n.local.Entries {
		if e.Image {
			continue
		}
		k++
		if c, ok := t.byAddr[e.Addr]; ok && c.parent == n && c.imgDir != nil {
			k += t.overlayCount(c)
		}
	}
	return k
}

// ImageSource is the folder's view — its image with the overlay applied —
// as a source to pack the next version of the image from (re-imaging,
// paper 4.a–e): entries keep their indexes, unchanged files are copied
// as the image stores them. The old image is returned for the patch's
// base.
func (t *Tree) ImageSource(ctx context.Context, ino uint64) (image.Source, *image.Image, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return nil, nil, err
	}
	if n.imgDir == nil || n.local.Image == nil {
		return nil, nil, errnoOf(syscall.EINVAL, "%s has no image mounted", n.path())
	}
	var changes []image.Change
	if err := t.overlayChanges(n, n.imgDir, "", &changes); err != nil {
		return nil, nil, err
	}
	src, err := image.Overlay(n.imgDir.im.Source(), changes...)
	if err != nil {
		return nil, nil, err
	}
	return src, n.imgDir.im, nil
}

// overlayChanges lists how folder n (image folder d, at path p inside the
// image) differs from the image (t.mu held).
func (t *Tree) overlayChanges(n *Node, d *imgDir, p string, out *[]image.Change) error {
	join := func(name string) string {
		if p == "" {
			return name
		}
		return p + "/" + name
	}
	shown := map[uint32]string{}
	for name, e := range n.local.Entries {
		if e.Native {
			shown[e.Index] = name
		}
	}
	// Deleted or renamed image entries.
	for idx, e := range d.entries {
		if name, ok := shown[idx]; !ok || name != e.Name {
			*out = append(*out, image.Change{Path: join(e.Name), Delete: true})
		}
	}
	for _, name := range n.local.Names() {
		e := n.local.Entries[name]
		if e.Image {
			continue
		}
		c, err := t.childFor(n, e)
		if err != nil {
			return err
		}
		if err := t.loadContent(c); err != nil {
			return err
		}
		ie, inImage := d.entries[e.Index]
		if !e.Native {
			inImage = false
		}
		if c.local.Image != nil {
			// An image mounted on a folder made inside this one: nested.
			ch, err := t.nestedChange(c, join(name), e.Index, e.Native, e.Native)
			if err != nil {
				return err
			}
			*out = append(*out, ch)
			continue
		}
		if inImage && ie.Kind == image.KindImage && ie.Nested != nil && t.overlayCount(c) == 0 {
			// A nested image renamed or with new attributes, nothing
			// changed inside: it stays nested (with changes inside, it is
			// packed below as a folder of this image).
			ch := t.changeOf(c, join(name), e.Index, true, 0)
			ch.Entry.Kind, ch.Entry.NextIndex, ch.Entry.Nested = image.KindImage, 0, ie.Nested
			*out = append(*out, ch)
			continue
		}
		sub := c.imgDir
		if c.local.Kind == node.KindDir && inImage && ie.Name == name && sub != nil && ie.Kind == image.KindDir {
			// A folder of the image with changes inside: recurse; its own
			// attributes are written as changed too.
			*out = append(*out, t.changeOf(c, join(name), e.Index, true, ie.NextIndex))
			if err := t.overlayChanges(c, sub, join(name), out); err != nil {
				return err
			}
			continue
		}
		ch := t.changeOf(c, join(name), e.Index, e.Native, 0)
		*out = append(*out, ch)
		if c.local.Kind == node.KindDir {
			if err := t.newSubtree(c, join(name), e.Native, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// FolderSource is folder ino's content as a source to pack an image of
// it for that folder (what ReplaceWithImage then mounts): every entry
// keeps its index, so the image's nodes are the folder's. A folder below
// with an image mounted becomes a nested image entry — its mount, not its
// content, so readers fetch it from its own servers (the paper's movie
// incorporating a song).
func (t *Tree) FolderSource(ino uint64) (image.Source, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return nil, err
	}
	if n.local.Kind != node.KindDir || n.virtual {
		return nil, errnoOf(syscall.ENOTDIR, "%s", n.path())
	}
	if n.inImage() {
		return nil, errnoOf(syscall.EBUSY, "%s is an image's folder: `integrity image update` re-images the folder it is mounted at", n.path())
	}
	var changes []image.Change
	if err := t.newSubtree(n, "", true, &changes); err != nil {
		return nil, err
	}
	return image.Overlay(emptyDir{}, changes...)
}

// emptyDir is a source with nothing in it.
type emptyDir struct{}

func (emptyDir) Stat(_ context.Context, p string) (image.Entry, error) {
	if p != "" && p != "." && p != "/" {
		return image.Entry{}, image.ErrNotFound
	}
	return image.Entry{Kind: image.KindDir, Mode: node.DefaultDirMode}, nil
}

func (emptyDir) ReadDir(context.Context, string) ([]image.Entry, error) { return nil, nil }

func (emptyDir) Open(context.Context, string) (io.ReadCloser, error) { return nil, image.ErrNotFound }

// newSubtree adds a folder that is not in the image, and all below it.
// derived says the packed image will give n the keys it has: every folder
// from the mount point down to n keeps its index and was allocated by
// its parent (not moved in from elsewhere).
func (t *Tree) newSubtree(n *Node, p string, derived bool, out *[]image.Change) error {
	join := func(name string) string {
		if p == "" {
			return name
		}
		return p + "/" + name
	}
	for _, name := range n.local.Names() {
		e := n.local.Entries[name]
		c, err := t.childFor(n, e)
		if err != nil {
			return err
		}
		if c.local.Image != nil {
			ch, err := t.nestedChange(c, join(name), e.Index, e.Native, derived && e.Native)
			if err != nil {
				return err
			}
			*out = append(*out, ch)
			continue
		}
		if err := t.loadContent(c); err != nil {
			return err
		}
		*out = append(*out, t.changeOf(c, join(name), e.Index, e.Native, 0))
		if c.local.Kind == node.KindDir {
			if err := t.newSubtree(c, join(name), derived && e.Native, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// nestedChange describes folder c, which has an image mounted, as a
// nested image entry at path p: its mount (reference and servers) and
// attributes (t.mu held). Its overlay must have been folded into its own
// image first: a nested image is packed by reference, so changes made on
// top of it would be lost. A private image is sealed for c's keys; the
// outer image gives its entry the node at idx below its folder, which is
// c itself only when derived (else the nested image would not open).
func (t *Tree) nestedChange(c *Node, p string, idx uint32, allocated, derived bool) (image.Change, error) {
	var m ImageMount
	if err := m.UnmarshalBinary(c.local.Image); err != nil {
		return image.Change{}, fmt.Errorf("%s: %w", c.path(), err)
	}
	if k := t.overlayCount(c); k > 0 {
		return image.Change{}, errnoOf(syscall.EBUSY, "%s has %d changes not yet in its image: run `integrity image update %s` first (a nested image is packed by reference)", c.path(), k, c.path())
	}
	if !m.Ref.Public && !derived {
		return image.Change{}, errnoOf(syscall.EXDEV, "%s holds a private image sealed for its own keys, which were not allocated by the folder being imaged (it was moved in): the image would not open there", c.path())
	}
	s := c.local
	e := image.Entry{Kind: image.KindImage, Mode: s.Mode, ModTime: time.Unix(0, s.Mtime), Index: idx, Allocated: allocated,
		Nested: &image.Nested{Ref: m.Ref, Servers: append([]string(nil), m.Servers...)}}
	return image.Change{Path: p, Entry: e}, nil
}

// changeOf describes node c as an image entry at path p (t.mu held).
func (t *Tree) changeOf(c *Node, p string, idx uint32, allocated bool, next uint32) image.Change {
	s := c.local
	e := image.Entry{Mode: s.Mode, ModTime: time.Unix(0, s.Mtime), Index: idx, Allocated: allocated}
	ch := image.Change{Path: p}
	switch s.Kind {
	case node.KindDir:
		e.Kind = image.KindDir
		e.NextIndex = max(next, s.NextIndex)
	case node.KindSymlink:
		e.Kind, e.Target = image.KindSymlink, s.Target
	default:
		e.Kind, e.Size = image.KindFile, int64(len(s.Content))
		content := s.Content
		ch.Open = func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content)), nil }
	}
	ch.Entry = e
	return ch
}
