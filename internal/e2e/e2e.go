// Package e2e drives integrity the way a user does — the real binary, real
// data directories, real btcd nodes and servers on loopback — for the
// end-to-end tests of the cmd packages. It is only imported by tests.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RepoRoot is the module root (where scripts/ and .cache/ live).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary returns the integrity binary: $INTEGRITY_BIN (make test sets it),
// else one built once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("INTEGRITY_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "integrity-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "integrity")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/integrity")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Device is one data directory: a user's System on one device.
type Device struct {
	t       testing.TB
	Bin     string
	DataDir string
	Home    string // HOME for the commands (mount points, defaults)
	Chain   string // --chain, empty for the remembered/default one
	Env     []string
}

// NewDevice makes a fresh data directory.
func NewDevice(t testing.TB, chainURL string) *Device {
	t.Helper()
	base := t.TempDir()
	d := &Device{t: t, Bin: Binary(t), DataDir: filepath.Join(base, "data"), Home: filepath.Join(base, "home"), Chain: chainURL}
	if err := os.MkdirAll(d.Home, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// Result is one command's outcome.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs `integrity --data-dir D [--chain C] args...` with stdin.
func (d *Device) Run(stdin string, args ...string) Result {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := []string{"--data-dir", d.DataDir}
	if d.Chain != "" {
		full = append(full, "--chain", d.Chain)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, d.Bin, full...)
	cmd.Env = append(append(os.Environ(), "HOME="+d.Home, "XDG_DATA_HOME="+filepath.Join(d.Home, ".local/share")), d.Env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			d.t.Fatalf("integrity %v: %v", args, err)
		}
		r.Code = ee.ExitCode()
	}
	if strings.Contains(r.Stderr, "panic:") || strings.Contains(r.Stderr, "goroutine ") {
		d.t.Fatalf("integrity %v panicked:\n%s", args, r.Stderr)
	}
	return r
}

// OK runs a command that must succeed and returns its stdout.
func (d *Device) OK(args ...string) string {
	d.t.Helper()
	r := d.Run("", args...)
	if r.Code != 0 {
		d.t.Fatalf("integrity %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// Fail runs a command that must fail with a one-line error containing want
// and returns that line.
func (d *Device) Fail(want string, args ...string) string {
	d.t.Helper()
	r := d.Run("", args...)
	if r.Code == 0 {
		d.t.Fatalf("integrity %s succeeded, want failure %q\nstdout: %s", strings.Join(args, " "), want, r.Stdout)
	}
	line := strings.TrimSpace(r.Stderr)
	if strings.Count(line, "\n") != 0 || !strings.HasPrefix(line, "integrity: ") {
		d.t.Fatalf("integrity %s: want one error line, got:\n%s", strings.Join(args, " "), r.Stderr)
	}
	if !strings.Contains(line, want) {
		d.t.Fatalf("integrity %s: error %q does not contain %q", strings.Join(args, " "), line, want)
	}
	return line
}

// FreePort returns a free TCP port on loopback.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Btcd is a real btcd node started by scripts/btcd.sh.
type Btcd struct {
	URL     string
	P2P     string
	DataDir string
}

// StartBtcd starts a simnet btcd (peered with peers) and stops it when the
// test ends.
func StartBtcd(t testing.TB, peers ...string) *Btcd {
	t.Helper()
	root := RepoRoot(t)
	dir := filepath.Join(t.TempDir(), "btcd")
	rpc, p2p := FreePort(t), FreePort(t)
	args := []string{filepath.Join(root, "scripts/btcd.sh"), "start", "--datadir", dir,
		"--rpcport", strconv.Itoa(rpc), "--p2pport", strconv.Itoa(p2p),
		"--watch-pid", strconv.Itoa(os.Getpid()), "--wait", "30"}
	for _, p := range peers {
		args = append(args, "--peer", p)
	}
	cmd := exec.Command("bash", args...)
	cmd.Dir = root
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/btcd.sh start: %v: %s", err, errb.String())
	}
	b := &Btcd{DataDir: dir, P2P: net.JoinHostPort("127.0.0.1", strconv.Itoa(p2p))}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "BTCD_URL="); ok {
			b.URL = u
		}
	}
	t.Cleanup(func() {
		stop := exec.Command("bash", filepath.Join(root, "scripts/btcd.sh"), "stop", "--datadir", dir)
		stop.Dir = root
		_ = stop.Run()
	})
	if b.URL == "" {
		t.Fatalf("scripts/btcd.sh printed no URL: %s", out)
	}
	return b
}

// Field returns the value after "name:" in command output such as
// `wallet balance` or `status`.
func Field(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// SecretServer is a real `integrity secret-server` process.
type SecretServer struct {
	URL      string
	CodeFile string
	DataDir  string
	cmd      *exec.Cmd
}

// StartSecretServer starts a secret server on a free loopback port with
// the development code sender, stopped when the test ends.
func StartSecretServer(t testing.TB, extra ...string) *SecretServer {
	t.Helper()
	return StartSecretServerCodes(t, "", extra...)
}

// StartSecretServerCodes is StartSecretServer with the code file given
// (several servers can share one, as a user's one phone would).
func StartSecretServerCodes(t testing.TB, codeFile string, extra ...string) *SecretServer {
	t.Helper()
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	if codeFile == "" {
		codeFile = filepath.Join(dir, "codes.txt")
	}
	s := &SecretServer{URL: "http://" + addr, CodeFile: codeFile, DataDir: filepath.Join(dir, "data")}
	args := append([]string{"secret-server", "--listen", addr, "--data", s.DataDir, "--code-file", s.CodeFile, "--code-resend-interval", "1ms", "--rate", "1000", "--burst", "1000"}, extra...)
	s.cmd = exec.Command(Binary(t), args...)
	var logb bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &logb, &logb
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("secret server did not start: %s", logb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server (idempotent).
func (s *SecretServer) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
		}
		s.cmd = nil
	}
}

// WriteFile writes a small file in the test's temp dir and returns its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// StartAgent runs `integrity agent` for the device until the test ends
// (or Stop is called on the returned process).
func (d *Device) StartAgent(extra ...string) *exec.Cmd {
	d.t.Helper()
	args := []string{"--data-dir", d.DataDir}
	if d.Chain != "" {
		args = append(args, "--chain", d.Chain)
	}
	args = append(append(args, "agent"), extra...)
	cmd := exec.Command(d.Bin, args...)
	cmd.Env = append(append(os.Environ(), "HOME="+d.Home), d.Env...)
	logf, err := os.Create(filepath.Join(d.Home, "agent.log"))
	if err != nil {
		d.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
		logf.Close()
	})
	sock := filepath.Join(d.DataDir, "agent.sock")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(d.Home, "agent.log"))
			d.t.Fatalf("agent did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
