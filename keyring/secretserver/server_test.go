package secretserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// The tests run the real server (real Badger in t.TempDir(), real HTTP on
// loopback via httptest) and drive it only through the Client. Codes come
// from the file sender's output and from TOTP computed with the enrolment
// secret, exactly as a user would get them.

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type testEnv struct {
	t      *testing.T
	cfg    Config
	clock  *fakeClock
	codes  string
	logs   *syncBuffer
	srv    *Server
	hs     *httptest.Server
	c      *Client
	ctx    context.Context
	faucet *fakeFaucet
}

type fakeFaucet struct {
	mu    sync.Mutex
	calls []string
	fail  atomic.Bool
}

func (f *fakeFaucet) Fund(_ context.Context, address string) (string, error) {
	if f.fail.Load() {
		return "", errors.New("wallet is empty")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, address)
	return fmt.Sprintf("%064x", len(f.calls)), nil
}

func newEnv(t *testing.T, mods ...func(*Config)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{
		t:      t,
		clock:  &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		codes:  filepath.Join(dir, "codes.txt"),
		logs:   &syncBuffer{},
		ctx:    context.Background(),
		faucet: &fakeFaucet{},
	}
	e.cfg = Config{
		DataDir: filepath.Join(dir, "data"),
		KeyFile: filepath.Join(dir, "keys", "server.key"),
		Sender:  NewFileSender(e.codes),
		Faucet:  e.faucet,
		IPRate:  RateLimit{PerSecond: 1e6, Burst: 1e6},
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:   e.clock.Now,
	}
	for _, m := range mods {
		m(&e.cfg)
	}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *testEnv) start() {
	e.t.Helper()
	srv, err := New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
	e.hs = httptest.NewServer(srv)
	c, err := NewClient(e.hs.URL, e.hs.Client())
	if err != nil {
		e.t.Fatal(err)
	}
	e.c = c
}

func (e *testEnv) stop() {
	if e.hs != nil {
		e.hs.Close()
		e.hs = nil
	}
	if e.srv != nil {
		if err := e.srv.Close(); err != nil {
			e.t.Error(err)
		}
		e.srv = nil
	}
}

func (e *testEnv) restart() {
	e.stop()
	e.start()
}

// lastCode returns the latest code the file sender wrote for dest.
func (e *testEnv) lastCode(dest string) string {
	e.t.Helper()
	data, err := os.ReadFile(e.codes)
	if err != nil {
		e.t.Fatal(err)
	}
	code := ""
	for _, line := range strings.Split(string(data), "\n") {
		if d, c, ok := strings.Cut(line, " "); ok && d == dest {
			code = c
		}
	}
	if code == "" {
		e.t.Fatalf("no code sent to %s", dest)
	}
	return code
}

func randomSlice(t *testing.T) [SliceSize]byte {
	var s [SliceSize]byte
	if _, err := rand.Read(s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

// enrolCode enrols and confirms a user with the code method.
func (e *testEnv) enrolCode(user, dest string, slice [SliceSize]byte) Session {
	e.t.Helper()
	en, err := e.c.Enrol(e.ctx, EnrolRequest{User: user, Method: MethodCode, Destination: dest, Slice: slice})
	if err != nil {
		e.t.Fatal(err)
	}
	if en.Method != MethodCode || en.TOTPSecret != "" || en.CodeExpiresAt.IsZero() {
		e.t.Fatalf("enrolment %+v", en)
	}
	sess, err := e.c.ConfirmEnrolment(e.ctx, user, e.lastCode(dest))
	if err != nil {
		e.t.Fatal(err)
	}
	return sess
}

// enrolTOTP enrols and confirms a user with TOTP and returns the secret.
func (e *testEnv) enrolTOTP(user string, slice [SliceSize]byte) (string, Session) {
	e.t.Helper()
	en, err := e.c.Enrol(e.ctx, EnrolRequest{User: user, Method: MethodTOTP, Slice: slice})
	if err != nil {
		e.t.Fatal(err)
	}
	code, err := totp.GenerateCode(en.TOTPSecret, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	sess, err := e.c.ConfirmEnrolment(e.ctx, user, code)
	if err != nil {
		e.t.Fatal(err)
	}
	return en.TOTPSecret, sess
}

func wantErr(t *testing.T, err, target error) *Error {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got %v, want %v", err, target)
	}
	var se *Error
	errors.As(err, &se)
	return se
}

func TestCodeMethodFlow(t *testing.T) {
	e := newEnv(t)
	slice := randomSlice(t)
	sess := e.enrolCode("alice@example.org", "alice@example.org", slice)
	got, err := e.c.Slice(e.ctx, sess)
	if err != nil || got != slice {
		t.Fatalf("slice after confirm: %v", err)
	}

	// Sign-on on another device: challenge, code, verify, slice.
	e.clock.Advance(time.Minute)
	ch, err := e.c.Challenge(e.ctx, "Alice@Example.org ")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Method != MethodCode || ch.Destination != "a***@example.org" || ch.ExpiresAt.IsZero() {
		t.Fatalf("challenge %+v", ch)
	}
	code := e.lastCode("alice@example.org")
	sess2, err := e.c.Verify(e.ctx, "alice@example.org", code)
	if err != nil {
		t.Fatal(err)
	}
	if sess2.Token == sess.Token || sess2.User != "alice@example.org" {
		t.Fatalf("session %+v", sess2)
	}
	got, err = e.c.Slice(e.ctx, sess2)
	if err != nil || got != slice {
		t.Fatalf("slice after verify: %v", err)
	}
	// Single use.
	_, err = e.c.Verify(e.ctx, "alice@example.org", code)
	wantErr(t, err, ErrBadCode)

	// Codes expire.
	e.clock.Advance(time.Minute)
	if _, err := e.c.Challenge(e.ctx, "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	code = e.lastCode("alice@example.org")
	e.clock.Advance(10*time.Minute + time.Second)
	_, err = e.c.Verify(e.ctx, "alice@example.org", code)
	wantErr(t, err, ErrBadCode)
}

func TestTOTPFlow(t *testing.T) {
	e := newEnv(t)
	slice := randomSlice(t)
	en, err := e.c.Enrol(e.ctx, EnrolRequest{User: "bob", Method: MethodTOTP, Slice: slice})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(en.TOTPURI, "otpauth://totp/integrity:bob?") || !strings.Contains(en.TOTPURI, "secret="+en.TOTPSecret) {
		t.Fatalf("uri %q", en.TOTPURI)
	}
	// Not active before the first valid code.
	_, err = e.c.Verify(e.ctx, "bob", "123456")
	wantErr(t, err, ErrNotConfirmed)
	_, err = e.c.Challenge(e.ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(en.TOTPSecret, e.clock.Now())
	wrong := fmt.Sprintf("%06d", (atoi(code)+1)%1_000_000)
	_, err = e.c.ConfirmEnrolment(e.ctx, "bob", wrong)
	if se := wantErr(t, err, ErrBadCode); se.AttemptsLeft != 4 || se.Status != http.StatusUnauthorized {
		t.Fatalf("bad code error %+v", se)
	}
	sess, err := e.c.ConfirmEnrolment(e.ctx, "bob", code)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.c.Slice(e.ctx, sess)
	if err != nil || got != slice {
		t.Fatalf("slice: %v", err)
	}
	// The same time step cannot be replayed, nor an earlier one.
	_, err = e.c.Verify(e.ctx, "bob", code)
	wantErr(t, err, ErrBadCode)
	prev, _ := totp.GenerateCode(en.TOTPSecret, e.clock.Now().Add(-30*time.Second))
	_, err = e.c.Verify(e.ctx, "bob", prev)
	wantErr(t, err, ErrBadCode)
	// The next step works, once.
	e.clock.Advance(30 * time.Second)
	next, _ := totp.GenerateCode(en.TOTPSecret, e.clock.Now())
	if _, err := e.c.Verify(e.ctx, "bob", next); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Verify(e.ctx, "bob", next)
	wantErr(t, err, ErrBadCode)
	// One step of clock skew is tolerated.
	e.clock.Advance(30 * time.Second)
	ahead, _ := totp.GenerateCode(en.TOTPSecret, e.clock.Now().Add(30*time.Second))
	if _, err := e.c.Verify(e.ctx, "bob", ahead); err != nil {
		t.Fatalf("code one step ahead: %v", err)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestReplaceSlice(t *testing.T) {
	e := newEnv(t)
	old, nu := randomSlice(t), randomSlice(t)
	sess := e.enrolCode("carol", "+15550001", old)
	if err := e.c.ReplaceSlice(e.ctx, sess, nu); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.c.Challenge(e.ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	sess, err := e.c.Verify(e.ctx, "carol", e.lastCode("+15550001"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.c.Slice(e.ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	if got == old || got != nu {
		t.Fatal("old slice still returned after replace")
	}
	// Replacing needs a session; an all-zero slice is refused.
	err = e.c.ReplaceSlice(e.ctx, Session{Token: strings.Repeat("A", 43)}, randomSlice(t))
	wantErr(t, err, ErrSessionInvalid)
	err = e.c.ReplaceSlice(e.ctx, sess, [SliceSize]byte{})
	wantErr(t, err, ErrInvalidRequest)
}

func TestLockout(t *testing.T) {
	e := newEnv(t)
	slice := randomSlice(t)
	e.enrolCode("dave", "dave@example.org", slice)
	e.clock.Advance(time.Minute)
	if _, err := e.c.Challenge(e.ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	real := e.lastCode("dave@example.org")

	// An attacker guesses 1,000 codes, 20 at a time in parallel. Only the
	// first 5 are ever checked: 5 of 1,000,000 codes, 0.0005% of the space.
	var checked, locked atomic.Int32
	var wg sync.WaitGroup
	guesses := make(chan int)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range guesses {
				code := fmt.Sprintf("%06d", g)
				if code == real {
					continue
				}
				_, err := e.c.Verify(e.ctx, "dave", code)
				switch {
				case errors.Is(err, ErrBadCode):
					checked.Add(1)
				case errors.Is(err, ErrLockedOut):
					locked.Add(1)
				default:
					t.Errorf("guess %s: %v", code, err)
				}
			}
		}()
	}
	for g := range 1000 {
		guesses <- g
	}
	close(guesses)
	wg.Wait()
	// The fifth wrong code itself answers "locked out".
	if checked.Load() != 4 || checked.Load()+locked.Load() < 995 {
		t.Fatalf("%d guesses answered bad_code, %d locked_out", checked.Load(), locked.Load())
	}

	// The right code is refused while locked; no code is sent either.
	_, err := e.c.Verify(e.ctx, "dave", real)
	se := wantErr(t, err, ErrLockedOut)
	if se.Status != http.StatusLocked || se.RetryAfter < 14*time.Minute || se.RetryAfter > 15*time.Minute {
		t.Fatalf("locked error %+v", se)
	}
	_, err = e.c.Challenge(e.ctx, "dave")
	wantErr(t, err, ErrLockedOut)

	// After 15 minutes: a new code works (the old one died with the lockout).
	e.clock.Advance(15*time.Minute + time.Second)
	_, err = e.c.Verify(e.ctx, "dave", real)
	wantErr(t, err, ErrBadCode)
	if _, err := e.c.Challenge(e.ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	// ...but first, spend the attempts left to reach a second lockout,
	// which lasts twice as long; it survives a restart.
	for range 3 {
		_, err = e.c.Verify(e.ctx, "dave", "000000")
		wantErr(t, err, ErrBadCode)
	}
	_, err = e.c.Verify(e.ctx, "dave", "000001")
	wantErr(t, err, ErrLockedOut)
	e.restart()
	e.clock.Advance(15*time.Minute + time.Second)
	_, err = e.c.Verify(e.ctx, "dave", "000002")
	wantErr(t, err, ErrLockedOut)
	e.clock.Advance(15 * time.Minute)
	if _, err := e.c.Challenge(e.ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	sess, err := e.c.Verify(e.ctx, "dave", e.lastCode("dave@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.c.Slice(e.ctx, sess); err != nil || got != slice {
		t.Fatalf("slice after lockout: %v", err)
	}
}

func TestTOTPLockout(t *testing.T) {
	e := newEnv(t)
	secret, _ := e.enrolTOTP("erin", randomSlice(t))
	e.clock.Advance(30 * time.Second)
	for i := range 5 {
		_, err := e.c.Verify(e.ctx, "erin", "999999")
		if i < 4 {
			wantErr(t, err, ErrBadCode)
		} else {
			wantErr(t, err, ErrLockedOut)
		}
	}
	code, _ := totp.GenerateCode(secret, e.clock.Now())
	if code == "999999" {
		t.Skip("the real code is the guess")
	}
	_, err := e.c.Verify(e.ctx, "erin", code)
	wantErr(t, err, ErrLockedOut)
	e.clock.Advance(15*time.Minute + time.Second)
	code, _ = totp.GenerateCode(secret, e.clock.Now())
	if _, err := e.c.Verify(e.ctx, "erin", code); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownUser(t *testing.T) {
	e := newEnv(t)
	_, err := e.c.Challenge(e.ctx, "nobody")
	se := wantErr(t, err, ErrUnknownUser)
	if se.Status != http.StatusNotFound || !strings.Contains(err.Error(), "unknown user") {
		t.Fatalf("unknown user error: %v (%+v)", err, se)
	}
	_, err = e.c.Verify(e.ctx, "nobody", "123456")
	wantErr(t, err, ErrUnknownUser)
	_, err = e.c.ConfirmEnrolment(e.ctx, "nobody", "123456")
	wantErr(t, err, ErrUnknownUser)
}

func TestDuplicateEnrolRefused(t *testing.T) {
	e := newEnv(t)
	first := randomSlice(t)
	_, err := e.c.Enrol(e.ctx, EnrolRequest{User: "frank", Method: MethodCode, Destination: "frank@example.org", Slice: first})
	if err != nil {
		t.Fatal(err)
	}
	// While pending, and in another spelling of the same id.
	_, err = e.c.Enrol(e.ctx, EnrolRequest{User: "FRANK", Method: MethodTOTP, Slice: randomSlice(t)})
	if se := wantErr(t, err, ErrExists); se.Status != http.StatusConflict {
		t.Fatalf("status %d", se.Status)
	}
	sess, err := e.c.ConfirmEnrolment(e.ctx, "frank", e.lastCode("frank@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Enrol(e.ctx, EnrolRequest{User: "frank", Method: MethodCode, Destination: "evil@example.org", Slice: randomSlice(t)})
	wantErr(t, err, ErrExists)
	_, err = e.c.ConfirmEnrolment(e.ctx, "frank", "123456")
	wantErr(t, err, ErrExists)
	if got, _ := e.c.Slice(e.ctx, sess); got != first {
		t.Fatal("a refused enrolment changed the slice")
	}
	// Even long after, an active user stays.
	e.clock.Advance(48 * time.Hour)
	_, err = e.c.Enrol(e.ctx, EnrolRequest{User: "frank", Method: MethodTOTP, Slice: randomSlice(t)})
	wantErr(t, err, ErrExists)

	// An unconfirmed enrolment frees the id after PendingTTL.
	if _, err := e.c.Enrol(e.ctx, EnrolRequest{User: "grace", Method: MethodTOTP, Slice: randomSlice(t)}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(31 * time.Minute)
	_, err = e.c.Challenge(e.ctx, "grace")
	wantErr(t, err, ErrUnknownUser)
	if _, err := e.c.Enrol(e.ctx, EnrolRequest{User: "grace", Method: MethodTOTP, Slice: randomSlice(t)}); err != nil {
		t.Fatalf("re-enrol after pending expiry: %v", err)
	}
}

func TestConcurrentEnrolCreatesOne(t *testing.T) {
	e := newEnv(t)
	var ok, exists atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.c.Enrol(e.ctx, EnrolRequest{User: "henry", Method: MethodTOTP, Slice: randomSlice(t)})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || exists.Load() != 9 {
		t.Fatalf("%d enrolments succeeded, %d refused", ok.Load(), exists.Load())
	}
}

func TestOversizedRequest(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("x", MaxBodyBytes+1)
	_, err := e.c.Enrol(e.ctx, EnrolRequest{User: "ivan", Method: MethodCode, Destination: big, Slice: randomSlice(t)})
	if se := wantErr(t, err, ErrTooLarge); se.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", se.Status)
	}
	_, err = e.c.Challenge(e.ctx, "ivan")
	wantErr(t, err, ErrUnknownUser)
	// Just under the cap, the body is read and refused for its content.
	_, err = e.c.Enrol(e.ctx, EnrolRequest{User: "ivan", Method: MethodCode, Destination: big[:MaxBodyBytes-200], Slice: randomSlice(t)})
	wantErr(t, err, ErrInvalidRequest)
}

func TestInvalidRequests(t *testing.T) {
	e := newEnv(t)
	s := randomSlice(t)
	cases := []EnrolRequest{
		{User: "ab", Method: MethodTOTP, Slice: s},
		{User: "a b c", Method: MethodTOTP, Slice: s},
		{User: ".alice", Method: MethodTOTP, Slice: s},
		{User: strings.Repeat("a", 129), Method: MethodTOTP, Slice: s},
		{User: "judy", Method: "sms", Slice: s},
		{User: "judy", Method: MethodTOTP, Destination: "x@y", Slice: s},
		{User: "judy", Method: MethodCode, Slice: s},
		{User: "judy", Method: MethodCode, Destination: "-oProxyCommand=evil", Slice: s},
		{User: "judy", Method: MethodCode, Destination: "a b", Slice: s},
		{User: "judy", Method: MethodCode, Destination: "a\nb", Slice: s},
		{User: "judy", Method: MethodTOTP},
	}
	for _, c := range cases {
		_, err := e.c.Enrol(e.ctx, c)
		if se := wantErr(t, err, ErrInvalidRequest); se.Status != http.StatusBadRequest {
			t.Fatalf("%+v: status %d", c, se.Status)
		}
	}
	for _, code := range []string{"", "12345", "123456789", "12a456"} {
		_, err := e.c.Verify(e.ctx, "judy", code)
		wantErr(t, err, ErrInvalidRequest)
	}
	// Without a sender the code method is not offered.
	e2 := newEnv(t, func(c *Config) { c.Sender = nil; c.Faucet = nil })
	h, err := e2.c.Health(e2.ctx)
	if err != nil || len(h.Methods) != 1 || h.Methods[0] != MethodTOTP || h.Faucet {
		t.Fatalf("health %+v %v", h, err)
	}
	_, err = e2.c.Enrol(e2.ctx, EnrolRequest{User: "judy", Method: MethodCode, Destination: "j@x", Slice: s})
	wantErr(t, err, ErrInvalidRequest)
}

func TestSessions(t *testing.T) {
	e := newEnv(t)
	slice := randomSlice(t)
	sess := e.enrolCode("kate", "kate@example.org", slice)
	for _, tok := range []string{"", "x", strings.Repeat("A", 43), sess.Token + "A"} {
		_, err := e.c.Slice(e.ctx, Session{Token: tok})
		wantErr(t, err, ErrSessionInvalid)
	}
	e.clock.Advance(5*time.Minute + time.Second)
	_, err := e.c.Slice(e.ctx, sess)
	wantErr(t, err, ErrSessionInvalid)
	// A restart ends sessions.
	e.clock.Advance(time.Minute)
	e.c.Challenge(e.ctx, "kate")
	sess, err = e.c.Verify(e.ctx, "kate", e.lastCode("kate@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	e.restart()
	_, err = e.c.Slice(e.ctx, sess)
	wantErr(t, err, ErrSessionInvalid)
}

func TestFaucet(t *testing.T) {
	e := newEnv(t)
	sess := e.enrolCode("liam", "liam@example.org", randomSlice(t))
	h, err := e.c.Health(e.ctx)
	if err != nil || !h.Faucet || h.Version != 1 {
		t.Fatalf("health %+v %v", h, err)
	}
	// Only after verification.
	_, err = e.c.Fund(e.ctx, Session{Token: strings.Repeat("B", 43)}, "mxAddr1")
	wantErr(t, err, ErrSessionInvalid)
	_, err = e.c.Fund(e.ctx, sess, "not an address!")
	wantErr(t, err, ErrInvalidRequest)
	// A failed payment can be retried.
	e.faucet.fail.Store(true)
	_, err = e.c.Fund(e.ctx, sess, "mxAddr1")
	wantErr(t, err, ErrFaucetFailed)
	e.faucet.fail.Store(false)
	txid, err := e.c.Fund(e.ctx, sess, "mxAddr1")
	if err != nil || len(txid) != 64 {
		t.Fatalf("fund: %q %v", txid, err)
	}
	// At most once per user, also to another address and after a restart.
	_, err = e.c.Fund(e.ctx, sess, "mxAddr2")
	if se := wantErr(t, err, ErrFaucetUsed); se.TxID != txid {
		t.Fatalf("earlier txid %q, want %q", se.TxID, txid)
	}
	e.restart()
	e.clock.Advance(time.Minute)
	e.c.Challenge(e.ctx, "liam")
	sess, _ = e.c.Verify(e.ctx, "liam", e.lastCode("liam@example.org"))
	_, err = e.c.Fund(e.ctx, sess, "mxAddr3")
	wantErr(t, err, ErrFaucetUsed)
	if len(e.faucet.calls) != 1 || e.faucet.calls[0] != "mxAddr1" {
		t.Fatalf("faucet paid %v", e.faucet.calls)
	}
	// A server without a faucet says so.
	e2 := newEnv(t, func(c *Config) { c.Faucet = nil })
	sess2 := e2.enrolCode("mia", "mia@example.org", randomSlice(t))
	_, err = e2.c.Fund(e2.ctx, sess2, "mxAddr1")
	wantErr(t, err, ErrNoFaucet)
}

func TestRateLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IPRate = RateLimit{PerSecond: 0.1, Burst: 3} })
	for range 3 {
		if _, err := e.c.Health(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.c.Health(e.ctx)
	se := wantErr(t, err, ErrRateLimited)
	if se.Status != http.StatusTooManyRequests || se.RetryAfter <= 0 {
		t.Fatalf("rate limit error %+v", se)
	}
	e.clock.Advance(10 * time.Second)
	if _, err := e.c.Health(e.ctx); err != nil {
		t.Fatalf("after refill: %v", err)
	}

	// A user cannot be sent codes back to back.
	e2 := newEnv(t)
	e2.enrolCode("noah", "noah@example.org", randomSlice(t))
	e2.clock.Advance(time.Minute)
	if _, err := e2.c.Challenge(e2.ctx, "noah"); err != nil {
		t.Fatal(err)
	}
	_, err = e2.c.Challenge(e2.ctx, "noah")
	wantErr(t, err, ErrRateLimited)
	e2.clock.Advance(30 * time.Second)
	if _, err := e2.c.Challenge(e2.ctx, "noah"); err != nil {
		t.Fatal(err)
	}
}

func TestServerDown(t *testing.T) {
	e := newEnv(t)
	url := e.hs.URL
	e.stop()
	c, err := NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Challenge(e.ctx, "olivia")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "secret server at "+url+" is unreachable") {
		t.Fatalf("got %v", err)
	}
	// A closed Server behind a live listener answers 503.
	srv, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	srv.Close()
	c, _ = NewClient(hs.URL, nil)
	_, err = c.Health(e.ctx)
	wantErr(t, err, ErrUnavailable)
	// A cancelled context is reported as such.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Health(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNewClientRefusesPlainHTTP(t *testing.T) {
	for _, u := range []string{"http://example.org", "ftp://127.0.0.1", "https://", "https://x.org/?a=b", "::"} {
		if _, err := NewClient(u, nil); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	for _, u := range []string{"https://secrets.example.org", "http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:9"} {
		if _, err := NewClient(u, nil); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
}

func TestRestartPersistence(t *testing.T) {
	e := newEnv(t)
	a, b := randomSlice(t), randomSlice(t)
	e.enrolCode("paul", "paul@example.org", a)
	secret, _ := e.enrolTOTP("quinn", b)
	if _, err := e.c.Enrol(e.ctx, EnrolRequest{User: "rita", Method: MethodTOTP, Slice: randomSlice(t)}); err != nil {
		t.Fatal(err)
	}
	e.restart()
	e.clock.Advance(time.Minute)
	if _, err := e.c.Challenge(e.ctx, "paul"); err != nil {
		t.Fatal(err)
	}
	sess, err := e.c.Verify(e.ctx, "paul", e.lastCode("paul@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Slice(e.ctx, sess); got != a {
		t.Fatal("code user's slice lost in restart")
	}
	code, _ := totp.GenerateCode(secret, e.clock.Now())
	sess, err = e.c.Verify(e.ctx, "quinn", code)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Slice(e.ctx, sess); got != b {
		t.Fatal("totp user's slice lost in restart")
	}
	_, err = e.c.Enrol(e.ctx, EnrolRequest{User: "rita", Method: MethodTOTP, Slice: randomSlice(t)})
	wantErr(t, err, ErrExists)
}

// TestAtRest writes a known slice through the API, closes the server and
// searches every file under the data directory for the slice (raw, hex,
// base64), the TOTP secret, the destination and the user id: none may
// appear. The logs must not hold them (or codes and tokens) either.
func TestAtRest(t *testing.T) {
	e := newEnv(t)
	slice := randomSlice(t)
	dest := "sam.secret-destination@example.org"
	sess := e.enrolCode("sam-at-rest-user", dest, slice)
	code := e.lastCode(dest)
	secret, tsess := e.enrolTOTP("tina-at-rest-user", randomSlice(t))
	tslice, err := e.c.Slice(e.ctx, tsess)
	if err != nil {
		t.Fatal(err)
	}
	// Replace one, so both the old and the new value are looked for.
	nu := randomSlice(t)
	if err := e.c.ReplaceSlice(e.ctx, sess, nu); err != nil {
		t.Fatal(err)
	}
	e.stop()

	needles := map[string][]byte{}
	for name, s := range map[string][SliceSize]byte{"slice": slice, "new slice": nu, "totp slice": tslice} {
		needles[name+" raw"] = append([]byte(nil), s[:]...)
		needles[name+" hex"] = []byte(hex.EncodeToString(s[:]))
		needles[name+" HEX"] = []byte(strings.ToUpper(hex.EncodeToString(s[:])))
		needles[name+" base64"] = []byte(base64.StdEncoding.EncodeToString(s[:]))
		needles[name+" base64url"] = []byte(base64.RawURLEncoding.EncodeToString(s[:]))
		// A base64 run starting mid-value: the first 30 bytes' encoding
		// without its padding-affected tail.
		needles[name+" base64 prefix"] = []byte(base64.StdEncoding.EncodeToString(s[:30]))
	}
	needles["totp secret"] = []byte(secret)
	needles["destination"] = []byte(dest)
	needles["user id"] = []byte("sam-at-rest-user")
	// Database keys are HMACs of user ids, stored by Badger in the clear
	// unless its own encryption is on: finding none proves that layer.
	kf, err := os.ReadFile(e.cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	master, err := parseServerKey(e.cfg.KeyFile, kf)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := deriveKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"sam-at-rest-user", "tina-at-rest-user"} {
		uk := keys.userKey(u)
		needles["database key of "+u] = uk[4:] // Badger prefix-compresses keys
	}

	search := func(path string, data []byte) {
		for name, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s found in %s", name, path)
			}
		}
	}
	// The search finds what is there (guards against a vacuous pass).
	probe := append([]byte("xx"), append(append([]byte(nil), slice[:]...), "yy"...)...)
	found := false
	for name, n := range needles {
		if name == "slice raw" && bytes.Contains(probe, n) {
			found = true
		}
	}
	if !found {
		t.Fatal("search cannot find a raw slice")
	}

	files := 0
	err = filepath.WalkDir(e.cfg.DataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		search(path, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Fatalf("only %d files in the data dir", files)
	}
	logs := e.logs.String()
	search("logs", []byte(logs))
	for _, s := range []string{code, sess.Token, tsess.Token} {
		if strings.Contains(logs, s) {
			t.Errorf("logs hold a code or token")
		}
	}
	// The key file is 0600 in its own directory.
	fi, err := os.Stat(e.cfg.KeyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
}

func TestServerKeyFile(t *testing.T) {
	e := newEnv(t)
	e.enrolTOTP("uma", randomSlice(t))
	e.stop()
	// Group-readable key: refused.
	if err := os.Chmod(e.cfg.KeyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := New(e.cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key: %v", err)
	}
	os.Chmod(e.cfg.KeyFile, 0o600)
	// Another key: refused, with the reason.
	other := e.cfg
	other.KeyFile = filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(other.KeyFile, []byte(keyFileHeader+"\n"+strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(other); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong key: %v", err)
	}
	// A missing key next to a database: refused, not regenerated.
	missing := e.cfg
	missing.KeyFile = filepath.Join(t.TempDir(), "missing.key")
	if _, err := New(missing); err == nil || !strings.Contains(err.Error(), "restore the key file") {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := os.Stat(missing.KeyFile); err == nil {
		t.Fatal("a key was generated next to an existing database")
	}
	// Garbage in the key file.
	bad := e.cfg
	bad.KeyFile = filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad.KeyFile, []byte("hello"), 0o600)
	if _, err := New(bad); err == nil || !strings.Contains(err.Error(), "not an integrity secret-server key") {
		t.Fatalf("bad key: %v", err)
	}
	// The right key still opens it.
	e.start()
	if _, err := e.c.Enrol(e.ctx, EnrolRequest{User: "uma", Method: MethodTOTP, Slice: randomSlice(t)}); !errors.Is(err, ErrExists) {
		t.Fatalf("after reopening: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
	if _, err := New(Config{DataDir: t.TempDir(), CodeDigits: 9}); err == nil {
		t.Fatal("9-digit codes accepted")
	}
}

func TestEightDigitCodes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CodeDigits = 8 })
	slice := randomSlice(t)
	e.enrolCode("vera", "vera@example.org", slice)
	if c := e.lastCode("vera@example.org"); len(c) != 8 {
		t.Fatalf("code %q", c)
	}
}

func TestSendFailureLeavesNoEnrolment(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Sender = &CommandSender{Path: "/bin/false"} })
	_, err := e.c.Enrol(e.ctx, EnrolRequest{User: "walt", Method: MethodCode, Destination: "w@x.org", Slice: randomSlice(t)})
	wantErr(t, err, ErrSendFailed)
	_, err = e.c.Challenge(e.ctx, "walt")
	wantErr(t, err, ErrUnknownUser)
}

func TestCommandSender(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "send.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s|%s|' \"$INTEGRITY_CODE_DESTINATION\" \"$INTEGRITY_CODE\" > \"$OUT\"\ncat >> \"$OUT\"\n"), 0o700)
	s := &CommandSender{Path: script, Env: []string{"OUT=" + out}}
	// Shell metacharacters reach the program verbatim and run nothing.
	dest := `x;touch${IFS}pwned;$(touch${IFS}pwned2)` + "`touch pwned3`"
	if err := s.Send(context.Background(), dest, "123456"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if string(got) != dest+"|123456|"+dest+" 123456\n" {
		t.Fatalf("program saw %q", got)
	}
	for _, f := range []string{"pwned", "pwned2", "pwned3"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Fatal("a metacharacter was interpreted")
		}
	}
	fail := filepath.Join(dir, "fail.sh")
	os.WriteFile(fail, []byte("#!/bin/sh\necho gateway said no >&2\nexit 3\n"), 0o700)
	err := (&CommandSender{Path: fail}).Send(context.Background(), "d", "1")
	if err == nil || !strings.Contains(err.Error(), "gateway said no") {
		t.Fatalf("failing command: %v", err)
	}
	slow := filepath.Join(dir, "slow.sh")
	os.WriteFile(slow, []byte("#!/bin/sh\nexec sleep 10\n"), 0o700)
	start := time.Now()
	err = (&CommandSender{Path: slow, Timeout: 200 * time.Millisecond}).Send(context.Background(), "d", "1")
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow command: %v after %s", err, time.Since(start))
	}
}
