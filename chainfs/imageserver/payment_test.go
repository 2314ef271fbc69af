package imageserver

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"

	"github.com/integrity-sys/integrity/internal/addrsafe"
)

// rawChild is child i's address with no filtering.
func rawChild(t *testing.T, k *hdkeychain.ExtendedKey, i uint32, params *chaincfg.Params) *address.AddressPubKeyHash {
	t.Helper()
	c, err := k.Derive(i)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Address(params)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPayeeSkipsUnqueryable derives children of a random key until one
// has an address btcd cannot look up (on simnet: "Sb1…" with no other
// '1', about 1 in 2,400) and checks that it is never issued: the index
// is skipped, the next usable one is used.
func TestPayeeSkipsUnqueryable(t *testing.T) {
	params := &chaincfg.SimNetParams
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	master, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := master.Neuter()
	p := &payee{pub: pub, params: params}
	bad := uint32(0)
	for ; ; bad++ {
		if bad == 100_000 {
			t.Fatal("no unqueryable child in 100,000")
		}
		if !addrsafe.Queryable(rawChild(t, pub, bad, params).Hash160()[:]) {
			break
		}
	}
	badAddr := rawChild(t, pub, bad, params).EncodeAddress()
	if _, ok := p.address(bad); ok {
		t.Fatalf("child %d (%s) is unqueryable but offered", bad, badAddr)
	}
	if _, err := address.DecodeAddress(badAddr, params); err == nil {
		t.Fatalf("%s decodes: not the btcd misreading this test looks for", badAddr)
	}
	// The counter stands at the bad index: next skips it.
	n := uint64(bad)
	take := func() (uint64, error) { i := n; n++; return i, nil }
	idx, a, err := p.next(take)
	if err != nil {
		t.Fatal(err)
	}
	if idx == bad || a == badAddr || uint64(idx) != n-1 || idx <= bad {
		t.Fatalf("issued index %d (%s); the unqueryable one is %d (%s)", idx, a, bad, badAddr)
	}
	if _, err := address.DecodeAddress(a, params); err != nil {
		t.Fatalf("issued %s, which btcd cannot decode: %v", a, err)
	}
	if want := rawChild(t, pub, idx, params).EncodeAddress(); a != want {
		t.Fatalf("index %d gave %s, want %s", idx, a, want)
	}
	// Indexes run out at the hardened range.
	n = hdkeychain.HardenedKeyStart
	if _, _, err := p.next(take); err == nil {
		t.Fatal("a hardened index was used")
	}
}

// unqueryableSeed makes a payment key whose child 4 has an address btcd
// cannot look up on simnet (found by search; the test checks it). The
// server skips such a child on every network (addrsafe.Queryable), so
// its addresses are the same whatever network the key is used on.
const (
	unqueryableSeed  = "imageserver unqueryable 579"
	unqueryableIndex = 4
)

// TestQuoteAddressesSkipUnqueryable runs a paid server on a key whose
// fifth child is unqueryable: quotes never name it, and the info
// endpoint's counter covers every index taken.
func TestQuoteAddressesSkipUnqueryable(t *testing.T) {
	e := newEnv(t)
	params := e.chain.Params()
	seed := sha256.Sum256([]byte(unqueryableSeed))
	master, err := hdkeychain.NewMaster(seed[:], params)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := master.Neuter()
	bad := rawChild(t, pub, unqueryableIndex, params)
	if addrsafe.Queryable(bad.Hash160()[:]) {
		t.Fatalf("premise: child %d of the test key is queryable", unqueryableIndex)
	}
	dir := t.TempDir()
	key := func(c *Config) { c.DataDir, c.PaymentKey = dir, pub.String() }
	s := e.server("price=1000", key)
	info, err := s.c.Info(e.ctx)
	if err != nil || !info.Payments || info.NextPaymentIndex != 0 {
		t.Fatalf("info: %+v, %v", info, err)
	}
	var want []string
	for i := uint32(0); len(want) < 6; i++ {
		if i != unqueryableIndex {
			want = append(want, rawChild(t, pub, i, params).EncodeAddress())
		}
	}
	for i, w := range want {
		hash := sha256.Sum256([]byte{byte(i)})
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: hash, Size: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if q.Address == bad.EncodeAddress() {
			t.Fatalf("quote %d names unqueryable child %d, %s", i, unqueryableIndex, q.Address)
		}
		if q.Address != w {
			t.Fatalf("quote %d pays %s, want %s", i, q.Address, w)
		}
	}
	// Seven indexes taken (one skipped), and the count survives a restart.
	for range 2 {
		if info, err = s.c.Info(e.ctx); err != nil || info.NextPaymentIndex != 7 {
			t.Fatalf("info: %+v, %v; want next_payment_index 7", info, err)
		}
		s.hs.Close()
		if err := s.srv.Close(); err != nil {
			t.Fatal(err)
		}
		s = e.server("price=1000", key)
	}
	// A quote paid to the next address is confirmed as ever.
	hash := sha256.Sum256([]byte("paid"))
	q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: hash, Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil || !q.Paid {
		t.Fatalf("pay: %+v, %v", q, err)
	}
}

// TestPaymentKeyFile: the generated key is created once, 0600, durably
// and only by the server holding the data directory.
func TestPaymentKeyFile(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	inDir := func(c *Config) { c.DataDir = dir }
	s := e.server("price=1000", inDir)
	path := filepath.Join(dir, paymentKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b1, _ := os.ReadFile(path)
	if tmp, _ := filepath.Glob(filepath.Join(dir, keyTempPrefix+"*")); len(tmp) != 0 {
		t.Fatalf("temporary key files left: %v", tmp)
	}
	k, err := hdkeychain.NewKeyFromString(string(bytes.TrimSpace(b1)))
	if err != nil || !k.IsPrivate() {
		t.Fatalf("key file: %v", err)
	}
	q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: sha256.Sum256(nil), Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	if want := rawChild(t, k, 0, e.chain.Params()).EncodeAddress(); q.Address != want {
		t.Fatalf("first quote pays %s, want child 0 of the key, %s", q.Address, want)
	}

	// A second server on the directory is refused before it touches the
	// key; it must not write one either (dir2 has a server with a
	// configured key, so no key file).
	if _, err := New(Config{DataDir: dir, Chain: e.chain, Policy: s.srv.cfg.Policy, Logger: quietLogger()}); err == nil {
		t.Fatal("a second server opened the same data directory")
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, b1) {
		t.Fatal("the payment key changed")
	}
	dir2 := t.TempDir()
	xpub, _ := k.Neuter()
	e.server("price=1000", func(c *Config) { c.DataDir, c.PaymentKey = dir2, xpub.String() })
	if _, err := New(Config{DataDir: dir2, Chain: e.chain, Policy: s.srv.cfg.Policy, Logger: quietLogger()}); err == nil {
		t.Fatal("a second server opened the same data directory")
	}
	if _, err := os.Stat(filepath.Join(dir2, paymentKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a server that could not lock the data directory wrote a payment key: %v", err)
	}

	// An existing file is never replaced.
	if err := createFileOnce(path, []byte("other\n"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("createFileOnce over an existing file: %v", err)
	}
	if got, err := loadOrCreateKey(path, e.chain.Params(), quietLogger()); err != nil || got+"\n" != string(b1) {
		t.Fatalf("loadOrCreateKey with a key present: %q, %v", got, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, b1) {
		t.Fatal("the payment key changed")
	}
	// An empty key file (a lost key) stops the server; it is not replaced.
	empty := filepath.Join(t.TempDir(), paymentKeyFile)
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKey(empty, e.chain.Params(), quietLogger()); err == nil {
		t.Fatal("an empty key file was accepted")
	}
}

// TestFreePolicyNoPaymentKey: a free server has no payment key, even
// with a chain configured.
func TestFreePolicyNoPaymentKey(t *testing.T) {
	for _, c := range []struct {
		policy string
		paid   bool
	}{{"", false}, {"max-size=1MiB,public=no", false}, {"price=1", true}, {"public-price=1", true}, {"download-price=1", true}} {
		p, err := ParsePolicy(c.policy)
		if err != nil {
			t.Fatal(err)
		}
		if p.Paid() != c.paid {
			t.Errorf("ParsePolicy(%q).Paid() = %v", c.policy, p.Paid())
		}
	}
	e := newEnv(t)
	s := e.server("max-size=1MiB")
	if _, err := os.Stat(filepath.Join(s.dir, paymentKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a free server generated a payment key: %v", err)
	}
	info, err := s.c.Info(e.ctx)
	if err != nil || info.Payments || info.NextPaymentIndex != 0 {
		t.Fatalf("info: %+v, %v", info, err)
	}
	// A configured key is not even parsed.
	e.server("", func(c *Config) { c.PaymentKey = "not a key" })
}

// TestCloseRefusesNewRequests: while Close waits for a request in
// progress, new requests get 503 unavailable at once.
func TestCloseRefusesNewRequests(t *testing.T) {
	srv, err := New(Config{DataDir: t.TempDir(), Logger: quietLogger(), SweepInterval: -1, IPRate: RateLimit{PerSecond: 1e6, Burst: 1e6}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c, err := NewClient(hs.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 1<<20)
	hash := sha256.Sum256(body)
	q, err := c.Quote(t.Context(), QuoteRequest{Kind: KindUpload, Hash: hash, Size: int64(len(body))})
	if err != nil || !q.Paid {
		t.Fatalf("free quote: %+v, %v", q, err)
	}
	// An upload whose body arrives only when the test says.
	pr, pw := io.Pipe()
	defer pw.CloseWithError(errors.New("test ended")) // before hs.Close
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/v1/images/"+fmt.Sprintf("%x", hash), pr)
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(HeaderQuote, q.ID)
	upload := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			upload <- -1
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		upload <- resp.StatusCode
	}()
	if _, err := pw.Write(body[:1000]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upload to take its slot", func() bool { return len(srv.uploads) == 1 })

	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	waitFor(t, "Close to begin", srv.closing.Load)

	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(hs.URL + "/v1/info")
	if err != nil {
		t.Fatalf("a request during shutdown: %v (it should get 503 at once)", err)
	}
	var eb errorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || eb.Error.Code != codeUnavailable {
		t.Fatalf("during shutdown: %d %+v, want 503 %s", resp.StatusCode, eb.Error, codeUnavailable)
	}
	if _, err := c.Info(t.Context()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("client during shutdown: %v", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with an upload in progress", err)
	default:
	}
	// The request in progress finishes normally, then Close returns.
	if _, err := pw.Write(body[1000:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if status := <-upload; status == http.StatusServiceUnavailable || status < 0 {
		t.Fatalf("the upload in progress got %d", status)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the last request")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
