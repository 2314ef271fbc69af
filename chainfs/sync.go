package chainfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// replayed is a node as read from the chain.
type replayed struct {
	state        *node.State
	revs         []rev
	head         chain.UTXO
	hasHead      bool
	childGenesis map[[20]byte]int64
	missingBlob  bool // content (a blob, or the folder's image) could not be fetched
	// img is the image the state mounts, loaded for it (nil: none, or
	// the one the node has); lazy says an image file's content is still
	// to be read from its image.
	img  *imgDir
	lazy bool
}

// syncWorkers bounds parallel address queries.
const syncWorkers = 16

// fetch reads a node's history and replays it: starting at the genesis
// output, each commit is the transaction whose input 0 spends the current
// head (so only holders of the node's write key can commit, and commits
// form one chain whatever order the backend lists them in); its output 1,
// paying the node again, is the next head.
func (t *Tree) fetch(ctx context.Context, keys node.Keys, base *node.State, genesis node.OutPoint, lazy *imgFile) (*replayed, error) {
	r := &replayed{state: base, childGenesis: map[[20]byte]int64{}, lazy: lazy != nil}
	if genesis.IsZero() {
		return r, nil
	}
	addr, err := address.NewAddressPubKeyHash(keys.Addr[:], t.backend.Params())
	if err != nil {
		return nil, err
	}
	txs, err := t.backend.AddressTxs(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", addr, err)
	}
	pk := p2pkh(keys.Addr)
	bySpend := make(map[wire.OutPoint]*chain.Tx, len(txs))
	for i := range txs {
		tx := &txs[i]
		if len(tx.MsgTx.TxIn) == 0 || len(tx.PrevOuts) == 0 || !bytes.Equal(tx.PrevOuts[0].PkScript, pk) {
			continue // not spent from this address: anyone's payment, never a commit
		}
		bySpend[tx.MsgTx.TxIn[0].PreviousOutPoint] = tx
	}
	load := func(ref blob.Ref) ([]byte, error) {
		if t.cfg.Blobs == nil {
			r.missingBlob = true
			return nil, nil
		}
		c, err := blob.Load(ctx, t.cfg.Blobs, ref)
		if err != nil {
			t.log.Warn("chainfs: blob not available", "addr", addr, "blob", fmt.Sprintf("%x", ref.Hash[:8]), "err", err)
			r.missingBlob = true
			return nil, nil
		}
		return c, nil
	}
	head := wire.OutPoint{Hash: genesis.TxID, Index: genesis.Index}
	for len(bySpend) > 0 {
		tx, ok := bySpend[head]
		if !ok {
			break
		}
		delete(bySpend, head)
		txid := tx.Hash()
		if b, ok := t.decodeCommit(keys, tx); ok {
			if r.lazy && changesContent(b) {
				// An overlay on an image file: its patches apply to the
				// image's content.
				c, err := lazy.readAll(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s: its image: %w", addr, err)
				}
				r.state.Content, r.lazy = c, false
			}
			if err := r.state.Apply(b, txid, load); err != nil {
				t.log.Warn("chainfs: skipping an invalid commit", "addr", addr, "tx", txid, "err", err)
			} else {
				r.revs = append(r.revs, rev{txid: txid, height: tx.Height, time: tx.Time, body: b, size: int64(len(r.state.Content))})
				j := 0
				for _, op := range b.Ops {
					if op.Code == node.OpEntryNew || op.Code == node.OpEntryOver {
						if o := 2 + j; o < len(tx.MsgTx.TxOut) && bytes.Equal(tx.MsgTx.TxOut[o].PkScript, p2pkh(op.Entry.Addr)) {
							r.childGenesis[op.Entry.Addr] = tx.MsgTx.TxOut[o].Value
						}
						j++
					}
				}
			}
		}
		if len(tx.MsgTx.TxOut) < 2 || !bytes.Equal(tx.MsgTx.TxOut[1].PkScript, pk) {
			break // no new head: the node is closed
		}
		head = wire.OutPoint{Hash: txid, Index: 1}
		r.head = chain.UTXO{OutPoint: head, Value: tx.MsgTx.TxOut[1].Value, PkScript: pk, Height: tx.Height}
		r.hasHead = true
	}
	return r, nil
}

// changesContent reports whether a commit body sets or edits content.
func changesContent(b node.Body) bool {
	for _, op := range b.Ops {
		switch op.Code {
		case node.OpData, node.OpBlob, node.OpPatch, node.OpTruncate:
			return true
		}
	}
	return false
}

// decodeCommit opens a commit's body; anything else (a foreign message, a
// ciphertext that does not open under this node's key) is not a body.
func (t *Tree) decodeCommit(keys node.Keys, tx *chain.Tx) (node.Body, bool) {
	if len(tx.MsgTx.TxOut) == 0 {
		return node.Body{}, false
	}
	m, err := envelope.Decode(tx.MsgTx.TxOut[0].PkScript)
	if err != nil || m.Type != envelope.TypeNodeCommit || len(m.Fields) != 1 {
		return node.Body{}, false
	}
	b, err := node.OpenBody(keys, m.Fields[0])
	if err != nil {
		t.log.Warn("chainfs: a commit does not open with the node's key", "tx", tx.Hash(), "err", err)
		return node.Body{}, false
	}
	return b, true
}

// syncAll rebuilds the whole tree from the chain, breadth first, querying
// addresses in parallel. Any chain error fails the sync: an unreachable
// backend is never an empty tree.
func (t *Tree) syncAll(ctx context.Context) error {
	level := []*Node{t.root}
	t.mu.Lock()
	var walk func(n *Node)
	walk = func(n *Node) {
		for _, c := range n.kids {
			if c.virtual {
				walk(c)
			} else {
				level = append(level, c)
			}
		}
	}
	walk(t.root)
	t.mu.Unlock()
	return t.syncFrom(ctx, level)
}

// syncFrom reads nodes and everything below them from the chain.
func (t *Tree) syncFrom(ctx context.Context, level []*Node) error {
	found, done := len(level), 0
	for len(level) > 0 {
		results := make([]*replayed, len(level))
		errs := make([]error, len(level))
		var wg sync.WaitGroup
		sem := make(chan struct{}, syncWorkers)
		for i, n := range level {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				results[i], errs[i] = t.fetchNode(ctx, n)
			}(i)
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("chainfs: sync: %w", err)
		}
		var next []*Node
		t.mu.Lock()
		for i, n := range level {
			t.installReplay(n, results[i])
			for _, e := range t.sortedEntries(n) {
				if e.Image {
					continue // read from its image when it is looked up
				}
				c, err := t.childFor(n, e)
				if err != nil {
					t.log.Warn("chainfs: unreadable entry", "dir", n.path(), "name", e.Name, "err", err)
					continue
				}
				if v, ok := results[i].childGenesis[e.Addr]; ok {
					c.genesisValue = v
				}
				next = append(next, c)
			}
		}
		t.lastSync = t.cfg.Now()
		t.mu.Unlock()
		done += len(level)
		found += len(next)
		if t.cfg.Progress != nil {
			t.cfg.Progress(done, found)
		}
		level = next
	}
	return nil
}

// fetchNode reads a node from the chain and, for a folder with an image,
// the image (its own, or the image folder it is part of: sub), whose
// entries the folder's state then shows. An image that cannot be read
// leaves the folder empty, with a warning, rather than failing the sync.
func (t *Tree) fetchNode(ctx context.Context, n *Node) (*replayed, error) {
	t.mu.Lock()
	keys, genesis, base, lazy, cur := n.keys, n.genesis, t.baseOf(n), n.imgFile, n.imgDir
	var d *imgDir
	if n.imgOf != nil {
		d = cur // a folder inside an image
	}
	t.mu.Unlock()
	r, err := t.fetch(ctx, keys, base, genesis, lazy)
	if err != nil {
		return nil, err
	}
	if raw := r.state.Image; raw != nil {
		if cur != nil && bytes.Equal(cur.mount, raw) {
			d = cur
		} else if d, err = t.loadImage(ctx, keys, raw); err != nil {
			t.log.Warn("chainfs: a folder's image cannot be read; it shows empty until it can", "addr", fmt.Sprintf("%x", keys.Addr[:6]), "err", err)
			d = nil
			r.missingBlob = true // read again (retryLoop)
		}
		r.img = d
	}
	inject(r.state, d, keys)
	return r, nil
}

// installReplay installs what fetchNode read (t.mu held).
func (t *Tree) installReplay(n *Node, r *replayed) {
	t.applyReplay(n, r)
	if r.img != nil {
		n.imgDir = r.img
	} else if r.state.Image == nil && n.imgOf == nil {
		n.imgDir = nil
	}
	if !r.lazy && n.local == n.committed {
		n.imgFile = nil
	}
}

// applyReplay installs a node's chain state, merging local changes made
// on top of the previous one (t.mu held). A replay that only knows a
// prefix of what we know (it was read before our latest commit landed) is
// not news. Our own commits missing from the chain's history (another
// writer's commit won after all, as when two btcd nodes each accepted one)
// are treated as local changes again, so they are merged, not lost.
func (t *Tree) applyReplay(n *Node, r *replayed) {
	k := 0
	for k < len(n.revs) && k < len(r.revs) && n.revs[k].txid == r.revs[k].txid {
		n.revs[k].height, n.revs[k].time = r.revs[k].height, r.revs[k].time
		k++
	}
	refill := n.unavailable && k == len(n.revs) // the same history, read again for what was missing
	if k == len(r.revs) && len(n.revs) > 0 && !refill {
		return // stale or identical
	}
	base := n.committed
	lost := k < len(n.revs)
	if lost {
		base = t.stateAt(n, k)
		t.log.Warn("chainfs: this device's commits were superseded by another writer; merging them again", "path", n.path(), "lost", len(n.revs)-k)
	}
	oldCommitted := n.committed
	n.committed = r.state
	n.revs = r.revs
	n.head, n.hasHead = r.head, r.hasHead
	n.unavailable = r.missingBlob
	_, dirty := t.dirty[n]
	if lost && n.local == oldCommitted {
		n.local = oldCommitted.Clone()
		dirty = true
	}
	if !dirty || n.local == base {
		n.local = n.committed
		n.ownContent = false
		return
	}
	t.dirty[n] = struct{}{}
	t.merge(n, base, r.state)
}

// merge rebases n's local changes (made against base) onto remote, the new
// chain state (t.mu held). Nothing is silently lost: where both sides
// changed a file's content, the local version becomes a conflict copy.
func (t *Tree) merge(n *Node, base, remote *node.State) {
	local := n.local
	merged := remote.Clone()
	if local.Mode != base.Mode || local.Mtime != base.Mtime {
		merged.Mode, merged.Mtime = local.Mode, local.Mtime
	}
	for k, v := range local.Xattrs {
		if bv, ok := base.Xattrs[k]; !ok || !bytes.Equal(bv, v) {
			merged.Xattrs[k] = v
		}
	}
	for k := range base.Xattrs {
		if _, ok := local.Xattrs[k]; !ok {
			delete(merged.Xattrs, k)
		}
	}
	switch local.Kind {
	case node.KindFile:
		localChanged := !bytes.Equal(local.Content, base.Content)
		remoteChanged := !bytes.Equal(remote.Content, base.Content)
		switch {
		case localChanged && remoteChanged && !bytes.Equal(local.Content, remote.Content):
			t.conflictCopy(n, local)
		case localChanged:
			merged.Content = local.Content
		}
	case node.KindSymlink:
		if local.Target != base.Target {
			merged.Target = local.Target
		}
	case node.KindDir:
		if !bytes.Equal(local.Image, base.Image) {
			// A mount or unmount made here wins: it replaces the folder.
			merged.Image, merged.ImageNext, merged.Hidden = local.Image, local.ImageNext, local.Hidden
			merged.Entries = local.Entries
			merged.NextIndex = max(merged.NextIndex, local.NextIndex)
			break
		}
		for i := range local.Hidden {
			if !base.Hidden[i] {
				if merged.Hidden == nil {
					merged.Hidden = map[uint32]bool{}
				}
				merged.Hidden[i] = true
			}
		}
		t.mergeEntries(n, base, local, merged)
	}
	n.local = merged
	n.ownContent = false
	n.ver++
}

// mergeEntries replays local entry changes on top of the merged state.
// Local children not yet on chain whose index the remote side used are
// given fresh indexes (both devices derive the same keys for an index).
func (t *Tree) mergeEntries(n *Node, base, local, merged *node.State) {
	remoteNext := merged.NextIndex
	if local.NextIndex > merged.NextIndex {
		merged.NextIndex = local.NextIndex
	}
	for name, e := range base.Entries {
		if le, ok := local.Entries[name]; !ok || le.Addr != e.Addr {
			if me, ok := merged.Entries[name]; ok && me.Addr == e.Addr {
				delete(merged.Entries, name)
			}
		}
	}
	n.local = merged // rekey allocates from the merged state
	for name, e := range local.Entries {
		if be, ok := base.Entries[name]; ok && be.Addr == e.Addr && be.Image == e.Image {
			continue // unchanged locally
		}
		if me, ok := merged.Entries[name]; ok && me.Addr == e.Addr && me.Image == e.Image {
			continue // already there: our own commit, replayed from the journal
		}
		if e.Native && e.Index >= base.NextIndex && e.Index < remoteNext {
			if c, ok := t.byAddr[e.Addr]; ok && c.parent == n {
				e = t.rekey(n, c, name)
			}
		}
		if me, ok := merged.Entries[name]; ok && me.Addr != e.Addr {
			name = conflictName(name, t.cfg.Device, t.cfg.Now())
			e.Name = name
			if c, ok := t.byAddr[e.Addr]; ok {
				c.name = name
			}
		}
		merged.Entries[name] = e
	}
}

// conflictCopy saves a losing local version as a new file next to n
// (t.mu held).
func (t *Tree) conflictCopy(n *Node, local *node.State) {
	p := n.parent
	if p == nil {
		return
	}
	name := conflictName(n.name, t.cfg.Device, t.cfg.Now())
	for i := 2; ; i++ {
		if _, exists := p.local.Entries[name]; !exists {
			break
		}
		name = conflictName(n.name, fmt.Sprintf("%s %d", t.cfg.Device, i), t.cfg.Now())
	}
	c, err := t.allocate(p, name, node.KindFile)
	if err != nil {
		t.log.Error("chainfs: cannot save a conflict copy", "path", n.path(), "err", err)
		return
	}
	s := c.mutable()
	s.Content, s.Mode, s.Mtime = local.Content, local.Mode, local.Mtime
	t.touch(c, false)
	t.touch(p, true)
	t.log.Warn("chainfs: concurrent edits: kept this device's version as a conflict copy", "file", n.path(), "copy", c.path())
}

// conflictName is "report (conflict from laptop 2026-11-26 1412).txt".
func conflictName(name, device string, now time.Time) string {
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if stem == "" {
		stem, ext = name, ""
	}
	n := fmt.Sprintf("%s (conflict from %s %s)%s", stem, device, now.Format("2006-01-02 150405"), ext)
	if len(n) > node.MaxName {
		n = n[len(n)-node.MaxName:]
	}
	return n
}

// syncLoop follows the chain: it re-reads nodes that other devices or
// users changed (as notifications show), and nodes whose commit met a
// conflict.
func (t *Tree) syncLoop() {
	defer t.done.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := t.backend.Subscribe(ctx)
	pending := map[*Node]struct{}{}
	var timer <-chan time.Time
	for {
		select {
		case <-t.stop:
			return
		case ev, ok := <-events:
			if !ok {
				// The backend closed the subscription: resubscribe after
				// a pause (it may be reconnecting).
				select {
				case <-t.stop:
					return
				case <-time.After(time.Second):
				}
				events = t.backend.Subscribe(ctx)
				continue
			}
			for _, n := range t.touched(ev) {
				pending[n] = struct{}{}
			}
		case n := <-t.resync:
			pending[n] = struct{}{}
		case <-timer:
			timer = nil
			t.resyncNodes(ctx, pending)
			pending = map[*Node]struct{}{}
			continue
		}
		if len(pending) > 0 && timer == nil {
			timer = time.After(100 * time.Millisecond)
		}
	}
}

// touched lists the nodes a chain event concerns, and forgets our own
// transactions once they are in a block.
func (t *Tree) touched(ev chain.Event) []*Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Node
	seen := map[*Node]bool{}
	for i := range ev.Txs {
		tx := &ev.Txs[i]
		txid := tx.Hash()
		if _, ours := t.ours[txid]; ours {
			if ev.Kind == chain.EventBlock {
				delete(t.ours, txid)
				t.j.deleteUnconfirmed(txid)
			}
			continue
		}
		check := func(script []byte) {
			if len(script) != 25 {
				return
			}
			var h [20]byte
			copy(h[:], script[3:23])
			if n, ok := t.byAddr[h]; ok && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
		for _, p := range tx.PrevOuts {
			check(p.PkScript)
		}
		for _, o := range tx.MsgTx.TxOut {
			check(o.PkScript)
		}
	}
	return out
}

// resyncNodes re-reads nodes and then any new children they gained.
func (t *Tree) resyncNodes(ctx context.Context, nodes map[*Node]struct{}) {
	queue := make([]*Node, 0, len(nodes))
	for n := range nodes {
		queue = append(queue, n)
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		t.mu.Lock()
		before := map[[20]byte]bool{}
		for _, e := range n.committed.Entries {
			before[e.Addr] = true
		}
		t.mu.Unlock()
		r, err := t.fetchNode(ctx, n)
		if err != nil {
			t.log.Warn("chainfs: re-read failed", "err", err)
			continue
		}
		t.mu.Lock()
		t.installReplay(n, r)
		for _, e := range n.committed.Entries {
			if e.Image {
				continue
			}
			c, err := t.childFor(n, e)
			if err != nil {
				continue
			}
			if v, ok := r.childGenesis[e.Addr]; ok {
				c.genesisValue = v
			}
			if !before[e.Addr] {
				queue = append(queue, c)
			}
		}
		t.lastSync = t.cfg.Now()
		if _, dirty := t.dirty[n]; dirty {
			select {
			case t.kick <- struct{}{}:
			default:
			}
		}
		t.mu.Unlock()
	}
}

// rebroadcast sends the journal's unconfirmed commits again, in the order
// they were made (after a crash the embedded chain's mempool is gone; a
// btcd node may have dropped them).
func (t *Tree) rebroadcast(ctx context.Context) error {
	us := t.j.unconfirmed()
	t.log.Info("chainfs: re-broadcasting journaled commits", "count", len(us))
	for _, u := range us {
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(u.raw)); err != nil {
			t.j.deleteUnconfirmed(u.txid)
			continue
		}
		err := t.backend.Broadcast(ctx, &tx)
		switch {
		case err == nil:
			t.ours[u.txid] = struct{}{}
		case errors.Is(err, chain.ErrUnavailable):
			return fmt.Errorf("chainfs: re-broadcast journaled commits: %w", err)
		default:
			// Superseded (another device won) or now invalid: the
			// journaled local state is re-committed instead.
			t.log.Warn("chainfs: a journaled commit was not accepted again", "tx", u.txid, "err", err)
			t.j.deleteUnconfirmed(u.txid)
		}
	}
	return nil
}

// RetryUnavailable re-reads the nodes whose content was in a blob this
// device could not fetch (its image servers were not known yet, say).
func (t *Tree) RetryUnavailable(ctx context.Context) {
	t.mu.Lock()
	nodes := map[*Node]struct{}{}
	for _, n := range t.byIno {
		if n.unavailable {
			nodes[n] = struct{}{}
		}
	}
	t.mu.Unlock()
	if len(nodes) > 0 {
		t.resyncNodes(ctx, nodes)
	}
}
