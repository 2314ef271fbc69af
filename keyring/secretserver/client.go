package secretserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one secret server. It is safe for concurrent use.
type Client struct {
	base string // without trailing slash
	hc   *http.Client
}

// Enrolment is the answer to Enrol: the enrolment is pending until
// ConfirmEnrolment succeeds (before ConfirmBy).
type Enrolment struct {
	User      string
	Method    string
	ConfirmBy time.Time
	// MethodCode: where the code went (masked) and when it expires.
	Destination   string
	CodeExpiresAt time.Time
	// MethodTOTP: the secret for the user's authenticator app, as an
	// otpauth:// URI (for a QR code) and as base32 text. Show it to the
	// user once; it is a credential.
	TOTPURI    string
	TOTPSecret string
}

// Challenge is the answer to Challenge.
type Challenge struct {
	Method string
	// MethodCode: where the code went (masked) and when it expires.
	Destination string
	ExpiresAt   time.Time
}

// Session is proof of a recent verification: it lets the client read or
// replace the slice and use the faucet until ExpiresAt. Token is a bearer
// secret; do not log it.
type Session struct {
	User      string
	Token     string
	ExpiresAt time.Time
}

// Health describes a server.
type Health struct {
	Version int
	Methods []string
	Faucet  bool
}

// EnrolRequest is what Enrol sends.
type EnrolRequest struct {
	User   string
	Method string // MethodTOTP or MethodCode
	// Destination is where MethodCode sends codes; empty for MethodTOTP.
	Destination string
	Slice       [SliceSize]byte
}

// NewClient returns a client for the server at baseURL (e.g.
// "https://secrets.example.org"). Plain http is accepted only for loopback
// hosts: slices and codes must not cross a network unencrypted. hc may be
// nil for a client with a 30-second timeout. The client never follows
// redirects (a redirect could carry a session token elsewhere).
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("secret server URL %q: %w", baseURL, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("secret server URL %q: plain http is allowed only on loopback; use https", baseURL)
		}
	default:
		return nil, fmt.Errorf("secret server URL %q: scheme must be https (or http on loopback)", baseURL)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("secret server URL %q: want scheme://host[:port][/path] only", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
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

// URL returns the server's base URL.
func (c *Client) URL() string { return c.base }

// Health asks the server what it offers.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var resp healthResponse
	if err := c.do(ctx, http.MethodGet, "/v1/health", "", nil, &resp); err != nil {
		return Health{}, err
	}
	return Health{Version: resp.Version, Methods: resp.Methods, Faucet: resp.Faucet}, nil
}

// Enrol deposits a slice for a new user id. The server refuses an id that
// is already enrolled, or pending, with ErrExists. For MethodCode it sends
// a code to the destination; for MethodTOTP the result carries the TOTP
// secret. Either way, ConfirmEnrolment with a code completes it.
func (c *Client) Enrol(ctx context.Context, req EnrolRequest) (Enrolment, error) {
	body := enrolRequest{
		User:        req.User,
		Method:      req.Method,
		Destination: req.Destination,
		Slice:       base64.StdEncoding.EncodeToString(req.Slice[:]),
	}
	var resp enrolResponse
	if err := c.do(ctx, http.MethodPost, "/v1/enrol", "", body, &resp); err != nil {
		return Enrolment{}, err
	}
	e := Enrolment{
		User: resp.User, Method: resp.Method, ConfirmBy: resp.ConfirmBy,
		Destination: resp.Destination, TOTPURI: resp.TOTPURI, TOTPSecret: resp.TOTPSecret,
	}
	if resp.CodeExpiresAt != nil {
		e.CodeExpiresAt = *resp.CodeExpiresAt
	}
	return e, nil
}

// ConfirmEnrolment activates a pending enrolment with the first valid code
// and returns a session (so a bootstrapping client can use the faucet at
// once).
func (c *Client) ConfirmEnrolment(ctx context.Context, user, code string) (Session, error) {
	return c.codeCall(ctx, "/v1/enrol/confirm", user, code)
}

// Challenge starts a verification: for MethodCode the server sends a fresh
// code (at most one per CodeResendInterval, else ErrRateLimited); for
// MethodTOTP it only says so. It also works for a pending MethodCode
// enrolment whose code expired.
func (c *Client) Challenge(ctx context.Context, user string) (Challenge, error) {
	var resp challengeResponse
	if err := c.do(ctx, http.MethodPost, "/v1/challenge", "", userRequest{User: user}, &resp); err != nil {
		return Challenge{}, err
	}
	ch := Challenge{Method: resp.Method, Destination: resp.Destination}
	if resp.ExpiresAt != nil {
		ch.ExpiresAt = *resp.ExpiresAt
	}
	return ch, nil
}

// Verify proves the user's identity with a code and returns a session.
func (c *Client) Verify(ctx context.Context, user, code string) (Session, error) {
	return c.codeCall(ctx, "/v1/verify", user, code)
}

func (c *Client) codeCall(ctx context.Context, path, user, code string) (Session, error) {
	var resp sessionResponse
	if err := c.do(ctx, http.MethodPost, path, "", codeRequest{User: user, Code: code}, &resp); err != nil {
		return Session{}, err
	}
	if resp.Session.Token == "" {
		return Session{}, fmt.Errorf("%w: %s answered without a session", ErrUnexpectedReply, c.base)
	}
	return Session{User: resp.User, Token: resp.Session.Token, ExpiresAt: resp.Session.ExpiresAt}, nil
}

// Slice retrieves the user's slice.
func (c *Client) Slice(ctx context.Context, s Session) ([SliceSize]byte, error) {
	var out [SliceSize]byte
	var resp sliceJSON
	if err := c.do(ctx, http.MethodGet, "/v1/slice", s.Token, nil, &resp); err != nil {
		return out, err
	}
	b, err := base64.StdEncoding.DecodeString(resp.Slice)
	if err != nil || len(b) != SliceSize {
		return out, fmt.Errorf("%w: %s returned a slice that is not %d bytes of base64", ErrUnexpectedReply, c.base, SliceSize)
	}
	copy(out[:], b)
	clear(b)
	return out, nil
}

// ReplaceSlice stores a new slice for the user (presentation key
// rotation); the old one is no longer returned.
func (c *Client) ReplaceSlice(ctx context.Context, s Session, slice [SliceSize]byte) error {
	body := sliceJSON{Slice: base64.StdEncoding.EncodeToString(slice[:])}
	return c.do(ctx, http.MethodPut, "/v1/slice", s.Token, body, nil)
}

// Fund asks the server's faucet to pay address, once per user. It returns
// the payment's txid; ErrFaucetUsed (with the earlier txid in *Error.TxID)
// if the user was already paid; ErrNoFaucet if the server has none.
func (c *Client) Fund(ctx context.Context, s Session, address string) (string, error) {
	var resp faucetResponse
	if err := c.do(ctx, http.MethodPost, "/v1/faucet", s.Token, faucetRequest{Address: address}, &resp); err != nil {
		return "", err
	}
	return resp.TxID, nil
}

// maxReply bounds what the client reads from a server.
const maxReply = 64 << 10

func (c *Client) do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("secret server request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("secret server request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("secret server at %s: %w", c.base, ctxErr)
		}
		return fmt.Errorf("%w: secret server at %s is unreachable: %v", ErrUnavailable, c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return fmt.Errorf("%w: reading reply from secret server at %s: %v", ErrUnavailable, c.base, err)
	}
	if len(data) > maxReply {
		return fmt.Errorf("%w: %s sent a reply over %d bytes", ErrUnexpectedReply, c.base, maxReply)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%w: %s %s: %v", ErrUnexpectedReply, method, c.base+path, err)
		}
		return nil
	}
	return c.replyError(resp, data)
}

func (c *Client) replyError(resp *http.Response, data []byte) error {
	var eb errorBody
	e := &Error{Status: resp.StatusCode, URL: c.base}
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
		e.AttemptsLeft, e.TxID = eb.Error.AttemptsLeft, eb.Error.TxID
		e.RetryAfter = time.Duration(eb.Error.RetryAfter) * time.Second
	} else {
		e.Message = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(truncate(data, 200))))
	}
	if s, ok := codeSentinels[e.Code]; ok {
		e.sentinel = s
	} else {
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			e.sentinel = ErrRateLimited
		case resp.StatusCode == http.StatusRequestEntityTooLarge:
			e.sentinel = ErrTooLarge
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
			// A proxy in front of a server that is down.
			e.sentinel = ErrUnavailable
		default:
			e.sentinel = ErrUnexpectedReply
		}
	}
	return e
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// unwrapURLError drops *url.Error's "Get \"URL\":" prefix, which the
// caller's message already carries.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
