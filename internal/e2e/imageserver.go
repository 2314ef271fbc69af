package e2e

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// imageServerReady is the line `integrity image-server` prints once it
// accepts connections.
const imageServerReady = "image server listening on http://"

// ImageServer is a real `integrity image-server` process.
type ImageServer struct {
	URL     string
	DataDir string

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  *syncBuffer
	once sync.Once
}

// StartImageServer starts an image server on a free loopback port with a
// fresh data directory, checking payments on chainURL ("" for none, e.g.
// a free policy), stopped when the test ends. extra are more image-server
// flags (--policy ...).
func StartImageServer(t testing.TB, chainURL string, extra ...string) *ImageServer {
	t.Helper()
	return StartImageServerIn(t, chainURL, filepath.Join(t.TempDir(), "data"), extra...)
}

// StartImageServerIn is StartImageServer on a given data directory: the
// same directory again is a restart of the same server.
func StartImageServerIn(t testing.TB, chainURL, dataDir string, extra ...string) *ImageServer {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	s := &ImageServer{URL: "http://" + addr, DataDir: dataDir, t: t, done: make(chan struct{}), log: &syncBuffer{}}
	var args []string
	if chainURL != "" {
		args = append(args, "--chain", chainURL)
	}
	args = append(append(args, "image-server", "--listen", addr, "--data", dataDir,
		// Tests talk to it fast from one IP.
		"--rate", "1000", "--burst", "1000"), extra...)
	s.cmd = exec.Command(Binary(t), args...)
	// Without --chain the server would fall back to the default data
	// directory's chain: keep it inside the test.
	s.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(t.TempDir(), "xdg"))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	deadline := time.After(30 * time.Second)
	for !strings.Contains(s.log.String(), imageServerReady+addr) {
		select {
		case <-s.done:
			s.once.Do(func() {}) // nothing left to stop
			t.Fatalf("image server exited at start (%v):\n%s", s.cmd.ProcessState, s.log.String())
		case <-deadline:
			s.Stop()
			t.Fatalf("image server did not start:\n%s", s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s
}

// Log is what the server has written to stdout and stderr.
func (s *ImageServer) Log() string { return s.log.String() }

// Stop stops the server with SIGINT (idempotent) and fails the test if it
// does not shut down cleanly: exit status 0 within 15 s, no panic.
func (s *ImageServer) Stop() {
	s.once.Do(func() {
		select {
		case <-s.done:
			s.t.Errorf("image server exited before it was stopped (%v):\n%s", s.cmd.ProcessState, s.log.String())
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
			s.t.Errorf("image server did not stop within 15 s of SIGINT:\n%s", s.log.String())
			return
		}
		if code := s.cmd.ProcessState.ExitCode(); code != 0 || strings.Contains(s.log.String(), "panic:") {
			s.t.Errorf("image server exited with status %d after SIGINT:\n%s", code, s.log.String())
		}
	})
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
