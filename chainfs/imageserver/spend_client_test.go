package imageserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/wallet"
)

// Attacks on the reader's wallet by the servers an image names: a huge
// download price, refusing paid tickets, many reads refused at once.

// countingPayer counts payments that reach the wallet.
type countingPayer struct {
	p Payer
	n atomic.Int64
}

func (c *countingPayer) Pay(ctx context.Context, addr string, amount int64) (string, error) {
	c.n.Add(1)
	return c.p.Pay(ctx, addr, amount)
}

// publicImage hosts a small public image on s for free.
func publicImage(t *testing.T, e *env, s *testServer) image.Ref {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "readme.txt"), []byte("free for all"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref, data := pack(t, dir, image.PackOptions{Public: true})
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Public: true, Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	return ref
}

// reader is another user: a funded wallet of their own.
func (e *env) reader(t *testing.T, sat int64) *wallet.Wallet {
	t.Helper()
	w := newWallet(t, e.chain)
	if _, err := e.wallet.Send(e.ctx, w.Address(), sat); err != nil {
		t.Fatal(err)
	}
	return w
}

func balance(t *testing.T, w *wallet.Wallet) int64 {
	t.Helper()
	b, err := w.Balance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b.Total()
}

// TestDownloadPriceOverCap: a server asking 200,000 sat per download is
// refused by the default cap — the image does not open and the reader's
// wallet is untouched — and paid once the reader allows that much.
func TestDownloadPriceOverCap(t *testing.T) {
	e := newEnv(t)
	s := e.server("download-price=200000")
	ref := publicImage(t, e, s)
	w := e.reader(t, 1_000_000)
	before := balance(t, w)

	store := NewStore(s.c, StoreOptions{Payer: WalletPayer(w, e.chain.Params())})
	_, err := image.Open(e.ctx, store, ref, image.Options{})
	if !errors.Is(err, ErrOverLimit) || !strings.Contains(err.Error(), "200000 sat") || !strings.Contains(err.Error(), "limit of 100000 sat") {
		t.Fatalf("opening an image priced over the cap: %v", err)
	}
	if got := balance(t, w); got != before {
		t.Fatalf("the refused download cost %d sat", before-got)
	}
	// The payer itself refuses a payment over its limit, whoever asks.
	if _, err := WalletPayer(w, e.chain.Params()).Pay(e.ctx, w.Address().String(), DefaultMaxPrice+1); !errors.Is(err, ErrOverLimit) {
		t.Fatalf("direct payment over the cap: %v", err)
	}

	// With consent to pay up to 300,000 sat, the download is bought.
	allow := LimitPayer(WalletPayer(w, e.chain.Params()), func(context.Context) int64 { return 300_000 })
	im, err := image.Open(e.ctx, NewStore(s.c, StoreOptions{Payer: allow}), ref, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := im.ReadFile(e.ctx, "readme.txt", 100); err != nil || string(b) != "free for all" {
		t.Fatalf("%q, %v", b, err)
	}
	if got := balance(t, w); before-got < 200_000 {
		t.Fatalf("paid %d sat, want at least the price", before-got)
	}
}

// TestConcurrentReadsPayOnce: many reads refused together for want of a
// ticket buy one ticket, not one each.
func TestConcurrentReadsPayOnce(t *testing.T) {
	e := newEnv(t)
	s := e.server("download-price=1000")
	ref := publicImage(t, e, s)
	w := e.reader(t, 1_000_000)
	p := &countingPayer{p: WalletPayer(w, e.chain.Params())}
	store := NewStore(s.c, StoreOptions{Payer: p})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := store.GetRange(e.ctx, ref.Hash, 0, 16)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := p.n.Load(); n != 1 {
		t.Fatalf("8 concurrent reads made %d payments", n)
	}
}

// refuseTickets serves a real server but answers every download with
// "payment required", paid ticket or not: a server that takes payments
// and serves nothing.
type refuseTickets struct{ h http.Handler }

func (r refuseTickets) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet || !strings.HasPrefix(req.URL.Path, "/v1/images/") || strings.HasSuffix(req.URL.Path, "/info") {
		r.h.ServeHTTP(w, req)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusPaymentRequired)
	_ = json.NewEncoder(w).Encode(errorBody{Error: errorJSON{Code: codeUnpaid, Message: "pay again", Amount: 1000}})
}

// TestServerRefusingPaidTicketsPaidOnce: a server that refuses the ticket
// it was just paid for is not paid again on the next read.
func TestServerRefusingPaidTicketsPaidOnce(t *testing.T) {
	e := newEnv(t)
	s := e.server("download-price=1000")
	ref := publicImage(t, e, s)
	front := httptest.NewServer(refuseTickets{s.srv})
	t.Cleanup(front.Close)
	c, err := NewClient(front.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := e.reader(t, 1_000_000)
	p := &countingPayer{p: WalletPayer(w, e.chain.Params())}
	store := NewStore(c, StoreOptions{Payer: p})
	for i := range 5 {
		_, err := store.GetRange(e.ctx, ref.Hash, 0, 16)
		if !errors.Is(err, ErrUnpaid) {
			t.Fatalf("read %d from a server refusing tickets: %v", i, err)
		}
		if i > 0 && !strings.Contains(err.Error(), "not paying it again") {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if n := p.n.Load(); n != 1 {
		t.Fatalf("5 refused reads made %d payments", n)
	}
}
