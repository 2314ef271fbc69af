// Package btcdrpc is the distributed chain backend: a btcd node (started with
// --txindex --addrindex) reached over JSON-RPC. Several such nodes peered on
// loopback are how two users or two devices share one chain.
//
// The client speaks btcd's websocket RPC (rpcclient) so that notifications
// arrive as they happen; where websockets are unavailable it falls back to
// HTTP POST and polling. It reads an address's history with
// searchrawtransactions, resolves inputs through the transaction index, and
// mines on simnet/regtest by building its own coinbase on getblocktemplate.
package btcdrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/rpcclient"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

const (
	// dialTimeout bounds a connection attempt: btcd's websocket dialer
	// has no timeout of its own, so a black-holed port would hang.
	dialTimeout = 10 * time.Second
	// callTimeout bounds one RPC when the caller's context has none, so a
	// frozen node becomes ErrUnavailable instead of a hang.
	callTimeout = 2 * time.Minute
	// redialInterval: after a failed connection attempt, calls fail fast
	// with that error for this long instead of dialling again each time.
	redialInterval = time.Second
)

// Config is a parsed btcd:// URL.
type Config struct {
	// Host is host:port of btcd's RPC listener.
	Host string
	User string
	Pass string
	// Params is the network the node must be on.
	Params *chaincfg.Params
	// TLS enables TLS; CertFile (PEM) pins the node's self-signed
	// certificate. Off by default: test and demo nodes listen on loopback.
	TLS      bool
	CertFile string
	// Transport is "auto" (websocket, falling back to HTTP POST when the
	// endpoint does not upgrade), "ws" or "post" (HTTP POST and polling).
	Transport string
}

// Networks accepted in the URL's net parameter.
var networks = map[string]*chaincfg.Params{
	"simnet":   &chaincfg.SimNetParams,
	"regtest":  &chaincfg.RegressionNetParams,
	"testnet3": &chaincfg.TestNet3Params,
	"mainnet":  &chaincfg.MainNetParams,
}

// ParseURL parses btcd://user:pass@host:port?net=simnet[&tls=1&cert=/path]
// [&transport=auto|ws|post]. The port defaults to btcd's RPC port for the
// network.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse echoes the input, password included: do not.
		return Config{}, errors.New("btcd URL: malformed (want btcd://user:pass@host:port?net=simnet)")
	}
	if u.Scheme != "btcd" {
		return Config{}, fmt.Errorf("btcd URL: scheme %q, want btcd://user:pass@host:port?net=simnet", u.Scheme)
	}
	if u.Host == "" || u.Opaque != "" {
		return Config{}, errors.New("btcd URL: no host (want btcd://user:pass@host:port?net=simnet)")
	}
	if u.Path != "" && u.Path != "/" {
		return Config{}, fmt.Errorf("btcd URL: unexpected path %q", u.Path)
	}
	cfg := Config{Params: &chaincfg.SimNetParams, Transport: "auto"}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Config{}, fmt.Errorf("btcd URL: query: %w", err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return Config{}, fmt.Errorf("btcd URL: parameter %q given %d times", k, len(v))
		}
		switch val := v[0]; k {
		case "net":
			p, ok := networks[val]
			if !ok {
				return Config{}, fmt.Errorf("btcd URL: unknown net %q (want simnet, regtest, testnet3 or mainnet)", val)
			}
			cfg.Params = p
		case "tls":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return Config{}, fmt.Errorf("btcd URL: tls=%q, want 0 or 1", val)
			}
			cfg.TLS = b
		case "cert":
			cfg.CertFile = val
		case "transport":
			if val != "auto" && val != "ws" && val != "post" {
				return Config{}, fmt.Errorf("btcd URL: transport=%q, want auto, ws or post", val)
			}
			cfg.Transport = val
		default:
			return Config{}, fmt.Errorf("btcd URL: unknown parameter %q (known: net, tls, cert, transport)", k)
		}
	}
	if cfg.CertFile != "" && !cfg.TLS {
		return Config{}, errors.New("btcd URL: cert given without tls=1")
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return Config{}, errors.New("btcd URL: no host")
	}
	if port == "" {
		port = defaultRPCPort(cfg.Params)
	} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return Config{}, fmt.Errorf("btcd URL: bad port %q", port)
	}
	cfg.Host = net.JoinHostPort(host, port)
	if u.User == nil || u.User.Username() == "" {
		return Config{}, fmt.Errorf("btcd URL for %s: no user (btcd requires rpcuser/rpcpass)", cfg.Host)
	}
	cfg.User = u.User.Username()
	cfg.Pass, _ = u.User.Password()
	return cfg, nil
}

// defaultRPCPort is btcd's default RPC port per network.
func defaultRPCPort(p *chaincfg.Params) string {
	switch p.Name {
	case chaincfg.SimNetParams.Name:
		return "18556"
	case chaincfg.MainNetParams.Name:
		return "8334"
	default: // regtest and testnet3 share it in btcd
		return "18334"
	}
}

// String is the URL with the password redacted, for logs and messages.
func (c Config) String() string {
	u := url.URL{Scheme: "btcd", Host: c.Host, RawQuery: "net=" + c.Params.Name}
	if c.User != "" {
		u.User = url.UserPassword(c.User, "xxxxx")
	}
	return u.String()
}

// Client is a connection to a btcd node. It implements chain.Backend.
type Client struct {
	cfg    Config
	params *chaincfg.Params
	log    *slog.Logger
	certs  []byte

	closeOnce sync.Once
	closeCh   chan struct{}

	dialMu   sync.Mutex // one connection attempt at a time
	mu       sync.Mutex
	rpc      *rpcclient.Client // websocket connection
	gen      uint64            // incremented per new websocket connection
	regGen   uint64            // connection with notifications on (0: none)
	post     bool              // HTTP POST mode (polling, no notifications)
	lastDial time.Time
	dialErr  error
	closed   bool

	http    *http.Client // HTTP POST transport
	httpURL string
	postSem chan struct{}
	nextID  atomic.Uint64

	mineMu   sync.Mutex
	pageSize int // searchrawtransactions page

	txs    *lru[chainhash.Hash, []chain.PrevOut] // outputs by txid (immutable)
	blocks *lru[chainhash.Hash, *blockInfo]      // block contents (immutable)

	seenMu sync.Mutex
	seen   map[chainhash.Hash]time.Time // when an unconfirmed tx was first seen

	w watcher
}

var _ chain.Backend = (*Client)(nil)

// Dial connects to the node named by rawURL, checks that it is on the URL's
// network and runs the indexes this backend needs. A nil logger discards.
func Dial(ctx context.Context, rawURL string, logger *slog.Logger) (*Client, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return DialConfig(ctx, cfg, logger)
}

// DialConfig is Dial with a parsed configuration.
func DialConfig(ctx context.Context, cfg Config, logger *slog.Logger) (*Client, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Params == nil {
		cfg.Params = &chaincfg.SimNetParams
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = "auto"
	case "auto", "ws", "post":
	default:
		return nil, fmt.Errorf("btcd: transport %q, want auto, ws or post", cfg.Transport)
	}
	if _, _, err := net.SplitHostPort(cfg.Host); err != nil {
		return nil, fmt.Errorf("btcd: host %q: want host:port", cfg.Host)
	}
	c := &Client{
		cfg:      cfg,
		params:   cfg.Params,
		log:      logger.With("backend", "btcd", "host", cfg.Host),
		closeCh:  make(chan struct{}),
		txs:      newLRU[chainhash.Hash](txCacheBytes, prevOutsCost),
		blocks:   newLRU[chainhash.Hash](blockCacheCost, blockInfoCost),
		seen:     make(map[chainhash.Hash]time.Time),
		post:     cfg.Transport == "post",
		pageSize: defaultPageSize,
	}
	c.w.init()
	if cfg.TLS && cfg.CertFile != "" {
		pem, err := os.ReadFile(cfg.CertFile)
		if err != nil {
			return nil, fmt.Errorf("btcd at %s: read certificate: %w", cfg.Host, err)
		}
		c.certs = pem
	}
	if err := c.httpSetup(); err != nil {
		return nil, err
	}
	if err := c.verify(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// verify checks the node's network and indexes, so misconfiguration shows
// up at Dial with a clear message instead of as odd answers later.
func (c *Client) verify(ctx context.Context) error {
	netP, err := c.send(ctx, btcjson.NewGetCurrentNetCmd())
	if err != nil {
		return err
	}
	// An address nobody uses: the index answers "no information".
	probe, err := zeroAddress(c.params)
	if err != nil {
		return fmt.Errorf("btcd: probe address: %w", err)
	}
	search, err := c.send(ctx, searchCmd(probe, 0, 1))
	if err != nil {
		return err
	}
	txProbe, err := c.send(ctx, btcjson.NewGetRawTransactionCmd(chainhash.Hash{}.String(), btcjson.Int(0)))
	if err != nil {
		return err
	}
	var cur uint32
	if err := c.wait(ctx, netP, &cur); err != nil {
		return c.unexpected(err)
	}
	if cur != uint32(c.params.Net) {
		return fmt.Errorf("btcd at %s is on network %s, the URL says %s", c.cfg.Host, netName(cur), c.params.Name)
	}
	if err := c.wait(ctx, search, nil); err != nil && !isNoAddressInfo(err) {
		if isRPC(err) {
			return fmt.Errorf("btcd at %s cannot search addresses (start it with --txindex --addrindex, as scripts/btcd.sh does): %w", c.cfg.Host, err)
		}
		return err
	}
	if err := c.wait(ctx, txProbe, nil); err != nil {
		var re *btcjson.RPCError
		if !errors.As(err, &re) {
			return err
		}
		if strings.Contains(re.Message, "index must be enabled") {
			return fmt.Errorf("btcd at %s has no transaction index (start it with --txindex --addrindex): %w", c.cfg.Host, err)
		}
	}
	return nil
}

func netName(n uint32) string {
	for name, p := range networks {
		if uint32(p.Net) == n {
			return name
		}
	}
	return fmt.Sprintf("unknown (magic %#08x)", n)
}

// Params implements chain.Backend.
func (c *Client) Params() *chaincfg.Params { return c.params }

// Close implements chain.Backend: it ends subscriptions and disconnects.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		rpc := c.rpc
		c.rpc = nil
		c.mu.Unlock()
		close(c.closeCh)
		if rpc != nil {
			rpc.Shutdown()
			rpc.WaitForShutdown()
		}
		if c.http != nil {
			c.http.CloseIdleConnections()
		}
		c.w.stop()
	})
	return nil
}

// UnavailableError says why the node could not answer. It wraps
// chain.ErrUnavailable (and the underlying cause, if any).
type UnavailableError struct {
	Host   string
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string { return "btcd at " + e.Host + ": " + e.Reason }

// Unwrap lets errors.Is find chain.ErrUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{chain.ErrUnavailable}
	}
	return []error{chain.ErrUnavailable, e.Err}
}

func (c *Client) unavailable(reason string, cause error) error {
	return &UnavailableError{Host: c.cfg.Host, Reason: reason, Err: cause}
}

// unexpected turns an RPC error nobody expected into ErrUnavailable: the
// node answered, but not with anything that says what the chain holds.
func (c *Client) unexpected(err error) error {
	var re *btcjson.RPCError
	if errors.As(err, &re) {
		return c.unavailable(fmt.Sprintf("node error %d: %s", re.Code, re.Message), err)
	}
	return err
}

func isRPC(err error) bool {
	var re *btcjson.RPCError
	return errors.As(err, &re)
}

// isNoAddressInfo: searchrawtransactions' answer for an address (or a
// skip) with no transactions — an empty list, not a failure.
func isNoAddressInfo(err error) bool {
	var re *btcjson.RPCError
	return errors.As(err, &re) && re.Code == btcjson.ErrRPCNoTxInfo &&
		strings.HasPrefix(re.Message, "No information available about address")
}

// isNoTxInfo: getrawtransaction's answer for an unknown transaction.
func isNoTxInfo(err error) bool {
	var re *btcjson.RPCError
	return errors.As(err, &re) && re.Code == btcjson.ErrRPCNoTxInfo &&
		strings.HasPrefix(re.Message, "No information available about transaction")
}
