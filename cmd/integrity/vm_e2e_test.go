package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/integrity-sys/integrity/internal/e2e"
	"github.com/integrity-sys/integrity/vm"
)

// buildOS compiles the sample OS for wasip1.
func buildOS(t *testing.T) string { return buildWasm(t, "./vm/os") }

// buildWasm compiles a Go program of the module for wasip1.
func buildWasm(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg)+".wasm")
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = e2e.RepoRoot(t)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s for wasip1: %v: %s", pkg, err, b)
	}
	return out
}

// TestBootOnMount: the OS installed with `integrity os install` boots with
// `integrity boot` in the agent that serves the mount; a scripted session
// reads a file written through the mount and writes one the mount then
// shows. Without an agent, boot runs in-process on the same tree.
func TestBootOnMount(t *testing.T) {
	osWasm := buildOS(t)
	ss := e2e.StartSecretServer(t)
	d := e2e.NewDevice(t, "")
	pw := newSystem(t, d, ss, "vm@example.com", "--no-os")

	// No agent: the VM runs in this command's process.
	r := d.Run("mkdir /early\nwrite /early/a.txt booted without an agent\nexit 7\n", "boot", "--os", osWasm)
	if r.Code != 7 {
		t.Fatalf("boot without agent: exit %d\nstdout %s\nstderr %s", r.Code, r.Stdout, r.Stderr)
	}
	if got := d.OK("cat", "/early/a.txt"); got != "booted without an agent\n" {
		t.Fatalf("cat: %q", got)
	}
	d.Fail("no OS installed", "boot")
	d.Fail("not a WebAssembly module", "os", "install", pw)

	mnt := filepath.Join(t.TempDir(), "mnt")
	mountAt(t, d, mnt)
	// The default OS: beside the binary, or $INTEGRITY_OS.
	d.Env = append(d.Env, "INTEGRITY_OS="+osWasm)
	if out := d.OK("os", "install"); !strings.Contains(out, "installed") {
		t.Fatalf("os install: %q", out)
	}
	if err := os.WriteFile(filepath.Join(mnt, "from-mount.txt"), []byte("written through the mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.Join([]string{
		"cat /from-mount.txt",
		"mkdir /vm",
		"write /vm/hello.txt hello from the VM",
		"ls /vm",
		"cat /early/a.txt",
		"sign --privileged not yet",
		"exit 0",
	}, "\n") + "\n"
	r = d.Run(script, "boot")
	if r.Code != 0 {
		t.Fatalf("boot: exit %d\nstdout %s\nstderr %s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"written through the mount\n", "hello.txt", "booted without an agent\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
		}
	}
	// No terminal to ask for the password, and not unlocked: refused.
	if !strings.Contains(r.Stderr, "sign: locked") {
		t.Errorf("stderr: %q", r.Stderr)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "vm", "hello.txt"))
	if err != nil || string(b) != "hello from the VM\n" {
		t.Fatalf("the mount shows %q, %v", b, err)
	}

	// A password file answers the OS's prompt; the signature verifies
	// with the privileged public key. With the key unlocked, publishing
	// still needs the user's approval: refused without --allow.
	r = d.Run("sign --privileged hello\npublish /vm\nexit 0\n", "boot", "--password-file", pw)
	if !strings.Contains(r.Stderr, "publish: denied") || !strings.Contains(r.Stderr, "--allow publish") {
		t.Fatalf("publish without approval:\nstdout %s\nstderr %s", r.Stdout, r.Stderr)
	}
	if got := d.OK("shares"); strings.Contains(got, "/vm") {
		t.Fatalf("the unapproved publish went through: %q", got)
	}
	r = d.Run("sign --privileged hello\nwhoami\nshare /vm nobody-known\npublish /vm\nexit 0\n", "boot", "--password-file", pw, "--allow", "share,publish")
	if r.Code != 0 {
		t.Fatalf("boot with password file: exit %d\nstderr %s", r.Code, r.Stderr)
	}
	// Sharing from the guest is the System's own: a bad recipient is
	// refused, a publish is listed by `integrity shares`.
	if !strings.Contains(r.Stderr, "share: invalid") || !strings.Contains(r.Stdout, "published /vm") {
		t.Fatalf("share/publish from the guest:\nstdout %s\nstderr %s", r.Stdout, r.Stderr)
	}
	if got := d.OK("shares"); !strings.Contains(got, "/vm") {
		t.Fatalf("shares does not list the guest's publish: %q", got)
	}
	lines := strings.Split(r.Stdout, "\n")
	sig, err := hex.DecodeString(lines[0])
	if err != nil {
		t.Fatalf("signature line %q", lines[0])
	}
	var pub []byte
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "privileged key: "); ok {
			pub, _ = hex.DecodeString(strings.TrimSpace(v))
		}
	}
	if !vm.Verify(pub, []byte("hello"), sig) {
		t.Fatalf("privileged signature does not verify (pub %x)", pub)
	}

	// Runaway guests in the agent: one spinning past its time limit, one
	// eating memory past the cap, one interrupted with Ctrl-C. Each is
	// stopped; the agent serves the mount and commands throughout.
	hostile := buildWasm(t, "./vm/testdata/hostile")
	r = d.Run("", "boot", "--os", hostile, "--timeout", "2s", "--", "loop")
	if r.Code == 0 || !strings.Contains(r.Stderr, "time limit") {
		t.Fatalf("spinning guest: exit %d, %q", r.Code, r.Stderr)
	}
	// (Run directly: the guest's Go runtime prints goroutine traces, which
	// e2e would take for a crash of integrity.)
	boot := func(args ...string) *exec.Cmd {
		cmd := exec.Command(d.Bin, append([]string{"--data-dir", d.DataDir, "boot", "--os", hostile, "--"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+d.Home, "XDG_DATA_HOME="+filepath.Join(d.Home, ".local/share"))
		return cmd
	}
	out, err := boot("oom").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !bytes.Contains(out, []byte("out of memory")) {
		t.Fatalf("out-of-memory guest: %v, %.300q", err, out)
	}
	cmd := boot("loop")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	_ = cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("interrupted boot: %v", err)
	}
	if got := d.OK("cat", "/vm/hello.txt"); got != "hello from the VM\n" {
		t.Fatalf("after the runaway guests: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "from-mount.txt")); err != nil || len(b) == 0 {
		t.Fatalf("the mount after the runaway guests: %q, %v", b, err)
	}
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	sl, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty: %v", err)
	}
	t.Cleanup(func() { sl.Close() })
	return m, sl
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestBootConsolePrompt: on a terminal, a privileged operation of the OS
// makes integrity ask for the password (echo off), and the operation goes
// through once it is typed.
func TestBootConsolePrompt(t *testing.T) {
	osWasm := buildOS(t)
	ss := e2e.StartSecretServer(t)
	d := e2e.NewDevice(t, "")
	pwFile := newSystem(t, d, ss, "tty@example.com")
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	master, slave := openPTY(t)
	cmd := exec.Command(d.Bin, "--data-dir", d.DataDir, "boot", "--os", osWasm)
	cmd.Env = append(os.Environ(), "HOME="+d.Home, "XDG_DATA_HOME="+filepath.Join(d.Home, ".local/share"))
	var stdout, stderr, echoed syncBuffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	go io.Copy(&echoed, master) // what the terminal shows of the input
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})

	waitFor(t, "the shell's prompt", func() bool { return strings.Contains(stdout.String(), "integrity:/$ ") })
	if _, err := master.Write([]byte("sign --privileged hello\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the password prompt", func() bool { return strings.Contains(stderr.String(), "Password: ") })
	if _, err := master.Write(pw); err != nil { // "…\n"
		t.Fatal(err)
	}
	waitFor(t, "the signature", func() bool { return strings.Count(stdout.String(), "integrity:/$ ") >= 2 })
	// The session's code, shown before the OS says anything, marks
	// integrity's own questions.
	first, _, _ := strings.Cut(stderr.String(), "\n")
	code := strings.TrimSuffix(strings.Fields(first + " x x")[1], "]")
	if !strings.HasPrefix(first, "[integrity ") || len(code) != 9 {
		t.Fatalf("no session code before the OS started: %q", first)
	}
	// The key is unlocked now; publishing is still asked about, each
	// time, under the code: "n" refuses, "y" allows.
	for i, answer := range []string{"n", "y"} {
		if _, err := master.Write([]byte("mkdir -p /pub\npublish /pub\n")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the approval question", func() bool {
			return strings.Count(stderr.String(), "["+"integrity "+code+`] the OS asks to publish "/pub"`) == i+1
		})
		if _, err := master.Write([]byte(answer + "\n")); err != nil {
			t.Fatal(err)
		}
		want := []string{"publish: denied", "published /pub"}[i]
		waitFor(t, want, func() bool { return strings.Contains(stdout.String()+stderr.String(), want) })
	}
	if _, err := master.Write([]byte("exit 0\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("boot: %v\nstdout %s\nstderr %s", err, stdout.String(), stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("boot did not end")
	}
	if !strings.Contains(stderr.String(), "sign with the privileged key pair") {
		t.Errorf("the prompt does not say why: %q", stderr.String())
	}
	if strings.Contains(echoed.String(), strings.TrimSpace(string(pw))) {
		t.Errorf("the password was echoed: %q", echoed.String())
	}
	var sig []byte
	for _, l := range strings.Split(stdout.String(), "\n") {
		l = strings.TrimPrefix(l, "integrity:/$ ")
		if b, err := hex.DecodeString(strings.TrimSpace(l)); err == nil && len(b) > 60 {
			sig = b
		}
	}
	pubHex := ""
	for _, l := range strings.Split(d.OK("whoami"), "\n") {
		if v, ok := strings.CutPrefix(l, "privileged public key:"); ok {
			pubHex = strings.TrimSpace(v)
		}
	}
	pub, _ := hex.DecodeString(pubHex)
	if !vm.Verify(pub, []byte("hello"), sig) {
		t.Fatalf("no valid privileged signature in %q (pub %s)", stdout.String(), pubHex)
	}
}

// TestInitInstallsOS: a new System boots straight away: init installs the
// sample OS as its bootloader (an OpBoot commit at /).
func TestInitInstallsOS(t *testing.T) {
	osWasm := buildOS(t)
	ss := e2e.StartSecretServer(t)
	a := e2e.NewDevice(t, "")
	a.Env = append(a.Env, "INTEGRITY_OS="+osWasm)
	newSystem(t, a, ss, "boots@example.com")
	if r := a.Run("write /hi.txt hi\nexit 3\n", "boot"); r.Code != 3 {
		t.Fatalf("boot after init: exit %d\nstdout %s\nstderr %s", r.Code, r.Stdout, r.Stderr)
	}
	if got := a.OK("cat", "/hi.txt"); got != "hi\n" {
		t.Fatalf("cat: %q", got)
	}
}
