package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var errBroke = errors.New("broke")

func testHandlers() (Handlers, *Codes) {
	codes := NewCodes()
	codes.Register("broke", errBroke)
	h := Handlers{
		"echo": func(_ context.Context, raw json.RawMessage) (any, error) {
			var v map[string]int
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, err
			}
			v["n"]++
			return v, nil
		},
		"fail": func(context.Context, json.RawMessage) (any, error) {
			return nil, fmt.Errorf("while doing it: %w", errBroke)
		},
	}
	return h, codes
}

func TestLocalAndSocketAgree(t *testing.T) {
	h, codes := testHandlers()
	sock := filepath.Join(t.TempDir(), "a.sock")
	srv, err := Listen(sock, h, codes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	cl, err := Dial(sock, codes)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for name, c := range map[string]Caller{"local": &Local{Handlers: h, Codes: codes}, "socket": cl} {
		var out map[string]int
		if err := c.Call(context.Background(), "echo", map[string]int{"n": 41}, &out); err != nil || out["n"] != 42 {
			t.Fatalf("%s echo: %v %v", name, out, err)
		}
		err := c.Call(context.Background(), "fail", nil, nil)
		if !errors.Is(err, errBroke) || !strings.Contains(err.Error(), "while doing it") {
			t.Fatalf("%s: typed error lost: %v", name, err)
		}
		if err := c.Call(context.Background(), "nope", nil, nil); err == nil || !strings.Contains(err.Error(), "unknown method") {
			t.Fatalf("%s: unknown method: %v", name, err)
		}
	}
	// A second agent on the same socket is refused; a stale socket file
	// (left by a crash) is replaced.
	if _, err := Listen(sock, h, codes, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("second agent listened on a live socket")
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := Listen(stale, h, codes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s2.Close(context.Background())
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
}

func TestNoAgent(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "none.sock"), NewCodes())
	if !errors.Is(err, ErrNoAgent) {
		t.Fatalf("dial without agent: %v", err)
	}
}

// TestOtherUserRefused is the attack: another uid connects to the agent's
// socket (here opened to everyone, as if its mode were wrong) and must get
// nothing, because the agent checks the peer's credentials itself.
func TestOtherUserRefused(t *testing.T) {
	if sock := os.Getenv("RPC_ATTACK_SOCKET"); sock != "" {
		cl, err := Dial(sock, NewCodes())
		if err == nil {
			var out map[string]int
			err = cl.Call(context.Background(), "echo", map[string]int{"n": 1}, &out)
		}
		if err == nil {
			fmt.Println("ATTACK SUCCEEDED")
			os.Exit(0)
		}
		fmt.Println("REFUSED:", err)
		os.Exit(0)
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	h, codes := testHandlers()
	// t.TempDir's parent is private; the attacker needs to reach the
	// socket and its own binary.
	dir, err := os.MkdirTemp("", "rpc-attack-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a.sock")
	srv, err := Listen(sock, h, codes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary must be reachable by uid 65534: copy it next to
	// the socket.
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	attacker := filepath.Join(dir, "attacker.test")
	if err := os.WriteFile(attacker, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(attacker, "-test.run=^TestOtherUserRefused$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "RPC_ATTACK_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot run as uid 65534 here (%v: %s)", err, out)
	}
	if !strings.Contains(string(out), "REFUSED") {
		t.Fatalf("another uid got an answer from the agent: %s", out)
	}
}
