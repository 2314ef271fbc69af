package vm

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/tetratelabs/wazero"
)

// Sharing is what the filesystem module needs of the Client beyond plain
// files (which the guest reaches through WASI): sharing, publishing and
// mountable images. Paths are the tree's ("/docs"), which are the guest's.
// The key material each operation moves stays in the Client. An operation
// whose feature does not exist yet returns (a wrap of) ErrNotSupported.
type Sharing interface {
	// Publish broadcasts the node's read key (and write key if write) so
	// anyone can read (and write) it.
	Publish(ctx context.Context, path string, write bool) error
	// Share sends the node's read key (and write key if write) to a user,
	// named by public key (hex) or contact name.
	Share(ctx context.Context, path, recipient string, write bool) error
	// CreateImage packs a folder into a mountable image and returns its
	// reference (hash).
	CreateImage(ctx context.Context, path string, public bool) (string, error)
	// MountImage mounts an image (hash or address) at path.
	MountImage(ctx context.Context, image, path string) error
	// UnmountImage unmounts the image at path.
	UnmountImage(ctx context.Context, path string) error
}

// Unsupported is a Sharing whose every operation reports ErrNotSupported:
// for a machine without a Client behind it (tests, tools).
type Unsupported struct{}

func (Unsupported) Publish(context.Context, string, bool) error { return ErrNotSupported }
func (Unsupported) Share(context.Context, string, string, bool) error {
	return ErrNotSupported
}
func (Unsupported) CreateImage(context.Context, string, bool) (string, error) {
	return "", ErrNotSupported
}
func (Unsupported) MountImage(context.Context, string, string) error { return ErrNotSupported }
func (Unsupported) UnmountImage(context.Context, string) error       { return ErrNotSupported }

// Flags of the filesystem module.
const (
	FlagWrite  = 1 << 0 // publish, share: the write key too
	FlagPublic = 1 << 0 // image_create: an unencrypted image
)

const (
	maxRecipient = 256
	maxImageRef  = 512
)

// approve asks for the user's consent to one operation that moves keys or
// money out of the System (Unlocker.Approve): every time, not once per
// unlock window. Paths in reason are quoted, so a name cannot dress the
// question up as something else.
func approve(ctx context.Context, unlock Unlocker, kind, reason string) Code {
	if unlock == nil {
		return ErrDenied
	}
	if err := unlock.Approve(ctx, kind, reason); err != nil {
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return codeOf(err)
		case errors.Is(err, ErrPrivLocked):
			return ErrLocked
		}
		return ErrDenied
	}
	return OK
}

func filesystemModule(r wazero.Runtime, dev Sharing, t Tree, unlock Unlocker, log *slog.Logger) wazero.HostModuleBuilder {
	if dev == nil {
		dev = Unsupported{}
	}
	d := &disk{t: t, log: log}
	// node reads an absolute guest path and, when mustExist, checks that
	// it names a node of the tree.
	node := func(g memory, p, n uint32, mustExist bool) (string, Code) {
		s, c := g.str(p, n, maxPath)
		if c != OK {
			return "", c
		}
		if !strings.HasPrefix(s, "/") {
			return "", ErrInvalid
		}
		parts, e := splitPath(s)
		if e != 0 {
			return "", ErrInvalid
		}
		clean := path.Clean("/" + strings.Join(parts, "/"))
		if mustExist {
			if t == nil {
				return "", ErrUnsupported
			}
			if _, e := d.walk(parts, true); e != 0 {
				return "", ErrNotFound
			}
		}
		// The Client acts on the literal path: one through a symlink
		// would share or image something else than the guest checked.
		if t != nil && throughSymlink(t, parts) {
			return "", ErrInvalid
		}
		return clean, OK
	}
	text := func(g memory, p, n, max uint32) (string, Code) {
		s, c := g.str(p, n, max)
		if c != OK {
			return "", c
		}
		if s == "" || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return "", ErrInvalid
		}
		return s, OK
	}
	return export(r.NewHostModuleBuilder("filesystem"), "filesystem", log, []hostFunc{
		// publish(path, path_len, flags).
		{"publish", 3, func(ctx context.Context, g memory, p []uint32) Code {
			if p[2]&^FlagWrite != 0 {
				return ErrInvalid
			}
			pth, c := node(g, p[0], p[1], true)
			if c != OK {
				return c
			}
			what := "publish " + strconv.Quote(pth) + " (anyone may read it"
			if p[2]&FlagWrite != 0 {
				what += " and change it"
			}
			if c := approve(ctx, unlock, "publish", what+")"); c != OK {
				return c
			}
			return codeOf(dev.Publish(ctx, pth, p[2]&FlagWrite != 0))
		}},
		// share(path, path_len, recipient, recipient_len, flags).
		{"share", 5, func(ctx context.Context, g memory, p []uint32) Code {
			if p[4]&^FlagWrite != 0 {
				return ErrInvalid
			}
			pth, c := node(g, p[0], p[1], true)
			if c != OK {
				return c
			}
			to, c := text(g, p[2], p[3], maxRecipient)
			if c != OK {
				return c
			}
			what := "share " + strconv.Quote(pth) + " with " + strconv.Quote(to) + " (read"
			if p[4]&FlagWrite != 0 {
				what += " and write"
			}
			if c := approve(ctx, unlock, "share", what+")"); c != OK {
				return c
			}
			return codeOf(dev.Share(ctx, pth, to, p[4]&FlagWrite != 0))
		}},
		// image_create(path, path_len, flags, out, out_cap, out_len) → the
		// image reference.
		{"image_create", 6, func(ctx context.Context, g memory, p []uint32) Code {
			if p[2]&^FlagPublic != 0 {
				return ErrInvalid
			}
			pth, c := node(g, p[0], p[1], true)
			if c != OK {
				return c
			}
			if !g.writable(p[5], 4) || !g.writable(p[3], p[4]) {
				return ErrFault
			}
			// An image is paid for from the wallet, and a public one is
			// the folder's content, unencrypted, for anyone.
			what := "turn " + strconv.Quote(pth) + " into an image on your image servers, paid from your wallet"
			if p[2]&FlagPublic != 0 {
				what = "publish " + strconv.Quote(pth) + " as a public image (unencrypted, for anyone), paid from your wallet"
			}
			if c := approve(ctx, unlock, "image", what); c != OK {
				return c
			}
			ref, err := dev.CreateImage(ctx, pth, p[2]&FlagPublic != 0)
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[3], p[4], p[5], []byte(ref))
		}},
		// image_mount(image, image_len, path, path_len).
		{"image_mount", 4, func(ctx context.Context, g memory, p []uint32) Code {
			ref, c := text(g, p[0], p[1], maxImageRef)
			if c != OK {
				return c
			}
			pth, c := node(g, p[2], p[3], false)
			if c != OK {
				return c
			}
			return codeOf(dev.MountImage(ctx, ref, pth))
		}},
		// image_unmount(path, path_len).
		{"image_unmount", 2, func(ctx context.Context, g memory, p []uint32) Code {
			pth, c := node(g, p[0], p[1], true)
			if c != OK {
				return c
			}
			return codeOf(dev.UnmountImage(ctx, pth))
		}},
	})
}

// throughSymlink reports whether any existing component of the path
// (without "." or "..", as splitPath leaves it) is a symlink.
func throughSymlink(t Tree, parts []string) bool {
	dir := t.Root()
	for _, name := range parts {
		if name == ".." {
			return true // never in a path the Client acts on
		}
		a, err := t.Lookup(dir, name)
		if err != nil {
			return false // the rest does not exist yet
		}
		if a.Kind == KindSymlink {
			return true
		}
		dir = a.Ino
	}
	return false
}
