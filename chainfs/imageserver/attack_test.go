package imageserver

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/delta"
)

// Security properties as attacks: each test mounts an attack a security
// review found against a real server (real chain, real payments where
// they matter) and checks that it fails.

// fakeClock is a server clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// encBlob is an encrypted blob of n random plaintext bytes.
func encBlob(t testing.TB, n int, seed uint64) (blob.Ref, []byte) {
	t.Helper()
	var buf bytes.Buffer
	ref, err := blob.EncryptReader(context.Background(), bytes.NewReader(randBytes(n, seed)), &buf)
	if err != nil {
		t.Fatal(err)
	}
	return ref, buf.Bytes()
}

// near reports whether a and b are within a minute of each other.
func near(a, b time.Time) bool { d := a.Sub(b); return d < time.Minute && d > -time.Minute }

func hosted(t *testing.T, s *testServer, h [32]byte) bool {
	t.Helper()
	ok, err := s.c.Has(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestAttackPatchWithWrongQuote: a private blob cannot be grown through a
// patch paid with a quote of the wrong visibility (free public hosting),
// an expired quote, or a quote priced before a price rise.
func TestAttackPatchWithWrongQuote(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir, c.Clock = dir, clk.now }
	s := e.server("price=10,public-price=0", cfg)
	owner := otherSigner(t)
	aRef, a := encBlob(t, 1000, 1)
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: aRef.Hash, Size: aRef.Size, Days: 1, Body: bytes.NewReader(a), Payer: e.payer, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	bRef, b := encBlob(t, 8<<20, 2)
	d := delta.Diff(a, b)
	patch := func(quote string) error {
		_, err := s.c.Patch(e.ctx, PatchRequest{Base: aRef.Hash, New: bRef.Hash, Delta: d, Owner: owner, Quote: quote})
		return err
	}
	quote := func(public bool, days int) Quote {
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: bRef.Hash, Size: bRef.Size, Days: days, Public: public})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}

	// The attack: a free "public" quote pays for ten years of 8 MiB of
	// private content.
	free := quote(true, 3650)
	if free.Amount != 0 || !free.Paid {
		t.Fatalf("premise: public hosting is free here: %+v", free)
	}
	if err := patch(free.ID); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("private blob grown with a free public quote: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}
	if hosted(t, s, bRef.Hash) {
		t.Fatal("the refused patch's result is hosted")
	}
	if got, err := s.c.QuoteStatus(e.ctx, free.ID); err != nil || got.Used {
		t.Fatalf("the refused quote: %+v, %v", got, err)
	}
	// No quote: unpaid.
	if err := patch(""); !errors.Is(err, ErrUnpaid) {
		t.Fatalf("growing by 8 MiB without a quote: %v", err)
	}
	// A private quote left unpaid past its expiry.
	late := quote(false, 1)
	clk.add(time.Hour + time.Minute)
	if err := patch(late.ID); !errors.Is(err, ErrQuoteExpired) {
		t.Fatalf("patch with an expired quote: %v", err)
	}
	// A paid quote not used in time.
	paid := quote(false, 1)
	paid, err := s.c.Pay(e.ctx, paid, e.payer)
	if err != nil {
		t.Fatal(err)
	}
	clk.add(2*time.Hour + time.Minute)
	if err := patch(paid.ID); !errors.Is(err, ErrQuoteExpired) {
		t.Fatalf("patch with a stale paid quote: %v", err)
	}
	// A quote priced before the operator raised the price.
	cheap := quote(false, 1)
	s.hs.Close()
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	s = e.server("price=1000,public-price=0", cfg)
	if err := patch(cheap.ID); !errors.Is(err, ErrUnpaid) {
		t.Fatalf("patch with a quote below the current price: %v", err)
	}
	if hosted(t, s, bRef.Hash) {
		t.Fatal("a refused patch's result is hosted")
	}
	// The right quote: private, the current price, paid, in time.
	good, err := s.c.Pay(e.ctx, quote(false, 2), e.payer)
	if err != nil {
		t.Fatal(err)
	}
	if want := amount(bRef.Size, 2, 1000); good.Amount != want {
		t.Fatalf("quote asks %d, want %d", good.Amount, want)
	}
	if err := patch(good.ID); err != nil {
		t.Fatal(err)
	}
	h, err := s.c.Stat(e.ctx, bRef.Hash)
	if err != nil || !near(h.HostedUntil, clk.now().Add(48*time.Hour)) {
		t.Fatalf("paid patch: %+v, %v", h, err)
	}
}

// TestAttackChainedFreePatches: free patches (within the slack) move the
// owner's hold instead of copying it, so a chain of them keeps one
// version, not one per patch, and cannot grow it past the size paid for
// plus the slack.
func TestAttackChainedFreePatches(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	s := e.server("price=10", func(c *Config) { c.Clock = clk.now })
	owner := otherSigner(t)
	ref, data := encBlob(t, 1000, 10)
	first, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 30, Body: bytes.NewReader(data), Payer: e.payer, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	term := first.HostedUntil
	patch := func(from, to blob.Ref, a, b []byte, quote string) (Hosted, error) {
		return s.c.Patch(e.ctx, PatchRequest{Base: from.Hash, New: to.Hash, Delta: delta.Diff(a, b), Owner: owner, Quote: quote})
	}
	// The attack: every free patch adds a version, each hosted for the
	// whole term.
	refs, datas := []blob.Ref{ref}, [][]byte{data}
	for i := 1; i <= 2; i++ {
		r, b := encBlob(t, 1000+i*400_000, uint64(10+i))
		h, err := patch(refs[i-1], r, datas[i-1], b, "")
		if err != nil {
			t.Fatal(err)
		}
		if !h.HostedUntil.Equal(term) {
			t.Fatalf("version %d hosted until %v, want the moved hold's %v", i, h.HostedUntil, term)
		}
		old, err := s.c.Stat(e.ctx, refs[i-1].Hash)
		if err != nil || !near(old.HostedUntil, clk.now().Add(time.Hour)) {
			t.Fatalf("the patched version %d: %+v, %v; want hosted for the hour of grace", i-1, old, err)
		}
		refs, datas = append(refs, r), append(datas, b)
	}
	clk.add(time.Hour + time.Minute)
	for i, r := range refs {
		if got := hosted(t, s, r.Hash); got != (i == len(refs)-1) {
			t.Fatalf("after the grace, version %d hosted: %v", i, got)
		}
	}
	if n, err := s.srv.Sweep(e.ctx); err != nil || n != 2 {
		t.Fatalf("sweep: %d, %v; want the 2 superseded versions deleted", n, err)
	}
	// Growing step by step past what was paid for (1 KB) plus the slack.
	last, lastData := refs[2], datas[2]
	bigRef, big := encBlob(t, 1_200_000, 20)
	if _, err := patch(last, bigRef, lastData, big, ""); !errors.Is(err, ErrUnpaid) {
		t.Fatalf("free patches grew an image past the size paid for: %v", err)
	}
	// The owner's release ends the grace at once.
	smallRef, small := encBlob(t, 500_000, 21)
	if _, err := patch(last, smallRef, lastData, small, ""); err != nil {
		t.Fatal(err)
	}
	if r, err := s.c.Release(e.ctx, last.Hash, owner); err != nil || !r.Deleted {
		t.Fatalf("release of the patched version: %+v, %v", r, err)
	}
	// A paid patch keeps both versions.
	q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: bigRef.Hash, Size: bigRef.Size, Days: 2})
	if err != nil {
		t.Fatal(err)
	}
	if q, err = s.c.Pay(e.ctx, q, e.payer); err != nil {
		t.Fatal(err)
	}
	h, err := patch(smallRef, bigRef, small, big, q.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !near(h.HostedUntil, clk.now().Add(48*time.Hour)) {
		t.Fatalf("paid version hosted until %v, want the quote's 2 days", h.HostedUntil)
	}
	clk.add(2 * time.Hour)
	if got, err := s.c.Stat(e.ctx, smallRef.Hash); err != nil || !got.HostedUntil.Equal(term) {
		t.Fatalf("the base of a paid patch: %+v, %v; want it kept until %v", got, err, term)
	}
}

// TestAttackHoldTakeover: holds bought on content already hosted cannot
// push out its owner, however many there are.
func TestAttackHoldTakeover(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	// A free server: each hold costs the attacker nothing.
	s := e.server("", func(c *Config) { c.Clock = clk.now })
	owner := otherSigner(t)
	ref, data := encBlob(t, 5000, 30)
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 30, Body: bytes.NewReader(data), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	// The attack: "uploads" of the hosted hash (the bytes are never
	// needed: the server has them) under keys of the attacker's.
	zeros := make([]byte, ref.Size)
	host := func(o Signer, days int) (Hosted, error) {
		return s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: days, Body: bytes.NewReader(zeros), Owner: o})
	}
	for i := 1; i <= maxHolds; i++ {
		_, err := host(otherSigner(t), 1)
		if i < maxHolds {
			if err != nil {
				t.Fatalf("hold %d: %v", i+1, err)
			}
			continue
		}
		var ie *Error
		if !errors.Is(err, ErrTooManyHolders) || !errors.As(err, &ie) || ie.Status != http.StatusConflict || ie.Code != "too_many_holders" {
			t.Fatalf("hold %d, one past the limit: %v", i+1, err)
		}
		t.Logf("refused: %v", err)
	}
	h, err := s.c.Stat(e.ctx, ref.Hash)
	if err != nil || h.Owners != maxHolds {
		t.Fatalf("stat: %+v, %v", h, err)
	}
	// Anonymous holds are one holder: a first one is refused too.
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Body: bytes.NewReader(zeros)}); !errors.Is(err, ErrTooManyHolders) {
		t.Fatalf("anonymous hold past the limit: %v", err)
	}
	// The owner still owns it, and extends its own hold rather than
	// adding one.
	if h, err = host(owner, 60); err != nil || h.Owners != maxHolds || !near(h.HostedUntil, clk.now().Add(60*24*time.Hour)) {
		t.Fatalf("the owner's second hold: %+v, %v", h, err)
	}
	// Ended holds make room.
	clk.add(25 * time.Hour)
	if h, err = host(otherSigner(t), 1); err != nil || h.Owners != 2 {
		t.Fatalf("a new holder once the others ended: %+v, %v", h, err)
	}
	if r, err := s.c.Release(e.ctx, ref.Hash, owner); err != nil || r.Deleted {
		t.Fatalf("the owner's release: %+v, %v", r, err)
	}
}

// TestAttackHoldWithoutPaying: a hold on content already stored costs a
// paid quote of the content's own visibility, exactly as uploading it
// would; new content is verified byte for byte.
func TestAttackHoldWithoutPaying(t *testing.T) {
	e := newEnv(t)
	s := e.server("price=10,public-price=0")
	owner := otherSigner(t)
	ref, data := encBlob(t, 5000, 40)
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 3, Body: bytes.NewReader(data), Payer: e.payer, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, ref.Size)
	upload := func(q Quote) error {
		_, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(zeros), Owner: otherSigner(t)})
		return err
	}
	quote := func(r blob.Ref, public bool) Quote {
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: r.Hash, Size: r.Size, Days: 3650, Public: public})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	// A free public quote for the private blob.
	if err := upload(quote(ref, true)); !errors.Is(err, ErrInvalidContent) {
		t.Fatalf("hold on private content at the public price: %v", err)
	}
	// An unpaid private quote.
	if err := upload(quote(ref, false)); !errors.Is(err, ErrUnpaid) {
		t.Fatalf("hold on an unpaid quote: %v", err)
	}
	if h, err := s.c.Stat(e.ctx, ref.Hash); err != nil || h.Owners != 1 {
		t.Fatalf("after the refusals: %+v, %v", h, err)
	}
	// Content not stored yet is read and verified: the zeros are refused.
	otherRef, _ := encBlob(t, 5000, 41)
	q, err := s.c.Pay(e.ctx, quote(otherRef, false), e.payer)
	if err != nil {
		t.Fatal(err)
	}
	if err := upload(q); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("new content under a hash it does not have: %v", err)
	}
	if hosted(t, s, otherRef.Hash) {
		t.Fatal("unverified content hosted")
	}
}

// TestAttackLatePayment: a payment first seen after its quote expired
// does not pay it; one seen in time may confirm later.
func TestAttackLatePayment(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	s := e.server("price=10", func(c *Config) { c.Clock = clk.now })
	ref, data := encBlob(t, 3000, 50)
	q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size})
	if err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour + time.Minute)
	txid, err := e.payer.Pay(e.ctx, q.Address, q.Amount)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.ConfirmPayment(e.ctx, q.ID, txid); !errors.Is(err, ErrQuoteExpired) {
		t.Fatalf("payment after expiry: %v", err)
	}
	if _, err := s.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data)}); !errors.Is(err, ErrQuoteExpired) {
		t.Fatalf("upload on a quote paid late: %v", err)
	}
	if got, err := s.c.QuoteStatus(e.ctx, q.ID); err != nil || got.Paid {
		t.Fatalf("quote paid late: %+v, %v", got, err)
	}

	// With confirmations required, a payment seen before expiry counts
	// once confirmed, even after it.
	s2 := e.server("price=10", func(c *Config) { c.Clock, c.MinConfirmations = clk.now, 1 })
	q, err = s2.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: ref.Size})
	if err != nil {
		t.Fatal(err)
	}
	if txid, err = e.payer.Pay(e.ctx, q.Address, q.Amount); err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ {
		_, err = s2.c.ConfirmPayment(e.ctx, q.ID, txid)
		if errors.Is(err, ErrUnpaid) || try == 20 {
			break
		}
		time.Sleep(50 * time.Millisecond) // the address index may lag the mempool
	}
	if !errors.Is(err, ErrUnpaid) {
		t.Fatalf("unconfirmed payment: %v", err)
	}
	clk.add(time.Hour + time.Minute)
	if _, err := e.chain.Mine(e.ctx, 1, e.wallet.Address()); err != nil {
		t.Fatal(err)
	}
	if got, err := s2.c.ConfirmPayment(e.ctx, q.ID, ""); err != nil || !got.Paid {
		t.Fatalf("payment seen in time, confirmed after expiry: %+v, %v", got, err)
	}
	if _, err := s2.c.Upload(e.ctx, UploadRequest{Quote: q, Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
}

// TestAttackConcurrentFreePatches: two free patches of one base at once
// cannot both take the owner's hold with them.
func TestAttackConcurrentFreePatches(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	s := e.server("", func(c *Config) { c.Clock = clk.now })
	owner := otherSigner(t)
	ref, data := encBlob(t, 20_000, 60)
	first, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 30, Body: bytes.NewReader(data), Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		var wg sync.WaitGroup
		got := make([]Hosted, 2)
		errs := make([]error, 2)
		for i := range got {
			r, b := encBlob(t, 20_000, uint64(100+10*round+i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = s.c.Patch(e.ctx, PatchRequest{Base: ref.Hash, New: r.Hash, Delta: delta.Diff(data, b), Owner: owner})
			}()
		}
		wg.Wait()
		long := 0
		for i := range got {
			if errs[i] == nil && got[i].HostedUntil.Equal(first.HostedUntil) {
				long++
			}
		}
		if long > 1 {
			t.Fatalf("round %d: both concurrent free patches kept the whole term: %+v / %+v", round, got[0], got[1])
		}
		// Give the base its term back for the next round.
		if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 30, Body: bytes.NewReader(data), Owner: owner}); err != nil {
			t.Fatal(err)
		}
		if h, _ := s.c.Stat(e.ctx, ref.Hash); !h.HostedUntil.Equal(first.HostedUntil) {
			t.Fatalf("the base's term after re-hosting: %v, want %v", h.HostedUntil, first.HostedUntil)
		}
	}
}
