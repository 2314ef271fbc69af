package system

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/addrlog"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/share"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/addrsafe"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// ErrUnknownRecipient: a share's recipient is neither a public key nor a
// contact.
var ErrUnknownRecipient = errors.New("unknown recipient")

func (s *System) shareHandlers() map[string]func(context.Context, json.RawMessage) (any, error) {
	return map[string]func(context.Context, json.RawMessage) (any, error){
		"share.share":   typed(s.shareShare),
		"share.unshare": typed(s.shareUnshare),
		"share.publish": typed(s.sharePublish),
		"share.open":    typed(s.shareOpen),
		"share.list":    s.shareList,
		"contacts.add":  s.contactsAdd,
		"contacts.ls":   s.contactsLs,
	}
}

// ShareArgs are the arguments of the sharing methods.
type ShareArgs struct {
	Path    string `json:"path,omitempty"`
	To      string `json:"to,omitempty"` // public key (hex) or contact name
	Write   bool   `json:"write,omitempty"`
	Address string `json:"address,omitempty"` // share.open
	Name    string `json:"name,omitempty"`    // contacts.add
	PubKey  string `json:"pubkey,omitempty"`  // contacts.add
}

// resolveRecipient turns a contact name or a hex public key into a key.
// (A Domain System name will be one more case here.)
func (s *System) resolveRecipient(to string) ([33]byte, string, error) {
	var pk [33]byte
	s.mu.Lock()
	contacts := s.opts.Settings.Contacts
	s.mu.Unlock()
	if hx, ok := contacts[to]; ok {
		to = hx
	}
	b, err := hex.DecodeString(to)
	if err != nil || len(b) != 33 {
		return pk, "", fmt.Errorf("%w %q: give a contact name (`integrity contacts add`) or a 66-hex-digit public key (`integrity whoami` shows yours)", ErrUnknownRecipient, to)
	}
	if _, err := btcec.ParsePubKey(b); err != nil {
		return pk, "", fmt.Errorf("%w: %q is not a public key: %v", ErrUnknownRecipient, to, err)
	}
	copy(pk[:], b)
	return pk, s.nameOf(pk), nil
}

// nameOf is how a key shows in paths and listings: its contact name, or
// the start of its hex.
func (s *System) nameOf(pk [33]byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	hx := hex.EncodeToString(pk[:])
	for name, v := range s.opts.Settings.Contacts {
		if strings.EqualFold(v, hx) {
			return name
		}
	}
	return hx[:16]
}

func (s *System) myPair() (*btcec.PrivateKey, [33]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pk [33]byte
	if s.id == nil {
		return nil, pk, ErrNotLoggedIn
	}
	copy(pk[:], s.id.PrimaryPub)
	return s.id.PrimaryPair, pk, nil
}

// sendGrant seals a grant for its recipient and pays it to their inbox,
// then keeps a note to self in our own inbox (so `integrity shares` and
// `unshare` work from any device).
func (s *System) sendGrant(ctx context.Context, g share.Grant) error {
	me, myPub, err := s.myPair()
	if err != nil {
		return err
	}
	to := g.To
	pathForThem := g.Path
	g.Path = "" // the recipient need not learn where it lives in our tree
	if err := s.payInbox(ctx, me, g); err != nil {
		return err
	}
	note := g
	note.Path, note.For, note.To = pathForThem, to, myPub
	return s.payInbox(ctx, me, note)
}

func (s *System) payInbox(ctx context.Context, me *btcec.PrivateKey, g share.Grant) error {
	fields, err := share.Seal(me, g)
	if err != nil {
		return err
	}
	script, err := envelope.Encode(envelope.TypeShare, fields...)
	if err != nil {
		return err
	}
	inbox := share.InboxAddr(g.To[:])
	pay, err := wallet.PayTo(mustAddr(inbox, s.backend), wallet.DustLimit)
	if err != nil {
		return err
	}
	if _, _, err := s.wallet.Pay(ctx, []wallet.Output{{PkScript: script}, pay}); err != nil {
		return fmt.Errorf("send share: %w", err)
	}
	return nil
}

func mustAddr(h [20]byte, b chain.Backend) *address.AddressPubKeyHash {
	a, _ := address.NewAddressPubKeyHash(h[:], b.Params())
	return a
}

// inboxState is what our inbox says: shares we received (by sender and
// name) and notes of what we shared (by recipient and path).
type inboxState struct {
	in  map[string]received
	out map[string]share.Grant
}

type received struct {
	from [33]byte
	g    share.Grant
}

// readInbox folds the inbox's share messages in chain order. Messages that
// are malformed, not for us, or replays of ones already seen are skipped
// with a log line: anyone can pay an inbox.
func (s *System) readInbox(ctx context.Context) (*inboxState, error) {
	me, myPub, err := s.myPair()
	if err != nil {
		return nil, err
	}
	inbox := share.InboxAddr(myPub[:])
	st := &inboxState{in: map[string]received{}, out: map[string]share.Grant{}}
	if !addrsafe.Queryable(inbox[:]) {
		// A System made before primary keys were drawn to avoid them:
		// btcd cannot look its inbox up (internal/addrsafe). Everything
		// else works; shares to it cannot be received.
		s.log.Warn("inbox: this System's inbox address cannot be looked up on btcd; shares sent to it are not shown", "addr", mustAddr(inbox, s.backend).String())
		return st, nil
	}
	txs, err := s.backend.AddressTxs(ctx, mustAddr(inbox, s.backend))
	if err != nil {
		return nil, fmt.Errorf("read inbox: %w", err)
	}
	seen := map[[16]byte]time.Time{}
	for i := range txs {
		tx := &txs[i]
		if len(tx.MsgTx.TxOut) == 0 {
			continue
		}
		m, err := envelope.Decode(tx.MsgTx.TxOut[0].PkScript)
		if err != nil || m.Type != envelope.TypeShare {
			if err != nil && !errors.Is(err, envelope.ErrNotIntegrity) {
				s.log.Warn("inbox: malformed message ignored", "tx", tx.Hash(), "err", err)
			}
			continue
		}
		from, g, err := share.Open(me, m.Fields)
		if err != nil {
			s.log.Warn("inbox: a message that does not open for us is ignored (foreign or forged)", "tx", tx.Hash(), "err", err)
			continue
		}
		if last, ok := seen[g.ID]; ok && !g.Sent.After(last) {
			s.log.Warn("inbox: a replayed share message is ignored", "tx", tx.Hash(), "share", hex.EncodeToString(g.ID[:4]))
			continue
		}
		seen[g.ID] = g.Sent
		if from == myPub && g.For != ([33]byte{}) || g.Flags&share.FlagPublic != 0 && from == myPub {
			key := hex.EncodeToString(g.For[:]) + " " + g.Path
			st.out[key] = g
			continue
		}
		if from == myPub {
			continue
		}
		key := hex.EncodeToString(from[:]) + " " + g.Name
		if g.Flags&share.FlagRevoked != 0 {
			delete(st.in, key)
			continue
		}
		st.in[key] = received{from: from, g: g}
	}
	return st, nil
}

// roots are the received shares as tree roots: shared/<from>/<name>.
func (s *System) roots(st *inboxState) []chainfs.Root {
	var out []chainfs.Root
	for _, r := range st.in {
		out = append(out, chainfs.Root{Path: []string{"shared", s.nameOf(r.from), r.g.Name}, Keys: r.g.Keys(), Kind: r.g.Kind, Genesis: r.g.Genesis})
	}
	return out
}

// publicRoots are the published folders this device opened.
func (s *System) publicRoots(ctx context.Context) []chainfs.Root {
	s.mu.Lock()
	addrs := append([]string(nil), s.opts.Settings.Public...)
	s.mu.Unlock()
	var out []chainfs.Root
	for _, a := range addrs {
		r, err := s.publishedRoot(ctx, a)
		if err != nil {
			s.log.Warn("public folder not available", "address", a, "err", err)
			continue
		}
		out = append(out, r)
	}
	return out
}

// publishedRoot finds the keys published at an address.
func (s *System) publishedRoot(ctx context.Context, addr string) (chainfs.Root, error) {
	a, err := address.DecodeAddress(addr, s.backend.Params())
	if err != nil || !a.IsForNet(s.backend.Params()) {
		return chainfs.Root{}, fmt.Errorf("invalid address %q", addr)
	}
	log := &addrlog.Log{Backend: s.backend, Wallet: s.wallet, Logger: s.log}
	msgs, err := log.Messages(ctx, a)
	if err != nil {
		return chainfs.Root{}, err
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Type != envelope.TypePublish {
			continue
		}
		g, err := share.OpenPublished(msgs[i].Fields)
		if err != nil {
			s.log.Warn("malformed publish message ignored", "address", addr, "err", err)
			continue
		}
		if !bytes.Equal(g.Addr[:], a.ScriptAddress()) {
			continue // keys of another node: not this address's to publish
		}
		return chainfs.Root{Path: []string{"public", addr}, Keys: g.Keys(), Kind: g.Kind, Genesis: g.Genesis}, nil
	}
	return chainfs.Root{}, fmt.Errorf("nothing is published at %s", addr)
}

// watchInbox applies new shares as they arrive (chain notifications are
// hints: the inbox is re-read).
func (s *System) watchInbox(ctx context.Context, t *chainfs.Tree) {
	_, myPub, err := s.myPair()
	if err != nil {
		return
	}
	inboxScript, _ := wallet.PayTo(mustAddr(share.InboxAddr(myPub[:]), s.backend), 1)
	events := s.backend.Subscribe(ctx)
	current := map[string]bool{}
	if st, err := s.readInbox(ctx); err == nil {
		for _, r := range s.roots(st) {
			current[strings.Join(r.Path, "/")] = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				events = s.backend.Subscribe(ctx)
				continue
			}
			if !paysScript(ev, inboxScript.PkScript) {
				continue
			}
			st, err := s.readInbox(ctx)
			if err != nil {
				s.log.Warn("inbox", "err", err)
				continue
			}
			next := map[string]bool{}
			for _, r := range s.roots(st) {
				key := strings.Join(r.Path, "/")
				next[key] = true
				if _, err := t.AddRoot(ctx, r); err != nil {
					s.log.Warn("inbox: cannot show a share", "path", key, "err", err)
				} else if !current[key] {
					s.log.Info("a folder was shared with you", "path", "/"+key)
				}
			}
			for key := range current {
				if !next[key] {
					t.RemoveRoot(strings.Split(key, "/"))
					s.log.Info("a share was withdrawn", "path", "/"+key)
				}
			}
			current = next
		}
	}
}

func paysScript(ev chain.Event, pk []byte) bool {
	for _, tx := range ev.Txs {
		for _, o := range tx.MsgTx.TxOut {
			if bytes.Equal(o.PkScript, pk) {
				return true
			}
		}
	}
	return false
}

func (s *System) shareShare(ctx context.Context, a ShareArgs) (any, error) {
	to, toName, err := s.resolveRecipient(a.To)
	if err != nil {
		return nil, err
	}
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	g, err := t.NodeGrant(ctx, ino, a.Write)
	if err != nil {
		return nil, err
	}
	if g.ID, err = share.NewID(); err != nil {
		return nil, err
	}
	g.To = to
	if err := s.sendGrant(ctx, g); err != nil {
		return nil, err
	}
	return ShareInfo{Path: g.Path, With: toName, Write: a.Write, Sent: g.Sent}, nil
}

// ShareInfo is one line of `integrity shares`.
type ShareInfo struct {
	Path  string    `json:"path"`
	With  string    `json:"with,omitempty"` // recipient or sender
	Write bool      `json:"write"`
	Sent  time.Time `json:"sent"`
	Kind  string    `json:"kind,omitempty"`
}

// ShareList answers share.list.
type ShareList struct {
	Shared    []ShareInfo `json:"shared"`    // by me
	Published []ShareInfo `json:"published"` // by me
	Received  []ShareInfo `json:"received"`  // with me
	Opened    []string    `json:"opened"`    // public folders I opened
}

func (s *System) shareList(ctx context.Context, _ json.RawMessage) (any, error) {
	st, err := s.readInbox(ctx)
	if err != nil {
		return nil, err
	}
	var l ShareList
	for _, g := range st.out {
		if g.Flags&share.FlagRevoked != 0 {
			continue
		}
		info := ShareInfo{Path: g.Path, Write: g.Flags&share.FlagWrite != 0, Sent: g.Sent}
		if g.Flags&share.FlagPublic != 0 {
			l.Published = append(l.Published, info)
			continue
		}
		info.With = s.nameOf(g.For)
		l.Shared = append(l.Shared, info)
	}
	for _, r := range st.in {
		l.Received = append(l.Received, ShareInfo{Path: "/shared/" + s.nameOf(r.from) + "/" + r.g.Name, With: s.nameOf(r.from),
			Write: r.g.Flags&share.FlagWrite != 0, Sent: r.g.Sent, Kind: r.g.Kind.String()})
	}
	s.mu.Lock()
	l.Opened = append(l.Opened, s.opts.Settings.Public...)
	s.mu.Unlock()
	for _, list := range [][]ShareInfo{l.Shared, l.Published, l.Received} {
		sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	}
	return l, nil
}

func (s *System) sharePublish(ctx context.Context, a ShareArgs) (any, error) {
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	if err := t.PublishKeys(ctx, ino, a.Write); err != nil {
		return nil, err
	}
	g, err := t.NodeGrant(ctx, ino, a.Write)
	if err != nil {
		return nil, err
	}
	// A note to self, for `integrity shares`.
	me, myPub, err := s.myPair()
	if err != nil {
		return nil, err
	}
	if g.ID, err = share.NewID(); err != nil {
		return nil, err
	}
	note := g
	note.Flags |= share.FlagPublic
	note.To = myPub
	if err := s.payInbox(ctx, me, note); err != nil {
		return nil, err
	}
	return struct {
		Address string `json:"address"`
	}{mustAddr(g.Addr, s.backend).EncodeAddress()}, nil
}

func (s *System) shareOpen(ctx context.Context, a ShareArgs) (any, error) {
	t, err := s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.publishedRoot(ctx, a.Address)
	if err != nil {
		return nil, err
	}
	if _, err := t.AddRoot(ctx, r); err != nil {
		return nil, err
	}
	s.mu.Lock()
	known := false
	for _, p := range s.opts.Settings.Public {
		known = known || p == a.Address
	}
	if !known {
		s.opts.Settings.Public = append(s.opts.Settings.Public, a.Address)
	}
	err = s.opts.Dir.Save(s.opts.Settings)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return struct {
		Path string `json:"path"`
	}{"/public/" + a.Address}, nil
}

// shareUnshare revokes a recipient: the folder moves onto fresh keys, the
// remaining recipients get the new keys, the revoked one a notice.
func (s *System) shareUnshare(ctx context.Context, a ShareArgs) (any, error) {
	revoked, revokedName, err := s.resolveRecipient(a.To)
	if err != nil {
		return nil, err
	}
	t, ino, err := s.resolve(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	st, err := s.readInbox(ctx)
	if err != nil {
		return nil, err
	}
	path := clean(a.Path)
	var keep []share.Grant
	var gone *share.Grant
	for _, g := range st.out {
		if g.Path != path || g.Flags&(share.FlagRevoked|share.FlagPublic) != 0 {
			continue
		}
		g := g
		if g.For == revoked {
			gone = &g
		} else {
			keep = append(keep, g)
		}
	}
	if gone == nil {
		return nil, fmt.Errorf("%s is not shared with %s", path, revokedName)
	}
	newIno, err := t.Rekey(ino)
	if err != nil {
		return nil, err
	}
	for _, old := range keep {
		g, err := t.NodeGrant(ctx, newIno, old.Flags&share.FlagWrite != 0)
		if err != nil {
			return nil, err
		}
		g.ID, g.To = old.ID, old.For
		if err := s.sendGrant(ctx, g); err != nil {
			return nil, err
		}
	}
	notice := *gone
	notice.Flags = share.FlagRevoked
	notice.Read, notice.Write = [64]byte{}, [64]byte{}
	notice.Sent = time.Now()
	notice.To = gone.For
	if err := s.sendGrant(ctx, notice); err != nil {
		return nil, err
	}
	return struct {
		Kept int `json:"kept"`
	}{len(keep)}, nil
}

func (s *System) contactsAdd(_ context.Context, raw json.RawMessage) (any, error) {
	a, err := parse[ShareArgs](raw)
	if err != nil {
		return nil, err
	}
	b, err := hex.DecodeString(a.PubKey)
	if err != nil || len(b) != 33 {
		return nil, fmt.Errorf("contacts add: %q is not a 66-hex-digit public key", a.PubKey)
	}
	if _, err := btcec.ParsePubKey(b); err != nil {
		return nil, fmt.Errorf("contacts add: not a public key: %w", err)
	}
	if err := validContactName(a.Name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.Settings.Contacts == nil {
		s.opts.Settings.Contacts = map[string]string{}
	}
	s.opts.Settings.Contacts[a.Name] = strings.ToLower(a.PubKey)
	return struct{}{}, s.opts.Dir.Save(s.opts.Settings)
}

func validContactName(n string) error {
	if n == "" || len(n) > 64 || strings.ContainsAny(n, "/\x00 ") || n == "." || n == ".." {
		return fmt.Errorf("contacts add: %q is not a usable name (1–64 characters, no '/', spaces or NUL)", n)
	}
	if _, err := hex.DecodeString(n); err == nil && len(n) == 66 {
		return fmt.Errorf("contacts add: a name cannot look like a public key")
	}
	return nil
}

// Contact is one line of `integrity contacts ls`.
type Contact struct {
	Name   string `json:"name"`
	PubKey string `json:"pubkey"`
}

func (s *System) contactsLs(context.Context, json.RawMessage) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Contact
	for n, k := range s.opts.Settings.Contacts {
		out = append(out, Contact{Name: n, PubKey: k})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
