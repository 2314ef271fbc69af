package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/node"
)

// PackOptions configure Pack.
type PackOptions struct {
	// Public packs a public image: nothing is encrypted, and Keys are
	// not needed.
	Public bool
	// Keys are the mount node's keys, required for a private image. Each
	// entry is sealed with a key derived from its allocated child node's
	// read key; with the write key, records also name the nodes'
	// addresses.
	Keys *node.Keys
	// Progress, if set, is called as content is written, with the bytes
	// of the image written so far.
	Progress func(written int64)
	// Usable, if set, vets each fresh child index of a private image by
	// its node's keys; an index it refuses is skipped (never allocated),
	// as the tree skips indexes whose address a chain cannot look up.
	Usable func(child node.Keys) bool
}

// Pack writes the tree src describes to w as one image and returns its
// Ref. Memory is bounded by one folder's records per level plus a copy
// buffer, whatever the size of the files; a public file's chunk table
// (32 bytes per 64 KiB) is also held while it is written.
//
// Entries carrying a location in another image of the same visibility
// (from Image.Source, possibly through Overlay) have their content copied
// as stored — verified, not re-encrypted — so an updated image shares
// those bytes with the old one and their delta stays small.
func Pack(ctx context.Context, w io.Writer, src Source, opts PackOptions) (Ref, error) {
	if !opts.Public && opts.Keys == nil {
		return Ref{}, errors.New("image: a private image needs the mount node's keys")
	}
	// Content arrives in 64 KiB chunks and records in small pieces:
	// buffer them into fewer, larger writes.
	bw := bufio.NewWriterSize(w, 256<<10)
	p := &packer{src: src, public: opts.Public, w: bw, h: sha256.New(), progress: opts.Progress, usable: opts.Usable}
	root, err := src.Stat(ctx, "")
	if err != nil {
		return Ref{}, fmt.Errorf("image: reading the root: %w", err)
	}
	if root.Kind != KindDir {
		return Ref{}, fmt.Errorf("image: the root is a %s, not a folder", root.Kind)
	}
	hdr := [HeaderSize]byte{'I', 'G', 'I', Version}
	if err := p.write(hdr[:]); err != nil {
		return Ref{}, err
	}
	var keys *node.Keys
	if !opts.Public {
		k := *opts.Keys
		keys = &k
	}
	rec := &record{kind: KindDir, mode: root.Mode & 0o7777, mtime: unixNano(root)}
	if keys != nil && keys.HasWrite {
		rec.addr = keys.Addr
	}
	if err := p.dir(ctx, "", keys, root.NextIndex, 0, rec); err != nil {
		return Ref{}, err
	}
	rootBytes, err := p.seal(rec, keys)
	if err != nil {
		return Ref{}, err
	}
	if err := p.write(rootBytes); err != nil {
		return Ref{}, err
	}
	var tr [TrailerSize]byte
	if opts.Public {
		tr[0] = FlagPublic
	}
	binary.BigEndian.PutUint32(tr[4:8], uint32(len(rootBytes)))
	copy(tr[8:], "IGI\x01")
	if err := p.write(tr[:]); err != nil {
		return Ref{}, err
	}
	if err := bw.Flush(); err != nil {
		return Ref{}, fmt.Errorf("image: writing: %w", err)
	}
	p.report()
	if p.off > MaxImageSize {
		return Ref{}, fmt.Errorf("%w: image of %d bytes exceeds %d", ErrTooLarge, p.off, int64(MaxImageSize))
	}
	ref := Ref{Size: p.off, Root: sha256.Sum256(rootBytes), Public: opts.Public}
	p.h.Sum(ref.Hash[:0])
	return ref, nil
}

type packer struct {
	src      Source
	public   bool
	w        io.Writer
	h        hash.Hash
	off      int64
	entries  int64
	progress func(int64)
	usable   func(node.Keys) bool
	buf      []byte
	reported int64 // p.off at the last progress report
}

// Write makes the packer the io.Writer content is encrypted into.
func (p *packer) Write(b []byte) (int, error) {
	if err := p.write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (p *packer) write(b []byte) error {
	n, err := p.w.Write(b)
	p.h.Write(b[:n])
	p.off += int64(n)
	if p.progress != nil && p.off-p.reported >= 1<<20 {
		p.report()
	}
	if err != nil {
		return fmt.Errorf("image: writing at offset %d: %w", p.off, err)
	}
	if n != len(b) {
		return fmt.Errorf("image: writing at offset %d: %w", p.off, io.ErrShortWrite)
	}
	return nil
}

func (p *packer) seal(r *record, keys *node.Keys) ([]byte, error) {
	pt, err := r.encode(nil, p.public)
	if err != nil {
		return nil, err
	}
	if p.public {
		return pt, nil
	}
	return sealRecord(keys, pt)
}

func unixNano(e Entry) int64 {
	if e.ModTime.IsZero() {
		return 0
	}
	return e.ModTime.UnixNano()
}

// allocate gives every entry an index: allocated ones keep theirs, the
// others follow all indexes in use (and next) in name order, skipping
// indexes usable refuses. It returns the entries in index order and the
// folder's new next index.
func allocate(dir string, entries []Entry, next uint32, usable func(uint32) (bool, error)) ([]Entry, uint32, error) {
	used := make(map[uint32]bool)
	names := make(map[string]bool, len(entries))
	var fresh []int
	for i, e := range entries {
		if err := ValidName(e.Name); err != nil {
			return nil, 0, fmt.Errorf("image: in %q: %w", dir, err)
		}
		if names[e.Name] {
			return nil, 0, fmt.Errorf("image: %q holds %q twice", dir, e.Name)
		}
		names[e.Name] = true
		if !e.Allocated {
			fresh = append(fresh, i)
			continue
		}
		if e.Index >= MaxIndex || used[e.Index] {
			return nil, 0, fmt.Errorf("image: %q: index %d of %q is out of range or taken", dir, e.Index, e.Name)
		}
		used[e.Index] = true
		if e.Index >= next {
			next = e.Index + 1
		}
	}
	sort.Slice(fresh, func(a, b int) bool { return entries[fresh[a]].Name < entries[fresh[b]].Name })
	out := append([]Entry(nil), entries...)
	for _, i := range fresh {
		for {
			if next >= MaxIndex {
				return nil, 0, fmt.Errorf("%w: %q has no child index left", ErrTooLarge, dir)
			}
			ok := true
			if usable != nil {
				var err error
				if ok, err = usable(next); err != nil {
					return nil, 0, err
				}
			}
			if ok {
				break
			}
			next++
		}
		out[i].Index, out[i].Allocated = next, true
		next++
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	return out, next, nil
}

// dir writes the contents and subfolders of the folder at path, then its
// block of child records, and fills rec's folder fields. keys are the
// folder's node keys (nil for a public image).
func (p *packer) dir(ctx context.Context, path string, keys *node.Keys, next uint32, depth int, rec *record) error {
	if depth >= MaxDepth {
		return fmt.Errorf("%w: %q is nested deeper than %d folders", ErrTooLarge, path, MaxDepth)
	}
	list, err := p.src.ReadDir(ctx, path)
	if err != nil {
		return fmt.Errorf("image: listing %q: %w", path, err)
	}
	if len(list) > MaxDirEntries {
		return fmt.Errorf("%w: %q holds %d entries, at most %d", ErrTooLarge, path, len(list), MaxDirEntries)
	}
	if p.entries += int64(len(list)); p.entries > MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooLarge, MaxEntries)
	}
	var usable func(uint32) (bool, error)
	if keys != nil && p.usable != nil {
		usable = func(i uint32) (bool, error) {
			c, err := keys.Child(i, [20]byte{})
			if err != nil {
				return false, nil // an invalid BIP32 child: skip it
			}
			return p.usable(c), nil
		}
	}
	list, next, err = allocate(path, list, next, usable)
	if err != nil {
		return err
	}
	var block []byte
	for _, e := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		cp := joinPath(path, e.Name)
		r := &record{kind: e.Kind, name: e.Name, mode: e.Mode & 0o7777, mtime: unixNano(e)}
		var ck *node.Keys
		if keys != nil {
			c, err := keys.Child(e.Index, [20]byte{})
			if err != nil {
				return fmt.Errorf("image: deriving the node of %q: %w", cp, err)
			}
			ck = &c
			if c.HasWrite {
				r.addr = c.Addr
			}
		}
		switch e.Kind {
		case KindFile:
			if err := p.file(ctx, cp, e, r); err != nil {
				return err
			}
		case KindDir:
			if err := p.dir(ctx, cp, ck, e.NextIndex, depth+1, r); err != nil {
				return err
			}
		case KindSymlink:
			if e.Target == "" || len(e.Target) > MaxTarget || containsNUL(e.Target) {
				return fmt.Errorf("%w: symlink %q: target must be 1 to %d bytes without NUL", ErrFormat, cp, MaxTarget)
			}
			r.target = e.Target
		case KindImage:
			if e.Nested == nil {
				return fmt.Errorf("image: nested image %q has no reference", cp)
			}
			if err := e.Nested.validate(); err != nil {
				return fmt.Errorf("image: nested image %q: %w", cp, err)
			}
			if p.public && !e.Nested.Ref.Public {
				// Its records are sealed for a node's keys, which a public
				// image gives nobody: no reader could open it.
				return fmt.Errorf("image: %q is a private image: a public image can only incorporate public ones", cp)
			}
			r.nested = Nested{Ref: e.Nested.Ref, Servers: append([]string(nil), e.Nested.Servers...)}
		default:
			return fmt.Errorf("image: %q has unknown kind %d", cp, e.Kind)
		}
		sealed, err := p.seal(r, ck)
		if err != nil {
			return fmt.Errorf("image: %q: %w", cp, err)
		}
		block = binary.AppendUvarint(block, uint64(e.Index))
		block = binary.AppendUvarint(block, uint64(len(sealed)))
		block = append(block, sealed...)
		if len(block) > MaxBlock {
			return fmt.Errorf("%w: the records of %q exceed %d bytes", ErrTooLarge, path, MaxBlock)
		}
	}
	rec.next, rec.count = next, int64(len(list))
	if len(list) > 0 {
		rec.blockOff, rec.blockLen = p.off, int64(len(block))
		rec.blockHash = sha256.Sum256(block)
		if err := p.write(block); err != nil {
			return err
		}
	}
	return nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// file writes a file's content region and fills rec's file fields.
func (p *packer) file(ctx context.Context, path string, e Entry, rec *record) error {
	if e.Size < 0 || e.Size > MaxFileSize {
		return fmt.Errorf("%w: %q is %d bytes, at most %d", ErrTooLarge, path, e.Size, int64(MaxFileSize))
	}
	rec.size, rec.contentOff = e.Size, p.off
	if e.loc != nil && e.loc.rec != nil && e.loc.rec.kind == KindFile && e.loc.img.ref.Public == p.public && e.loc.rec.size == e.Size {
		return p.reuse(ctx, path, e.loc, rec)
	}
	rc, err := p.src.Open(ctx, path)
	if err != nil {
		return fmt.Errorf("image: opening %q: %w", path, err)
	}
	defer rc.Close()
	in := &exactReader{r: rc, left: e.Size, path: path}
	if p.public {
		return p.publicContent(ctx, in, rec)
	}
	ref, err := blob.EncryptReader(ctx, in, p)
	if err != nil {
		return fmt.Errorf("image: %q: %w", path, err)
	}
	if ref.PlainSize != e.Size {
		return fmt.Errorf("image: %q: read %d bytes, expected %d", path, ref.PlainSize, e.Size)
	}
	rec.blobHash, rec.blobKey = ref.Hash, ref.Key
	p.report()
	return nil
}

func (p *packer) report() {
	if p.progress != nil {
		p.reported = p.off
		p.progress(p.off)
	}
}

// publicContent writes data ‖ L1 ‖ L2 (see the package doc).
func (p *packer) publicContent(ctx context.Context, in io.Reader, rec *record) error {
	if p.buf == nil {
		p.buf = make([]byte, blob.ChunkSize)
	}
	n := numChunks(rec.size)
	l1 := make([]byte, 0, sha256.Size*n)
	for i := int64(0); i < n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := p.buf[:min(blob.ChunkSize, rec.size-i*blob.ChunkSize)]
		if _, err := io.ReadFull(in, c); err != nil {
			return err
		}
		sum := sha256.Sum256(c)
		l1 = append(l1, sum[:]...)
		if err := p.write(c); err != nil {
			return err
		}
	}
	if _, err := in.Read(p.buf[:1]); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("image: a file grew while it was packed")
		}
		return err
	}
	l2 := level2(l1)
	rec.tableHash = sha256.Sum256(l2)
	if err := p.write(l1); err != nil {
		return err
	}
	p.report()
	return p.write(l2)
}

// l1Block is how many chunk hashes one level-2 hash covers (one 64 KiB
// block of the level-1 table).
const l1Block = blob.ChunkSize / sha256.Size

// level2 hashes each 64 KiB block of the level-1 table.
func level2(l1 []byte) []byte {
	var out []byte
	for i := 0; i < len(l1); i += blob.ChunkSize {
		sum := sha256.Sum256(l1[i:min(len(l1), i+blob.ChunkSize)])
		out = append(out, sum[:]...)
	}
	return out
}

// exactReader yields exactly left bytes of r and fails if r ends sooner
// or goes on longer: a file changed while it was packed.
type exactReader struct {
	r    io.Reader
	left int64
	path string
}

func (x *exactReader) Read(b []byte) (int, error) {
	if x.left == 0 {
		var one [1]byte
		for {
			n, err := x.r.Read(one[:])
			if n > 0 {
				return 0, fmt.Errorf("image: %q grew while it was packed", x.path)
			}
			if err == io.EOF {
				return 0, io.EOF
			}
			if err != nil {
				return 0, fmt.Errorf("image: reading %q: %w", x.path, err)
			}
		}
	}
	if int64(len(b)) > x.left {
		b = b[:x.left]
	}
	n, err := x.r.Read(b)
	x.left -= int64(n)
	if err == io.EOF {
		if x.left > 0 {
			return n, fmt.Errorf("image: %q shrank while it was packed (%d bytes missing)", x.path, x.left)
		}
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("image: reading %q: %w", x.path, err)
	}
	return n, nil
}
