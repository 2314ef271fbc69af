package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/chainfs/node"
)

func testKeys(t testing.TB, seed byte) node.Keys {
	t.Helper()
	var r, w [64]byte
	for i := range r {
		r[i], w[i] = seed+byte(i), seed^byte(3*i+1)
	}
	k, err := node.RootKeys(r, w)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// tree is a test directory: path → content (files), "dir/" suffix for
// folders, "->target" prefix for symlinks.
type tree map[string]string

func writeTree(t testing.TB, dir string, tr tree) {
	t.Helper()
	paths := make([]string, 0, len(tr))
	for p := range tr {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, p := range paths {
		v := tr[p]
		full := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(p, "/")))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			if err := os.MkdirAll(full, 0o750); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(v, "->"):
			if err := os.Symlink(v[2:], full); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			if err := os.WriteFile(full, []byte(v), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(full, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func sampleTree() tree {
	return tree{
		"empty.txt":            "",
		"hello.txt":            "hello, image",
		"chunk.bin":            string(randBytes(blob.ChunkSize, 1)),
		"chunk+1.bin":          string(randBytes(blob.ChunkSize+1, 2)),
		"big.bin":              string(randBytes(300_000, 3)),
		"docs/":                "",
		"docs/a.md":            "# a",
		"docs/deep/":           "",
		"docs/deep/er/":        "",
		"docs/deep/er/x.txt":   "deep",
		"docs/empty/":          "",
		"link":                 "->docs/a.md",
		"ünïcode name.txt":     "names are UTF-8",
		"photos/":              "",
		"photos/photo-001.jpg": string(randBytes(5000, 4)),
	}
}

// packDir packs a local tree into a blob.Dir and returns the ref.
func packDir(t testing.TB, src string, opts PackOptions) (Ref, []byte) {
	t.Helper()
	l, err := LocalDir(src)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var buf bytes.Buffer
	ref, err := Pack(context.Background(), &buf, l, opts)
	if err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != ref.Size || sha256.Sum256(buf.Bytes()) != ref.Hash {
		t.Fatalf("ref %v does not describe the %d bytes written", ref, buf.Len())
	}
	return ref, buf.Bytes()
}

func newDirStore(t testing.TB) *blob.Dir {
	t.Helper()
	d, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func put(t testing.TB, s blob.Store, ref Ref, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), ref.Hash, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

// checkTree compares everything an image holds with the tree it came from.
func checkTree(t *testing.T, im *Image, tr tree) {
	t.Helper()
	ctx := context.Background()
	seen := map[string]bool{}
	err := im.Walk(ctx, func(p string, e Entry) error {
		if p == "" {
			return nil
		}
		key := p
		if e.Kind == KindDir {
			key += "/"
		}
		want, ok := tr[key]
		if !ok {
			return fmt.Errorf("unexpected entry %q (%s)", p, e.Kind)
		}
		seen[key] = true
		switch e.Kind {
		case KindFile:
			got, err := im.ReadFile(ctx, p, 1<<30)
			if err != nil {
				return err
			}
			if string(got) != want {
				return fmt.Errorf("%q: content differs (%d vs %d bytes)", p, len(got), len(want))
			}
			if e.Mode != 0o640 {
				return fmt.Errorf("%q: mode %o", p, e.Mode)
			}
		case KindSymlink:
			if "->"+e.Target != want {
				return fmt.Errorf("%q: target %q", p, e.Target)
			}
		case KindDir:
			if e.Mode != 0o750 && e.Mode != 0o755 {
				return fmt.Errorf("%q: mode %o", p, e.Mode)
			}
		}
		if e.Kind != KindSymlink && !e.ModTime.Equal(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)) && e.Kind != KindDir {
			return fmt.Errorf("%q: mtime %v", p, e.ModTime)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range tr {
		if !seen[p] {
			t.Errorf("entry %q missing from the image", p)
		}
	}
}

func TestPrivateImageRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	tr := sampleTree()
	writeTree(t, src, tr)
	mount := testKeys(t, 7)
	ref, data := packDir(t, src, PackOptions{Keys: &mount})
	if ref.Public {
		t.Fatal("private image marked public")
	}
	// Nothing readable in the blob: no names, no content.
	for _, needle := range []string{"hello, image", "photo-001", "docs", "deep"} {
		if bytes.Contains(data, []byte(needle)) {
			t.Errorf("private image holds %q in the clear", needle)
		}
	}
	store := newDirStore(t)
	put(t, store, ref, data)
	im, err := Open(ctx, store, ref, Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, im, tr)
	if err := im.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	// Each entry's record names its node, derived deterministically from
	// the mount node: the root's entries are M/0…M/n in name order.
	list, err := im.ReadDir(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(list))
	for i, e := range list {
		names[i] = e.Name
		if e.Index != uint32(i) || !e.Allocated {
			t.Fatalf("entry %q has index %d, want %d", e.Name, e.Index, i)
		}
		k, err := NodeKeys(mount, e.Indexes())
		if err != nil {
			t.Fatal(err)
		}
		c, _ := mount.Child(uint32(i), [20]byte{})
		if k.Addr != e.Addr || c.Addr != e.Addr {
			t.Fatalf("entry %q names address %x, its node is %x", e.Name, e.Addr, k.Addr)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Fatalf("fresh allocation is not in name order: %q", names)
	}
	deep, err := im.Stat(ctx, "docs/deep/er/x.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := deep.Indexes(); len(got) != 4 {
		t.Fatalf("deep entry has index path %v", got)
	}
	// Without keys, or with another node's keys, nothing opens.
	if _, err := Open(ctx, store, ref, Options{}); !errors.Is(err, ErrKeys) {
		t.Fatalf("open without keys: %v", err)
	}
	other := testKeys(t, 8)
	if _, err := Open(ctx, store, ref, Options{Keys: &other}); !errors.Is(err, ErrKeys) {
		t.Fatalf("open with wrong keys: %v", err)
	}
	// Read keys alone suffice.
	ro := mount.ReadOnly()
	im2, err := Open(ctx, store, ref, Options{Keys: &ro})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, im2, tr)
}

func TestPublicImage(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	tr := sampleTree()
	writeTree(t, src, tr)
	ref, data := packDir(t, src, PackOptions{Public: true})
	if !ref.Public {
		t.Fatal("public image not marked public")
	}
	if !bytes.Contains(data, []byte("hello, image")) {
		t.Fatal("public image content is not plain")
	}
	// Reproducible: the same tree packs to the same hash; progress ends
	// at the image's size.
	var last int64
	ref2, _ := packDir(t, src, PackOptions{Public: true, Progress: func(n int64) { last = n }})
	if last != ref.Size {
		t.Fatalf("last progress %d of %d", last, ref.Size)
	}
	if ref2 != ref {
		t.Fatalf("public packing is not deterministic: %v vs %v", ref, ref2)
	}
	store := newDirStore(t)
	put(t, store, ref, data)
	im, err := Open(ctx, store, ref, Options{}) // no keys at all
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, im, tr)
	if err := im.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	// A ref claiming the wrong visibility or root is refused.
	bad := ref
	bad.Public = false
	k := testKeys(t, 1)
	if _, err := Open(ctx, store, bad, Options{Keys: &k}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("visibility mismatch: %v", err)
	}
	bad = ref
	bad.Root[0] ^= 1
	if _, err := Open(ctx, store, bad, Options{}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("root mismatch: %v", err)
	}
	got, err := Inspect(ctx, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	got.Hash = ref.Hash
	if got != ref {
		t.Fatalf("Inspect: %v, want %v", got, ref)
	}
}

// countingStore counts the bytes fetched by range.
type countingStore struct {
	blob.Store
	mu      sync.Mutex
	fetched int64
	calls   int
}

func (c *countingStore) GetRange(ctx context.Context, h [32]byte, off, n int64) ([]byte, error) {
	c.mu.Lock()
	c.fetched += n
	c.calls++
	c.mu.Unlock()
	return c.Store.GetRange(ctx, h, off, n)
}

func TestRangedReadFetchesLittle(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public=%v", public), func(t *testing.T) {
			ctx := context.Background()
			src := t.TempDir()
			tr := tree{"small.txt": "just this", "sub/": ""}
			for i := range 40 {
				tr[fmt.Sprintf("sub/big-%02d.bin", i)] = string(randBytes(200_000, uint64(i)))
			}
			tr["huge.bin"] = string(randBytes(5<<20, 99))
			writeTree(t, src, tr)
			mount := testKeys(t, 3)
			ref, data := packDir(t, src, PackOptions{Keys: &mount, Public: public})
			cs := &countingStore{Store: newDirStore(t)}
			put(t, cs, ref, data)
			im, err := Open(ctx, cs, ref, Options{Keys: &mount})
			if err != nil {
				t.Fatal(err)
			}
			got, err := im.ReadFile(ctx, "small.txt", 100)
			if err != nil || string(got) != "just this" {
				t.Fatalf("%q, %v", got, err)
			}
			// A range in the middle of the 5 MiB file: one window.
			f, err := im.Open(ctx, "huge.bin")
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1000)
			off := int64(3<<20 + 12345)
			if _, err := f.ReadAtContext(ctx, buf, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, []byte(tr["huge.bin"][off:off+1000])) {
				t.Fatal("ranged read returned wrong bytes")
			}
			if cs.fetched > ref.Size/20 {
				t.Fatalf("fetched %d of %d bytes for one small file and one range", cs.fetched, ref.Size)
			}
			t.Logf("image %d bytes; fetched %d bytes in %d requests", ref.Size, cs.fetched, cs.calls)
			// Reading across the end.
			n, err := f.ReadAtContext(ctx, buf, f.Size()-10)
			if n != 10 || err != io.EOF || !bytes.Equal(buf[:10], []byte(tr["huge.bin"][f.Size()-10:])) {
				t.Fatalf("read at end: %d, %v", n, err)
			}
		})
	}
}

// tamperStore flips a byte of every range it serves.
type tamperStore struct{ blob.Store }

func (s tamperStore) GetRange(ctx context.Context, h [32]byte, off, n int64) ([]byte, error) {
	b, err := s.Store.GetRange(ctx, h, off, n)
	if err == nil && len(b) > 0 {
		b[len(b)/2] ^= 0x40
	}
	return b, err
}

func TestTamperedCopySkipped(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public=%v", public), func(t *testing.T) {
			ctx := context.Background()
			src := t.TempDir()
			tr := sampleTree()
			writeTree(t, src, tr)
			mount := testKeys(t, 4)
			ref, data := packDir(t, src, PackOptions{Keys: &mount, Public: public})
			bad, good := newDirStore(t), newDirStore(t)
			put(t, bad, ref, data)
			put(t, good, ref, data)
			var mu sync.Mutex
			var reports []error
			m := blob.NewMulti(func(i int, err error) {
				mu.Lock()
				defer mu.Unlock()
				if i != 0 {
					t.Errorf("good store %d reported: %v", i, err)
				}
				reports = append(reports, err)
			}, tamperStore{bad}, good)
			im, err := Open(ctx, m, ref, Options{Keys: &mount})
			if err != nil {
				t.Fatal(err)
			}
			checkTree(t, im, tr)
			if len(reports) == 0 {
				t.Fatal("the tampering store was never reported")
			}
			t.Logf("%d reports, first: %v", len(reports), reports[0])
			// With only the bad copy, reads fail cleanly.
			imBad, err := Open(ctx, tamperStore{bad}, ref, Options{Keys: &mount})
			if err == nil {
				_, err = imBad.ReadFile(ctx, "big.bin", 1<<20)
			}
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("reading the tampered copy: %v", err)
			}
		})
	}
}

func TestExtractRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	tr := sampleTree()
	writeTree(t, src, tr)
	mount := testKeys(t, 5)
	ref, data := packDir(t, src, PackOptions{Keys: &mount})
	im, err := OpenReaderAt(ctx, bytes.NewReader(data), ref, Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	var last int64
	if err := Extract(ctx, im, dst, ExtractOptions{Progress: func(n int64) { last = n }}); err != nil {
		t.Fatal(err)
	}
	if last == 0 {
		t.Fatal("no progress reported")
	}
	// Packing the extracted tree again gives the same listing.
	ref2, data2 := packDir(t, dst, PackOptions{Public: true})
	im2, err := OpenReaderAt(ctx, bytes.NewReader(data2), ref2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, im2, tr)
	if err := Extract(ctx, im, dst, ExtractOptions{}); err == nil {
		t.Fatal("extract into a non-empty folder succeeded")
	}
}

func TestNestedImages(t *testing.T) {
	ctx := context.Background()
	mount := testKeys(t, 6)
	stores := map[[32]byte]blob.Store{}
	resolver := ResolverFunc(func(_ context.Context, n Nested) (blob.Store, error) {
		s, ok := stores[n.Ref.Hash]
		if !ok || len(n.Servers) != 1 || n.Servers[0] != "https://images.example.org" {
			return nil, fmt.Errorf("no store for %v at %q", n.Ref, n.Servers)
		}
		return s, nil
	})
	// A public "song" image, and a private one packed for the node its
	// entry will get in the outer image (index 0 of "private", the first
	// entry of the root, which is allocated index 1 here by name order:
	// "album" < "private").
	songDir := t.TempDir()
	writeTree(t, songDir, tree{"song.ogg": "la la la", "lyrics/": "", "lyrics/en.txt": "la"})
	songRef, songData := packDir(t, songDir, PackOptions{Public: true})
	songStore := newDirStore(t)
	put(t, songStore, songRef, songData)
	stores[songRef.Hash] = songStore

	privNode, err := NodeKeys(mount, []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	privDir := t.TempDir()
	writeTree(t, privDir, tree{"secret.txt": "only for the owner"})
	privRef, privData := packDir(t, privDir, PackOptions{Keys: &privNode})
	privStore := newDirStore(t)
	put(t, privStore, privRef, privData)
	stores[privRef.Hash] = privStore

	src := &memSource{root: Entry{Kind: KindDir, Mode: 0o755}, dirs: map[string][]Entry{
		"": {
			{Name: "album", Kind: KindImage, Nested: &Nested{Ref: songRef, Servers: []string{"https://images.example.org"}}},
			{Name: "private", Kind: KindImage, Nested: &Nested{Ref: privRef, Servers: []string{"https://images.example.org"}}},
			{Name: "readme", Kind: KindFile, Mode: 0o644, Size: 5},
		},
	}, files: map[string][]byte{"readme": []byte("outer")}}
	var buf bytes.Buffer
	ref, err := Pack(ctx, &buf, src, PackOptions{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	outerStore := newDirStore(t)
	put(t, outerStore, ref, buf.Bytes())
	im, err := Open(ctx, outerStore, ref, Options{Keys: &mount, Resolver: resolver})
	if err != nil {
		t.Fatal(err)
	}
	e, err := im.Stat(ctx, "album")
	if err != nil || e.Kind != KindImage || e.Nested.Ref != songRef {
		t.Fatalf("album: %+v, %v", e, err)
	}
	got, err := im.ReadFile(ctx, "album/lyrics/en.txt", 100)
	if err != nil || string(got) != "la" {
		t.Fatalf("through the nested public image: %q, %v", got, err)
	}
	got, err = im.ReadFile(ctx, "private/secret.txt", 100)
	if err != nil || string(got) != "only for the owner" {
		t.Fatalf("through the nested private image: %q, %v", got, err)
	}
	list, err := im.ReadDir(ctx, "album")
	if err != nil || len(list) != 2 {
		t.Fatalf("listing a nested image: %v, %v", list, err)
	}
	// Without a resolver the path stops at the nested image.
	im2, err := Open(ctx, outerStore, ref, Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im2.ReadFile(ctx, "album/song.ogg", 100); !errors.Is(err, ErrNested) {
		t.Fatalf("without resolver: %v", err)
	}
	// But an explicit store works.
	n, err := im2.OpenNested(ctx, e, songStore)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := n.ReadFile(ctx, "song.ogg", 100); err != nil || string(got) != "la la la" {
		t.Fatalf("explicit nested: %q, %v", got, err)
	}
	dst := filepath.Join(t.TempDir(), "x")
	if err := Extract(ctx, im, dst, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "private", "secret.txt")); err != nil || string(b) != "only for the owner" {
		t.Fatalf("extracted nested: %q, %v", b, err)
	}
}

// memSource is a Source from maps, for tests.
type memSource struct {
	root  Entry
	dirs  map[string][]Entry
	files map[string][]byte
}

func (m *memSource) Stat(_ context.Context, p string) (Entry, error) {
	if p == "" {
		return m.root, nil
	}
	dir, name := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, name = p[:i], p[i+1:]
	}
	for _, e := range m.dirs[dir] {
		if e.Name == name {
			return e, nil
		}
	}
	return Entry{}, fs.ErrNotExist
}

func (m *memSource) ReadDir(_ context.Context, p string) ([]Entry, error) {
	return m.dirs[p], nil
}

func (m *memSource) Open(_ context.Context, p string) (io.ReadCloser, error) {
	b, ok := m.files[p]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestReimagePhotos(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	tr := tree{}
	for i := 1; i <= 30; i++ {
		tr[fmt.Sprintf("photo-%03d.jpg", i)] = string(randBytes(20_000+i*1000, uint64(i)))
	}
	writeTree(t, src, tr)
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public=%v", public), func(t *testing.T) {
			mount := testKeys(t, 9)
			ref, old := packDir(t, src, PackOptions{Keys: &mount, Public: public})
			im, err := OpenReaderAt(ctx, bytes.NewReader(old), ref, Options{Keys: &mount})
			if err != nil {
				t.Fatal(err)
			}
			photo23, err := im.Stat(ctx, "photo-023.jpg")
			if err != nil || photo23.Index != 22 {
				t.Fatalf("the 23rd photo: %+v, %v (the paper's m/34/0/0/22)", photo23, err)
			}
			edited := []byte("a new photo")
			ov, err := Overlay(im.Source(),
				Change{Path: "photo-023.jpg", Delete: true},
				Change{Path: "photo-005.jpg", Entry: Entry{Kind: KindFile, Mode: 0o600, Size: int64(len(edited))}, Open: func(context.Context) (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(edited)), nil
				}},
				Change{Path: "new.jpg", Entry: Entry{Kind: KindFile, Mode: 0o600, Size: 3}, Open: func(context.Context) (io.ReadCloser, error) {
					return io.NopCloser(strings.NewReader("new")), nil
				}},
			)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			ref2, err := Pack(ctx, &buf, ov, PackOptions{Keys: &mount, Public: public})
			if err != nil {
				t.Fatal(err)
			}
			neu := buf.Bytes()
			d := delta.Diff(old, neu)
			t.Logf("old %d bytes, new %d bytes, delta %d bytes", len(old), len(neu), len(d))
			if len(d) > len(old)/10 {
				t.Fatalf("delta of %d bytes for one deletion in a %d-byte image", len(d), len(old))
			}
			applied, err := delta.Apply(old, d, 1<<30)
			if err != nil || !bytes.Equal(applied, neu) {
				t.Fatalf("delta does not rebuild the new image: %v", err)
			}
			im2, err := OpenReaderAt(ctx, bytes.NewReader(neu), ref2, Options{Keys: &mount})
			if err != nil {
				t.Fatal(err)
			}
			if err := im2.Verify(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := im2.Stat(ctx, "photo-023.jpg"); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("deleted photo: %v", err)
			}
			// Every other photo keeps its node; the new one gets a fresh
			// index after all used ones; index 22 is never reused.
			list, err := im2.ReadDir(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 30 || im2.Root().NextIndex != 31 {
				t.Fatalf("%d entries, next index %d", len(list), im2.Root().NextIndex)
			}
			for _, e := range list {
				var want uint32
				if e.Name == "new.jpg" {
					want = 30
				} else {
					fmt.Sscanf(e.Name, "photo-%03d.jpg", &want)
					want--
				}
				if e.Index != want {
					t.Fatalf("%q moved to index %d, want %d", e.Name, e.Index, want)
				}
			}
			if got, err := im2.ReadFile(ctx, "photo-005.jpg", 100); err != nil || !bytes.Equal(got, edited) {
				t.Fatalf("edited photo: %q, %v", got, err)
			}
			if got, err := im2.ReadFile(ctx, "photo-030.jpg", 1<<20); err != nil || string(got) != tr["photo-030.jpg"] {
				t.Fatalf("unchanged photo: %v", err)
			}
		})
	}
}

func TestPackRefusesBadSources(t *testing.T) {
	ctx := context.Background()
	k := testKeys(t, 1)
	for name, dirs := range map[string][]Entry{
		"slash":     {{Name: "a/b", Kind: KindFile}},
		"dotdot":    {{Name: "..", Kind: KindDir}},
		"nul":       {{Name: "a\x00", Kind: KindFile}},
		"duplicate": {{Name: "a", Kind: KindFile}, {Name: "a", Kind: KindDir}},
		"index":     {{Name: "a", Kind: KindFile, Index: 3, Allocated: true}, {Name: "b", Kind: KindFile, Index: 3, Allocated: true}},
		"symlink":   {{Name: "l", Kind: KindSymlink}},
		"nested":    {{Name: "n", Kind: KindImage}},
		"server":    {{Name: "n", Kind: KindImage, Nested: &Nested{Ref: Ref{Size: 100}, Servers: []string{"ftp://x"}}}},
		"kind":      {{Name: "k", Kind: 9}},
	} {
		src := &memSource{root: Entry{Kind: KindDir}, dirs: map[string][]Entry{"": dirs}, files: map[string][]byte{"a": nil}}
		if _, err := Pack(ctx, io.Discard, src, PackOptions{Keys: &k}); err == nil {
			t.Errorf("%s: packed", name)
		}
	}
	// A file that changes size while packed.
	src := &memSource{root: Entry{Kind: KindDir}, dirs: map[string][]Entry{"": {{Name: "f", Kind: KindFile, Size: 10}}}, files: map[string][]byte{"f": []byte("short")}}
	if _, err := Pack(ctx, io.Discard, src, PackOptions{Public: true}); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("shrinking file: %v", err)
	}
	src.files["f"] = make([]byte, 11)
	if _, err := Pack(ctx, io.Discard, src, PackOptions{Keys: &k}); err == nil || !strings.Contains(err.Error(), "grew") {
		t.Errorf("growing file: %v", err)
	}
	if _, err := Pack(ctx, io.Discard, src, PackOptions{}); err == nil {
		t.Error("private image without keys packed")
	}
}

func TestRefEncoding(t *testing.T) {
	r := Ref{Size: 123456, Public: true}
	_, _ = rand.Read(r.Hash[:])
	_, _ = rand.Read(r.Root[:])
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Ref
	if err := got.UnmarshalBinary(b); err != nil || got != r {
		t.Fatalf("%v, %v", got, err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x80
		var x Ref
		if x.UnmarshalBinary(c) == nil && x == r {
			t.Fatalf("byte %d flipped still decodes to the same ref", i)
		}
	}
	if err := got.UnmarshalBinary(append(b, 0)); !errors.Is(err, ErrFormat) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestUsableSkipsIndexes(t *testing.T) {
	ctx := context.Background()
	k := testKeys(t, 31)
	bad, _ := k.Child(1, [20]byte{})
	src := &memSource{root: Entry{Kind: KindDir}, dirs: map[string][]Entry{"": {
		{Name: "a", Kind: KindSymlink, Target: "x"}, {Name: "b", Kind: KindSymlink, Target: "y"},
	}}}
	var buf bytes.Buffer
	ref, err := Pack(ctx, &buf, src, PackOptions{Keys: &k, Usable: func(c node.Keys) bool { return c.Addr != bad.Addr }})
	if err != nil {
		t.Fatal(err)
	}
	im, err := OpenReaderAt(ctx, bytes.NewReader(buf.Bytes()), ref, Options{Keys: &k})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := im.ReadDir(ctx, "")
	if len(list) != 2 || list[0].Index != 0 || list[1].Index != 2 || im.Root().NextIndex != 3 {
		t.Fatalf("%+v", list)
	}
}
