package fuse

import (
	"context"

	"github.com/integrity-sys/integrity/chainfs"
	cnode "github.com/integrity-sys/integrity/chainfs/node"
)

// Tree adapts a chainfs.Tree to FS: the mount's view of the chain-backed
// tree.
type Tree struct{ T *chainfs.Tree }

var _ FS = Tree{}

func kindOf(k cnode.Kind) Kind {
	switch k {
	case cnode.KindDir:
		return KindDir
	case cnode.KindSymlink:
		return KindSymlink
	case cnode.KindFile:
		return KindFile
	}
	return 0
}

func nodeKind(k Kind) cnode.Kind {
	switch k {
	case KindDir:
		return cnode.KindDir
	case KindSymlink:
		return cnode.KindSymlink
	}
	return cnode.KindFile
}

func attrOf(a chainfs.Attr) Attr {
	return Attr{Ino: a.Ino, Kind: kindOf(a.Kind), Mode: a.Mode, Size: a.Size, Mtime: a.Mtime, Ctime: a.Ctime, Nlink: a.Nlink}
}

func (t Tree) Root() uint64 { return chainfs.RootIno }

func (t Tree) Lookup(_ context.Context, dir uint64, name string) (Attr, error) {
	a, err := t.T.Lookup(dir, name)
	return attrOf(a), err
}

func (t Tree) GetAttr(_ context.Context, ino uint64) (Attr, error) {
	a, err := t.T.GetAttr(ino)
	return attrOf(a), err
}

func (t Tree) SetAttr(_ context.Context, ino uint64, in SetAttrIn) (Attr, error) {
	a, err := t.T.SetAttr(ino, chainfs.SetAttr{Mode: in.Mode, Size: in.Size, Mtime: in.Mtime})
	return attrOf(a), err
}

func (t Tree) ReadDir(_ context.Context, dir uint64) ([]DirEntry, error) {
	ents, err := t.T.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, len(ents))
	for i, e := range ents {
		out[i] = DirEntry{Name: e.Name, Ino: e.Ino, Kind: kindOf(e.Kind)}
	}
	return out, nil
}

func (t Tree) Create(_ context.Context, dir uint64, name string, kind Kind, mode uint32, target string) (Attr, error) {
	a, err := t.T.Create(dir, name, nodeKind(kind), mode, target)
	return attrOf(a), err
}

func (t Tree) Remove(_ context.Context, dir uint64, name string, isDir bool) error {
	return t.T.Remove(dir, name, isDir)
}

func (t Tree) Rename(_ context.Context, oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error {
	return t.T.Rename(oldDir, oldName, newDir, newName, noReplace)
}

func (t Tree) ReadLink(_ context.Context, ino uint64) (string, error) { return t.T.ReadLink(ino) }

func (t Tree) Read(_ context.Context, ino uint64, off int64, dest []byte) (int, error) {
	return t.T.Read(ino, off, dest)
}

func (t Tree) Write(_ context.Context, ino uint64, off int64, data []byte) (int, error) {
	return t.T.Write(ino, off, data)
}

func (t Tree) Flush(_ context.Context, ino uint64) error { return t.T.Flush(ino) }

func (t Tree) Fsync(ctx context.Context, ino uint64) error { return t.T.Sync(ctx, ino) }

func (t Tree) GetXattr(_ context.Context, ino uint64, name string) ([]byte, error) {
	return t.T.GetXattr(ino, name)
}

func (t Tree) SetXattr(_ context.Context, ino uint64, name string, value []byte, flags uint32) error {
	return t.T.SetXattr(ino, name, value, flags)
}

func (t Tree) ListXattr(_ context.Context, ino uint64) ([]string, error) { return t.T.ListXattr(ino) }

func (t Tree) RemoveXattr(_ context.Context, ino uint64, name string) error {
	return t.T.RemoveXattr(ino, name)
}

func (t Tree) StatFS(context.Context) (StatFS, error) {
	s := t.T.StatFS()
	return StatFS{BlockSize: s.Bsize, Blocks: s.Blocks, BlocksFree: s.Bfree, BlocksAvail: s.Bfree, Files: s.Files, FilesFree: s.Ffree}, nil
}

func (t Tree) History(_ context.Context, ino uint64) ([]Revision, error) {
	h, err := t.T.History(ino)
	if err != nil {
		return nil, err
	}
	out := make([]Revision, len(h))
	for i, r := range h {
		out[i] = Revision{Rev: r.Rev, Time: r.Time, Size: r.Size, Summary: r.Summary}
	}
	return out, nil
}

func (t Tree) ReadRevision(_ context.Context, ino uint64, rev int) ([]byte, error) {
	return t.T.ReadRevision(ino, rev)
}

func (t Tree) Forget(ino uint64) { t.T.Forget(ino) }
