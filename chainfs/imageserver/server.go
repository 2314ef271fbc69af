package imageserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/chainfs/image"
)

// Config configures a Server. DataDir is required; Chain is required
// unless the policy is entirely free.
type Config struct {
	// DataDir holds the state database (DataDir/state), the content
	// (DataDir/blobs) and, unless PaymentKey is set, the payment key.
	DataDir string
	// Chain is where payments are checked.
	Chain Chain
	// PaymentKey is a BIP32 extended key (public suffices) for the
	// chain's network; each quote is paid to a fresh child address.
	// Default: a key generated in DataDir/payment.key. A free policy
	// (Policy.Paid false) uses no key and generates none.
	PaymentKey string
	// Policy: sizes, prices, what is accepted.
	Policy Policy
	// MinConfirmations a payment needs (0: in the mempool suffices,
	// since the backend accepted it — but an unconfirmed payment can
	// still be double-spent after the upload it paid for is accepted;
	// a server taking real money wants 1 or more).
	MinConfirmations int
	// QuoteTTL is how long a quote waits for payment (only payments
	// found by then count; see ensurePaid); a paid quote may be used for
	// QuoteTTL after it expired or was paid, whichever is later. Default
	// 1 hour.
	QuoteTTL time.Duration
	// ChallengeTTL is how long a challenge nonce stays usable. Default
	// 10 minutes.
	ChallengeTTL time.Duration
	// TicketTTL is how long a paid download quote serves. Default 24 h.
	TicketTTL time.Duration
	// IPRate limits requests per client IP. Default 20/s, bursts of 100.
	IPRate RateLimit
	// MaxTrackedIPs bounds the rate limiter's memory. Default 100,000.
	MaxTrackedIPs int
	// MaxUploads bounds concurrent uploads and patches. Default 4.
	MaxUploads int
	// MaxPatchBase bounds the image a patch applies to, and MaxDelta the
	// delta: a patch is applied in memory. Defaults 256 MiB and 64 MiB.
	MaxPatchBase, MaxDelta int64
	// PatchSlack is how much a patch may grow an image without a quote
	// for the new version. Default 1 MiB.
	PatchSlack int64
	// PatchGrace is how long the base of a patch made without a quote
	// stays hosted for its owner: such a patch moves the owner's hold to
	// the new version rather than copying it (else every free patch
	// would add a free version), and other devices still reading the old
	// version get this long to switch; the owner's release ends it at
	// once. Default 1 hour.
	PatchGrace time.Duration
	// MinTransferRate sets per-request I/O deadlines: 30 s plus the
	// body's size at this rate (bytes/s). Default 64 KiB/s.
	MinTransferRate int64
	// SweepInterval is how often expired holds are dropped and images
	// nobody holds deleted. Default 10 minutes; negative: never (call
	// Sweep).
	SweepInterval time.Duration
	// Forward enables POST /v1/images/{hash}/forward (paper 3.h): the
	// server uploads its copy to another server on the owner's signed
	// request. ForwardClient is the HTTP client it uses; the default one
	// connects only to public addresses (a forward must not reach the
	// operator's own network) unless ForwardLocal is set (tests, a
	// cluster of servers on one host).
	Forward       bool
	ForwardClient *http.Client
	ForwardLocal  bool
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("image server: Config.DataDir is required")
	}
	if err := c.Policy.setDefaults(); err != nil {
		return err
	}
	if c.Chain == nil && c.Policy.Paid() {
		return errors.New("image server: a policy with prices needs a chain to check payments")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.QuoteTTL, time.Hour)
	def(&c.ChallengeTTL, 10*time.Minute)
	def(&c.TicketTTL, 24*time.Hour)
	def(&c.PatchGrace, time.Hour)
	if c.SweepInterval == 0 {
		c.SweepInterval = 10 * time.Minute
	}
	if c.IPRate.PerSecond <= 0 {
		c.IPRate.PerSecond = 20
	}
	if c.IPRate.Burst <= 0 {
		c.IPRate.Burst = 100
	}
	if c.MaxTrackedIPs <= 0 {
		c.MaxTrackedIPs = 100_000
	}
	if c.MaxUploads <= 0 {
		c.MaxUploads = 4
	}
	if c.MaxPatchBase <= 0 {
		c.MaxPatchBase = 256 << 20
	}
	if c.MaxDelta <= 0 {
		c.MaxDelta = 64 << 20
	}
	if c.PatchSlack <= 0 {
		c.PatchSlack = 1 << 20
	}
	if c.MinTransferRate <= 0 {
		c.MinTransferRate = 64 << 10
	}
	if c.MinConfirmations < 0 {
		c.MinConfirmations = 0
	}
	if c.ForwardClient == nil {
		c.ForwardClient = forwardClient(c.ForwardLocal)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}

// Server is the image server: an http.Handler over its Badger state and
// blob directory.
type Server struct {
	cfg   Config
	log   *slog.Logger
	db    *badger.DB
	blobs *blob.Dir
	payee *payee
	mux   *http.ServeMux
	ips   *ipLimiter

	locks   keyLocks
	payMu   sync.Mutex
	uploads chan struct{}

	// idxMu serialises taking payment address indexes; nextIndex is the
	// next index to take (GET /v1/info).
	idxMu     sync.Mutex
	nextIndex atomic.Uint64

	// closing is set first thing by Close: requests arriving after it
	// get 503. mu orders it with inflight.Add, so Close's Wait sees
	// every request that got in.
	closing   atomic.Bool
	mu        sync.RWMutex
	inflight  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	done      chan struct{}
}

// New opens (or creates) the server's state and returns the server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "image-server")
	s := &Server{cfg: cfg, log: log, ips: newIPLimiter(cfg.IPRate, cfg.MaxTrackedIPs),
		uploads: make(chan struct{}, cfg.MaxUploads), stop: make(chan struct{}), done: make(chan struct{})}
	// The database first: its directory lock keeps a second server off
	// this data directory before anything else in it is touched (the
	// payment key included).
	var err error
	if s.db, err = openDB(filepath.Join(cfg.DataDir, "state"), log); err != nil {
		return nil, fmt.Errorf("image server: %w", err)
	}
	if s.blobs, err = blob.NewDir(filepath.Join(cfg.DataDir, "blobs")); err == nil {
		err = s.openPayments()
	}
	if err != nil {
		_ = s.db.Close()
		return nil, fmt.Errorf("image server: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", s.api(s.handleInfo, ""))
	mux.HandleFunc("POST /v1/quotes", s.api(s.handleQuote, "application/json"))
	mux.HandleFunc("GET /v1/quotes/{id}", s.api(s.handleQuoteStatus, ""))
	mux.HandleFunc("POST /v1/quotes/{id}/pay", s.api(s.handlePay, "application/json"))
	mux.HandleFunc("PUT /v1/images/{hash}", s.api(s.handleUpload, "application/octet-stream"))
	mux.HandleFunc("GET /v1/images/{hash}", s.api(s.handleDownload, ""))
	mux.HandleFunc("HEAD /v1/images/{hash}", s.api(s.handleDownload, ""))
	mux.HandleFunc("GET /v1/images/{hash}/info", s.api(s.handleImageInfo, ""))
	mux.HandleFunc("POST /v1/challenges", s.api(s.handleChallenge, "application/json"))
	mux.HandleFunc("POST /v1/images/{hash}/patch", s.api(s.handlePatch, "application/octet-stream"))
	mux.HandleFunc("POST /v1/images/{hash}/release", s.api(s.handleRelease, "application/json"))
	mux.HandleFunc("POST /v1/images/{hash}/forward", s.api(s.handleForward, "application/json"))
	mux.HandleFunc("POST /v1/images/{hash}/extend", s.api(s.handleExtend, "application/json"))
	mux.HandleFunc("/", s.api(func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		return 0, nil, errorf(http.StatusNotFound, codeNotFound, "no endpoint %s %s (see docs/IMAGE-SERVER.md)", r.Method, r.URL.Path)
	}, ""))
	s.mux = mux
	if cfg.SweepInterval > 0 {
		go s.sweeper()
	} else {
		close(s.done)
	}
	net := ""
	if cfg.Chain != nil {
		net = cfg.Chain.Params().Name
	}
	log.Info("image server ready", "data", cfg.DataDir, "network", net, "max_size", cfg.Policy.MaxSize,
		"price", cfg.Policy.PricePerMBDay, "public_price", cfg.Policy.PublicPricePerMBDay, "download_price", cfg.Policy.DownloadPricePerMB)
	return s, nil
}

// openPayments loads (or creates) the payment key of a priced policy
// and reads the address index counter. A free policy has neither.
func (s *Server) openPayments() error {
	if !s.cfg.Policy.Paid() {
		return nil
	}
	var err error
	if s.payee, err = loadPayee(s.cfg.PaymentKey, s.cfg.DataDir, s.cfg.Chain.Params(), s.log); err != nil {
		return err
	}
	return s.view(func(txn *badger.Txn) error {
		n, err := readIndex(txn)
		s.nextIndex.Store(n)
		return err
	})
}

// Close marks the server closing — requests arriving from then on get
// 503 unavailable — then waits for requests in progress, stops the
// sweeper and closes the database. Shut the http.Server down first, or
// a long transfer keeps Close waiting.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing.Store(true)
		s.mu.Unlock()
		s.inflight.Wait()
		close(s.stop)
		<-s.done
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("image server: closing: %w", err)
		}
	})
	return s.closeErr
}

// enter admits a request unless the server is closing; the caller calls
// s.inflight.Done when it is admitted.
func (s *Server) enter() bool {
	if s.closing.Load() {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closing.Load() {
		return false
	}
	s.inflight.Add(1)
	return true
}

// HTTPServer returns an *http.Server for the handler. It has no global
// read or write timeout (uploads and downloads may be large); each
// request sets its own deadlines from its size and MinTransferRate, and
// slow headers and idle connections are cut off.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// ServeHTTP implements http.Handler: shutdown check, per-IP rate limit,
// then the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if !s.enter() {
		writeError(w, errClosed)
		return
	}
	defer s.inflight.Done()
	if ok, wait := s.ips.allow(clientIP(r), s.now()); !ok {
		writeError(w, &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, msg: ErrRateLimited.Error(), retryAfter: wait})
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) now() time.Time { return s.cfg.Clock() }

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) (int, any, error)

// api adapts a handler returning (status, body, error). A handler that
// wrote its own response returns status 0 and a nil body and error.
// contentType, if set, is required of the request (JSON bodies are also
// capped): requiring it keeps browsers from posting here cross-site
// without a CORS preflight.
func (s *Server) api(fn handlerFunc, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if contentType != "" {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != contentType {
				writeError(w, errorf(http.StatusUnsupportedMediaType, codeInvalidRequest, "invalid request: Content-Type must be %s", contentType))
				return
			}
			if contentType == "application/json" {
				if r.ContentLength > MaxJSONBytes {
					writeError(w, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body exceeds %d bytes", MaxJSONBytes))
					return
				}
				r.Body = http.MaxBytesReader(w, r.Body, MaxJSONBytes)
			}
		} else {
			r.Body = http.MaxBytesReader(w, r.Body, 0)
		}
		status, body, err := fn(w, r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
				ae = errInternal
			}
			writeError(w, ae)
			return
		}
		if status == 0 {
			return
		}
		if body == nil {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := errorBody{Error: errorJSON{Code: e.code, Message: e.msg, Amount: e.amount, Received: e.received}}
	if e.retryAfter > 0 {
		secs := int64((e.retryAfter + time.Second - 1) / time.Second)
		body.Error.RetryAfter = secs
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.Header().Del("Content-Length")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(body)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func (s *Server) policyJSON() policyJSON {
	p := s.cfg.Policy
	return policyJSON{MaxSize: p.MaxSize, PricePerMBDay: p.PricePerMBDay, PublicPricePerMBDay: p.PublicPricePerMBDay,
		DownloadPricePerMB: p.DownloadPricePerMB, MinDays: p.MinDays, MaxDays: p.MaxDays,
		AcceptPublic: !p.RefusePublic, AcceptPrivate: !p.RefusePrivate, MinConfirmations: s.cfg.MinConfirmations}
}

func (s *Server) handleInfo(http.ResponseWriter, *http.Request) (int, any, error) {
	resp := infoResponse{Status: "ok", Version: APIVersion, Policy: s.policyJSON(), Forward: s.cfg.Forward, Payments: s.payee != nil}
	if s.payee != nil {
		n := s.nextIndex.Load()
		resp.NextPaymentIndex = &n
	}
	if s.cfg.Chain != nil {
		resp.Network = s.cfg.Chain.Params().Name
	}
	return http.StatusOK, resp, nil
}

func quoteJSONOf(q *quoteRec) quoteJSON {
	out := quoteJSON{ID: q.ID, Kind: q.Kind, Hash: q.Hash, Size: q.Size, Days: q.Days, Public: q.Public, Amount: q.Amount,
		Address: q.Address, ExpiresAt: q.Expires.UTC(), Challenge: q.Challenge, Paid: q.Paid, Received: q.Received, Used: q.Used}
	seen := map[string]bool{}
	for _, o := range q.Outpoints {
		if !seen[o.TxID] {
			seen[o.TxID] = true
			out.TxIDs = append(out.TxIDs, o.TxID)
		}
	}
	return out
}

func (s *Server) handleQuote(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var req quoteRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	hash, err := parseHash(req.Hash, "hash")
	if err != nil {
		return 0, nil, err
	}
	now := s.now()
	id, err := randomHex(16)
	if err != nil {
		return 0, nil, err
	}
	q := &quoteRec{ID: id, Kind: req.Kind, Hash: req.Hash, Created: now, Expires: now.Add(s.cfg.QuoteTTL)}
	p := s.cfg.Policy
	switch req.Kind {
	case KindUpload:
		switch {
		case req.Size <= 0:
			return 0, nil, invalid("size must be positive")
		case req.Size > p.MaxSize:
			return 0, nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: %d bytes exceed this server's limit of %d", ErrTooLarge, req.Size, p.MaxSize)
		case req.Public && p.RefusePublic:
			return 0, nil, errorf(http.StatusForbidden, codeRefused, "%s: this server does not host public images", ErrRefused)
		case !req.Public && p.RefusePrivate:
			return 0, nil, errorf(http.StatusForbidden, codeRefused, "%s: this server does not host private images or blobs", ErrRefused)
		}
		days := req.Days
		if days == 0 {
			days = p.MinDays
		}
		if days < p.MinDays || days > p.MaxDays {
			return 0, nil, errorf(http.StatusForbidden, codeRefused, "%s: hosting for %d days; this server hosts for %d to %d days", ErrRefused, days, p.MinDays, p.MaxDays)
		}
		price := p.PricePerMBDay
		if req.Public {
			price = p.PublicPricePerMBDay
		}
		q.Size, q.Days, q.Public = req.Size, days, req.Public
		q.Amount = amount(req.Size, days, price)
		if q.Challenge, err = randomHex(32); err != nil {
			return 0, nil, err
		}
	case KindDownload:
		if req.Size != 0 || req.Days != 0 || req.Public {
			return 0, nil, invalid("a download quote takes only a hash")
		}
		rec, err := s.hosted(hash)
		if err != nil {
			return 0, nil, err
		}
		q.Size, q.Public = rec.Size, rec.Public
		q.Amount = amount(rec.Size, 1, p.DownloadPricePerMB)
	default:
		return 0, nil, invalid("kind must be %q or %q", KindUpload, KindDownload)
	}
	if q.Amount > 0 {
		if q.Address, err = s.nextAddress(); err != nil {
			return 0, nil, err
		}
	} else {
		q.Paid, q.PaidAt = true, now
	}
	if err := s.saveQuote(q); err != nil {
		return 0, nil, err
	}
	s.log.Info("quote", "id", q.ID, "kind", q.Kind, "hash", q.Hash[:16], "size", q.Size, "days", q.Days, "amount", q.Amount)
	return http.StatusCreated, quoteJSONOf(q), nil
}

// nextAddress is a fresh payment address for a quote.
func (s *Server) nextAddress() (string, error) {
	_, a, err := s.payee.next(s.takeIndex)
	return a, err
}

// addressIndexKey holds the next payment address index (big-endian
// uint64, the layout of the badger.Sequence that kept it before).
var addressIndexKey = []byte("s/address")

func readIndex(txn *badger.Txn) (uint64, error) {
	item, err := txn.Get(addressIndexKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", addressIndexKey, err)
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%s: %d bytes, want 8", addressIndexKey, len(v))
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

// takeIndex takes the next payment address index, durably before any
// quote names its address, so no index is ever issued twice.
func (s *Server) takeIndex() (uint64, error) {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	var n uint64
	err := s.update(func(txn *badger.Txn) error {
		var err error
		if n, err = readIndex(txn); err != nil {
			return err
		}
		return txn.Set(addressIndexKey, binary.BigEndian.AppendUint64(nil, n+1))
	})
	if err != nil {
		return 0, err
	}
	s.nextIndex.Store(n + 1)
	return n, nil
}

func (s *Server) handleQuoteStatus(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	if err := validID(id); err != nil {
		return 0, nil, err
	}
	q, err := s.quote(id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, quoteJSONOf(q), nil
}

// quote loads a quote; a missing one has expired (records are kept for
// a while past their validity) or never existed.
func (s *Server) quote(id string) (*quoteRec, error) {
	q, err := s.loadQuote(id)
	if errors.Is(err, errNoRecord) {
		return nil, errorf(http.StatusGone, codeQuoteExpired, "%s (no quote %s)", ErrQuoteExpired, id)
	}
	return q, err
}

func (s *Server) handlePay(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	if err := validID(id); err != nil {
		return 0, nil, err
	}
	var req payRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	if req.TxID != "" {
		if err := validTxID(req.TxID); err != nil {
			return 0, nil, err
		}
	}
	defer s.locks.lock("q/" + id)()
	q, err := s.quote(id)
	if err != nil {
		return 0, nil, err
	}
	if err := s.ensurePaid(r.Context(), q, req.TxID); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, quoteJSONOf(q), nil
}

// ensurePaid checks the chain for the quote's payment unless it is
// known paid. The caller holds the quote's lock.
//
// Only outputs found before the quote expires can pay it: every check
// until then records what it finds (Seen), confirmed or not, and after
// expiry those alone may still count, once they have MinConfirmations
// (a payment made in time may take longer than the quote to confirm). A
// payment first found after expiry never counts (410): the price and
// term were offered only until then. It is not recorded as used either,
// so the operator can see and refund it.
func (s *Server) ensurePaid(ctx context.Context, q *quoteRec, txid string) error {
	if q.Paid {
		return nil
	}
	now := s.now()
	expired := now.After(q.Expires)
	if expired && len(q.Seen) == 0 {
		return expiredUnpaid(q)
	}
	pays, err := payments(ctx, s.cfg.Chain, q.Address, s.cfg.MinConfirmations)
	if err != nil {
		s.log.Warn("checking a payment", "quote", q.ID, "err", err)
		return errorf(http.StatusServiceUnavailable, codeChain, "%s: %v", ErrChain, err)
	}
	s.payMu.Lock()
	defer s.payMu.Unlock()
	var mentioned bool
	var pending int64 // found in time, awaiting confirmations
	err = s.update(func(txn *badger.Txn) error {
		seen := make(map[outpoint]bool, len(q.Seen))
		for _, o := range q.Seen {
			seen[o] = true
		}
		var sum int64
		var mine []outpoint
		pending = 0
		for _, p := range pays {
			var owner string
			switch err := getJSON(txn, p.key(), &owner); {
			case errors.Is(err, errNoRecord):
			case err != nil:
				return err
			case owner != q.ID:
				continue // an output already counted for another quote
			}
			if !seen[p.outpoint] {
				if expired {
					continue // first found after expiry
				}
				seen[p.outpoint] = true
				q.Seen = append(q.Seen, p.outpoint)
			}
			mentioned = mentioned || p.TxID == txid
			if !p.confirmed {
				pending += p.value
				continue
			}
			sum += p.value
			mine = append(mine, p.outpoint)
		}
		q.Received = sum
		if sum >= q.Amount {
			for _, o := range mine {
				if err := setJSON(txn, o.key(), q.ID, 0); err != nil {
					return err
				}
			}
			q.Paid, q.PaidAt, q.Outpoints = true, now, mine
		}
		q.V = recVersion
		return setJSON(txn, quoteKey(q.ID), q, s.quoteKeep())
	})
	if err != nil {
		return err
	}
	if !q.Paid && expired && q.Received+pending < q.Amount {
		return expiredUnpaid(q)
	}
	if txid != "" && !mentioned {
		return invalid("transaction %s does not pay this quote's address %s (or was first seen after the quote expired)", txid, q.Address)
	}
	if !q.Paid {
		msg := fmt.Sprintf("%s: quote %s asks %d sat at %s; %d sat received (with %d confirmations)", ErrUnpaid, q.ID, q.Amount, q.Address, q.Received, s.cfg.MinConfirmations)
		if pending > 0 {
			msg += fmt.Sprintf(", %d sat more awaiting confirmations", pending)
		}
		return &apiError{status: http.StatusPaymentRequired, code: codeUnpaid, amount: q.Amount, received: q.Received, msg: msg}
	}
	s.log.Info("quote paid", "id", q.ID, "amount", q.Amount, "received", q.Received)
	return nil
}

func expiredUnpaid(q *quoteRec) *apiError {
	return errorf(http.StatusGone, codeQuoteExpired, "%s: quote %s expired unpaid at %s (a payment first seen after that does not count; ask the operator to refund it)",
		ErrQuoteExpired, q.ID, q.Expires.UTC().Format(time.RFC3339))
}

// stale reports whether a paid upload quote can no longer be used: it
// serves for QuoteTTL after it expired or was paid, whichever is later.
func (s *Server) stale(q *quoteRec, now time.Time) bool {
	t := q.Expires
	if q.PaidAt.After(t) {
		t = q.PaidAt
	}
	return now.After(t.Add(s.cfg.QuoteTTL))
}

// hosted loads an image that is hosted now (an image whose holds have all
// ended is not, even before the sweeper removes it).
func (s *Server) hosted(hash [32]byte) (*imageRec, error) {
	rec, err := s.loadImage(hash)
	if errors.Is(err, errNoRecord) {
		return nil, notFound(hash)
	}
	if err != nil {
		return nil, err
	}
	if !rec.until().After(s.now()) {
		return nil, notFound(hash)
	}
	return rec, nil
}

// ownerHeaders reads the optional owner registration of an upload.
func ownerHeaders(r *http.Request) (pub, sig []byte, err error) {
	ph, sh := r.Header.Get(HeaderOwner), r.Header.Get(HeaderSignature)
	if ph == "" && sh == "" {
		return nil, nil, nil
	}
	if pub, err = parseHex(ph, HeaderOwner, 33); err != nil {
		return nil, nil, err
	}
	if sig, err = parseHex(sh, HeaderSignature, maxSigLen); err != nil {
		return nil, nil, err
	}
	return pub, sig, nil
}

// deadline sets the request's I/O deadlines for moving n bytes.
func (s *Server) deadline(w http.ResponseWriter, n int64) {
	d := 30*time.Second + time.Duration(n/s.cfg.MinTransferRate)*time.Second
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(d))
	_ = rc.SetWriteDeadline(time.Now().Add(d))
}

func (s *Server) acquireUpload() (func(), error) {
	select {
	case s.uploads <- struct{}{}:
		return func() { <-s.uploads }, nil
	default:
		return nil, &apiError{status: http.StatusServiceUnavailable, code: codeBusy, msg: ErrBusy.Error(), retryAfter: 5 * time.Second}
	}
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) (int, any, error) {
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	qid := r.Header.Get(HeaderQuote)
	if err := validID(qid); err != nil {
		return 0, nil, invalid("%s header: a paid upload quote id is required", HeaderQuote)
	}
	pub, sig, err := ownerHeaders(r)
	if err != nil {
		return 0, nil, err
	}
	if r.ContentLength < 0 {
		return 0, nil, errorf(http.StatusLengthRequired, codeInvalidRequest, "invalid request: Content-Length is required")
	}
	defer s.locks.lock("q/" + qid)()
	q, err := s.quote(qid)
	if err != nil {
		return 0, nil, err
	}
	switch {
	case q.Kind != KindUpload:
		return 0, nil, invalid("quote %s is not an upload quote", qid)
	case q.Hash != hex.EncodeToString(hash[:]):
		return 0, nil, invalid("quote %s is for %s, not this hash", qid, q.Hash)
	case r.ContentLength != q.Size:
		if r.ContentLength > s.cfg.Policy.MaxSize {
			return 0, nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: %d bytes exceed this server's limit of %d", ErrTooLarge, r.ContentLength, s.cfg.Policy.MaxSize)
		}
		return 0, nil, invalid("quote %s is for %d bytes, the body has %d", qid, q.Size, r.ContentLength)
	case q.Used:
		return 0, nil, errorf(http.StatusConflict, codePaymentUsed, "%s: quote %s already paid for an upload", ErrPaymentUsed, qid)
	}
	if err := s.ensurePaid(r.Context(), q, ""); err != nil {
		return 0, nil, err
	}
	now := s.now()
	if s.stale(q, now) {
		return 0, nil, errorf(http.StatusGone, codeQuoteExpired, "%s: quote %s was paid but not used in time", ErrQuoteExpired, qid)
	}
	if pub != nil {
		ch, _ := parseHash(q.Challenge, "challenge")
		if err := verify(pub, sig, ActionOwn, ch, hash, [32]byte{}); err != nil {
			return 0, nil, errorf(http.StatusForbidden, codeBadSignature, "%s (owner registration: %v)", ErrBadSignature, err)
		}
	}
	release, err := s.acquireUpload()
	if err != nil {
		return 0, nil, err
	}
	defer release()
	defer s.locks.lock("i/" + q.Hash)()
	// Content already here is not sent again (blob.Dir keeps its copy and
	// reads nothing): the paid quote checked above, exactly as for new
	// content, is what buys the hold; its visibility is checked against
	// the record below, so a public quote cannot buy a private hold.
	rec, err := s.loadImage(hash)
	if errors.Is(err, errNoRecord) {
		rec, err = nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	if rec != nil && rec.holdFull(pub, now) {
		return 0, nil, tooManyHolders(hash)
	}
	s.deadline(w, q.Size)
	kind, public, err := s.store(r.Context(), hash, http.MaxBytesReader(w, r.Body, q.Size), q.Size, rec)
	if err != nil {
		return 0, nil, err
	}
	if public != q.Public {
		s.dropIfUnhosted(r.Context(), hash)
		return 0, nil, errorf(http.StatusUnprocessableEntity, codeInvalidContent, "%s: the quote was for a %s upload, the content is %s", ErrInvalidContent, visibility(q.Public), visibility(public))
	}
	if rec == nil {
		rec = &imageRec{Hash: q.Hash, Size: q.Size, Content: kind, Public: public, Created: now}
	}
	if err := rec.addHold(hold{Owner: pub, Until: now.Add(time.Duration(q.Days) * 24 * time.Hour), Quote: q.ID, Size: q.Size}, now); err != nil {
		s.dropIfUnhosted(r.Context(), hash)
		return 0, nil, tooManyHolders(hash)
	}
	if err := s.saveHold(hash, rec, q); err != nil {
		return 0, nil, err
	}
	s.log.Info("uploaded", "hash", q.Hash[:16], "size", q.Size, "content", kind, "public", public, "owner", pub != nil, "quote", q.ID)
	return http.StatusCreated, s.hostedJSON(rec), nil
}

// saveHold stores rec with the hold q paid for, and q as used, in one
// transaction: a quote buys exactly one hold.
func (s *Server) saveHold(hash [32]byte, rec *imageRec, q *quoteRec) error {
	q.Used = true
	return s.update(func(txn *badger.Txn) error {
		rec.V, q.V = recVersion, recVersion
		if err := setJSON(txn, imageKey(hash), rec, 0); err != nil {
			return err
		}
		return setJSON(txn, quoteKey(q.ID), q, s.quoteKeep())
	})
}

func visibility(public bool) string {
	if public {
		return "public"
	}
	return "private"
}

func (s *Server) hostedJSON(rec *imageRec) hostedJSON {
	return hostedJSON{Hash: rec.Hash, Size: rec.Size, Content: rec.Content, Public: rec.Public, HostedUntil: rec.until().UTC(),
		Owners: rec.owners(), Parent: rec.Parent, DownloadPrice: amount(rec.Size, 1, s.cfg.Policy.DownloadPricePerMB)}
}

// store writes content into the blob directory — visible there only once
// its hash is verified — and checks it is an image or blob the policy
// accepts. On failure nothing new stays stored. The caller holds the
// image's lock. known is the content's record if it has one: then the
// content was inspected when it first came and is what the record says
// (same hash, same bytes), and is not inspected again — a hold bought on
// a large public image does not make the server verify it all again.
func (s *Server) store(ctx context.Context, hash [32]byte, body io.Reader, size int64, known *imageRec) (string, bool, error) {
	if err := s.blobs.Put(ctx, hash, body, size); err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.Is(err, blob.ErrHashMismatch):
			return "", false, errorf(http.StatusUnprocessableEntity, codeHashMismatch, "%s: %v", ErrHashMismatch, err)
		case errors.As(err, &tooLarge):
			return "", false, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: body longer than declared", ErrTooLarge)
		case ctx.Err() != nil:
			return "", false, invalid("upload interrupted: %v", ctx.Err())
		}
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", false, invalid("upload interrupted: %v", err)
		}
		return "", false, err
	}
	if known != nil && known.Size == size {
		return known.Content, known.Public, nil
	}
	kind, public, err := s.inspect(ctx, hash, size)
	if err != nil {
		s.dropIfUnhosted(ctx, hash)
		return "", false, err
	}
	return kind, public, nil
}

// dropIfUnhosted deletes content that no image record covers.
func (s *Server) dropIfUnhosted(ctx context.Context, hash [32]byte) {
	if _, err := s.loadImage(hash); errors.Is(err, errNoRecord) {
		if err := s.blobs.Delete(ctx, hash); err != nil {
			s.log.Error("deleting refused content", "hash", hex.EncodeToString(hash[:8]), "err", err)
		}
	}
}

// inspect tells what stored content is: an encrypted blob (private), or
// an image whose trailer says public or private. A public image is
// verified through and through (its records and every chunk hash); a
// private one cannot be read without keys, so only its framing is.
func (s *Server) inspect(ctx context.Context, hash [32]byte, size int64) (string, bool, error) {
	bad := func(format string, args ...any) (string, bool, error) {
		return "", false, errorf(http.StatusUnprocessableEntity, codeInvalidContent, "%s: "+format, append([]any{ErrInvalidContent}, args...)...)
	}
	if size < blob.HeaderSize {
		return bad("%d bytes", size)
	}
	hdr, err := s.blobs.GetRange(ctx, hash, 0, blob.HeaderSize)
	if err != nil {
		return "", false, err
	}
	switch string(hdr) {
	case "IGB\x01":
		n := (size - blob.HeaderSize + blob.ChunkSize + blob.TagSize - 1) / (blob.ChunkSize + blob.TagSize)
		if plain := size - blob.HeaderSize - blob.TagSize*n; n < 1 || blob.EncryptedSize(plain) != size {
			return bad("a blob cannot be %d bytes long", size)
		}
		if s.cfg.Policy.RefusePrivate {
			return bad("this server does not host private content")
		}
		return ContentBlob, false, nil
	case "IGI\x01":
		ra := &storeReaderAt{ctx: ctx, s: s.blobs, hash: hash}
		ref, err := image.Inspect(ctx, ra, size)
		if err != nil {
			return bad("%v", err)
		}
		if ref.Public {
			ref.Hash = hash
			im, err := image.Open(ctx, s.blobs, ref, image.Options{})
			if err == nil {
				err = im.Verify(ctx)
			}
			if err != nil {
				return bad("%v", err)
			}
		}
		return ContentImage, ref.Public, nil
	}
	return bad("header %x is neither an image's nor a blob's", hdr)
}

// storeReaderAt reads a stored blob as an io.ReaderAt.
type storeReaderAt struct {
	ctx  context.Context
	s    blob.Store
	hash [32]byte
}

func (r *storeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	b, err := r.s.GetRange(r.ctx, r.hash, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(p, b), nil
}

// downloadChunk is how much of a range is read into memory at a time.
const downloadChunk = 1 << 20

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) (int, any, error) {
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	rec, err := s.hosted(hash)
	if err != nil {
		return 0, nil, err
	}
	off, n, ranged, err := parseRange(r.Header.Get("Range"), rec.Size)
	if err != nil {
		return 0, nil, err
	}
	head := r.Method == http.MethodHead
	if price := amount(rec.Size, 1, s.cfg.Policy.DownloadPricePerMB); price > 0 && !head {
		if err := s.chargeTicket(r, hash, rec, n); err != nil {
			return 0, nil, err
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", `"`+rec.Hash+`"`)
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if ranged {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, rec.Size))
		status = http.StatusPartialContent
	}
	if head {
		w.WriteHeader(status)
		return 0, nil, nil
	}
	s.deadline(w, n)
	ctx := r.Context()
	if !ranged {
		rc, err := s.blobs.Get(ctx, hash)
		if err != nil {
			return 0, nil, err
		}
		defer rc.Close()
		w.WriteHeader(status)
		// The reader re-hashes as it goes; a corrupt stored copy fails at
		// the end, which aborts the response (the client's own check
		// catches it too).
		if _, err := io.Copy(w, rc); err != nil {
			s.log.Warn("download aborted", "hash", rec.Hash[:16], "err", err)
		}
		return 0, nil, nil
	}
	first := true
	for done := int64(0); done < n; {
		k := min(downloadChunk, n-done)
		b, err := s.blobs.GetRange(ctx, hash, off+done, k)
		if err != nil {
			if first {
				return 0, nil, err
			}
			s.log.Warn("ranged download aborted", "hash", rec.Hash[:16], "err", err)
			return 0, nil, nil
		}
		if first {
			w.WriteHeader(status)
			first = false
		}
		if _, err := w.Write(b); err != nil {
			return 0, nil, nil
		}
		done += k
	}
	return 0, nil, nil
}

// chargeTicket checks a paid download ticket (a paid download quote) and
// counts n bytes against it.
func (s *Server) chargeTicket(r *http.Request, hash [32]byte, rec *imageRec, n int64) error {
	id := r.URL.Query().Get("quote")
	if id == "" {
		id = r.Header.Get(HeaderQuote)
	}
	price := amount(rec.Size, 1, s.cfg.Policy.DownloadPricePerMB)
	if id == "" {
		return &apiError{status: http.StatusPaymentRequired, code: codeUnpaid, amount: price,
			msg: fmt.Sprintf("%s: downloads from this server cost %d sat for this image; ask for a download quote", ErrUnpaid, price)}
	}
	if err := validID(id); err != nil {
		return err
	}
	defer s.locks.lock("q/" + id)()
	q, err := s.quote(id)
	if err != nil {
		return err
	}
	if q.Kind != KindDownload || q.Hash != rec.Hash {
		return invalid("quote %s is not a download quote for this image", id)
	}
	if err := s.ensurePaid(r.Context(), q, ""); err != nil {
		return err
	}
	if s.now().After(q.PaidAt.Add(s.cfg.TicketTTL)) || q.Served+n > 2*rec.Size {
		return &apiError{status: http.StatusPaymentRequired, code: codeUnpaid, amount: price,
			msg: fmt.Sprintf("%s: download quote %s is used up (it serves %d bytes within %s of payment)", ErrUnpaid, id, 2*rec.Size, s.cfg.TicketTTL)}
	}
	q.Served += n
	return s.saveQuote(q)
}

func (s *Server) handleImageInfo(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	rec, err := s.hosted(hash)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.hostedJSON(rec), nil
}

func (s *Server) handleChallenge(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var req challengeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	hash, err := parseHash(req.Hash, "hash")
	if err != nil {
		return 0, nil, err
	}
	switch req.Action {
	case ActionPatch, ActionRelease, ActionForward:
	default:
		return 0, nil, invalid("action must be %q, %q or %q", ActionPatch, ActionRelease, ActionForward)
	}
	if _, err := s.hosted(hash); err != nil {
		return 0, nil, err
	}
	var nonce [32]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return 0, nil, err
	}
	exp := s.now().Add(s.cfg.ChallengeTTL)
	err = s.update(func(txn *badger.Txn) error {
		return setJSON(txn, challengeKey(nonce), challengeRec{V: recVersion, Hash: req.Hash, Action: req.Action, Expires: exp}, s.cfg.ChallengeTTL)
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, challengeResponse{Nonce: hex.EncodeToString(nonce[:]), ExpiresAt: exp.UTC()}, nil
}

// checkSigned consumes a challenge and verifies the owner's signature
// of (action, nonce, hash, arg). A challenge is single-use whatever the
// outcome, so a signature cannot be tried twice against it.
func (s *Server) checkSigned(nonceHex, pubHex, sigHex, action string, hash, arg [32]byte) ([]byte, error) {
	nonce, err := parseHash(nonceHex, "nonce")
	if err != nil {
		return nil, err
	}
	pub, err := parseHex(pubHex, "public key", 33)
	if err != nil {
		return nil, err
	}
	sig, err := parseHex(sigHex, "signature", maxSigLen)
	if err != nil {
		return nil, err
	}
	var ch challengeRec
	err = s.update(func(txn *badger.Txn) error {
		if err := getJSON(txn, challengeKey(nonce), &ch); err != nil {
			return err
		}
		return txn.Delete(challengeKey(nonce))
	})
	if errors.Is(err, errNoRecord) {
		return nil, errorf(http.StatusForbidden, codeBadSignature, "%s (the challenge is unknown or was used)", ErrBadSignature)
	}
	if err != nil {
		return nil, err
	}
	if ch.Hash != hex.EncodeToString(hash[:]) || ch.Action != action || s.now().After(ch.Expires) {
		return nil, errorf(http.StatusForbidden, codeBadSignature, "%s (the challenge was issued for another image or action, or expired)", ErrBadSignature)
	}
	if err := verify(pub, sig, action, nonce, hash, arg); err != nil {
		return nil, errorf(http.StatusForbidden, codeBadSignature, "%s (%v)", ErrBadSignature, err)
	}
	return pub, nil
}

func (s *Server) handlePatch(w http.ResponseWriter, r *http.Request) (int, any, error) {
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	newHash, err := parseHash(r.Header.Get(HeaderNewHash), HeaderNewHash)
	if err != nil {
		return 0, nil, err
	}
	qid := r.Header.Get(HeaderQuote)
	if qid != "" {
		if err := validID(qid); err != nil {
			return 0, nil, err
		}
	}
	if r.ContentLength > s.cfg.MaxDelta {
		return 0, nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: a delta of %d bytes exceeds %d", ErrTooLarge, r.ContentLength, s.cfg.MaxDelta)
	}
	// Who asks is checked from the headers alone, before the delta is
	// read: a stranger cannot make the server buffer anything.
	pub, err := s.checkSigned(r.Header.Get(HeaderNonce), r.Header.Get(HeaderOwner), r.Header.Get(HeaderSignature), ActionPatch, hash, newHash)
	if err != nil {
		return 0, nil, err
	}
	now := s.now()
	base, err := s.hosted(hash)
	if err != nil {
		return 0, nil, err
	}
	held, ok := base.ownerHold(pub, now)
	if !ok {
		return 0, nil, errorf(http.StatusForbidden, codeNotOwner, "%s: %x is not an owner of %x here", ErrNotOwner, pub, hash[:8])
	}
	if newHash == hash {
		// Nothing changes (and moving the hold onto itself would cut it).
		return http.StatusOK, s.hostedJSON(base), nil
	}
	if base.Size > s.cfg.MaxPatchBase {
		return 0, nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: this server patches images up to %d bytes; upload the new version", ErrTooLarge, s.cfg.MaxPatchBase)
	}
	release, err := s.acquireUpload()
	if err != nil {
		return 0, nil, err
	}
	defer release()
	s.deadline(w, r.ContentLength)
	d, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxDelta))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return 0, nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: the delta exceeds %d bytes", ErrTooLarge, s.cfg.MaxDelta)
		}
		return 0, nil, invalid("reading the delta: %v", err)
	}
	outLen, err := delta.OutputSize(d)
	if err != nil {
		return 0, nil, invalid("not a delta: %v", err)
	}
	if outLen > s.cfg.Policy.MaxSize {
		return 0, nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%s: the patched image would be %d bytes, the limit is %d", ErrTooLarge, outLen, s.cfg.Policy.MaxSize)
	}
	// A patch with a quote is paid: the new version is hosted for the
	// quote's term and the base keeps its holds. Without one it is free
	// and moves the owner's hold (below) — allowed unless, on a server
	// that charges for hosting it, the new version exceeds the size the
	// hold was paid for by more than the slack.
	var q *quoteRec
	price := s.cfg.Policy.PricePerMBDay
	if base.Public {
		price = s.cfg.Policy.PublicPricePerMBDay
	}
	if qid == "" {
		if err := s.freePatchFits(held, outLen, price); err != nil {
			return 0, nil, err
		}
	} else {
		defer s.locks.lock("q/" + qid)()
		if q, err = s.quote(qid); err != nil {
			return 0, nil, err
		}
		if err := s.checkHoldQuote(r.Context(), q, newHash, outLen, base.Public, price, now, "the patched image"); err != nil {
			return 0, nil, err
		}
	}
	rc, err := s.blobs.Get(r.Context(), hash)
	if err != nil {
		return 0, nil, err
	}
	old, err := io.ReadAll(io.LimitReader(rc, base.Size+1))
	rc.Close()
	if err != nil {
		return 0, nil, fmt.Errorf("reading %x for a patch: %w", hash[:8], err)
	}
	out, err := delta.Apply(old, d, s.cfg.Policy.MaxSize)
	old = nil
	if err != nil {
		return 0, nil, errorf(http.StatusUnprocessableEntity, codeInvalidRequest, "%s: the delta does not apply to %x: %v", ErrInvalidRequest, hash[:8], err)
	}
	if sum := sha256.Sum256(out); sum != newHash {
		return 0, nil, errorf(http.StatusConflict, codeHashMismatch, "%s: the patched image hashes to %x, not %x", ErrHashMismatch, sum, newHash)
	}
	// Both records change together: lock both (in a fixed order), and
	// take the owner's hold on the base afresh — a concurrent patch of
	// the same base may have moved it meanwhile.
	defer s.lockImages(hash, newHash)()
	if base, err = s.hosted(hash); err != nil {
		return 0, nil, err
	}
	if held, ok = base.ownerHold(pub, now); !ok {
		return 0, nil, errorf(http.StatusForbidden, codeNotOwner, "%s: %x is not an owner of %x here", ErrNotOwner, pub, hash[:8])
	}
	if q == nil {
		if err := s.freePatchFits(held, outLen, price); err != nil {
			return 0, nil, err
		}
	}
	rec, err := s.loadImage(newHash)
	if errors.Is(err, errNoRecord) {
		rec, err = nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	if rec != nil && rec.holdFull(pub, now) {
		return 0, nil, tooManyHolders(newHash)
	}
	newHex := hex.EncodeToString(newHash[:])
	kind, public, err := s.storeBytes(r.Context(), newHash, out, rec)
	if err != nil {
		return 0, nil, err
	}
	if kind != base.Content || public != base.Public {
		s.dropIfUnhosted(r.Context(), newHash)
		return 0, nil, errorf(http.StatusUnprocessableEntity, codeInvalidContent, "%s: the patch turns a %s %s into a %s %s", ErrInvalidContent, visibility(base.Public), base.Content, visibility(public), kind)
	}
	if rec == nil {
		rec = &imageRec{Hash: newHex, Size: int64(len(out)), Content: kind, Public: public, Created: now, Parent: base.Hash}
	}
	h := hold{Owner: pub, Until: held.Until, Size: held.Size}
	if q != nil {
		h = hold{Owner: pub, Until: now.Add(time.Duration(q.Days) * 24 * time.Hour), Quote: q.ID, Size: q.Size}
		q.Used = true
	}
	if err := rec.addHold(h, now); err != nil {
		s.dropIfUnhosted(r.Context(), newHash)
		return 0, nil, tooManyHolders(newHash)
	}
	if q == nil {
		base.cutHolds(pub, now.Add(s.cfg.PatchGrace))
	}
	err = s.update(func(txn *badger.Txn) error {
		rec.V, base.V = recVersion, recVersion
		if err := setJSON(txn, imageKey(newHash), rec, 0); err != nil {
			return err
		}
		if q != nil {
			q.V = recVersion
			return setJSON(txn, quoteKey(q.ID), q, s.quoteKeep())
		}
		return setJSON(txn, imageKey(hash), base, 0)
	})
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("patched", "base", base.Hash[:16], "new", newHex[:16], "delta", len(d), "size", len(out), "paid", q != nil)
	return http.StatusOK, s.hostedJSON(rec), nil
}

// freePatchFits checks that a patch without a quote may produce size
// bytes under held: anything goes where hosting is free, else at most
// the size held was paid for plus PatchSlack.
func (s *Server) freePatchFits(held hold, size, price int64) error {
	if price <= 0 || size <= held.Size+s.cfg.PatchSlack {
		return nil
	}
	return &apiError{status: http.StatusPaymentRequired, code: codeUnpaid, amount: amount(size, s.cfg.Policy.MinDays, price),
		msg: fmt.Sprintf("%s: the patched image would be %d bytes; the hold was paid for %d (and %d more are free): pay an upload quote for the new hash and size and send it in %s",
			ErrUnpaid, size, held.Size, s.cfg.PatchSlack, HeaderQuote)}
}

// checkHoldQuote checks the quote that buys a hold on content (what
// describes it, e.g. "the patched image"): an unused upload quote for
// its hash and size, of its visibility (so private content is not held
// at the public price), priced at what the policy charges for that size
// and term, paid (the chain is checked if need be) and not stale. Patches
// and extensions use it. The caller holds the quote's lock.
func (s *Server) checkHoldQuote(ctx context.Context, q *quoteRec, hash [32]byte, size int64, public bool, price int64, now time.Time, what string) error {
	switch {
	case q.Kind != KindUpload || q.Hash != hex.EncodeToString(hash[:]) || q.Size != size:
		return invalid("quote %s is not an upload quote for %x and %d bytes", q.ID, hash[:8], size)
	case q.Public != public:
		return invalid("quote %s is for hosting a %s image; %s is %s", q.ID, visibility(q.Public), what, visibility(public))
	case q.Used:
		return errorf(http.StatusConflict, codePaymentUsed, "%s: quote %s already paid for an upload", ErrPaymentUsed, q.ID)
	}
	if want := amount(size, q.Days, price); q.Amount < want {
		return &apiError{status: http.StatusPaymentRequired, code: codeUnpaid, amount: want,
			msg: fmt.Sprintf("%s: quote %s asks %d sat; hosting %d %s bytes for %d days costs %d here now: ask for a new quote", ErrUnpaid, q.ID, q.Amount, size, visibility(public), q.Days, want)}
	}
	if err := s.ensurePaid(ctx, q, ""); err != nil {
		return err
	}
	if s.stale(q, now) {
		return errorf(http.StatusGone, codeQuoteExpired, "%s: quote %s was paid but not used in time", ErrQuoteExpired, q.ID)
	}
	return nil
}

// handleExtend extends the hosting of content the server holds, without
// its bytes, on a paid upload quote for its hash and exact size (the
// paper's paid "length of time", renewed; and its crowdfunding: anyone
// who pays may extend). With public_key naming a key that holds the
// content, that owner's hold is extended from its end; otherwise the
// anonymous hold is, from the content's hosting end, so a contribution
// always buys days beyond what is already paid for. No signature is
// needed — paying for someone's hold takes nothing from them — and no
// ownership is granted: only a key registered at upload patches and
// releases.
func (s *Server) handleExtend(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	var req extendRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	if err := validID(req.Quote); err != nil {
		return 0, nil, err
	}
	var pub []byte
	if req.PublicKey != "" {
		if pub, err = parseHex(req.PublicKey, "public key", 33); err != nil {
			return 0, nil, err
		}
	}
	defer s.locks.lock("q/" + req.Quote)()
	q, err := s.quote(req.Quote)
	if err != nil {
		return 0, nil, err
	}
	// The quote is checked (the chain asked, if need be) before the
	// image's lock is taken: a hash names fixed bytes, so the size and
	// visibility checked here cannot change under it.
	rec, err := s.hosted(hash)
	if err != nil {
		return 0, nil, err
	}
	price := s.cfg.Policy.PricePerMBDay
	if rec.Public {
		price = s.cfg.Policy.PublicPricePerMBDay
	}
	if err := s.checkHoldQuote(r.Context(), q, hash, rec.Size, rec.Public, price, s.now(), "the hosted content"); err != nil {
		return 0, nil, err
	}
	defer s.locks.lock("i/" + q.Hash)()
	// Afresh under the lock: a release or the sweeper may have ended it.
	if rec, err = s.hosted(hash); err != nil {
		return 0, nil, err
	}
	now := s.now()
	h := hold{Quote: q.ID, Size: q.Size}
	from := rec.until()
	if held, ok := rec.ownerHold(pub, now); pub != nil && ok {
		// Never less than the owner paid for: a stranger's extension must
		// not shrink what its free patches may grow to.
		h.Owner, h.Size, from = pub, max(held.Size, q.Size), held.Until
	}
	h.Until = from.Add(time.Duration(q.Days) * 24 * time.Hour)
	if limit := now.Add(time.Duration(s.cfg.Policy.MaxDays) * 24 * time.Hour); h.Until.After(limit) {
		return 0, nil, errorf(http.StatusForbidden, codeRefused, "%s: the hold would end on %s, more than %d days ahead (this server's longest term): extend later or for fewer days",
			ErrRefused, h.Until.UTC().Format(time.DateOnly), s.cfg.Policy.MaxDays)
	}
	if err := rec.addHold(h, now); err != nil {
		return 0, nil, tooManyHolders(hash)
	}
	if err := s.saveHold(hash, rec, q); err != nil {
		return 0, nil, err
	}
	s.log.Info("extended", "hash", rec.Hash[:16], "owner", h.Owner != nil, "until", h.Until.UTC(), "days", q.Days, "quote", q.ID)
	return http.StatusOK, extendResponse{hostedJSON: s.hostedJSON(rec), HoldUntil: h.Until.UTC(), OwnerHold: h.Owner != nil}, nil
}

// storeBytes is store for content in memory.
func (s *Server) storeBytes(ctx context.Context, hash [32]byte, b []byte, known *imageRec) (string, bool, error) {
	return s.store(ctx, hash, bytes.NewReader(b), int64(len(b)), known)
}

func (s *Server) handleRelease(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	var req releaseRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	pub, err := s.checkSigned(req.Nonce, req.PublicKey, req.Signature, ActionRelease, hash, [32]byte{})
	if err != nil {
		return 0, nil, err
	}
	defer s.locks.lock("i/" + hex.EncodeToString(hash[:]))()
	rec, err := s.loadImage(hash)
	if errors.Is(err, errNoRecord) {
		return 0, nil, notFound(hash)
	}
	if err != nil {
		return 0, nil, err
	}
	keep := rec.Holds[:0]
	for _, h := range rec.Holds {
		if string(h.Owner) != string(pub) {
			keep = append(keep, h)
		}
	}
	if len(keep) == len(rec.Holds) {
		return 0, nil, errorf(http.StatusForbidden, codeNotOwner, "%s: %x holds nothing on %x", ErrNotOwner, pub, hash[:8])
	}
	rec.Holds = keep
	if len(keep) == 0 || !rec.until().After(s.now()) {
		if err := s.remove(r.Context(), hash); err != nil {
			return 0, nil, err
		}
		s.log.Info("released and deleted", "hash", rec.Hash[:16])
		return http.StatusOK, releaseResponse{Deleted: true}, nil
	}
	if err := s.saveImage(hash, rec); err != nil {
		return 0, nil, err
	}
	s.log.Info("released", "hash", rec.Hash[:16], "holds_left", len(keep))
	return http.StatusOK, releaseResponse{HostedUntil: rec.until().UTC()}, nil
}

// remove deletes an image's record, then its content.
func (s *Server) remove(ctx context.Context, hash [32]byte) error {
	if err := s.update(func(txn *badger.Txn) error { return txn.Delete(imageKey(hash)) }); err != nil {
		return err
	}
	return s.blobs.Delete(ctx, hash)
}

func (s *Server) handleForward(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	if !s.cfg.Forward {
		return 0, nil, errorf(http.StatusNotImplemented, codeNoForward, "%s", ErrNoForward)
	}
	hash, err := parseHash(r.PathValue("hash"), "hash")
	if err != nil {
		return 0, nil, err
	}
	var req forwardRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	if err := validID(req.Quote); err != nil {
		return 0, nil, err
	}
	if err := image.ValidServerURL(req.To); err != nil {
		return 0, nil, invalid("target: %v", err)
	}
	var tpub, tsig []byte
	if req.TargetPublicKey != "" || req.TargetSignature != "" {
		if tpub, err = parseHex(req.TargetPublicKey, "target public key", 33); err != nil {
			return 0, nil, err
		}
		if tsig, err = parseHex(req.TargetSignature, "target signature", maxSigLen); err != nil {
			return 0, nil, err
		}
	}
	pub, err := s.checkSigned(req.Nonce, req.PublicKey, req.Signature, ActionForward, hash, forwardArg(req.To, req.Quote))
	if err != nil {
		return 0, nil, err
	}
	rec, err := s.hosted(hash)
	if err != nil {
		return 0, nil, err
	}
	if rec.ownerUntil(pub, s.now()).IsZero() {
		return 0, nil, errorf(http.StatusForbidden, codeNotOwner, "%s: %x is not an owner of %x here", ErrNotOwner, pub, hash[:8])
	}
	c, err := NewClient(req.To, s.cfg.ForwardClient)
	if err != nil {
		return 0, nil, invalid("target: %v", err)
	}
	release, err := s.acquireUpload()
	if err != nil {
		return 0, nil, err
	}
	defer release()
	rc, err := s.blobs.Get(r.Context(), hash)
	if err != nil {
		return 0, nil, err
	}
	defer rc.Close()
	got, err := c.Upload(r.Context(), UploadRequest{Quote: Quote{ID: req.Quote, Hash: hash, Size: rec.Size}, Body: rc, OwnerKey: tpub, OwnerSignature: tsig})
	if err != nil {
		s.log.Warn("forward failed", "hash", rec.Hash[:16], "to", req.To, "err", err)
		return 0, nil, errorf(http.StatusBadGateway, codeForwardFailed, "%s: %v", ErrForwardFailed, err)
	}
	s.log.Info("forwarded", "hash", rec.Hash[:16], "to", req.To)
	return http.StatusOK, forwardResponse{Hash: rec.Hash, To: req.To, At: hostedJSONOf(got)}, nil
}

// Sweep drops ended holds and deletes the images nobody holds any more;
// it returns how many were deleted. The server runs it every
// SweepInterval.
func (s *Server) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	var hashes [][32]byte
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("i/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h [32]byte
			if _, err := hex.Decode(h[:], it.Item().Key()[2:]); err == nil {
				hashes = append(hashes, h)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		unlock := s.locks.lock("i/" + hex.EncodeToString(h[:]))
		rec, err := s.loadImage(h)
		if err == nil {
			keep := rec.Holds[:0]
			for _, x := range rec.Holds {
				if x.Until.After(now) {
					keep = append(keep, x)
				}
			}
			switch {
			case len(keep) == 0:
				if err = s.remove(ctx, h); err == nil {
					deleted++
					s.log.Info("hosting ended; deleted", "hash", rec.Hash[:16])
				}
			case len(keep) != len(rec.Holds):
				rec.Holds = keep
				err = s.saveImage(h, rec)
			}
		}
		unlock()
		if err != nil && !errors.Is(err, errNoRecord) {
			return deleted, err
		}
	}
	return deleted, nil
}

func (s *Server) sweeper() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.SweepInterval)
			if n, err := s.Sweep(ctx); err != nil {
				s.log.Error("sweep", "err", err)
			} else if n > 0 {
				s.log.Info("sweep", "deleted", n)
			}
			cancel()
		}
	}
}

// forwardClient is an HTTP client that refuses to connect to loopback,
// private, link-local and other non-public addresses unless allowLocal —
// checked on the address actually dialled, so a name that resolves to
// one is refused too.
func forwardClient(allowLocal bool) *http.Client {
	d := &net.Dialer{Timeout: 30 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip := net.ParseIP(host)
		if ip == nil {
			return fmt.Errorf("forward: %q is not an IP address", host)
		}
		if !allowLocal && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
			ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast()) {
			return fmt.Errorf("forward: refusing to connect to non-public address %s", ip)
		}
		return nil
	}}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = d.DialContext
	t.ResponseHeaderTimeout = 10 * time.Minute
	return &http.Client{Transport: t}
}
