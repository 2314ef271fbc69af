package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
	"github.com/integrity-sys/integrity/internal/e2e"
)

// imageServerPolicy: 1,000 sat per MiB-day, uploads up to 1 MiB.
const imageServerPolicy = "price=1000,max-size=1MiB"

// TestImageServerEndToEnd drives `integrity image-server` on a btcd node
// with real payments from a wallet: quote, refusal of an unpaid upload,
// payment, upload, download, the size limit, and a restart on the same
// data directory that keeps the content, the payment key and paid quotes.
func TestImageServerEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := e2e.StartBtcd(t)
	srv := e2e.StartImageServer(t, node.URL, "--policy", imageServerPolicy)
	keyPath := filepath.Join(srv.DataDir, "payment.key")
	key := readPaymentKey(t, keyPath)

	seed := make([]byte, 32)
	seed[0] = 0x1a
	be, w := strangerWallet(t, node.URL, seed)
	payer := imageserver.WalletPayer(w, be.Params())
	c := imageClient(t, srv.URL)

	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Payments || info.Network != be.Params().Name || info.Policy.MaxSize != 1<<20 || info.Policy.PricePerMBDay != 1000 {
		t.Fatalf("info does not reflect --policy and --chain: %+v", info)
	}

	data, ref := encryptedBlob(t, 100_000)
	q, err := c.Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref.Hash, Size: ref.Size, Days: 2})
	if err != nil {
		t.Fatal(err)
	}
	if q.Amount != 2000 || q.Address == "" || q.Paid {
		t.Fatalf("quote for 1 started MiB over 2 days at 1000 sat: %+v", q)
	}
	// Not paid: refused before the body is taken, nothing stored.
	if _, err := c.Upload(ctx, imageserver.UploadRequest{Quote: q, Body: bytes.NewReader(data)}); !errors.Is(err, imageserver.ErrUnpaid) {
		t.Fatalf("unpaid upload: %v, want ErrUnpaid", err)
	}
	var ie *imageserver.Error
	if _, err := c.ConfirmPayment(ctx, q.ID, ""); !errors.As(err, &ie) || !errors.Is(err, imageserver.ErrUnpaid) || ie.Amount != 2000 || ie.Received != 0 {
		t.Fatalf("payment check before paying: %v", err)
	}
	if ok, err := c.Has(ctx, ref.Hash); err != nil || ok {
		t.Fatalf("content hosted before an upload was accepted: %v, %v", ok, err)
	}

	q, err = c.Pay(ctx, q, payer)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Paid || q.Received < q.Amount || len(q.TxIDs) != 1 {
		t.Fatalf("paid quote: %+v", q)
	}
	h, err := c.Upload(ctx, imageserver.UploadRequest{Quote: q, Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	if h.Hash != ref.Hash || h.Size != ref.Size || h.Content != imageserver.ContentBlob || h.Public {
		t.Fatalf("hosted: %+v", h)
	}
	mustDownload(ctx, t, c, ref.Hash, data)
	// One payment, one upload.
	if _, err := c.Upload(ctx, imageserver.UploadRequest{Quote: q, Body: bytes.NewReader(data)}); !errors.Is(err, imageserver.ErrPaymentUsed) {
		t.Fatalf("second upload on one payment: %v, want ErrPaymentUsed", err)
	}

	// Over --policy max-size: no quote, so no upload.
	if _, err := c.Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref.Hash, Size: 1<<20 + 1}); !errors.Is(err, imageserver.ErrTooLarge) {
		t.Fatalf("quote over max-size: %v, want ErrTooLarge", err)
	}
	// An upload over max-size is refused from its headers, before the
	// body is sent (whatever quote it names).
	over := q
	over.Size = 2 << 20
	if _, err := c.Upload(ctx, imageserver.UploadRequest{Quote: over, Body: bytes.NewReader(make([]byte, over.Size))}); !errors.Is(err, imageserver.ErrTooLarge) {
		t.Fatalf("upload over max-size: %v, want ErrTooLarge", err)
	}

	// Before the restart: one quote paid (used after), one only quoted
	// (paid after).
	data2, ref2 := encryptedBlob(t, 50_000)
	q2, err := c.Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref2.Hash, Size: ref2.Size})
	if err != nil {
		t.Fatal(err)
	}
	if q2, err = c.Pay(ctx, q2, payer); err != nil {
		t.Fatal(err)
	}
	data3, ref3 := encryptedBlob(t, 60_000)
	q3, err := c.Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref3.Hash, Size: ref3.Size})
	if err != nil {
		t.Fatal(err)
	}
	// Confirm the payments made so far: the restarted server must count
	// confirmed payments as well as mempool ones.
	if _, err := be.Mine(ctx, 1, w.Address()); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	srv = e2e.StartImageServerIn(t, node.URL, srv.DataDir, "--policy", imageServerPolicy)
	c = imageClient(t, srv.URL)
	if got := readPaymentKey(t, keyPath); got != key {
		t.Fatal("the payment key changed across a restart")
	}
	mustDownload(ctx, t, c, ref.Hash, data)
	if st, err := c.QuoteStatus(ctx, q2.ID); err != nil || !st.Paid || st.Used {
		t.Fatalf("quote paid before the restart: %+v, %v", st, err)
	}
	if _, err := c.Upload(ctx, imageserver.UploadRequest{Quote: q2, Body: bytes.NewReader(data2)}); err != nil {
		t.Fatalf("upload on a quote paid before the restart: %v", err)
	}
	mustDownload(ctx, t, c, ref2.Hash, data2)
	// Its address came from the persisted key: the payment is found now.
	if q3, err = c.Pay(ctx, q3, payer); err != nil {
		t.Fatalf("paying a quote made before the restart: %v", err)
	}
	if _, err := c.Upload(ctx, imageserver.UploadRequest{Quote: q3, Body: bytes.NewReader(data3)}); err != nil {
		t.Fatalf("upload on a quote made before the restart: %v", err)
	}
	mustDownload(ctx, t, c, ref3.Hash, data3)

	// One server per data directory.
	e2e.NewDevice(t, node.URL).Fail("another image server is using", "image-server",
		"--listen", "127.0.0.1:"+strconv.Itoa(e2e.FreePort(t)), "--data", srv.DataDir, "--policy", imageServerPolicy)

	// --payment-key: quotes pay children of the operator's own key (an
	// xpub: the server needs no private key), and none is generated.
	xpub, addrs := operatorKey(t, be.Params(), 8)
	keyFile := e2e.WriteFile(t, "operator.xpub", xpub+"\n")
	op := e2e.StartImageServer(t, node.URL, "--policy", imageServerPolicy, "--payment-key", keyFile)
	oq, err := imageClient(t, op.URL).Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref.Hash, Size: ref.Size})
	if err != nil {
		t.Fatal(err)
	}
	if !addrs[oq.Address] {
		t.Fatalf("quote address %s is not one of the first children of --payment-key", oq.Address)
	}
	if _, err := os.Stat(filepath.Join(op.DataDir, "payment.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a payment key was generated although --payment-key was given: %v", err)
	}
}

// TestImageServerStartErrors: configurations that cannot work fail at
// start with one clear line, before serving anything.
func TestImageServerStartErrors(t *testing.T) {
	listen := func() string { return "127.0.0.1:" + strconv.Itoa(e2e.FreePort(t)) }
	data := func() string { return filepath.Join(t.TempDir(), "data") }
	down := "btcd://u:p@127.0.0.1:" + strconv.Itoa(e2e.FreePort(t)) + "?net=simnet"
	e2e.NewDevice(t, down).Fail("cannot reach the chain at btcd://u:xxxxx@", "image-server", "--listen", listen(), "--data", data(), "--policy", "price=10")
	// Without --chain, a priced server uses the chain the --data-dir
	// System is bound to.
	sys := e2e.NewDevice(t, "")
	if err := (config.Dir{Path: sys.DataDir}).Save(config.Settings{Chain: down}); err != nil {
		t.Fatal(err)
	}
	sys.Fail("cannot reach the chain at btcd://u:xxxxx@", "image-server", "--listen", listen(), "--data", data(), "--policy", "price=10")
	e2e.NewDevice(t, "").Fail("give --chain btcd://", "image-server", "--listen", listen(), "--data", data(), "--policy", "download-price=5")
	e2e.NewDevice(t, "ftp://x").Fail("unknown chain", "image-server", "--listen", listen(), "--data", data())
	e2e.NewDevice(t, "embedded").Fail("embedded chain is private", "image-server", "--listen", listen(), "--data", data(), "--policy", "price=10")
	for policy, want := range map[string]string{
		"bogus":                  `"bogus" is not key=value`,
		"price=-1":               "price=-1: want a non-negative integer",
		"price=10,colour=red":    `unknown key "colour"`,
		"max-size=3TiB":          "at most 2 TiB",
		"max-size=":              "is not key=value",
		"min-days=10,max-days=5": "min-days 10 exceeds max-days 5",
		"public=no,private=no":   "refuses both public and private",
		"public=maybe":           "want yes or no",
	} {
		line := e2e.NewDevice(t, "").Fail(want, "image-server", "--listen", listen(), "--data", data(), "--policy", policy)
		if !strings.Contains(line, "--policy") {
			t.Errorf("policy %q: error does not name --policy: %s", policy, line)
		}
	}
	e2e.NewDevice(t, "").Fail("needs --listen and --data", "image-server", "--listen", listen())
	e2e.NewDevice(t, "").Fail("--min-conf", "image-server", "--listen", listen(), "--data", data(), "--min-conf", "-1")
}

func imageClient(t *testing.T, url string) *imageserver.Client {
	t.Helper()
	c, err := imageserver.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readPaymentKey(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("payment key not persisted in the data directory: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("payment key %s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// encryptedBlob is a chainfs blob of n random plaintext bytes: content an
// image server accepts.
func encryptedBlob(t *testing.T, n int) ([]byte, blob.Ref) {
	t.Helper()
	plain := make([]byte, n)
	if _, err := rand.Read(plain); err != nil {
		t.Fatal(err)
	}
	data, ref, err := blob.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	return data, ref
}

func mustDownload(ctx context.Context, t *testing.T, c *imageserver.Client, h [32]byte, want []byte) {
	t.Helper()
	rc, n, err := c.Download(ctx, h, imageserver.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("downloaded %d bytes (announced %d), not the %d uploaded", len(got), n, len(want))
	}
}

// operatorKey is an operator's BIP32 key: its xpub and the addresses of
// its first n children.
func operatorKey(t *testing.T, params *chaincfg.Params, n uint32) (string, map[string]bool) {
	t.Helper()
	seed := make([]byte, hdkeychain.RecommendedSeedLen)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	master, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := master.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]bool{}
	for i := range n {
		c, err := pub.Derive(i)
		if err != nil {
			continue
		}
		a, err := c.Address(params)
		if err != nil {
			t.Fatal(err)
		}
		addrs[a.EncodeAddress()] = true
	}
	return pub.String(), addrs
}
