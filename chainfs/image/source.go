package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Entry describes one file, folder, symlink or nested image: what a
// Source gives Pack, and what an Image returns.
type Entry struct {
	Name string // "" for the root
	Kind Kind
	// Mode is the permission bits, at most 07777.
	Mode    uint32
	ModTime time.Time
	// Size: a file's length; a symlink's target length; a folder's entry
	// count (images only); a nested image's blob size.
	Size int64
	// Target is a symlink's target.
	Target string
	// Nested is set for KindImage.
	Nested *Nested

	// Index is the child index the entry is allocated under its folder's
	// node, when Allocated. Pack keeps allocated indexes (so re-imaging
	// leaves every entry at its node) and allocates the others after all
	// indexes in use, in name order. Entries read from an image are
	// allocated.
	Index     uint32
	Allocated bool
	// NextIndex of a folder is the first index never allocated under it;
	// Pack allocates from at least there, so a deleted entry's index is
	// never reused.
	NextIndex uint32
	// Addr is the entry's node address, recorded when a private image is
	// packed with the mount node's write key (zero otherwise): readers
	// with only read keys learn where the entry's overlay commits live.
	Addr [20]byte

	loc *loc // set for entries read from an image
}

// Path is the entry's slash path inside its image ("" for the root), or
// "" for entries that do not come from an image.
func (e Entry) Path() string {
	if e.loc == nil {
		return ""
	}
	return e.loc.path
}

// Indexes is the entry's node path below the mount node (empty for the
// root): NodeKeys(mount keys, Indexes()) are its keys. Nil for entries
// that do not come from an image.
func (e Entry) Indexes() []uint32 {
	if e.loc == nil {
		return nil
	}
	return append([]uint32(nil), e.loc.indexes...)
}

// IsDir reports a folder.
func (e Entry) IsDir() bool { return e.Kind == KindDir }

// Source is a directory tree to pack. Paths are slash-separated and
// relative, "" being the root; every component is a valid name. The
// chainfs tree, a local directory (LocalDir), an image (Image.Source) and
// an image with changes (Overlay) are sources.
type Source interface {
	// Stat describes the entry at path; Stat("") is the root, a folder.
	Stat(ctx context.Context, path string) (Entry, error)
	// ReadDir lists a folder.
	ReadDir(ctx context.Context, path string) ([]Entry, error)
	// Open reads a file's content, which must be exactly its Entry's
	// Size bytes (Pack refuses a file that changes while it is packed).
	Open(ctx context.Context, path string) (io.ReadCloser, error)
}

// joinPath joins a folder path and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// splitPath checks a slash path and returns its components.
func splitPath(p string) ([]string, error) {
	if p == "" || p == "." || p == "/" {
		return nil, nil
	}
	p = strings.TrimPrefix(p, "/")
	parts := strings.Split(p, "/")
	for _, n := range parts {
		if err := ValidName(n); err != nil {
			return nil, fmt.Errorf("path %q: %w", p, err)
		}
	}
	return parts, nil
}

// Local is a Source over a local directory. It reads through an os.Root,
// so nothing outside the directory is read even if the tree changes
// (a folder swapped for a symlink) while it is packed; symlinks are
// packed as symlinks, never followed.
type Local struct {
	root *os.Root
}

// LocalDir opens the directory dir as a Source. Close it when done.
func LocalDir(dir string) (*Local, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("image: opening %s: %w", dir, err)
	}
	return &Local{root: r}, nil
}

// Close releases the directory.
func (l *Local) Close() error { return l.root.Close() }

func localName(p string) (string, error) {
	parts, err := splitPath(p)
	if err != nil {
		return "", err
	}
	if len(parts) == 0 {
		return ".", nil
	}
	return filepath.Join(parts...), nil
}

// Stat implements Source.
func (l *Local) Stat(ctx context.Context, p string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	name, err := localName(p)
	if err != nil {
		return Entry{}, err
	}
	fi, err := l.root.Lstat(name)
	if err != nil {
		return Entry{}, fmt.Errorf("image: %w", err)
	}
	e, err := l.entry(name, fi)
	if err != nil {
		return Entry{}, err
	}
	if p == "" {
		e.Name = ""
	}
	return e, nil
}

// ReadDir implements Source.
func (l *Local) ReadDir(ctx context.Context, p string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, err := localName(p)
	if err != nil {
		return nil, err
	}
	f, err := l.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	var out []Entry
	for {
		des, err := f.ReadDir(1024)
		for _, de := range des {
			if len(out) >= MaxDirEntries {
				return nil, fmt.Errorf("%w: %s holds more than %d entries", ErrTooLarge, name, MaxDirEntries)
			}
			fi, err := de.Info()
			if err != nil {
				return nil, fmt.Errorf("image: %w", err)
			}
			e, err := l.entry(filepath.Join(name, de.Name()), fi)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		if errors.Is(err, io.EOF) || (err == nil && len(des) == 0) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("image: listing %s: %w", name, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (l *Local) entry(name string, fi fs.FileInfo) (Entry, error) {
	e := Entry{Name: path.Base(filepath.ToSlash(name)), ModTime: fi.ModTime(), Mode: uint32(fi.Mode().Perm())}
	m := fi.Mode()
	if m&fs.ModeSetuid != 0 {
		e.Mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		e.Mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		e.Mode |= 0o1000
	}
	switch {
	case m.IsDir():
		e.Kind = KindDir
	case m.IsRegular():
		e.Kind, e.Size = KindFile, fi.Size()
	case m&fs.ModeSymlink != 0:
		t, err := l.root.Readlink(name)
		if err != nil {
			return Entry{}, fmt.Errorf("image: %w", err)
		}
		e.Kind, e.Target, e.Size = KindSymlink, t, int64(len(t))
	default:
		return Entry{}, fmt.Errorf("image: %s is a %s, which images cannot hold", name, m.Type())
	}
	return e, nil
}

// Open implements Source.
func (l *Local) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, err := localName(p)
	if err != nil {
		return nil, err
	}
	f, err := l.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return f, nil
}
