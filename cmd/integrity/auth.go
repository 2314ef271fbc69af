package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
	"github.com/integrity-sys/integrity/keyring"
)

// authFlags are the flags the account commands share.
type authFlags struct {
	user            string
	servers         []string
	method          string
	destination     string
	passwordFile    string
	newPasswordFile string
	backupFile      string
	backupOut       string
	codes           []string
	codeFile        string
	kdf             string
	newBackup       bool
	noPresentation  bool
	noPassword      bool
	osFile          string
	noOS            bool
}

func (f *authFlags) register(cmd *cobra.Command, which ...string) {
	fl := cmd.Flags()
	for _, w := range which {
		switch w {
		case "user":
			fl.StringVar(&f.user, "user", "", "your user id at the secret servers (e.g. an e-mail address)")
		case "servers":
			fl.StringSliceVar(&f.servers, "secret-server", nil, "secret server URL (repeat for several: the presentation key is split into one slice per server)")
		case "method":
			fl.StringVar(&f.method, "method", "code", "verification at the secret server: code (sent to --destination) or totp (an authenticator app)")
			fl.StringVar(&f.destination, "destination", "", "where the secret server sends one-time codes (phone number, e-mail address)")
		case "password":
			fl.StringVar(&f.passwordFile, "password-file", "", "read the password from this file instead of prompting (for scripts)")
		case "new-password":
			fl.StringVar(&f.newPasswordFile, "new-password-file", "", "read the new password from this file instead of prompting")
		case "backup":
			fl.StringVar(&f.backupFile, "backup-key-file", "", "read your backup key from this file instead of prompting")
		case "backup-out":
			fl.StringVar(&f.backupOut, "backup-key-out", "", "write a newly issued backup key to this file (0600) instead of showing it and asking you to type it back")
		case "codes":
			fl.StringSliceVar(&f.codes, "code", nil, "one-time or TOTP code, one per secret server, instead of prompting")
			fl.StringVar(&f.codeFile, "code-file", "", "read codes from a development secret server's code file (its --code-file)")
		case "kdf":
			fl.StringVar(&f.kdf, "kdf", "argon2id", "password key derivation: argon2id, or pbkdf2 (600,000 rounds of SHA-256)")
		case "new-backup":
			fl.BoolVar(&f.newBackup, "new-backup-key", false, "issue a new backup key instead of asking for the current one")
		case "os":
			fl.StringVar(&f.osFile, "os", "", "the WebAssembly OS to install as the bootloader (default: the sample OS beside the binary, bin/os.wasm)")
			fl.BoolVar(&f.noOS, "no-os", false, "install no OS (`integrity os install` can later)")
		case "no-presentation":
			fl.BoolVar(&f.noPresentation, "no-secret-server", false, "log in with password + backup key, without the secret servers")
			fl.BoolVar(&f.noPassword, "no-password", false, "log in with secret-server verification + backup key, without the password")
		}
	}
}

func newAccountCmds(a *app) []*cobra.Command {
	var fi authFlags
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new System: keys, secret-server enrolment, bootstrap messages on chain",
		Long: `Create a new System (the paper's Initial Bootstrap Process). You choose a
password; integrity generates the presentation key (held by your secret
servers), a backup key (shown once: keep it safe), your primary and
privileged keys and the two filesystem key trees, and publishes the wrapped
keys on chain. Without --secret-server, a local development secret server
is started (and its codes read for you). The sample OS is installed as the
System's bootloader (--os, --no-os); boot it with integrity boot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAuth(cmd.Context(), "init", "", &fi)
		},
	}
	fi.register(initCmd, "user", "servers", "method", "password", "backup-out", "codes", "kdf", "os")

	var fl authFlags
	login := &cobra.Command{
		Use:   "login",
		Short: "Sign on to your System from this device (password + secret-server verification)",
		Long: `Sign on to an existing System on this device (the paper's System Sign-on
Process): verify yourself at your secret servers, which return the
presentation key; with your password it opens your keys from the chain.
With --backup-key-file, the backup key can stand in for the password, or
(--no-secret-server) for the secret servers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAuth(cmd.Context(), "login", "", &fl)
		},
	}
	fl.register(login, "user", "servers", "password", "backup", "codes", "no-presentation")

	var fr authFlags
	var replace string
	recover := &cobra.Command{
		Use:   "recover --replace password|backup|presentation",
		Short: "Replace a lost factor: a new password, backup key or presentation key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAuth(cmd.Context(), "recover", replace, &fr)
		},
	}
	recover.Flags().StringVar(&replace, "replace", "", "the lost factor: password, backup or presentation")
	fr.register(recover, "user", "servers", "method", "password", "new-password", "backup", "backup-out", "codes", "kdf")

	var fp authFlags
	passwd := &cobra.Command{
		Use:   "passwd",
		Short: "Change the password (new salt, new wrappings on chain)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAuth(cmd.Context(), "passwd", "", &fp)
		},
	}
	fp.register(passwd, "password", "new-password", "backup", "backup-out", "new-backup", "codes", "kdf")

	var asJSON bool
	whoami := &cobra.Command{
		Use:   "whoami",
		Short: "Show your public keys, presentation address and filesystem root",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var w system.WhoAmI
			if err := a.call(cmd.Context(), "auth.whoami", nil, &w); err != nil {
				return err
			}
			return printWhoAmI(a.out, w, asJSON)
		},
	}
	whoami.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	logout := &cobra.Command{
		Use:   "logout",
		Short: "Forget this System's keys on this device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.call(cmd.Context(), "auth.logout", nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(a.out, "logged out: this device no longer holds the System's keys")
			return nil
		},
	}
	var fu authFlags
	unlock := &cobra.Command{
		Use:   "unlock",
		Short: "Unlock the privileged access key for 5 minutes (the agent asks the password)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := a.readSecret(fu.passwordFile, "Password: ", false)
			if err != nil {
				return err
			}
			defer keyring.Wipe(pw)
			var res struct {
				Until time.Time `json:"until"`
			}
			if err := a.call(cmd.Context(), "auth.unlock", system.UnlockArgs{Password: pw}, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "privileged key unlocked until %s\n", res.Until.Format(time.TimeOnly))
			return nil
		},
	}
	fu.register(unlock, "password")
	return []*cobra.Command{initCmd, login, recover, passwd, whoami, logout, unlock}
}

func printWhoAmI(w io.Writer, who system.WhoAmI, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(who)
	}
	fmt.Fprintf(w, "user:                 %s\nsecret servers:       %s\npresentation address: %s\nroot address:         %s\nprimary public key:   %s\nprivileged public key: %s\nwallet address:       %s\nnetwork:              %s\n",
		who.User, strings.Join(who.SecretServers, ", "), who.PresentationAddress, who.RootAddress,
		who.PrimaryPubKey, who.PrivilegedPubKey, who.WalletAddress, who.Network)
	return nil
}

// runAuth drives one account operation: gather secrets, auth.begin, codes
// and backup-key confirmation, auth.finish — over one connection to the
// System (the agent's, or in-process).
func (a *app) runAuth(ctx context.Context, op, replace string, f *authFlags) error {
	b := system.AuthBegin{Op: op, Replace: replace, User: f.user, Servers: f.servers, Method: f.method,
		Destination: f.destination, KDF: f.kdf, NewBackup: f.newBackup, NoPresentation: f.noPresentation}
	defer func() { keyring.Wipe(b.Password); keyring.Wipe(b.NewPassword) }()
	if op == "init" && len(b.Servers) == 0 {
		srv, codeFile, err := a.localSecretServer(ctx)
		if err != nil {
			return err
		}
		b.Servers = []string{srv}
		b.Method = "code"
		if b.Destination == "" {
			b.Destination = "local:" + b.User
		}
		if f.codeFile == "" && len(f.codes) == 0 {
			f.codeFile = codeFile
		}
	}
	var err error
	needPw := !(op == "recover" && replace == "password") && !(op == "login" && f.noPassword)
	if f.noPassword && f.noPresentation {
		return errors.New("two of password, secret server and backup key are needed")
	}
	if needPw {
		confirm := op == "init"
		if b.Password, err = a.readSecret(f.passwordFile, "Password: ", confirm); err != nil {
			return err
		}
	}
	if op == "passwd" || (op == "recover" && replace == "password") {
		if b.NewPassword, err = a.readSecret(f.newPasswordFile, "New password: ", true); err != nil {
			return err
		}
	}
	wantBackup := f.backupFile != "" || (op == "passwd" && !f.newBackup) ||
		(op == "recover" && replace != "backup") || (op == "login" && (f.noPresentation || f.noPassword))
	if wantBackup {
		bk, err := a.readSecret(f.backupFile, "Backup key: ", false)
		if err != nil {
			return err
		}
		b.Backup = string(bk)
		keyring.Wipe(bk)
	}
	c, done, err := a.caller(ctx)
	if err != nil {
		return err
	}
	defer done()
	codeOffset := fileSize(f.codeFile)
	var begun system.AuthBegun
	if err := c.Call(ctx, "auth.begin", b, &begun); err != nil {
		return err
	}
	fin := system.AuthFinish{Flow: begun.Flow}
	if begun.BackupKey != "" {
		if fin.BackupConfirm, err = a.confirmBackup(begun.BackupKey, f.backupOut); err != nil {
			return err
		}
	}
	if fin.Codes, err = a.collectCodes(ctx, begun.Prompts, f, codeOffset); err != nil {
		return err
	}
	var who system.WhoAmI
	if err := c.Call(ctx, "auth.finish", fin, &who); err != nil {
		return err
	}
	switch op {
	case "init":
		fmt.Fprintln(a.errOut, "Your System is on chain.")
		if !f.noOS {
			// The System boots the sample OS until the user installs
			// another; without one, init still succeeds.
			if inst, err := installOS(ctx, c, f.osFile); err != nil {
				fmt.Fprintf(a.errOut, "warning: no OS installed (%v); install one with `integrity os install FILE`\n", err)
			} else {
				fmt.Fprintf(a.errOut, "Installed the OS %s as your bootloader.\n", filepath.Base(inst.Path))
			}
		}
	case "passwd":
		fmt.Fprintln(a.errOut, "Password changed.")
	case "recover":
		fmt.Fprintf(a.errOut, "Recovered: the %s is replaced.\n", replace)
	}
	return printWhoAmI(a.out, who, false)
}

// readSecret reads a secret from a file (first line) or the terminal.
func (a *app) readSecret(file, prompt string, confirm bool) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		keyring.Wipe(b)
		line = strings.TrimRight(line, "\r")
		if line == "" {
			return nil, fmt.Errorf("%s is empty", file)
		}
		return []byte(line), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, fmt.Errorf("%sno terminal to ask on: give it in a file (see --help)", strings.ToLower(prompt))
	}
	for {
		fmt.Fprint(a.errOut, prompt)
		s, err := term.ReadPassword(fd)
		fmt.Fprintln(a.errOut)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", strings.TrimSuffix(prompt, ": "), err)
		}
		if len(s) == 0 {
			continue
		}
		if !confirm {
			return s, nil
		}
		fmt.Fprint(a.errOut, "Again: ")
		s2, err := term.ReadPassword(fd)
		fmt.Fprintln(a.errOut)
		if err != nil {
			return nil, err
		}
		if string(s) == string(s2) {
			keyring.Wipe(s2)
			return s, nil
		}
		fmt.Fprintln(a.errOut, "They differ; try again.")
	}
}

// confirmBackup shows a new backup key and has the user type it back, or
// writes it to a file for scripts.
func (a *app) confirmBackup(text, out string) (string, error) {
	if out != "" {
		if err := os.WriteFile(out, []byte(text+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write backup key: %w", err)
		}
		fmt.Fprintf(a.errOut, "Your new backup key is in %s. Keep a copy somewhere safe, away from this device.\n", out)
		return text, nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", errors.New("a new backup key was issued but there is no terminal to show it: use --backup-key-out FILE")
	}
	fmt.Fprintf(a.errOut, "\nYour backup key:\n\n    %s\n\nWrite it down and keep it away from this device: with your password or your\nsecret server it recovers your System. Type it back to confirm.\n", text)
	in := bufio.NewReader(os.Stdin)
	for {
		fmt.Fprint(a.errOut, "Backup key: ")
		line, err := in.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("read backup key: %w", err)
		}
		typed, err := keyring.ParseBackupKey(line)
		if err != nil {
			fmt.Fprintf(a.errOut, "%v; try again.\n", err)
			continue
		}
		want, _ := keyring.ParseBackupKey(text)
		if typed.Key() != want.Key() {
			fmt.Fprintln(a.errOut, "That is a valid backup key, but not this one; try again.")
			continue
		}
		return line, nil
	}
}

// collectCodes gets one code per prompt: from --code, a development code
// file, or the terminal.
func (a *app) collectCodes(ctx context.Context, prompts []system.Prompt, f *authFlags, offset int64) ([]string, error) {
	if len(prompts) == 0 {
		return nil, nil
	}
	if len(f.codes) > 0 {
		if len(f.codes) != len(prompts) {
			return nil, fmt.Errorf("%d codes given, %d secret servers ask for one", len(f.codes), len(prompts))
		}
		return f.codes, nil
	}
	if f.codeFile != "" {
		return readCodeFile(ctx, f.codeFile, offset, len(prompts))
	}
	in := bufio.NewReader(os.Stdin)
	codes := make([]string, len(prompts))
	for i, p := range prompts {
		if p.TOTPURI != "" {
			fmt.Fprintf(a.errOut, "Add this account to your authenticator app (secret %s):\n  %s\n", p.TOTPSecret, p.TOTPURI)
		}
		if p.Kind == "code" {
			fmt.Fprintf(a.errOut, "Code sent to %s by %s: ", p.Info, p.Server)
		} else {
			fmt.Fprintf(a.errOut, "Code from your authenticator app for %s: ", p.Server)
		}
		line, err := in.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read code: %w", err)
		}
		codes[i] = strings.TrimSpace(line)
	}
	return codes, nil
}

func fileSize(p string) int64 {
	if p == "" {
		return 0
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readCodeFile waits for n codes appended after offset to a development
// sender's file ("destination code" lines).
func readCodeFile(ctx context.Context, path string, offset int64, n int) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && int64(len(b)) >= offset {
			var codes []string
			for _, line := range strings.Split(strings.TrimSpace(string(b[offset:])), "\n") {
				if fs := strings.Fields(line); len(fs) >= 2 {
					codes = append(codes, fs[len(fs)-1])
				}
			}
			if len(codes) >= n {
				return codes[len(codes)-n:], nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no code arrived in %s", path)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// localSecretServerAddr is where `integrity init` starts a development
// secret server when none is given.
const localSecretServerAddr = "127.0.0.1:7467"

// localSecretServer makes sure the local development secret server runs,
// starting it in the background if needed, and returns its URL and code
// file.
func (a *app) localSecretServer(ctx context.Context) (string, string, error) {
	d, err := a.dir()
	if err != nil {
		return "", "", err
	}
	dataDir := filepath.Join(filepath.Dir(d.Path), "integrity-secret-server")
	codeFile := filepath.Join(dataDir, "codes.txt")
	url := "http://" + localSecretServerAddr
	healthy := func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, url+"/v1/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if healthy() {
		return url, codeFile, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	logf, err := os.OpenFile(filepath.Join(dataDir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return "", "", err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "secret-server", "--listen", localSecretServerAddr, "--data", dataDir, "--code-file", codeFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("start local secret server: %w", err)
	}
	_ = cmd.Process.Release()
	fmt.Fprintf(a.errOut, "Started a local development secret server at %s (codes go to %s).\n", url, codeFile)
	for i := 0; i < 100; i++ {
		if healthy() {
			return url, codeFile, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", "", fmt.Errorf("local secret server did not start: see %s", filepath.Join(dataDir, "server.log"))
}

var _ rpc.Caller = (*rpc.Local)(nil)
