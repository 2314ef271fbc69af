package chainfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/internal/addrsafe"
)

// dirImages serves every image from one blob directory (the image servers
// of these tests).
type dirImages struct{ d *blob.Dir }

func (s dirImages) Store(context.Context, []string) (blob.Store, error) { return s.d, nil }

func newImageEnv(t *testing.T) *env {
	e := newEnv(t)
	d, err := blob.NewDir(filepath.Join(t.TempDir(), "servers"))
	if err != nil {
		t.Fatal(err)
	}
	e.images = dirImages{d}
	return e
}

// packFor packs src for folder ino of tr and stores the image where the
// env's image servers serve it.
func packFor(t *testing.T, e *env, tr *Tree, ino uint64, src image.Source, public bool) image.Ref {
	t.Helper()
	keys, err := tr.Keys(ino)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	opts := image.PackOptions{Public: public, Usable: func(c node.Keys) bool { return addrsafe.Queryable(c.Addr[:]) }}
	if !public {
		opts.Keys = &keys
	}
	ref, err := image.Pack(context.Background(), &buf, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	d := e.images.(dirImages).d
	if err := d.Put(context.Background(), ref.Hash, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatal(err)
	}
	return ref
}

func photo(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("photo %02d ", i)), 200+i)
}

// photoDir is the walk-through's local folder: 30 photos and a folder.
func photoDir(t *testing.T) string {
	dir := t.TempDir()
	for i := 1; i <= 30; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("photo%02d.jpg", i)), photo(i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "vacation"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vacation", "cover.jpg"), []byte("cover"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func localSource(t *testing.T, dir string) image.Source {
	src, err := image.LocalDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func names(t *testing.T, tr *Tree, path string) []string {
	t.Helper()
	ino, err := tr.Resolve(path)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := tr.ReadDir(ino)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	return out
}

func entryIndex(t *testing.T, tr *Tree, dir, name string) uint32 {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	d, err := tr.resolve(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := d.local.Entries[name]
	if !ok {
		t.Fatalf("%s/%s: no entry", dir, name)
	}
	return e.Index
}

// TestImageWalkThrough is the paper's /backups/photos walk-through at the
// tree level: mount a private image of 30 photos, delete the 23rd (an
// OpHide at its index 22), edit, add and rename inside it; a second device
// sees the same; re-imaging folds the overlay into a new image that keeps
// every index; unmounting empties the folder.
func TestImageWalkThrough(t *testing.T) {
	e := newImageEnv(t)
	ctx := context.Background()
	a := e.open("", "a")
	mkdir(t, a, "/backups")
	photos := mkdir(t, a, "/backups/photos")
	ref := packFor(t, e, a, photos, localSource(t, photoDir(t)), false)
	mount := ImageMount{Ref: ref, Servers: []string{"http://images.test"}}
	if err := a.MountImage(ctx, photos, mount); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	if got := len(names(t, a, "/backups/photos")); got != 31 {
		t.Fatalf("%d entries after mounting, want 31", got)
	}
	if !bytes.Equal(readFile(t, a, "/backups/photos/photo07.jpg"), photo(7)) {
		t.Fatal("photo07 reads wrong")
	}
	if idx := entryIndex(t, a, "/backups/photos", "photo23.jpg"); idx != 22 {
		t.Fatalf("photo23 at index %d, want 22 (m/…/22)", idx)
	}
	// One image per folder: a second one is refused; so is one on a
	// folder the image gives (a new folder inside it may take one).
	if err := a.MountImage(ctx, photos, mount); !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), "one image per folder") {
		t.Fatalf("a second image on the same folder: %v", err)
	}
	if vac, _ := a.Resolve("/backups/photos/vacation"); a.MountImage(ctx, vac, mount) == nil {
		t.Fatal("an image mounted on a folder of an image")
	}
	mkdir(t, a, "/backups/photos/other")
	album, _ := a.Resolve("/backups/photos/vacation")
	if err := a.Remove(album, "other", true); err == nil {
		t.Fatal("removing a folder that is not there succeeded")
	}
	ph, _ := a.Resolve("/backups/photos")
	if err := a.Remove(ph, "other", true); err != nil {
		t.Fatal(err)
	}

	// Delete the 23rd photo, edit one, rename one, add one, edit inside
	// the album.
	if err := a.Remove(ph, "photo23.jpg", false); err != nil {
		t.Fatal(err)
	}
	p5, _ := a.Resolve("/backups/photos/photo05.jpg")
	if _, err := a.Write(p5, 0, []byte("PHOTO")); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(p5); err != nil {
		t.Fatal(err)
	}
	if err := a.Rename(ph, "photo07.jpg", ph, "seven.jpg", false); err != nil {
		t.Fatal(err)
	}
	writeFile(t, a, "/backups/photos/new.jpg", []byte("a new photo"))
	writeFile(t, a, "/backups/photos/vacation/back.jpg", []byte("back cover"))
	if err := a.Rename(ph, "photo08.jpg", RootIno, "out.jpg", false); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("moving out of an image: %v, want EXDEV", err)
	}
	syncAll(t, a)
	edited := append([]byte("PHOTO"), photo(5)[5:]...)
	want := listing(t, a)
	for _, w := range []string{"photo23.jpg", "photo07.jpg"} {
		if strings.Contains(want, "/backups/photos/"+w+" ") {
			t.Fatalf("%s still listed:\n%s", w, want)
		}
	}
	// The edit is a small patch at the photo's own node, not a copy.
	h, _ := a.History(p5)
	if len(h) != 1 || !strings.Contains(h[0].Summary, "patch") {
		t.Fatalf("edit of an image file committed as %+v", h)
	}
	if new := entryIndex(t, a, "/backups/photos", "new.jpg"); new < 31 {
		t.Fatalf("a new file took image index %d", new)
	}

	// A second device rebuilds the same view from the chain and the image.
	b := e.open("", "b")
	if got := listing(t, b); got != want {
		t.Fatalf("second device:\n%s\nwant:\n%s", got, want)
	}
	if !bytes.Equal(readFile(t, b, "/backups/photos/photo05.jpg"), edited) {
		t.Fatal("edited photo differs on the second device")
	}
	closeTree(t, b)

	// Re-image: the view packed into a new version, mounted in place.
	info, err := a.Image(ph)
	if err != nil || info.Overlay == 0 {
		t.Fatalf("image info: %+v, %v", info, err)
	}
	src, old, err := a.ImageSource(ctx, ph)
	if err != nil {
		t.Fatal(err)
	}
	if old.Ref().Hash != ref.Hash {
		t.Fatal("ImageSource's base is not the mounted image")
	}
	ref2 := packFor(t, e, a, ph, src, false)
	if err := a.ReplaceWithImage(ctx, ph, ImageMount{Ref: ref2, Servers: mount.Servers}); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	if got := listing(t, a); got != want {
		t.Fatalf("after re-imaging:\n%s\nwant:\n%s", got, want)
	}
	if info, _ := a.Image(ph); info.Overlay != 0 || info.Mount.Ref.Hash != ref2.Hash {
		t.Fatalf("after re-imaging: %+v", info)
	}
	if idx := entryIndex(t, a, "/backups/photos", "photo24.jpg"); idx != 23 {
		t.Fatalf("photo24 moved to index %d", idx)
	}
	c := e.open("", "c")
	if got := listing(t, c); got != want {
		t.Fatalf("third device after re-imaging:\n%s\nwant:\n%s", got, want)
	}
	closeTree(t, c)

	if err := a.UnmountImage(ph); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	if n := names(t, a, "/backups/photos"); len(n) != 0 {
		t.Fatalf("after unmounting: %v", n)
	}
	closeTree(t, a)
}

// TestPublicImageNoKeys: a public image mounted by another user, whose
// keys differ from the publisher's; a private image does not open with
// the wrong folder's keys.
func TestPublicImageNoKeys(t *testing.T) {
	e := newImageEnv(t)
	ctx := context.Background()
	a := e.open("", "publisher")
	pub := mkdir(t, a, "/pub")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "readme.txt"), []byte("hello world"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := packFor(t, e, a, pub, localSource(t, dir), true)
	priv := packFor(t, e, a, pub, localSource(t, dir), false)
	closeTree(t, a)

	// Another user: another root, same chain and servers.
	other := newEnvAt(t, t.TempDir())
	other.images = e.images
	b := other.open("", "reader")
	mnt := mkdir(t, b, "/mnt")
	if err := b.MountImage(ctx, mnt, ImageMount{Ref: ref, Servers: []string{"http://images.test"}}); err != nil {
		t.Fatal(err)
	}
	syncAll(t, b)
	if got := readFile(t, b, "/mnt/readme.txt"); string(got) != "hello world" {
		t.Fatalf("public image: %q", got)
	}
	// Changing a file of the public image is the reader's own overlay.
	writeFile(t, b, "/mnt/readme.txt", []byte("my notes"))
	syncAll(t, b)
	b2 := other.open("", "reader2")
	if got := readFile(t, b2, "/mnt/readme.txt"); string(got) != "my notes" {
		t.Fatalf("overlay on a public image: %q", got)
	}
	closeTree(t, b2)
	empty := mkdir(t, b, "/nope")
	if err := b.MountImage(ctx, empty, ImageMount{Ref: priv, Servers: []string{"http://images.test"}}); !errors.Is(err, image.ErrKeys) {
		t.Fatalf("private image with the wrong keys: %v", err)
	}
	closeTree(t, b)
}

func TestImageMountEncoding(t *testing.T) {
	m := ImageMount{Ref: image.Ref{Size: 100, Public: true}, Servers: []string{"https://a.example/img", "http://127.0.0.1:9"}}
	m.Ref.Hash[0], m.Ref.Root[31] = 1, 2
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got ImageMount
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.Ref != m.Ref || strings.Join(got.Servers, " ") != strings.Join(m.Servers, " ") {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range b {
		if err := new(ImageMount).UnmarshalBinary(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", i)
		}
	}
	if err := new(ImageMount).UnmarshalBinary(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func FuzzImageMount(f *testing.F) {
	m := ImageMount{Ref: image.Ref{Size: 100}, Servers: []string{"http://127.0.0.1:9"}}
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m ImageMount
		if m.UnmarshalBinary(b) != nil {
			return
		}
		again, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded mount does not re-encode to its bytes: %v", err)
		}
	})
}

// TestReplaceWithImage: a folder packed from its own content and turned
// into an image folder shows the same files, at the same nodes, on this
// device and on another.
func TestReplaceWithImage(t *testing.T) {
	e := newImageEnv(t)
	ctx := context.Background()
	a := e.open("", "a")
	docs := mkdir(t, a, "/docs")
	mkdir(t, a, "/docs/sub")
	writeFile(t, a, "/docs/a.txt", []byte("alpha"))
	writeFile(t, a, "/docs/sub/b.txt", []byte("beta"))
	syncAll(t, a)
	before := listing(t, a)
	idx := entryIndex(t, a, "/docs/sub", "b.txt")
	src, err := a.FolderSource(docs)
	if err != nil {
		t.Fatal(err)
	}
	ref := packFor(t, e, a, docs, src, false)
	if err := a.ReplaceWithImage(ctx, docs, ImageMount{Ref: ref, Servers: []string{"http://images.test"}}); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	strip := func(s string) string { // the folder itself gets a new mtime
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, "/docs dir") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	if got := listing(t, a); strip(got) != strip(before) {
		t.Fatalf("after replacing with an image:\n%s\nwant:\n%s", got, before)
	}
	if entryIndex(t, a, "/docs/sub", "b.txt") != idx {
		t.Fatal("b.txt moved to another node")
	}
	if _, err := a.Image(docs); err != nil {
		t.Fatal(err)
	}
	b := e.open("", "b")
	if got := listing(t, b); strip(got) != strip(before) {
		t.Fatalf("another device:\n%s\nwant:\n%s", got, before)
	}
	closeTree(t, b)
	closeTree(t, a)
}

// TestNestedImagesInTree: a folder holding mounted images is imaged in
// place; the result incorporates them by reference (a public "song", and
// a private one sealed for the folder it sits in, which opens there
// because every entry keeps its index); another device reads through
// both. A public image cannot incorporate a private one; a nested image
// with changes on top must be updated first; an image mounted on a new
// folder inside an image folder is folded in as a nested image by
// re-imaging.
func TestNestedImagesInTree(t *testing.T) {
	e := newImageEnv(t)
	ctx := context.Background()
	a := e.open("", "a")
	songDir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(songDir, "lyrics"), 0o755))
	must(os.WriteFile(filepath.Join(songDir, "song.ogg"), []byte("la la la"), 0o644))
	must(os.WriteFile(filepath.Join(songDir, "lyrics", "en.txt"), []byte("la"), 0o644))
	mkdir(t, a, "/pub")
	pubIno, _ := a.Resolve("/pub")
	song := packFor(t, e, a, pubIno, localSource(t, songDir), true)
	servers := []string{"http://images.test"}

	movie := mkdir(t, a, "/movie")
	writeFile(t, a, "/movie/scene.txt", []byte("scene one"))
	songIno := mkdir(t, a, "/movie/song")
	must(a.MountImage(ctx, songIno, ImageMount{Ref: song, Servers: servers}))
	privIno := mkdir(t, a, "/movie/notes")
	privDir := t.TempDir()
	must(os.WriteFile(filepath.Join(privDir, "secret.txt"), []byte("director's notes"), 0o644))
	priv := packFor(t, e, a, privIno, localSource(t, privDir), false)
	must(a.MountImage(ctx, privIno, ImageMount{Ref: priv, Servers: servers}))
	syncAll(t, a)
	before := listing(t, a)
	songIdx := entryIndex(t, a, "/movie", "song")

	src, err := a.FolderSource(movie)
	must(err)
	if _, err := image.Pack(ctx, io.Discard, src, image.PackOptions{Public: true}); err == nil || !strings.Contains(err.Error(), "private image") {
		t.Fatalf("a public image incorporating a private one: %v", err)
	}
	src, err = a.FolderSource(movie)
	must(err)
	ref := packFor(t, e, a, movie, src, false)
	must(a.ReplaceWithImage(ctx, movie, ImageMount{Ref: ref, Servers: servers}))
	syncAll(t, a)
	strip := func(s string) string { // the folder itself gets a new mtime
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, "/movie dir") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	if got := listing(t, a); strip(got) != strip(before) {
		t.Fatalf("after imaging /movie:\n%s\nwant:\n%s", got, before)
	}
	if entryIndex(t, a, "/movie", "song") != songIdx {
		t.Fatal("the nested image moved to another index")
	}
	info, err := a.Image(movie)
	must(err)
	if len(info.Nested) != 2 || info.Nested[0].Path != "notes" || info.Nested[0].Mount.Ref != priv ||
		info.Nested[1].Path != "song" || info.Nested[1].Mount.Ref != song {
		t.Fatalf("nested images: %+v", info.Nested)
	}
	// The movie image holds the songs by reference, not their bytes.
	if ref.Size > song.Size+priv.Size+4096 && ref.Size > 8192 {
		t.Fatalf("the movie image is %d bytes", ref.Size)
	}
	b := e.open("", "b")
	for p, want := range map[string]string{"/movie/scene.txt": "scene one", "/movie/song/song.ogg": "la la la",
		"/movie/song/lyrics/en.txt": "la", "/movie/notes/secret.txt": "director's notes"} {
		if got := readFile(t, b, p); string(got) != want {
			t.Fatalf("second device: %s reads %q", p, got)
		}
	}
	closeTree(t, b)

	// (b): a new folder inside the movie takes an image; re-imaging the
	// movie folds it in as a third nested image.
	extra := mkdir(t, a, "/movie/extra")
	must(a.MountImage(ctx, extra, ImageMount{Ref: song, Servers: servers}))
	syncAll(t, a)
	src, old, err := a.ImageSource(ctx, movie)
	must(err)
	if old.Ref().Hash != ref.Hash {
		t.Fatal("ImageSource's base is not the movie")
	}
	ref2 := packFor(t, e, a, movie, src, false)
	must(a.ReplaceWithImage(ctx, movie, ImageMount{Ref: ref2, Servers: servers}))
	syncAll(t, a)
	if info, _ := a.Image(movie); len(info.Nested) != 3 || info.Overlay != 0 {
		t.Fatalf("after folding a mount in: %+v", info)
	}
	c := e.open("", "c")
	if got := readFile(t, c, "/movie/extra/song.ogg"); string(got) != "la la la" {
		t.Fatalf("third device: %q", got)
	}
	closeTree(t, c)
	nestedIno, err := a.Resolve("/movie/song")
	must(err)
	if _, err := a.Image(nestedIno); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Fatalf("image info of a nested image's folder: %v", err)
	}

	// Changes made inside a nested image: re-imaging packs it as a folder
	// of the movie (no longer nested); a rename alone keeps it nested.
	writeFile(t, a, "/movie/extra/mine.txt", []byte("my verse"))
	must(a.Rename(movie, "notes", movie, "notes2", false))
	syncAll(t, a)
	src, _, err = a.ImageSource(ctx, movie)
	must(err)
	ref3 := packFor(t, e, a, movie, src, false)
	must(a.ReplaceWithImage(ctx, movie, ImageMount{Ref: ref3, Servers: servers}))
	syncAll(t, a)
	if info, _ := a.Image(movie); len(info.Nested) != 2 || info.Nested[0].Path != "notes2" || info.Nested[1].Path != "song" {
		t.Fatalf("after changes inside a nested image: %+v", info.Nested)
	}
	d := e.open("", "d")
	for p, want := range map[string]string{"/movie/extra/mine.txt": "my verse", "/movie/extra/song.ogg": "la la la", "/movie/notes2/secret.txt": "director's notes"} {
		if got := readFile(t, d, p); string(got) != want {
			t.Fatalf("fourth device: %s reads %q", p, got)
		}
	}
	closeTree(t, d)

	// A nested mount with changes on top is not packed by reference.
	other := mkdir(t, a, "/other")
	s2 := mkdir(t, a, "/other/song")
	must(a.MountImage(ctx, s2, ImageMount{Ref: song, Servers: servers}))
	writeFile(t, a, "/other/song/mine.txt", []byte("my verse"))
	if _, err := a.FolderSource(other); !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), "image update /other/song") {
		t.Fatalf("imaging over a nested image's overlay: %v", err)
	}

	// A private image moved in from another folder keeps that folder's
	// keys, which the outer image would not give its entry: refused.
	mkdir(t, a, "/away")
	inner := mkdir(t, a, "/away/inner")
	must(a.MountImage(ctx, inner, ImageMount{Ref: packFor(t, e, a, inner, localSource(t, privDir), false), Servers: servers}))
	shelf := mkdir(t, a, "/shelf")
	syncAll(t, a)
	must(a.Rename(RootIno, "away", shelf, "away", false))
	if _, err := a.FolderSource(shelf); !errors.Is(err, syscall.EXDEV) || !strings.Contains(err.Error(), "moved in") {
		t.Fatalf("a private image moved in from elsewhere, imaged: %v", err)
	}
	closeTree(t, a)
}
