package blob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// truncating serves a blob cut short in the middle of the stream, with no
// error before EOF: the reader sees a clean end, the bytes are wrong.
type truncating struct{ *memStore }

func (s truncating) Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error) {
	b, err := s.blob(hash)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b[:len(b)/2])), nil
}

// failingDir is a spool folder that cannot hold files.
func failingDir(t *testing.T) string {
	return t.TempDir() + "/missing/folder"
}

// TestMultiGetSkipsTamperedCopy: the first store serves altered bytes
// (an attack); Get hands out only the second store's correct copy, never
// a byte of the first, and reports the first.
func TestMultiGetSkipsTamperedCopy(t *testing.T) {
	ctx := context.Background()
	plain := randBytes(5*ChunkSize+3, 31)
	enc, ref, err := Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	liar := newMemStore()
	liar.m[ref.Hash] = enc
	liar.corrupt = true
	good := newMemStore()
	good.m[ref.Hash] = enc
	var rep report
	spool := t.TempDir()
	m := NewMulti(rep.fn, liar, good).SpoolDir(spool)

	rc, err := m.Get(ctx, ref.Hash)
	if err != nil {
		t.Fatalf("Get past a tampering store: %v", err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("Get returned %d bytes (%v), not the good copy", len(got), err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if c := rep.take(); !slices.Equal(c, []int{0}) {
		t.Fatalf("reported stores %v, want [0]", c)
	}
	// The spooled copies are unlinked: nothing is left behind.
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Fatalf("spool folder holds %d files", len(ents))
	}

	// A copy cut short (a clean EOF too early) is as wrong as an altered one.
	m = NewMulti(rep.fn, truncating{good}, good)
	if rc, err = m.Get(ctx, ref.Hash); err != nil {
		t.Fatalf("Get past a truncating store: %v", err)
	}
	if got, err = io.ReadAll(rc); err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("Get past a truncating store returned %d bytes (%v)", len(got), err)
	}
	rc.Close()
	if c := rep.take(); !slices.Equal(c, []int{0}) {
		t.Fatalf("reported stores %v, want [0]", c)
	}

	// Only bad copies: Get fails before handing out anything.
	if rc, err := NewMulti(rep.fn, liar, truncating{good}).Get(ctx, ref.Hash); err == nil || rc != nil || !errors.Is(err, ErrHashMismatch) ||
		!strings.Contains(err.Error(), "store 1") {
		t.Fatalf("Get from only bad stores: %v", err)
	}
	if c := rep.take(); !slices.Equal(c, []int{0, 1}) {
		t.Fatalf("reported stores %v, want [0 1]", c)
	}

	// A spool that cannot be written is not the stores' fault: Get stops
	// there and blames nobody.
	if _, err := NewMulti(rep.fn, good, good).SpoolDir(failingDir(t)).Get(ctx, ref.Hash); err == nil || isSourceFault(err) {
		t.Fatalf("Get with a broken spool: %v", err)
	}
	if c := rep.take(); len(c) != 0 {
		t.Fatalf("a broken spool blamed stores %v", c)
	}

	// A canceled context stops Get.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NewMulti(rep.fn, good).Get(cctx, ref.Hash); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Get: %v", err)
	}
}
