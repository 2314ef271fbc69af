package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ExtractOptions configure Extract.
type ExtractOptions struct {
	// Progress, if set, is called with the content bytes written so far.
	Progress func(written int64)
}

// Extract unpacks the image into dst, which must not exist or be an empty
// folder. Everything is created through an os.Root at dst with
// exclusive creation, so no entry can land outside it; names were already
// checked when the records were decoded. Nested images are unpacked when
// the Image has a Resolver (ErrNested otherwise). Modes and times are
// set after the content; setuid and setgid bits are dropped (an unpacked
// image must not grant privileges).
func Extract(ctx context.Context, im *Image, dst string, opts ExtractOptions) error {
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("image: extracting: %w", err)
	}
	if des, err := os.ReadDir(dst); err != nil || len(des) > 0 {
		if err == nil {
			err = errors.New("not empty")
		}
		return fmt.Errorf("image: extracting into %s: %w", dst, err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("image: extracting: %w", err)
	}
	defer root.Close()
	x := &extractor{root: root, opts: opts}
	if err := x.image(ctx, im, "", 0); err != nil {
		return err
	}
	// Folders last and deepest first, so that their times stick and a
	// read-only folder does not stop its own filling.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if err := root.Chmod(d.name, fileMode(d.mode)); err != nil {
			return fmt.Errorf("image: extracting: %w", err)
		}
		if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("image: extracting: %w", err)
		}
	}
	return nil
}

type extractor struct {
	root    *os.Root
	opts    ExtractOptions
	written int64
	dirs    []dirAttr
}

type dirAttr struct {
	name  string
	mode  uint32
	mtime time.Time
}

func localPath(p string) string {
	if p == "" {
		return "."
	}
	return filepath.FromSlash(p)
}

// image unpacks im under prefix (its mount point inside dst).
func (x *extractor) image(ctx context.Context, im *Image, prefix string, nesting int) error {
	x.dirs = append(x.dirs, dirAttr{name: localPath(prefix), mode: im.root.Mode, mtime: im.root.ModTime})
	return im.Walk(ctx, func(p string, e Entry) error {
		if p == "" {
			return nil
		}
		name := localPath(joinPath(prefix, p))
		switch e.Kind {
		case KindDir:
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return fmt.Errorf("image: extracting: %w", err)
			}
			x.dirs = append(x.dirs, dirAttr{name: name, mode: e.Mode, mtime: e.ModTime})
		case KindSymlink:
			if err := x.root.Symlink(e.Target, name); err != nil {
				return fmt.Errorf("image: extracting: %w", err)
			}
		case KindFile:
			return x.file(ctx, im, e, name)
		case KindImage:
			n, err := im.OpenNested(ctx, e, nil)
			if err != nil {
				return err
			}
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return fmt.Errorf("image: extracting: %w", err)
			}
			return x.image(ctx, n, joinPath(prefix, p), nesting+1)
		}
		return nil
	})
}

func (x *extractor) file(ctx context.Context, im *Image, e Entry, name string) error {
	f, err := im.OpenFile(ctx, e)
	if err != nil {
		return err
	}
	out, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("image: extracting: %w", err)
	}
	base := x.written
	var progress func(int64)
	if x.opts.Progress != nil {
		progress = func(n int64) { x.opts.Progress(base + n) }
	}
	n, err := f.Copy(ctx, out, progress)
	x.written += n
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("image: extracting %s: %w", name, cerr)
	}
	if err != nil {
		return err
	}
	if err := x.root.Chmod(name, fileMode(e.Mode)); err != nil {
		return fmt.Errorf("image: extracting: %w", err)
	}
	return x.root.Chtimes(name, e.ModTime, e.ModTime)
}

// fileMode turns stored permission bits into an fs.FileMode, keeping the
// sticky bit and dropping setuid and setgid.
func fileMode(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}
