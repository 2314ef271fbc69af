package image

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/node"
)

// Options configure Open.
type Options struct {
	// Keys are the mount node's keys (the read key suffices). Required
	// for a private image; ignored for a public one.
	Keys *node.Keys
	// Resolver finds the stores of nested images, so that paths, ReadDir
	// and Extract go through them. Nil: a path stops at a nested image
	// with ErrNested (OpenNested with an explicit store still works).
	Resolver Resolver
	// CacheEntries bounds how many decoded folder entries an Image keeps
	// (default 65,536). Walk and Verify bypass the cache.
	CacheEntries int
}

// Resolver finds where a nested image is stored — typically a blob.Multi
// over its servers.
type Resolver interface {
	Store(ctx context.Context, n Nested) (blob.Store, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, n Nested) (blob.Store, error)

// Store implements Resolver.
func (f ResolverFunc) Store(ctx context.Context, n Nested) (blob.Store, error) { return f(ctx, n) }

// tailFetch is how much of the end of an image Open reads at once: the
// trailer, the root record and, for small images, the root's block and
// more, so that listing the root costs no further request.
const tailFetch = 64 << 10

// Image reads one image by range: only the records and content chunks a
// call needs are fetched, and each is checked against the hash chain that
// starts at Ref.Root (or, for private content, authenticated by its
// chunk tags) before it is used. Safe for concurrent use.
type Image struct {
	ref     Ref
	f       fetcher
	keys    *node.Keys // read-only; nil for a public image
	opts    Options
	nesting int
	rootOff int64
	tail    []byte
	tailOff int64
	root    Entry

	mu     sync.Mutex
	dirs   map[string]*dirCache
	cached int
	nested map[string]*Image

	windows windowCache // read-ahead of sequential file reads (file.go)
}

type dirCache struct {
	entries []Entry
	byName  map[string]int
}

// loc is where an entry read from an image lives.
type loc struct {
	img     *Image
	rec     *record
	path    string
	indexes []uint32
	keys    node.Keys // read-only; folders and nested images of private images
	limit   int64     // start of the block holding the record: all it names lies before
	depth   int
}

// Open opens the image ref names in s, fetching only its tail (the
// trailer and root record, checked against ref.Root). Given a blob.Multi,
// every read tries the stores in turn and skips — and reports — any whose
// bytes fail their check.
func Open(ctx context.Context, s blob.Store, ref Ref, opts Options) (*Image, error) {
	return open(ctx, storeFetcher{s: s, hash: ref.Hash}, ref, opts, 0)
}

// OpenReaderAt opens an image held in r (a local file, a byte slice).
// Nothing checks the whole image's hash: do that when it was fetched.
func OpenReaderAt(ctx context.Context, r io.ReaderAt, ref Ref, opts Options) (*Image, error) {
	return open(ctx, readerAtFetcher{r}, ref, opts, 0)
}

func open(ctx context.Context, f fetcher, ref Ref, opts Options, nesting int) (*Image, error) {
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	if !ref.Public && opts.Keys == nil {
		return nil, fmt.Errorf("%w: %s is private: the mount node's keys are needed to read it", ErrKeys, ref)
	}
	if opts.CacheEntries <= 0 {
		opts.CacheEntries = 1 << 16
	}
	im := &Image{ref: ref, f: f, opts: opts, nesting: nesting, dirs: make(map[string]*dirCache), nested: make(map[string]*Image)}
	if !ref.Public {
		k := opts.Keys.ReadOnly()
		im.keys = &k
	}
	tailLen := min(ref.Size-HeaderSize, tailFetch)
	var rootRaw []byte
	tail, err := f.fetch(ctx, ref.Size-tailLen, tailLen, func(b []byte) error {
		r, off, err := parseTail(b, ref)
		rootRaw, im.rootOff = r, off
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	im.tail, im.tailOff = tail, ref.Size-tailLen
	if rootRaw == nil {
		rootRaw, err = im.fetchAt(ctx, im.rootOff, ref.Size-TrailerSize-im.rootOff, hashCheck(ref.Root, "root record"))
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", ref, err)
		}
	}
	pt := rootRaw
	if !ref.Public {
		if pt, err = openRecord(im.keys, rootRaw); err != nil {
			return nil, fmt.Errorf("opening %s: the root record does not open with these keys: %w", ref, err)
		}
	}
	rec, err := decodeRecord(pt, ref.Public, true)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	if err := checkDir(rec, im.rootOff); err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	l := &loc{img: im, rec: rec, limit: im.rootOff}
	if im.keys != nil {
		l.keys = *im.keys
		l.keys.Addr = rec.addr
	}
	im.root = entryOf(rec, l)
	return im, nil
}

// parseTail reads the trailer at the end of b (the last len(b) bytes of
// the image) and returns the root record if b holds it, and its offset.
func parseTail(b []byte, ref Ref) ([]byte, int64, error) {
	return parseTailCheck(b, ref, true)
}

func parseTailCheck(b []byte, ref Ref, checkRoot bool) ([]byte, int64, error) {
	if len(b) < TrailerSize {
		return nil, 0, fmt.Errorf("%w: %d bytes cannot hold a trailer", ErrFormat, len(b))
	}
	t := b[len(b)-TrailerSize:]
	switch {
	case string(t[8:11]) != "IGI":
		return nil, 0, fmt.Errorf("%w: not an integrity image (trailer %x)", ErrFormat, t)
	case t[11] != Version:
		return nil, 0, fmt.Errorf("%w: image format version %d, this build reads %d", ErrFormat, t[11], Version)
	case t[1] != 0 || t[2] != 0 || t[3] != 0 || t[0]&^FlagPublic != 0:
		return nil, 0, fmt.Errorf("%w: trailer has unknown flags %x", ErrFormat, t[:4])
	case (t[0] == FlagPublic) != ref.Public:
		return nil, 0, fmt.Errorf("%w: the image's public flag (%v) is not the reference's", ErrMismatch, t[0] == FlagPublic)
	}
	rootLen := int64(binary.BigEndian.Uint32(t[4:8]))
	if rootLen == 0 || rootLen > MaxRecord {
		return nil, 0, fmt.Errorf("%w: root record of %d bytes", ErrFormat, rootLen)
	}
	rootOff := ref.Size - TrailerSize - rootLen
	if rootOff < HeaderSize {
		return nil, 0, fmt.Errorf("%w: root record of %d bytes does not fit in a %d-byte image", ErrFormat, rootLen, ref.Size)
	}
	if int64(len(b))-TrailerSize < rootLen {
		return nil, rootOff, nil
	}
	root := b[int64(len(b))-TrailerSize-rootLen : len(b)-TrailerSize]
	if !checkRoot {
		return root, rootOff, nil
	}
	if err := hashCheck(ref.Root, "root record")(root); err != nil {
		return nil, 0, err
	}
	return root, rootOff, nil
}

// Inspect reads the trailer and root record of the size-byte image in r
// and returns its Ref, without Hash (reading everything to compute it is
// the caller's business — an image server has just done so on upload).
func Inspect(ctx context.Context, r io.ReaderAt, size int64) (Ref, error) {
	ref := Ref{Size: size}
	if err := ref.Validate(); err != nil {
		return Ref{}, err
	}
	n := min(size-HeaderSize, tailFetch)
	b, err := readerAtFetcher{r}.fetch(ctx, size-n, n, nil)
	if err != nil {
		return Ref{}, err
	}
	ref.Public = b[len(b)-TrailerSize] == FlagPublic
	_, rootOff, err := parseTailCheck(b, ref, false)
	if err != nil {
		return Ref{}, err
	}
	root, err := readerAtFetcher{r}.fetch(ctx, rootOff, size-TrailerSize-rootOff, nil)
	if err != nil {
		return Ref{}, err
	}
	ref.Root = sha256.Sum256(root)
	hdr, err := readerAtFetcher{r}.fetch(ctx, 0, HeaderSize, nil)
	if err != nil {
		return Ref{}, err
	}
	if string(hdr) != "IGI\x01" {
		return Ref{}, fmt.Errorf("%w: not an integrity image (header %x)", ErrFormat, hdr)
	}
	return ref, nil
}

func hashCheck(want [32]byte, what string) func([]byte) error {
	return func(b []byte) error {
		if sum := sha256.Sum256(b); subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			return fmt.Errorf("%w: %s hashes to %x, want %x", ErrMismatch, what, sum[:8], want[:8])
		}
		return nil
	}
}

func checkDir(r *record, limit int64) error {
	if r.count > 0 && (r.blockOff < HeaderSize || r.blockOff+r.blockLen > limit) {
		return fmt.Errorf("%w: folder %q: block [%d, +%d) is not before its record at %d", ErrFormat, r.name, r.blockOff, r.blockLen, limit)
	}
	return nil
}

func checkFile(r *record, public bool, limit int64) error {
	cl := contentLen(public, r.size)
	if r.contentOff < HeaderSize || r.contentOff+cl > limit {
		return fmt.Errorf("%w: file %q: content [%d, +%d) is not before its record at %d", ErrFormat, r.name, r.contentOff, cl, limit)
	}
	return nil
}

func entryOf(r *record, l *loc) Entry {
	e := Entry{Name: r.name, Kind: r.kind, Mode: r.mode, Addr: r.addr, loc: l}
	if r.mtime != 0 {
		e.ModTime = time.Unix(0, r.mtime)
	}
	switch r.kind {
	case KindDir:
		e.Size, e.NextIndex = r.count, r.next
	case KindFile:
		e.Size = r.size
	case KindSymlink:
		e.Size, e.Target = int64(len(r.target)), r.target
	case KindImage:
		n := r.nested
		n.Servers = append([]string(nil), n.Servers...)
		e.Nested, e.Size = &n, n.Ref.Size
	}
	return e
}

// Ref is the image's reference.
func (im *Image) Ref() Ref { return im.ref }

// Root is the image's root folder (the mount point).
func (im *Image) Root() Entry { return im.root }

// fetchAt reads [off, off+n) of the image, served from the tail already
// read when it holds the range.
func (im *Image) fetchAt(ctx context.Context, off, n int64, check func([]byte) error) ([]byte, error) {
	if off < 0 || n < 0 || off > im.ref.Size || n > im.ref.Size-off {
		return nil, fmt.Errorf("%w: range [%d, +%d) outside the %d-byte image", ErrFormat, off, n, im.ref.Size)
	}
	if off >= im.tailOff && off+n <= im.tailOff+int64(len(im.tail)) {
		b := append([]byte(nil), im.tail[off-im.tailOff:off-im.tailOff+n]...)
		if check == nil || check(b) == nil {
			return b, nil
		}
	}
	return im.f.fetch(ctx, off, n, check)
}

// List returns a folder's entries in index order. dir must come from
// this image (or one nested in it, when it is listed through this one):
// the root, or an entry List, Lookup or Stat returned. A nested image
// entry lists its image's root.
func (im *Image) List(ctx context.Context, dir Entry) ([]Entry, error) {
	d, err := im.listing(ctx, dir, true)
	if err != nil {
		return nil, err
	}
	return append([]Entry(nil), d.entries...), nil
}

// Lookup finds name in the folder dir.
func (im *Image) Lookup(ctx context.Context, dir Entry, name string) (Entry, error) {
	d, err := im.listing(ctx, dir, true)
	if err != nil {
		return Entry{}, err
	}
	i, ok := d.byName[name]
	if !ok {
		return Entry{}, fmt.Errorf("%w: %q in %q", ErrNotFound, name, dir.Path())
	}
	return d.entries[i], nil
}

func (im *Image) listing(ctx context.Context, dir Entry, cache bool) (*dirCache, error) {
	if dir.loc == nil {
		return nil, errors.New("image: entry does not come from an image")
	}
	if dir.Kind == KindImage {
		n, err := im.OpenNested(ctx, dir, nil)
		if err != nil {
			return nil, err
		}
		return n.listing(ctx, n.root, cache)
	}
	if dir.Kind != KindDir {
		return nil, fmt.Errorf("%w: %q is a %s", ErrNotDir, dir.Path(), dir.Kind)
	}
	owner := dir.loc.img
	if cache {
		owner.mu.Lock()
		d := owner.dirs[dir.loc.path]
		owner.mu.Unlock()
		if d != nil {
			return d, nil
		}
	}
	entries, err := owner.readBlock(ctx, dir.loc)
	if err != nil {
		return nil, err
	}
	d := &dirCache{entries: entries, byName: make(map[string]int, len(entries))}
	for i, e := range entries {
		d.byName[e.Name] = i
	}
	if cache {
		owner.mu.Lock()
		if owner.cached+len(entries) > owner.opts.CacheEntries {
			clear(owner.dirs)
			owner.cached = 0
		}
		owner.dirs[dir.loc.path] = d
		owner.cached += len(entries)
		owner.mu.Unlock()
	}
	return d, nil
}

// readBlock fetches, checks and decodes a folder's block.
func (im *Image) readBlock(ctx context.Context, parent *loc) ([]Entry, error) {
	rec := parent.rec
	if rec.count == 0 {
		return nil, nil
	}
	what := fmt.Sprintf("block of %q", parent.path)
	block, err := im.fetchAt(ctx, rec.blockOff, rec.blockLen, hashCheck(rec.blockHash, what))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", im.ref, err)
	}
	d := decoder{b: block, what: what}
	// count is checked against the block as frames are read, not trusted
	// for allocation.
	out := make([]Entry, 0, min(rec.count, 1024))
	names := make(map[string]bool, min(rec.count, 1024))
	prev := int64(-1)
	for i := int64(0); i < rec.count; i++ {
		idx := d.uvarint("index")
		if d.err == nil && (idx >= uint64(rec.next) || int64(idx) <= prev) {
			d.fail("index %d after %d (next index %d)", idx, prev, rec.next)
		}
		raw := d.take(d.length(MaxRecord, "record"))
		if d.err != nil {
			return nil, d.err
		}
		prev = int64(idx)
		pt := raw
		var ck node.Keys
		if !im.ref.Public {
			if ck, err = parent.keys.Child(uint32(idx), [20]byte{}); err != nil {
				return nil, fmt.Errorf("image: deriving child %d of %q: %w", idx, parent.path, err)
			}
			if pt, err = openRecord(&ck, raw); err != nil {
				return nil, fmt.Errorf("%s: entry %d of %q: %w", im.ref, idx, parent.path, err)
			}
		}
		r, err := decodeRecord(pt, im.ref.Public, false)
		if err != nil {
			return nil, fmt.Errorf("%s: entry %d of %q: %w", im.ref, idx, parent.path, err)
		}
		childPath := joinPath(parent.path, r.name)
		switch r.kind {
		case KindDir:
			if parent.depth+1 >= MaxDepth {
				return nil, fmt.Errorf("%w: %q is nested deeper than %d folders", ErrFormat, childPath, MaxDepth)
			}
			err = checkDir(r, rec.blockOff)
		case KindFile:
			err = checkFile(r, im.ref.Public, rec.blockOff)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", im.ref, err)
		}
		if names[r.name] {
			return nil, fmt.Errorf("%w: %q holds %q twice", ErrFormat, parent.path, r.name)
		}
		names[r.name] = true
		l := &loc{img: im, rec: r, path: childPath, limit: rec.blockOff, depth: parent.depth + 1}
		l.indexes = append(append(make([]uint32, 0, len(parent.indexes)+1), parent.indexes...), uint32(idx))
		if !im.ref.Public && (r.kind == KindDir || r.kind == KindImage) {
			l.keys = ck
			l.keys.Addr = r.addr
		}
		e := entryOf(r, l)
		e.Index, e.Allocated = uint32(idx), true
		out = append(out, e)
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}

// OpenNested opens the nested image entry e names, from s or, if s is
// nil, from the store the Resolver gives. A private nested image is read
// with the keys of e's node; the Image is cached when it came from the
// Resolver.
func (im *Image) OpenNested(ctx context.Context, e Entry, s blob.Store) (*Image, error) {
	if e.loc == nil || e.Kind != KindImage || e.Nested == nil {
		return nil, fmt.Errorf("image: %q is not a nested image", e.Path())
	}
	owner := e.loc.img
	if owner.nesting+1 > MaxNesting {
		return nil, fmt.Errorf("%w: more than %d images deep at %q", ErrNested, MaxNesting, e.Path())
	}
	if s == nil {
		owner.mu.Lock()
		n := owner.nested[e.loc.path]
		owner.mu.Unlock()
		if n != nil {
			return n, nil
		}
		if owner.opts.Resolver == nil {
			return nil, fmt.Errorf("%w: %q is %s and no resolver was given", ErrNested, e.Path(), e.Nested.Ref)
		}
		var err error
		if s, err = owner.opts.Resolver.Store(ctx, *e.Nested); err != nil {
			return nil, fmt.Errorf("image: finding nested image %q: %w", e.Path(), err)
		}
	}
	opts := owner.opts
	opts.Keys = nil
	if !e.Nested.Ref.Public {
		k := e.loc.keys
		opts.Keys = &k
	}
	n, err := open(ctx, storeFetcher{s: s, hash: e.Nested.Ref.Hash}, e.Nested.Ref, opts, owner.nesting+1)
	if err != nil {
		return nil, fmt.Errorf("nested image %q: %w", e.Path(), err)
	}
	owner.mu.Lock()
	owner.nested[e.loc.path] = n
	owner.mu.Unlock()
	return n, nil
}

// resolve follows a path from the root, into nested images when a
// Resolver is set. With enter, a nested image at the end of the path
// resolves to its root.
func (im *Image) resolve(ctx context.Context, p string, enter bool) (Entry, error) {
	parts, err := splitPath(p)
	if err != nil {
		return Entry{}, err
	}
	cur := im.root
	for _, name := range parts {
		if cur.Kind == KindImage {
			n, err := im.OpenNested(ctx, cur, nil)
			if err != nil {
				return Entry{}, err
			}
			cur = n.root
		}
		if cur.Kind != KindDir {
			return Entry{}, fmt.Errorf("%w: %q in %q", ErrNotDir, cur.Name, p)
		}
		if cur, err = im.Lookup(ctx, cur, name); err != nil {
			return Entry{}, err
		}
	}
	if enter && cur.Kind == KindImage {
		n, err := im.OpenNested(ctx, cur, nil)
		if err != nil {
			return Entry{}, err
		}
		cur = n.root
	}
	return cur, nil
}

// Stat returns the entry at a slash path ("" is the root). A nested image
// at the end of the path is returned as itself (KindImage).
func (im *Image) Stat(ctx context.Context, p string) (Entry, error) {
	return im.resolve(ctx, p, false)
}

// ReadDir lists the folder (or nested image) at a path.
func (im *Image) ReadDir(ctx context.Context, p string) ([]Entry, error) {
	e, err := im.resolve(ctx, p, true)
	if err != nil {
		return nil, err
	}
	return im.List(ctx, e)
}

// Open opens the file at a path.
func (im *Image) Open(ctx context.Context, p string) (*File, error) {
	e, err := im.resolve(ctx, p, false)
	if err != nil {
		return nil, err
	}
	return im.OpenFile(ctx, e)
}

// ReadFile returns the content of the file at a path, refusing files
// larger than max bytes.
func (im *Image) ReadFile(ctx context.Context, p string, max int64) ([]byte, error) {
	f, err := im.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return f.ReadAll(ctx, max)
}

// WalkFunc is called for every entry Walk visits, with its path. Returning
// fs.SkipDir from a folder skips its entries; any other error stops the
// walk.
type WalkFunc func(path string, e Entry) error

// Walk visits the root and every entry below it, depth first in index
// order. It does not enter nested images (they are visited as
// KindImage entries). A hostile image cannot make it loop or revisit a
// folder: blocks must precede their records, a block may be listed only
// once, and at most MaxEntries entries are visited.
func (im *Image) Walk(ctx context.Context, fn WalkFunc) error {
	w := &walker{im: im, fn: fn, seen: make(map[int64]bool)}
	return w.walk(ctx, im.root)
}

type walker struct {
	im      *Image
	fn      WalkFunc
	seen    map[int64]bool
	entries int64
	regions []region // collected for Verify
	files   []Entry
	collect bool
}

type region struct{ off, n int64 }

func (w *walker) walk(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.entries++; w.entries > MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrFormat, MaxEntries)
	}
	err := w.fn(e.loc.path, e)
	if e.Kind != KindDir {
		if err == fs.SkipDir {
			err = nil
		}
		return err
	}
	if err == fs.SkipDir {
		return nil
	}
	if err != nil {
		return err
	}
	rec := e.loc.rec
	if rec.count > 0 {
		if w.seen[rec.blockOff] {
			return fmt.Errorf("%w: the block at %d is listed by more than one folder", ErrFormat, rec.blockOff)
		}
		w.seen[rec.blockOff] = true
		if w.collect {
			w.regions = append(w.regions, region{rec.blockOff, rec.blockLen})
		}
	}
	d, err := w.im.listing(ctx, e, false)
	if err != nil {
		return err
	}
	for _, c := range d.entries {
		if err := w.walk(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// Verify checks the whole image: every record, every content chunk
// (every chunk hash of a public image; every chunk tag and the embedded
// blob hash of a private one), and that the header, contents, blocks,
// root record and trailer tile the image exactly, with nothing shared,
// overlapping or left over. It does not recompute the image hash — the
// store checks that on every Put and Get. Nested images are not entered.
func (im *Image) Verify(ctx context.Context) error {
	hdr, err := im.fetchAt(ctx, 0, HeaderSize, nil)
	if err != nil {
		return err
	}
	if string(hdr) != "IGI\x01" {
		return fmt.Errorf("%w: %s: header %x", ErrFormat, im.ref, hdr)
	}
	w := &walker{im: im, seen: make(map[int64]bool), collect: true}
	w.regions = []region{{0, HeaderSize}, {im.rootOff, im.ref.Size - im.rootOff}}
	w.fn = func(p string, e Entry) error {
		if e.Kind == KindFile {
			w.regions = append(w.regions, region{e.loc.rec.contentOff, contentLen(im.ref.Public, e.Size)})
			w.files = append(w.files, e)
		}
		return nil
	}
	if err := w.walk(ctx, im.root); err != nil {
		return err
	}
	sortRegions(w.regions)
	var at int64
	for _, r := range w.regions {
		if r.off > at {
			return fmt.Errorf("%w: %s: bytes [%d, %d) belong to no entry", ErrFormat, im.ref, at, r.off)
		}
		if r.off < at {
			return fmt.Errorf("%w: %s: bytes [%d, %d) belong to two entries", ErrFormat, im.ref, r.off, at)
		}
		at += r.n
	}
	if at != im.ref.Size {
		return fmt.Errorf("%w: %s: regions end at %d", ErrFormat, im.ref, at)
	}
	for _, e := range w.files {
		f, err := im.OpenFile(ctx, e)
		if err != nil {
			return err
		}
		if err := f.verify(ctx); err != nil {
			return fmt.Errorf("%s: %q: %w", im.ref, e.loc.path, err)
		}
	}
	return nil
}

// fetcher reads byte ranges of one image, accepting a copy only if check
// (when not nil) passes.
type fetcher interface {
	fetch(ctx context.Context, off, n int64, check func([]byte) error) ([]byte, error)
}

type storeFetcher struct {
	s    blob.Store
	hash [32]byte
}

func (f storeFetcher) fetch(ctx context.Context, off, n int64, check func([]byte) error) ([]byte, error) {
	m, ok := f.s.(*blob.Multi)
	if !ok {
		b, err := f.s.GetRange(ctx, f.hash, off, n)
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != n {
			return nil, fmt.Errorf("%w: range [%d, +%d) returned %d bytes", ErrMismatch, off, n, len(b))
		}
		if check != nil {
			if err := check(b); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	// Each store in turn; a copy whose bytes fail the check is the
	// store's fault (ErrHashMismatch), so Multi reports it and moves on.
	// A one-store Multi's GetRange marks the store's own failures the
	// same way.
	var out []byte
	err := m.Each(ctx, f.hash, func(s blob.Store) error {
		b, err := blob.NewMulti(nil, s).GetRange(ctx, f.hash, off, n)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(b); err != nil {
				return fmt.Errorf("%w: %w", blob.ErrHashMismatch, err)
			}
		}
		out = b
		return nil
	})
	return out, err
}

type readerAtFetcher struct{ r io.ReaderAt }

func (f readerAtFetcher) fetch(ctx context.Context, off, n int64, check func([]byte) error) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	k, err := f.r.ReadAt(b, off)
	if k == len(b) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("image: reading [%d, +%d): %w", off, n, err)
	}
	if check != nil {
		if err := check(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}
