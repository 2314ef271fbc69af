package vm

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"
)

// memTree is an in-memory Tree for this package's unit tests (the tests
// in vm/hostdev run the same machines on a real chainfs tree).
type memTree struct {
	mu      sync.Mutex
	nodes   map[uint64]*memNode
	next    uint64
	flushed map[uint64]int
	synced  map[uint64]int
}

type memNode struct {
	attr    Attr
	data    []byte
	target  string
	entries map[string]uint64
}

func newMemTree() *memTree {
	t := &memTree{nodes: map[uint64]*memNode{}, next: 2, flushed: map[uint64]int{}, synced: map[uint64]int{}}
	t.nodes[1] = &memNode{attr: Attr{Ino: 1, Kind: KindDir, Mode: 0o755, Mtime: time.Now(), Nlink: 2}, entries: map[string]uint64{}}
	return t
}

func enoent(f string, a ...any) error { return fmt.Errorf(f+": %w", append(a, syscall.ENOENT)...) }

func (t *memTree) Root() uint64 { return 1 }

func (t *memTree) get(ino uint64) (*memNode, error) {
	n, ok := t.nodes[ino]
	if !ok {
		return nil, enoent("ino %d", ino)
	}
	return n, nil
}

func (t *memTree) attr(n *memNode) Attr {
	a := n.attr
	switch a.Kind {
	case KindFile:
		a.Size = int64(len(n.data))
	case KindSymlink:
		a.Size = int64(len(n.target))
	}
	return a
}

func (t *memTree) Lookup(dir uint64, name string) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.get(dir)
	if err != nil {
		return Attr{}, err
	}
	if d.attr.Kind != KindDir {
		return Attr{}, syscall.ENOTDIR
	}
	ino, ok := d.entries[name]
	if !ok {
		return Attr{}, enoent("%s", name)
	}
	return t.attr(t.nodes[ino]), nil
}

func (t *memTree) GetAttr(ino uint64) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.get(ino)
	if err != nil {
		return Attr{}, err
	}
	return t.attr(n), nil
}

func (t *memTree) SetAttr(ino uint64, in SetAttr) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.get(ino)
	if err != nil {
		return Attr{}, err
	}
	if in.Size != nil {
		if *in.Size < 0 || *in.Size > 1<<30 {
			return Attr{}, syscall.EINVAL
		}
		if int(*in.Size) <= len(n.data) {
			n.data = n.data[:*in.Size]
		} else {
			n.data = append(n.data, make([]byte, int(*in.Size)-len(n.data))...)
		}
	}
	if in.Mode != nil {
		n.attr.Mode = *in.Mode
	}
	if in.Mtime != nil {
		n.attr.Mtime = *in.Mtime
	}
	return t.attr(n), nil
}

func (t *memTree) ReadDir(dir uint64) ([]DirEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.get(dir)
	if err != nil {
		return nil, err
	}
	var out []DirEntry
	for name, ino := range d.entries {
		out = append(out, DirEntry{Name: name, Ino: ino, Kind: t.nodes[ino].attr.Kind})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (t *memTree) Create(dir uint64, name string, kind Kind, mode uint32, target string) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.get(dir)
	if err != nil {
		return Attr{}, err
	}
	if d.attr.Kind != KindDir {
		return Attr{}, syscall.ENOTDIR
	}
	if name == "" || len(name) > 255 || slices.Contains([]byte(name), '/') {
		return Attr{}, syscall.EINVAL
	}
	if _, ok := d.entries[name]; ok {
		return Attr{}, syscall.EEXIST
	}
	ino := t.next
	t.next++
	n := &memNode{attr: Attr{Ino: ino, Kind: kind, Mode: mode, Mtime: time.Now(), Nlink: 1}, target: target}
	if kind == KindDir {
		n.entries = map[string]uint64{}
	}
	t.nodes[ino] = n
	d.entries[name] = ino
	return t.attr(n), nil
}

func (t *memTree) Remove(dir uint64, name string, isDir bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.get(dir)
	if err != nil {
		return err
	}
	ino, ok := d.entries[name]
	if !ok {
		return enoent("%s", name)
	}
	n := t.nodes[ino]
	switch {
	case isDir && n.attr.Kind != KindDir:
		return syscall.ENOTDIR
	case !isDir && n.attr.Kind == KindDir:
		return syscall.EISDIR
	case isDir && len(n.entries) > 0:
		return syscall.ENOTEMPTY
	}
	delete(d.entries, name)
	return nil
}

func (t *memTree) Rename(oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	od, err := t.get(oldDir)
	if err != nil {
		return err
	}
	nd, err := t.get(newDir)
	if err != nil {
		return err
	}
	ino, ok := od.entries[oldName]
	if !ok {
		return enoent("%s", oldName)
	}
	if _, exists := nd.entries[newName]; exists && noReplace {
		return syscall.EEXIST
	}
	delete(od.entries, oldName)
	nd.entries[newName] = ino
	return nil
}

func (t *memTree) ReadLink(ino uint64) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.get(ino)
	if err != nil {
		return "", err
	}
	if n.attr.Kind != KindSymlink {
		return "", syscall.EINVAL
	}
	return n.target, nil
}

func (t *memTree) Read(ino uint64, off int64, dest []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.get(ino)
	if err != nil {
		return 0, err
	}
	if n.attr.Kind == KindDir {
		return 0, syscall.EISDIR
	}
	if off >= int64(len(n.data)) {
		return 0, nil
	}
	return copy(dest, n.data[off:]), nil
}

func (t *memTree) Write(ino uint64, off int64, data []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.get(ino)
	if err != nil {
		return 0, err
	}
	if n.attr.Kind != KindFile {
		return 0, syscall.EISDIR
	}
	end := int(off) + len(data)
	if end > 1<<30 {
		return 0, syscall.EFBIG
	}
	if end > len(n.data) {
		n.data = append(n.data, make([]byte, end-len(n.data))...)
	}
	copy(n.data[off:], data)
	return len(data), nil
}

func (t *memTree) Flush(ino uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flushed[ino]++
	return nil
}

func (t *memTree) Sync(_ context.Context, ino uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.synced[ino]++
	return nil
}

// file returns a file's content by path ("a/b"), for assertions.
func (t *memTree) file(path ...string) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[1]
	for _, p := range path {
		ino, ok := n.entries[p]
		if !ok {
			return nil, false
		}
		n = t.nodes[ino]
	}
	return slices.Clone(n.data), true
}
