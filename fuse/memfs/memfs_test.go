package memfs

import (
	"errors"
	"syscall"
	"testing"

	"github.com/integrity-sys/integrity/fuse"
)

func TestRenameRemoveErrors(t *testing.T) {
	ctx := t.Context()
	m := New()
	mk := func(dir uint64, name string, kind fuse.Kind) uint64 {
		t.Helper()
		a, err := m.Create(ctx, dir, name, kind, 0755, "t")
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return a.Ino
	}
	root := m.Root()
	a := mk(root, "a", fuse.KindDir)
	b := mk(a, "b", fuse.KindDir)
	mk(b, "f", fuse.KindFile)
	mk(root, "g", fuse.KindFile)
	mk(root, "empty", fuse.KindDir)

	for _, tc := range []struct {
		name      string
		od        uint64
		on        string
		nd        uint64
		nn        string
		noReplace bool
		want      error
	}{
		{"into itself", root, "a", b, "x", false, syscall.EINVAL},
		{"onto itself", root, "a", a, "x", false, syscall.EINVAL},
		{"missing", root, "nope", root, "x", false, syscall.ENOENT},
		{"dir over file", root, "empty", root, "g", false, syscall.ENOTDIR},
		{"file over dir", root, "g", root, "empty", false, syscall.EISDIR},
		{"dir over non-empty dir", root, "empty", root, "a", false, syscall.ENOTEMPTY},
		{"noreplace", root, "g", root, "a", true, syscall.EEXIST},
		{"bad name", root, "g", root, "x/y", false, syscall.EINVAL},
		{"target not a dir", root, "g", 999, "x", false, syscall.ENOENT},
	} {
		if err := m.Rename(ctx, tc.od, tc.on, tc.nd, tc.nn, tc.noReplace); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := m.Remove(ctx, root, "a", true); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir non-empty: %v", err)
	}
	if err := m.Remove(ctx, root, "g", true); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("rmdir file: %v", err)
	}
	if err := m.Remove(ctx, root, "a", false); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("unlink dir: %v", err)
	}
	if _, err := m.Create(ctx, root, "g", fuse.KindFile, 0644, ""); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("create existing: %v", err)
	}
	if at, _ := m.GetAttr(ctx, a); at.Nlink != 3 {
		t.Errorf("nlink of a dir with one subdir: %d", at.Nlink)
	}
}

func TestRemovedKeptUntilForget(t *testing.T) {
	ctx := t.Context()
	m := New()
	f, err := m.Create(ctx, m.Root(), "f", fuse.KindFile, 0644, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Write(ctx, f.Ino, 0, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	m.Forget(f.Ino) // linked: ignored
	if err := m.Remove(ctx, m.Root(), "f", false); err != nil {
		t.Fatal(err)
	}
	at, err := m.GetAttr(ctx, f.Ino)
	if err != nil || at.Nlink != 0 || at.Size != 3 {
		t.Fatalf("removed node: %+v %v", at, err)
	}
	buf := make([]byte, 8)
	if n, err := m.Read(ctx, f.Ino, 0, buf); err != nil || string(buf[:n]) != "abc" {
		t.Errorf("read removed: %q %v", buf[:n], err)
	}
	m.Forget(f.Ino)
	if _, err := m.GetAttr(ctx, f.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("after Forget: %v", err)
	}
}

func TestRevisions(t *testing.T) {
	ctx := t.Context()
	m := New()
	f, err := m.Create(ctx, m.Root(), "f", fuse.KindFile, 0644, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"one", "two"} {
		sz := int64(0)
		if _, err := m.SetAttr(ctx, f.Ino, fuse.SetAttrIn{Size: &sz}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Write(ctx, f.Ino, 0, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if err := m.Flush(ctx, f.Ino); err != nil {
			t.Fatal(err)
		}
		if err := m.Fsync(ctx, f.Ino); err != nil { // nothing new: no revision
			t.Fatal(err)
		}
	}
	revs, err := m.History(ctx, f.Ino)
	if err != nil || len(revs) != 2 || revs[1].Rev != 2 || revs[1].Size != 3 {
		t.Fatalf("history: %+v %v", revs, err)
	}
	if got, err := m.ReadRevision(ctx, f.Ino, 1); err != nil || string(got) != "one" {
		t.Errorf("revision 1: %q %v", got, err)
	}
	if _, err := m.ReadRevision(ctx, f.Ino, 3); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("revision 3: %v", err)
	}
}
