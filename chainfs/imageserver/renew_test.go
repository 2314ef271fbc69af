package imageserver

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/delta"
)

// Renewal: POST /v1/images/{hash}/extend buys more hosting of content a
// server holds, without its bytes, on a paid upload quote; real server,
// real chain, real payments.

// holdsOf reads the content's holds from the server's state.
func holdsOf(t *testing.T, s *testServer, h [32]byte) []hold {
	t.Helper()
	rec, err := s.srv.loadImage(h)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Holds
}

// TestExtendOwnerHold: the owner's paid extension moves its hold's end by
// the quote's days, from the hold's end, and keeps one hold.
func TestExtendOwnerHold(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	s := e.server("price=10", func(c *Config) { c.Clock = clk.now })
	owner := otherSigner(t)
	ref, data := encBlob(t, 3000, 20)
	first, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 2, Body: bytes.NewReader(data), Payer: e.payer, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.c.Extend(e.ctx, ExtendRequest{Hash: ref.Hash, Days: 30, Payer: e.payer, OwnerKey: owner.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	want := first.HostedUntil.Add(30 * 24 * time.Hour)
	if !got.OwnerHold || !near(got.HoldUntil, want) || !near(got.HostedUntil, want) || got.Owners != 1 {
		t.Fatalf("extended: %+v, want the owner's hold until %s", got, want)
	}
	if hs := holdsOf(t, s, ref.Hash); len(hs) != 1 || !near(hs[0].Until, want) {
		t.Fatalf("holds after the extension: %+v", hs)
	}
	if st, err := s.c.Stat(e.ctx, ref.Hash); err != nil || !near(st.HostedUntil, want) {
		t.Fatalf("info after the extension: %+v, %v", st, err)
	}
	// Past the original end, the content is still hosted and the owner
	// still owns it: a release works.
	clk.add(3 * 24 * time.Hour)
	if _, err := s.srv.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if !hosted(t, s, ref.Hash) {
		t.Fatal("extended content dropped at the original end")
	}
	if r, err := s.c.Release(e.ctx, ref.Hash, owner); err != nil || !r.Deleted {
		t.Fatalf("owner's release after the extension: %+v, %v", r, err)
	}
}

// TestExtendRefusals: an extension needs a paid, unused, fresh upload
// quote for the content's exact size and visibility, at the current
// price, within the server's longest term; a refused one uses nothing.
func TestExtendRefusals(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	s := e.server("price=10,public-price=0,max-days=40", func(c *Config) { c.Clock = clk.now })
	owner := otherSigner(t)
	ref, data := encBlob(t, 3000, 21)
	first, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 2, Body: bytes.NewReader(data), Payer: e.payer, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	quote := func(size int64, public bool, days int) Quote {
		t.Helper()
		q, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: ref.Hash, Size: size, Days: days, Public: public})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	extend := func(q Quote) error {
		_, err := s.c.ExtendPaid(e.ctx, q, owner.PublicKey())
		return err
	}
	unchanged := func(what string) {
		t.Helper()
		if st, err := s.c.Stat(e.ctx, ref.Hash); err != nil || !near(st.HostedUntil, first.HostedUntil) {
			t.Fatalf("%s changed the hosting: %+v, %v", what, st, err)
		}
	}

	if err := extend(quote(ref.Size, false, 30)); !errors.Is(err, ErrUnpaid) {
		t.Fatalf("unpaid quote: %v", err)
	}
	unchanged("an unpaid quote")
	// Free public hosting must not extend private content.
	free := quote(ref.Size, true, 30)
	if !free.Paid || free.Amount != 0 {
		t.Fatalf("premise: public hosting is free here: %+v", free)
	}
	if err := extend(free); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("public quote for private content: %v", err)
	}
	unchanged("a public quote")
	small, err := s.c.Pay(e.ctx, quote(ref.Size-1, false, 30), e.payer)
	if err != nil {
		t.Fatal(err)
	}
	if err := extend(small); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("quote for another size: %v", err)
	}
	unchanged("a quote for another size")
	if got, err := s.c.QuoteStatus(e.ctx, small.ID); err != nil || got.Used {
		t.Fatalf("the refused quote: %+v, %v", got, err)
	}
	// Beyond the server's longest term from now.
	long, err := s.c.Pay(e.ctx, quote(ref.Size, false, 39), e.payer)
	if err != nil {
		t.Fatal(err)
	}
	if err := extend(long); !errors.Is(err, ErrRefused) {
		t.Fatalf("extension past max-days: %v", err)
	}
	unchanged("an extension past max-days")
	// A paid quote for another hash.
	otherRef, _ := encBlob(t, 3000, 22)
	oq, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: otherRef.Hash, Size: otherRef.Size, Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	oq.Hash = ref.Hash // sent to this content's endpoint
	if err := extend(oq); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("quote for another hash: %v", err)
	}
	// Expired unpaid, and paid but stale.
	late := quote(ref.Size, false, 1)
	paid, err := s.c.Pay(e.ctx, quote(ref.Size, false, 1), e.payer)
	if err != nil {
		t.Fatal(err)
	}
	clk.add(2*time.Hour + time.Minute)
	if err := extend(late); !errors.Is(err, ErrQuoteExpired) {
		t.Fatalf("expired quote: %v", err)
	}
	if err := extend(paid); !errors.Is(err, ErrQuoteExpired) {
		t.Fatalf("stale paid quote: %v", err)
	}
	unchanged("an expired quote")
	// A good one works once.
	good, err := s.c.Pay(e.ctx, quote(ref.Size, false, 5), e.payer)
	if err != nil {
		t.Fatal(err)
	}
	if err := extend(good); err != nil {
		t.Fatal(err)
	}
	if err := extend(good); !errors.Is(err, ErrPaymentUsed) {
		t.Fatalf("quote used twice: %v", err)
	}
	// Content not hosted: the client asks first and pays nothing.
	if _, err := s.c.Extend(e.ctx, ExtendRequest{Hash: otherRef.Hash, Days: 1, Payer: failPayer{t}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Client.Extend of content not hosted: %v", err)
	}
	gq, err := s.c.Quote(e.ctx, QuoteRequest{Kind: KindUpload, Hash: otherRef.Hash, Size: otherRef.Size, Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.c.Pay(e.ctx, gq, e.payer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.ExtendPaid(e.ctx, gone, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("extending content not hosted: %v", err)
	}
}

// TestExtendByStranger: anyone who pays may extend hosting (the paper's
// crowdfunding): a stranger's extension — naming no key, or a key that
// holds nothing — adds one anonymous hold beyond the content's end and
// makes nobody an owner: the stranger still cannot patch or release, and
// the owner's hold is untouched.
func TestExtendByStranger(t *testing.T) {
	e := newEnv(t)
	s := e.server("price=10")
	owner, stranger := otherSigner(t), otherSigner(t)
	ref, data := encBlob(t, 3000, 23)
	first, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 2, Body: bytes.NewReader(data), Payer: e.payer, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.c.Extend(e.ctx, ExtendRequest{Hash: ref.Hash, Size: ref.Size, Days: 10, Payer: e.payer, OwnerKey: stranger.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	end := first.HostedUntil.Add(10 * 24 * time.Hour)
	if got.OwnerHold || got.Owners != 1 || !near(got.HoldUntil, end) || !near(got.HostedUntil, end) {
		t.Fatalf("stranger's extension: %+v, want an anonymous hold until %s", got, end)
	}
	// A second contribution, anonymous, extends the same anonymous hold.
	got, err = s.c.Extend(e.ctx, ExtendRequest{Hash: ref.Hash, Days: 5, Payer: e.payer})
	if err != nil {
		t.Fatal(err)
	}
	end = end.Add(5 * 24 * time.Hour)
	if got.OwnerHold || !near(got.HoldUntil, end) {
		t.Fatalf("second contribution: %+v, want until %s", got, end)
	}
	hs := holdsOf(t, s, ref.Hash)
	if len(hs) != 2 {
		t.Fatalf("holds: %+v, want the owner's and one anonymous", hs)
	}
	for _, h := range hs {
		switch {
		case h.Owner == nil && !near(h.Until, end):
			t.Fatalf("anonymous hold %+v, want until %s", h, end)
		case h.Owner != nil && (!bytes.Equal(h.Owner, owner.PublicKey()) || !near(h.Until, first.HostedUntil)):
			t.Fatalf("owner's hold changed: %+v", h)
		}
	}
	newRef, newData := encBlob(t, 3000, 24)
	d := delta.Diff(data, newData)
	if _, err := s.c.Patch(e.ctx, PatchRequest{Base: ref.Hash, New: newRef.Hash, Delta: d, Owner: stranger}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("stranger's patch after paying: %v", err)
	}
	if _, err := s.c.Release(e.ctx, ref.Hash, stranger); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("stranger's release after paying: %v", err)
	}
	// The owner's release leaves the crowdfunded hold.
	if r, err := s.c.Release(e.ctx, ref.Hash, owner); err != nil || r.Deleted || !near(r.HostedUntil, end) {
		t.Fatalf("owner's release: %+v, %v", r, err)
	}
}

// failPayer fails the test if asked to pay.
type failPayer struct{ t *testing.T }

func (p failPayer) Pay(context.Context, string, int64) (string, error) {
	p.t.Error("paid")
	return "", errors.New("no")
}

// TestExtendPastLongestTermPaysNothing: Client.Extend refuses, before
// paying, an extension the server would refuse for ending past its
// longest term (the server refuses only after payment).
func TestExtendPastLongestTermPaysNothing(t *testing.T) {
	e := newEnv(t)
	s := e.server("price=10,max-days=40")
	ref, data := encBlob(t, 3000, 23)
	if _, err := s.c.Host(e.ctx, HostRequest{Hash: ref.Hash, Size: ref.Size, Days: 2, Body: bytes.NewReader(data), Payer: e.payer}); err != nil {
		t.Fatal(err)
	}
	p := &countingPayer{p: e.payer}
	if _, err := s.c.Extend(e.ctx, ExtendRequest{Hash: ref.Hash, Days: 39, Payer: p}); !errors.Is(err, ErrRefused) || p.n.Load() != 0 {
		t.Fatalf("extension past max-days: %v after %d payments", err, p.n.Load())
	}
	if _, err := s.c.Extend(e.ctx, ExtendRequest{Hash: ref.Hash, Days: 30, Payer: p}); err != nil || p.n.Load() != 1 {
		t.Fatalf("extension within max-days: %v after %d payments", err, p.n.Load())
	}
}
