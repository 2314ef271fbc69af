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
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// The System's image spending and hosting settings, kept like the servers
// (decimal; absent: the default). imageMaxPriceXattr caps every payment
// made without a command asking for it (download tickets, large files'
// uploads) and is the default --max-price of the image commands;
// imageDaysXattr is the hosting term bought by default.
const (
	imageMaxPriceXattr = "user.integrity.image-max-price"
	imageDaysXattr     = "user.integrity.image-days"
)

// DefaultImageDays is the hosting term bought when none is given: a year,
// so hosting does not end quietly (a server's minimum is often a day), at
// a price still under the default cap for images and files up to ~25 MiB
// at 10 sat per MiB-day.
const DefaultImageDays = 365

// imageClients caches one client per server URL.
type imageClients struct {
	s  *System
	mu sync.Mutex
	c  map[string]*imageserver.Client
	// bad counts, per server, the reads it failed or answered with bytes
	// that did not check out (reported by blob.Multi).
	bad map[string]string
	// maxPrice and days are the System's settings (0: the defaults), as
	// last read from its tree: payments are made under tree locks, so
	// they must not read the tree. Until the tree is open (its first sync
	// already reads images) they come from this device's copy
	// (imageSettingsFile), loaded once.
	maxPrice atomic.Int64
	days     atomic.Int64
	// noAutoRenew: the agent does not renew hosting (renew.go).
	noAutoRenew atomic.Bool
	loadOnce    sync.Once
	// hosting is what `integrity status` reports of the images' terms.
	hosting hostingNotes
}

// imageSettingsFile keeps, in the data directory, the image settings last
// read from the System's tree, for the start of the next run (as
// config.Settings.ImageServers does for the servers).
const imageSettingsFile = "image-settings.json"

// settings loads this device's copy of the System's image settings the
// first time they are needed, unless the tree has been read already.
func (ic *imageClients) settings() {
	ic.loadOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join(ic.s.opts.Dir.Path, imageSettingsFile))
		if err != nil {
			return
		}
		v := ImageSettings{AutoRenew: true} // absent from older copies: on
		if json.Unmarshal(b, &v) != nil || v.MaxPrice < 0 || v.Days < 0 || v.Days > maxImageDays {
			ic.s.log.Warn("ignoring a malformed " + imageSettingsFile)
			return
		}
		ic.maxPrice.Store(v.MaxPrice)
		ic.days.Store(int64(v.Days))
		ic.noAutoRenew.Store(!v.AutoRenew)
	})
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
	spool := filepath.Join(ic.s.opts.Dir.Path, "tmp")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, err
	}
	return blob.NewMulti(func(i int, err error) {
		ic.s.log.Warn("image server skipped", "server", servers[i], "err", err)
		ic.mu.Lock()
		ic.bad[servers[i]] = err.Error()
		ic.mu.Unlock()
	}, stores...).SpoolDir(spool), nil
}

// maxPriceKey carries the limit a command was given (--max-price) to the
// payments made for it.
type maxPriceKey struct{}

// withMaxPrice lets payments made within ctx go up to n sat each (n ≤ 0:
// the System's setting).
func withMaxPrice(ctx context.Context, n int64) context.Context {
	if n <= 0 {
		return ctx
	}
	return context.WithValue(ctx, maxPriceKey{}, n)
}

// maxPrice is the most one payment may be: the command's --max-price
// within it, else the System's setting, else the default.
func (s *System) maxPrice(ctx context.Context) int64 {
	if n, ok := ctx.Value(maxPriceKey{}).(int64); ok && n > 0 {
		return n
	}
	s.images.settings()
	if n := s.images.maxPrice.Load(); n > 0 {
		return n
	}
	return imageserver.DefaultMaxPrice
}

// payer pays image servers from the wallet, each payment capped by
// maxPrice: a server cannot take more than that per quote, however it
// came to be asked (images name their servers; nested images theirs).
func (s *System) payer() imageserver.Payer {
	return imageserver.LimitPayer(imageserver.WalletPayer(s.wallet, s.backend.Params()), s.maxPrice)
}

// hostingDays is the term to buy: the command's, else the System's.
func (s *System) hostingDays(given int) int {
	if given > 0 {
		return given
	}
	s.images.settings()
	if n := s.images.days.Load(); n > 0 {
		return int(n)
	}
	return DefaultImageDays
}

// termAt is the term to ask of server c: a term the user gave is asked as
// is (the server may refuse it, clearly); the default is fitted into the
// server's bounds, so a server hosting at most 30 days still takes it.
func termAt(ctx context.Context, c *imageserver.Client, days int, explicit bool) int {
	if explicit {
		return days
	}
	info, err := c.Info(ctx)
	if err != nil {
		return days // the quote will say what is wrong
	}
	if p := info.Policy; p.MaxDays > 0 && days > p.MaxDays {
		days = p.MaxDays
	} else if p.MinDays > 0 && days < p.MinDays {
		days = p.MinDays
	}
	return days
}

// checkTerms refuses a negative --days or --max-price (0 is the default).
func (a ImageArgs) checkTerms() error {
	if a.Days < 0 || a.Days > maxImageDays {
		return fmt.Errorf("--days %d: must be 1 to %d (or 0: the System's term)", a.Days, maxImageDays)
	}
	if a.MaxPrice < 0 {
		return fmt.Errorf("--max-price %d: must be positive (or 0: the System's cap)", a.MaxPrice)
	}
	return nil
}

// spendHint says how to allow a payment the cap refused.
func spendHint(err error) error {
	if errors.Is(err, imageserver.ErrOverLimit) {
		return fmt.Errorf("%w (to allow it, give --max-price SATS; payments made in the background follow `integrity image settings --max-price SATS`)", err)
	}
	return err
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
		"image.create":      typed(s.imageCreate),
		"image.mount":       typed(s.imageMount),
		"image.unmount":     typed(s.imageUnmount),
		"image.update":      typed(s.imageUpdate),
		"image.info":        typed(s.imageInfo),
		"image.progress":    typed(s.imageProgress),
		"image.servers":     typed(s.imageServers),
		"image.settings":    typed(s.imageSettings),
		"image.renew":       typed(s.imageRenew),
		"image.renew_blobs": typed(s.imageRenewBlobs),
		"image.hosting":     typed(s.imageHostingStatus),
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
	// InPlace (create) images the System's folder Path itself, with no
	// local folder: its files, and for each folder below it with an
	// image mounted, that image nested by reference.
	InPlace bool `json:"in_place,omitempty"`
	// MaxPrice caps each payment the command makes, in sat (0: the
	// System's setting, default imageserver.DefaultMaxPrice).
	MaxPrice int64 `json:"max_price,omitempty"`
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
	// Days is the hosting term bought (create; update when it uploaded).
	Days int `json:"days,omitempty"`
	// Hosting is, per server, until when it hosts the image (info,
	// create).
	Hosting []ImageHosting `json:"hosting,omitempty"`
	// Uploaded lists servers that refused the patch and got the new
	// version in full (update).
	Uploaded []string `json:"uploaded,omitempty"`
	// Released lists servers that let the old version go (update).
	Released []string `json:"released,omitempty"`
	// Skipped lists servers that failed or served bad bytes, and why.
	Skipped map[string]string `json:"skipped,omitempty"`
	// Nested are the images this one incorporates (info, create, update).
	Nested []ImageNested `json:"nested,omitempty"`
}

// ImageNested is an image nested in another, at Path of the System.
type ImageNested struct {
	Path    string   `json:"path"`
	Ref     string   `json:"ref"`
	Hash    string   `json:"hash"`
	Public  bool     `json:"public"`
	Servers []string `json:"servers"`
}

// withNested adds to r the images nested in folder ino's image.
func withNested(r *ImageResult, t *chainfs.Tree, ino uint64) {
	info, err := t.Image(ino)
	if err != nil {
		return
	}
	for _, n := range info.Nested {
		b, _ := n.Mount.Ref.MarshalBinary()
		r.Nested = append(r.Nested, ImageNested{Path: path.Join(r.Path, n.Path), Ref: hex.EncodeToString(b),
			Hash: hex.EncodeToString(n.Mount.Ref.Hash[:]), Public: n.Mount.Ref.Public, Servers: n.Mount.Servers})
	}
}

// ImageHosting is one server's hold on an image.
type ImageHosting struct {
	Server string    `json:"server"`
	Until  time.Time `json:"until,omitzero"`
	Err    string    `json:"err,omitempty"` // why Until is unknown
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

// ImageSettingsArgs change the System's image settings: a nil field stays
// as it is; 0 returns it to its default.
type ImageSettingsArgs struct {
	MaxPrice  *int64 `json:"max_price,omitempty"`
	Days      *int   `json:"days,omitempty"`
	AutoRenew *bool  `json:"auto_renew,omitempty"`
}

// ImageSettings are the System's image settings in force.
type ImageSettings struct {
	MaxPrice int64 `json:"max_price"` // sat per payment made without a command's --max-price
	Days     int   `json:"days"`      // hosting term bought by default
	// AutoRenew: the agent renews the hosting of the System's images and
	// large files before it ends (default on).
	AutoRenew bool `json:"auto_renew"`
}

// imageSettings shows or changes the System's spending cap and hosting
// term (kept in its tree, like its servers).
func (s *System) imageSettings(ctx context.Context, a ImageSettingsArgs) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	set := func(name string, v int64) error {
		var err error
		if v == 0 {
			if err = t.RemoveXattr(chainfs.RootIno, name); isNoData(err) {
				err = nil
			}
		} else {
			err = t.SetXattr(chainfs.RootIno, name, []byte(strconv.FormatInt(v, 10)), 0)
		}
		return err
	}
	if a.MaxPrice != nil {
		if *a.MaxPrice < 0 {
			return nil, fmt.Errorf("max price %d: must be 0 (the default, %d sat) or more", *a.MaxPrice, imageserver.DefaultMaxPrice)
		}
		if err := set(imageMaxPriceXattr, *a.MaxPrice); err != nil {
			return nil, err
		}
	}
	if a.Days != nil {
		if *a.Days < 0 || *a.Days > maxImageDays {
			return nil, fmt.Errorf("hosting term %d days: must be 0 (the default, %d) to %d", *a.Days, DefaultImageDays, maxImageDays)
		}
		if err := set(imageDaysXattr, int64(*a.Days)); err != nil {
			return nil, err
		}
	}
	if a.AutoRenew != nil {
		var err error
		if *a.AutoRenew {
			if err = t.RemoveXattr(chainfs.RootIno, imageAutoRenewXattr); isNoData(err) {
				err = nil
			}
		} else {
			err = t.SetXattr(chainfs.RootIno, imageAutoRenewXattr, []byte("false"), 0)
		}
		if err != nil {
			return nil, err
		}
	}
	if a.MaxPrice != nil || a.Days != nil || a.AutoRenew != nil {
		if err := t.Sync(ctx, chainfs.RootIno); err != nil {
			return nil, err
		}
		s.learnImageSettings(t)
	}
	s.images.settings()
	return ImageSettings{MaxPrice: s.maxPrice(context.Background()), Days: s.hostingDays(0), AutoRenew: !s.images.noAutoRenew.Load()}, nil
}

// maxImageDays bounds a hosting term given here (servers bound it too).
const maxImageDays = 100 * 365

// learnImageSettings reads the System's image settings from its tree; a
// value that does not parse (written by hand) is the default.
func (s *System) learnImageSettings(t *chainfs.Tree) {
	read := func(name string, max int64) int64 {
		v, err := t.GetXattr(chainfs.RootIno, name)
		if err != nil {
			return 0
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		if err != nil || n < 0 || n > max {
			s.log.Warn("ignoring a malformed image setting", "name", name, "value", string(v))
			return 0
		}
		return n
	}
	s.images.loadOnce.Do(func() {}) // the tree's values win from now on
	mp, days := read(imageMaxPriceXattr, 21_000_000*100_000_000), read(imageDaysXattr, maxImageDays)
	autoRenew := true
	if v, err := t.GetXattr(chainfs.RootIno, imageAutoRenewXattr); err == nil {
		on, ok := parseAutoRenew(string(v))
		if !ok {
			s.log.Warn("ignoring a malformed image setting", "name", imageAutoRenewXattr, "value", string(v))
		}
		autoRenew = on
	}
	oldMP, oldDays := s.images.maxPrice.Swap(mp), s.images.days.Swap(days)
	oldOff := s.images.noAutoRenew.Swap(!autoRenew)
	if oldMP == mp && oldDays == days && oldOff == !autoRenew {
		return
	}
	b, _ := json.Marshal(ImageSettings{MaxPrice: mp, Days: int(days), AutoRenew: autoRenew})
	p := filepath.Join(s.opts.Dir.Path, imageSettingsFile)
	err := os.WriteFile(p+".tmp", b, 0o600)
	if err == nil {
		err = os.Rename(p+".tmp", p)
	}
	if err != nil {
		s.log.Warn("remembering the System's image settings", "err", err)
	}
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

// upload hosts the image in f on every server for days (given by the user
// if explicit, else fitted to each server's bounds): the first gets the
// bytes; the others get them forwarded by it (paper 3.h) when it can, else
// uploaded again. It returns each server's hold.
func (s *System) upload(ctx context.Context, f *os.File, ref image.Ref, servers []string, signer imageserver.Signer, days int, explicit bool, op string) ([]ImageHosting, error) {
	first, err := s.images.client(servers[0])
	if err != nil {
		return nil, err
	}
	body := io.NewSectionReader(f, 0, ref.Size)
	h, err := first.Host(ctx, imageserver.HostRequest{Hash: ref.Hash, Size: ref.Size, Public: ref.Public, Days: termAt(ctx, first, days, explicit), Body: body,
		Payer: s.payer(), Owner: signer, Progress: func(d, t int64) { s.imageOps.set(op, "uploading", d, t) }})
	if err != nil {
		return nil, fmt.Errorf("upload to %s: %w", servers[0], err)
	}
	hosting := []ImageHosting{{Server: servers[0], Until: h.HostedUntil}}
	for _, u := range servers[1:] {
		c, err := s.images.client(u)
		if err != nil {
			return nil, err
		}
		s.imageOps.set(op, "forwarding", 0, ref.Size)
		q, err := c.Quote(ctx, imageserver.QuoteRequest{Kind: imageserver.KindUpload, Hash: ref.Hash, Size: ref.Size, Days: termAt(ctx, c, days, explicit), Public: ref.Public})
		if err == nil {
			if q, err = c.Pay(ctx, q, s.payer()); err == nil {
				if h, err = first.Forward(ctx, imageserver.ForwardRequest{Hash: ref.Hash, To: u, Quote: q, Owner: signer}); err == nil {
					hosting = append(hosting, ImageHosting{Server: u, Until: h.HostedUntil})
					continue
				}
				s.log.Info("forwarding refused; uploading again", "from", servers[0], "to", u, "err", err)
				// The quote is paid: upload on it.
				if h, err = c.Upload(ctx, imageserver.UploadRequest{Quote: q, Body: io.NewSectionReader(f, 0, ref.Size), Owner: signer,
					Progress: func(d, t int64) { s.imageOps.set(op, "uploading", d, t) }}); err == nil {
					hosting = append(hosting, ImageHosting{Server: u, Until: h.HostedUntil})
					continue
				}
			}
		}
		return nil, fmt.Errorf("host on %s: %w", u, err)
	}
	return hosting, nil
}

// imageCreate packs a folder of this machine for a folder of the System,
// hosts it on image servers and mounts it there (paper 3.a–m).
// paying runs an image command that may pay image servers: its terms
// checked, each payment capped by its --max-price, and a payment refused
// for the cap explained.
func (s *System) paying(ctx context.Context, a ImageArgs, run func(context.Context, ImageArgs) (any, error)) (any, error) {
	if err := a.checkTerms(); err != nil {
		return nil, err
	}
	res, err := run(withMaxPrice(ctx, a.MaxPrice), a)
	if err != nil {
		return nil, spendHint(err)
	}
	return res, nil
}

func (s *System) imageCreate(ctx context.Context, a ImageArgs) (any, error) {
	run := s.imageCreateAt
	if a.InPlace {
		if a.Local != "" {
			return nil, errors.New("image create: a local folder or --folder, not both")
		}
		run = func(ctx context.Context, a ImageArgs) (any, error) { return s.imageFromFolder(ctx, a) }
	}
	res, err := s.paying(ctx, a, run)
	if r, ok := res.(ImageResult); ok && err == nil {
		s.images.hosting.note(s, r.Path, r.Hash, r.Hosting) // the upload said until when
	}
	return res, err
}

func (s *System) imageCreateAt(ctx context.Context, a ImageArgs) (any, error) {
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
	days := s.hostingDays(a.Days)
	hosting, err := s.upload(ctx, f, ref, servers, signer, days, a.Days > 0, a.Op)
	if err != nil {
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
	res := resultOf(clean(a.Path), m, 0)
	res.Days, res.Hosting = days, hosting
	return res, nil
}

// imageFromFolder packs a folder of the System into an image of itself on
// the System's image servers and mounts it there: the same files, now
// hosted (`image create --folder`, the VM's image_create). Folders below
// it with an image mounted are nested in it by reference.
func (s *System) imageFromFolder(ctx context.Context, a ImageArgs) (ImageResult, error) {
	defer s.imageOps.end(a.Op)
	if a.Path == "" {
		return ImageResult{}, errors.New("image create --folder needs a folder of the System")
	}
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
	days := s.hostingDays(a.Days)
	hosting, err := s.upload(ctx, f, ref, servers, signer, days, a.Days > 0, a.Op)
	if err != nil {
		return ImageResult{}, err
	}
	m := chainfs.ImageMount{Ref: ref, Servers: servers}
	s.imageOps.set(a.Op, "mounting", 0, 0)
	if err := t.ReplaceWithImage(ctx, ino, m); err != nil {
		return ImageResult{}, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return ImageResult{}, err
	}
	res := resultOf(clean(a.Path), m, 0)
	res.Days, res.Hosting = days, hosting
	withNested(&res, t, ino)
	return res, nil
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
	s.imageOps.set(op, "downloading", 0, 0)
	// The store is a blob.Multi: Get returns a copy whose hash it has
	// checked, from the first server with a right one (in a file).
	rc, err := store.Get(ctx, h)
	if err != nil {
		return chainfs.ImageMount{}, fmt.Errorf("download %x: %w", h[:8], err)
	}
	defer rc.Close()
	f, ok := rc.(*os.File)
	if !ok {
		return chainfs.ImageMount{}, fmt.Errorf("download %x: unexpected reader %T", h[:8], rc)
	}
	st, err := f.Stat()
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	n := st.Size()
	s.imageOps.set(op, "downloading", n, n)
	ref, err := image.Inspect(ctx, f, n)
	if err != nil {
		return chainfs.ImageMount{}, err
	}
	ref.Hash = h
	return chainfs.ImageMount{Ref: ref, Servers: servers}, nil
}

// imageMount mounts an image at a folder. Payments it needs (download
// tickets of the image, or of images nested in it) go up to --max-price.
func (s *System) imageMount(ctx context.Context, a ImageArgs) (any, error) {
	res, err := s.paying(ctx, a, s.imageMountAt)
	if err == nil {
		s.noteHosting(ctx, res)
	}
	return res, err
}

func (s *System) imageMountAt(ctx context.Context, a ImageArgs) (any, error) {
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
	res := resultOf(clean(a.Path), m, 0)
	res.Skipped = s.skipped(m.Servers)
	withNested(&res, t, ino)
	return res, nil
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
	s.images.hosting.forget(s, clean(a.Path))
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
	r.Hosting = s.hostingOf(ctx, info.Mount.Ref.Hash, info.Mount.Servers)
	s.images.hosting.note(s, r.Path, r.Hash, r.Hosting)
	r.Skipped = s.skipped(info.Mount.Servers)
	withNested(&r, t, ino)
	return r, nil
}

// skipped says which of servers this process has skipped, and why.
func (s *System) skipped(servers []string) map[string]string {
	s.images.mu.Lock()
	defer s.images.mu.Unlock()
	var out map[string]string
	for _, u := range servers {
		if why, ok := s.images.bad[u]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[u] = why
		}
	}
	return out
}

// hostingOf asks each server until when it hosts h (at once, briefly: a
// server that does not answer is shown as such).
func (s *System) hostingOf(ctx context.Context, h [32]byte, servers []string) []ImageHosting {
	out := make([]ImageHosting, len(servers))
	var wg sync.WaitGroup
	for i, u := range servers {
		out[i].Server = u
		c, err := s.images.client(u)
		if err != nil {
			out[i].Err = err.Error()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			st, err := c.Stat(sctx, h)
			if err != nil {
				out[i].Err = err.Error()
				return
			}
			out[i].Until = st.HostedUntil
		}()
	}
	wg.Wait()
	return out
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
// then the servers may let the old version go. A server that cannot patch
// gets the new version uploaded, for the term given or the System's (the
// term the old version was bought for is not recorded anywhere the client
// can read it back).
func (s *System) imageUpdate(ctx context.Context, a ImageArgs) (any, error) {
	res, err := s.paying(ctx, a, s.imageUpdateAt)
	if err == nil {
		s.noteHosting(ctx, res)
	}
	return res, err
}

func (s *System) imageUpdateAt(ctx context.Context, a ImageArgs) (any, error) {
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
	oldBytes, err := io.ReadAll(io.LimitReader(rc, oldRef.Size+1)) // checked by Get already
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("the current image: %w", err)
	}
	days := s.hostingDays(a.Days)
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
			if _, err := c.Host(ctx, imageserver.HostRequest{Hash: ref.Hash, Size: ref.Size, Public: ref.Public, Days: termAt(ctx, c, days, a.Days > 0),
				Body: io.NewSectionReader(f, 0, ref.Size), Payer: s.payer(), Owner: signer,
				Progress: func(dn, tot int64) { s.imageOps.set(a.Op, "uploading", dn, tot) }}); err != nil {
				return nil, fmt.Errorf("update on %s: %w", u, err)
			}
			res.Uploaded = append(res.Uploaded, u)
			res.Days = days
			continue
		}
		if h.Hash != ref.Hash {
			return nil, fmt.Errorf("%s patched the image to %x, not %x: refusing to mount it", u, h.Hash[:8], ref.Hash[:8])
		}
	}
	s.imageOps.set(a.Op, "mounting", 0, 0)
	if err := t.ReplaceWithImage(ctx, ino, chainfs.ImageMount{Ref: ref, Servers: info.Mount.Servers}); err != nil {
		return nil, err
	}
	if err := t.Sync(ctx, ino); err != nil {
		return nil, err
	}
	withNested(&res, t, ino)
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

// noteHosting asks the servers of a mounted or updated image (res, an
// ImageResult) until when they host it, for `integrity status`.
func (s *System) noteHosting(ctx context.Context, res any) {
	r, ok := res.(ImageResult)
	if !ok {
		return
	}
	var h [32]byte
	if _, err := hex.Decode(h[:], []byte(r.Hash)); err != nil {
		return
	}
	s.images.hosting.note(s, r.Path, r.Hash, s.hostingOf(ctx, h, r.Servers))
}

// imageRenew renews the hosting of the image mounted at a folder on each
// of its servers, without uploading it again (Client.Extend: quote, pay,
// extend): the folder key's hold — or, where that key holds nothing on
// a server (a public image someone else uploaded, a folder not writable
// here), the server's anonymous hold, which anyone may pay for. Each server is tried whatever the others answered; the result
// says per server the new hosting end or why there is none. Images nested
// in it have their own servers and terms: renew them at their folders.
func (s *System) imageRenew(ctx context.Context, a ImageArgs) (any, error) {
	if err := a.checkTerms(); err != nil {
		return nil, err
	}
	ctx = withMaxPrice(ctx, a.MaxPrice)
	defer s.imageOps.end(a.Op)
	t, ino, err := s.folder(ctx, a.Path, false)
	if err != nil {
		return nil, err
	}
	info, err := t.Image(ino)
	if err != nil {
		return nil, err
	}
	var ownerKey []byte
	if signer, err := owner(info.Keys); err == nil {
		ownerKey = signer.PublicKey()
	}
	ref := info.Mount.Ref
	res := resultOf(clean(a.Path), info.Mount, info.Overlay)
	res.Days = s.hostingDays(a.Days)
	res.Hosting = make([]ImageHosting, len(info.Mount.Servers))
	for i, u := range info.Mount.Servers {
		s.imageOps.set(a.Op, "renewing", int64(i), int64(len(info.Mount.Servers)))
		res.Hosting[i].Server = u
		c, err := s.images.client(u)
		if err == nil {
			var x imageserver.Extended
			x, err = c.Extend(ctx, imageserver.ExtendRequest{Hash: ref.Hash, Size: ref.Size, Public: ref.Public,
				Days: termAt(ctx, c, res.Days, a.Days > 0), Payer: s.payer(), OwnerKey: ownerKey})
			if err == nil {
				res.Hosting[i].Until = x.HostedUntil
				continue
			}
		}
		s.log.Warn("renewing an image's hosting failed", "path", res.Path, "server", u, "err", err)
		res.Hosting[i].Err = spendHint(err).Error()
	}
	// A server that failed keeps the end it had: ask it, briefly, so the
	// status line stays right.
	known := slices.Clone(res.Hosting)
	for i, h := range known {
		if h.Err != "" {
			if st := s.hostingOf(ctx, ref.Hash, []string{h.Server}); st[0].Err == "" {
				known[i] = st[0]
			}
		}
	}
	s.images.hosting.note(s, res.Path, res.Hash, known)
	return res, nil
}

// imageHostingFile keeps, in the data directory, the hosting ends last
// learnt per image folder (hostingNotes).
const imageHostingFile = "image-hosting.json"

// hostingNotes remember, per image folder of the System, until when each
// of its servers hosts its image, as last learnt by image create, mount,
// update, renew and info on this device: `integrity status` shows the
// earliest end from them without asking any server.
type hostingNotes struct {
	mu     sync.Mutex
	loaded bool
	m      map[string]hostingNote
}

type hostingNote struct {
	Hash  string               `json:"hash"`
	Until map[string]time.Time `json:"until"` // by server; absent: unknown
}

// load reads this device's notes the first time; the caller holds mu.
func (n *hostingNotes) load(s *System) {
	if n.loaded {
		return
	}
	n.loaded = true
	n.m = map[string]hostingNote{}
	b, err := os.ReadFile(filepath.Join(s.opts.Dir.Path, imageHostingFile))
	if err != nil {
		return
	}
	if err := json.Unmarshal(b, &n.m); err != nil {
		s.log.Warn("ignoring a malformed "+imageHostingFile, "err", err)
		n.m = map[string]hostingNote{}
	}
}

// save writes the notes (atomically); the caller holds mu. Failing is
// logged: they are a convenience, learnt again by image info.
func (n *hostingNotes) save(s *System) {
	b, err := json.Marshal(n.m)
	if err == nil {
		p := filepath.Join(s.opts.Dir.Path, imageHostingFile)
		if err = os.WriteFile(p+".tmp", b, 0o600); err == nil {
			err = os.Rename(p+".tmp", p)
		}
	}
	if err != nil {
		s.log.Warn("remembering the images' hosting ends", "err", err)
	}
}

// note records the image hash mounted at folder p and its servers' ends.
func (n *hostingNotes) note(s *System, p, hash string, hosting []ImageHosting) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.load(s)
	e := hostingNote{Hash: hash, Until: map[string]time.Time{}}
	for _, h := range hosting {
		if h.Err == "" && !h.Until.IsZero() {
			e.Until[h.Server] = h.Until.UTC()
		}
	}
	n.m[p] = e
	n.save(s)
}

// forget drops folder p (its image was unmounted).
func (n *hostingNotes) forget(s *System, p string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.load(s)
	if _, ok := n.m[p]; ok {
		delete(n.m, p)
		n.save(s)
	}
}

// ImageHostingStatus answers image.hosting: how many image folders this
// device knows, and the earliest hosting end among them (zero Until: none
// known).
type ImageHostingStatus struct {
	Mounted int       `json:"mounted"`
	Path    string    `json:"path,omitempty"`
	Server  string    `json:"server,omitempty"`
	Until   time.Time `json:"until,omitzero"`
}

// imageHostingStatus is `integrity status`'s images line, from the notes
// alone: no server is asked.
func (s *System) imageHostingStatus(context.Context, struct{}) (any, error) {
	n := &s.images.hosting
	n.mu.Lock()
	defer n.mu.Unlock()
	n.load(s)
	st := ImageHostingStatus{Mounted: len(n.m)}
	for p, e := range n.m {
		for u, t := range e.Until {
			if st.Until.IsZero() || t.Before(st.Until) || (t.Equal(st.Until) && p+u < st.Path+st.Server) {
				st.Path, st.Server, st.Until = p, u, t
			}
		}
	}
	return st, nil
}
