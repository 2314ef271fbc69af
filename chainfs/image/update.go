package image

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/integrity-sys/integrity/chainfs/blob"
)

// reuse copies a file's content region as stored in another image —
// checked window by window, never re-encrypted — and fills rec's file
// fields with the same content key or table hash.
func (p *packer) reuse(ctx context.Context, path string, l *loc, rec *record) error {
	f := &File{im: l.img, rec: l.rec, path: l.path, l1j: -1}
	if p.public {
		if _, err := f.Copy(ctx, p, nil); err != nil {
			return fmt.Errorf("image: copying %q: %w", path, err)
		}
		n := numChunks(f.rec.size)
		for j := int64(0); j*l1Block < n; j++ {
			blk, err := f.level1(ctx, j*l1Block, min(n, (j+1)*l1Block)-1)
			if err != nil {
				return err
			}
			if err := p.write(blk); err != nil {
				return err
			}
		}
		l2, err := f.level2(ctx)
		if err != nil {
			return err
		}
		if err := p.write(l2); err != nil {
			return err
		}
		rec.tableHash = f.rec.tableHash
		p.report()
		return nil
	}
	hdr, err := f.im.fetchAt(ctx, f.rec.contentOff, blob.HeaderSize, nil)
	if err != nil {
		return err
	}
	if string(hdr) != "IGB\x01" {
		return fmt.Errorf("%w: %q: content header %x", ErrFormat, path, hdr)
	}
	h := sha256.New()
	h.Write(hdr)
	if err := p.write(hdr); err != nil {
		return err
	}
	last := numChunks(f.rec.size) - 1
	for a := int64(0); a <= last; a += windowChunks {
		_, raw, err := f.window(ctx, a, min(a+windowChunks-1, last))
		if err != nil {
			return fmt.Errorf("image: copying %q: %w", path, err)
		}
		h.Write(raw)
		if err := p.write(raw); err != nil {
			return err
		}
	}
	if sum := h.Sum(nil); subtle.ConstantTimeCompare(sum, f.rec.blobHash[:]) != 1 {
		return fmt.Errorf("%w: copying %q: content hashes to %x", ErrMismatch, path, sum[:8])
	}
	rec.blobHash, rec.blobKey = f.rec.blobHash, f.rec.blobKey
	p.report()
	return nil
}

// Reader returns a sequential reader of the whole content, fetching one
// checked window (4 MiB) at a time.
func (f *File) Reader(ctx context.Context) io.Reader {
	return &fileReader{ctx: ctx, f: f}
}

type fileReader struct {
	ctx  context.Context
	f    *File
	next int64 // next chunk to fetch
	buf  []byte
}

func (r *fileReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		last := numChunks(r.f.rec.size) - 1
		if r.next > last || r.f.rec.size == 0 {
			return 0, io.EOF
		}
		plain, _, err := r.f.window(r.ctx, r.next, min(r.next+windowChunks-1, last))
		if err != nil {
			return 0, err
		}
		r.buf = plain
		r.next += windowChunks
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Source returns the image as a Source for Pack: every entry keeps its
// allocated index (and folders their next index), and file content is
// copied as stored when the new image has the same visibility. Packing
// it with changes (Overlay) re-images: the result shares all unchanged
// content bytes with this image, so a chainfs/delta between the two is
// about the size of the changes plus the records.
func (im *Image) Source() Source { return imageSource{im} }

type imageSource struct{ im *Image }

func (s imageSource) Stat(ctx context.Context, p string) (Entry, error) {
	return s.im.resolve(ctx, p, false)
}

func (s imageSource) ReadDir(ctx context.Context, p string) ([]Entry, error) {
	e, err := s.im.resolve(ctx, p, false)
	if err != nil {
		return nil, err
	}
	if e.Kind != KindDir {
		return nil, fmt.Errorf("%w: %q", ErrNotDir, p)
	}
	return s.im.List(ctx, e)
}

func (s imageSource) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	f, err := s.im.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(f.Reader(ctx)), nil
}

// Change is one edit for Overlay.
type Change struct {
	// Path of the entry (not the root).
	Path string
	// Delete removes the entry and everything below it.
	Delete bool
	// Entry is what to put at Path (its Name is taken from Path). A file
	// put where an entry of that name exists keeps that entry's index
	// (the overlay of its node carries over) unless Entry.Allocated; a
	// folder put over a folder keeps its children (a change of
	// attributes).
	Entry Entry
	// Open gives a put file's content (Entry.Size bytes).
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// Overlay returns base with changes applied, as a Source for Pack.
func Overlay(base Source, changes ...Change) (Source, error) {
	o := &overlay{base: base, byPath: make(map[string]*Change), byDir: make(map[string][]*Change)}
	for i := range changes {
		c := &changes[i]
		parts, err := splitPath(c.Path)
		if err != nil {
			return nil, err
		}
		if len(parts) == 0 {
			return nil, errors.New("image: a change cannot replace the root")
		}
		p := strings.Join(parts, "/")
		if o.byPath[p] != nil {
			return nil, fmt.Errorf("image: two changes to %q", p)
		}
		if !c.Delete {
			switch c.Entry.Kind {
			case KindFile:
				if c.Open == nil {
					return nil, fmt.Errorf("image: put of file %q without content", p)
				}
			case KindDir, KindSymlink, KindImage:
			default:
				return nil, fmt.Errorf("image: put of %q has kind %s", p, c.Entry.Kind)
			}
		}
		o.byPath[p] = c
		dir := strings.Join(parts[:len(parts)-1], "/")
		o.byDir[dir] = append(o.byDir[dir], c)
	}
	return o, nil
}

type overlay struct {
	base   Source
	byPath map[string]*Change
	byDir  map[string][]*Change
}

// hidden reports whether a change deletes p or one of its ancestors, or
// replaces an ancestor with a non-folder.
func (o *overlay) hidden(p string) bool {
	parts := strings.Split(p, "/")
	for i := range parts {
		c := o.byPath[strings.Join(parts[:i+1], "/")]
		if c == nil {
			continue
		}
		if c.Delete || (i < len(parts)-1 && c.Entry.Kind != KindDir) {
			return true
		}
	}
	return false
}

func (o *overlay) put(c *Change, name string, base *Entry) Entry {
	e := c.Entry
	e.Name, e.loc = name, nil
	if e.Kind == KindSymlink {
		e.Size = int64(len(e.Target))
	}
	if base != nil && !e.Allocated && base.Allocated {
		e.Index, e.Allocated = base.Index, true
	}
	if base != nil && base.Kind == KindDir && e.Kind == KindDir {
		e.NextIndex = max(e.NextIndex, base.NextIndex)
	}
	return e
}

func (o *overlay) Stat(ctx context.Context, p string) (Entry, error) {
	if p == "" {
		return o.base.Stat(ctx, p)
	}
	if o.hidden(p) {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotFound, p)
	}
	c := o.byPath[p]
	if c == nil {
		return o.base.Stat(ctx, p)
	}
	var base *Entry
	if e, err := o.base.Stat(ctx, p); err == nil {
		base = &e
	}
	return o.put(c, p[strings.LastIndexByte(p, '/')+1:], base), nil
}

func (o *overlay) ReadDir(ctx context.Context, p string) ([]Entry, error) {
	if p != "" && o.hidden(p) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, p)
	}
	var list []Entry
	c := o.byPath[p]
	baseDir := true
	if c != nil {
		b, err := o.base.Stat(ctx, p)
		baseDir = err == nil && b.Kind == KindDir
	}
	if baseDir {
		var err error
		if list, err = o.base.ReadDir(ctx, p); err != nil && (c == nil || !errors.Is(err, fs.ErrNotExist)) {
			return nil, err
		}
	}
	changes := o.byDir[p]
	seen := make(map[string]bool, len(changes))
	out := make([]Entry, 0, len(list)+len(changes))
	for i := range list {
		e := list[i]
		cp := joinPath(p, e.Name)
		if ch := o.byPath[cp]; ch != nil {
			seen[e.Name] = true
			if ch.Delete {
				continue
			}
			e = o.put(ch, e.Name, &list[i])
		}
		out = append(out, e)
	}
	for _, ch := range changes {
		name := ch.Path[strings.LastIndexByte(ch.Path, '/')+1:]
		if seen[name] || ch.Delete {
			continue
		}
		out = append(out, o.put(ch, name, nil))
	}
	return out, nil
}

func (o *overlay) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	if c := o.byPath[p]; c != nil && !c.Delete && c.Open != nil {
		return c.Open(ctx)
	}
	if o.hidden(p) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, p)
	}
	return o.base.Open(ctx, p)
}
