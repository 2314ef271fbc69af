// Package wasmbuild compiles the module's Go programs to WebAssembly
// (GOOS=wasip1) for tests: the sample OS and hostile test guests. It is
// imported only by tests.
package wasmbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Builder builds each package once per test process.
type Builder struct {
	mu    sync.Mutex
	dir   string
	built map[string]string
}

// New returns a Builder writing into a fresh temporary directory.
func New() *Builder { return &Builder{built: map[string]string{}} }

// root finds the module root from the working directory.
func root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// Build compiles pkg (a path relative to the module root, "./vm/os") and
// returns the .wasm file (Go's build cache makes a rebuild cheap).
func (b *Builder) Build(t testing.TB, pkg string) string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.built[pkg]; ok {
		return p
	}
	r, err := root()
	if err != nil {
		t.Fatal(err)
	}
	if b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "integrity-wasm-"); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(b.dir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg)+".wasm")
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = r
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s for wasip1: %v: %s", pkg, err, o)
	}
	b.built[pkg] = out
	return out
}

// Cleanup removes what Build wrote.
func (b *Builder) Cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
