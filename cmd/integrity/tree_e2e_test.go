package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/internal/e2e"
)

// makeTree writes dirs × files files of varied sizes, modes and mtimes.
func makeTree(t *testing.T, root string, dirs, files int) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	modes := []fs.FileMode{0o600, 0o644, 0o640, 0o755}
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(root, fmt.Sprintf("folder-%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < files; f++ {
			size := r.IntN(4000)
			switch {
			case f == 0 && d == 0:
				size = 300_000 // several commits on chain
			case f == 1:
				size = 0
			case f%7 == 0:
				size = 20_000 + r.IntN(20_000)
			}
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			p := filepath.Join(dir, fmt.Sprintf("file %03d.dat", f))
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, modes[r.IntN(len(modes))]); err != nil {
				t.Fatal(err)
			}
			mt := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(5 * 365 * 24 * time.Hour))))
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// describe lists a local tree: relative path, mode, size, mtime (ns) and
// content hash of every file.
func describe(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			fmt.Fprintf(&b, "%s/ %o\n", rel, fi.Mode().Perm())
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %o %d %d %x\n", rel, fi.Mode().Perm(), fi.Size(), fi.ModTime().UnixNano(), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestTreeAcrossDevices: 1,000 files in 50 folders written on device A are
// identical on device B after login — and again after B's cache is
// deleted; a file edited 20 times gives back any revision.
func TestTreeAcrossDevices(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	pw := e2e.WriteFile(t, "pw", "tree test\n")
	srv := []string{"--user", "erin@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile}
	a := e2e.NewDevice(t, node.URL)
	a.OK(append([]string{"init", "--destination", "erin@example.com", "--password-file", pw, "--backup-key-out", filepath.Join(t.TempDir(), "bk")}, srv...)...)

	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 50, 20)
	want := describe(t, src)
	a.OK("put", "-r", src, "/tree")

	b := e2e.NewDevice(t, node.URL)
	b.OK(append([]string{"login", "--password-file", pw}, srv...)...)
	out := filepath.Join(t.TempDir(), "out")
	b.OK("get", "-r", "/tree", out)
	if got := describe(t, out); got != want {
		t.Fatalf("device B's copy differs from A's original:\n%s", firstDiff(got, want))
	}
	if err := os.RemoveAll(filepath.Join(b.DataDir, "cache")); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(t.TempDir(), "out2")
	b.OK("get", "-r", "/tree", out2)
	if got := describe(t, out2); got != want {
		t.Fatalf("after deleting B's cache:\n%s", firstDiff(got, want))
	}

	// Twenty edits through A's agent; revision 7 comes back byte for
	// byte, on B too.
	a.StartAgent()
	var versions [][]byte
	f := filepath.Join(t.TempDir(), "notes.txt")
	for i := 0; i < 20; i++ {
		v := []byte(fmt.Sprintf("edit number %d\n%s", i, bytes.Repeat([]byte("the same long line of notes\n"), 100)))
		versions = append(versions, v)
		if err := os.WriteFile(f, v, 0o644); err != nil {
			t.Fatal(err)
		}
		a.OK("put", f, "/notes.txt")
	}
	log := a.OK("log", "/notes.txt")
	if strings.Count(log, "\n") != 20 || !strings.Contains(log, "patch") {
		t.Fatalf("log:\n%s", log)
	}
	if got := b.OK("cat", "--rev", "7", "/notes.txt"); got != string(versions[6]) {
		t.Fatalf("revision 7 on B: %q", got[:40])
	}
	a.OK("restore", "/notes.txt", "--rev", "7")
	if got := b.OK("cat", "/notes.txt"); got != string(versions[6]) {
		t.Fatalf("after restore: %q", got[:40])
	}
	a.Fail("revisions 1..21", "cat", "--rev", "99", "/notes.txt")
	a.Fail("no such file", "cat", "/nope")
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) && i < len(w); i++ {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("%d lines vs %d", len(g), len(w))
}
