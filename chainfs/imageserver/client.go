package imageserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"

	"github.com/integrity-sys/integrity/chainfs/wallet"
)

// Client talks to one image server. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// Info describes a server.
type Info struct {
	Version          int
	Network          string
	Policy           Policy
	MinConfirmations int
	// Payments: the server checks payments on chain (it has prices).
	Payments bool
	// Forward: the server forwards uploads to other servers.
	Forward bool
	// NextPaymentIndex (when Payments): the payment key's children below
	// it are all the addresses quotes may have been paid to — what the
	// operator's wallet scans.
	NextPaymentIndex uint64
}

// QuoteRequest asks for a price.
type QuoteRequest struct {
	Kind   string // KindUpload or KindDownload
	Hash   [32]byte
	Size   int64 // upload: the exact size
	Days   int   // upload: hosting period (0: the server's minimum)
	Public bool  // upload: a public image
}

// Quote is a server's price for one upload or download, and where to
// pay it.
type Quote struct {
	ID        string
	Kind      string
	Hash      [32]byte
	Size      int64
	Days      int
	Public    bool
	Amount    int64  // satoshis; 0: free
	Address   string // pay Amount here (a fresh address per quote)
	ExpiresAt time.Time
	// Challenge is what the owner signs (action "own") to register the
	// key that may later patch and release the upload (paper 3.f).
	Challenge [32]byte
	Paid      bool
	Received  int64
	TxIDs     []string
	Used      bool
}

// Hosted describes content a server hosts.
type Hosted struct {
	Hash          [32]byte
	Size          int64
	Content       string // ContentImage or ContentBlob
	Public        bool
	HostedUntil   time.Time
	Owners        int
	Parent        [32]byte // the image it was patched from, if any
	DownloadPrice int64
}

// Payer pays an amount to an address on chain and returns the txid.
type Payer interface {
	Pay(ctx context.Context, address string, amount int64) (txid string, err error)
}

// DefaultMaxPrice is the most a client pays for one quote unless told
// otherwise: 100,000 sat (0.001 BTC). Prices come from servers, and
// servers from whoever published an image (a mount by address, a nested
// image), so without a cap a hostile server could ask for the whole
// wallet. The default is far above honest prices for ordinary content
// (a year of hosting 25 MiB at 10 sat per MiB-day is 91,250 sat; a
// download is priced per MiB, not per day), yet a lost payment at most
// that large is small.
const DefaultMaxPrice int64 = 100_000

// ErrOverLimit: a quote's price is above the payer's limit, so nothing
// was paid.
var ErrOverLimit = errors.New("price over the spending limit: nothing was paid")

// A LimitedPayer refuses payments above its limit (which may depend on
// the context: an explicit command may allow more than background
// work). Client.Pay checks a quote's whole price against it before paying
// any of it.
type LimitedPayer interface {
	Payer
	MaxPrice(ctx context.Context) int64
}

// LimitPayer caps p: each payment, and each quote Client.Pay pays with
// it, is at most limit(ctx) satoshis (DefaultMaxPrice if limit is nil or
// says 0 or less). A limit on p itself is replaced, not stacked, so a
// command can allow more than WalletPayer's default.
func LimitPayer(p Payer, limit func(ctx context.Context) int64) Payer {
	if lp, ok := p.(limitPayer); ok {
		p = lp.p
	}
	return limitPayer{p: p, limit: limit}
}

type limitPayer struct {
	p     Payer
	limit func(context.Context) int64
}

func (l limitPayer) MaxPrice(ctx context.Context) int64 {
	if l.limit != nil {
		if n := l.limit(ctx); n > 0 {
			return n
		}
	}
	return DefaultMaxPrice
}

func (l limitPayer) Pay(ctx context.Context, addr string, amount int64) (string, error) {
	if max := l.MaxPrice(ctx); amount > max {
		return "", fmt.Errorf("%w: a payment of %d sat to %s is over the limit of %d sat per payment", ErrOverLimit, amount, addr, max)
	}
	return l.p.Pay(ctx, addr, amount)
}

// WalletPayer pays from a chainfs wallet on the given network, at most
// DefaultMaxPrice per payment (LimitPayer sets another limit).
func WalletPayer(w *wallet.Wallet, params *chaincfg.Params) Payer {
	return limitPayer{p: walletPayer{w, params}}
}

type walletPayer struct {
	w      *wallet.Wallet
	params *chaincfg.Params
}

func (p walletPayer) Pay(ctx context.Context, addr string, amount int64) (string, error) {
	a, err := address.DecodeAddress(addr, p.params)
	if err != nil {
		return "", fmt.Errorf("image server payment address %q: %w", addr, err)
	}
	h, err := p.w.Send(ctx, a, amount)
	if err != nil {
		return "", err
	}
	return h.String(), nil
}

// NewClient returns a client for the server at baseURL. Plain http is
// accepted only for loopback hosts. hc may be nil: the default client has
// no overall timeout (transfers may be long; cancel with the context)
// but gives up on a server that does not answer a request within ten
// minutes of receiving it. Redirects are never followed.
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("image server URL %q: %w", baseURL, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("image server URL %q: plain http is allowed only on loopback; use https", baseURL)
		}
	default:
		return nil, fmt.Errorf("image server URL %q: scheme must be https (or http on loopback)", baseURL)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("image server URL %q: want scheme://host[:port][/path] only", baseURL)
	}
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 10 * time.Minute
		hc = &http.Client{Transport: t}
	}
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{base: strings.TrimRight(u.String(), "/"), hc: &c}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// URL is the server's base URL.
func (c *Client) URL() string { return c.base }

// Info asks the server for its policy.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var r infoResponse
	if err := c.doJSON(ctx, http.MethodGet, "/v1/info", nil, &r); err != nil {
		return Info{}, err
	}
	p := r.Policy
	info := Info{Version: r.Version, Network: r.Network, MinConfirmations: p.MinConfirmations, Payments: r.Payments, Forward: r.Forward,
		Policy: Policy{MaxSize: p.MaxSize, PricePerMBDay: p.PricePerMBDay, PublicPricePerMBDay: p.PublicPricePerMBDay,
			DownloadPricePerMB: p.DownloadPricePerMB, MinDays: p.MinDays, MaxDays: p.MaxDays, RefusePublic: !p.AcceptPublic, RefusePrivate: !p.AcceptPrivate}}
	if r.NextPaymentIndex != nil {
		info.NextPaymentIndex = *r.NextPaymentIndex
	}
	return info, nil
}

// Quote asks for the price of an upload or download.
func (c *Client) Quote(ctx context.Context, req QuoteRequest) (Quote, error) {
	body := quoteRequest{Kind: req.Kind, Hash: hex.EncodeToString(req.Hash[:]), Size: req.Size, Days: req.Days, Public: req.Public}
	var r quoteJSON
	if err := c.doJSON(ctx, http.MethodPost, "/v1/quotes", body, &r); err != nil {
		return Quote{}, err
	}
	return c.quoteOf(r)
}

// QuoteStatus reads a quote's state.
func (c *Client) QuoteStatus(ctx context.Context, id string) (Quote, error) {
	var r quoteJSON
	if err := c.doJSON(ctx, http.MethodGet, "/v1/quotes/"+url.PathEscape(id), nil, &r); err != nil {
		return Quote{}, err
	}
	return c.quoteOf(r)
}

// ConfirmPayment asks the server to look for the quote's payment on
// chain (txid, if given, must be among the payments it finds). ErrUnpaid
// (with *Error.Amount and Received) if it is not there yet.
func (c *Client) ConfirmPayment(ctx context.Context, id, txid string) (Quote, error) {
	var r quoteJSON
	if err := c.doJSON(ctx, http.MethodPost, "/v1/quotes/"+url.PathEscape(id)+"/pay", payRequest{TxID: txid}, &r); err != nil {
		return Quote{}, err
	}
	return c.quoteOf(r)
}

// Pay pays a quote with p — unless it is free or paid — and waits (up
// to ten tries, within ctx) for the server to see the payment. A quote
// priced above a LimitedPayer's limit is refused (ErrOverLimit) before
// anything is paid.
func (c *Client) Pay(ctx context.Context, q Quote, p Payer) (Quote, error) {
	if q.Paid || q.Amount == 0 {
		return q, nil
	}
	if p == nil {
		return q, fmt.Errorf("%w: quote %s asks %d sat and no payer was given", ErrUnpaid, q.ID, q.Amount)
	}
	if lp, ok := p.(LimitedPayer); ok {
		if max := lp.MaxPrice(ctx); q.Amount > max {
			what := "to host"
			if q.Kind == KindDownload {
				what = "to download"
			}
			return q, fmt.Errorf("%w: image server %s asks %d sat %s %x, over the limit of %d sat per payment",
				ErrOverLimit, c.base, q.Amount, what, q.Hash[:8], max)
		}
	}
	// The rest of a partial payment, but never a dust output.
	txid, err := p.Pay(ctx, q.Address, max(q.Amount-q.Received, DustLimit))
	if err != nil {
		return q, fmt.Errorf("paying image server %s: %w", c.base, err)
	}
	for try := 0; ; try++ {
		got, err := c.ConfirmPayment(ctx, q.ID, txid)
		if err == nil {
			return got, nil
		}
		var ie *Error
		// A backend's address index may lag its mempool by a moment.
		retry := errors.Is(err, ErrUnpaid) || (errors.As(err, &ie) && ie.Code == codeInvalidRequest && strings.Contains(ie.Message, "does not pay"))
		if !retry || try >= 9 {
			return q, err
		}
		select {
		case <-ctx.Done():
			return q, ctx.Err()
		case <-time.After(time.Duration(100*(try+1)) * time.Millisecond):
		}
	}
}

// UploadRequest is one upload.
type UploadRequest struct {
	// Quote is the paid upload quote (ID, Hash and Size are used).
	Quote Quote
	// Body yields exactly Quote.Size bytes.
	Body io.Reader
	// Owner, if set, signs the quote's challenge: the key that may patch
	// and release the upload. OwnerKey and OwnerSignature are the same,
	// signed elsewhere (a forward passes them on).
	Owner                    Signer
	OwnerKey, OwnerSignature []byte
	// Progress, if set, is called with the bytes sent so far.
	Progress func(done, total int64)
}

// Upload sends content under a paid quote. The server stores it only
// once its hash is verified.
func (c *Client) Upload(ctx context.Context, req UploadRequest) (Hosted, error) {
	q := req.Quote
	body := io.Reader(&progressReader{r: req.Body, total: q.Size, fn: req.Progress})
	hr, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v1/images/"+hex.EncodeToString(q.Hash[:]), io.LimitReader(body, q.Size))
	if err != nil {
		return Hosted{}, fmt.Errorf("image server request: %w", err)
	}
	hr.ContentLength = q.Size
	hr.Header.Set("Content-Type", "application/octet-stream")
	// The server refuses (unpaid, too large…) or, holding the bytes
	// already, accepts before the body is sent.
	hr.Header.Set("Expect", "100-continue")
	hr.Header.Set(HeaderQuote, q.ID)
	pub, sig := req.OwnerKey, req.OwnerSignature
	if req.Owner != nil {
		if pub, sig, err = sign(req.Owner, ActionOwn, q.Challenge, q.Hash, [32]byte{}); err != nil {
			return Hosted{}, err
		}
	}
	if pub != nil {
		hr.Header.Set(HeaderOwner, hex.EncodeToString(pub))
		hr.Header.Set(HeaderSignature, hex.EncodeToString(sig))
	}
	var r hostedJSON
	if err := c.send(hr, &r); err != nil {
		return Hosted{}, err
	}
	return c.hostedOf(r)
}

// HostRequest is a quote, payment and upload in one.
type HostRequest struct {
	Hash     [32]byte
	Size     int64
	Public   bool
	Days     int
	Body     io.Reader
	Payer    Payer
	Owner    Signer
	Progress func(done, total int64)
}

// Host quotes, pays (if not free) and uploads: the paper's steps 3.d–g
// against one server.
func (c *Client) Host(ctx context.Context, req HostRequest) (Hosted, error) {
	q, err := c.Quote(ctx, QuoteRequest{Kind: KindUpload, Hash: req.Hash, Size: req.Size, Days: req.Days, Public: req.Public})
	if err != nil {
		return Hosted{}, err
	}
	if q, err = c.Pay(ctx, q, req.Payer); err != nil {
		return Hosted{}, err
	}
	return c.Upload(ctx, UploadRequest{Quote: q, Body: req.Body, Owner: req.Owner, Progress: req.Progress})
}

// ExtendRequest renews the hosting of content a server already holds,
// without sending it again.
type ExtendRequest struct {
	Hash [32]byte
	// Size and Public describe the content exactly (the quote must match
	// it); Size 0: ask the server (Stat).
	Size   int64
	Public bool
	// Days to add (0: the server's minimum).
	Days  int
	Payer Payer
	// OwnerKey (a compressed public key), if it holds the content on the
	// server, has its hold extended; otherwise the payment adds to the
	// anonymous hold (crowdfunding), which grants no ownership.
	OwnerKey []byte
}

// Extended is the answer to an extension.
type Extended struct {
	// Hosted is the content after it: HostedUntil is its hosting end.
	Hosted
	// HoldUntil is when the hold paid for now ends.
	HoldUntil time.Time
	// OwnerHold: OwnerKey's hold was extended (false: the anonymous one).
	OwnerHold bool
}

// Extend checks that the server hosts req.Hash (ErrNotFound, before
// anything is paid), quotes, pays with req.Payer (a quote over a
// LimitedPayer's limit is refused before anything is paid, as in Pay) and
// extends the hosting.
func (c *Client) Extend(ctx context.Context, req ExtendRequest) (Extended, error) {
	// Asked first so nothing is paid for content the server no longer
	// holds (an ended hold cannot be extended: upload it again).
	st, err := c.Stat(ctx, req.Hash)
	if err != nil {
		return Extended{}, err
	}
	return c.ExtendHosted(ctx, req, st)
}

// ExtendHosted is Extend for content whose Stat (st) the caller has just
// read: it is not asked again (a renewal pass asks each server once per
// item).
func (c *Client) ExtendHosted(ctx context.Context, req ExtendRequest, st Hosted) (Extended, error) {
	if st.Hash != req.Hash {
		return Extended{}, fmt.Errorf("imageserver: extend %x with the record of %x", req.Hash[:8], st.Hash[:8])
	}
	switch {
	case req.Size == 0:
		req.Size, req.Public = st.Size, st.Public
	case req.Size != st.Size || req.Public != st.Public:
		return Extended{}, fmt.Errorf("%w: %s holds %x as %d %s bytes, not %d %s", ErrUnexpectedReply, c.base, req.Hash[:8],
			st.Size, visibility(st.Public), req.Size, visibility(req.Public))
	}
	// The server refuses a hold ending past its longest term, but only
	// once paid: refuse here what it would refuse then. HostedUntil is the
	// latest hold's end, from which an anonymous extension runs (an
	// owner's own hold ends no later), so this never lets through what
	// the server refuses.
	info, err := c.Info(ctx)
	if err != nil {
		return Extended{}, err
	}
	if max := info.Policy.MaxDays; max > 0 {
		from := st.HostedUntil
		if now := time.Now(); from.Before(now) {
			from = now
		}
		if end := from.Add(time.Duration(req.Days) * 24 * time.Hour); end.After(time.Now().Add(time.Duration(max) * 24 * time.Hour)) {
			return Extended{}, fmt.Errorf("%w: %s hosts at most %d days ahead and %x is hosted until %s: extending by %d days would pass that (nothing was paid)",
				ErrRefused, c.base, max, req.Hash[:8], st.HostedUntil.UTC().Format(time.DateOnly), req.Days)
		}
	}
	q, err := c.Quote(ctx, QuoteRequest{Kind: KindUpload, Hash: req.Hash, Size: req.Size, Days: req.Days, Public: req.Public})
	if err != nil {
		return Extended{}, err
	}
	if q, err = c.Pay(ctx, q, req.Payer); err != nil {
		return Extended{}, err
	}
	return c.ExtendPaid(ctx, q, req.OwnerKey)
}

// ExtendPaid extends the hosting of q.Hash on a paid upload quote for it
// (its exact size and visibility), for ownerKey's hold if it has one.
func (c *Client) ExtendPaid(ctx context.Context, q Quote, ownerKey []byte) (Extended, error) {
	body := extendRequest{Quote: q.ID}
	if len(ownerKey) > 0 {
		body.PublicKey = hex.EncodeToString(ownerKey)
	}
	var r extendResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/images/"+hex.EncodeToString(q.Hash[:])+"/extend", body, &r); err != nil {
		return Extended{}, err
	}
	h, err := c.hostedOf(r.hostedJSON)
	if err != nil {
		return Extended{}, err
	}
	if h.Hash != q.Hash {
		return Extended{}, fmt.Errorf("%w: %s extended %x, not %x", ErrUnexpectedReply, c.base, h.Hash[:8], q.Hash[:8])
	}
	return Extended{Hosted: h, HoldUntil: r.HoldUntil, OwnerHold: r.OwnerHold}, nil
}

// Stat describes hosted content (ErrNotFound if not hosted).
func (c *Client) Stat(ctx context.Context, h [32]byte) (Hosted, error) {
	var r hostedJSON
	if err := c.doJSON(ctx, http.MethodGet, "/v1/images/"+hex.EncodeToString(h[:])+"/info", nil, &r); err != nil {
		return Hosted{}, err
	}
	return c.hostedOf(r)
}

// Has reports whether the server hosts the content.
func (c *Client) Has(ctx context.Context, h [32]byte) (bool, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodHead, c.base+"/v1/images/"+hex.EncodeToString(h[:]), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return false, c.netError(ctx, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, &Error{Status: resp.StatusCode, URL: c.base, Message: fmt.Sprintf("HTTP %d", resp.StatusCode), sentinel: sentinelForStatus(resp.StatusCode)}
}

// DownloadOptions configure a download.
type DownloadOptions struct {
	// Ticket is a paid download quote's id, for servers that charge.
	Ticket string
	// Progress, if set, is called with the bytes received so far.
	Progress func(done, total int64)
}

// Download streams the whole content. The reader checks the hash: its
// final Read fails with ErrHashMismatch if the server sent wrong bytes,
// so use nothing before reading to the end without error.
func (c *Client) Download(ctx context.Context, h [32]byte, opts DownloadOptions) (io.ReadCloser, int64, error) {
	resp, err := c.get(ctx, h, opts.Ticket, "")
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("%w: %s answered a download with HTTP %d, length %d", ErrUnexpectedReply, c.base, resp.StatusCode, resp.ContentLength)
	}
	return &verifyReader{rc: resp.Body, h: sha256.New(), want: h, left: resp.ContentLength, total: resp.ContentLength, fn: opts.Progress, url: c.base}, resp.ContentLength, nil
}

// DownloadRange returns bytes [off, off+n) of the content, unverified
// (no hash covers a range: the image and blob readers check what they
// fetch).
func (c *Client) DownloadRange(ctx context.Context, h [32]byte, off, n int64, opts DownloadOptions) ([]byte, error) {
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("%w: range [%d, +%d)", ErrInvalidRequest, off, n)
	}
	if n == 0 {
		return []byte{}, nil
	}
	resp, err := c.get(ctx, h, opts.Ticket, fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || resp.ContentLength != n {
		return nil, fmt.Errorf("%w: %s answered a %d-byte range with HTTP %d, length %d", ErrUnexpectedReply, c.base, n, resp.StatusCode, resp.ContentLength)
	}
	out := make([]byte, n)
	pr := &progressReader{r: resp.Body, total: n, fn: opts.Progress}
	if _, err := io.ReadFull(pr, out); err != nil {
		return nil, fmt.Errorf("%w: reading a range from %s: %v", ErrUnavailable, c.base, err)
	}
	return out, nil
}

func (c *Client) get(ctx context.Context, h [32]byte, ticket, rng string) (*http.Response, error) {
	u := c.base + "/v1/images/" + hex.EncodeToString(h[:])
	if ticket != "" {
		u += "?quote=" + url.QueryEscape(ticket)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if rng != "" {
		hr.Header.Set("Range", rng)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, c.netError(ctx, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes))
		return nil, c.replyError(resp, data)
	}
	return resp, nil
}

// Challenge asks for a nonce to sign for action on h.
func (c *Client) Challenge(ctx context.Context, h [32]byte, action string) ([32]byte, error) {
	var r challengeResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/challenges", challengeRequest{Hash: hex.EncodeToString(h[:]), Action: action}, &r); err != nil {
		return [32]byte{}, err
	}
	n, err := parseHash(r.Nonce, "nonce")
	if err != nil {
		return n, fmt.Errorf("%w: %s sent a malformed nonce", ErrUnexpectedReply, c.base)
	}
	return n, nil
}

// PatchRequest is a signed diff (paper 4.a–c).
type PatchRequest struct {
	Base  [32]byte // the hosted image
	New   [32]byte // the image the delta makes of it
	Delta []byte   // a chainfs/delta delta from Base to New
	Owner Signer   // the key registered at upload
	// Quote is needed when the patch grows the image beyond the server's
	// free slack: a paid upload quote for New and its size.
	Quote string
}

// Patch has the server apply a delta to a hosted image. The server
// checks that the result hashes to New before storing it, and returns
// it; the old version stays until released.
func (c *Client) Patch(ctx context.Context, req PatchRequest) (Hosted, error) {
	nonce, err := c.Challenge(ctx, req.Base, ActionPatch)
	if err != nil {
		return Hosted{}, err
	}
	pub, sig, err := sign(req.Owner, ActionPatch, nonce, req.Base, req.New)
	if err != nil {
		return Hosted{}, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/images/"+hex.EncodeToString(req.Base[:])+"/patch", bytes.NewReader(req.Delta))
	if err != nil {
		return Hosted{}, err
	}
	hr.Header.Set("Content-Type", "application/octet-stream")
	hr.Header.Set("Expect", "100-continue")
	hr.Header.Set(HeaderNonce, hex.EncodeToString(nonce[:]))
	hr.Header.Set(HeaderOwner, hex.EncodeToString(pub))
	hr.Header.Set(HeaderSignature, hex.EncodeToString(sig))
	hr.Header.Set(HeaderNewHash, hex.EncodeToString(req.New[:]))
	if req.Quote != "" {
		hr.Header.Set(HeaderQuote, req.Quote)
	}
	var r hostedJSON
	if err := c.send(hr, &r); err != nil {
		return Hosted{}, err
	}
	got, err := c.hostedOf(r)
	if err != nil {
		return Hosted{}, err
	}
	if got.Hash != req.New {
		return Hosted{}, fmt.Errorf("%w: %s reports hash %x after the patch, want %x", ErrHashMismatch, c.base, got.Hash, req.New)
	}
	return got, nil
}

// Released is the answer to Release.
type Released struct {
	// Deleted: nobody holds the content any more and it is gone.
	Deleted bool
	// HostedUntil: otherwise, until when others' holds keep it.
	HostedUntil time.Time
}

// Release tells the server it may stop hosting h for owner (paper 4.e).
func (c *Client) Release(ctx context.Context, h [32]byte, owner Signer) (Released, error) {
	nonce, err := c.Challenge(ctx, h, ActionRelease)
	if err != nil {
		return Released{}, err
	}
	pub, sig, err := sign(owner, ActionRelease, nonce, h, [32]byte{})
	if err != nil {
		return Released{}, err
	}
	var r releaseResponse
	body := releaseRequest{signedJSON{Nonce: hex.EncodeToString(nonce[:]), PublicKey: hex.EncodeToString(pub), Signature: hex.EncodeToString(sig)}}
	if err := c.doJSON(ctx, http.MethodPost, "/v1/images/"+hex.EncodeToString(h[:])+"/release", body, &r); err != nil {
		return Released{}, err
	}
	return Released{Deleted: r.Deleted, HostedUntil: r.HostedUntil}, nil
}

// ForwardRequest asks one server to upload its copy to another (paper
// 3.h).
type ForwardRequest struct {
	Hash [32]byte
	// To is the other server; Quote a paid upload quote from it for Hash.
	To    string
	Quote Quote
	// Owner signs the request here and the registration there.
	Owner Signer
}

// Forward has this server upload h to another server, so the client
// uploads once.
func (c *Client) Forward(ctx context.Context, req ForwardRequest) (Hosted, error) {
	to := strings.TrimRight(req.To, "/")
	nonce, err := c.Challenge(ctx, req.Hash, ActionForward)
	if err != nil {
		return Hosted{}, err
	}
	pub, sig, err := sign(req.Owner, ActionForward, nonce, req.Hash, forwardArg(to, req.Quote.ID))
	if err != nil {
		return Hosted{}, err
	}
	tpub, tsig, err := sign(req.Owner, ActionOwn, req.Quote.Challenge, req.Hash, [32]byte{})
	if err != nil {
		return Hosted{}, err
	}
	body := forwardRequest{
		signedJSON:      signedJSON{Nonce: hex.EncodeToString(nonce[:]), PublicKey: hex.EncodeToString(pub), Signature: hex.EncodeToString(sig)},
		To:              to,
		Quote:           req.Quote.ID,
		TargetPublicKey: hex.EncodeToString(tpub),
		TargetSignature: hex.EncodeToString(tsig),
	}
	var r forwardResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/images/"+hex.EncodeToString(req.Hash[:])+"/forward", body, &r); err != nil {
		return Hosted{}, err
	}
	return c.hostedOf(r.At)
}

func (c *Client) doJSON(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("image server request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("image server request: %w", err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	return c.send(hr, out)
}

// send does a request and decodes a JSON reply into out (if not nil).
func (c *Client) send(hr *http.Request, out any) error {
	hr.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(hr)
	if err != nil {
		return c.netError(hr.Context(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	if err != nil {
		return fmt.Errorf("%w: reading reply from image server at %s: %v", ErrUnavailable, c.base, err)
	}
	if len(data) > MaxReplyBytes {
		return fmt.Errorf("%w: %s sent a reply over %d bytes", ErrUnexpectedReply, c.base, MaxReplyBytes)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%w: %s %s: %v", ErrUnexpectedReply, hr.Method, hr.URL, err)
		}
		return nil
	}
	return c.replyError(resp, data)
}

func (c *Client) netError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("image server at %s: %w", c.base, ctxErr)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%w: image server at %s is unreachable: %v", ErrUnavailable, c.base, err)
}

func (c *Client) replyError(resp *http.Response, data []byte) error {
	var eb errorBody
	e := &Error{Status: resp.StatusCode, URL: c.base}
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
		e.Amount, e.Received = eb.Error.Amount, eb.Error.Received
		e.RetryAfter = time.Duration(eb.Error.RetryAfter) * time.Second
	} else {
		msg := strings.TrimSpace(string(data[:min(len(data), 200)]))
		e.Message = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, msg)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && e.RetryAfter == 0 {
		e.RetryAfter = time.Duration(ra) * time.Second
	}
	if s, ok := codeSentinels[e.Code]; ok {
		e.sentinel = s
	} else {
		e.sentinel = sentinelForStatus(resp.StatusCode)
	}
	return e
}

func sentinelForStatus(status int) error {
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusPaymentRequired:
		return ErrUnpaid
	case http.StatusTooManyRequests:
		return ErrRateLimited
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return ErrUnavailable
	}
	return ErrUnexpectedReply
}

func (c *Client) quoteOf(r quoteJSON) (Quote, error) {
	h, err := parseHash(r.Hash, "hash")
	if err != nil {
		return Quote{}, fmt.Errorf("%w: %s sent a quote with a malformed hash", ErrUnexpectedReply, c.base)
	}
	q := Quote{ID: r.ID, Kind: r.Kind, Hash: h, Size: r.Size, Days: r.Days, Public: r.Public, Amount: r.Amount, Address: r.Address,
		ExpiresAt: r.ExpiresAt, Paid: r.Paid, Received: r.Received, TxIDs: r.TxIDs, Used: r.Used}
	if r.Challenge != "" {
		if q.Challenge, err = parseHash(r.Challenge, "challenge"); err != nil {
			return Quote{}, fmt.Errorf("%w: %s sent a malformed challenge", ErrUnexpectedReply, c.base)
		}
	}
	if validID(r.ID) != nil {
		return Quote{}, fmt.Errorf("%w: %s sent a malformed quote id", ErrUnexpectedReply, c.base)
	}
	return q, nil
}

func (c *Client) hostedOf(r hostedJSON) (Hosted, error) {
	out, err := hostedFromJSON(r)
	if err != nil {
		return Hosted{}, fmt.Errorf("%w: %s: %v", ErrUnexpectedReply, c.base, err)
	}
	return out, nil
}

func hostedFromJSON(r hostedJSON) (Hosted, error) {
	h, err := parseHash(r.Hash, "hash")
	if err != nil {
		return Hosted{}, err
	}
	out := Hosted{Hash: h, Size: r.Size, Content: r.Content, Public: r.Public, HostedUntil: r.HostedUntil, Owners: r.Owners, DownloadPrice: r.DownloadPrice}
	if r.Parent != "" {
		if out.Parent, err = parseHash(r.Parent, "parent"); err != nil {
			return Hosted{}, err
		}
	}
	return out, nil
}

// hostedJSONOf is the wire form of a Hosted (a forward passes on what
// the target answered).
func hostedJSONOf(h Hosted) hostedJSON {
	out := hostedJSON{Hash: hex.EncodeToString(h.Hash[:]), Size: h.Size, Content: h.Content, Public: h.Public, HostedUntil: h.HostedUntil,
		Owners: h.Owners, DownloadPrice: h.DownloadPrice}
	if h.Parent != ([32]byte{}) {
		out.Parent = hex.EncodeToString(h.Parent[:])
	}
	return out
}

// progressReader reports bytes read.
type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.fn != nil && n > 0 {
		p.fn(p.done, p.total)
	}
	return n, err
}

// verifyReader checks a download's hash on the Read that completes it;
// if the bytes are wrong that Read withholds its bytes and fails.
type verifyReader struct {
	rc    io.ReadCloser
	h     hash.Hash
	want  [32]byte
	left  int64
	total int64
	fn    func(done, total int64)
	url   string
	done  bool
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	n, err := 0, error(nil)
	if len(p) > 0 {
		n, err = v.rc.Read(p)
		v.h.Write(p[:n])
		v.left -= int64(n)
		if v.fn != nil && n > 0 {
			v.fn(v.total-v.left, v.total)
		}
	}
	if v.left > 0 {
		if err == io.EOF {
			return n, fmt.Errorf("%w: %s: download ends %d bytes early", ErrHashMismatch, v.url, v.left)
		}
		if err != nil {
			return n, fmt.Errorf("%w: downloading from %s: %v", ErrUnavailable, v.url, err)
		}
		return n, nil
	}
	v.done = true
	if sum := v.h.Sum(nil); subtle.ConstantTimeCompare(sum, v.want[:]) != 1 {
		return 0, fmt.Errorf("%w: %s served bytes hashing to %x for %x", ErrHashMismatch, v.url, sum, v.want)
	}
	return n, nil
}

func (v *verifyReader) Close() error { return v.rc.Close() }
