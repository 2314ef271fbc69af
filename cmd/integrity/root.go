package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

// app holds the global flags every command shares.
type app struct {
	dataDir  string
	chain    string
	logLevel string
	// mineInterval overrides the embedded chain's mining interval
	// (agent --mine-interval).
	mineInterval time.Duration
	pprof        string
	// renew is the agent's renewal schedule (hidden flags, for tests).
	renew  system.RenewSchedule
	out    io.Writer
	errOut io.Writer
}

func newRoot() *cobra.Command {
	a := &app{out: os.Stdout, errOut: os.Stderr}
	root := &cobra.Command{
		Use:   "integrity",
		Short: "Your System — encrypted files, folders and shares — on a Bitcoin-protocol chain, mounted at ~/integrity",
		Long: `integrity keeps a person's System (encrypted files, folders, shared folders,
mounted images and the WebAssembly OS they boot) on a Bitcoin-protocol chain
as transactions from BIP32 node addresses, rebuilds it on any device from the
password, and shows it as a real FUSE mount at ~/integrity.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def, err := config.DefaultPath()
	if err != nil {
		def = ""
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.dataDir, "data-dir", def, "where this System's state lives on this device (several may live side by side)")
	pf.StringVar(&a.chain, "chain", "", `chain backend: "embedded" (default) or btcd://user:pass@host:port?net=simnet; remembered in the data dir after first use`)
	pf.StringVar(&a.logLevel, "log-level", "warn", "debug, info, warn or error")
	root.AddCommand(
		newChainCmd(a),
		newWalletCmd(a),
		newAgentCmd(a),
		newSecretServerCmd(a),
		newImageServerCmd(a),
	)
	root.AddCommand(newAccountCmds(a)...)
	root.AddCommand(newFSCmds(a)...)
	root.AddCommand(newMountCmds(a)...)
	root.AddCommand(newVMCmds(a)...)
	root.AddCommand(newShareCmds(a)...)
	root.AddCommand(newImageCmds(a))
	return root
}

// dir returns the data directory from --data-dir.
func (a *app) dir() (config.Dir, error) {
	if a.dataDir == "" {
		return config.Dir{}, errors.New("no data directory: set --data-dir or HOME")
	}
	return config.Dir{Path: a.dataDir}, nil
}

func (a *app) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		lvl = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(a.errOut, &slog.HandlerOptions{Level: lvl}))
}

// openSystem opens the data directory in this process.
func (a *app) openSystem(ctx context.Context, agent bool) (*system.System, config.Dir, error) {
	d, err := a.dir()
	if err != nil {
		return nil, d, err
	}
	s, fresh, err := d.Resolve(a.chain)
	if err != nil {
		return nil, d, err
	}
	run := s
	if a.mineInterval > 0 {
		run.MineInterval = config.Duration(a.mineInterval)
	}
	sys, err := system.Open(ctx, system.Options{Dir: d, Settings: run, Logger: a.logger(), Agent: agent, Progress: a.progress(), Renew: a.renew})
	if err != nil {
		return nil, d, err
	}
	if fresh {
		if err := d.Save(s); err != nil {
			sys.Close()
			return nil, d, err
		}
	}
	return sys, d, nil
}

// caller reaches the System: through the agent when one runs for this data
// directory (it owns the embedded chain and the keys), else in-process.
func (a *app) caller(ctx context.Context) (rpc.Caller, func(), error) {
	d, err := a.dir()
	if err != nil {
		return nil, nil, err
	}
	codes := system.Codes()
	if c, err := rpc.Dial(d.Socket(), codes); err == nil {
		if a.chain != "" {
			s, err := d.Load()
			if err == nil && s.Chain != a.chain {
				c.Close()
				return nil, nil, fmt.Errorf("%w: %s uses %s, not %s", config.ErrChainMismatch, d.Path, config.Redact(s.Chain), config.Redact(a.chain))
			}
		}
		return c, c.Close, nil
	}
	sys, _, err := a.openSystem(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	return &rpc.Local{Handlers: sys.Handlers(), Codes: codes}, func() { _ = sys.Close() }, nil
}

// call runs one method against the System.
func (a *app) call(ctx context.Context, method string, args, result any) error {
	c, done, err := a.caller(ctx)
	if err != nil {
		return err
	}
	defer done()
	return c.Call(ctx, method, args, result)
}

// progress draws the progress of a full sync of the tree on stderr when it
// is a terminal (a new device rebuilding from the chain).
func (a *app) progress() func(done, found int) {
	f, ok := a.errOut.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, found int) {
		if bar == nil {
			bar = progressbar.NewOptions(found, progressbar.OptionSetWriter(f),
				progressbar.OptionSetDescription("reading your tree from the chain"),
				progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
		}
		bar.ChangeMax(found)
		_ = bar.Set(done)
		if done >= found {
			_ = bar.Finish()
		}
	}
}
