package secretserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Faucet pays a small amount to a new user's address (paper, Initial
// Bootstrap Process step 6). The agent wires the chain wallet in; this
// package knows nothing of chains.
//
// Contract: Fund returns an error only when nothing was sent, so the
// server may let the user retry; if it cannot tell (a timeout after
// broadcast), it must return the txid or block until it knows. A crash
// while Fund runs leaves the user marked as paid, never paid twice.
type Faucet interface {
	Fund(ctx context.Context, address string) (txid string, err error)
}

// LockoutPolicy says how wrong codes are punished. After MaxFailures wrong
// codes in a row the user is locked out for BaseDuration, doubling with
// each further lockout up to MaxDuration; any code is refused while locked
// out, the right one too. A correct code resets both counters.
type LockoutPolicy struct {
	MaxFailures  int           // default 5
	BaseDuration time.Duration // default 15 minutes
	MaxDuration  time.Duration // default 24 hours
}

// Config configures a Server. Only DataDir is required.
type Config struct {
	// DataDir holds the Badger database (created 0700).
	DataDir string
	// KeyFile holds the 32-byte server key from which every storage key is
	// derived. Created 0600 on first start if missing; refused if readable
	// by group or others. Default: DataDir/server.key — keep it elsewhere
	// (and backed up) so that a copy of the data directory alone is useless.
	KeyFile string
	// Sender delivers one-time codes. Nil: MethodCode is not offered.
	Sender Sender
	// Faucet, if set, pays each enrolled user's address once.
	Faucet Faucet
	// FaucetTimeout bounds one Fund call. Default 60 s.
	FaucetTimeout time.Duration
	// SendTimeout bounds one Sender call. Default 30 s.
	SendTimeout time.Duration
	// Issuer labels TOTP enrolments in authenticator apps. Default "integrity".
	Issuer string
	// CodeDigits is the length of sent codes, 6 to 8. Default 6.
	CodeDigits int
	// CodeTTL is how long a sent code stays valid. Default 10 minutes.
	CodeTTL time.Duration
	// CodeResendInterval is the least time between two codes sent to one
	// user (a guard against using the server to spam a phone). Default 30 s.
	CodeResendInterval time.Duration
	// PendingTTL is how long an enrolment may stay unconfirmed; after it,
	// the user id is free again. Default 30 minutes.
	PendingTTL time.Duration
	// SessionTTL is how long a verification lets a client read or replace
	// the slice and use the faucet. Default 5 minutes.
	SessionTTL time.Duration
	// Lockout is the wrong-code policy.
	Lockout LockoutPolicy
	// IPRate limits requests per client IP. Default 1/s, bursts of 30.
	IPRate RateLimit
	// MaxTrackedIPs bounds the rate limiter's memory. Default 100,000.
	MaxTrackedIPs int
	// MaxSessions bounds live sessions. Default 100,000.
	MaxSessions int
	// Logger receives operational logs; secrets never reach it. Default
	// slog.Default().
	Logger *slog.Logger
	// Clock returns the current time. Default time.Now; tests inject one.
	Clock func() time.Time
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("secret server: Config.DataDir is required")
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, "server.key")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.FaucetTimeout, 60*time.Second)
	def(&c.SendTimeout, 30*time.Second)
	def(&c.CodeTTL, 10*time.Minute)
	def(&c.CodeResendInterval, 30*time.Second)
	def(&c.PendingTTL, 30*time.Minute)
	def(&c.SessionTTL, 5*time.Minute)
	def(&c.Lockout.BaseDuration, 15*time.Minute)
	def(&c.Lockout.MaxDuration, 24*time.Hour)
	if c.Lockout.MaxFailures <= 0 {
		c.Lockout.MaxFailures = 5
	}
	if c.Issuer == "" {
		c.Issuer = "integrity"
	}
	if c.CodeDigits == 0 {
		c.CodeDigits = 6
	}
	if c.CodeDigits < 6 || c.CodeDigits > 8 {
		return fmt.Errorf("secret server: CodeDigits %d, want 6 to 8", c.CodeDigits)
	}
	if c.IPRate.PerSecond <= 0 {
		c.IPRate.PerSecond = 1
	}
	if c.IPRate.Burst <= 0 {
		c.IPRate.Burst = 30
	}
	if c.MaxTrackedIPs <= 0 {
		c.MaxTrackedIPs = 100_000
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}

// Server is the secret server: an http.Handler over its Badger state.
type Server struct {
	cfg  Config
	log  *slog.Logger
	db   *badger.DB
	keys *serverKeys
	mux  *http.ServeMux
	ips  *ipLimiter

	// dummyMAC is compared against when no code is in flight, so a check
	// costs the same whether or not there was anything to match.
	dummyMAC []byte

	// userLocks serialise read-modify-write of one user's record (two
	// concurrent guesses must both count). One lock per user in use, not
	// a striped array: a slow Sender or Faucet call for one user must not
	// stall unrelated users.
	locksMu   sync.Mutex
	userLocks map[[32]byte]*userLock

	sessMu   sync.Mutex
	sessions map[[32]byte]session

	// mu guards closed; requests hold it shared so Close waits for them.
	mu     sync.RWMutex
	closed bool
}

type session struct {
	uk      [32]byte
	user    string
	expires time.Time
}

// New opens (or creates) the server's state and returns the server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "secret-server")
	master, err := loadOrCreateServerKey(cfg.KeyFile, cfg.DataDir, log)
	if err != nil {
		return nil, fmt.Errorf("secret server: %w", err)
	}
	keys, err := deriveKeys(master)
	clear(master)
	if err != nil {
		return nil, fmt.Errorf("secret server: %w", err)
	}
	db, err := openDB(cfg.DataDir, keys.badger, log)
	if err != nil {
		return nil, fmt.Errorf("secret server: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		db:        db,
		keys:      keys,
		ips:       newIPLimiter(cfg.IPRate, cfg.MaxTrackedIPs),
		dummyMAC:  make([]byte, sha256.Size),
		sessions:  make(map[[32]byte]session),
		userLocks: make(map[[32]byte]*userLock),
	}
	if _, err := rand.Read(s.dummyMAC); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("secret server: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.api(s.handleHealth))
	mux.HandleFunc("POST /v1/enrol", s.api(s.handleEnrol))
	mux.HandleFunc("POST /v1/enrol/confirm", s.api(s.handleConfirm))
	mux.HandleFunc("POST /v1/challenge", s.api(s.handleChallenge))
	mux.HandleFunc("POST /v1/verify", s.api(s.handleVerify))
	mux.HandleFunc("GET /v1/slice", s.api(s.handleGetSlice))
	mux.HandleFunc("PUT /v1/slice", s.api(s.handlePutSlice))
	mux.HandleFunc("POST /v1/faucet", s.api(s.handleFaucet))
	mux.HandleFunc("/", s.api(func(r *http.Request) (int, any, error) {
		return 0, nil, errorf(http.StatusNotFound, codeNotFound, "no endpoint %s %s (see docs/SECRET-SERVER.md)", r.Method, r.URL.Path)
	}))
	s.mux = mux
	log.Info("secret server ready", "data", cfg.DataDir, "code_method", cfg.Sender != nil, "faucet", cfg.Faucet != nil)
	return s, nil
}

// Close waits for requests in progress, then closes the database. Later
// requests get 503. Shut the http.Server down first.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("secret server: closing database: %w", err)
	}
	return nil
}

// HTTPServer returns an *http.Server for the handler with timeouts that
// suit it (slow-loris and idle connections are cut off; a faucet payment
// may take up to FaucetTimeout).
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      s.cfg.FaucetTimeout + 15*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// ServeHTTP implements http.Handler: shutdown check, per-IP rate limit and
// body cap, then the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		writeError(w, errClosed)
		return
	}
	if ok, wait := s.ips.allow(clientIP(r), s.now()); !ok {
		writeError(w, &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, msg: ErrRateLimited.Error(), retryAfter: wait})
		return
	}
	if r.ContentLength > MaxBodyBytes {
		writeError(w, errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body exceeds %d bytes", MaxBodyBytes))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
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

// api adapts a handler returning (status, body, error) to http.HandlerFunc.
func (s *Server) api(fn func(*http.Request) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				// Requiring JSON also keeps browsers from posting forms
				// here cross-site without a CORS preflight.
				writeError(w, errorf(http.StatusUnsupportedMediaType, codeInvalidRequest, "invalid request: Content-Type must be application/json"))
				return
			}
		}
		status, body, err := fn(r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
				ae = errInternal
			}
			writeError(w, ae)
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
	body := errorBody{Error: errorJSON{Code: e.code, Message: e.msg, AttemptsLeft: e.attemptsLeft, TxID: e.txid}}
	if e.retryAfter > 0 {
		secs := int64((e.retryAfter + time.Second - 1) / time.Second)
		body.Error.RetryAfter = secs
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(body)
}

type userLock struct {
	mu   sync.Mutex
	refs int
}

// lockUser serialises work on one user's record; call the returned func to
// unlock. Entries live only while someone holds or waits for them.
func (s *Server) lockUser(uk [32]byte) func() {
	s.locksMu.Lock()
	l := s.userLocks[uk]
	if l == nil {
		l = &userLock{}
		s.userLocks[uk] = l
	}
	l.refs++
	s.locksMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.locksMu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(s.userLocks, uk)
		}
		s.locksMu.Unlock()
	}
}

// logID is a short pseudonym for a user in logs: operators can follow one
// user's events without the log holding user ids.
func logID(uk [32]byte) string { return hex.EncodeToString(uk[:6]) }

func (s *Server) handleHealth(*http.Request) (int, any, error) {
	methods := []string{MethodTOTP}
	if s.cfg.Sender != nil {
		methods = append(methods, MethodCode)
	}
	return http.StatusOK, healthResponse{Status: "ok", Version: APIVersion, Methods: methods, Faucet: s.cfg.Faucet != nil}, nil
}

// loadActiveOrPending loads a user, hiding expired pending enrolments.
func (s *Server) loadUser(uk [32]byte, user string, now time.Time) (*record, error) {
	rec, err := s.load(uk, user)
	if err != nil {
		return nil, err
	}
	if rec.State == statePending && now.Sub(rec.Created) > s.cfg.PendingTTL {
		rec.wipe()
		return nil, errNotFound
	}
	return rec, nil
}

// knownUser is loadUser for requests about an existing enrolment: a
// missing or expired one is errUnknownUser.
func (s *Server) knownUser(uk [32]byte, user string, now time.Time) (*record, error) {
	rec, err := s.loadUser(uk, user, now)
	if errors.Is(err, errNotFound) {
		return nil, errUnknownUser
	}
	return rec, err
}

func (s *Server) handleEnrol(r *http.Request) (int, any, error) {
	var req enrolRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	user, err := normaliseUser(req.User)
	if err != nil {
		return 0, nil, err
	}
	switch req.Method {
	case MethodTOTP:
		if req.Destination != "" {
			return 0, nil, invalid("method totp takes no destination")
		}
	case MethodCode:
		if s.cfg.Sender == nil {
			return 0, nil, invalid("method code is not offered by this server (it has no code sender)")
		}
		if err := validDestination(req.Destination); err != nil {
			return 0, nil, err
		}
	default:
		return 0, nil, invalid("method must be %q or %q", MethodTOTP, MethodCode)
	}
	slice, err := decodeSlice(req.Slice)
	if err != nil {
		return 0, nil, err
	}
	defer clear(slice[:])

	uk := s.keys.userKey(user)
	defer s.lockUser(uk)()
	now := s.now()
	existing, err := s.loadUser(uk, user, now)
	switch {
	case err == nil:
		existing.wipe()
		if existing.State == statePending {
			return 0, nil, errorf(http.StatusConflict, codeExists, "%s: an enrolment for this user id awaits confirmation until %s", ErrExists, existing.Created.Add(s.cfg.PendingTTL).UTC().Format(time.RFC3339))
		}
		return 0, nil, errorf(http.StatusConflict, codeExists, "%s", ErrExists)
	case errors.Is(err, errNotFound):
	default:
		// A failed lookup is never "no such user": creating a record
		// here could shadow an existing account.
		return 0, nil, err
	}

	rec := &record{
		User:        user,
		Method:      req.Method,
		Destination: req.Destination,
		Slice:       append([]byte(nil), slice[:]...),
		State:       statePending,
		Created:     now,
		SliceSet:    now,
	}
	defer rec.wipe()
	resp := enrolResponse{User: user, Method: req.Method, State: statePending, ConfirmBy: now.Add(s.cfg.PendingTTL).UTC()}
	var code string
	if req.Method == MethodTOTP {
		secret, uri, err := newTOTP(s.cfg.Issuer, user)
		if err != nil {
			return 0, nil, err
		}
		rec.TOTPSecret = secret
		resp.TOTPSecret, resp.TOTPURI = secret, uri
	} else {
		if code, err = s.newCode(uk, rec, now); err != nil {
			return 0, nil, err
		}
		exp := rec.CodeExpires.UTC()
		resp.CodeExpiresAt = &exp
		resp.Destination = maskDestination(req.Destination)
	}
	if err := s.save(uk, rec); err != nil {
		return 0, nil, err
	}
	if code != "" {
		if err := s.send(r.Context(), uk, rec.Destination, code); err != nil {
			// Undo: the user never got a code, so the id must stay free.
			if derr := s.remove(uk); derr != nil {
				s.log.Error("removing enrolment after failed send", "user", logID(uk), "err", derr)
			}
			return 0, nil, err
		}
	}
	s.log.Info("enrolment started", "user", logID(uk), "method", req.Method)
	return http.StatusCreated, resp, nil
}

func (s *Server) send(ctx context.Context, uk [32]byte, dest, code string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	if err := s.cfg.Sender.Send(ctx, dest, code); err != nil {
		s.log.Error("sending code failed", "user", logID(uk), "err", err)
		return errorf(http.StatusBadGateway, codeSendFailed, "%s; try again later", ErrSendFailed)
	}
	return nil
}

func (s *Server) handleConfirm(r *http.Request) (int, any, error) {
	var req codeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	user, err := normaliseUser(req.User)
	if err != nil {
		return 0, nil, err
	}
	code, err := normaliseCode(req.Code)
	if err != nil {
		return 0, nil, err
	}
	uk := s.keys.userKey(user)
	defer s.lockUser(uk)()
	now := s.now()
	rec, err := s.knownUser(uk, user, now)
	if err != nil {
		return 0, nil, err
	}
	defer rec.wipe()
	if rec.State == stateActive {
		return 0, nil, errorf(http.StatusConflict, codeExists, "%s and confirmed", ErrExists)
	}
	if err := s.attempt(uk, rec, code, now); err != nil {
		return 0, nil, err
	}
	rec.State = stateActive
	rec.Confirmed = now
	if err := s.save(uk, rec); err != nil {
		return 0, nil, err
	}
	sess, err := s.newSession(uk, user, now)
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("enrolment confirmed", "user", logID(uk), "method", rec.Method)
	return http.StatusOK, sessionResponse{User: user, State: stateActive, Session: sess}, nil
}

func (s *Server) handleChallenge(r *http.Request) (int, any, error) {
	var req userRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	user, err := normaliseUser(req.User)
	if err != nil {
		return 0, nil, err
	}
	uk := s.keys.userKey(user)
	defer s.lockUser(uk)()
	now := s.now()
	rec, err := s.knownUser(uk, user, now)
	if err != nil {
		return 0, nil, err
	}
	defer rec.wipe()
	if now.Before(rec.LockedUntil) {
		// No code is sent while locked out: it could not be used, and
		// sending would let anyone make the server spam the user.
		return 0, nil, s.lockedErr(rec, now)
	}
	if rec.Method == MethodTOTP {
		return http.StatusOK, challengeResponse{Method: MethodTOTP}, nil
	}
	if s.cfg.Sender == nil {
		return 0, nil, errorf(http.StatusServiceUnavailable, codeSendFailed, "%s: this server no longer has a code sender", ErrSendFailed)
	}
	if wait := rec.CodeSent.Add(s.cfg.CodeResendInterval).Sub(now); wait > 0 {
		return 0, nil, &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, msg: "a code was sent moments ago; wait before asking for another", retryAfter: wait}
	}
	code, err := s.newCode(uk, rec, now)
	if err != nil {
		return 0, nil, err
	}
	if err := s.save(uk, rec); err != nil {
		return 0, nil, err
	}
	if err := s.send(r.Context(), uk, rec.Destination, code); err != nil {
		return 0, nil, err
	}
	exp := rec.CodeExpires.UTC()
	return http.StatusOK, challengeResponse{Method: MethodCode, Destination: maskDestination(rec.Destination), ExpiresAt: &exp}, nil
}

func (s *Server) handleVerify(r *http.Request) (int, any, error) {
	var req codeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	user, err := normaliseUser(req.User)
	if err != nil {
		return 0, nil, err
	}
	code, err := normaliseCode(req.Code)
	if err != nil {
		return 0, nil, err
	}
	uk := s.keys.userKey(user)
	defer s.lockUser(uk)()
	now := s.now()
	rec, err := s.knownUser(uk, user, now)
	if err != nil {
		return 0, nil, err
	}
	defer rec.wipe()
	if rec.State != stateActive {
		return 0, nil, errorf(http.StatusConflict, codeNotConfirmed, "%s", ErrNotConfirmed)
	}
	if err := s.attempt(uk, rec, code, now); err != nil {
		return 0, nil, err
	}
	if err := s.save(uk, rec); err != nil {
		return 0, nil, err
	}
	sess, err := s.newSession(uk, user, now)
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("verified", "user", logID(uk), "method", rec.Method)
	return http.StatusOK, sessionResponse{User: user, State: stateActive, Session: sess}, nil
}

func (s *Server) handleGetSlice(r *http.Request) (int, any, error) {
	sess, err := s.session(r)
	if err != nil {
		return 0, nil, err
	}
	rec, err := s.load(sess.uk, sess.user)
	if errors.Is(err, errNotFound) {
		return 0, nil, errUnknownUser
	}
	if err != nil {
		return 0, nil, err
	}
	defer rec.wipe()
	if rec.State != stateActive {
		return 0, nil, errorf(http.StatusConflict, codeNotConfirmed, "%s", ErrNotConfirmed)
	}
	s.log.Info("slice retrieved", "user", logID(sess.uk))
	return http.StatusOK, sliceJSON{Slice: base64.StdEncoding.EncodeToString(rec.Slice)}, nil
}

func (s *Server) handlePutSlice(r *http.Request) (int, any, error) {
	sess, err := s.session(r)
	if err != nil {
		return 0, nil, err
	}
	var req sliceJSON
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	slice, err := decodeSlice(req.Slice)
	if err != nil {
		return 0, nil, err
	}
	defer clear(slice[:])
	defer s.lockUser(sess.uk)()
	rec, err := s.load(sess.uk, sess.user)
	if errors.Is(err, errNotFound) {
		return 0, nil, errUnknownUser
	}
	if err != nil {
		return 0, nil, err
	}
	defer rec.wipe()
	if rec.State != stateActive {
		return 0, nil, errorf(http.StatusConflict, codeNotConfirmed, "%s", ErrNotConfirmed)
	}
	clear(rec.Slice)
	rec.Slice = append([]byte(nil), slice[:]...)
	rec.SliceSet = s.now()
	if err := s.save(sess.uk, rec); err != nil {
		return 0, nil, err
	}
	s.log.Info("slice replaced", "user", logID(sess.uk))
	return http.StatusNoContent, nil, nil
}

func (s *Server) handleFaucet(r *http.Request) (int, any, error) {
	sess, err := s.session(r)
	if err != nil {
		return 0, nil, err
	}
	var req faucetRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return 0, nil, err
	}
	if s.cfg.Faucet == nil {
		return 0, nil, errorf(http.StatusNotImplemented, codeNoFaucet, "%s", ErrNoFaucet)
	}
	if err := validAddress(req.Address); err != nil {
		return 0, nil, err
	}
	defer s.lockUser(sess.uk)()
	rec, err := s.load(sess.uk, sess.user)
	if errors.Is(err, errNotFound) {
		return 0, nil, errUnknownUser
	}
	if err != nil {
		return 0, nil, err
	}
	defer rec.wipe()
	if rec.State != stateActive {
		return 0, nil, errorf(http.StatusConflict, codeNotConfirmed, "%s", ErrNotConfirmed)
	}
	if rec.FaucetState != "" {
		e := errorf(http.StatusConflict, codeFaucetUsed, "%s", ErrFaucetUsed)
		e.txid = rec.FaucetTxID
		return 0, nil, e
	}
	// Mark before paying: a crash during Fund must leave the user paid
	// (perhaps), never payable twice.
	now := s.now()
	rec.FaucetState, rec.FaucetAddress, rec.FaucetAt = "pending", req.Address, now
	if err := s.save(sess.uk, rec); err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.FaucetTimeout)
	defer cancel()
	txid, ferr := s.cfg.Faucet.Fund(ctx, req.Address)
	if ferr != nil {
		s.log.Error("faucet payment failed", "user", logID(sess.uk), "err", ferr)
		rec.FaucetState, rec.FaucetAddress = "", ""
		if err := s.save(sess.uk, rec); err != nil {
			return 0, nil, err
		}
		return 0, nil, errorf(http.StatusBadGateway, codeFaucetFailed, "%s; try again later", ErrFaucetFailed)
	}
	rec.FaucetState, rec.FaucetTxID = "done", txid
	if err := s.save(sess.uk, rec); err != nil {
		return 0, nil, err
	}
	s.log.Info("faucet paid", "user", logID(sess.uk), "txid", txid)
	return http.StatusOK, faucetResponse{TxID: txid}, nil
}
