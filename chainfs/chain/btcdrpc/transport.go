package btcdrpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/rpcclient"
)

const (
	// postConcurrency caps parallel HTTP POST requests (btcd admits 10
	// HTTP clients at once by default).
	postConcurrency = 8
	// maxReply bounds an HTTP POST answer; the largest legitimate ones
	// are pages of 90 KB transactions in hex.
	maxReply = 512 << 20
)

// errAuth: btcd answered 401/403.
var errAuth = errors.New("authentication failed")

// Two transports carry requests. Websocket (rpcclient) multiplexes
// requests on one connection and delivers notifications. HTTP POST — used
// when asked for, or when the endpoint does not upgrade to a websocket —
// is a plain request per call, written here rather than with rpcclient's
// POST mode, which retries a refused connection for 22 s regardless of the
// caller's context and serialises all requests.

// session returns the websocket connection, dialling if there is none. In
// HTTP POST mode it returns nil and post=true.
func (c *Client) session(ctx context.Context) (rpc *rpcclient.Client, post bool, err error) {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return nil, false, c.unavailable("client closed", nil)
	case c.post:
		c.mu.Unlock()
		return nil, true, nil
	case c.rpc != nil && !c.rpc.Disconnected():
		rpc := c.rpc
		c.mu.Unlock()
		return rpc, false, nil
	}
	c.mu.Unlock()

	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	c.mu.Lock()
	// Someone else may have connected while we waited.
	if c.rpc != nil && !c.rpc.Disconnected() {
		rpc := c.rpc
		c.mu.Unlock()
		return rpc, false, nil
	}
	if old := c.rpc; old != nil {
		c.rpc = nil
		go old.Shutdown() // already disconnected: this only releases it
		c.log.Warn("btcd: connection lost; reconnecting")
	}
	if c.dialErr != nil && time.Since(c.lastDial) < redialInterval {
		err := c.dialErr
		c.mu.Unlock()
		return nil, false, err
	}
	c.mu.Unlock()

	rpc, err = c.dialWebsocket(ctx)
	if errors.Is(err, errNoWebsocket) && c.cfg.Transport == "auto" {
		c.log.Warn("btcd: endpoint does not offer websockets; using HTTP POST and polling", "err", err)
		c.mu.Lock()
		c.post = true
		c.mu.Unlock()
		return nil, true, nil
	}
	// A reconnection with subscribers: notifications go on before the
	// connection is used, so nothing sent through it goes unannounced.
	registered := false
	if err == nil && c.w.hasSubs() {
		if rerr := c.register(ctx, rpc); rerr != nil {
			c.log.Debug("btcd: register notifications", "err", rerr)
		} else {
			registered = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastDial = time.Now()
	c.dialErr = err
	if err != nil {
		return nil, false, err
	}
	if c.closed {
		rpc.Shutdown()
		return nil, false, c.unavailable("client closed", nil)
	}
	c.rpc = rpc
	c.gen++
	if registered {
		c.regGen = c.gen
	}
	return rpc, false, nil
}

// connState is the connection generation (bumped by every new websocket
// connection) and whether the client polls over HTTP POST.
func (c *Client) connState() (gen uint64, post bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen, c.post
}

var errNoWebsocket = errors.New("no websocket endpoint")

type dialResult struct {
	rpc *rpcclient.Client
	err error
}

func (c *Client) dialWebsocket(ctx context.Context) (*rpcclient.Client, error) {
	cc := &rpcclient.ConnConfig{
		Host:                 c.cfg.Host,
		Endpoint:             "ws",
		User:                 c.cfg.User,
		Pass:                 c.cfg.Pass,
		Params:               c.params.Name,
		DisableTLS:           !c.cfg.TLS,
		Certificates:         c.certs,
		DisableAutoReconnect: true, // we redial ourselves, failing calls fast meanwhile
	}
	handlers := &rpcclient.NotificationHandlers{
		// Handlers run on rpcclient's reader goroutine: never block.
		OnBlockConnected:    func(*chainhash.Hash, int32, time.Time) { c.w.poke() },
		OnBlockDisconnected: func(*chainhash.Hash, int32, time.Time) { c.w.poke() },
		OnTxAcceptedVerbose: func(d *btcjson.TxRawResult) {
			if d != nil {
				c.w.queueTx(d.Hex)
			}
		},
	}
	done := make(chan dialResult, 1)
	go func() {
		rpc, err := rpcclient.New(cc, handlers)
		done <- dialResult{rpc, err}
	}()
	timer := time.NewTimer(dialTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, c.dialError(r.err)
		}
		return r.rpc, nil
	case <-ctx.Done():
		go discard(done)
		return nil, c.unavailable("connect: "+ctx.Err().Error(), ctx.Err())
	case <-timer.C:
		go discard(done)
		return nil, c.unavailable(fmt.Sprintf("no answer within %s (is this btcd's RPC port?)", dialTimeout), context.DeadlineExceeded)
	}
}

// discard shuts down a connection whose dial was abandoned.
func discard(ch <-chan dialResult) {
	if r := <-ch; r.rpc != nil {
		r.rpc.Shutdown()
	}
}

// dialError turns a connection failure into one clear line.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, rpcclient.ErrInvalidAuth), errors.Is(err, errAuth):
		return c.unavailable("authentication failed (check user/password)", err)
	case errors.Is(err, rpcclient.ErrInvalidEndpoint):
		return c.unavailable("websocket endpoint not available", errors.Join(errNoWebsocket, err))
	case errors.Is(err, syscall.ECONNREFUSED):
		return c.unavailable("connection refused (is btcd running?)", err)
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return c.unavailable("connection timed out", err)
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "404"), strings.HasPrefix(msg, "405"):
		return c.unavailable("websocket endpoint not available ("+msg+")", errors.Join(errNoWebsocket, err))
	case strings.HasPrefix(msg, "400"):
		return c.unavailable("bad handshake ("+msg+"): does the node use TLS? add tls=1&cert=...", err)
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:"):
		return c.unavailable("TLS: "+msg, err)
	}
	return c.unavailable("connect: "+msg, err)
}

// pending is a request in flight on either transport.
type pending struct {
	ws     chan *rpcclient.Response
	post   chan postReply
	method string
}

type postReply struct {
	result json.RawMessage
	err    error
}

// send issues cmd without waiting, so several requests can be in flight at
// once.
func (c *Client) send(ctx context.Context, cmd any) (pending, error) {
	method, err := btcjson.CmdMethod(cmd)
	if err != nil {
		return pending{}, fmt.Errorf("btcd: %w", err)
	}
	rpc, post, err := c.session(ctx)
	if err != nil {
		return pending{}, err
	}
	if post {
		return c.postSend(ctx, method, cmd), nil
	}
	return pending{ws: rpc.SendCmd(cmd), method: method}, nil
}

// wait receives a reply and decodes its result into out (if non-nil).
// RPC errors come back as *btcjson.RPCError for callers to interpret;
// everything else is an UnavailableError.
func (c *Client) wait(ctx context.Context, p pending, out any) error {
	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(callTimeout)
		defer t.Stop()
		timeout = t.C
	}
	var raw []byte
	var err error
	select {
	case r := <-p.ws:
		// ReceiveFuture is rpcclient's only exported way to open a
		// Response.
		f := make(chan *rpcclient.Response, 1)
		f <- r
		raw, err = rpcclient.ReceiveFuture(f)
	case r := <-p.post:
		raw, err = r.result, r.err
	case <-ctx.Done():
		return c.unavailable(p.method+": no answer: "+ctx.Err().Error(), ctx.Err())
	case <-timeout:
		return c.unavailable(fmt.Sprintf("%s: no answer within %s", p.method, callTimeout), context.DeadlineExceeded)
	case <-c.closeCh:
		return c.unavailable("client closed", nil)
	}
	if err != nil {
		return c.callError(p.method, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return c.unavailable(p.method+": malformed answer: "+err.Error(), err)
	}
	return nil
}

// call is send then wait.
func (c *Client) call(ctx context.Context, cmd any, out any) error {
	p, err := c.send(ctx, cmd)
	if err != nil {
		return err
	}
	return c.wait(ctx, p, out)
}

// callError classifies a failed request.
func (c *Client) callError(method string, err error) error {
	var re *btcjson.RPCError
	if errors.As(err, &re) {
		return re
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return err
	}
	switch {
	case errors.Is(err, rpcclient.ErrClientDisconnect), errors.Is(err, rpcclient.ErrClientShutdown),
		errors.Is(err, rpcclient.ErrClientNotConnected):
		return c.unavailable(method+": connection lost", err)
	case errors.Is(err, errAuth), errors.Is(err, syscall.ECONNREFUSED):
		return c.dialError(err)
	}
	return c.unavailable(method+": "+err.Error(), err)
}

// httpSetup prepares the HTTP POST transport.
func (c *Client) httpSetup() error {
	tr := &http.Transport{
		Proxy:               nil, // loopback nodes; never through a proxy
		MaxIdleConnsPerHost: postConcurrency,
		IdleConnTimeout:     30 * time.Second,
	}
	scheme := "http"
	if c.cfg.TLS {
		scheme = "https"
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(c.certs) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(c.certs) {
				return fmt.Errorf("btcd at %s: certificate %s holds no PEM certificate", c.cfg.Host, c.cfg.CertFile)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}
	// The client timeout backs up callTimeout: a request abandoned by
	// its caller must not hold a connection forever.
	c.http = &http.Client{Transport: tr, Timeout: callTimeout}
	c.httpURL = scheme + "://" + c.cfg.Host + "/"
	c.postSem = make(chan struct{}, postConcurrency)
	return nil
}

func (c *Client) postSend(ctx context.Context, method string, cmd any) pending {
	ch := make(chan postReply, 1)
	body, err := btcjson.MarshalCmd(btcjson.RpcVersion1, c.nextID.Add(1), cmd)
	if err != nil {
		ch <- postReply{err: fmt.Errorf("marshal %s: %w", method, err)}
		return pending{post: ch, method: method}
	}
	go func() {
		select {
		case c.postSem <- struct{}{}:
		case <-ctx.Done():
			ch <- postReply{err: ctx.Err()}
			return
		}
		defer func() { <-c.postSem }()
		raw, err := c.postDo(ctx, body)
		ch <- postReply{result: raw, err: err}
	}()
	return pending{post: ch, method: method}
}

func (c *Client) postDo(ctx context.Context, body []byte) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.httpURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(c.cfg.User, c.cfg.Pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(data) > maxReply {
		return nil, fmt.Errorf("answer larger than %d bytes", maxReply)
	}
	return parsePostReply(resp.StatusCode, data)
}

// parsePostReply decodes a JSON-RPC answer to an HTTP POST.
func parsePostReply(status int, data []byte) (json.RawMessage, error) {
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return nil, errAuth
	}
	var r struct {
		Result json.RawMessage   `json:"result"`
		Error  *btcjson.RPCError `json:"error"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		snippet := data
		if len(snippet) > 100 {
			snippet = snippet[:100]
		}
		return nil, fmt.Errorf("HTTP %d, not a JSON-RPC answer: %q", status, snippet)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	if len(r.Result) == 0 {
		return json.RawMessage("null"), nil
	}
	return r.Result, nil
}
