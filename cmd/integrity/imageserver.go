package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/chain/btcdrpc"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
)

// Image server timeouts.
const (
	// imageChainDialTimeout bounds reaching the chain at start, so a
	// black-holed node fails the start instead of hanging it.
	imageChainDialTimeout = 30 * time.Second
	// imageShutdownTimeout is how long requests in flight get to finish
	// at SIGINT/SIGTERM before their connections are cut.
	imageShutdownTimeout = 30 * time.Second
)

// imagePaymentKeyFile is the payment key's name in the data directory
// (the same name chainfs/imageserver uses for the key it would generate).
const imagePaymentKeyFile = "payment.key"

func newImageServerCmd(a *app) *cobra.Command {
	var listen, data, policy, keyFile string
	var minConf, maxUploads, burst int
	var rate float64
	var forward, forwardLocal bool
	cmd := &cobra.Command{
		Use:   "image-server --listen ADDR --data DIR [--policy POLICY]",
		Short: "Run an Image Server: paid, content-addressed hosting of mountable images and encrypted blobs",
		Long: `Run an Image Server (paper: "Mountable Images and Image Servers"): clients
ask for a quote, pay it on chain to a fresh address of the server's payment
key, upload content named by its SHA-256, and anyone downloads it by hash.
State and content are kept under --data.

--policy is comma-separated key=value: max-size (e.g. 2GiB), price and
public-price (sat per MiB per day), download-price (sat per MiB), min-days,
max-days, public=yes|no, private=yes|no. A policy with any price checks
payments on the chain named by the global --chain flag (a btcd:// URL),
or else on the btcd chain the --data-dir System uses; a free policy needs
no chain.

Quotes are paid to children of the payment key: --payment-key FILE (an
xpub suffices), or one generated in DIR/payment.key (0600) — back it up,
payments are spendable only with it. See docs/IMAGE-SERVER.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listen == "" || data == "" {
				return errors.New("image-server needs --listen and --data")
			}
			p, err := imageserver.ParsePolicy(policy)
			if err != nil {
				return fmt.Errorf("--policy %q: %w", policy, err)
			}
			if minConf < 0 {
				return fmt.Errorf("--min-conf %d: must not be negative", minConf)
			}
			paid := p.Paid()
			return a.runImageServer(cmd.Context(), imageServerOptions{
				listen: listen, data: data, keyFile: keyFile, paid: paid,
				cfg: imageserver.Config{
					Policy: p, MinConfirmations: minConf, MaxUploads: maxUploads,
					IPRate:  imageserver.RateLimit{PerSecond: rate, Burst: burst},
					Forward: forward, ForwardLocal: forwardLocal,
				},
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "address to serve HTTP on, e.g. 127.0.0.1:7468 (put TLS in front for the Internet)")
	f.StringVar(&data, "data", "", "directory for the server's state, content and generated payment key")
	f.StringVar(&policy, "policy", "", "what the server accepts and charges, e.g. max-size=2GiB,price=10,download-price=1 (default: free, 1 GiB)")
	f.StringVar(&keyFile, "payment-key", "", "file holding the BIP32 extended key (xpub suffices) quotes are paid to (default DATA/payment.key, generated 0600)")
	f.IntVar(&minConf, "min-conf", 0, "confirmations a payment needs (0: accepted into the mempool suffices)")
	f.BoolVar(&forward, "forward", false, "offer to forward hosted content to other image servers at the owner's signed request")
	f.BoolVar(&forwardLocal, "forward-local", false, "let forwards reach loopback and private addresses (a cluster on one host, tests)")
	f.Float64Var(&rate, "rate", 20, "requests per second allowed from one client IP")
	f.IntVar(&burst, "burst", 100, "burst of requests allowed from one client IP")
	f.IntVar(&maxUploads, "max-uploads", 4, "concurrent uploads and patches (more get 503 busy)")
	return cmd
}

type imageServerOptions struct {
	listen, data, keyFile string
	// paid: the policy has a price, so payments must be checked.
	paid bool
	cfg  imageserver.Config
}

func (a *app) runImageServer(ctx context.Context, o imageServerOptions) error {
	log := a.logger()
	chainURL, err := a.imageServerChain(o.paid)
	if err != nil {
		return err
	}
	switch {
	case chainURL == "" && o.paid:
		return errors.New("image server: a policy with prices checks payments on a chain its payers share: give --chain btcd://user:pass@host:port?net=simnet (or a free --policy)")
	case chainURL == config.ChainEmbedded && o.paid:
		return errors.New("image server: the embedded chain is private to one data directory, so payers cannot pay on it: give --chain btcd://user:pass@host:port?net=simnet (or a free --policy)")
	case chainURL != "" && chainURL != config.ChainEmbedded && !strings.HasPrefix(chainURL, "btcd://"):
		return fmt.Errorf("image server: unknown chain %q: use a btcd://user:pass@host:port?net=simnet URL", config.Redact(chainURL))
	case !o.paid:
		chainURL = "" // free: payments are never checked, no chain needed
	}
	if err := os.MkdirAll(o.data, 0o700); err != nil {
		return fmt.Errorf("image server data directory: %w", err)
	}
	// One server per data directory: two would race for the payment key
	// and the state database.
	unlock, err := lockDir(o.data)
	if err != nil {
		return err
	}
	defer unlock()
	var backend chain.Backend
	if chainURL != "" {
		dctx, cancel := context.WithTimeout(ctx, imageChainDialTimeout)
		backend, err = btcdrpc.Dial(dctx, chainURL, log)
		cancel()
		if err != nil {
			return fmt.Errorf("image server: cannot reach the chain at %s to check payments: %w", config.Redact(chainURL), err)
		}
		defer backend.Close()
		o.cfg.Chain = backend
		if o.cfg.PaymentKey, err = loadPaymentKey(o.keyFile, o.data, backend.Params(), log); err != nil {
			return fmt.Errorf("image server: %w", err)
		}
	}
	o.cfg.DataDir = o.data
	o.cfg.Logger = log
	srv, err := imageserver.New(o.cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return errors.Join(fmt.Errorf("image server: %w", err), srv.Close())
	}
	hs := srv.HTTPServer(o.listen)
	fmt.Fprintf(a.errOut, "image server listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var serveErr error
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			serveErr = fmt.Errorf("image server: %w", err)
		}
	case <-ctx.Done():
		log.Info("image server shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), imageShutdownTimeout)
		if err := hs.Shutdown(sctx); err != nil {
			// Transfers still running past the grace period: cut them,
			// so Close (which waits for handlers) does not hang.
			log.Warn("image server: requests still running at shutdown; closing their connections", "err", err)
			_ = hs.Close()
		}
		cancel()
	}
	if err := srv.Close(); err != nil {
		return errors.Join(serveErr, err)
	}
	return serveErr
}

// imageServerChain is the chain to check payments on: --chain, else, for
// a priced policy, the btcd chain the --data-dir System remembers (read
// only: the server never binds a data directory to a chain). "" when
// there is none.
func (a *app) imageServerChain(paid bool) (string, error) {
	if a.chain != "" {
		return a.chain, nil
	}
	// A free server must not fail to start because the System's node is
	// down: it would never ask it anything.
	if !paid || a.dataDir == "" {
		return "", nil
	}
	s, err := (config.Dir{Path: a.dataDir}).Load()
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(s.Chain, "btcd://") {
		return s.Chain, nil
	}
	return "", nil
}

// loadPaymentKey returns the payment key's text: from keyFile if given,
// else DATA/payment.key, created on first start. The command creates it
// itself, atomically and synced, before any quote can name one of its
// addresses: a key lost to a crash would strand every payment made to it.
func loadPaymentKey(keyFile, dataDir string, params *chaincfg.Params, log *slog.Logger) (string, error) {
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return "", fmt.Errorf("reading --payment-key: %w", err)
		}
		text := strings.TrimSpace(string(b))
		if text == "" {
			return "", fmt.Errorf("--payment-key %s is empty", keyFile)
		}
		return text, nil
	}
	path := filepath.Join(dataDir, imagePaymentKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		text := strings.TrimSpace(string(b))
		if text == "" {
			return "", fmt.Errorf("payment key %s is empty (restore it from your backup)", path)
		}
		return text, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("reading payment key: %w", err)
	}
	seed := make([]byte, hdkeychain.RecommendedSeedLen)
	if _, err := rand.Read(seed); err != nil {
		return "", fmt.Errorf("payment key: %w", err)
	}
	master, err := hdkeychain.NewMaster(seed, params)
	clear(seed)
	if err != nil {
		return "", fmt.Errorf("payment key: %w", err)
	}
	text := master.String()
	if err := config.WriteFileAtomic(path, []byte(text+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("payment key: %w", err)
	}
	if err := syncDir(dataDir); err != nil {
		return "", fmt.Errorf("payment key: %w", err)
	}
	log.Warn("generated a payment key; back it up — payments to this image server are spendable only with it", "path", path)
	return text, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lockDir takes an exclusive lock on dir for the life of the process (the
// kernel drops it when the process dies, however it dies).
func lockDir(dir string) (func(), error) {
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image server: locking %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("image server: another image server is using %s", dir)
		}
		return nil, fmt.Errorf("image server: locking %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
