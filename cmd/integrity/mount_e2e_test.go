package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/integrity-sys/integrity/fuse"
	"github.com/integrity-sys/integrity/internal/e2e"
)

// newSystem initialises a System on a device (embedded chain unless the
// device has a btcd URL) and returns the password file.
func newSystem(t *testing.T, d *e2e.Device, ss *e2e.SecretServer, user string, extra ...string) string {
	t.Helper()
	pw := e2e.WriteFile(t, "pw", "mount tests\n")
	d.OK(append([]string{"init", "--user", user, "--destination", user, "--secret-server", ss.URL, "--code-file", ss.CodeFile,
		"--password-file", pw, "--backup-key-out", filepath.Join(t.TempDir(), "bk")}, extra...)...)
	return pw
}

// mountAt mounts the device's System at dir through the CLI (agent in the
// background) and unmounts it when the test ends.
func mountAt(t *testing.T, d *e2e.Device, dir string, opts ...string) {
	t.Helper()
	d.OK(append([]string{"mount", dir}, opts...)...)
	t.Cleanup(func() {
		if r := d.Run("", "unmount", dir); r.Code != 0 {
			t.Logf("unmount %s: %s", dir, r.Stderr)
			_, _ = fuse.ClearStale(dir)
		}
	})
}

// TestPosixOnMount runs go-fuse's posixtest suite on a real integrity
// mount, each case in its own folder; the cases that test what the tree
// does not have by design are listed in fuse.NotApplicable (docs).
func TestPosixOnMount(t *testing.T) {
	ss := e2e.StartSecretServer(t)
	d := e2e.NewDevice(t, "")
	newSystem(t, d, ss, "posix@example.com")
	mnt := filepath.Join(t.TempDir(), "mnt")
	mountAt(t, d, mnt)
	skip := fuse.NotApplicable()
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := skip[name]; ok {
				t.Skip(why)
			}
			dir := filepath.Join(mnt, "posix-"+name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}

// copyTree copies files of at most maxSize bytes (and their folders) from
// src to dst, returning how many files it copied.
func copyTree(t *testing.T, src, dst string, maxSize int64, maxFiles int) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n >= maxFiles {
			return filepath.SkipAll
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case fi.Mode().IsRegular() && fi.Size() <= maxSize:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n++
			return os.WriteFile(out, b, fi.Mode().Perm()|0o200)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func goroot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestCopySourceTreeAcrossDevices: cp -r of a real source tree (2,000+
// files) into A's mount; unmount; log in and mount on device B; diff -r
// against the original is clean.
func TestCopySourceTreeAcrossDevices(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	a := e2e.NewDevice(t, node.URL)
	pw := newSystem(t, a, ss, "grace@example.com")

	// Files up to 1 MiB live on chain; larger ones go to blobs, which
	// another device reads from an image server (issue 7).
	src := filepath.Join(t.TempDir(), "src")
	if n := copyTree(t, filepath.Join(goroot(t), "src"), src, 1<<20, 2200); n < 2000 {
		t.Fatalf("source tree has %d files", n)
	}
	mntA := filepath.Join(t.TempDir(), "a")
	a.OK("mount", mntA)
	t0 := time.Now()
	if out, err := exec.Command("cp", "-r", src, filepath.Join(mntA, "src")).CombinedOutput(); err != nil {
		t.Fatalf("cp -r: %v: %s", err, out)
	}
	t.Logf("cp -r of the source tree took %s", time.Since(t0))
	a.OK("unmount", mntA)

	b := e2e.NewDevice(t, node.URL)
	b.OK("login", "--user", "grace@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	mntB := filepath.Join(t.TempDir(), "b")
	mountAt(t, b, mntB)
	if out, err := exec.Command("diff", "-r", src, filepath.Join(mntB, "src")).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, firstLines(string(out), 20))
	}
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// TestKill9DuringWriteStorm: the agent is killed with SIGKILL while a
// program writes and fsyncs files through the mount. After a restart every
// file whose fsync returned is intact — and on chain: it survives deleting
// the cache and rebuilding the tree from the chain alone.
func TestKill9DuringWriteStorm(t *testing.T) {
	ss := e2e.StartSecretServer(t)
	d := e2e.NewDevice(t, "")
	newSystem(t, d, ss, "heidi@example.com")
	mnt := filepath.Join(t.TempDir(), "mnt")
	agent := d.StartAgent("--mount", mnt)
	deadline := time.Now().Add(30 * time.Second)
	for !mounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatal("not mounted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	content := func(i int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("file %d; ", i)), 50+i%200)
	}
	type result struct {
		synced []int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for i := 0; ; i++ {
			f, err := os.Create(filepath.Join(mnt, fmt.Sprintf("f%04d", i)))
			if err != nil {
				r.err = err
				break
			}
			_, err = f.Write(content(i))
			if err == nil {
				err = f.Sync()
			}
			f.Close()
			if err != nil {
				r.err = err
				break
			}
			r.synced = append(r.synced, i)
		}
		done <- r
	}()
	time.Sleep(3 * time.Second)
	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	t.Logf("%d files fsynced before the kill (writer stopped with: %v)", len(r.synced), r.err)
	if len(r.synced) < 20 {
		t.Fatalf("only %d files fsynced in 3 s", len(r.synced))
	}
	_ = agent.Wait()

	check := func(stage string) {
		t.Helper()
		for _, i := range r.synced {
			got, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("f%04d", i)))
			if err != nil || !bytes.Equal(got, content(i)) {
				l1, _ := os.ReadFile(filepath.Join(d.Home, "agent.log"))
				l2, _ := os.ReadFile(filepath.Join(d.DataDir, "agent.log"))
				t.Fatalf("%s: fsynced file f%04d lost or corrupt (%d bytes): %v\n%s\n%s", stage, i, len(got), err, lastN(string(l1), 30), lastN(string(l2), 60))
			}
		}
		// No file is corrupt: every file present is a whole version.
		ents, err := os.ReadDir(mnt)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			var i int
			if _, err := fmt.Sscanf(e.Name(), "f%04d", &i); err != nil {
				continue
			}
			got, _ := os.ReadFile(filepath.Join(mnt, e.Name()))
			if len(got) != 0 && !bytes.Equal(got, content(i)) {
				t.Fatalf("%s: %s is corrupt (%d bytes)", stage, e.Name(), len(got))
			}
		}
	}
	// Restart: the stale mount is cleared, the journal replayed.
	mountAt(t, d, mnt)
	check("after restart")
	d.OK("unmount", mnt)
	if err := os.RemoveAll(filepath.Join(d.DataDir, "cache")); err != nil {
		t.Fatal(err)
	}
	d.OK("mount", mnt)
	check("rebuilt from the chain alone")
}

func mounted(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// TestTwoAgentsSeeEachOther: devices A and B of one user on a shared btcd
// node; a file written through A's mount appears in B's mount within 5 s.
func TestTwoAgentsSeeEachOther(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	a := e2e.NewDevice(t, node.URL)
	pw := newSystem(t, a, ss, "ivan@example.com")
	b := e2e.NewDevice(t, node.URL)
	b.OK("login", "--user", "ivan@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	mntA, mntB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	mountAt(t, a, mntA)
	mountAt(t, b, mntB)
	for i, name := range []string{"hello.txt", "second.txt"} {
		want := []byte(fmt.Sprintf("written on A, round %d\n", i))
		p := filepath.Join(mntA, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(want); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		for {
			got, err := os.ReadFile(filepath.Join(mntB, name))
			if err == nil && bytes.Equal(got, want) {
				t.Logf("%s visible on B after %s", name, time.Since(t0).Round(time.Millisecond))
				break
			}
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("%s not visible on B within 5 s (%v, %q)", name, err, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func lastN(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// TestOutOfMoney: a device whose wallet cannot pay commits: fsync and then
// writes fail with ENOSPC, status says why, nothing is dropped — once the
// wallet is funded the pending change is committed.
func TestOutOfMoney(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	a := e2e.NewDevice(t, node.URL)
	pw := newSystem(t, a, ss, "judy@example.com")
	b := e2e.NewDevice(t, node.URL) // a second device: its wallet is empty
	b.OK("login", "--user", "judy@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	mnt := filepath.Join(t.TempDir(), "b")
	mountAt(t, b, mnt)
	f, err := os.Create(filepath.Join(mnt, "unpaid.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("kept until paid for")); err != nil {
		t.Fatal(err)
	}
	err = f.Sync()
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fsync with an empty wallet: %v, want ENOSPC", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "more.txt"), []byte("x"), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write with an empty wallet: %v, want ENOSPC", err)
	}
	st := b.OK("status")
	if !strings.Contains(st, "ENOSPC") || !strings.Contains(st, "insufficient funds") {
		t.Fatalf("status does not say why:\n%s", st)
	}
	// Fund the wallet: the pending change goes through.
	b.OK("chain", "mine", "101")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st := b.OK("status"); !strings.Contains(st, "ENOSPC") && strings.Contains(st, " 0 with changes") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pending change was not committed after funding:\n%s", b.OK("status"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := a.OK("cat", "/unpaid.txt"); got != "kept until paid for" {
		t.Fatalf("device A reads %q", got)
	}
}

// TestUnmountFromOutside: a mount removed behind the agent's back
// (fusermount3 -u) is noticed — status says so, the agent stops promptly
// and mounting again works — and nothing written before is lost.
func TestUnmountFromOutside(t *testing.T) {
	ss := e2e.StartSecretServer(t)
	d := e2e.NewDevice(t, "")
	newSystem(t, d, ss, "ivan@example.com")
	mnt := filepath.Join(t.TempDir(), "mnt")
	mountAt(t, d, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "kept.txt"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.OK("status"), "not mounted") {
		if time.Now().After(deadline) {
			t.Fatalf("status after an outside unmount:\n%s", d.OK("status"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.OK("mount", mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "kept.txt"))
	if err != nil || string(got) != "kept" {
		t.Fatalf("after mounting again: %q, %v", got, err)
	}
}
