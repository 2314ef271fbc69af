package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // --pprof
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
	"github.com/integrity-sys/integrity/fuse"
)

// mountFlags are the options of `integrity mount` and `integrity agent --mount`.
type mountFlags struct {
	dir        string
	options    []string
	debug      bool
	foreground bool
}

func (m *mountFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringSliceVarP(&m.options, "options", "o", nil, "mount options: allow_other, ro")
	cmd.Flags().BoolVar(&m.debug, "debug", false, "log every FUSE request")
}

// MountArgs travel to the agent (mount.start).
type MountArgs struct {
	Dir        string `json:"dir"`
	AllowOther bool   `json:"allow_other,omitempty"`
	ReadOnly   bool   `json:"read_only,omitempty"`
	Debug      bool   `json:"debug,omitempty"`
}

func (m *mountFlags) args(dir string) (MountArgs, error) {
	a := MountArgs{Dir: dir, Debug: m.debug}
	for _, o := range m.options {
		for _, o := range strings.Split(o, ",") {
			switch strings.TrimSpace(o) {
			case "allow_other":
				a.AllowOther = true
			case "ro":
				a.ReadOnly = true
			case "rw", "":
			default:
				return a, fmt.Errorf("unknown mount option %q (known: allow_other, ro)", o)
			}
		}
	}
	return a, nil
}

func defaultMountDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory for the default mount point: give one: %w", err)
	}
	return filepath.Join(home, "integrity"), nil
}

func newAgentCmd(a *app) *cobra.Command {
	var mf mountFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent in the foreground: it owns the chain, holds the keys, serves commands and the mount",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var m *MountArgs
			if mf.dir != "" {
				ma, err := mf.args(mf.dir)
				if err != nil {
					return err
				}
				m = &ma
			}
			return a.runAgent(cmd.Context(), m)
		},
	}
	cmd.Flags().DurationVar(&a.mineInterval, "mine-interval", 0, "embedded chain: mine pending transactions this often (default: the data dir's setting, 2s)")
	cmd.Flags().StringVar(&mf.dir, "mount", "", "also mount the System at this directory")
	cmd.Flags().StringVar(&a.pprof, "pprof", "", "serve Go profiles on this loopback address (debugging)")
	_ = cmd.Flags().MarkHidden("pprof")
	// For tests: the automatic renewal's period and window (default 12h,
	// 720h), so a test sees a run within seconds.
	cmd.Flags().DurationVar(&a.renew.Every, "auto-renew-every", 0, "renew hosting this often (tests)")
	cmd.Flags().DurationVar(&a.renew.Window, "auto-renew-window", 0, "renew hosting that ends within this (tests)")
	_ = cmd.Flags().MarkHidden("auto-renew-every")
	_ = cmd.Flags().MarkHidden("auto-renew-window")
	mf.register(cmd)
	return cmd
}

// agent serves the System on the socket and, when asked, the mount.
type agent struct {
	sys *system.System
	log *slog.Logger

	mu    sync.Mutex
	mount *fuse.Server
	margs MountArgs
}

// runAgent serves the System until ctx ends (SIGINT/SIGTERM), then
// unmounts cleanly and commits what is pending.
func (a *app) runAgent(ctx context.Context, m *MountArgs) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	sys, d, err := a.openSystem(ctx, true)
	if err != nil {
		return err
	}
	log := a.logger()
	ag := &agent{sys: sys, log: log}
	if a.pprof != "" {
		go func() { log.Info("pprof", "err", http.ListenAndServe(a.pprof, nil)) }()
	}
	// A System on this device: read the tree now, so the agent follows
	// other devices' changes from the start.
	if _, err := sys.Tree(ctx); err != nil && !errors.Is(err, system.ErrNotLoggedIn) {
		sys.Close()
		return err
	}
	defer func() {
		ag.unmount()
		if err := sys.Close(); err != nil {
			log.Error("agent: close", "err", err)
		}
	}()
	handlers := sys.Handlers()
	handlers["mount.start"] = ag.handleMount
	handlers["mount.stop"] = ag.handleUnmount
	handlers["agent.status"] = ag.handleStatus
	handlers["agent.stop"] = func(context.Context, json.RawMessage) (any, error) {
		stop()
		return struct{}{}, nil
	}
	srv, err := rpc.Listen(d.Socket(), handlers, system.Codes(), log)
	if err != nil {
		return err
	}
	if err := config.WriteFileAtomic(d.PIDFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(d.PIDFile())
	if m != nil {
		if err := ag.start(ctx, *m); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = srv.Close(sctx)
			cancel()
			return err
		}
	}
	log.Info("agent ready", "data_dir", d.Path, "socket", d.Socket())
	fmt.Fprintf(a.errOut, "agent ready: %s\n", d.Socket())
	<-ctx.Done()
	log.Info("agent stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(sctx); err != nil {
		log.Warn("agent: socket shutdown", "err", err)
	}
	return nil
}

func (ag *agent) start(ctx context.Context, m MountArgs) error {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if ag.mount != nil {
		return fmt.Errorf("already mounted at %s", ag.mount.Dir())
	}
	t, err := ag.sys.Tree(ctx)
	if err != nil {
		return err
	}
	// A mount left by a crashed agent answers ENOTCONN to everything,
	// even mkdir: clear it first.
	if cleared, err := fuse.ClearStale(m.Dir); err != nil {
		return fmt.Errorf("mount point %s: %w", m.Dir, err)
	} else if cleared {
		ag.log.Warn("cleared a stale mount left by a crash", "dir", m.Dir)
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	s, err := fuse.Mount(m.Dir, fuse.Tree{T: t}, fuse.Options{
		AllowOther: m.AllowOther, ReadOnly: m.ReadOnly, Debug: m.Debug, Logger: ag.log,
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Dir, err)
	}
	ag.mount, ag.margs = s, m
	ag.log.Info("mounted", "dir", m.Dir, "method", s.Method(), "allow_other", m.AllowOther, "ro", m.ReadOnly)
	go ag.watchMount(s)
	return nil
}

// watchMount forgets a mount that went away without the agent (fusermount3
// -u, umount -l): status then says so, and shutting down does not retry
// unmounting it.
func (ag *agent) watchMount(s *fuse.Server) {
	s.Wait()
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if ag.mount == s {
		ag.mount = nil
		ag.log.Warn("the mount was removed from outside the agent", "dir", s.Dir())
	}
}

func (ag *agent) unmount() error {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if ag.mount == nil {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ { // busy while a program has files open
		if err = ag.mount.Unmount(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w (is a program using it?)", ag.mount.Dir(), err)
	}
	ag.log.Info("unmounted", "dir", ag.mount.Dir())
	ag.mount = nil
	return nil
}

func (ag *agent) handleMount(ctx context.Context, raw json.RawMessage) (any, error) {
	var m MountArgs
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	// The mount outlives this request.
	return struct{}{}, ag.start(context.WithoutCancel(ctx), m)
}

func (ag *agent) handleUnmount(context.Context, json.RawMessage) (any, error) {
	return struct{}{}, ag.unmount()
}

// AgentStatus answers agent.status.
type AgentStatus struct {
	PID        int    `json:"pid"`
	MountPoint string `json:"mount_point,omitempty"`
	ReadOnly   bool   `json:"read_only,omitempty"`
	AllowOther bool   `json:"allow_other,omitempty"`
}

func (ag *agent) handleStatus(context.Context, json.RawMessage) (any, error) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	s := AgentStatus{PID: os.Getpid()}
	if ag.mount != nil {
		s.MountPoint, s.ReadOnly, s.AllowOther = ag.mount.Dir(), ag.margs.ReadOnly, ag.margs.AllowOther
	}
	return s, nil
}

func newMountCmds(a *app) []*cobra.Command {
	var mf mountFlags
	mount := &cobra.Command{
		Use:   "mount [DIR]",
		Short: "Mount your System at DIR (default ~/integrity), served by the agent",
		Long: `Mount your System with FUSE. The agent — the process that holds your keys —
starts in the background (or, with --foreground, stays attached and logs to
stderr) and serves the mount; every change is committed to the chain
(coalesced, on close; at once on fsync). Earlier versions of every file are
under DIR/.history/<path>/<revision>. Options: -o allow_other, -o ro.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := defaultMountDir()
			if len(args) == 1 {
				dir, err = filepath.Abs(args[0])
			}
			if err != nil {
				return err
			}
			ma, err := mf.args(dir)
			if err != nil {
				return err
			}
			return a.runMount(cmd.Context(), ma, mf.foreground)
		},
	}
	mf.register(mount)
	mount.Flags().BoolVar(&mf.foreground, "foreground", false, "run the agent in this process, logging to stderr")

	unmount := &cobra.Command{
		Use:   "unmount [DIR]",
		Short: "Unmount the System (pending changes are committed first)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := a.dir()
			if err != nil {
				return err
			}
			if c, err := rpc.Dial(d.Socket(), system.Codes()); err == nil {
				defer c.Close()
				if err := c.Call(cmd.Context(), "fs.sync", nil, nil); err != nil && !errors.Is(err, system.ErrNotLoggedIn) {
					return err
				}
				if err := c.Call(cmd.Context(), "mount.stop", nil, nil); err != nil {
					return err
				}
				// The agent goes too (it commits what is pending as it
				// stops); `integrity agent` runs one without a mount.
				var st AgentStatus
				if err := c.Call(cmd.Context(), "agent.status", nil, &st); err != nil {
					return err
				}
				if err := c.Call(cmd.Context(), "agent.stop", nil, nil); err != nil {
					return err
				}
				if err := waitExit(cmd.Context(), st.PID); err != nil {
					return err
				}
				fmt.Fprintln(a.errOut, "unmounted")
				return nil
			}
			// No agent: a mount left behind by a crash.
			dir, err := defaultMountDir()
			if len(args) == 1 {
				dir, err = filepath.Abs(args[0])
			}
			if err != nil {
				return err
			}
			cleared, err := fuse.ClearStale(dir)
			if err != nil {
				return err
			}
			if !cleared {
				return fmt.Errorf("nothing is mounted at %s by an agent of %s", dir, d.Path)
			}
			fmt.Fprintln(a.errOut, "cleared a stale mount")
			return nil
		},
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Mount point, chain backend and tip, pending commits, last sync, wallet balance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runStatus(cmd.Context(), asJSON)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return []*cobra.Command{mount, unmount, status}
}

// runMount mounts through a running agent, or starts one.
func (a *app) runMount(ctx context.Context, m MountArgs, foreground bool) error {
	d, err := a.dir()
	if err != nil {
		return err
	}
	if foreground {
		return a.runAgent(ctx, &m)
	}
	if c, err := rpc.Dial(d.Socket(), system.Codes()); err == nil {
		defer c.Close()
		if err := c.Call(ctx, "mount.start", m, nil); err != nil {
			return err
		}
		fmt.Fprintf(a.errOut, "mounted at %s\n", m.Dir)
		return nil
	}
	// Check the data directory before forking, so errors come back here.
	if err := d.Ensure(); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"--data-dir", d.Path, "--log-level", "info"}
	if a.chain != "" {
		args = append(args, "--chain", a.chain)
	}
	args = append(args, "agent", "--mount", m.Dir)
	var opts []string
	if m.AllowOther {
		opts = append(opts, "allow_other")
	}
	if m.ReadOnly {
		opts = append(opts, "ro")
	}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if m.Debug {
		args = append(args, "--debug")
	}
	logf, err := os.OpenFile(d.LogFile(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(5 * time.Minute) // a first sync of a large tree takes a while
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the agent exited (%v): %s", err, lastLine(d.LogFile()))
		case <-deadline:
			return fmt.Errorf("the agent did not come up: see %s", d.LogFile())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		c, err := rpc.Dial(d.Socket(), system.Codes())
		if err != nil {
			continue
		}
		var st AgentStatus
		err = c.Call(ctx, "agent.status", nil, &st)
		c.Close()
		if err == nil && st.MountPoint != "" {
			fmt.Fprintf(a.errOut, "mounted at %s (agent pid %d, log %s)\n", st.MountPoint, st.PID, d.LogFile())
			return nil
		}
	}
}

func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// waitExit waits for the agent process to finish (committing what is
// pending and closing the chain may take a moment).
func waitExit(ctx context.Context, pid int) error {
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
