package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/integrity-sys/integrity/chainfs/node"
)

// fuzzSeeds packs small trees (small: the fuzzer minimizes what it
// finds, and large inputs stall it).
func fuzzSeeds(f *testing.F, public bool, keys *node.Keys) {
	dir := f.TempDir()
	for i, tr := range []tree{
		{},
		{"a": "x"},
		{"a": "hello", "d/": "", "d/b": "world", "l": "->a", "d/e/": ""},
	} {
		sub := filepath.Join(dir, string(rune('a'+i)))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			f.Fatal(err)
		}
		writeTree(f, sub, tr)
		_, data := packDir(f, sub, PackOptions{Public: public, Keys: keys})
		f.Add(data)
	}
	f.Add([]byte("IGI\x01"))
	f.Add([]byte{})
}

// fuzzImage opens data as an image and reads everything in it. It must
// never panic, and every failure must be one of the package's errors.
func fuzzImage(t *testing.T, data []byte, public bool, keys *node.Keys) {
	ctx := context.Background()
	ref, err := Inspect(ctx, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("Inspect: unexpected error %v", err)
		}
		return
	}
	if ref.Public != public {
		return
	}
	ref.Hash = sha256.Sum256(data)
	err = readAll(ref, data, keys)
	if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrMismatch) && !errors.Is(err, ErrKeys) && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("unexpected error class: %v", err)
	}
	if err != nil {
		return
	}
	// An image that verifies is re-packed from itself to the same
	// listing, and a public one to the same bytes (public packing is
	// deterministic, and the accepted encoding canonical).
	im, err := OpenReaderAt(ctx, bytes.NewReader(data), ref, Options{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	ref2, err := Pack(ctx, &buf, im.Source(), PackOptions{Public: public, Keys: keys})
	if err != nil {
		t.Fatalf("re-packing a verified image: %v", err)
	}
	if public && (ref2 != ref || !bytes.Equal(buf.Bytes(), data)) {
		t.Fatalf("a verified public image re-packs to other bytes")
	}
}

func FuzzPublicImage(f *testing.F) {
	fuzzSeeds(f, true, nil)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzImage(t, data, true, nil) })
}

func FuzzPrivateImage(f *testing.F) {
	k := testKeys(f, 21)
	fuzzSeeds(f, false, &k)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzImage(t, data, false, &k) })
}

// FuzzRecord feeds plaintext records to the decoder (in a private image
// the fuzzer could not get past the seal): accepted records re-encode to
// the same bytes.
func FuzzRecord(f *testing.F) {
	for _, r := range []*record{
		{kind: KindDir, mode: 0o755, next: 3, count: 2, blockOff: 10, blockLen: 20},
		{kind: KindFile, name: "f", mode: 0o644, mtime: -5, size: 70000, contentOff: 4},
		{kind: KindSymlink, name: "l", target: "../x"},
		{kind: KindImage, name: "n", nested: Nested{Ref: Ref{Size: 100, Public: true}, Servers: []string{"https://a.example"}}},
	} {
		for _, public := range []bool{false, true} {
			b, err := r.encode(nil, public)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, public, r.name == "")
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, public, root bool) {
		r, err := decodeRecord(b, public, root)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		again, err := r.encode(nil, public)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
		}
	})
}

func FuzzRef(f *testing.F) {
	r := Ref{Size: 1000, Public: true}
	b, _ := r.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Ref
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

// FuzzOverlayPaths: change paths are checked, never panicking.
func FuzzOverlayPaths(f *testing.F) {
	f.Add("a/b", false)
	f.Add("../x", true)
	f.Add("/a//b", false)
	f.Fuzz(func(t *testing.T, p string, del bool) {
		src := &memSource{root: Entry{Kind: KindDir}, dirs: map[string][]Entry{"": {{Name: "a", Kind: KindDir}}}}
		o, err := Overlay(src, Change{Path: p, Delete: del, Entry: Entry{Kind: KindSymlink, Target: "t"}})
		if err != nil {
			return
		}
		_, err = Pack(context.Background(), io.Discard, o, PackOptions{Public: true})
		_ = err
	})
}

// FuzzBlock gets past the hash chain: the fuzzer's block becomes the
// root's block (with its true hash) after a fuzzed body, so frames,
// records and the layout checks are exercised in depth.
func FuzzBlock(f *testing.F) {
	// Seed: a real root block and the body before it.
	dir := f.TempDir()
	writeTree(f, dir, tree{"a": "hello", "d/": "", "d/b": "world", "l": "->a"})
	ref, data := packDir(f, dir, PackOptions{Public: true})
	im, err := OpenReaderAt(context.Background(), bytes.NewReader(data), ref, Options{})
	if err != nil {
		f.Fatal(err)
	}
	rr := im.root.loc.rec
	f.Add(data[HeaderSize:rr.blockOff], data[rr.blockOff:rr.blockOff+rr.blockLen], uint32(rr.count), rr.next)
	f.Add([]byte{}, []byte{0, 1, 0}, uint32(1), uint32(1))
	f.Fuzz(func(t *testing.T, body, block []byte, count, next uint32) {
		b := newBuilder(true, nil)
		b.add(body)
		r := &record{kind: KindDir, mode: 0o755, count: int64(count % (MaxDirEntries + 2)), next: next % (MaxIndex + 1)}
		if len(block) > 0 {
			r.blockOff, r.blockLen, r.blockHash = b.add(block), int64(len(block)), sha256.Sum256(block)
		}
		ref, data := b.finish(t, r)
		err := readAll(ref, data, nil)
		if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrMismatch) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
