package vm

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/vm/internal/wasmbuild"
)

var builder = wasmbuild.New()

func TestMain(m *testing.M) {
	code := m.Run()
	builder.Cleanup()
	os.Exit(code)
}

// sampleOS is the real sample OS, compiled for wasip1.
func sampleOS(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(builder.Build(t, "./vm/os"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// TestShellOnDisk drives the sample OS with a script against an in-memory
// tree: every file operation of the shell lands in the tree.
func TestShellOnDisk(t *testing.T) {
	r := newRuntime(t, Options{})
	tree := newMemTree()
	script := strings.Join([]string{
		"mkdir /docs",
		"write /docs/a.txt hello world",
		"cat /docs/a.txt",
		"ls /docs",
		"mv /docs/a.txt /docs/b.txt",
		"cd /docs",
		"cat b.txt",
		"mkdir -p x/y/z",
		"write x/y/z/deep.txt deep",
		"rm /docs/x/y/z/deep.txt",
		"whoami",
		"nosuchcommand",
		"exit 3",
	}, "\n") + "\n"
	var out, errb bytes.Buffer
	err := r.Boot(context.Background(), Machine{Module: sampleOS(t), Args: []string{"os"},
		Stdin: strings.NewReader(script), Stdout: &out, Stderr: &errb, Disk: tree, Timeout: time.Minute})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Reason != "exit" || ee.Code != 3 {
		t.Fatalf("boot: %v (stdout %q, stderr %q)", err, out.String(), errb.String())
	}
	if got := out.String(); strings.Count(got, "hello world\n") != 2 || !strings.Contains(got, "a.txt") {
		t.Fatalf("stdout: %q", got)
	}
	if !strings.Contains(errb.String(), "whoami: not_supported") || !strings.Contains(errb.String(), "nosuchcommand: unknown command") {
		t.Fatalf("stderr: %q", errb.String())
	}
	if b, ok := tree.file("docs", "b.txt"); !ok || string(b) != "hello world\n" {
		t.Fatalf("tree has %q, %v", b, ok)
	}
	if _, ok := tree.file("docs", "a.txt"); ok {
		t.Fatal("a.txt still there after mv")
	}
	if _, ok := tree.file("docs", "x", "y", "z"); !ok {
		t.Fatal("mkdir -p did not make x/y/z")
	}
	if _, ok := tree.file("docs", "x", "y", "z", "deep.txt"); ok {
		t.Fatal("rm left deep.txt")
	}
	tree.mu.Lock()
	flushes := len(tree.flushed)
	tree.mu.Unlock()
	if flushes == 0 {
		t.Fatal("closing written files never flushed them")
	}
}

// TestCheckWarmsCache: Check refuses what the VM cannot boot, and compiles
// what it can into the cache, so the first boot after it is warm.
func TestCheckWarmsCache(t *testing.T) {
	dir := t.TempDir()
	r := newRuntime(t, Options{CacheDir: dir})
	ctx := context.Background()
	for _, bad := range [][]byte{nil, []byte("not wasm"), {0, 'a', 's', 'm', 1, 0, 0, 0}} {
		if err := r.Check(ctx, bad); err == nil {
			t.Errorf("Check(%q) accepted", bad)
		}
	}
	mod := sampleOS(t)
	if err := r.Check(ctx, mod); err != nil {
		t.Fatal(err)
	}
	cached := cacheFiles(t, dir)
	if len(cached) == 0 {
		t.Fatal("Check cached nothing")
	}
	// A new runtime on the same directory (a new process) boots from the
	// cache: it compiles (and writes) nothing new.
	r2 := newRuntime(t, Options{CacheDir: dir})
	if err := r2.Boot(ctx, Machine{Module: mod, Stdin: strings.NewReader("exit\n")}); err != nil {
		t.Fatal(err)
	}
	if after := cacheFiles(t, dir); len(after) != len(cached) {
		t.Fatalf("the boot compiled again: %d cache files before, %d after", len(cached), len(after))
	}
}

// importModule is a minimal wasm command importing module.name with the
// signature (params × i32) → i32 and exporting an empty _start.
func importModule(module, name string, params int) []byte {
	sec := func(id byte, payload ...byte) []byte { return append([]byte{id, byte(len(payload))}, payload...) }
	typ := []byte{2, 0x60, byte(params)}
	for range params {
		typ = append(typ, 0x7f)
	}
	typ = append(typ, 1, 0x7f, 0x60, 0, 0)
	imp := append([]byte{1, byte(len(module))}, module...)
	imp = append(append(append(imp, byte(len(name))), name...), 0, 0)
	out := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	out = append(out, sec(1, typ...)...)
	out = append(out, sec(2, imp...)...)
	out = append(out, sec(3, 1, 1)...)
	out = append(out, sec(7, append(append([]byte{1, 6}, "_start"...), 0, 1)...)...)
	return append(out, sec(10, 1, 2, 0, 0x0b)...)
}

// TestCheckResolvesImports: an OS that imports a host function the VM
// lacks, or with another signature, is refused at install with its name.
func TestCheckResolvesImports(t *testing.T) {
	r := newRuntime(t, Options{})
	ctx := context.Background()
	if err := r.Check(ctx, importModule("filesystem", "publish", 3)); err != nil {
		t.Fatalf("a correct import refused: %v", err)
	}
	for _, c := range []struct {
		mod, name string
		params    int
		want      string
	}{
		{"filesystem", "format_disk", 0, "does not have"},
		{"filesystem", "publish", 1, "another signature"},
		{"keychain", "export", 0, "does not provide"},
	} {
		err := r.Check(ctx, importModule(c.mod, c.name, c.params))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.mod+"."+c.name) {
			t.Errorf("%s.%s/%d: %v", c.mod, c.name, c.params, err)
		}
	}
}

func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
