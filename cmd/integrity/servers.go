package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/keyring/secretserver"
)

// detached starts a child in its own session, so it outlives the command
// that started it and its terminal.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

func newSecretServerCmd(a *app) *cobra.Command {
	var listen, data, keyFile, codeFile, codeCommand string
	var faucetAmount int64
	var resend time.Duration
	var rate float64
	var burst int
	cmd := &cobra.Command{
		Use:   "secret-server --listen ADDR --data DIR",
		Short: "Run a Secret Server: safeguards presentation keys (or slices) and returns them after verification",
		Long: `Run a Secret Server (paper: "Secret Server"): users enrol a presentation key
slice under a verification method (TOTP, or a one-time code sent by
--code-command or, for development, appended to --code-file) and get it back
after verifying. State is kept in Badger under --data, encrypted at rest
under the server key (--key-file, default DIR/server.key — keep it apart
from the data). With --faucet-amount, the server's wallet (the --data-dir
System's wallet) pays each new user's presentation address once.
See docs/SECRET-SERVER.md for the HTTP API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listen == "" || data == "" {
				return errors.New("secret-server needs --listen and --data")
			}
			ctx := cmd.Context()
			cfg := secretserver.Config{DataDir: data, KeyFile: keyFile, Logger: a.logger(), CodeResendInterval: resend,
				IPRate: secretserver.RateLimit{PerSecond: rate, Burst: burst}}
			switch {
			case codeCommand != "" && codeFile != "":
				return errors.New("give --code-command or --code-file, not both")
			case codeCommand != "":
				fs := strings.Fields(codeCommand)
				cfg.Sender = &secretserver.CommandSender{Path: fs[0], Args: fs[1:]}
			case codeFile != "":
				cfg.Sender = secretserver.NewFileSender(codeFile)
			}
			if faucetAmount > 0 {
				sys, _, err := a.openSystem(ctx, true)
				if err != nil {
					return fmt.Errorf("faucet wallet: %w", err)
				}
				defer sys.Close()
				cfg.Faucet = faucetFunc(func(ctx context.Context, addr string) (string, error) {
					to, err := address.DecodeAddress(addr, sys.Backend().Params())
					if err != nil {
						return "", err
					}
					h, err := sys.Wallet().Send(ctx, to, faucetAmount)
					return h.String(), err
				})
			}
			srv, err := secretserver.New(cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("secret server: %w", err)
			}
			hs := srv.HTTPServer(listen)
			fmt.Fprintf(a.errOut, "secret server listening on http://%s\n", ln.Addr())
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			select {
			case err := <-errc:
				if !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return hs.Shutdown(sctx)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "address to serve HTTP on, e.g. 127.0.0.1:7467")
	f.StringVar(&data, "data", "", "directory for the server's state")
	f.StringVar(&keyFile, "key-file", "", "the server key (default DATA/server.key; created 0600 if missing)")
	f.StringVar(&codeFile, "code-file", "", "development code sender: append \"destination code\" lines to this file")
	f.StringVar(&codeCommand, "code-command", "", "code sender: run this command with INTEGRITY_CODE_DESTINATION and INTEGRITY_CODE in its environment")
	f.Int64Var(&faucetAmount, "faucet-amount", 0, "pay each new user's presentation address this many satoshis, once")
	f.DurationVar(&resend, "code-resend-interval", 30*time.Second, "least time between two codes to one user")
	f.Float64Var(&rate, "rate", 1, "requests per second allowed from one client IP")
	f.IntVar(&burst, "burst", 30, "burst of requests allowed from one client IP")
	return cmd
}

type faucetFunc func(ctx context.Context, addr string) (string, error)

func (f faucetFunc) Fund(ctx context.Context, addr string) (string, error) { return f(ctx, addr) }
