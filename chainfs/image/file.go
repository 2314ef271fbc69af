package image

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
)

// windowChunks is how many content chunks one request fetches (4 MiB),
// as blob.Reader does: memory stays bounded and a bad copy costs at most
// one window.
const windowChunks = 64

const sealedChunk = blob.ChunkSize + blob.TagSize

// File reads one file of an image by range. Safe for concurrent use.
type File struct {
	im   *Image
	rec  *record
	path string

	mu  sync.Mutex
	l2  []byte // public: the verified level-2 table
	l1j int64  // public: index of the cached level-1 block
	l1  []byte // public: that block, verified
	// next is where the last read ended, seq how many reads in a row
	// began near it: the second such read turns on read-ahead.
	next int64
	seq  int
	read bool // a read happened (next means something)
}

// Read-ahead. A program reading a file front to back through the mount
// asks for 128 KiB at a time; fetching each from an image server costs a
// round trip (500 MB of photos: ~4,000 requests). Once reads are
// sequential — from the start, or continuing the last — a read fetches
// the whole aligned window
// (windowChunks chunks, 4 MiB) around it — one request, checked as usual
// — and keeps its plaintext in the Image's small cache, where the next
// reads find it. The cache holds at most maxWindows windows per image
// (16 MiB), so many half-read files cannot grow memory.
const maxWindows = 4

type windowKey struct {
	rec *record
	a   int64 // first chunk of the window
}

type windowCache struct {
	mu   sync.Mutex
	wins []cachedWindow // most recently used last
	// fetching: windows being fetched, so reads the kernel issues at once
	// for one window wait for one fetch instead of each making their own.
	fetching map[windowKey]*windowFetch
}

type windowFetch struct {
	done  chan struct{}
	plain []byte
	err   error
}

// known reports whether window k is cached or being fetched: the reads of
// one window each ask, and only the first starts a prefetch.
func (c *windowCache) known(k windowKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.fetching[k]; ok {
		return true
	}
	for _, w := range c.wins {
		if w.key == k {
			return true
		}
	}
	return false
}

// load returns window k from the cache, or fetches it once however many
// readers ask at the same time.
func (c *windowCache) load(ctx context.Context, k windowKey, fetch func() ([]byte, error)) ([]byte, error) {
	if plain := c.get(k); plain != nil {
		return plain, nil
	}
	c.mu.Lock()
	if w, ok := c.fetching[k]; ok {
		c.mu.Unlock()
		select {
		case <-w.done:
			return w.plain, w.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.fetching == nil {
		c.fetching = map[windowKey]*windowFetch{}
	}
	w := &windowFetch{done: make(chan struct{})}
	c.fetching[k] = w
	c.mu.Unlock()
	w.plain, w.err = fetch()
	if w.err == nil {
		c.put(k, w.plain)
	}
	c.mu.Lock()
	delete(c.fetching, k)
	c.mu.Unlock()
	close(w.done)
	return w.plain, w.err
}

type cachedWindow struct {
	key   windowKey
	plain []byte
}

func (c *windowCache) get(k windowKey) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, w := range c.wins {
		if w.key == k {
			c.wins = append(append(c.wins[:i:i], c.wins[i+1:]...), w)
			return w.plain
		}
	}
	return nil
}

func (c *windowCache) put(k windowKey, plain []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, w := range c.wins {
		if w.key == k {
			c.wins = append(c.wins[:i], c.wins[i+1:]...)
			break
		}
	}
	if len(c.wins) >= maxWindows {
		c.wins = append(c.wins[:0], c.wins[1:]...)
	}
	c.wins = append(c.wins, cachedWindow{k, plain})
}

// sequential records a read of [off, end) and reports whether it
// continues the previous ones (within a window's reach of where they
// ended: the kernel issues read-ahead requests slightly out of order), or
// is the first, from the start.
func (f *File) sequential(off, end int64) bool {
	const reach = windowChunks * blob.ChunkSize
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.read && off >= f.next-reach && off <= f.next+reach:
		f.seq++
		f.next = max(f.next, end)
	case !f.read && off == 0:
		// Reading from the start is how whole-file readers (cp, tar,
		// viewers) begin: read ahead at once.
		f.seq, f.next = 1, end
	default:
		f.seq, f.next = 0, end
	}
	f.read = true
	return f.seq >= 1
}

// OpenFile opens a file entry of this image (or of one nested in it).
// It does no I/O.
func (im *Image) OpenFile(ctx context.Context, e Entry) (*File, error) {
	if e.loc == nil {
		return nil, errors.New("image: entry does not come from an image")
	}
	switch e.Kind {
	case KindFile:
	case KindDir, KindImage:
		return nil, fmt.Errorf("%w: %q", ErrIsDir, e.loc.path)
	default:
		return nil, fmt.Errorf("image: %q is a %s, not a file", e.loc.path, e.Kind)
	}
	return &File{im: e.loc.img, rec: e.loc.rec, path: e.loc.path, l1j: -1}, nil
}

// Size is the file's length.
func (f *File) Size() int64 { return f.rec.size }

// ReadAt implements io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext fills p from offset off, fetching only the chunks that
// cover it, each checked before use; it returns io.EOF with a short count
// at the end of the file.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	size := f.rec.size
	if off < 0 {
		return 0, fmt.Errorf("image: negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), size)
	first, last := off/blob.ChunkSize, (end-1)/blob.ChunkSize
	if f.sequential(off, end) {
		return f.readAhead(ctx, p, off, end, first, last)
	}
	for a := first; a <= last; a += windowChunks {
		b := min(a+windowChunks-1, last)
		plain, _, err := f.window(ctx, a, b)
		if err != nil {
			return 0, err
		}
		start := a * blob.ChunkSize
		lo, hi := max(start, off), min(start+int64(len(plain)), end)
		copy(p[lo-off:hi-off], plain[lo-start:hi-start])
	}
	n := int(end - off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readAhead serves [off, end) from whole aligned windows, fetching and
// caching those not in the Image's cache.
func (f *File) readAhead(ctx context.Context, p []byte, off, end, first, last int64) (int, error) {
	lastChunk := numChunks(f.rec.size) - 1
	for w := first / windowChunks * windowChunks; w <= last; w += windowChunks {
		plain, err := f.im.windows.load(ctx, windowKey{f.rec, w}, func() ([]byte, error) {
			plain, _, err := f.window(ctx, w, min(w+windowChunks-1, lastChunk))
			return plain, err
		})
		if err != nil {
			return 0, err
		}
		start := w * blob.ChunkSize
		lo, hi := max(start, off), min(start+int64(len(plain)), end)
		copy(p[lo-off:hi-off], plain[lo-start:hi-start])
	}
	// Fetch the next window while the reader consumes this one: the
	// fetch (server, network, checks) overlaps the reader's work.
	if next := (last/windowChunks + 1) * windowChunks; next <= lastChunk {
		k := windowKey{f.rec, next}
		if !f.im.windows.known(k) {
			go func() {
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), prefetchTimeout)
				defer cancel()
				_, _ = f.im.windows.load(bctx, k, func() ([]byte, error) {
					plain, _, err := f.window(bctx, next, min(next+windowChunks-1, lastChunk))
					return plain, err
				})
			}()
		}
	}
	n := int(end - off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// prefetchTimeout bounds a background fetch of the next window.
const prefetchTimeout = time.Minute

// ReadAll returns the whole content, refusing a file over max bytes.
func (f *File) ReadAll(ctx context.Context, max int64) ([]byte, error) {
	if f.rec.size > max {
		return nil, fmt.Errorf("%w: %q is %d bytes, limit %d", ErrTooLarge, f.path, f.rec.size, max)
	}
	out := make([]byte, f.rec.size)
	if _, err := f.ReadAtContext(ctx, out, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return out, nil
}

// WriteTo copies the whole content to w, one checked window at a time.
func (f *File) WriteTo(w io.Writer) (int64, error) {
	return f.Copy(context.Background(), w, nil)
}

// Copy copies the whole content to w, one checked window (4 MiB) at a
// time, calling progress (if set) with the bytes copied so far. On error,
// what was written must be discarded.
func (f *File) Copy(ctx context.Context, w io.Writer, progress func(int64)) (int64, error) {
	var done int64
	last := numChunks(f.rec.size) - 1
	for a := int64(0); a <= last; a += windowChunks {
		plain, _, err := f.window(ctx, a, min(a+windowChunks-1, last))
		if err != nil {
			return done, err
		}
		k, err := w.Write(plain)
		done += int64(k)
		if err != nil {
			return done, fmt.Errorf("image: writing %q: %w", f.path, err)
		}
		if progress != nil {
			progress(done)
		}
	}
	return done, nil
}

// chunkLen is the plaintext length of chunk i.
func (f *File) chunkLen(i int64) int64 {
	return min(blob.ChunkSize, f.rec.size-i*blob.ChunkSize)
}

// window returns the checked plaintext of chunks a..b (b-a < 64) and the
// stored bytes it came from.
func (f *File) window(ctx context.Context, a, b int64) ([]byte, []byte, error) {
	if f.im.ref.Public {
		return f.publicWindow(ctx, a, b)
	}
	return f.privateWindow(ctx, a, b)
}

// privateWindow fetches the sealed chunks a..b of the embedded blob and
// opens them with blob.Reader, which authenticates every chunk with the
// file's own key.
func (f *File) privateWindow(ctx context.Context, a, b int64) ([]byte, []byte, error) {
	encOff := blob.HeaderSize + a*sealedChunk
	encEnd := blob.HeaderSize + b*sealedChunk + f.chunkLen(b) + blob.TagSize
	ref := blob.Ref{Hash: f.rec.blobHash, Size: blob.EncryptedSize(f.rec.size), PlainSize: f.rec.size, Key: f.rec.blobKey}
	plainLen := (b-a)*blob.ChunkSize + f.chunkLen(b)
	var plain []byte
	raw, err := f.im.fetchAt(ctx, f.rec.contentOff+encOff, encEnd-encOff, func(data []byte) error {
		r, err := blob.NewReader(windowStore{off: encOff, data: data}, ref)
		if err != nil {
			return err
		}
		if plain, err = r.ReadRange(ctx, a*blob.ChunkSize, plainLen); err != nil {
			return fmt.Errorf("%w: %w", ErrMismatch, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %q: %w", f.im.ref, f.path, err)
	}
	return plain, raw, nil
}

// publicWindow fetches chunks a..b and checks each against the level-1
// table, itself checked against the level-2 table and the record.
func (f *File) publicWindow(ctx context.Context, a, b int64) ([]byte, []byte, error) {
	l1, err := f.level1(ctx, a, b)
	if err != nil {
		return nil, nil, err
	}
	off := f.rec.contentOff + a*blob.ChunkSize
	n := (b-a)*blob.ChunkSize + f.chunkLen(b)
	data, err := f.im.fetchAt(ctx, off, n, func(data []byte) error {
		for i := a; i <= b; i++ {
			c := data[(i-a)*blob.ChunkSize : (i-a)*blob.ChunkSize+f.chunkLen(i)]
			sum := sha256.Sum256(c)
			if subtle.ConstantTimeCompare(sum[:], l1[(i-a)*32:(i-a+1)*32]) != 1 {
				return fmt.Errorf("%w: chunk %d", ErrMismatch, i)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %q: %w", f.im.ref, f.path, err)
	}
	return data, data, nil
}

// level1 returns the checked chunk hashes a..b.
func (f *File) level1(ctx context.Context, a, b int64) ([]byte, error) {
	n := numChunks(f.rec.size)
	l1Off := f.rec.contentOff + f.rec.size
	l2, err := f.level2(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, (b-a+1)*32)
	for j := a / l1Block; j <= b/l1Block; j++ {
		f.mu.Lock()
		blk := f.l1
		if f.l1j != j {
			blk = nil
		}
		f.mu.Unlock()
		if blk == nil {
			cnt := min(l1Block, n-j*l1Block)
			blk, err = f.im.fetchAt(ctx, l1Off+j*l1Block*32, cnt*32, hashCheck([32]byte(l2[j*32:(j+1)*32]), "chunk table block"))
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f.im.ref, f.path, err)
			}
			f.mu.Lock()
			f.l1, f.l1j = blk, j
			f.mu.Unlock()
		}
		lo, hi := max(a, j*l1Block), min(b, j*l1Block+l1Block-1)
		out = append(out, blk[(lo-j*l1Block)*32:(hi-j*l1Block+1)*32]...)
	}
	return out, nil
}

// level2 returns the checked level-2 table, fetching it once.
func (f *File) level2(ctx context.Context) ([]byte, error) {
	f.mu.Lock()
	l2 := f.l2
	f.mu.Unlock()
	if l2 != nil {
		return l2, nil
	}
	n := numChunks(f.rec.size)
	m := (n + l1Block - 1) / l1Block
	off := f.rec.contentOff + f.rec.size + 32*n
	l2, err := f.im.fetchAt(ctx, off, 32*m, hashCheck(f.rec.tableHash, "chunk table"))
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w", f.im.ref, f.path, err)
	}
	f.mu.Lock()
	f.l2 = l2
	f.mu.Unlock()
	return l2, nil
}

// verify reads the whole content, checking every chunk; for a private
// file it also checks the embedded blob's header and hash.
func (f *File) verify(ctx context.Context) error {
	if f.im.ref.Public {
		_, err := f.Copy(ctx, io.Discard, nil)
		return err
	}
	h := sha256.New()
	hdr, err := f.im.fetchAt(ctx, f.rec.contentOff, blob.HeaderSize, nil)
	if err != nil {
		return err
	}
	h.Write(hdr)
	last := numChunks(f.rec.size) - 1
	for a := int64(0); a <= last; a += windowChunks {
		_, raw, err := f.window(ctx, a, min(a+windowChunks-1, last))
		if err != nil {
			return err
		}
		h.Write(raw)
	}
	if sum := h.Sum(nil); subtle.ConstantTimeCompare(sum, f.rec.blobHash[:]) != 1 {
		return fmt.Errorf("%w: content blob hashes to %x", ErrMismatch, sum[:8])
	}
	return nil
}

// windowStore serves one fetched window to blob.Reader, which asks for
// exactly that range.
type windowStore struct {
	off  int64
	data []byte
}

var errWindow = errors.New("image: internal: range outside the fetched window")

func (w windowStore) GetRange(_ context.Context, _ [32]byte, off, n int64) ([]byte, error) {
	if off != w.off || n != int64(len(w.data)) {
		return nil, errWindow
	}
	// blob.Reader decrypts in place; the caller keeps the stored bytes.
	return append([]byte(nil), w.data...), nil
}
func (windowStore) Put(context.Context, [32]byte, io.Reader, int64) error { return errWindow }
func (windowStore) Get(context.Context, [32]byte) (io.ReadCloser, error)  { return nil, errWindow }
func (windowStore) Has(context.Context, [32]byte) (bool, error)           { return false, errWindow }
func (windowStore) Delete(context.Context, [32]byte) error                { return errWindow }

func sortRegions(r []region) {
	sort.Slice(r, func(i, j int) bool { return r[i].off < r[j].off })
}
