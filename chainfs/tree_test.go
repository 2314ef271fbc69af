package chainfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/chain/embedded"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
	"github.com/integrity-sys/integrity/keyring"
)

// env is one user's System on the embedded chain: keys, wallet, blobs.
type env struct {
	t       testing.TB
	backend chain.Backend
	wallet  *wallet.Wallet
	root    node.Keys
	genesis node.OutPoint
	blobs   blob.Store
	blobDir string
	key     keyring.Key
	seed    []byte
	images  ImageStores
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvAt(t, t.TempDir())
}

// reopenChain closes the embedded chain without mining its mempool (as a
// crash would lose it) and opens it again; the wallet follows.
func (e *env) reopenChain(t testing.TB, dir string) {
	t.Helper()
	if err := e.backend.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := embedded.Open(embedded.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w, err := wallet.New(e.seed, c, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.backend, e.wallet = c, w
}

func newEnvAt(t testing.TB, dir string) *env {
	t.Helper()
	c, err := embedded.Open(embedded.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	w, err := wallet.New(seed, c, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Mine(ctx, 101, w.Address()); err != nil {
		t.Fatal(err)
	}
	var r, wr [64]byte
	_, _ = rand.Read(r[:])
	_, _ = rand.Read(wr[:])
	root, err := node.RootKeys(r, wr)
	if err != nil {
		t.Fatal(err)
	}
	out := wallet.Output{PkScript: p2pkh(root.Addr), Value: 10_000}
	tx, _, err := w.Pay(ctx, []wallet.Output{out})
	if err != nil {
		t.Fatal(err)
	}
	blobDir := filepath.Join(t.TempDir(), "blobs")
	blobs, err := blob.NewDir(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := keyring.NewRandomKey()
	return &env{t: t, backend: c, wallet: w, root: root, genesis: node.OutPoint{TxID: tx.TxHash(), Index: 0}, blobs: blobs, blobDir: blobDir, key: key, seed: seed}
}

// open opens a tree (a device) on the env with its own cache directory.
func (e *env) open(cacheDir string, device string) *Tree {
	e.t.Helper()
	return e.openDelay(cacheDir, device, 20*time.Millisecond)
}

func (e *env) openDelay(cacheDir string, device string, delay time.Duration) *Tree {
	e.t.Helper()
	if cacheDir == "" {
		cacheDir = e.t.TempDir()
	}
	tr, err := Open(context.Background(), Config{
		Backend: e.backend, Wallet: e.wallet, RootKeys: e.root, RootGenesis: e.genesis,
		CacheDir: cacheDir, CacheKey: e.key, Blobs: e.blobs, Device: device, CommitDelay: delay,
		Images: e.images,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return tr
}

func mkdir(t testing.TB, tr *Tree, path string) uint64 {
	t.Helper()
	dir, name := filepath.Split(path)
	d, err := tr.Resolve(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tr.Create(d, name, node.KindDir, 0o755, "")
	if err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

func writeFile(t testing.TB, tr *Tree, path string, data []byte) uint64 {
	t.Helper()
	dir, name := filepath.Split(path)
	d, err := tr.Resolve(dir)
	if err != nil {
		t.Fatal(err)
	}
	ino, err := tr.Resolve(path)
	if err != nil {
		a, err := tr.Create(d, name, node.KindFile, 0o644, "")
		if err != nil {
			t.Fatal(err)
		}
		ino = a.Ino
	}
	if _, err := tr.SetAttr(ino, SetAttr{Size: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Write(ino, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ino); err != nil {
		t.Fatal(err)
	}
	return ino
}

func ptr[T any](v T) *T { return &v }

func readFile(t testing.TB, tr *Tree, path string) []byte {
	t.Helper()
	ino, err := tr.Resolve(path)
	if err != nil {
		t.Fatalf("resolve %s: %v", path, err)
	}
	a, err := tr.GetAttr(ino)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, a.Size)
	n, err := tr.Read(ino, 0, buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func syncAll(t testing.TB, tr *Tree) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := tr.SyncAll(ctx); err != nil {
		t.Fatal(err)
	}
}

func closeTree(t testing.TB, tr *Tree) {
	t.Helper()
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// listing renders a tree for comparison: path, kind, mode, size, mtime,
// content hash.
func listing(t testing.TB, tr *Tree) string {
	t.Helper()
	var b strings.Builder
	var walk func(ino uint64, p string)
	walk = func(ino uint64, p string) {
		ents, err := tr.ReadDir(ino)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			a, err := tr.GetAttr(e.Ino)
			if err != nil {
				t.Fatal(err)
			}
			cp := p + "/" + e.Name
			fmt.Fprintf(&b, "%s %s %o %d %d", cp, e.Kind, a.Mode, a.Size, a.Mtime.UnixNano())
			if e.Kind == node.KindFile {
				fmt.Fprintf(&b, " %x", sha(readFile(t, tr, cp)))
			}
			b.WriteString("\n")
			if e.Kind == node.KindDir {
				walk(e.Ino, cp)
			}
		}
	}
	walk(RootIno, "")
	return b.String()
}

func sha(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:8]
}

// crash stops the tree as a kill -9 would: nothing more is committed, the
// journal is left as it is.
func (t *Tree) crash() {
	t.journalPending() // what was closed long enough ago to be journaled
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	close(t.stop)
	t.done.Wait()
	_ = t.j.close()
}

func TestRebuildFromChain(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	mkdir(t, tr, "/docs")
	mkdir(t, tr, "/docs/deep")
	writeFile(t, tr, "/docs/a.txt", []byte("hello"))
	writeFile(t, tr, "/docs/deep/b.bin", bytes.Repeat([]byte{7}, 100_000)) // on chain in steps
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)
	writeFile(t, tr, "/big.bin", big) // a blob
	ino, _ := tr.Resolve("/docs/a.txt")
	if _, err := tr.SetAttr(ino, SetAttr{Mode: ptr(uint32(0o600))}); err != nil {
		t.Fatal(err)
	}
	d, _ := tr.Resolve("/")
	if _, err := tr.Create(d, "link", node.KindSymlink, 0o777, "docs/a.txt"); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetXattr(ino, "user.tag", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	syncAll(t, tr)
	want := listing(t, tr)
	closeTree(t, tr)

	// Another device, empty cache: the same tree from the chain alone.
	tr2 := e.open("", "b")
	defer closeTree(t, tr2)
	if got := listing(t, tr2); got != want {
		t.Fatalf("rebuilt tree differs:\n%s\nwant:\n%s", got, want)
	}
	if !bytes.Equal(readFile(t, tr2, "/big.bin"), big) {
		t.Fatal("blob content differs")
	}
	ino2, _ := tr2.Resolve("/docs/a.txt")
	if v, err := tr2.GetXattr(ino2, "user.tag"); err != nil || string(v) != "v" {
		t.Fatalf("xattr: %q %v", v, err)
	}
	l, _ := tr2.Resolve("/link")
	if target, err := tr2.ReadLink(l); err != nil || target != "docs/a.txt" {
		t.Fatalf("symlink: %q %v", target, err)
	}
}

func TestHistoryAndRestore(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	defer closeTree(t, tr)
	var versions [][]byte
	base := bytes.Repeat([]byte("line of text\n"), 500)
	for i := 0; i < 20; i++ {
		v := append([]byte(fmt.Sprintf("version %d\n", i)), base...)
		versions = append(versions, v)
		writeFile(t, tr, "/notes.txt", v)
		syncAll(t, tr)
	}
	ino, _ := tr.Resolve("/notes.txt")
	h, err := tr.History(ino)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 20 {
		t.Fatalf("%d revisions, want 20", len(h))
	}
	for _, n := range []int{1, 7, 20} {
		got, err := tr.ReadRevision(ino, n)
		if err != nil || !bytes.Equal(got, versions[n-1]) {
			t.Fatalf("revision %d differs: %v", n, err)
		}
	}
	if !strings.Contains(h[1].Summary, "patch") {
		t.Fatalf("an edit did not commit a patch: %q", h[1].Summary)
	}
	if err := tr.Restore(ino, 7); err != nil {
		t.Fatal(err)
	}
	syncAll(t, tr)
	if !bytes.Equal(readFile(t, tr, "/notes.txt"), versions[6]) {
		t.Fatal("restore")
	}
	if h, _ := tr.History(ino); len(h) != 21 {
		t.Fatalf("restore is not a new revision: %d", len(h))
	}
	if _, err := tr.ReadRevision(ino, 99); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing revision: %v", err)
	}
}

func TestMovesKeepContent(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	mkdir(t, tr, "/a")
	mkdir(t, tr, "/b")
	writeFile(t, tr, "/a/f.txt", []byte("moving"))
	mkdir(t, tr, "/a/sub")
	writeFile(t, tr, "/a/sub/g.txt", []byte("deep"))
	syncAll(t, tr)
	a, _ := tr.Resolve("/a")
	b, _ := tr.Resolve("/b")
	if err := tr.Rename(a, "f.txt", b, "f2.txt", false); err != nil {
		t.Fatal(err)
	}
	if err := tr.Rename(a, "sub", b, "sub", false); err != nil {
		t.Fatal(err)
	}
	// Created and moved before its first commit.
	writeFile(t, tr, "/a/new.txt", []byte("fresh"))
	if err := tr.Rename(a, "new.txt", b, "new.txt", true); err != nil {
		t.Fatal(err)
	}
	if err := tr.Rename(b, "new.txt", b, "sub", true); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("RENAME_NOREPLACE onto an existing name: %v", err)
	}
	syncAll(t, tr)
	closeTree(t, tr)
	tr2 := e.open("", "b")
	defer closeTree(t, tr2)
	for p, want := range map[string]string{"/b/f2.txt": "moving", "/b/sub/g.txt": "deep", "/b/new.txt": "fresh"} {
		if got := string(readFile(t, tr2, p)); got != want {
			t.Fatalf("%s: %q", p, got)
		}
	}
	if _, err := tr2.Resolve("/a/f.txt"); err == nil {
		t.Fatal("moved file still at its old place")
	}
}

// TestForeignTransactionsChangeNothing: a third party pays node addresses
// with replayed commit payloads, garbage, and well-formed commits sealed
// under a wrong key.
func TestForeignTransactionsChangeNothing(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	mkdir(t, tr, "/d")
	writeFile(t, tr, "/d/f.txt", []byte("original"))
	syncAll(t, tr)
	want := listing(t, tr)
	tr.mu.Lock()
	n, _ := tr.resolve("/d/f.txt")
	victim := n.keys
	oldBody := n.revs[0].body
	tr.mu.Unlock()
	closeTree(t, tr)

	ctx := context.Background()
	attacker := newAttacker(t, e)
	other, _ := e.root.Child(999, [20]byte{})
	wrongKey := other
	wrongKey.Addr = victim.Addr
	forged, _ := node.SealBody(wrongKey, node.Body{Ops: []node.Op{{Code: node.OpData, Data: []byte("pwned")}}})
	replayed, _ := node.SealBody(victim, oldBody) // an old payload, re-sent by a stranger
	for _, payload := range [][]byte{forged, replayed, []byte("garbage")} {
		script, _ := envelope.Encode(envelope.TypeNodeCommit, payload)
		attacker.pay(ctx, script, p2pkh(victim.Addr))
	}
	attacker.pay(ctx, []byte{0x6a, 0x04, 'j', 'u', 'n', 'k'}, p2pkh(victim.Addr))
	if _, err := e.backend.Mine(ctx, 1, e.wallet.Address()); err != nil {
		t.Fatal(err)
	}
	tr2 := e.open("", "b")
	defer closeTree(t, tr2)
	if got := listing(t, tr2); got != want {
		t.Fatalf("foreign transactions changed the tree:\n%s\nwant:\n%s", got, want)
	}
}

type attacker struct {
	t   *testing.T
	e   *env
	key *wallet.Key
	w   *wallet.Wallet
}

func newAttacker(t *testing.T, e *env) *attacker {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	w, _ := wallet.New(seed, e.backend, wallet.Options{})
	k, _ := wallet.DeriveKey(seed, e.backend.Params())
	if _, err := e.backend.Mine(context.Background(), 101, w.Address()); err != nil {
		t.Fatal(err)
	}
	return &attacker{t: t, e: e, key: k, w: w}
}

func (a *attacker) pay(ctx context.Context, script, to []byte) {
	a.t.Helper()
	utxos, err := a.e.backend.UTXOs(ctx, a.key.Address())
	if err != nil {
		a.t.Fatal(err)
	}
	var in []chain.UTXO
	for _, u := range utxos {
		if u.Value > 100_000 && (u.Height < 0 || !u.Coinbase || u.Spendable(1<<30, 0)) {
			tip, _ := a.e.backend.Tip(ctx)
			if u.Spendable(tip.Height+1, a.e.backend.Params().CoinbaseMaturity) {
				in = append(in, u)
				break
			}
		}
	}
	tx, err := a.key.Spend(in, []*wire.TxOut{wire.NewTxOut(0, script), wire.NewTxOut(1000, to)}, 1)
	if err != nil {
		a.t.Fatal(err)
	}
	if err := a.e.backend.Broadcast(ctx, tx); err != nil {
		a.t.Fatal(err)
	}
}

// TestJournalSurvivesCrash: changes flushed (close) but not committed are
// committed after a restart; commits broadcast but not mined survive the
// loss of the embedded chain's mempool.
func TestJournalSurvivesCrash(t *testing.T) {
	e := newEnv(t)
	cache := t.TempDir()
	tr := e.openDelay(cache, "a", time.Hour)
	mkdir(t, tr, "/j")
	syncAll(t, tr)
	writeFile(t, tr, "/j/flushed.txt", []byte("flushed, never committed"))
	tr.crash() // no commit, no clean close
	tr2 := e.open(cache, "a")
	syncAll(t, tr2)
	if got := string(readFile(t, tr2, "/j/flushed.txt")); got != "flushed, never committed" {
		t.Fatalf("journaled change lost: %q", got)
	}
	closeTree(t, tr2)
	tr3 := e.open("", "b") // a fresh device sees it on chain
	defer closeTree(t, tr3)
	if got := string(readFile(t, tr3, "/j/flushed.txt")); got != "flushed, never committed" {
		t.Fatalf("not on chain: %q", got)
	}
}

// TestConcurrentEditsKeepBoth: two devices edit the same file; the one
// that commits second keeps its version as a conflict copy.
func TestConcurrentEditsKeepBoth(t *testing.T) {
	e := newEnv(t)
	a := e.open("", "laptop")
	writeFile(t, a, "/report.txt", []byte("v0"))
	syncAll(t, a)
	b := e.open("", "desktop")
	writeFile(t, a, "/report.txt", []byte("from laptop"))
	writeFile(t, b, "/report.txt", []byte("from desktop"))
	syncAll(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_ = b.SyncAll(ctx)
		ents, _ := b.ReadDir(RootIno)
		if len(ents) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no conflict copy: %+v", ents)
		}
		time.Sleep(50 * time.Millisecond)
	}
	syncAll(t, b)
	closeTree(t, a)
	closeTree(t, b)
	c := e.open("", "check")
	defer closeTree(t, c)
	ents, _ := c.ReadDir(RootIno)
	if len(ents) != 2 {
		t.Fatalf("entries: %+v", ents)
	}
	got := map[string]bool{}
	for _, en := range ents {
		got[string(readFile(t, c, "/"+en.Name))] = true
		if en.Name != "report.txt" && !strings.Contains(en.Name, "conflict from desktop") {
			t.Fatalf("conflict copy name %q", en.Name)
		}
	}
	if !got["from laptop"] || !got["from desktop"] {
		t.Fatalf("a version was lost: %v", got)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	defer closeTree(t, tr)
	d := uint64(RootIno)
	for _, name := range []string{"a/b", "", "..", string(make([]byte, 300))} {
		if _, err := tr.Create(d, name, node.KindFile, 0o644, ""); err == nil {
			t.Fatalf("name %q accepted", name)
		}
	}
	writeFile(t, tr, "/f", []byte("x"))
	if _, err := tr.Create(d, "f", node.KindFile, 0o644, ""); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("duplicate: %v", err)
	}
	mkdir(t, tr, "/dir")
	writeFile(t, tr, "/dir/x", []byte("x"))
	if err := tr.Remove(d, "dir", true); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	if err := tr.Remove(d, "f", true); !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("rmdir file: %v", err)
	}
	if err := tr.Remove(d, "dir", false); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("unlink dir: %v", err)
	}
	dir, _ := tr.Resolve("/dir")
	if err := tr.Rename(d, "dir", dir, "inside", false); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("move into itself: %v", err)
	}
}

// TestCrashLosesMempool: the agent dies with the embedded chain: the
// mempool is gone, blocks stay. Every file whose Sync returned must be on
// chain after the restart (the journal re-broadcasts).
func TestCrashLosesMempool(t *testing.T) {
	dir := t.TempDir()
	e := newEnvAt(t, dir)
	cache := t.TempDir()
	tr := e.open(cache, "a")
	ctx := context.Background()
	content := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("file %d; ", i)), 50+i) }
	// A miner runs alongside, as the agent's does.
	stopMining := make(chan struct{})
	mined := make(chan struct{})
	go func() {
		defer close(mined)
		for {
			select {
			case <-stopMining:
				return
			case <-time.After(30 * time.Millisecond):
				_, _ = e.backend.Mine(ctx, 1, e.wallet.Address())
			}
		}
	}()
	const files = 300
	for i := 0; i < files; i++ {
		a, err := tr.Create(RootIno, fmt.Sprintf("f%03d", i), node.KindFile, 0o644, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Write(a.Ino, 0, content(i)); err != nil {
			t.Fatal(err)
		}
		if err := tr.Flush(a.Ino); err != nil {
			t.Fatal(err)
		}
		if err := tr.Sync(ctx, a.Ino); err != nil {
			t.Fatal(err)
		}
		if err := tr.Flush(a.Ino); err != nil {
			t.Fatal(err)
		}
	}
	close(stopMining)
	<-mined
	tr.crash()
	// The chain process dies too: reopen it without its mempool.
	e.reopenChain(t, dir)
	tr2 := e.open(cache, "a")
	syncAll(t, tr2)
	closeTree(t, tr2)
	if _, err := e.backend.Mine(ctx, 1, e.wallet.Address()); err != nil {
		t.Fatal(err)
	}
	tr3 := e.open("", "fresh")
	defer closeTree(t, tr3)
	bad := 0
	for i := 0; i < files; i++ {
		if got := readFile(t, tr3, fmt.Sprintf("/f%03d", i)); !bytes.Equal(got, content(i)) {
			t.Errorf("f%03d: %d bytes after the crash", i, len(got))
			if bad++; bad > 5 {
				t.FailNow()
			}
		}
	}
}

// TestJournalLargeFiles: a large file's flushed content survives a crash
// (the journal points at a staged blob), and so does a small edit of it
// (journaled as a delta against the committed content).
func TestJournalLargeFiles(t *testing.T) {
	e := newEnv(t)
	cache := t.TempDir()
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big)
	tr := e.openDelay(cache, "a", time.Hour)
	writeFile(t, tr, "/big.bin", big)
	tr.crash()
	tr = e.openDelay(cache, "a", time.Hour)
	if !bytes.Equal(readFile(t, tr, "/big.bin"), big) {
		t.Fatal("large flushed file lost in a crash")
	}
	syncAll(t, tr)
	edited := append([]byte(nil), big...)
	edited[1<<20] ^= 0xff
	ino, _ := tr.Resolve("/big.bin")
	if _, err := tr.Write(ino, 1<<20, edited[1<<20:1<<20+1]); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ino); err != nil {
		t.Fatal(err)
	}
	tr.crash()
	tr = e.openDelay(cache, "a", time.Hour)
	defer closeTree(t, tr)
	if !bytes.Equal(readFile(t, tr, "/big.bin"), edited) {
		t.Fatal("edit of a large file lost in a crash")
	}
	syncAll(t, tr)
	ino, _ = tr.Resolve("/big.bin")
	h, _ := tr.History(ino)
	if last := h[len(h)-1]; !strings.Contains(last.Summary, "patch") {
		t.Fatalf("1-byte edit of a 3 MiB file committed as %q", last.Summary)
	}
}

func TestBootloader(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	ctx := context.Background()
	if _, err := tr.Bootloader(ctx); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("no bootloader yet: %v", err)
	}
	wasm := append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, 3<<20)...)
	if err := tr.SetBootloader(ctx, wasm); err != nil {
		t.Fatal(err)
	}
	closeTree(t, tr)
	tr2 := e.open("", "b")
	defer closeTree(t, tr2)
	got, err := tr2.Bootloader(ctx)
	if err != nil || !bytes.Equal(got, wasm) {
		t.Fatalf("bootloader after rebuild: %v", err)
	}
}

// TestRootsAndRekey: another user's folder shown under a virtual path
// (read-only when shared so), and a folder moved onto fresh keys: the old
// keys read nothing written afterwards.
func TestRootsAndRekey(t *testing.T) {
	alice := newEnv(t)
	a := alice.open("", "alice")
	mkdir(t, a, "/docs")
	writeFile(t, a, "/docs/one.txt", []byte("one"))
	syncAll(t, a)
	a.mu.Lock()
	docs, _ := a.resolve("/docs")
	keys, genesis := docs.keys, docs.genesis
	a.mu.Unlock()

	// Bob's tree on the same chain shows Alice's /docs read-only.
	bob := &env{t: t, backend: alice.backend, wallet: alice.wallet, blobs: alice.blobs, key: alice.key}
	var r, w [64]byte
	_, _ = rand.Read(r[:])
	_, _ = rand.Read(w[:])
	bob.root, _ = node.RootKeys(r, w)
	tx, _, err := alice.wallet.Pay(context.Background(), []wallet.Output{{PkScript: p2pkh(bob.root.Addr), Value: 10_000}})
	if err != nil {
		t.Fatal(err)
	}
	bob.genesis = node.OutPoint{TxID: tx.TxHash(), Index: 0}
	b := bob.open("", "bob")
	defer closeTree(t, b)
	ctx := context.Background()
	if _, err := b.AddRoot(ctx, Root{Path: []string{"shared", "alice", "docs"}, Keys: keys.ReadOnly(), Kind: node.KindDir, Genesis: genesis}); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, b, "/shared/alice/docs/one.txt")); got != "one" {
		t.Fatalf("shared file: %q", got)
	}
	sd, _ := b.Resolve("/shared/alice/docs")
	if _, err := b.Create(sd, "mine.txt", node.KindFile, 0o644, ""); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write into a read-only share: %v", err)
	}
	v, _ := b.Resolve("/shared")
	if _, err := b.Create(v, "x", node.KindDir, 0o755, ""); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("create in the virtual folder: %v", err)
	}
	// Alice adds a file: Bob sees it.
	writeFile(t, a, "/docs/two.txt", []byte("two"))
	syncAll(t, a)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ino, err := b.Resolve("/shared/alice/docs/two.txt"); err == nil {
			if at, _ := b.GetAttr(ino); at.Size == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("Alice's new file did not reach Bob's view")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Alice revokes: /docs moves onto fresh keys; what she writes next is
	// not readable with the old keys.
	if _, err := a.Rekey(mustResolve(t, a, "/docs")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, a, "/docs/three.txt", []byte("after revocation"))
	syncAll(t, a)
	if got := string(readFile(t, a, "/docs/one.txt")); got != "one" {
		t.Fatalf("rekeyed folder lost content: %q", got)
	}
	a.mu.Lock()
	newDocs, _ := a.resolve("/docs")
	three, _ := a.resolve("/docs/three.txt")
	newAddr, threeKeys := newDocs.keys.Addr, three.keys
	a.mu.Unlock()
	if newAddr == keys.Addr {
		t.Fatal("rekey kept the address")
	}
	// The old read key derives nothing that opens the new commits.
	for i := uint32(0); i < 8; i++ {
		c, _ := keys.ReadOnly().Child(i, threeKeys.Addr)
		if c.Read == threeKeys.Read {
			t.Fatal("old keys derive the new file's read key")
		}
	}
	r2, err := b.fetch(ctx, keys.ReadOnly(), node.NewState(node.KindDir), genesis, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.state.Entries["three.txt"]; ok {
		t.Fatal("the revoked folder shows a file written after revocation")
	}
	closeTree(t, a)
}

func mustResolve(t *testing.T, tr *Tree, p string) uint64 {
	t.Helper()
	ino, err := tr.Resolve(p)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestEscalationAttack: Bob holds read access to /a and write access to
// /a/b. He cannot commit to /a: a transaction spending /a's head signed
// with any key he has is refused by the chain, and a commit sealed with
// /a's read key that he pays to /a's address is not a commit of /a.
func TestEscalationAttack(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "alice")
	mkdir(t, tr, "/a")
	mkdir(t, tr, "/a/b")
	writeFile(t, tr, "/a/f.txt", []byte("alice's"))
	syncAll(t, tr)
	want := listing(t, tr)
	tr.mu.Lock()
	an, _ := tr.resolve("/a")
	bn, _ := tr.resolve("/a/b")
	aKeys, bKeys, aHead := an.keys, bn.keys, an.head
	tr.mu.Unlock()
	closeTree(t, tr)

	bobRead := aKeys.ReadOnly() // read access to /a
	bobWrite := bKeys           // write access to /a/b
	if bobRead.HasWrite {
		t.Fatal("read-only keys carry a write key")
	}
	// Nothing Bob can derive is /a's write key.
	cands := []node.Keys{bobWrite}
	for i := uint32(0); i < 32; i++ {
		c, _ := bobWrite.Child(i, [20]byte{})
		cands = append(cands, c)
	}
	for _, c := range cands {
		if c.Write == aKeys.Write || c.Addr == aKeys.Addr {
			t.Fatal("a key derived from /a/b is /a's")
		}
	}
	// A commit to /a signed with /a/b's key: the chain refuses it.
	evil := node.Body{Ops: []node.Op{{Code: node.OpEntryNew, Entry: node.Entry{Name: "evil", Kind: node.KindFile, Index: 99, Addr: bobWrite.Addr}}}}
	sealed, _ := node.SealBody(bobRead, evil)
	script, _ := envelope.Encode(envelope.TypeNodeCommit, sealed)
	priv, _ := bobWrite.WritePriv()
	signer, _ := wallet.NewKey(priv, e.backend.Params())
	forgedHead := aHead
	forgedHead.PkScript = signer.PkScript() // sign as if the head were his
	tx, _, err := signer.Commit([]chain.UTXO{forgedHead}, script, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.backend.Broadcast(context.Background(), tx); !errors.Is(err, chain.ErrRejected) {
		t.Fatalf("spending /a's head with /a/b's key: %v, want ErrRejected", err)
	}
	// The same commit paid to /a's address from Bob's own coins.
	newAttacker(t, e).pay(context.Background(), script, p2pkh(aKeys.Addr))
	if _, err := e.backend.Mine(context.Background(), 1, e.wallet.Address()); err != nil {
		t.Fatal(err)
	}
	tr2 := e.open("", "check")
	defer closeTree(t, tr2)
	if got := listing(t, tr2); got != want {
		t.Fatalf("Bob changed /a:\n%s\nwant:\n%s", got, want)
	}
}

// TestLargeFileEncryptedOnce: the journal, the commit loop and fsync all
// want a blob of a closed large file's content; each version is encrypted
// into one blob, not one per caller.
func TestLargeFileEncryptedOnce(t *testing.T) {
	e := newEnv(t)
	tr := e.open("", "a")
	defer closeTree(t, tr)
	countBlobs := func() int {
		n := 0
		_ = filepath.WalkDir(e.blobDir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}
	before := countBlobs()
	for v := range 3 {
		big := make([]byte, 3<<20)
		_, _ = rand.Read(big)
		ino := writeFile(t, tr, "/big.bin", big)
		if v == 0 {
			// Journal rounds racing the commit loop.
			tr.mu.Lock()
			n, _ := tr.resolve("/big.bin")
			tr.mu.Unlock()
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { tr.prestage(context.Background(), n) })
			}
			syncAll(t, tr)
			wg.Wait()
		} else if err := tr.Sync(context.Background(), ino); err != nil {
			t.Fatal(err)
		}
		if got := countBlobs() - before; got != v+1 {
			t.Fatalf("after %d versions of a large file: %d blobs", v+1, got)
		}
		if !bytes.Equal(readFile(t, tr, "/big.bin"), big) {
			t.Fatal("content differs")
		}
	}
}
