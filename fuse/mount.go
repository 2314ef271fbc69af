package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options of a mount. The zero value is a private, read-write mount with
// one-second kernel caching.
type Options struct {
	// AllowOther lets users other than the mounting one into the mount
	// (-o allow_other). Permissions are then checked by the kernel against
	// the mode bits, with every node owned by the mounting user. Without
	// root, /etc/fuse.conf must contain user_allow_other.
	AllowOther bool
	// ReadOnly mounts read-only (-o ro). The adapter refuses every mutation
	// with EROFS as well, so the FS is protected even from requests the
	// kernel lets through (it does not check xattrs on every path).
	ReadOnly bool
	// FsName is the source column of mount(8) and df; default "integrity".
	FsName string
	// Name is the subtype: the type shows as fuse.<Name>; default "integrity".
	Name string
	// EntryTimeout and AttrTimeout are how long the kernel may cache names
	// and attributes without asking again. Zero means the default of one
	// second; a negative value turns the cache off.
	EntryTimeout time.Duration
	AttrTimeout  time.Duration
	// MaxWrite is the largest read or write request; default 1 MiB (the
	// kernel may cap it at /proc/sys/fs/fuse/max_pages_limit pages).
	MaxWrite int
	// Logger receives errors from the FS and, with Debug, one line per
	// FUSE request and reply at debug level. Default slog.Default().
	Logger *slog.Logger
	Debug  bool
	// NoDirectMount skips mount(2) and always uses fusermount3. Without it,
	// a process with CAP_SYS_ADMIN mounts directly, which needs no helper
	// binary and no /etc/fuse.conf; anyone else goes through fusermount3.
	NoDirectMount bool

	// kernelRW, for tests, leaves the kernel mount writable under ReadOnly
	// so that the adapter's own refusal can be observed.
	kernelRW bool
}

// Server is a live mount.
type Server struct {
	srv    *gofuse.Server
	dir    string
	method string
}

// Dir is the absolute mount point.
func (s *Server) Dir() string { return s.dir }

// Method says how the mount was made: "mount(2)" or "fusermount3".
func (s *Server) Method() string { return s.method }

// Unmount unmounts and waits for the request loop to end. It fails with
// EBUSY while a process has a file or directory of the mount open (or as its
// working directory); ClearStale can then detach it lazily.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("fuse: unmount %s: %w", s.dir, err)
	}
	return nil
}

// Wait blocks until the mount is gone (Unmount, or fusermount3 -u from
// outside).
func (s *Server) Wait() { s.srv.Wait() }

// Mount mounts fsys at dir and serves it until unmounted. A stale mount
// left at dir by a crashed server is cleared first.
func Mount(dir string, fsys FS, opts Options) (*Server, error) {
	if fsys == nil {
		return nil, errors.New("fuse: mount: nil FS")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, err)
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if root := fsys.Root(); root == 0 || root >= virtualInoBase {
		return nil, fmt.Errorf("fuse: mount %s: FS root inode %d out of range", abs, root)
	}
	if cleared, err := ClearStale(abs); err != nil {
		return nil, fmt.Errorf("fuse: mount: %w", err)
	} else if cleared {
		lg.Warn("fuse: cleared a stale mount", "dir", abs)
	}

	direct := !opts.NoDirectMount && hasSysAdmin()
	srv, err := serve(abs, fsys, opts, lg, direct)
	method := "fusermount3"
	if direct {
		method = "mount(2)"
		if err != nil {
			// Inside a user namespace or under a seccomp filter mount(2)
			// can fail even for root; the helper may still work.
			lg.Info("fuse: direct mount failed, trying fusermount3", "dir", abs, "err", err)
			srv, err = serve(abs, fsys, opts, lg, false)
			method = "fusermount3"
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", abs, err)
	}
	lg.Debug("fuse: mounted", "dir", abs, "method", method, "ro", opts.ReadOnly, "allow_other", opts.AllowOther)
	return &Server{srv: srv, dir: abs, method: method}, nil
}

// hasSysAdmin reports whether mount(2) may work: effective root (a
// capability check would be finer, but root is the case that matters).
func hasSysAdmin() bool { return os.Geteuid() == 0 }

func timeout(d time.Duration) *time.Duration {
	switch {
	case d == 0:
		d = time.Second
	case d < 0:
		d = 0
	}
	return &d
}

func serve(dir string, fsys FS, opts Options, lg *slog.Logger, direct bool) (*gofuse.Server, error) {
	a := &adapter{
		fsys: fsys,
		log:  lg,
		ro:   opts.ReadOnly,
		uid:  uint32(os.Geteuid()),
		gid:  uint32(os.Getegid()),
	}
	fsName, name := opts.FsName, opts.Name
	if fsName == "" {
		fsName = "integrity"
	}
	if name == "" {
		name = "integrity"
	}
	maxWrite := opts.MaxWrite
	if maxWrite <= 0 {
		maxWrite = 1 << 20
	}
	// default_permissions: the kernel checks access against the mode bits
	// and the owner we report, so allow_other does not open the tree to
	// everyone, and no ACCESS requests reach us.
	mountOpts := []string{"default_permissions"}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if opts.ReadOnly && !opts.kernelRW {
		mountOpts = append(mountOpts, "ro")
		flags |= syscall.MS_RDONLY
	}
	var debugLog *log.Logger
	if opts.Debug {
		debugLog = slog.NewLogLogger(lg.Handler(), slog.LevelDebug)
	} else {
		debugLog = slog.NewLogLogger(lg.Handler(), slog.LevelWarn)
	}
	fsOpts := &gofs.Options{
		MountOptions: gofuse.MountOptions{
			AllowOther:        opts.AllowOther,
			Options:           mountOpts,
			FsName:            fsName,
			Name:              name,
			MaxWrite:          maxWrite,
			MaxReadAhead:      maxWrite,
			MaxBackground:     64,
			DirectMountStrict: direct,
			DirectMountFlags:  flags,
			// Only user.* xattrs exist: answer the kernel's security
			// label and capability probes without a trip into the FS.
			IgnoreSecurityLabels: true,
			ExtraCapabilities:    gofuse.CAP_HANDLE_KILLPRIV_V2,
			Debug:                opts.Debug,
			Logger:               debugLog,
		},
		EntryTimeout:   timeout(opts.EntryTimeout),
		AttrTimeout:    timeout(opts.AttrTimeout),
		RootStableAttr: &gofs.StableAttr{Ino: fsys.Root()},
		// Show mode 000 as it is; go-fuse would otherwise turn it into 0644.
		NullPermissions: true,
		Logger:          debugLog,
		UID:             a.uid,
		GID:             a.gid,
	}
	fsOpts.MountOptions.PanicHandler = func(v any) gofuse.Status {
		lg.Error("fuse: panic serving a request", "panic", v)
		return gofuse.EIO
	}
	root := &node{a: a}
	raw := gofs.NewNodeFS(root, fsOpts)
	srv, err := gofuse.NewServer(raw, dir, &fsOpts.MountOptions)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// The kernel never answered INIT; take the mount down again.
		_ = srv.Unmount()
		return nil, err
	}
	return srv, nil
}

// ClearStale detects a dead mount at dir (its server is gone, so stat fails
// with ENOTCONN) and detaches it lazily, so a new mount can take its place.
// It reports whether there was one. A healthy mount or a plain directory is
// left alone.
func ClearStale(dir string) (bool, error) {
	var st unix.Stat_t
	err := unix.Stat(dir, &st)
	if !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
		return false, nil
	}
	// MNT_DETACH needs CAP_SYS_ADMIN; fusermount3 -z does the same for the
	// user who made the mount.
	uerr := unix.Unmount(dir, unix.MNT_DETACH)
	if uerr == nil {
		return true, nil
	}
	bin, lerr := exec.LookPath("fusermount3")
	if lerr != nil {
		bin, lerr = exec.LookPath("fusermount")
	}
	if lerr != nil {
		return false, fmt.Errorf("clear stale mount %s: umount: %w; no fusermount3: %w", dir, uerr, lerr)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(context.Background(), bin, "-u", "-z", dir)
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return false, fmt.Errorf("clear stale mount %s: umount: %w; %s: %w: %s", dir, uerr, bin, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return true, nil
}
