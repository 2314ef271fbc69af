package system

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
)

// Renewing what the System keeps on image servers: its large files'
// blobs on demand (`integrity image renew --blobs`), and, in the agent,
// its images and blobs whose hosting ends soon (autoRenew). Hosting is
// bought for a term; without renewal a server may drop the content when
// the term ends, and a large file or an image becomes unreadable.

// imageAutoRenewXattr turns the agent's renewal off ("false"; absent:
// on), kept on "/" like the other image settings.
const imageAutoRenewXattr = "user.integrity.image-auto-renew"

// parseAutoRenew reads the setting's value (ok false: malformed).
func parseAutoRenew(v string) (on, ok bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "on", "1", "yes":
		return true, true
	case "false", "off", "0", "no":
		return false, true
	}
	return true, false
}

// BlobRenewResult answers image.renew_blobs: per server of the System,
// how many of its large files' blobs were renewed and which were not.
type BlobRenewResult struct {
	Blobs   int               `json:"blobs"`
	Days    int               `json:"days"`
	Servers []BlobRenewServer `json:"servers"`
}

// BlobRenewServer is one server's part of a blob renewal.
type BlobRenewServer struct {
	Server  string `json:"server"`
	Renewed int    `json:"renewed"`
	// Until is the earliest hosting end among the blobs renewed.
	Until  time.Time          `json:"until,omitzero"`
	Failed []BlobRenewFailure `json:"failed,omitempty"`
}

// BlobRenewFailure is a blob a server did not renew, and why.
type BlobRenewFailure struct {
	Path string `json:"path"`
	Hash string `json:"hash"`
	Err  string `json:"err"`
}

// imageRenewBlobs extends, on each of the System's image servers, the
// hosting of every blob its tree's large files use (chainfs.BlobRefs),
// each for the blob's owner key (blobOwner), without uploading anything.
// One failure does not stop the others.
func (s *System) imageRenewBlobs(ctx context.Context, a ImageArgs) (any, error) {
	if err := a.checkTerms(); err != nil {
		return nil, err
	}
	ctx = withMaxPrice(ctx, a.MaxPrice)
	defer s.imageOps.end(a.Op)
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	servers := s.defaultServers(t)
	if len(servers) == 0 {
		return nil, errors.New("the System has no image servers: its large files are kept on this device only (set some with `integrity image servers URL...`)")
	}
	refs := t.BlobRefs()
	res := BlobRenewResult{Blobs: len(refs), Days: s.hostingDays(a.Days)}
	total, done := int64(len(refs)*len(servers)), int64(0)
	for _, u := range servers {
		sr := BlobRenewServer{Server: u}
		c, cerr := s.images.client(u)
		days := res.Days
		if cerr == nil && len(refs) > 0 {
			days = termAt(ctx, c, res.Days, a.Days > 0)
		}
		for _, b := range refs {
			s.imageOps.set(a.Op, "renewing", done, total)
			done++
			err := cerr
			var x imageserver.Extended
			if err == nil {
				var signer imageserver.Signer
				if signer, err = s.blobOwner(b.Ref.Hash); err == nil {
					x, err = c.Extend(ctx, imageserver.ExtendRequest{Hash: b.Ref.Hash, Size: b.Ref.Size, Days: days,
						Payer: s.payer(), OwnerKey: signer.PublicKey()})
				}
			}
			if err != nil {
				s.log.Warn("renewing a large file's hosting failed", "path", b.Path, "server", u, "err", err)
				sr.Failed = append(sr.Failed, BlobRenewFailure{Path: b.Path, Hash: hex.EncodeToString(b.Ref.Hash[:]), Err: spendHint(err).Error()})
				continue
			}
			sr.Renewed++
			if sr.Until.IsZero() || x.HostedUntil.Before(sr.Until) {
				sr.Until = x.HostedUntil
			}
		}
		res.Servers = append(res.Servers, sr)
	}
	return res, nil
}

// RenewSchedule is when the agent renews hosting: every Every, what ends
// within Window (zero fields: the defaults). Tests shorten it.
type RenewSchedule struct {
	Every  time.Duration
	Window time.Duration
}

// Defaults of RenewSchedule: twice a day, whatever ends within a month
// (a server down for a while, or a wallet short of funds, still leaves
// weeks to notice).
const (
	DefaultRenewEvery  = 12 * time.Hour
	DefaultRenewWindow = 30 * 24 * time.Hour
)

func (r RenewSchedule) withDefaults() RenewSchedule {
	if r.Every <= 0 {
		r.Every = DefaultRenewEvery
	}
	if r.Window <= 0 {
		r.Window = DefaultRenewWindow
	}
	return r
}

// renewItem is content the System keeps on some servers.
type renewItem struct {
	kind    string // "image" or "blob", for the log
	path    string
	hash    [32]byte
	size    int64
	public  bool
	servers []string
	owner   []byte // the key whose hold is extended (nil: anonymous)
}

type renewKey struct {
	server string
	hash   [32]byte
}

// autoRenewer is the agent's renewal job for one open tree.
type autoRenewer struct {
	s     *System
	t     *chainfs.Tree
	sched RenewSchedule
	now   func() time.Time
	// known are the hosting ends learnt by the last run: content known to
	// end after the window is not asked about again.
	known map[renewKey]time.Time
	// sold is, per item and server, the end of the hold a server said an
	// extension paid by this process bought; distrusted are servers that
	// then reported less (or did not add the days paid for): a server
	// that takes payments and forgets them is not paid again by this
	// process, only reported.
	sold       map[renewKey]time.Time
	distrusted map[string]bool
}

// autoRenew runs the renewal at once (the tree has just been synced) and
// then every sched.Every, until ctx ends (logout, Close).
func (s *System) autoRenew(ctx context.Context, t *chainfs.Tree, sched RenewSchedule) {
	r := &autoRenewer{s: s, t: t, sched: sched.withDefaults(), now: time.Now, known: map[renewKey]time.Time{},
		sold: map[renewKey]time.Time{}, distrusted: map[string]bool{}}
	tick := time.NewTicker(r.sched.Every)
	defer tick.Stop()
	for {
		r.run(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// items lists the System's images (mounted at its own folders, on their
// servers) and blobs (on its default servers).
func (r *autoRenewer) items() []renewItem {
	var out []renewItem
	for _, m := range r.t.ImageMounts() {
		it := renewItem{kind: "image", path: m.Path, hash: m.Mount.Ref.Hash, size: m.Mount.Ref.Size, public: m.Mount.Ref.Public, servers: m.Mount.Servers}
		if signer, err := owner(m.Keys); err == nil {
			it.owner = signer.PublicKey()
		}
		out = append(out, it)
	}
	servers := r.s.defaultServers(r.t)
	if len(servers) == 0 {
		return out
	}
	for _, b := range r.t.BlobRefs() {
		signer, err := r.s.blobOwner(b.Ref.Hash)
		if err != nil {
			r.s.log.Warn("auto-renewal: no owner key for a large file", "path", b.Path, "err", err)
			continue
		}
		out = append(out, renewItem{kind: "blob", path: b.Path, hash: b.Ref.Hash, size: b.Ref.Size, servers: servers, owner: signer.PublicKey()})
	}
	return out
}

// run renews, on each server, whatever of the System's ends within the
// window: one Stat per item and server at most, none for what the last
// run found to end later; each payment capped like every background
// payment (System.payer).
func (r *autoRenewer) run(ctx context.Context) {
	s := r.s
	s.learnImageSettings(r.t) // another device may have changed them
	if s.images.noAutoRenew.Load() {
		s.log.Debug("auto-renewal is off (integrity image settings --auto-renew=false)")
		return
	}
	deadline := r.now().Add(r.sched.Window)
	days := s.hostingDays(0)
	terms := map[string]int{} // per server: the System's term fitted to its bounds
	next := map[renewKey]time.Time{}
	var asked, renewed, failed, skipped int
	items := r.items()
	for _, it := range items {
		fresh := false
		for _, u := range it.servers {
			if ctx.Err() != nil {
				return
			}
			k := renewKey{u, it.hash}
			if _, ok := next[k]; ok {
				continue // the same content at another path
			}
			if end, ok := r.known[k]; ok && end.After(deadline) {
				next[k] = end
				skipped++
				continue
			}
			end, did, err := r.renewAt(ctx, it, u, deadline, days, terms)
			if err != nil {
				failed++
				continue
			}
			asked++
			fresh = true
			next[k] = end
			if did {
				renewed++
			}
		}
		if fresh && it.kind == "image" {
			// `integrity status` shows the earliest end from these notes.
			hosting := make([]ImageHosting, 0, len(it.servers))
			for _, u := range it.servers {
				if end, ok := next[renewKey{u, it.hash}]; ok {
					hosting = append(hosting, ImageHosting{Server: u, Until: end})
				}
			}
			s.images.hosting.note(s, it.path, hex.EncodeToString(it.hash[:]), hosting)
		}
	}
	r.known = next
	s.log.Info("auto-renewal", "items", len(items), "asked", asked, "renewed", renewed, "failed", failed, "skipped", skipped)
}

// renewAt asks server u until when it hosts it and, if that is before
// deadline, extends it by the System's term: the hosting end after, and
// whether it paid.
func (r *autoRenewer) renewAt(ctx context.Context, it renewItem, u string, deadline time.Time, days int, terms map[string]int) (time.Time, bool, error) {
	s := r.s
	c, err := s.images.client(u)
	if err != nil {
		s.log.Warn("auto-renewal: bad image server", "server", u, "err", err)
		return time.Time{}, false, err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	st, err := c.Stat(sctx, it.hash)
	cancel()
	if err != nil {
		if errors.Is(err, imageserver.ErrNotFound) {
			// A blob may still be uploading (it is then bought a fresh
			// term); anything else ended and must be uploaded again.
			s.log.Warn("auto-renewal: not hosted, cannot be renewed", "kind", it.kind, "path", it.path, "server", u)
		} else {
			s.log.Warn("auto-renewal: asking an image server failed", "kind", it.kind, "path", it.path, "server", u, "err", err)
		}
		return time.Time{}, false, err
	}
	if st.HostedUntil.After(deadline) {
		return st.HostedUntil, false, nil
	}
	k := renewKey{u, it.hash}
	if sold, ok := r.sold[k]; ok && st.HostedUntil.Before(sold.Add(-time.Hour)) {
		r.distrusted[u] = true
		s.log.Warn("auto-renewal: a server reports less hosting than it was paid for; not paying it again", "server", u,
			"kind", it.kind, "path", it.path, "paid_until", sold, "hosted_until", st.HostedUntil)
	}
	if r.distrusted[u] {
		return st.HostedUntil, false, fmt.Errorf("renew %s at %s: server distrusted", it.path, u)
	}
	term, ok := terms[u]
	if !ok {
		term = termAt(ctx, c, days, false)
		terms[u] = term
	}
	x, err := c.ExtendHosted(ctx, imageserver.ExtendRequest{Hash: it.hash, Size: it.size, Public: it.public, Days: term,
		Payer: s.payer(), OwnerKey: it.owner}, st)
	if err != nil {
		s.log.Warn("auto-renewal: renewing failed", "kind", it.kind, "path", it.path, "server", u,
			"hosted_until", st.HostedUntil, "err", spendHint(err))
		// Known to end soon: asked again next run.
		return st.HostedUntil, false, fmt.Errorf("renew %s at %s: %w", it.path, u, err)
	}
	// The hold paid for runs at least term days from now (from its old
	// end, or from now), and hosting lasts at least as long as it.
	r.sold[k] = x.HoldUntil
	if x.HoldUntil.Before(r.now().Add(time.Duration(term)*24*time.Hour-time.Hour)) || x.HostedUntil.Before(x.HoldUntil) {
		r.distrusted[u] = true
		s.log.Warn("auto-renewal: a server did not add the days paid for; not paying it again", "server", u,
			"kind", it.kind, "path", it.path, "days", term, "hold_until", x.HoldUntil, "until", x.HostedUntil)
	}
	s.log.Info("auto-renewal: renewed", "kind", it.kind, "path", it.path, "server", u, "days", term,
		"was_until", st.HostedUntil, "until", x.HostedUntil)
	return x.HostedUntil, true, nil
}
