package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
	"github.com/integrity-sys/integrity/keyring"
)

// newVMCmds are `integrity boot` and `integrity os install`.
func newVMCmds(a *app) []*cobra.Command {
	var osFile, pwFile string
	var timeout time.Duration
	var allow []string
	boot := &cobra.Command{
		Use:   "boot [--os FILE] [-- ARGS...]",
		Short: "Boot your System's OS in the WebAssembly VM; this terminal is its console",
		Long: `boot runs the installed OS (the bootloader at "/", see ` + "`integrity os install`" + `), or
the .wasm file given with --os, in the System VM. The OS sees your tree as its
disk at "/": what it writes becomes commits, as through the mount. This
command's stdin, stdout and stderr are its console; the exit status is the
OS's. The VM runs in the agent when one runs (it holds the keys), else in
this process.

When the OS asks to share or publish a folder or to make an image (which
gives keys or content to others, or spends your money), integrity asks you
at the terminal each time, under a code it shows when the boot starts: a
question without that code comes from the OS, not from integrity. A script
approves such operations in advance with --allow share,publish,image; the
password is still needed (the terminal, or --password-file).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBoot(cmd.Context(), bootOptions{osFile: osFile, pwFile: pwFile, timeout: timeout, allow: allow}, args)
		},
	}
	boot.Flags().StringVar(&osFile, "os", "", "boot this WebAssembly (wasip1) file instead of the installed OS")
	boot.Flags().StringVar(&pwFile, "password-file", "", "answer the OS's password prompts (privileged operations) from this file")
	boot.Flags().DurationVar(&timeout, "timeout", 0, "stop the OS after this long (default: never)")
	boot.Flags().StringSliceVar(&allow, "allow", nil, "approve these operations of the OS for the session without asking: "+strings.Join(system.Approvable, ","))

	osCmd := &cobra.Command{Use: "os", Short: "The OS your System boots"}
	install := &cobra.Command{
		Use:   "install [FILE]",
		Short: "Install a WebAssembly OS as your System's bootloader (default: the sample OS, os.wasm)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := ""
			if len(args) == 1 {
				file = args[0]
			}
			c, done, err := a.caller(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			res, err := installOS(cmd.Context(), c, file)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "installed %s as the bootloader (%d bytes, sha256 %s)\n", res.Path, res.Bytes, res.SHA256)
			return nil
		},
	}
	osCmd.AddCommand(install)
	return []*cobra.Command{boot, osCmd}
}

// installedOS is what installOS installed.
type installedOS struct {
	system.InstallResult
	Path string
}

// defaultOSPath finds the sample OS: $INTEGRITY_OS, then os.wasm beside
// the integrity binary (make puts both in bin/), then bin/os.wasm here.
func defaultOSPath() (string, error) {
	var tried []string
	if p := os.Getenv("INTEGRITY_OS"); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		tried = append(tried, filepath.Join(filepath.Dir(exe), "os.wasm"))
	}
	tried = append(tried, filepath.Join("bin", "os.wasm"))
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no sample OS found (looked for %s; `make` builds it, or set $INTEGRITY_OS)", strings.Join(tried, ", "))
}

// installOS installs file (default: the sample OS) as the System's
// bootloader. `integrity init` calls it with file "" once the System
// exists.
func installOS(ctx context.Context, c rpc.Caller, file string) (installedOS, error) {
	if file == "" {
		p, err := defaultOSPath()
		if err != nil {
			return installedOS{}, err
		}
		file = p
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return installedOS{}, err
	}
	var res system.InstallResult
	if err := c.Call(ctx, "vm.install", system.InstallArgs{Path: abs}, &res); err != nil {
		return installedOS{}, err
	}
	return installedOS{InstallResult: res, Path: abs}, nil
}

// guestExit carries the OS's exit status to the shell.
type guestExit struct {
	code int
	msg  string
}

func (e guestExit) Error() string { return e.msg }
func (e guestExit) ExitCode() int { return e.code }

// console is the CLI end of a boot session: it pumps stdin to the VM and
// the VM's output and password prompts back.
type console struct {
	a       *app
	c       rpc.Caller
	session string
	pwFile  string
	tty     bool
	fd      int
	// code marks integrity's own questions on the terminal. It is made
	// here and never leaves this process, so the guest — which writes to
	// the same terminal and reads what is typed — cannot imitate them.
	code string

	mu sync.Mutex
	// pending is the prompt whose answer the next line of input is (a
	// password, read with echo off, or yes/no), nil if none.
	pending  *pendingPrompt
	answered int // the last prompt id answered or being answered
	saved    *unix.Termios
}

type pendingPrompt struct {
	id   int
	kind string
}

type bootOptions struct {
	osFile, pwFile string
	timeout        time.Duration
	allow          []string
}

func (a *app) runBoot(ctx context.Context, o bootOptions, args []string) error {
	c, done, err := a.caller(ctx)
	if err != nil {
		return err
	}
	defer done()
	if o.osFile != "" {
		if o.osFile, err = filepath.Abs(o.osFile); err != nil {
			return err
		}
	}
	fd := int(os.Stdin.Fd())
	tty := term.IsTerminal(fd)
	var res system.BootResult
	if err := c.Call(ctx, "vm.boot", system.BootArgs{OS: o.osFile, Args: args, Interactive: tty || o.pwFile != "",
		TTY: tty, Timeout: o.timeout, Allow: o.allow}, &res); err != nil {
		return err
	}
	con := &console{a: a, c: c, session: res.Session, pwFile: o.pwFile, tty: tty, fd: fd}
	if tty {
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		con.code = fmt.Sprintf("%x-%x", b[:2], b[2:])
		fmt.Fprintf(a.errOut, "[integrity %s] booting; integrity's own questions in this session show this code — a question without it comes from the OS\n", con.code)
	}
	defer con.echo(true)
	go con.pumpInput(ctx)
	return con.pumpOutput(ctx)
}

// pumpInput sends stdin to the guest, or a line of it to a password prompt.
func (con *console) pumpInput(ctx context.Context) {
	buf := make([]byte, 32<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			con.mu.Lock()
			p := con.pending
			con.pending = nil
			con.mu.Unlock()
			if p != nil && p.kind == system.PromptApprove {
				yes := strings.ToLower(strings.TrimSpace(string(buf[:n])))
				ok := yes == "y" || yes == "yes"
				if err := con.c.Call(ctx, "vm.unlock", system.UnlockPromptArgs{Session: con.session, PromptID: p.id,
					Approve: ok, Decline: !ok}, nil); err != nil {
					fmt.Fprintf(con.a.errOut, "integrity: %v\n", err)
				}
				continue
			}
			if p != nil {
				con.echo(true)
				fmt.Fprintln(con.a.errOut)
				pw := []byte(strings.TrimRight(string(buf[:n]), "\r\n"))
				keyring.Wipe(buf[:n])
				con.answer(ctx, p.id, pw)
				continue
			}
			if werr := con.c.Call(ctx, "vm.write", system.WriteArgs{Session: con.session, Data: buf[:n]}, nil); werr != nil {
				return
			}
		}
		if err != nil {
			_ = con.c.Call(ctx, "vm.write", system.WriteArgs{Session: con.session, EOF: true}, nil)
			return
		}
	}
}

// answer sends a password to a prompt.
func (con *console) answer(ctx context.Context, pid int, pw []byte) {
	defer keyring.Wipe(pw)
	err := con.c.Call(ctx, "vm.unlock", system.UnlockPromptArgs{Session: con.session, PromptID: pid, Password: pw}, nil)
	if err != nil {
		fmt.Fprintf(con.a.errOut, "integrity: %v\n", err)
	}
}

// echo turns the terminal's echo on or off (for a password).
func (con *console) echo(on bool) {
	if !con.tty {
		return
	}
	con.mu.Lock()
	defer con.mu.Unlock()
	if on {
		if con.saved != nil {
			_ = unix.IoctlSetTermios(con.fd, unix.TCSETS, con.saved)
			con.saved = nil
		}
		return
	}
	t, err := unix.IoctlGetTermios(con.fd, unix.TCGETS)
	if err != nil {
		return
	}
	saved := *t
	t.Lflag &^= unix.ECHO
	if unix.IoctlSetTermios(con.fd, unix.TCSETS, t) == nil {
		con.saved = &saved
	}
}

// pumpOutput long-polls the session until the guest ends.
func (con *console) pumpOutput(ctx context.Context) error {
	for {
		var r system.ReadResult
		err := con.c.Call(ctx, "vm.read", system.ReadArgs{Session: con.session, Wait: 2 * time.Second}, &r)
		if err != nil {
			if ctx.Err() != nil {
				// Interrupted: stop the machine, with a context of its own.
				kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = con.c.Call(kctx, "vm.kill", system.KillArgs{Session: con.session}, nil)
				cancel()
				return guestExit{code: 130, msg: "interrupted: the OS was stopped"}
			}
			return err
		}
		if len(r.Stdout) > 0 {
			_, _ = con.a.out.Write(r.Stdout)
		}
		if len(r.Stderr) > 0 {
			_, _ = con.a.errOut.Write(r.Stderr)
		}
		if r.Prompt != "" {
			con.prompt(ctx, r.PromptKind, r.Prompt, r.PromptID)
		}
		if r.Done {
			if r.Error == "" && r.ExitCode == 0 {
				return nil
			}
			msg := r.Error
			if msg == "" {
				msg = fmt.Sprintf("the OS exited with status %d", r.ExitCode)
			}
			return guestExit{code: max(r.ExitCode, 1), msg: msg}
		}
	}
}

// prompt puts the guest's request to the user: a password (from
// --password-file, else the terminal with echo off) or, for an operation
// to approve, yes or no at the terminal. The next line typed answers it.
func (con *console) prompt(ctx context.Context, kind, reason string, pid int) {
	con.mu.Lock()
	if con.answered == pid {
		con.mu.Unlock()
		return
	}
	con.answered = pid
	con.mu.Unlock()
	decline := func() {
		_ = con.c.Call(ctx, "vm.unlock", system.UnlockPromptArgs{Session: con.session, PromptID: pid, Decline: true}, nil)
	}
	reason = printable(reason)
	if kind == system.PromptApprove {
		if !con.tty {
			decline()
			return
		}
		fmt.Fprintf(con.a.errOut, "\n[integrity %s] the OS asks to %s.\nAllow it? [y/N] ", con.code, reason)
		con.mu.Lock()
		con.pending = &pendingPrompt{id: pid, kind: kind}
		con.mu.Unlock()
		return
	}
	if con.pwFile != "" {
		pw, err := con.a.readSecret(con.pwFile, "Password: ", false)
		if err != nil {
			fmt.Fprintf(con.a.errOut, "integrity: %v\n", err)
			decline()
			return
		}
		go con.answer(ctx, pid, pw)
		return
	}
	if !con.tty {
		decline()
		return
	}
	fmt.Fprintf(con.a.errOut, "\n[integrity %s] the OS asks to %s: enter your password to unlock the privileged key for %s\nPassword: ",
		con.code, reason, keyring.PrivilegedTTL)
	con.echo(false)
	con.mu.Lock()
	con.pending = &pendingPrompt{id: pid, kind: kind}
	con.mu.Unlock()
}

// printable keeps a guest-chosen text from moving the cursor or recolouring
// the terminal around integrity's question.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
}
