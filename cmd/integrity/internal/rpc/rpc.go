// Package rpc carries CLI requests to the agent: JSON calls over HTTP on a
// Unix socket that only the socket owner's uid may use (checked with
// SO_PEERCRED on every connection, on top of the socket's 0600 mode).
//
// The same Handlers table serves both the socket and in-process calls, so
// a command behaves identically whether or not an agent is running.
package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Handler serves one method. args is the request's JSON (may be empty).
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// Handlers maps method names ("chain.status") to handlers.
type Handlers map[string]Handler

// Caller is how commands reach the System: through the agent's socket
// (Client) or in-process (Local).
type Caller interface {
	Call(ctx context.Context, method string, args, result any) error
}

// ErrorCode names an error class that survives the trip over the socket so
// the CLI can branch on it (and map it to exit codes or errno).
type ErrorCode string

// Codes maps sentinel errors to codes; register with RegisterError. It is
// filled at start-up by the packages that own the sentinels, then only read.
type Codes struct {
	byCode map[ErrorCode]error
	order  []ErrorCode
}

// NewCodes returns an empty registry.
func NewCodes() *Codes { return &Codes{byCode: map[ErrorCode]error{}} }

// Register ties a code to a sentinel error.
func (c *Codes) Register(code ErrorCode, sentinel error) {
	if _, dup := c.byCode[code]; !dup {
		c.order = append(c.order, code)
	}
	c.byCode[code] = sentinel
}

func (c *Codes) codeOf(err error) ErrorCode {
	for _, code := range c.order {
		if errors.Is(err, c.byCode[code]) {
			return code
		}
	}
	return ""
}

// RemoteError is an error returned by the agent. It unwraps to the
// registered sentinel of its code, so errors.Is works across the socket.
type RemoteError struct {
	Code     ErrorCode `json:"code,omitempty"`
	Message  string    `json:"message"`
	sentinel error
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel for the error's code, if known.
func (e *RemoteError) Unwrap() error { return e.sentinel }

type response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *RemoteError    `json:"error,omitempty"`
}

// dispatch runs one call and encodes its outcome.
func dispatch(ctx context.Context, h Handlers, codes *Codes, method string, args json.RawMessage) response {
	fn, ok := h[method]
	if !ok {
		return response{Error: &RemoteError{Message: fmt.Sprintf("unknown method %q (agent and CLI versions differ?)", method)}}
	}
	res, err := fn(ctx, args)
	if err != nil {
		return response{Error: &RemoteError{Code: codes.codeOf(err), Message: err.Error()}}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return response{Error: &RemoteError{Message: fmt.Sprintf("encode result of %s: %v", method, err)}}
	}
	return response{Result: b}
}

func decode(codes *Codes, r response, result any) error {
	if r.Error != nil {
		r.Error.sentinel = codes.byCode[r.Error.Code]
		return r.Error
	}
	if result == nil || len(r.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Result, result); err != nil {
		return fmt.Errorf("decode agent answer: %w", err)
	}
	return nil
}

// Local calls handlers in-process, through the same JSON encoding the
// socket uses so that both paths accept and return exactly the same data.
type Local struct {
	Handlers Handlers
	Codes    *Codes
}

// Call implements Caller.
func (l *Local) Call(ctx context.Context, method string, args, result any) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encode arguments of %s: %w", method, err)
	}
	return decode(l.Codes, dispatch(ctx, l.Handlers, l.Codes, method, raw), result)
}

// MaxRequest bounds a request body; bulk data travels by path, not inline.
const MaxRequest = 4 << 20

// Server serves handlers on a Unix socket.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen creates the socket (replacing a stale one) and starts serving.
func Listen(path string, h Handlers, codes *Codes, log *slog.Logger) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("an agent is already listening on %s", path)
	}
	_ = os.Remove(path) // stale socket from a crashed agent
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/call/{method}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequest))
		var resp response
		if err != nil {
			resp.Error = &RemoteError{Message: fmt.Sprintf("request too large or unreadable: %v", err)}
		} else {
			resp = dispatch(r.Context(), h, codes, r.PathValue("method"), body)
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(resp); err != nil {
			log.Debug("rpc: write response", "err", err)
		}
	})
	s := &Server{
		ln: &peerCredListener{Listener: ln, uid: os.Getuid(), log: log},
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
	}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("rpc: serve", "err", err)
		}
	}()
	return s, nil
}

// Close stops the server, letting calls in flight finish for a while.
func (s *Server) Close(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// peerCredListener drops connections from any uid but the owner's.
type peerCredListener struct {
	net.Listener
	uid int
	log *slog.Logger
}

func (l *peerCredListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && uid == l.uid {
			return c, nil
		}
		l.log.Warn("rpc: refused connection from another user", "uid", uid, "err", err)
		c.Close()
	}
}

func peerUID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// Client calls an agent over its socket.
type Client struct {
	path  string
	http  *http.Client
	codes *Codes
}

// ErrNoAgent: nothing listens on the socket.
var ErrNoAgent = errors.New("no agent is running")

// Dial returns a client if an agent answers on path, else ErrNoAgent.
func Dial(path string, codes *Codes) (*Client, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrNoAgent, path, err)
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{path: path, http: &http.Client{Transport: tr}, codes: codes}, nil
}

// Call implements Caller.
func (c *Client) Call(ctx context.Context, method string, args, result any) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encode arguments of %s: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/v1/call/"+method, bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("agent call %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("agent at %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	var r response
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&r); err != nil {
		return fmt.Errorf("agent at %s: bad answer to %s: %w", c.path, method, err)
	}
	return decode(c.codes, r, result)
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
