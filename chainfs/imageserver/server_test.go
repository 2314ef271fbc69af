package imageserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/chain/embedded"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/wallet"
)

// The tests run real image servers (real Badger and blob directories in
// t.TempDir(), real HTTP on loopback via httptest) against a real
// embedded regtest chain, paid with real transactions from a real wallet,
// and drive them only through the Client.

type env struct {
	t      *testing.T
	ctx    context.Context
	chain  *embedded.Chain
	wallet *wallet.Wallet
	payer  Payer
	root   node.Keys
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c, err := embedded.Open(embedded.Config{Dir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := newWallet(t, c)
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
	return &env{t: t, ctx: ctx, chain: c, wallet: w, payer: WalletPayer(w, c.Params()), root: root}
}

func newWallet(t *testing.T, c *embedded.Chain) *wallet.Wallet {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	w, err := wallet.New(seed, c, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testServer struct {
	srv   *Server
	hs    *httptest.Server
	c     *Client
	dir   string
	store *Store
}

// server starts an image server; policy is a --policy string.
func (e *env) server(policy string, mods ...func(*Config)) *testServer {
	e.t.Helper()
	p, err := ParsePolicy(policy)
	if err != nil {
		e.t.Fatal(err)
	}
	dir := e.t.TempDir()
	cfg := Config{DataDir: dir, Chain: e.chain, Policy: p, IPRate: RateLimit{PerSecond: 1e6, Burst: 1e6}, Logger: quietLogger(), SweepInterval: -1}
	for _, m := range mods {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	e.t.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			e.t.Error(err)
		}
	})
	c, err := NewClient(hs.URL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &testServer{srv: srv, hs: hs, c: c, dir: dir}
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// photos writes n small "photos" into a new directory.
func photos(t testing.TB, n, size int) string {
	t.Helper()
	dir := t.TempDir()
	for i := 1; i <= n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("photo-%03d.jpg", i)), randBytes(size+i, uint64(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pack packs a local directory.
func pack(t testing.TB, dir string, opts image.PackOptions) (image.Ref, []byte) {
	t.Helper()
	src, err := image.LocalDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var buf bytes.Buffer
	ref, err := image.Pack(context.Background(), &buf, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ref, buf.Bytes()
}

// mountKeys are the paper's /backups/photos mount node, m/34/0/0.
func (e *env) mountKeys() node.Keys {
	k, err := image.NodeKeys(e.root, []uint32{34, 0, 0})
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *env) owner(k node.Keys) Signer {
	priv, err := k.WritePriv()
	if err != nil {
		e.t.Fatal(err)
	}
	return KeySigner(priv)
}

func otherSigner(t *testing.T) Signer {
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return KeySigner(priv)
}

func TestQuotePayUploadDownloadTwoServers(t *testing.T) {
	e := newEnv(t)
	s1 := e.server("price=1000,max-size=64MiB")
	s2 := e.server("price=2000,max-size=64MiB,min-days=7")
	mount := e.mountKeys()
	ref, data := pack(t, photos(t, 10, 30_000), image.PackOptions{Keys: &mount})
	for i, s := range []*testServer{s1, s2} {
		info, err := s.c.Info(e.ctx)
		if err != nil || !info.Payments || info.Network != "regtest" {
			t.Fatalf("info: %+v, %v", info, err)
		}
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size, Days: 30})
		if err != nil {
			t.Fatal(err)
		}
		price := []int64{1000, 2000}[i]
		if want := ((ref.Size + MiB - 1) / MiB) * 30 * price; q.Amount != want || q.Paid || q.Address == "" {
			t.Fatalf("quote %+v, want %d sat", q, want)
		}
		q, err = s.c.Pay(e.ctx, q, e.payer)
		if err != nil {
			t.Fatal(err)
		}
		if !q.Paid || q.Received < q.Amount || len(q.TxIDs) != 1 {
			t.Fatalf("paid quote: %+v", q)
		}
		var last int64
		h, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data), Owner: e.owner(mount), Progress: func(d, _ int64) { last = d }})
		if err != nil {
			t.Fatal(err)
		}
		if h.Hash != ref.Hash || h.Size != ref.Size || h.Public || h.Content != ContentImage || h.Owners != 1 || last != ref.Size {
			t.Fatalf("hosted: %+v (progress %d)", h, last)
		}
		if until := time.Until(h.HostedUntil); until < 29*24*time.Hour || until > 31*24*time.Hour {
			t.Fatalf("hosted until %v", h.HostedUntil)
		}
		rc, n, err := s.c.Download(e.ctx, ref.Hash, DownloadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || n != ref.Size || !bytes.Equal(got, data) {
			t.Fatalf("download: %d bytes, %v", len(got), err)
		}
		part, err := s.c.DownloadRange(e.ctx, ref.Hash, 100, 1000, DownloadOptions{})
		if err != nil || !bytes.Equal(part, data[100:1100]) {
			t.Fatalf("range: %v", err)
		}
	}
	// A reader with the mount node's keys reads one file by range from
	// both servers; without them, nothing.
	m := blob.NewMulti(nil, NewStore(s1.c, StoreOptions{}), NewStore(s2.c, StoreOptions{}))
	im, err := image.Open(e.ctx, m, ref, image.Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	b, err := im.ReadFile(e.ctx, "photo-007.jpg", 1<<20)
	if err != nil || !bytes.Equal(b, randBytes(30_007, 7)) {
		t.Fatalf("ranged read of one photo: %v", err)
	}
	if _, err := image.Open(e.ctx, m, ref, image.Options{}); !errors.Is(err, image.ErrKeys) {
		t.Fatalf("open without keys: %v", err)
	}
	wrong, _ := image.NodeKeys(e.root, []uint32{34, 0, 1})
	if _, err := image.Open(e.ctx, m, ref, image.Options{Keys: &wrong}); !errors.Is(err, image.ErrKeys) {
		t.Fatalf("open with a sibling's keys: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	s := e.server("price=2000,max-size=1MiB")
	mount := e.mountKeys()
	ref, data := pack(t, photos(t, 5, 20_000), image.PackOptions{Keys: &mount})

	t.Run("unpaid upload", func(t *testing.T) {
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data)})
		var ie *Error
		if !errors.Is(err, ErrUnpaid) || !errors.As(err, &ie) || ie.Amount != q.Amount || ie.Received != 0 || ie.Status != http.StatusPaymentRequired {
			t.Fatalf("unpaid upload: %v", err)
		}
		t.Logf("refused: %v", err)
		if ok, _ := s.c.Has(e.ctx, ref.Hash); ok {
			t.Fatal("unpaid content is hosted")
		}
		// Paying too little is still unpaid.
		if _, err := e.payer.Pay(e.ctx, q.Address, q.Amount/2); err != nil {
			t.Fatal(err)
		}
		if _, err := s.c.ConfirmPayment(e.ctx, q.ID, ""); !errors.Is(err, ErrUnpaid) || !errors.As(err, &ie) || ie.Received != q.Amount/2 {
			t.Fatalf("underpaid: %v", err)
		}
	})

	t.Run("payment reused", func(t *testing.T) {
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size})
		if err != nil {
			t.Fatal(err)
		}
		if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil {
			t.Fatal(err)
		}
		if _, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
		// The same quote again, for other content of the same size.
		q2 := q
		_, err = s.c.Upload(e.ctx, UploadRequest{Quote: q2, Body: bytes.NewReader(data)})
		if !errors.Is(err, ErrPaymentUsed) {
			t.Fatalf("second upload on one payment: %v", err)
		}
		t.Logf("refused: %v", err)
		// A new quote cannot claim the old payment: it pays another
		// address.
		q3, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.c.ConfirmPayment(e.ctx, q3.ID, q.TxIDs[0]); !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "does not pay") {
			t.Fatalf("claiming another quote's payment: %v", err)
		}
		if _, err := s.c.Upload(e.ctx, UploadRequest{Quote: q3, Body: bytes.NewReader(data)}); !errors.Is(err, ErrUnpaid) {
			t.Fatalf("upload on a claimed payment: %v", err)
		}
	})

	t.Run("over the size limit", func(t *testing.T) {
		big := ref
		big.Size = 2 << 20
		_, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: big.Size})
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("quote over the limit: %v", err)
		}
		t.Logf("refused: %v", err)
		// A body longer than its quote is refused before it is read.
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: 1000})
		if err != nil {
			t.Fatal(err)
		}
		q.Size = big.Size
		_, err = s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(make([]byte, big.Size))})
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("body over the limit: %v", err)
		}
	})

	t.Run("wrong bytes", func(t *testing.T) {
		other := append([]byte(nil), data...)
		other[len(other)/2] ^= 1
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: sha256.Sum256(other), Size: int64(len(other))})
		if err != nil {
			t.Fatal(err)
		}
		if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil {
			t.Fatal(err)
		}
		// Bytes that are not the quote's hash.
		if _, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data)}); !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("wrong hash: %v", err)
		}
		// Bytes that hash right but are no image (the flipped byte is
		// in a sealed record or chunk: a private image's framing still
		// holds, so use junk instead).
		junk := randBytes(5000, 77)
		q, err = s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: sha256.Sum256(junk), Size: int64(len(junk))})
		if err != nil {
			t.Fatal(err)
		}
		if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil {
			t.Fatal(err)
		}
		if _, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(junk)}); !errors.Is(err, ErrInvalidContent) {
			t.Fatalf("junk: %v", err)
		}
		if ok, _ := s.c.Has(e.ctx, sha256.Sum256(junk)); ok {
			t.Fatal("refused junk is hosted")
		}
	})

	t.Run("wrong keys", func(t *testing.T) {
		// The image was uploaded without an owner above; host it again
		// with one.
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size})
		if err != nil {
			t.Fatal(err)
		}
		if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil {
			t.Fatal(err)
		}
		owner := e.owner(mount)
		if _, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data), Owner: owner}); err != nil {
			t.Fatal(err)
		}
		d := delta.Diff(data, append(append([]byte(nil), data...), 1))
		newHash := sha256.Sum256(append(append([]byte(nil), data...), 1))
		stranger := otherSigner(t)
		_, err = s.c.Patch(e.ctx, PatchRequest{Base: ref.Hash, New: newHash, Delta: d, Owner: stranger})
		if !errors.Is(err, ErrNotOwner) {
			t.Fatalf("patch signed by a stranger: %v", err)
		}
		t.Logf("refused: %v", err)
		// Claiming the owner's key with another key's signature.
		_, err = s.c.Patch(e.ctx, PatchRequest{Base: ref.Hash, New: newHash, Delta: d, Owner: impostor{owner, stranger}})
		if !errors.Is(err, ErrBadSignature) {
			t.Fatalf("patch with a forged signature: %v", err)
		}
		t.Logf("refused: %v", err)
		// The sibling node's write key is not the mount node's.
		sib, _ := image.NodeKeys(e.root, []uint32{34, 0, 1})
		if _, err := s.c.Release(e.ctx, ref.Hash, e.owner(sib)); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("release by another node's key: %v", err)
		}
		if _, err := s.c.Release(e.ctx, ref.Hash, impostor{owner, stranger}); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("release with a forged signature: %v", err)
		}
		if ok, _ := s.c.Has(e.ctx, ref.Hash); !ok {
			t.Fatal("a refused release removed the image")
		}
		// The owner's release keeps the anonymous hold from before.
		r, err := s.c.Release(e.ctx, ref.Hash, owner)
		if err != nil || r.Deleted {
			t.Fatalf("release: %+v, %v", r, err)
		}
	})
}

// impostor presents one key and signs with another.
type impostor struct{ claimed, signer Signer }

func (i impostor) PublicKey() []byte               { return i.claimed.PublicKey() }
func (i impostor) Sign(d [32]byte) ([]byte, error) { return i.signer.Sign(d) }

// tamperHandler serves a real server's answers with one byte flipped in
// every image body.
type tamperHandler struct{ h http.Handler }

func (t tamperHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/images/") || strings.HasSuffix(r.URL.Path, "/info") {
		t.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	if len(body) > 0 && rec.Code < 300 {
		body[len(body)/2] ^= 0x20
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

func TestTamperingServerSkipped(t *testing.T) {
	e := newEnv(t)
	good := e.server("")
	bad := e.server("")
	// The bad server stores the right bytes but serves them altered.
	badFront := httptest.NewServer(tamperHandler{bad.srv})
	t.Cleanup(badFront.Close)
	badClient, err := NewClient(badFront.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	mount := e.mountKeys()
	ref, data := pack(t, photos(t, 8, 100_000), image.PackOptions{Keys: &mount})
	for _, c := range []*Client{good.c, bad.c} {
		if _, err := c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Body: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	reports := map[int][]error{}
	report := func(i int, err error) {
		mu.Lock()
		defer mu.Unlock()
		reports[i] = append(reports[i], err)
	}
	m := blob.NewMulti(report, NewStore(badClient, StoreOptions{}), NewStore(good.c, StoreOptions{}))

	// A whole download into a local cache: the bad copy fails its hash,
	// is reported, and the good server's is stored.
	cache, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := blob.Copy(e.ctx, cache, m, ref.Hash, ref.Size); err != nil {
		t.Fatal(err)
	}
	if len(reports[0]) == 0 || !errors.Is(reports[0][0], blob.ErrHashMismatch) || len(reports[1]) != 0 {
		t.Fatalf("reports after a whole download: %v", reports)
	}
	t.Logf("reported: %v", reports[0][0])

	// Ranged reads of one file: each bad range is caught by its check.
	clear(reports)
	im, err := image.Open(e.ctx, m, ref, image.Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	b, err := im.ReadFile(e.ctx, "photo-003.jpg", 1<<20)
	if err != nil || !bytes.Equal(b, randBytes(100_003, 3)) {
		t.Fatalf("ranged read past a tampering server: %v", err)
	}
	if len(reports[0]) == 0 || len(reports[1]) != 0 {
		t.Fatalf("reports after ranged reads: %v", reports)
	}
	// Alone, the bad server's bytes never pass.
	_, err = blob.NewMulti(nil, NewStore(badClient, StoreOptions{})).Get(e.ctx, ref.Hash)
	if err == nil {
		rc, _ := NewStore(badClient, StoreOptions{}).Get(e.ctx, ref.Hash)
		_, err = io.ReadAll(rc)
	}
	if !errors.Is(err, blob.ErrHashMismatch) {
		t.Fatalf("download from the bad server alone: %v", err)
	}
}

// TestPhotosWalkthrough is the paper's /backups/photos case in
// miniature: 30 photos packed for m/34/0/0, hosted on two servers (the
// second by forwarding, 3.h), the 23rd deleted, the image patched on both
// (4.a–c), the new hash checked, the old version released (4.e).
func TestPhotosWalkthrough(t *testing.T) {
	e := newEnv(t)
	s1 := e.server("price=500", func(c *Config) { c.Forward, c.ForwardLocal = true, true })
	s2 := e.server("price=700")
	mount := e.mountKeys()
	owner := e.owner(mount)
	dir := photos(t, 30, 20_000)
	ref, old := pack(t, dir, image.PackOptions{Keys: &mount})

	// 3.d–g: pay and upload to the first server, with the owner key.
	if _, err := s1.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 30, Body: bytes.NewReader(old), Payer: e.payer, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	// 3.h: pay the second server, and have the first send it the blob.
	q2, err := s2.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size, Days: 30})
	if err != nil {
		t.Fatal(err)
	}
	if q2, err = s2.c.Pay(e.ctx, q2, e.payer); err != nil {
		t.Fatal(err)
	}
	h2, err := s1.c.Forward(e.ctx, ForwardRequest{Hash: ref.Hash, To: s2.c.URL(), Quote: q2, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	if h2.Hash != ref.Hash || h2.Owners != 1 {
		t.Fatalf("forwarded: %+v", h2)
	}

	// The 23rd photo is deleted: its node is m/34/0/0/22.
	im, err := image.OpenReaderAt(e.ctx, bytes.NewReader(old), ref, image.Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	p23, err := im.Stat(e.ctx, "photo-023.jpg")
	if err != nil || p23.Index != 22 {
		t.Fatalf("photo 23: %+v, %v", p23, err)
	}
	n22, _ := image.NodeKeys(e.root, []uint32{34, 0, 0, 22})
	if p23.Addr != n22.Addr {
		t.Fatal("photo 23's record does not name m/34/0/0/22")
	}
	ov, err := image.Overlay(im.Source(), image.Change{Path: "photo-023.jpg", Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	newRef, err := image.Pack(e.ctx, &buf, ov, image.PackOptions{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	d := delta.Diff(old, buf.Bytes())
	t.Logf("image %d bytes; after deleting photo 23 %d bytes; delta %d bytes", len(old), buf.Len(), len(d))

	// 4.a–c on both servers: signed diff, new hash returned and checked.
	for _, s := range []*testServer{s1, s2} {
		h, err := s.c.Patch(e.ctx, PatchRequest{Base: ref.Hash, New: newRef.Hash, Delta: d, Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		if h.Hash != newRef.Hash || h.Size != newRef.Size || h.Parent != ref.Hash {
			t.Fatalf("patched: %+v", h)
		}
	}
	// The patched image is what the client packed, on both servers.
	m := blob.NewMulti(nil, NewStore(s2.c, StoreOptions{}), NewStore(s1.c, StoreOptions{}))
	cache, _ := blob.NewDir(t.TempDir())
	if err := blob.Copy(e.ctx, cache, m, newRef.Hash, newRef.Size); err != nil {
		t.Fatal(err)
	}
	im2, err := image.Open(e.ctx, m, newRef, image.Options{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im2.Stat(e.ctx, "photo-023.jpg"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("photo 23 after re-imaging: %v", err)
	}
	list, _ := im2.ReadDir(e.ctx, "")
	if len(list) != 29 {
		t.Fatalf("%d photos after re-imaging", len(list))
	}
	// 4.e: release the old version on both.
	for _, s := range []*testServer{s1, s2} {
		r, err := s.c.Release(e.ctx, ref.Hash, owner)
		if err != nil || !r.Deleted {
			t.Fatalf("release: %+v, %v", r, err)
		}
		if ok, _ := s.c.Has(e.ctx, ref.Hash); ok {
			t.Fatal("released version still hosted")
		}
		if _, err := s.c.Stat(e.ctx, ref.Hash); !errors.Is(err, ErrNotFound) || !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat of the released version: %v", err)
		}
		if ok, _ := s.c.Has(e.ctx, newRef.Hash); !ok {
			t.Fatal("new version gone")
		}
	}
}

func TestPublicImagePaidDownloads(t *testing.T) {
	e := newEnv(t)
	// Public images hosted for free; downloads paid (paper: "host public
	// mountable images for free but requiring payment to download them").
	s := e.server("price=1000,public-price=0,download-price=600")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<h1>hello world</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref, data := pack(t, dir, image.PackOptions{Public: true})
	// Free to host: no payer needed.
	h, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Public: true, Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Public || h.DownloadPrice != 600 {
		t.Fatalf("hosted: %+v", h)
	}
	// Another user, with none of the publisher's keys and a wallet of
	// their own.
	w2 := newWallet(t, e.chain)
	if _, err := e.wallet.Send(e.ctx, w2.Address(), 1_000_000); err != nil {
		t.Fatal(err)
	}
	unpaid := NewStore(s.c, StoreOptions{})
	if _, err := image.Open(e.ctx, unpaid, ref, image.Options{}); !errors.Is(err, ErrUnpaid) {
		t.Fatalf("unpaid download: %v", err)
	}
	store := NewStore(s.c, StoreOptions{Payer: WalletPayer(w2, e.chain.Params())})
	im, err := image.Open(e.ctx, store, ref, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := im.ReadFile(e.ctx, "index.html", 1000)
	if err != nil || string(b) != "<h1>hello world</h1>" {
		t.Fatalf("%q, %v", b, err)
	}
	bal, _ := w2.Balance(e.ctx)
	if bal.Total() > 1_000_000-600 {
		t.Fatalf("the reader paid nothing (balance %d)", bal.Total())
	}
	// A private upload to a server that refuses them.
	s2 := e.server("private=no")
	if _, err := s2.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size}); !errors.Is(err, ErrRefused) {
		t.Fatalf("private quote: %v", err)
	}
}

func TestNestedImageOnServers(t *testing.T) {
	e := newEnv(t)
	s := e.server("")
	// A public "song" image, nested in a private "movie" image.
	songDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(songDir, "song.ogg"), []byte("la la la"), 0o644); err != nil {
		t.Fatal(err)
	}
	songRef, songData := pack(t, songDir, image.PackOptions{Public: true})
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: songRef.Hash, Size: songRef.Size, Public: true, Body: bytes.NewReader(songData)}); err != nil {
		t.Fatal(err)
	}
	mount := e.mountKeys()
	movieDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(movieDir, "movie.mkv"), []byte("frames"), 0o644); err != nil {
		t.Fatal(err)
	}
	local, _ := image.LocalDir(movieDir)
	defer local.Close()
	src := nestedSource{Source: local, entry: image.Entry{Name: "soundtrack", Kind: image.KindImage,
		Nested: &image.Nested{Ref: songRef, Servers: []string{s.c.URL()}}}}
	var buf bytes.Buffer
	movieRef, err := image.Pack(e.ctx, &buf, src, image.PackOptions{Keys: &mount})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: movieRef.Hash, Size: movieRef.Size, Body: bytes.NewReader(buf.Bytes())}); err != nil {
		t.Fatal(err)
	}
	// The resolver turns a nested reference's servers into stores.
	resolver := image.ResolverFunc(func(ctx context.Context, n image.Nested) (blob.Store, error) {
		var stores []blob.Store
		for _, u := range n.Servers {
			c, err := NewClient(u, nil)
			if err != nil {
				return nil, err
			}
			stores = append(stores, NewStore(c, StoreOptions{}))
		}
		return blob.NewMulti(nil, stores...), nil
	})
	im, err := image.Open(e.ctx, NewStore(s.c, StoreOptions{}), movieRef, image.Options{Keys: &mount, Resolver: resolver})
	if err != nil {
		t.Fatal(err)
	}
	b, err := im.ReadFile(e.ctx, "soundtrack/song.ogg", 100)
	if err != nil || string(b) != "la la la" {
		t.Fatalf("nested read: %q, %v", b, err)
	}
}

// nestedSource adds one nested image entry to a source's root.
type nestedSource struct {
	image.Source
	entry image.Entry
}

func (n nestedSource) ReadDir(ctx context.Context, p string) ([]image.Entry, error) {
	l, err := n.Source.ReadDir(ctx, p)
	if p == "" && err == nil {
		l = append(l, n.entry)
	}
	return l, err
}

// TestLargeContentBlobs: chainfs's encrypted large-content blobs live on
// image servers through the Store (issue 7 item 6).
func TestLargeContentBlobs(t *testing.T) {
	e := newEnv(t)
	s1, s2 := e.server("price=100"), e.server("price=100")
	local, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	content := randBytes(3<<20, 5)
	ref, err := local.PutEncrypted(e.ctx, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	owner := otherSigner(t)
	st1 := NewStore(s1.c, StoreOptions{Payer: e.payer, Owner: owner, Days: 2})
	st2 := NewStore(s2.c, StoreOptions{Payer: e.payer, Owner: owner, Days: 2})
	m := blob.NewMulti(nil, st1, st2)
	if err := blob.Copy(e.ctx, m, local, ref.Hash, ref.Size); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{st1, st2} {
		h, err := s.Client().Stat(e.ctx, ref.Hash)
		if err != nil || h.Content != ContentBlob || h.Public {
			t.Fatalf("stat: %+v, %v", h, err)
		}
	}
	got, err := blob.DecryptRange(e.ctx, m, ref, 1<<20, 100)
	if err != nil || !bytes.Equal(got, content[1<<20:1<<20+100]) {
		t.Fatalf("ranged blob read: %v", err)
	}
	all, err := blob.Load(e.ctx, m, ref)
	if err != nil || !bytes.Equal(all, content) {
		t.Fatalf("whole blob read: %v", err)
	}
	if err := m.Delete(e.ctx, ref.Hash); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Has(e.ctx, ref.Hash); ok {
		t.Fatal("deleted blob still hosted")
	}
}

func TestHostingExpires(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := e.server("price=100,min-days=1,max-days=10", func(c *Config) { c.Clock = clock })
	ref, data := pack(t, photos(t, 2, 1000), image.PackOptions{Public: true})
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Public: true, Days: 2, Body: bytes.NewReader(data), Payer: e.payer}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size, Public: true, Days: 11}); !errors.Is(err, ErrRefused) {
		t.Fatalf("11 days: %v", err)
	}
	mu.Lock()
	now = now.Add(49 * time.Hour)
	mu.Unlock()
	if ok, _ := s.c.Has(e.ctx, ref.Hash); ok {
		t.Fatal("expired image still served")
	}
	n, err := s.srv.Sweep(e.ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "blobs", hex.EncodeToString(ref.Hash[:1]), hex.EncodeToString(ref.Hash[:]))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("swept content still on disk: %v", err)
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("max-size=2GiB,price=10,public-price=0,download-price=1,min-days=2,max-days=30,public=yes,private=no")
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{MaxSize: 2 << 30, PricePerMBDay: 10, DownloadPricePerMB: 1, MinDays: 2, MaxDays: 30, RefusePrivate: true}
	if p != want {
		t.Fatalf("%+v", p)
	}
	for _, bad := range []string{"price=-1", "max-size=0", "nope=1", "public=maybe", "min-days=5,max-days=2", "public=no,private=no", "price"} {
		if _, err := ParsePolicy(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if amount(1, 1, 1) != DustLimit || amount(3*MiB+1, 2, 100) != 800 || amount(1<<40, 3650, 1<<40) != 21_000_000*100_000_000 {
		t.Fatal("amount")
	}
}

func TestOneQuoteOneUploadAndRestart(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir = dir }
	s := e.server("price=1000", cfg)
	ref, data := pack(t, photos(t, 3, 5000), image.PackOptions{Public: true})
	q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size, Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil {
		t.Fatal(err)
	}
	// The server restarts between payment and upload: the paid quote
	// survives (and so does the payment key: same address).
	s.hs.Close()
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	s = e.server("price=1000", cfg)
	got, err := s.c.QuoteStatus(e.ctx, q.ID)
	if err != nil || !got.Paid || got.Address != q.Address {
		t.Fatalf("quote after restart: %+v, %v", got, err)
	}
	// Two uploads race on the one quote: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data)})
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("two uploads on one quote: %v / %v", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrPaymentUsed) {
			t.Fatalf("loser: %v", err)
		}
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	s := e.server("", func(c *Config) { c.IPRate = RateLimit{PerSecond: 0.001, Burst: 3} })
	var err error
	for range 4 {
		if _, err = s.c.Info(e.ctx); err != nil {
			break
		}
	}
	var ie *Error
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &ie) || ie.RetryAfter <= 0 {
		t.Fatalf("fourth request: %v", err)
	}
}

func TestForwardRefusesLocalTargets(t *testing.T) {
	e := newEnv(t)
	s1 := e.server("", func(c *Config) { c.Forward = true })
	s2 := e.server("")
	ref, data := pack(t, photos(t, 2, 1000), image.PackOptions{Public: true})
	owner := otherSigner(t)
	if _, err := s1.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Public: true, Body: bytes.NewReader(data), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	q, err := s2.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size, Public: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s1.c.Forward(e.ctx, ForwardRequest{Hash: ref.Hash, To: s2.c.URL(), Quote: q, Owner: owner})
	if !errors.Is(err, ErrForwardFailed) || !strings.Contains(err.Error(), "non-public address") {
		t.Fatalf("forward to loopback: %v", err)
	}
	// And a stranger cannot ask for a forward at all.
	if _, err := s1.c.Forward(e.ctx, ForwardRequest{Hash: ref.Hash, To: s2.c.URL(), Quote: q, Owner: otherSigner(t)}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("forward by a stranger: %v", err)
	}
}
