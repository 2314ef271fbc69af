package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

func newAgentCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent in the foreground: it owns the chain, holds the keys and serves commands on its socket",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAgent(cmd.Context())
		},
	}
	cmd.Flags().DurationVar(&a.mineInterval, "mine-interval", 0, "embedded chain: mine pending transactions this often (default: the data dir's setting, 2s)")
	return cmd
}

// runAgent serves the System until ctx ends (SIGINT/SIGTERM).
func (a *app) runAgent(ctx context.Context) error {
	sys, d, err := a.openSystem(ctx, true)
	if err != nil {
		return err
	}
	defer sys.Close()
	log := a.logger()
	srv, err := rpc.Listen(d.Socket(), sys.Handlers(), system.Codes(), log)
	if err != nil {
		return err
	}
	if err := config.WriteFileAtomic(d.PIDFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(d.PIDFile())
	log.Info("agent ready", "data_dir", d.Path, "socket", d.Socket())
	fmt.Fprintf(a.errOut, "agent ready: %s\n", d.Socket())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(sctx); err != nil {
		log.Warn("agent: socket shutdown", "err", err)
	}
	return nil
}
