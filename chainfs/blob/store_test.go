package blob

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memStore is an in-memory Store for tests. Its Get does not verify, and
// with corrupt set it serves altered bytes: it plays a lying image server.
type memStore struct {
	mu      sync.Mutex
	m       map[[32]byte][]byte
	fetched atomic.Int64 // bytes returned by GetRange
	corrupt bool         // serve every blob with one byte flipped
	fail    error        // fail every call
}

func newMemStore() *memStore { return &memStore{m: map[[32]byte][]byte{}} }

func (s *memStore) blob(hash [32]byte) ([]byte, error) {
	if s.fail != nil {
		return nil, s.fail
	}
	s.mu.Lock()
	b, ok := s.m[hash]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %x", ErrNotFound, hash)
	}
	if s.corrupt {
		b = bytes.Clone(b)
		b[len(b)/2] ^= 1
	}
	return b, nil
}

func (s *memStore) Put(ctx context.Context, hash [32]byte, r io.Reader, size int64) error {
	if s.fail != nil {
		return s.fail
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != size || sha256.Sum256(b) != hash {
		return ErrHashMismatch
	}
	s.mu.Lock()
	s.m[hash] = b
	s.mu.Unlock()
	return nil
}

func (s *memStore) Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error) {
	b, err := s.blob(hash)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) GetRange(ctx context.Context, hash [32]byte, off, n int64) ([]byte, error) {
	b, err := s.blob(hash)
	if err != nil {
		return nil, err
	}
	if off < 0 || n < 0 || off+n > int64(len(b)) {
		return nil, ErrRange
	}
	s.fetched.Add(n)
	return bytes.Clone(b[off : off+n]), nil
}

func (s *memStore) Has(ctx context.Context, hash [32]byte) (bool, error) {
	_, err := s.blob(hash)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *memStore) Delete(ctx context.Context, hash [32]byte) error {
	if s.fail != nil {
		return s.fail
	}
	s.mu.Lock()
	delete(s.m, hash)
	s.mu.Unlock()
	return nil
}

var _, _, _ Store = (*Dir)(nil), (*Multi)(nil), (*memStore)(nil)

func newDir(t testing.TB) *Dir {
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func put(t testing.TB, s Store, b []byte) [32]byte {
	h := sha256.Sum256(b)
	if err := s.Put(context.Background(), h, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	return h
}

func tempFiles(t *testing.T, d *Dir) []string {
	names, err := filepath.Glob(filepath.Join(d.Path(), dirTmp, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestDirBasic(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	data := randBytes(300_000, 10)
	h := put(t, d, data)
	hx := hex.EncodeToString(h[:])
	fi, err := os.Stat(filepath.Join(d.Path(), hx[:2], hx))
	if err != nil || fi.Size() != int64(len(data)) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob file: %v %v", fi, err)
	}
	if ok, err := d.Has(ctx, h); !ok || err != nil {
		t.Fatalf("Has: %v %v", ok, err)
	}
	rc, err := d.Get(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %v", err)
	}
	if got, err := d.GetRange(ctx, h, 1000, 5000); err != nil || !bytes.Equal(got, data[1000:6000]) {
		t.Fatalf("GetRange: %v", err)
	}
	if got, err := d.GetRange(ctx, h, int64(len(data)), 0); err != nil || len(got) != 0 {
		t.Fatalf("empty GetRange at the end: %v", err)
	}
	for _, r := range [][2]int64{{-1, 1}, {0, -1}, {int64(len(data)), 1}, {1, int64(len(data))}} {
		if _, err := d.GetRange(ctx, h, r[0], r[1]); !errors.Is(err, ErrRange) {
			t.Fatalf("GetRange(%d, %d): %v", r[0], r[1], err)
		}
	}
	// Putting again is a no-op that does not even read the input.
	if err := d.Put(ctx, h, errReader{errors.New("must not be read")}, int64(len(data))); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	var listed [][32]byte
	h2 := put(t, d, []byte("another"))
	if err := d.List(ctx, func(x [32]byte) error { listed = append(listed, x); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(listed, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	want := [][32]byte{h, h2}
	slices.SortFunc(want, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(listed, want) {
		t.Fatalf("List = %x, want %x", listed, want)
	}
	if err := d.Delete(ctx, h); err != nil {
		t.Fatal(err)
	}
	if ok, _ := d.Has(ctx, h); ok {
		t.Fatal("Has after Delete")
	}
	if _, err := d.Get(ctx, h); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := d.GetRange(ctx, h, 0, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRange after Delete: %v", err)
	}
	if err := d.Delete(ctx, h); err != nil {
		t.Fatalf("Delete of a missing blob: %v", err)
	}
	// The empty blob is a blob too.
	e := put(t, d, nil)
	if rc, err := d.Get(ctx, e); err != nil {
		t.Fatal(err)
	} else if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
		t.Fatalf("empty blob: %v", err)
	}
}

func TestDirPutRefused(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	data := randBytes(100_000, 11)
	h := sha256.Sum256(data)
	other := sha256.Sum256([]byte("other"))
	cases := []struct {
		name string
		hash [32]byte
		r    io.Reader
		size int64
		want error
	}{
		{"wrong hash", other, bytes.NewReader(data), int64(len(data)), ErrHashMismatch},
		{"short input", h, bytes.NewReader(data[:500]), int64(len(data)), ErrHashMismatch},
		{"long input", h, bytes.NewReader(append(bytes.Clone(data), 1)), int64(len(data)), ErrHashMismatch},
		{"flipped byte", h, bytes.NewReader(append([]byte{data[0] ^ 1}, data[1:]...)), int64(len(data)), ErrHashMismatch},
		{"read error", h, io.MultiReader(bytes.NewReader(data[:10]), errReader{io.ErrClosedPipe}), int64(len(data)), io.ErrClosedPipe},
		{"negative size", h, bytes.NewReader(data), -1, nil},
	}
	for _, c := range cases {
		err := d.Put(ctx, c.hash, c.r, c.size)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.name == "wrong hash" && !strings.Contains(err.Error(), "refusing to store") {
			t.Fatalf("unclear error: %v", err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.Put(cctx, h, bytes.NewReader(data), int64(len(data))); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Put: %v", err)
	}
	for _, x := range [][32]byte{h, other} {
		if ok, _ := d.Has(ctx, x); ok {
			t.Fatal("a refused blob became visible")
		}
	}
	if tmp := tempFiles(t, d); len(tmp) != 0 {
		t.Fatalf("refused Puts left temp files %v", tmp)
	}
}

// TestDirCorruption flips a byte of a stored blob on disk: a full Get
// fails (even when reading exactly the blob's size), Load fails, and a
// ranged read fails on the altered chunk only.
func TestDirCorruption(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	plain := randBytes(5*ChunkSize, 12)
	ref, err := d.PutEncrypted(ctx, bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	path := d.path(ref.Hash)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := chunkOffset(2) + 100
	var b [1]byte
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x80
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rc, err := d.Get(ctx, ref.Hash)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Get of a corrupted blob: %v", err)
	}
	rc, _ = d.Get(ctx, ref.Hash)
	if _, err := io.ReadFull(rc, make([]byte, ref.Size)); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("ReadFull of exactly the size of a corrupted blob: %v", err)
	}
	rc.Close()
	if _, err := Load(ctx, d, ref); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("Load: %v", err)
	}
	if _, err := DecryptRange(ctx, d, ref, 2*ChunkSize+10, 10); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("DecryptRange over the altered chunk: %v", err)
	}
	if got, err := DecryptRange(ctx, d, ref, 3*ChunkSize, 10); err != nil || !bytes.Equal(got, plain[3*ChunkSize:3*ChunkSize+10]) {
		t.Fatalf("DecryptRange elsewhere: %v", err)
	}
	// A truncated file is caught too.
	if err := os.Truncate(path, ref.Size-1); err != nil {
		t.Fatal(err)
	}
	rc, _ = d.Get(ctx, ref.Hash)
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("Get of a truncated blob: %v", err)
	}
	rc.Close()
	if _, err := DecryptRange(ctx, d, ref, ref.PlainSize-1, 1); !errors.Is(err, ErrRange) {
		t.Fatalf("DecryptRange past a truncated end: %v", err)
	}
	// Repair: delete, put again.
	enc, err := encryptForRef(plain, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, ref.Hash); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, ref.Hash, bytes.NewReader(enc), ref.Size); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(ctx, d, ref); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("after repair: %v", err)
	}
}

// encryptForRef rebuilds the blob of a Ref from its plaintext and key.
func encryptForRef(plain []byte, ref Ref) ([]byte, error) {
	enc, r, err := encryptWithKey(plain, ref.Key)
	if err != nil || r.Hash != ref.Hash {
		return nil, fmt.Errorf("rebuild: %v", err)
	}
	return enc, nil
}

// TestDirRangeReadsPart reads 4 KiB from the end of a 64 GiB (sparse)
// blob file: only a positioned read can do that.
func TestDirRangeReadsPart(t *testing.T) {
	d := newDir(t)
	var h [32]byte
	h[0] = 0xab
	p := d.path(h)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const big = 64 << 30
	if err := f.Truncate(big); err != nil {
		t.Skipf("no sparse files here: %v", err)
	}
	if _, err := f.WriteAt([]byte("tail"), big-4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	got, err := d.GetRange(context.Background(), h, big-4096, 4096)
	if err != nil || !bytes.Equal(got[4092:], []byte("tail")) {
		t.Fatalf("GetRange: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("4 KiB ranged read took %v", el)
	}
}

// TestDirCrashDuringPut kills a process in the middle of a Put with
// SIGKILL: the blob is not visible, only a temp file remains, and the next
// NewDir removes it.
func TestDirCrashDuringPut(t *testing.T) {
	if os.Getenv("INTEGRITY_BLOB_CRASH_CHILD") != "" {
		t.Skip("child mode")
	}
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDirCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), "INTEGRITY_BLOB_CRASH_CHILD="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var hash string
	for sc.Scan() {
		if h, ok := strings.CutPrefix(sc.Text(), "WRITING "); ok {
			hash = h
			break
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if hash == "" {
		t.Fatal("child never started writing")
	}
	final, _ := filepath.Glob(filepath.Join(root, "??", "*"))
	if len(final) != 0 {
		t.Fatalf("partial blob visible under its final name: %v", final)
	}
	tmp, _ := filepath.Glob(filepath.Join(root, dirTmp, "*"))
	if len(tmp) != 1 {
		t.Fatalf("temp files after the crash: %v", tmp)
	}
	if fi, err := os.Stat(tmp[0]); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("temp file: %v %v", fi, err)
	}
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if left := tempFiles(t, d); len(left) != 0 {
		t.Fatalf("NewDir left stale temp files %v", left)
	}
	var h [32]byte
	_, _ = hex.Decode(h[:], []byte(hash))
	if ok, _ := d.Has(context.Background(), h); ok {
		t.Fatal("the interrupted blob is visible")
	}
}

// TestDirCrashChild is the process TestDirCrashDuringPut kills: it writes
// 1 MiB of a 4 MiB blob and waits.
func TestDirCrashChild(t *testing.T) {
	root := os.Getenv("INTEGRITY_BLOB_CRASH_CHILD")
	if root == "" {
		t.Skip("only run as a child of TestDirCrashDuringPut")
	}
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(4<<20, 13)
	h := sha256.Sum256(data)
	r := &stallReader{r: bytes.NewReader(data[:1<<20]), stalled: func() {
		fmt.Printf("WRITING %x\n", h)
	}, wait: make(chan struct{})}
	_ = d.Put(context.Background(), h, r, int64(len(data)))
	t.Fatal("Put returned")
}

// stallReader yields r, then calls stalled and blocks until wait closes.
type stallReader struct {
	r       io.Reader
	stalled func()
	wait    chan struct{}
	once    sync.Once
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.once.Do(s.stalled)
		<-s.wait
		return 0, io.EOF
	}
	return n, err
}

// TestDirKeepsLiveTemps: opening a directory while another writer is in
// the middle of a Put leaves that writer's temp file alone.
func TestDirKeepsLiveTemps(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	data := randBytes(1<<20, 14)
	h := sha256.Sum256(data)
	stalled := make(chan struct{})
	r := &stallReader{r: bytes.NewReader(data), stalled: func() { close(stalled) }, wait: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- d.Put(ctx, h, r, int64(len(data))) }()
	<-stalled
	if _, err := NewDir(d.Path()); err != nil {
		t.Fatal(err)
	}
	if tmp := tempFiles(t, d); len(tmp) != 1 {
		t.Fatalf("live temp file removed: %v", tmp)
	}
	close(r.wait)
	if err := <-done; err != nil {
		t.Fatalf("Put after a concurrent NewDir: %v", err)
	}
	if ok, _ := d.Has(ctx, h); !ok {
		t.Fatal("blob missing")
	}
}

func TestDirConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	data := randBytes(500_000, 15)
	h := sha256.Sum256(data)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := d.Put(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Error(err)
			}
			rc, err := d.Get(ctx, h)
			if err != nil {
				t.Error(err)
				return
			}
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, data) {
				t.Errorf("concurrent Get: %v", err)
			}
		})
	}
	wg.Wait()
	if tmp := tempFiles(t, d); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
}

func TestDirPutEncryptedAndCopy(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	plain := randBytes(3_000_000, 16)
	ref, err := d.PutEncrypted(ctx, bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Load(ctx, d, ref); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Load: %v", err)
	}
	d2 := newDir(t)
	if err := Copy(ctx, d2, d, ref.Hash, ref.Size); err != nil {
		t.Fatal(err)
	}
	if got, err := DecryptRange(ctx, d2, ref, 1_000_000, 100_000); err != nil || !bytes.Equal(got, plain[1_000_000:1_100_000]) {
		t.Fatalf("DecryptRange from the copy: %v", err)
	}
	if tmp := tempFiles(t, d); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
	// A failing PutEncrypted leaves nothing behind.
	if _, err := d.PutEncrypted(ctx, io.MultiReader(bytes.NewReader(plain), errReader{io.ErrUnexpectedEOF})); err == nil {
		t.Fatal("PutEncrypted of a failing reader succeeded")
	}
	if tmp := tempFiles(t, d); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
}

type report struct {
	mu    sync.Mutex
	calls []int
}

func (r *report) fn(i int, err error) {
	r.mu.Lock()
	r.calls = append(r.calls, i)
	r.mu.Unlock()
}

func (r *report) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// TestMultiSkipsBadStores: a Multi over a failing store, one without the
// blob, one serving altered bytes and a good one reads correctly, and
// reports the failing and the lying store (not the one that lacks it).
func TestMultiSkipsBadStores(t *testing.T) {
	ctx := context.Background()
	plain := randBytes(10*ChunkSize+5, 17)
	enc, ref, err := Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	failing := newMemStore()
	failing.fail = errors.New("connection refused")
	empty := newMemStore()
	liar := newMemStore()
	liar.m[ref.Hash] = enc
	liar.corrupt = true
	good := newDir(t)
	put(t, good, enc)
	var rep report
	m := NewMulti(rep.fn, failing, empty, liar, good)

	if got, err := Load(ctx, m, ref); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Load: %v", err)
	}
	if c := rep.take(); !slices.Equal(c, []int{0, 2}) {
		t.Fatalf("Load reported stores %v, want [0 2]", c)
	}
	// The liar flips the middle byte: chunk 5's range is bad there.
	if got, err := DecryptRange(ctx, m, ref, 5*ChunkSize, 2*ChunkSize); err != nil || !bytes.Equal(got, plain[5*ChunkSize:7*ChunkSize]) {
		t.Fatalf("DecryptRange: %v", err)
	}
	if c := rep.take(); !slices.Equal(c, []int{0, 2}) {
		t.Fatalf("DecryptRange reported stores %v, want [0 2]", c)
	}
	dst := newDir(t)
	if err := Copy(ctx, dst, m, ref.Hash, ref.Size); err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if c := rep.take(); !slices.Equal(c, []int{0, 2}) {
		t.Fatalf("Copy reported stores %v, want [0 2]", c)
	}
	if got, err := Load(ctx, dst, ref); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Load from the copy: %v", err)
	}
	if ok, err := m.Has(ctx, ref.Hash); !ok || err != nil {
		t.Fatalf("Has: %v %v", ok, err)
	}
	rep.take()
	// Get checks each copy before returning it: the liar's is reported
	// and skipped, the good store's returned (multi_test.go has more).
	rc, err := m.Get(ctx, ref.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("Get past a liar: %v", err)
	}
	rc.Close()
	if c := rep.take(); !slices.Equal(c, []int{0, 2}) {
		t.Fatalf("Get reported stores %v, want [0 2]", c)
	}
	// Without the liar, Get streams the good copy.
	m2 := NewMulti(nil, failing, empty, good)
	rc, err = m2.Get(ctx, ref.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("Get: %v", err)
	}
	rc.Close()
	if got, err := m2.GetRange(ctx, ref.Hash, 10, 20); err != nil || !bytes.Equal(got, enc[10:30]) {
		t.Fatalf("GetRange: %v", err)
	}
}

func TestMultiAllBad(t *testing.T) {
	ctx := context.Background()
	plain := randBytes(3*ChunkSize, 18)
	enc, ref, err := Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	liar := newMemStore()
	liar.m[ref.Hash] = enc
	liar.corrupt = true
	if _, err := Load(ctx, NewMulti(nil, liar, liar), ref); !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), "store 1") {
		t.Fatalf("Load from liars: %v", err)
	}
	if _, err := DecryptRange(ctx, NewMulti(nil, liar), ref, 0, ref.PlainSize); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("DecryptRange from a liar: %v", err)
	}
	m := NewMulti(nil, newMemStore(), newDir(t))
	if _, err := Load(ctx, m, ref); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load from empty stores: %v", err)
	}
	if _, err := m.Get(ctx, ref.Hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get from empty stores: %v", err)
	}
	if ok, err := m.Has(ctx, ref.Hash); ok || err != nil {
		t.Fatalf("Has from empty stores: %v %v", ok, err)
	}
	if _, err := Load(ctx, NewMulti(nil), ref); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load from no stores: %v", err)
	}
	// A failing destination is not the sources' fault: Copy stops there
	// instead of trying (and blaming) every source.
	var rep report
	dst := newMemStore()
	dst.fail = errors.New("disk full")
	good := newMemStore()
	good.m[ref.Hash] = enc
	err = Copy(ctx, dst, NewMulti(rep.fn, good, good), ref.Hash, ref.Size)
	if err == nil || !strings.Contains(err.Error(), "disk full") || len(rep.take()) != 0 {
		t.Fatalf("Copy to a failing destination: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Load(cctx, NewMulti(nil, good), ref); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Load: %v", err)
	}
}

func TestMultiPutDelete(t *testing.T) {
	ctx := context.Background()
	a, b := newDir(t), newMemStore()
	m := NewMulti(nil, a, b)
	data := randBytes(70_000, 19)
	h := put(t, m, data)
	for i, s := range []Store{a, b} {
		if ok, _ := s.Has(ctx, h); !ok {
			t.Fatalf("store %d lacks the blob after Multi.Put", i)
		}
	}
	if err := m.Put(ctx, sha256.Sum256([]byte("x")), bytes.NewReader(data), int64(len(data))); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("Multi.Put of wrong bytes: %v", err)
	}
	if err := m.Delete(ctx, h); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Has(ctx, h); ok {
		t.Fatal("blob left after Multi.Delete")
	}
}
