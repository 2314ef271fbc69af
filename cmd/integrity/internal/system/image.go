package system

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/internal/addrsafe"
)

// Mountable images and image servers for the CLI (docs/IMAGE-SERVER.md,
// docs/PROTOCOL.md "Images in the tree"). Packing, uploading and patching
// run here, in the Client, which holds the folders' keys; the CLI follows
// long operations with image.progress.

// imageServersXattr is where a System keeps its default image servers: an
// extended attribute of "/", so every device of the System finds them
// (large files' blobs are uploaded there and read from there).
const imageServersXattr = "user.integrity.image-servers"

// imageClients caches one client per server URL.
type imageClients struct {
	s  *System
	mu sync.Mutex
	c  map[string]*imageserver.Client
	// bad counts, per server, the reads it failed or answered with bytes
	// that did not check out (reported by blob.Multi).
	bad map[string]string
}

func (ic *imageClients) client(u string) (*imageserver.Client, error) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if c, ok := ic.c[u]; ok {
		return c, nil
	}
	c, err := imageserver.NewClient(u, &http.Client{Timeout: 10 * time.Minute})
	if err != nil {
		return nil, err
	}
	ic.c[u] = c
	return c, nil
}

// Store implements chainfs.ImageStores: the servers in turn, skipping
// and reporting one that fails or serves bytes that do not check out.
func (ic *imageClients) Store(ctx context.Context, servers []string) (blob.Store, error) {
	if len(servers) == 0 {
		return nil, errors.New("no image servers named")
	}
	stores := make([]blob.Store, 0, len(servers))
	for _, u := range servers {
		c, err := ic.client(u)
		if err != nil {
			return nil, err
		}
		stores = append(stores, imageserver.NewStore(c, imageserver.StoreOptions{Payer: ic.s.payer()}))
	}
	return blob.NewMulti(func(i int, err error) {
		ic.s.log.Warn("image server skipped", "server", servers[i], "err", err)
		ic.mu.Lock()
		ic.bad[servers[i]] = err.Error()
		ic.mu.Unlock()
	}, stores...), nil
}

func (s *System) payer() imageserver.Payer {
	return imageserver.WalletPayer(s.wallet, s.backend.Params())
}

// progress of long image operations, polled by the CLI.
type imageOps struct {
	mu  sync.Mutex
	ops map[string]*ImageProgress
}

// ImageProgress is where a long image operation stands.
type ImageProgress struct {
	Phase string `json:"phase"` // packing, uploading, forwarding, patching, downloading, mounting, done
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

func (o *imageOps) set(id, phase string, done, total int64) {
	if id == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops[id] = &ImageProgress{Phase: phase, Done: done, Total: total}
}

func (o *imageOps) end(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.ops, id)
}

func (s *System) imageHandlers() map[string]func(context.Context, json.RawMessage) (any, error) {
	return map[string]func(context.Context, json.RawMessage) (any, error){
		"image.create":   typed(s.imageCreate),
		"image.mount":    typed(s.imageMount),
		"image.unmount":  typed(s.imageUnmount),
		"image.update":   typed(s.imageUpdate),
		"image.info":     typed(s.imageInfo),
		"image.progress": typed(s.imageProgress),
		"image.servers":  typed(s.imageServers),
	}
}

// ImageArgs are the image operations' arguments.
type ImageArgs struct {
	Path    string   `json:"path,omitempty"`  // the folder in the System
	Local   string   `json:"local,omitempty"` // a folder on this machine (create)
	Image   string   `json:"image,omitempty"` // a reference, hash or published folder address (mount)
	Servers []string `json:"servers,omitempty"`
	Public  bool     `json:"public,omitempty"`
	Days    int      `json:"days,omitempty"`
	Op      string   `json:"op,omitempty"` // progress id chosen by the CLI
	Set     bool     `json:"set,omitempty"`
	Keep    bool     `json:"keep,omitempty"` // update: keep hosting the old version
}

// ImageResult describes a mounted or created image.
type ImageResult struct {
	Path    string   `json:"path"`
	Ref     string   `json:"ref"` // hex of the binary reference: what `image mount` takes
	Hash    string   `json:"hash"`
	Size    int64    `json:"size"`
	Public  bool     `json:"public"`
	Servers []string `json:"servers"`
	Overlay int      `json:"overlay,omitempty"`
	// Released lists servers that let the old version go (update).
	Released []string `json:"released,omitempty"`
	// Skipped lists servers that failed or served bad bytes, and why.
	Skipped map[string]string `json:"skipped,omitempty"`
}

func resultOf(p string, m chainfs.ImageMount, overlay int) ImageResult {
	b, _ := m.Ref.MarshalBinary()
	return ImageResult{Path: p, Ref: hex.EncodeToString(b), Hash: hex.EncodeToString(m.Ref.Hash[:]), Size: m.Ref.Size,
		Public: m.Ref.Public, Servers: m.Servers, Overlay: overlay}
}

// defaultServers are the System's image servers (the xattr of "/").
func (s *System) defaultServers(t *chainfs.Tree) []string {
	v, err := t.GetXattr(chainfs.RootIno, imageServersXattr)
	if err != nil {
		return nil
	}
	var out []string
	for _, u := range strings.Split(string(v), "\n") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func (s *System) serversFor(t *chainfs.Tree, given []string) ([]string, error) {
	servers := given
	if len(servers) == 0 {
		servers = s.defaultServers(t)
	}
	if len(servers) == 0 {
		return nil, errors.New("no image server: give --server URL (or set defaults with `integrity image servers URL...`)")
	}
	if len(servers) > image.MaxServers {
		return nil, fmt.Errorf("%d image servers: at most %d", len(servers), image.MaxServers)
	}
	for _, u := range servers {
		if err := image.ValidServerURL(u); err != nil {
			return nil, err
		}
	}
	return servers, nil
}

// imageServers shows or sets the System's default image servers.
func (s *System) imageServers(ctx context.Context, a ImageArgs) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	if a.Set {
		for _, u := range a.Servers {
			if err := image.ValidServerURL(u); err != nil {
				return nil, err
			}
			if _, err := s.images.client(u); err != nil {
				return nil, err
			}
		}
		if len(a.Servers) == 0 {
			err = t.RemoveXattr(chainfs.RootIno, imageServersXattr)
		} else {
			err = t.SetXattr(chainfs.RootIno, imageServersXattr, []byte(strings.Join(a.Servers, "\n")), 0)
		}
		if err != nil && !(len(a.Servers) == 0 && isNoData(err)) {
			return nil, err
		}
		if err := t.Sync(ctx, chainfs.RootIno); err != nil {
			return nil, err
		}
		if err := s.learnServers(t); err != nil {
			return nil, err
		}
	}
	return struct {
		Servers []string `json:"servers"`
	}{s.defaultServers(t)}, nil
}

// folder resolves (creating when asked) an image folder of the System.
func (s *System) folder(ctx context.Context, p string, create bool) (*chainfs.Tree, uint64, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, 0, err
	}
	if create {
		if _, err := mkdirAll(t, clean(p)); err != nil {
			return nil, 0, err
		}
	}
	ino, err := t.Resolve(clean(p))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: no such folder", clean(p))
	}
	return t, ino, nil
}

// owner signs for a folder's image at its servers: the folder's write key
// (paper 3.f).
func owner(k node.Keys) (imageserver.Signer, error) {
	priv, err := k.WritePriv()
	if err != nil {
		return nil, fmt.Errorf("the folder is not writable here: %w", err)
	}
	return imageserver.KeySigner(priv), nil
}

// pack writes an image of src for folder keys into a temporary file.
func (s *System) pack(ctx context.Context, src image.Source, keys node.Keys, public bool, op string) (*os.File, image.Ref, error) {
	tmp := filepath.Join(s.opts.Dir.Path, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, image.Ref{}, err
	}
	f, err := os.CreateTemp(tmp, "image-*")
	if err != nil {
		return nil, image.Ref{}, err
	}
	_ = os.Remove(f.Name()) // gone when closed
	opts := image.PackOptions{Public: public, Usable: func(c node.Keys) bool { return addrsafe.Queryable(c.Addr[:]) },
		Progress: func(n int64) { s.imageOps.set(op, "packing", n, 0) }}
	if !public {
		opts.Keys = &keys
	}
	ref, err := image.Pack(ctx, f, src, opts)
	if err != nil {
		f.Close()
		return nil, image.Ref{}, err
	}
	return f, ref, nil
}

// upload hosts the image in f on every server: the first gets the bytes;
// the others get them forwarded by it (paper 3.h) when it can, else
// uploaded again.
func (s *System) upload(ctx context.Context, f *os.File, ref image.Ref, servers []string, signer imageserver.Signer, days int, op string) error {
	first, err := s.images.client(servers[0])
	if err != nil {
		return err
	}
	body := io.NewSectionReader(f, 0, ref.Size)
	if _, err := first.Host(ctx, imageserver.HostRequest{Hash: ref.Hash, Size: ref.Size, Public: ref.Public, Days: days, Body: body,
		Payer: s.payer(), Owner: signer, Progress: func(d, t int64) { s.imageOps.set(op, "uploading", d, t) }}); err != nil {
		return fmt.Errorf("upload to %s: %w", servers[0], err)
	}
	for _, u := range servers[1:] {
		c, err := s.images.client(u)
		if err != nil {
			return err
		}
		s.imageOps.set(op, "forwarding", 0, ref.Size)
		q, err := c.Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref.Hash, Size: ref.Size, Days: days, Public: ref.Public})
		if err == nil {
			if q, err = c.Pay(ctx, q, s.payer()); err == nil {
				_, err = first.Forward(ctx, imageserver.ForwardRequest{Hash: ref.Hash, To: u, Quote: q, Owner: signer})
				if err == nil {
					continue
				}
				s.log.Info("forwarding refused; uploading again", "from", servers[0], "to", u, "err", err)
				// The quote is paid: upload on it.
				if _, err = c.Upload(ctx, imageserver.UploadRequest{Quote: q, Body: io.NewSectionReader(f, 0, ref.Size), Owner: signer,
					Progress: func(d, t int64) { s.imageOps.set(op, "uploading", d, t) }}); err == nil {
					continue
				}
			}
		}
		return fmt.Errorf("host on %s: %w", u, err)
	}
	return nil
}

// imageCreate packs a folder of this machine for a folder of the System,
// hosts it on image servers and mounts it there (paper 3.a–m).
func (s *System) imageCreate(ctx context.Context, a ImageArgs) (any, error) {
	defer s.imageOps.end(a.Op)
	if a.Local == "" || a.Path == "" {
		return nil, errors.New("image create needs a local folder and a folder of the System")
	}
	src, err := image.LocalDir(a.Local)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	t, ino, err := s.folder(ctx, a.Path, true)
	if err != nil {
		return nil, err
	}
	servers, err := s.serversFor(t, a.Servers)
	if err != nil {
		return nil, err
	}
	keys, err := t.Keys(ino)
	if err != nil {
		return nil, err
	}
	signer, err := owner(keys)
	if err != nil {
		return nil, err
	}
	f, ref, err := s.pack(ctx, src, keys, a.Public, a.Op)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", a.Local, err)
	}
	defer f.Close()
	if err := s.upload(ctx, f, ref, servers, signer, a.Days, a.Op); err != nil {
		return nil, err
	}
	s.imageOps.set(a.Op, "mounting", 0, 0)
	m := chainfs.ImageMount{Ref: ref, Servers: servers}
	if err := t.MountImage(ctx, ino, m); err != nil {
		return nil, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return nil, err
	}
	return resultOf(clean(a.Path), m, 0), nil
}

// imageFromFolder packs a folder of the System into an image of itself on
// the System's image servers and mounts it there: the same files, now
// hosted (the VM's image_create).
func (s *System) imageFromFolder(ctx context.Context, a ImageArgs) (ImageResult, error) {
	defer s.imageOps.end(a.Op)
	t, ino, err := s.folder(ctx, a.Path, false)
	if err != nil {
		return ImageResult{}, err
	}
	servers, err := s.serversFor(t, a.Servers)
	if err != nil {
		return ImageResult{}, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return ImageResult{}, err
	}
	keys, err := t.Keys(ino)
	if err != nil {
		return ImageResult{}, err
	}
	signer, err := owner(keys)
	if err != nil {
		return ImageResult{}, err
	}
	src, err := t.FolderSource(ino)
	if err != nil {
		return ImageResult{}, err
	}
	f, ref, err := s.pack(ctx, src, keys, a.Public, a.Op)
	if err != nil {
		return ImageResult{}, fmt.Errorf("pack %s: %w", clean(a.Path), err)
	}
	defer f.Close()
	if err := s.upload(ctx, f, ref, servers, signer, a.Days, a.Op); err != nil {
		return ImageResult{}, err
	}
	m := chainfs.ImageMount{Ref: ref, Servers: servers}
	if err := t.ReplaceWithImage(ctx, ino, m); err != nil {
		return ImageResult{}, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return ImageResult{}, err
	}
	return resultOf(clean(a.Path), m, 0), nil
}

// mountOf finds the image a mount argument names: a reference (hex, from
// `image create`), a bare hash (fetched whole and checked, to learn its
// root digest), or a published folder's address (its image).
func (s *System) mountOf(ctx context.Context, t *chainfs.Tree, arg string, servers []string, op string) (chainfs.ImageMount, error) {
	b, err := hex.DecodeString(arg)
	switch {
	case err == nil && len(b) > 32:
		var m chainfs.ImageMount
		if err := m.Ref.UnmarshalBinary(b); err != nil {
			return m, fmt.Errorf("image reference: %w", err)
		}
		m.Servers, err = s.serversFor(t, servers)
		return m, err
	case err == nil && len(b) == 32:
		var m chainfs.ImageMount
		if m.Servers, err = s.serversFor(t, servers); err != nil {
			return m, err
		}
		return s.inspect(ctx, [32]byte(b), m.Servers, op)
	}
	r, err := s.publishedRoot(ctx, arg)
	if err != nil {
		return chainfs.ImageMount{}, fmt.Errorf("%q is not an image reference, a hash or a published folder's address: %w", arg, err)
	}
	ino, err := t.AddRoot(ctx, r)
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	info, err := t.Image(ino)
	if err != nil {
		return chainfs.ImageMount{}, fmt.Errorf("the folder published at %s: %w", arg, err)
	}
	return info.Mount, nil
}

// inspect downloads an image known only by its hash (checking the hash)
// and reads its reference from it.
func (s *System) inspect(ctx context.Context, h [32]byte, servers []string, op string) (chainfs.ImageMount, error) {
	store, err := s.images.Store(ctx, servers)
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	tmp := filepath.Join(s.opts.Dir.Path, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return chainfs.ImageMount{}, err
	}
	f, err := os.CreateTemp(tmp, "download-*")
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	_ = os.Remove(f.Name())
	defer f.Close()
	s.imageOps.set(op, "downloading", 0, 0)
	rc, err := store.Get(ctx, h)
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	n, err := io.Copy(f, &progressCopy{r: rc, fn: func(d int64) { s.imageOps.set(op, "downloading", d, 0) }})
	rc.Close()
	if err != nil {
		return chainfs.ImageMount{}, fmt.Errorf("download %x: %w", h[:8], err)
	}
	ref, err := image.Inspect(ctx, f, n)
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	ref.Hash = h
	return chainfs.ImageMount{Ref: ref, Servers: servers}, nil
}

type progressCopy struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (p *progressCopy) Read(b []byte) (int, error) {
	k, err := p.r.Read(b)
	p.n += int64(k)
	p.fn(p.n)
	return k, err
}

func (s *System) imageMount(ctx context.Context, a ImageArgs) (any, error) {
	defer s.imageOps.end(a.Op)
	t, ino, err := s.folder(ctx, a.Path, true)
	if err != nil {
		return nil, err
	}
	m, err := s.mountOf(ctx, t, a.Image, a.Servers, a.Op)
	if err != nil {
		return nil, err
	}
	s.imageOps.set(a.Op, "mounting", 0, 0)
	if err := t.MountImage(ctx, ino, m); err != nil {
		return nil, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return nil, err
	}
	return resultOf(clean(a.Path), m, 0), nil
}

func (s *System) imageUnmount(ctx context.Context, a ImageArgs) (any, error) {
	t, ino, err := s.folder(ctx, a.Path, false)
	if err != nil {
		return nil, err
	}
	info, err := t.Image(ino)
	if err != nil {
		return nil, err
	}
	if err := t.UnmountImage(ino); err != nil {
		return nil, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return nil, err
	}
	return resultOf(clean(a.Path), info.Mount, 0), nil
}

func (s *System) imageInfo(ctx context.Context, a ImageArgs) (any, error) {
	t, ino, err := s.folder(ctx, a.Path, false)
	if err != nil {
		return nil, err
	}
	info, err := t.Image(ino)
	if err != nil {
		return nil, err
	}
	r := resultOf(clean(a.Path), info.Mount, info.Overlay)
	s.images.mu.Lock()
	for _, u := range info.Mount.Servers {
		if why, ok := s.images.bad[u]; ok {
			if r.Skipped == nil {
				r.Skipped = map[string]string{}
			}
			r.Skipped[u] = why
		}
	}
	s.images.mu.Unlock()
	return r, nil
}

func (s *System) imageProgress(_ context.Context, a ImageArgs) (any, error) {
	s.imageOps.mu.Lock()
	defer s.imageOps.mu.Unlock()
	if p, ok := s.imageOps.ops[a.Op]; ok {
		return *p, nil
	}
	return ImageProgress{Phase: "waiting"}, nil
}

// imageUpdate re-images a folder (paper 4.a–e): its view — the image
// with the changes made on top — packed into a new version that keeps
// every entry's index; each server patches its copy with a signed diff and
// returns the new hash, which must match; the new reference goes on chain;
// then the servers may let the old version go.
func (s *System) imageUpdate(ctx context.Context, a ImageArgs) (any, error) {
	defer s.imageOps.end(a.Op)
	t, ino, err := s.folder(ctx, a.Path, false)
	if err != nil {
		return nil, err
	}
	info, err := t.Image(ino)
	if err != nil {
		return nil, err
	}
	signer, err := owner(info.Keys)
	if err != nil {
		return nil, err
	}
	src, old, err := t.ImageSource(ctx, ino)
	if err != nil {
		return nil, err
	}
	f, ref, err := s.pack(ctx, src, info.Keys, info.Mount.Ref.Public, a.Op)
	if err != nil {
		return nil, fmt.Errorf("re-pack %s: %w", clean(a.Path), err)
	}
	defer f.Close()
	oldRef := old.Ref()
	res := resultOf(clean(a.Path), chainfs.ImageMount{Ref: ref, Servers: info.Mount.Servers}, 0)
	if ref.Hash == oldRef.Hash {
		return res, nil // nothing changed
	}
	// The diff needs the old image's bytes: fetch them (checked) from the
	// servers.
	store, err := s.images.Store(ctx, info.Mount.Servers)
	if err != nil {
		return nil, err
	}
	s.imageOps.set(a.Op, "downloading", 0, oldRef.Size)
	rc, err := store.Get(ctx, oldRef.Hash)
	if err != nil {
		return nil, fmt.Errorf("the current image: %w", err)
	}
	oldBytes, err := io.ReadAll(io.LimitReader(rc, oldRef.Size+1)) // Get checks the hash at the end
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("the current image: %w", err)
	}
	newBytes := make([]byte, ref.Size)
	if _, err := f.ReadAt(newBytes, 0); err != nil {
		return nil, err
	}
	d := delta.Diff(oldBytes, newBytes)
	for _, u := range info.Mount.Servers {
		c, err := s.images.client(u)
		if err != nil {
			return nil, err
		}
		s.imageOps.set(a.Op, "patching", 0, int64(len(d)))
		h, err := c.Patch(ctx, imageserver.PatchRequest{Base: oldRef.Hash, New: ref.Hash, Delta: d, Owner: signer})
		if err != nil {
			// A server that cannot patch (too large a change for its free
			// slack, say) gets the new version uploaded.
			s.log.Info("patch refused; uploading the new version", "server", u, "err", err)
			if _, err := c.Host(ctx, imageserver.HostRequest{Hash: ref.Hash, Size: ref.Size, Public: ref.Public, Body: io.NewSectionReader(f, 0, ref.Size),
				Payer: s.payer(), Owner: signer, Progress: func(dn, tot int64) { s.imageOps.set(a.Op, "uploading", dn, tot) }}); err != nil {
				return nil, fmt.Errorf("update on %s: %w", u, err)
			}
			continue
		}
		if h.Hash != ref.Hash {
			return nil, fmt.Errorf("%s patched the image to %x, not %x: refusing to mount it", u, h.Hash[:8], ref.Hash[:8])
		}
	}
	s.imageOps.set(a.Op, "mounting", 0, 0)
	if err := t.MountImage(ctx, ino, chainfs.ImageMount{Ref: ref, Servers: info.Mount.Servers}); err != nil {
		return nil, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return nil, err
	}
	if !a.Keep {
		for _, u := range info.Mount.Servers {
			c, err := s.images.client(u)
			if err != nil {
				continue
			}
			if _, err := c.Release(ctx, oldRef.Hash, signer); err != nil {
				s.log.Warn("releasing the old image version failed", "server", u, "err", err)
				continue
			}
			res.Released = append(res.Released, u)
		}
	}
	return res, nil
}

func isNoData(err error) bool { return errors.Is(err, syscall.ENODATA) }
