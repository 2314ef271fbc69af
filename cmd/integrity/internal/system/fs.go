package system

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/hkdf"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/keyring"
)

// MaxCat bounds what `integrity cat` carries over the socket; larger files
// go through `integrity get` (the agent writes the local file).
const MaxCat = 64 << 20

// Tree returns the open tree, opening it (a full sync from the chain,
// with the folders others shared with us) on first use.
func (s *System) Tree(ctx context.Context) (*chainfs.Tree, error) {
	s.treeMu.Lock() // one opening at a time; s.mu stays free meanwhile
	defer s.treeMu.Unlock()
	s.mu.Lock()
	t, id := s.tree, s.id
	device := s.opts.Settings.Device
	s.mu.Unlock()
	if t != nil {
		return t, nil
	}
	if id == nil {
		return nil, ErrNotLoggedIn
	}
	rk, err := node.RootKeys(id.ReadRoot, id.WriteRoot)
	if err != nil {
		return nil, err
	}
	dir, err := blob.NewDir(s.opts.Dir.BlobDir())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.blobs == nil {
		s.blobs = newTieredBlobs(s, dir, s.opts.Settings.ImageServers)
	}
	blobs := s.blobs
	s.mu.Unlock()
	if device == "" {
		if h, err := os.Hostname(); err == nil {
			device = h
		}
	}
	inbox, err := s.readInbox(ctx)
	if err != nil {
		return nil, err
	}
	roots := append(s.roots(inbox), s.publicRoots(ctx)...)
	t, err = chainfs.Open(ctx, chainfs.Config{
		Backend: s.backend, Wallet: s.wallet, RootKeys: rk,
		RootGenesis: node.OutPoint{TxID: id.RootGenesis.TxID, Index: id.RootGenesis.Index},
		CacheDir:    s.opts.Dir.CacheDir(), CacheKey: cacheKey(id.Primary), Blobs: blobs,
		Device: device, Logger: s.log, Progress: s.opts.Progress, Roots: roots, Images: s.images,
	})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.tree, s.stopWatch = t, cancel
	s.mu.Unlock()
	go s.watchInbox(wctx, t)
	if err := s.learnServers(t); err != nil {
		s.log.Warn("remembering the System's image servers", "err", err)
	}
	if s.opts.Agent {
		// Only the long-running agent: a command run in-process ends
		// before any hosting would.
		go s.autoRenew(wctx, t, s.opts.Renew)
	}
	return t, nil
}

// cacheKey encrypts the Badger cache at rest: derived from the primary key,
// so the cache is useless without the System.
func cacheKey(primary keyring.Key) keyring.Key {
	var k keyring.Key
	r := hkdf.New(sha256.New, primary[:], nil, []byte("integrity cache key v1"))
	_, _ = io.ReadFull(r, k[:])
	return k
}

func (s *System) fsHandlers() map[string]func(context.Context, json.RawMessage) (any, error) {
	return map[string]func(context.Context, json.RawMessage) (any, error){
		"fs.ls":      typed(s.fsLs),
		"fs.stat":    typed(s.fsStat),
		"fs.cat":     typed(s.fsCat),
		"fs.get":     typed(s.fsGet),
		"fs.put":     typed(s.fsPut),
		"fs.mkdir":   typed(s.fsMkdir),
		"fs.rm":      typed(s.fsRm),
		"fs.mv":      typed(s.fsMv),
		"fs.log":     typed(s.fsLog),
		"fs.restore": typed(s.fsRestore),
		"fs.sync":    s.fsSync,
		"fs.status":  s.fsStatus,
	}
}

// PathArgs name a path in the System ("/docs/a.txt").
type PathArgs struct {
	Path      string `json:"path"`
	Rev       int    `json:"rev,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
	Parents   bool   `json:"parents,omitempty"`
	Local     string `json:"local,omitempty"` // a file on this machine (put, get)
	To        string `json:"to,omitempty"`    // mv destination
	Mode      uint32 `json:"mode,omitempty"`
}

// FileInfo describes one node.
type FileInfo struct {
	Name  string    `json:"name"`
	Kind  string    `json:"kind"`
	Mode  uint32    `json:"mode"`
	Size  int64     `json:"size"`
	Mtime time.Time `json:"mtime"`
}

func parse[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil // no arguments: all defaults
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("bad arguments: %w", err)
	}
	return v, nil
}

// typed adapts a handler taking decoded arguments to the RPC handler shape.
func typed[T any](f func(context.Context, T) (any, error)) func(context.Context, json.RawMessage) (any, error) {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		a, err := parse[T](raw)
		if err != nil {
			return nil, err
		}
		return f(ctx, a)
	}
}

// clean makes an absolute, clean System path.
func clean(p string) string { return path.Clean("/" + p) }

func (s *System) resolve(ctx context.Context, p string) (*chainfs.Tree, uint64, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, 0, err
	}
	ino, err := t.Resolve(clean(p))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: no such file or directory", clean(p))
	}
	return t, ino, nil
}

func info(name string, a chainfs.Attr) FileInfo {
	return FileInfo{Name: name, Kind: a.Kind.String(), Mode: a.Mode, Size: a.Size, Mtime: a.Mtime}
}

func (s *System) fsStat(ctx context.Context, a PathArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	at, err := t.GetAttr(ino)
	if err != nil {
		return nil, err
	}
	return info(path.Base(clean(a.Path)), at), nil
}

func (s *System) fsLs(ctx context.Context, a PathArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	at, err := t.GetAttr(ino)
	if err != nil {
		return nil, err
	}
	if at.Kind != node.KindDir {
		return []FileInfo{info(path.Base(clean(a.Path)), at)}, nil
	}
	ents, err := t.ReadDir(ino)
	if err != nil {
		return nil, err
	}
	out := make([]FileInfo, 0, len(ents))
	for _, e := range ents {
		ea, err := t.GetAttr(e.Ino)
		if err != nil {
			return nil, err
		}
		out = append(out, info(e.Name, ea))
	}
	return out, nil
}

// CatResult carries file content.
type CatResult struct {
	Data []byte `json:"data"`
}

func (s *System) content(ctx context.Context, a PathArgs) ([]byte, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	if a.Rev > 0 {
		return t.ReadRevision(ino, a.Rev)
	}
	at, err := t.GetAttr(ino)
	if err != nil {
		return nil, err
	}
	switch at.Kind {
	case node.KindDir:
		return nil, fmt.Errorf("%s is a directory", clean(a.Path))
	case node.KindSymlink:
		target, err := t.ReadLink(ino)
		return []byte(target), err
	}
	buf := make([]byte, at.Size)
	n, err := t.Read(ino, 0, buf)
	return buf[:n], err
}

func (s *System) fsCat(ctx context.Context, a PathArgs) (any, error) {
	data, err := s.content(ctx, a)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxCat {
		return nil, fmt.Errorf("%s is %d bytes: use `integrity get` for files over %d MiB", clean(a.Path), len(data), MaxCat>>20)
	}
	return CatResult{Data: data}, nil
}

func (s *System) fsGet(ctx context.Context, a PathArgs) (any, error) {
	if a.Recursive {
		return s.getTree(ctx, a)
	}
	data, err := s.content(ctx, a)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.Local, data, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", a.Local, err)
	}
	return struct{}{}, nil
}

// mkdirAll creates the directories of p that are missing (t.Resolve is
// by path, so walk it).
func mkdirAll(t *chainfs.Tree, p string) (uint64, error) {
	ino := uint64(chainfs.RootIno)
	cur := "/"
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		cur = path.Join(cur, part)
		if next, err := t.Resolve(cur); err == nil {
			ino = next
			continue
		}
		a, err := t.Create(ino, part, node.KindDir, 0o755, "")
		if err != nil {
			return 0, fmt.Errorf("mkdir %s: %w", cur, err)
		}
		ino = a.Ino
	}
	return ino, nil
}

func (s *System) fsMkdir(ctx context.Context, a PathArgs) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	p := clean(a.Path)
	if a.Parents {
		if _, err := mkdirAll(t, p); err != nil {
			return nil, err
		}
	} else {
		dir, err := t.Resolve(path.Dir(p))
		if err != nil {
			return nil, fmt.Errorf("%s: no such directory", path.Dir(p))
		}
		if _, err := t.Create(dir, path.Base(p), node.KindDir, 0o755, ""); err != nil {
			return nil, fmt.Errorf("mkdir %s: %w", p, err)
		}
	}
	return struct{}{}, t.SyncAll(ctx)
}

func (s *System) fsPut(ctx context.Context, a PathArgs) (any, error) {
	if a.Recursive {
		return s.putTree(ctx, a)
	}
	data, err := os.ReadFile(a.Local)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", a.Local, err)
	}
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	p := clean(a.Path)
	if p == "/" {
		return nil, errors.New("put: give a file path in the System")
	}
	if ino, err := t.Resolve(p); err == nil {
		if at, _ := t.GetAttr(ino); at.Kind == node.KindDir {
			p = path.Join(p, path.Base(a.Local))
		}
	}
	dir, err := mkdirAll(t, path.Dir(p))
	if err != nil {
		return nil, err
	}
	ino, err := t.Resolve(p)
	if err != nil {
		fi, serr := os.Stat(a.Local)
		mode := uint32(0o644)
		if serr == nil {
			mode = uint32(fi.Mode().Perm())
		}
		at, err := t.Create(dir, path.Base(p), node.KindFile, mode, "")
		if err != nil {
			return nil, fmt.Errorf("put %s: %w", p, err)
		}
		ino = at.Ino
	}
	zero := int64(0)
	if _, err := t.SetAttr(ino, chainfs.SetAttr{Size: &zero}); err != nil {
		return nil, err
	}
	if _, err := t.Write(ino, 0, data); err != nil {
		return nil, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return nil, err
	}
	at, err := t.GetAttr(ino)
	if err != nil {
		return nil, err
	}
	return info(path.Base(p), at), nil
}

func (s *System) fsRm(ctx context.Context, a PathArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	p := clean(a.Path)
	if p == "/" {
		return nil, errors.New("rm: refusing to remove /")
	}
	dir, err := t.Resolve(path.Dir(p))
	if err != nil {
		return nil, err
	}
	at, err := t.GetAttr(ino)
	if err != nil {
		return nil, err
	}
	if at.Kind == node.KindDir {
		if !a.Recursive {
			ents, _ := t.ReadDir(ino)
			if len(ents) > 0 {
				return nil, fmt.Errorf("rm %s: directory not empty (use -r)", p)
			}
		}
		if err := rmTree(t, ino); err != nil {
			return nil, err
		}
	}
	if err := t.Remove(dir, path.Base(p), at.Kind == node.KindDir); err != nil {
		return nil, fmt.Errorf("rm %s: %w", p, err)
	}
	return struct{}{}, t.SyncAll(ctx)
}

func rmTree(t *chainfs.Tree, dir uint64) error {
	ents, err := t.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Kind == node.KindDir {
			if err := rmTree(t, e.Ino); err != nil {
				return err
			}
		}
		if err := t.Remove(dir, e.Name, e.Kind == node.KindDir); err != nil {
			return err
		}
	}
	return nil
}

func (s *System) fsMv(ctx context.Context, a PathArgs) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	src, dst := clean(a.Path), clean(a.To)
	if ino, err := t.Resolve(dst); err == nil {
		if at, _ := t.GetAttr(ino); at.Kind == node.KindDir {
			dst = path.Join(dst, path.Base(src))
		}
	}
	sd, err := t.Resolve(path.Dir(src))
	if err != nil {
		return nil, fmt.Errorf("%s: no such directory", path.Dir(src))
	}
	dd, err := t.Resolve(path.Dir(dst))
	if err != nil {
		return nil, fmt.Errorf("%s: no such directory", path.Dir(dst))
	}
	if err := t.Rename(sd, path.Base(src), dd, path.Base(dst), false); err != nil {
		return nil, fmt.Errorf("mv %s %s: %w", src, dst, err)
	}
	return struct{}{}, t.SyncAll(ctx)
}

// LogEntry is one revision of `integrity log`.
type LogEntry struct {
	Rev     int       `json:"rev"`
	TxID    string    `json:"txid"`
	Height  int32     `json:"height"`
	Time    time.Time `json:"time"`
	Size    int64     `json:"size"`
	Summary string    `json:"summary"`
}

func (s *System) fsLog(ctx context.Context, a PathArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	h, err := t.History(ino)
	if err != nil {
		return nil, err
	}
	out := make([]LogEntry, len(h))
	for i, r := range h {
		out[i] = LogEntry{Rev: r.Rev, TxID: r.TxID, Height: r.Height, Time: r.Time, Size: r.Size, Summary: r.Summary}
	}
	return out, nil
}

func (s *System) fsRestore(ctx context.Context, a PathArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	if err := t.Restore(ino, a.Rev); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("restore: %w", err)
		}
		return nil, err
	}
	return struct{}{}, t.Sync(ctx, ino)
}

func (s *System) fsSync(ctx context.Context, _ json.RawMessage) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	return struct{}{}, t.SyncAll(ctx)
}

// putTree copies a local directory tree into the System at a.Path,
// keeping names, modes, modification times and symlinks, and commits it.
func (s *System) putTree(ctx context.Context, a PathArgs) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	root := clean(a.Path)
	if _, err := mkdirAll(t, root); err != nil {
		return nil, err
	}
	var files, bytes int64
	err = filepath.WalkDir(a.Local, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(a.Local, p)
		if err != nil || rel == "." {
			return err
		}
		dst := path.Join(root, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		dir, err := t.Resolve(path.Dir(dst))
		if err != nil {
			return err
		}
		mtime := fi.ModTime()
		mode := uint32(fi.Mode().Perm())
		var ino uint64
		switch {
		case d.IsDir():
			if ino, err = t.Resolve(dst); err != nil {
				at, err := t.Create(dir, path.Base(dst), node.KindDir, mode, "")
				if err != nil {
					return fmt.Errorf("%s: %w", dst, err)
				}
				ino = at.Ino
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			at, err := t.Create(dir, path.Base(dst), node.KindSymlink, 0o777, target)
			if err != nil {
				return fmt.Errorf("%s: %w", dst, err)
			}
			ino = at.Ino
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if ino, err = t.Resolve(dst); err != nil {
				at, err := t.Create(dir, path.Base(dst), node.KindFile, mode, "")
				if err != nil {
					return fmt.Errorf("%s: %w", dst, err)
				}
				ino = at.Ino
			}
			zero := int64(0)
			if _, err := t.SetAttr(ino, chainfs.SetAttr{Size: &zero}); err != nil {
				return err
			}
			if _, err := t.Write(ino, 0, data); err != nil {
				return err
			}
			files++
			bytes += int64(len(data))
		default:
			return nil // devices, sockets, fifos: not stored
		}
		_, err = t.SetAttr(ino, chainfs.SetAttr{Mode: &mode, Mtime: &mtime})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("put -r: %w", err)
	}
	if err := t.SyncAll(ctx); err != nil {
		return nil, err
	}
	return FileInfo{Name: path.Base(root), Kind: "dir", Size: bytes}, nil
}

// getTree copies a System folder to a local directory, keeping names,
// modes, modification times and symlinks.
func (s *System) getTree(ctx context.Context, a PathArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	type dirTime struct {
		p string
		t time.Time
	}
	var dirs []dirTime
	var walk func(ino uint64, local string) error
	walk = func(ino uint64, local string) error {
		at, err := t.GetAttr(ino)
		if err != nil {
			return err
		}
		switch at.Kind {
		case node.KindDir:
			if err := os.MkdirAll(local, 0o700); err != nil {
				return err
			}
			ents, err := t.ReadDir(ino)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := walk(e.Ino, filepath.Join(local, e.Name)); err != nil {
					return err
				}
			}
			if err := os.Chmod(local, fs.FileMode(at.Mode)); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{local, at.Mtime})
			return nil
		case node.KindSymlink:
			target, err := t.ReadLink(ino)
			if err != nil {
				return err
			}
			_ = os.Remove(local)
			return os.Symlink(target, local)
		}
		buf := make([]byte, at.Size)
		n, err := t.Read(ino, 0, buf)
		if err != nil {
			return fmt.Errorf("%s: %w", local, err)
		}
		if err := os.WriteFile(local, buf[:n], 0o600); err != nil {
			return err
		}
		if err := os.Chmod(local, fs.FileMode(at.Mode)); err != nil {
			return err
		}
		return os.Chtimes(local, at.Mtime, at.Mtime)
	}
	if err := walk(ino, a.Local); err != nil {
		return nil, fmt.Errorf("get -r: %w", err)
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children first, so parents keep their times
		_ = os.Chtimes(dirs[i].p, dirs[i].t, dirs[i].t)
	}
	return struct{}{}, nil
}

// TreeStatus answers fs.status.
type TreeStatus struct {
	Open     bool      `json:"open"`
	Nodes    int       `json:"nodes"`
	Pending  int       `json:"pending"`
	LastSync time.Time `json:"last_sync"`
	NoFunds  string    `json:"no_funds,omitempty"`
}

func (s *System) fsStatus(context.Context, json.RawMessage) (any, error) {
	s.mu.Lock()
	t := s.tree
	s.mu.Unlock()
	if t == nil {
		return TreeStatus{}, nil
	}
	st := t.Status()
	return TreeStatus{Open: true, Nodes: st.Nodes, Pending: st.Pending, LastSync: st.LastSync, NoFunds: st.NoFunds}, nil
}
