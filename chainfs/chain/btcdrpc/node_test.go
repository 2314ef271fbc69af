package btcdrpc

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

	"github.com/integrity-sys/integrity/internal/e2e"
)

// testNode is a btcd started by scripts/btcd.sh.
type testNode struct {
	nodeOpts
	url     string
	p2pAddr string
}

// nodeOpts say how to start a node; zero ports mean free ones.
type nodeOpts struct {
	dir      string
	rpc, p2p int
	peers    []string
	tls      bool
}

var (
	sharedOnce sync.Once
	shared     *testNode
	sharedErr  error
	sharedDirs []string // nodes TestMain stops
	sharedMu   sync.Mutex
)

func TestMain(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	dirs := sharedDirs
	sharedMu.Unlock()
	for _, d := range dirs {
		stopNode(d)
	}
	for _, d := range dirs {
		_ = os.RemoveAll(filepath.Dir(d))
	}
	os.Exit(code)
}

// findBtcd checks that btcd is where scripts/btcd.sh looks for it.
func findBtcd(root string) error {
	if b := os.Getenv("BTCD"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("BTCD=%s: %w", b, err)
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(root, ".cache/bin/btcd")); err == nil {
		return nil
	}
	if _, err := exec.LookPath("btcd"); err == nil {
		return nil
	}
	return fmt.Errorf("btcd not found: run `make tools` (installs .cache/bin/btcd with " +
		"`GOBIN=$PWD/.cache/bin go install github.com/btcsuite/btcd@v0.26.2`), or set BTCD=/path/to/btcd")
}

// startNodeWith starts a simnet btcd through scripts/btcd.sh. It does not
// register cleanup; callers stop it.
func startNodeWith(t testing.TB, o nodeOpts) (*testNode, error) {
	root := e2e.RepoRoot(t)
	if err := findBtcd(root); err != nil {
		return nil, err
	}
	if o.rpc == 0 {
		o.rpc = e2e.FreePort(t)
	}
	if o.p2p == 0 {
		o.p2p = e2e.FreePort(t)
	}
	args := []string{filepath.Join(root, "scripts/btcd.sh"), "start",
		"--datadir", o.dir, "--rpcport", strconv.Itoa(o.rpc), "--p2pport", strconv.Itoa(o.p2p),
		"--watch-pid", strconv.Itoa(os.Getpid()), "--wait", "20"}
	for _, p := range o.peers {
		args = append(args, "--peer", p)
	}
	if o.tls {
		args = append(args, "--tls")
	}
	cmd := exec.Command("bash", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/btcd.sh start: %v: %s", err, stderr.String())
	}
	n := &testNode{nodeOpts: o, p2pAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.p2p))}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "BTCD_URL="); ok {
			n.url = u
		}
	}
	if n.url == "" {
		stopNode(o.dir)
		return nil, fmt.Errorf("scripts/btcd.sh printed no URL: %q", out)
	}
	return n, nil
}

// startNode starts a node stopped at the end of the test.
func startNode(t *testing.T, o nodeOpts) *testNode {
	t.Helper()
	if o.dir == "" {
		o.dir = filepath.Join(t.TempDir(), "btcd")
	}
	n, err := startNodeWith(t, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(n.dir) })
	return n
}

// sharedNode is one node for the tests that only need a running btcd.
func sharedNode(t *testing.T) *testNode {
	t.Helper()
	sharedOnce.Do(func() {
		base, err := os.MkdirTemp("", "btcdrpc-test-")
		if err != nil {
			sharedErr = err
			return
		}
		dir := filepath.Join(base, "btcd")
		sharedMu.Lock()
		sharedDirs = append(sharedDirs, dir)
		sharedMu.Unlock()
		shared, sharedErr = startNodeWith(t, nodeOpts{dir: dir})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	if shared == nil {
		t.Fatal("shared btcd node failed to start")
	}
	return shared
}

func stopNode(dir string) {
	cmd := exec.Command("bash", "scripts/btcd.sh", "stop", "--datadir", dir)
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				cmd.Dir = d
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	_ = cmd.Run()
}

func dial(t *testing.T, url string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
