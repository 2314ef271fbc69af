package fuse_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/integrity-sys/integrity/fuse"
	"github.com/integrity-sys/integrity/fuse/memfs"
	"golang.org/x/sys/unix"
)

// serveEnv makes the test binary a mount server instead of a test run: it
// mounts a fresh memfs at the directory named, prints "ready", and serves
// until SIGINT/SIGTERM (clean unmount) or SIGKILL (a crash, leaving a stale
// mount). TestClearStale uses it; so can a benchmark by hand:
//
//	go test -c -o /tmp/fusetest ./fuse && INTEGRITY_FUSE_SERVE=/mnt/x /tmp/fusetest
const serveEnv = "INTEGRITY_FUSE_SERVE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(serveEnv); dir != "" {
		os.Exit(serveMain(dir))
	}
	os.Exit(m.Run())
}

func serveMain(dir string) int {
	debug := os.Getenv("INTEGRITY_FUSE_DEBUG") != ""
	level := slog.LevelWarn
	if debug {
		level = slog.LevelDebug
	}
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := fuse.Mount(dir, memfs.New(), fuse.Options{Logger: lg, Debug: debug})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %s\n", srv.Method())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		if err := srv.Unmount(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	srv.Wait()
	return 0
}

// logBuf collects the mount's log; it is printed if the test fails.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mount mounts fsys in a fresh temporary directory and unmounts it when the
// test ends, lazily if something still holds it, so no test leaves a mount
// behind on a shared machine.
func mount(t *testing.T, fsys fuse.FS, opts fuse.Options) (string, *logBuf) {
	t.Helper()
	requireFuse(t)
	dir := t.TempDir()
	lb := &logBuf{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := fuse.Mount(dir, fsys, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Logf("unmount: %v; detaching", err)
			detach(t, dir)
		}
		if t.Failed() && !opts.Debug {
			t.Logf("mount log:\n%s", lb)
		}
	})
	return dir, lb
}

// requireFuse skips a test on a machine that cannot mount FUSE at all.
func requireFuse(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skipf("not root and no fusermount3: %v", err)
		}
	}
}

func detach(t *testing.T, dir string) {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		if out, err2 := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err2 != nil {
			t.Errorf("detach %s: %v; fusermount3: %v %s", dir, err, err2, out)
		}
	}
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// TestPosix runs go-fuse's posixtest suite, one fresh mount per case. Cases
// for features the tree does not have are skipped with the reason recorded
// in fuse.NotApplicable.
func TestPosix(t *testing.T) {
	na := fuse.NotApplicable()
	for name := range na {
		if posixtest.All[name] == nil {
			t.Errorf("NotApplicable names %q, which posixtest does not have", name)
		}
	}
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := na[name]; ok {
				t.Skip(why)
			}
			dir, _ := mount(t, memfs.New(), fuse.Options{})
			posixtest.All[name](t, dir)
		})
	}
}

func mountInfo(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return line
		}
	}
	t.Fatalf("%s not in mountinfo", dir)
	return ""
}

func TestMountInfo(t *testing.T) {
	dir, _ := mount(t, memfs.New(), fuse.Options{FsName: "alice", Name: "integ"})
	line := mountInfo(t, dir)
	for _, want := range []string{"fuse.integ", "alice", "default_permissions"} {
		if !strings.Contains(line, want) {
			t.Errorf("mountinfo %q lacks %q", line, want)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != uint32(os.Geteuid()) || st.Gid != uint32(os.Getegid()) {
		t.Errorf("root owned by %d:%d, want %d:%d", st.Uid, st.Gid, os.Geteuid(), os.Getegid())
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Namelen != fuse.MaxNameLen || sfs.Blocks == 0 {
		t.Errorf("statfs: namelen %d blocks %d", sfs.Namelen, sfs.Blocks)
	}
}

// populate puts a file "f" (content "hello"), a directory "d" and a symlink
// "l" into a fresh memfs.
func populate(t *testing.T) *memfs.FS {
	t.Helper()
	ctx := t.Context()
	m := memfs.New()
	f, err := m.Create(ctx, m.Root(), "f", fuse.KindFile, 0644, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Write(ctx, f.Ino, 0, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := m.Flush(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, m.Root(), "d", fuse.KindDir, 0755, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, m.Root(), "l", fuse.KindSymlink, 0777, "f"); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkReadOnly tries every kind of mutation and wants EROFS, and reads to
// work.
func checkReadOnly(t *testing.T, dir string) {
	t.Helper()
	p := func(s string) string { return filepath.Join(dir, s) }
	if got, err := os.ReadFile(p("f")); err != nil || string(got) != "hello" {
		t.Errorf("read: %q %v", got, err)
	}
	if got, err := os.Readlink(p("l")); err != nil || got != "f" {
		t.Errorf("readlink: %q %v", got, err)
	}
	_, err := os.OpenFile(p("new"), os.O_CREATE|os.O_WRONLY, 0644)
	wantErrno(t, "create", err, syscall.EROFS)
	_, err = os.OpenFile(p("f"), os.O_WRONLY, 0)
	wantErrno(t, "open for write", err, syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(p("d2"), 0755), syscall.EROFS)
	wantErrno(t, "mknod", syscall.Mknod(p("n"), syscall.S_IFREG|0644, 0), syscall.EROFS)
	wantErrno(t, "symlink", os.Symlink("x", p("l2")), syscall.EROFS)
	wantErrno(t, "unlink", os.Remove(p("f")), syscall.EROFS)
	wantErrno(t, "rmdir", os.Remove(p("d")), syscall.EROFS)
	wantErrno(t, "rename", os.Rename(p("f"), p("g")), syscall.EROFS)
	wantErrno(t, "chmod", os.Chmod(p("f"), 0600), syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(p("f"), 0), syscall.EROFS)
	wantErrno(t, "utimes", os.Chtimes(p("f"), time.Now(), time.Now()), syscall.EROFS)
	wantErrno(t, "setxattr", unix.Setxattr(p("f"), "user.a", []byte("v"), 0), syscall.EROFS)
	wantErrno(t, "removexattr", unix.Removexattr(p("f"), "user.a"), syscall.EROFS)
	wantErrno(t, "link", os.Link(p("f"), p("h")), syscall.EROFS)
}

func TestReadOnly(t *testing.T) {
	dir, _ := mount(t, populate(t), fuse.Options{ReadOnly: true})
	if f := strings.Fields(mountInfo(t, dir)); !strings.HasPrefix(f[5], "ro") {
		t.Errorf("mount options %q, want ro", f[5])
	}
	checkReadOnly(t, dir)
}

// TestReadOnlyAdapter leaves the kernel mount writable: the adapter alone
// must refuse every mutation.
func TestReadOnlyAdapter(t *testing.T) {
	opts := fuse.Options{ReadOnly: true}
	fuse.KernelRW(&opts)
	m := populate(t)
	dir, _ := mount(t, m, opts)
	checkReadOnly(t, dir)
	// The tree is untouched.
	if a, err := m.Lookup(t.Context(), m.Root(), "f"); err != nil || a.Size != 5 || a.Mode != 0644 {
		t.Errorf("f after the attempts: %+v %v", a, err)
	}
}

func TestAllowOther(t *testing.T) {
	if os.Geteuid() != 0 {
		conf, _ := os.ReadFile("/etc/fuse.conf")
		if !strings.Contains(string(conf), "\nuser_allow_other") && !strings.HasPrefix(string(conf), "user_allow_other") {
			t.Skip("allow_other needs root or user_allow_other in /etc/fuse.conf")
		}
	}
	dir, _ := mount(t, populate(t), fuse.Options{AllowOther: true})
	if line := mountInfo(t, dir); !strings.Contains(line, "allow_other") {
		t.Errorf("mountinfo %q lacks allow_other", line)
	}
	if os.Geteuid() != 0 {
		t.Skip("switching to another user needs root")
	}
	// Let another user reach the mount point through the temp directories.
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(filepath.Dir(p), 0755); err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(p) == os.TempDir() {
			break
		}
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("cat", filepath.Join(dir, "f")); err != nil || out != "hello" {
		t.Errorf("another user reading a 0644 file: %q %v", out, err)
	}
	// Permissions still hold: the node belongs to the mounting user.
	if out, err := run("touch", filepath.Join(dir, "f")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("another user writing a 0644 file of root: %q %v", out, err)
	}

	// Set-ID bits survive the owner's (root's) writes and are cleared by
	// another user's write or truncate, as on any Linux filesystem.
	suid := filepath.Join(dir, "suid")
	mode := func() os.FileMode {
		t.Helper()
		fi, err := os.Stat(suid)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"write", []string{"sh", "-c", "echo more >> " + suid}},
		{"truncate", []string{"truncate", "-s", "1", suid}},
	} {
		if err := os.WriteFile(suid, []byte("x"), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(suid, 0o777|os.ModeSetuid|os.ModeSetgid); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(suid, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("root")); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if m := mode(); m&(os.ModeSetuid|os.ModeSetgid) != os.ModeSetuid|os.ModeSetgid {
			t.Errorf("after root's write: %v, want set-ID bits kept", m)
		}
		if out, err := run(tc.args...); err != nil {
			t.Fatalf("%s as another user: %q %v", tc.name, out, err)
		}
		if m := mode(); m&(os.ModeSetuid|os.ModeSetgid) != 0 || m.Perm() != 0o777 {
			t.Errorf("after another user's %s: %v, want 0777 without set-ID bits", tc.name, m)
		}
		if err := os.Remove(suid); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHistory(t *testing.T) {
	dir, _ := mount(t, memfs.New(), fuse.Options{})
	p := func(s string) string { return filepath.Join(dir, s) }
	if err := os.Mkdir(p("docs"), 0755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"one", "two!", "three"} {
		if err := os.WriteFile(p("docs/a.txt"), []byte(v), 0644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("docs/a.txt", p("link")); err != nil {
		t.Fatal(err)
	}

	// Hidden from the root's listing, but there by name.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == fuse.HistoryDir {
			t.Errorf("%s listed in the root", fuse.HistoryDir)
		}
	}
	if fi, err := os.Stat(p(".history")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0555 {
		t.Fatalf("stat .history: %v %v", fi, err)
	}

	names := func(d string) []string {
		t.Helper()
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatalf("ReadDir %s: %v", d, err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	if got := strings.Join(names(p(".history")), " "); got != "docs link" {
		t.Errorf(".history lists %q", got)
	}
	// Each os.WriteFile is one open, write and close: one revision each.
	if got := strings.Join(names(p(".history/docs/a.txt")), " "); got != "1 2 3" {
		t.Errorf(".history/docs/a.txt lists %q", got)
	}
	for rev, want := range map[string]string{"1": "one", "2": "two!", "3": "three"} {
		got, err := os.ReadFile(p(".history/docs/a.txt/" + rev))
		if err != nil || string(got) != want {
			t.Errorf("revision %s: %q %v, want %q", rev, got, err, want)
		}
	}
	if got, err := os.ReadFile(p(".history/link/1")); err != nil || string(got) != "docs/a.txt" {
		t.Errorf("symlink revision: %q %v", got, err)
	}
	fi, err := os.Stat(p(".history/docs/a.txt/2"))
	if err != nil || fi.Size() != 4 || fi.Mode().Perm() != 0444 || !fi.Mode().IsRegular() {
		t.Errorf("stat revision: %v %v", fi, err)
	}
	_, err = os.Stat(p(".history/docs/a.txt/4"))
	wantErrno(t, "missing revision", err, syscall.ENOENT)
	_, err = os.Stat(p(".history/docs/a.txt/01"))
	wantErrno(t, "revision 01", err, syscall.ENOENT)

	// Read-only all the way down, for root too.
	_, err = os.OpenFile(p(".history/docs/a.txt/1"), os.O_WRONLY, 0)
	wantErrno(t, "write a revision", err, syscall.EROFS)
	wantErrno(t, "mkdir in .history", os.Mkdir(p(".history/docs/x"), 0755), syscall.EROFS)
	wantErrno(t, "create in .history", os.WriteFile(p(".history/new"), nil, 0644), syscall.EROFS)
	wantErrno(t, "remove a revision", os.Remove(p(".history/docs/a.txt/1")), syscall.EROFS)
	wantErrno(t, "rename within .history", os.Rename(p(".history/docs"), p(".history/docs2")), syscall.EROFS)
	wantErrno(t, "rename into .history", os.Rename(p("link"), p(".history/link2")), syscall.EROFS)
	wantErrno(t, "chmod a revision", os.Chmod(p(".history/docs/a.txt/1"), 0644), syscall.EROFS)
	wantErrno(t, "remove .history", os.Remove(p(".history")), syscall.EPERM)
	wantErrno(t, "rename .history", os.Rename(p(".history"), p("h")), syscall.EPERM)
	if err := os.Mkdir(p(".history"), 0755); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("mkdir .history: %v", err)
	}

	// A rename in the tree shows up in the view.
	if err := os.Rename(p("docs/a.txt"), p("docs/b.txt")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(p(".history/docs/b.txt")), " "); got != "1 2 3" {
		t.Errorf("after rename: %q", got)
	}
}

// TestClearStale crashes a server process and checks that the dead mount it
// leaves is found, cleared, and mounted over.
func TestClearStale(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	t.Cleanup(func() {
		// Whatever happened, leave no mount behind.
		if _, err := fuse.ClearStale(dir); err != nil {
			t.Error(err)
		}
		if isMounted(dir) {
			detach(t, dir)
		}
	})
	crash := func() {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), serveEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("server child: %q %v", line, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0644); err != nil {
			t.Errorf("write through the child's mount: %v", err)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); !errors.Is(err, unix.ENOTCONN) {
			t.Fatalf("stat after the server died: %v, want ENOTCONN", err)
		}
	}

	crash()
	if ok, err := fuse.ClearStale(dir); !ok || err != nil {
		t.Fatalf("ClearStale: %v %v", ok, err)
	}
	if isMounted(dir) {
		t.Fatal("still mounted after ClearStale")
	}
	if ok, err := fuse.ClearStale(dir); ok || err != nil {
		t.Errorf("ClearStale of a plain directory: %v %v", ok, err)
	}

	// Mount clears a stale mount by itself.
	crash()
	srv, err := fuse.Mount(dir, populate(t), fuse.Options{})
	if err != nil {
		t.Fatalf("Mount over a stale mount: %v", err)
	}
	defer func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != "hello" {
		t.Errorf("read from the new mount: %q %v", got, err)
	}
	if ok, err := fuse.ClearStale(dir); ok || err != nil {
		t.Errorf("ClearStale of a live mount: %v %v", ok, err)
	}
}

func isMounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestFusermount mounts through the helper, as a user without
// CAP_SYS_ADMIN would, with the options passed as -o.
func TestFusermount(t *testing.T) {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3")
	}
	for _, ro := range []bool{false, true} {
		t.Run(fmt.Sprintf("ro=%v", ro), func(t *testing.T) {
			opts := fuse.Options{NoDirectMount: true, ReadOnly: ro, AllowOther: os.Geteuid() == 0}
			requireFuse(t)
			dir := t.TempDir()
			srv, err := fuse.Mount(dir, populate(t), opts)
			if err != nil {
				t.Fatalf("Mount: %v", err)
			}
			t.Cleanup(func() {
				if err := srv.Unmount(); err != nil {
					t.Error(err)
					detach(t, dir)
				}
			})
			if srv.Method() != "fusermount3" {
				t.Errorf("method %q", srv.Method())
			}
			line := mountInfo(t, dir)
			if opts.AllowOther && !strings.Contains(line, "allow_other") {
				t.Errorf("mountinfo %q lacks allow_other", line)
			}
			if ro {
				if f := strings.Fields(line); !strings.HasPrefix(f[5], "ro") {
					t.Errorf("mount options %q, want ro", f[5])
				}
				checkReadOnly(t, dir)
				return
			}
			if err := os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0600); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestModes(t *testing.T) {
	dir, _ := mount(t, memfs.New(), fuse.Options{})
	fn := filepath.Join(dir, "f")
	if err := os.WriteFile(fn, nil, 0644); err != nil {
		t.Fatal(err)
	}
	for _, m := range []os.FileMode{0, 0o600, 0o777 | os.ModeSticky} {
		if err := os.Chmod(fn, m); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(fn)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != m {
			t.Errorf("chmod %v: stat shows %v", m, fi.Mode())
		}
	}
}
