package chainfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// Content stored on chain is cut into steps that fit one commit; above
// chainMax it goes to a blob and only patches travel on chain.
const (
	stepMax    = 80_000
	chainMax   = 1 << 20
	maxPatches = 64
)

// urgent asks the committer to run now rather than after CommitDelay.
func (t *Tree) urgent() {
	select {
	case t.urgentCh <- struct{}{}:
	default:
	}
}

// commitLoop commits dirty nodes: CommitDelay after a change (so bursts
// coalesce into one commit per node), at once when a Sync waits, and every
// few seconds while something could not be committed.
func (t *Tree) commitLoop() {
	defer t.done.Done()
	retry := time.NewTicker(3 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.urgentCh:
		case <-retry.C:
		case <-t.kick:
			select {
			case <-time.After(t.cfg.CommitDelay):
			case <-t.urgentCh:
			case <-t.stop:
				return
			}
		}
		t.commitPending(context.Background())
	}
}

// commitPending runs passes over the dirty nodes, parents first, until a
// pass makes no progress.
func (t *Tree) commitPending(ctx context.Context) {
	for pass := 0; pass < 64; pass++ {
		t.mu.Lock()
		var todo []*Node
		for n := range t.dirty {
			todo = append(todo, n)
		}
		t.mu.Unlock()
		if len(todo) == 0 {
			return
		}
		sort.Slice(todo, func(i, j int) bool { return depth(todo[i]) < depth(todo[j]) })
		progress := false
		for _, n := range todo {
			ok, err := t.commitNode(ctx, n)
			if ok {
				progress = true
			}
			if err != nil {
				t.log.Warn("chainfs: commit failed", "path", t.pathOf(n), "err", err)
			}
		}
		if !progress {
			return
		}
	}
}

func depth(n *Node) int {
	d := 0
	for c := n.parent; c != nil; c = c.parent {
		d++
	}
	return d
}

func (t *Tree) pathOf(n *Node) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return n.path()
}

// commitNode commits n's local changes: one commit, or several when they
// do not fit one. It reports whether it committed anything.
func (t *Tree) commitNode(ctx context.Context, n *Node) (bool, error) {
	t.mu.Lock()
	if _, dirty := t.dirty[n]; !dirty || n.committing || n.unflushed {
		t.mu.Unlock()
		return false, nil
	}
	if n != t.root && n.parent == nil {
		delete(t.dirty, n) // removed meanwhile
		t.notify(n, nil)
		t.mu.Unlock()
		return false, nil
	}
	if n.genesis.IsZero() {
		t.mu.Unlock()
		return false, nil // its parent's commit comes first
	}
	ver := n.ver
	base := n.committed
	snap := n.local.Clone()
	n.ownContent = false // later writes copy: snap may share the buffer
	first := len(n.revs) == 0
	keys := n.keys
	head, hasHead := n.head, n.hasHead
	if !hasHead {
		head = chain.UTXO{OutPoint: wire.OutPoint{Hash: n.genesis.TxID, Index: n.genesis.Index}, Value: n.genesisValue, Height: -1}
	}
	var newChildren []*Node
	for _, e := range snap.Entries {
		if e.Native && e.Index >= base.NextIndex {
			if c, ok := t.byAddr[e.Addr]; ok {
				newChildren = append(newChildren, c)
			}
		}
	}
	n.committing = true
	t.mu.Unlock()

	committed, err := t.commitState(ctx, n, keys, base, snap, first, head, ver)
	t.mu.Lock()
	defer t.mu.Unlock()
	n.committing = false
	if err != nil {
		switch {
		case errors.Is(err, wallet.ErrInsufficientFunds):
			if t.noFunds == nil {
				t.log.Error("chainfs: the wallet cannot pay for commits; writes fail with ENOSPC until it is funded (changes stay in the journal)", "err", err)
			}
			t.noFunds = err
			err = fmt.Errorf("%w: %w", err, syscall.ENOSPC)
		case errors.Is(err, chain.ErrConflict):
			// Another writer committed first: re-read the node, merge,
			// and try again on the next pass.
			select {
			case t.resync <- n:
			default:
			}
		}
		t.notifyErr(n, ver, err)
		return false, err
	}
	t.noFunds = nil
	n.committedVer = ver
	if !committed {
		if n.ver == ver {
			delete(t.dirty, n)
			n.local = n.committed
			t.notify(n, nil)
		}
		return false, nil
	}
	if n.ver == ver {
		delete(t.dirty, n)
		n.local = n.committed
		n.ownContent = false
		t.j.deleteLocal(n.keys.Addr)
	}
	t.notify(n, nil)
	return true, nil
}

// notify wakes the Sync calls waiting for versions now committed (t.mu held).
func (t *Tree) notify(n *Node, err error) {
	_, dirty := t.dirty[n]
	keep := n.waiters[:0]
	for _, w := range n.waiters {
		if !dirty || w.ver <= n.committedVer {
			w.ch <- err
			continue
		}
		keep = append(keep, w)
	}
	n.waiters = keep
}

func (t *Tree) notifyErr(n *Node, ver uint64, err error) {
	for _, w := range n.waiters {
		w.ch <- err
	}
	n.waiters = nil
}

// commitState publishes the ops that turn base into snap. It runs without
// t.mu except to record each commit as it lands. It returns whether any
// commit was made.
func (t *Tree) commitState(ctx context.Context, n *Node, keys node.Keys, base, snap *node.State, first bool, head chain.UTXO, ver uint64) (bool, error) {
	bodies, blobs, err := t.plan(ctx, n, base, snap, first, ver)
	if err != nil {
		return false, err
	}
	if len(bodies) == 0 {
		return false, nil
	}
	key, err := t.signerOf(n, keys)
	if err != nil {
		return false, err
	}
	if head.Value == 0 {
		if head.Value, err = t.outputValue(ctx, head.OutPoint); err != nil {
			return false, err
		}
	}
	head.PkScript = key.PkScript()
	state := base
	for _, b := range bodies {
		sealed, err := node.SealBody(keys, b)
		if err != nil {
			return false, err
		}
		script, err := envelope.Encode(envelope.TypeNodeCommit, sealed)
		if err != nil {
			return false, err
		}
		var pays []*wire.TxOut
		var newAddrs [][20]byte
		for _, op := range b.Ops {
			if op.Code == node.OpEntryNew || op.Code == node.OpEntryOver {
				pk := p2pkh(op.Entry.Addr)
				pays = append(pays, wire.NewTxOut(t.cfg.ChildFunding, pk))
				newAddrs = append(newAddrs, op.Entry.Addr)
			}
		}
		tx, newHead, err := t.wallet.Commit(ctx, key, []chain.UTXO{head}, script, pays, 10*t.cfg.ChildFunding)
		if err != nil {
			return state != base, err
		}
		txid := tx.TxHash()
		next := state.Clone()
		if err := next.Apply(b, txid, func(ref blob.Ref) ([]byte, error) {
			if c, ok := blobs[ref.Hash]; ok {
				return c, nil
			}
			return nil, fmt.Errorf("blob %x not staged", ref.Hash[:8])
		}); err != nil {
			return state != base, fmt.Errorf("apply own commit: %w", err)
		}
		if next.Image != nil && !bytes.Equal(next.Image, state.Image) {
			// OpImage emptied the folder: its image shows again.
			t.mu.Lock()
			d := n.imgDir
			t.mu.Unlock()
			if d != nil && bytes.Equal(d.mount, next.Image) {
				inject(next, d, keys)
			}
		}
		t.log.Debug("chainfs: committed", "addr", fmt.Sprintf("%x", keys.Addr[:6]), "tx", txid, "ops", len(b.Ops))
		raw := new(bytes.Buffer)
		_ = tx.Serialize(raw)
		t.mu.Lock()
		t.ours[txid] = struct{}{}
		t.j.putUnconfirmed(txid, raw.Bytes())
		n.committed = next
		n.head, n.hasHead = newHead, true
		n.revs = append(n.revs, rev{txid: txid, height: -1, time: t.cfg.Now(), body: b, size: int64(len(next.Content))})
		for j, a := range newAddrs {
			if c, ok := t.byAddr[a]; ok {
				c.genesis = node.OutPoint{TxID: txid, Index: uint32(2 + j)}
				c.genesisValue = t.cfg.ChildFunding
				c.head = chain.UTXO{OutPoint: wire.OutPoint{Hash: txid, Index: uint32(2 + j)}, Value: t.cfg.ChildFunding, PkScript: p2pkh(a), Height: -1}
				c.hasHead = true
				// The entry in our own local state learns its genesis too.
				if pe, ok := n.local.Entries[c.name]; ok && pe.Addr == a {
					pe.Genesis = c.genesis
					n.local.Entries[c.name] = pe
				}
			}
		}
		t.mu.Unlock()
		state = next
		head = newHead
	}
	return true, nil
}

// plan turns the difference between base and snap into commit bodies.
// Large new content is written to a blob first; blobs maps the staged
// blobs to their plaintext for applying our own commits.
func (t *Tree) plan(ctx context.Context, n *Node, base, snap *node.State, first bool, ver uint64) ([]node.Body, map[[32]byte][]byte, error) {
	var meta []node.Op
	if first {
		meta = append(meta, node.Op{Code: node.OpKind, Kind: snap.Kind})
	}
	if first || snap.Mode != base.Mode || snap.Mtime != base.Mtime {
		meta = append(meta, node.Op{Code: node.OpAttr, Mode: snap.Mode, Mtime: snap.Mtime})
	}
	if snap.Kind == node.KindSymlink && snap.Target != base.Target {
		meta = append(meta, node.Op{Code: node.OpSymlink, Data: []byte(snap.Target)})
	}
	for k, v := range snap.Xattrs {
		if ov, ok := base.Xattrs[k]; !ok || !bytes.Equal(ov, v) {
			meta = append(meta, node.Op{Code: node.OpXattrSet, Name: k, Data: v})
		}
	}
	for k := range base.Xattrs {
		if _, ok := snap.Xattrs[k]; !ok {
			meta = append(meta, node.Op{Code: node.OpXattrDel, Name: k})
		}
	}
	if !bytes.Equal(snap.Boot, base.Boot) && len(snap.Boot) > 0 {
		meta = append(meta, node.Op{Code: node.OpBoot, Data: snap.Boot})
	}
	sort.SliceStable(meta, func(i, j int) bool { return meta[i].Code < meta[j].Code })

	var ops []node.Op
	if snap.Kind == node.KindDir {
		eb := base
		if !bytes.Equal(snap.Image, base.Image) {
			// OpImage leads: it empties the folder, so the entry changes
			// are against the new image alone.
			ops = append(ops, node.Op{Code: node.OpImage, Index: snap.ImageNext, Data: snap.Image})
			eb = base.Clone()
			eb.Image, eb.ImageNext, eb.Hidden = snap.Image, snap.ImageNext, nil
			eb.NextIndex = max(base.NextIndex, snap.ImageNext)
			eb.Entries = map[string]node.Entry{}
			for name, e := range snap.Entries {
				if e.Image {
					eb.Entries[name] = e
				}
			}
		}
		ops = append(ops, entryOps(eb, snap)...)
	}
	var steps [][]node.Op
	blobs := map[[32]byte][]byte{}
	if snap.Kind == node.KindFile && !bytes.Equal(base.Content, snap.Content) {
		var err error
		steps, err = t.contentSteps(ctx, n, base, snap, blobs, ver)
		if err != nil {
			return nil, nil, err
		}
	}
	// Pack: meta ops lead the first body; entry ops fill bodies up to
	// maxBody; content steps are one body each.
	var bodies []node.Body
	cur := node.Body{Ops: meta}
	size := len(cur.Marshal())
	for _, op := range ops {
		s := len(node.Body{Ops: []node.Op{op}}.Marshal())
		if size+s > maxBody && len(cur.Ops) > 0 {
			bodies = append(bodies, cur)
			cur, size = node.Body{}, 1
		}
		cur.Ops = append(cur.Ops, op)
		size += s
	}
	for i, st := range steps {
		if i == 0 && len(cur.Ops) > 0 && size+len(node.Body{Ops: st}.Marshal()) <= maxBody {
			cur.Ops = append(cur.Ops, st...)
			continue
		}
		if len(cur.Ops) > 0 {
			bodies = append(bodies, cur)
		}
		cur = node.Body{Ops: st}
	}
	if len(cur.Ops) > 0 {
		bodies = append(bodies, cur)
	}
	return bodies, blobs, nil
}

// entryOps lists the entry changes: deletions first (a rename may reuse a
// name), then hidden image entries, new children and image entries turned
// overlay nodes in index order, then links. Entries shown from an image
// are never committed themselves.
func entryOps(base, snap *node.State) []node.Op {
	var dels, hides, news, links []node.Op
	shown := map[uint32]bool{}    // native indexes snap shows
	overlaid := map[uint32]bool{} // image indexes base has an overlay node for
	for _, e := range snap.Entries {
		if e.Native {
			shown[e.Index] = true
		}
	}
	for _, e := range base.Entries {
		if e.Native && !e.Image && e.Index < base.ImageNext {
			overlaid[e.Index] = true
		}
	}
	for name, e := range base.Entries {
		if le, ok := snap.Entries[name]; ok && le.Addr == e.Addr {
			continue
		}
		if !e.Image {
			dels = append(dels, node.Op{Code: node.OpEntryDel, Name: name})
		}
		if e.Native && e.Index < base.ImageNext && !shown[e.Index] {
			hides = append(hides, node.Op{Code: node.OpHide, Index: e.Index})
		}
	}
	for name, e := range snap.Entries {
		if e.Image {
			continue
		}
		if be, ok := base.Entries[name]; ok && be.Addr == e.Addr && !be.Image {
			continue
		}
		switch {
		case e.Native && e.Index >= base.NextIndex:
			news = append(news, node.Op{Code: node.OpEntryNew, Entry: e})
		case e.Native && e.Index < base.ImageNext && !overlaid[e.Index]:
			news = append(news, node.Op{Code: node.OpEntryOver, Entry: e})
		default:
			links = append(links, node.Op{Code: node.OpEntryLink, Entry: e})
		}
	}
	sort.Slice(dels, func(i, j int) bool { return dels[i].Name < dels[j].Name })
	sort.Slice(hides, func(i, j int) bool { return hides[i].Index < hides[j].Index })
	sort.Slice(news, func(i, j int) bool { return news[i].Entry.Index < news[j].Entry.Index })
	sort.Slice(links, func(i, j int) bool { return links[i].Entry.Name < links[j].Entry.Name })
	return append(append(append(dels, hides...), news...), links...)
}

// contentSteps chooses how new content reaches the chain: a patch when it
// is small, else the whole content — inline in steps of stepMax when it is
// at most chainMax, else in a blob.
func (t *Tree) contentSteps(ctx context.Context, n *Node, base, snap *node.State, blobs map[[32]byte][]byte, ver uint64) ([][]node.Op, error) {
	old, cur := base.Content, snap.Content
	if worthDiff(old, cur) {
		d := delta.Diff(old, cur)
		if len(d) <= stepMax && (len(cur) <= chainMax || t.patchesSinceBase(n) < maxPatches) && len(d) < len(cur) {
			return [][]node.Op{{{Code: node.OpPatch, Data: d}}}, nil
		}
	}
	if len(cur) > chainMax {
		if t.cfg.Blobs == nil {
			return nil, fmt.Errorf("file of %d bytes needs a blob store: %w", len(cur), syscall.EFBIG)
		}
		// Usually staged already when the journal took this version.
		ref, err := t.stageContent(ctx, n, ver, cur)
		if err != nil {
			return nil, err
		}
		blobs[ref.Hash] = cur
		b, err := ref.MarshalBinary()
		if err != nil {
			return nil, err
		}
		return [][]node.Op{{{Code: node.OpBlob, Data: b}}}, nil
	}
	// Inline: the first step replaces the content, later steps append.
	var steps [][]node.Op
	first := min(len(cur), stepMax)
	steps = append(steps, []node.Op{{Code: node.OpData, Data: cur[:first]}})
	for off := first; off < len(cur); off += stepMax {
		end := min(off+stepMax, len(cur))
		steps = append(steps, []node.Op{{Code: node.OpPatch, Data: delta.Diff(cur[:off], cur[:end])}})
	}
	return steps, nil
}

// patchesSinceBase counts patches since the last whole-content commit, so
// a long chain of patches over a blob is periodically rebased.
func (t *Tree) patchesSinceBase(n *Node) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := 0
	for i := len(n.revs) - 1; i >= 0; i-- {
		for _, op := range n.revs[i].body.Ops {
			switch op.Code {
			case node.OpData, node.OpBlob:
				return c
			case node.OpPatch:
				c++
			}
		}
	}
	return c
}

// signerOf returns n's signing key, made once per node (deriving the public
// key is an elliptic-curve multiplication).
func (t *Tree) signerOf(n *Node, k node.Keys) (*wallet.Key, error) {
	t.mu.Lock()
	s := n.signer
	t.mu.Unlock()
	if s != nil && s.Address().ScriptAddress() != nil && [20]byte(s.Address().ScriptAddress()) == k.Addr {
		return s, nil
	}
	s, err := t.nodeKey(k)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	n.signer = s
	t.mu.Unlock()
	return s, nil
}

// nodeKey is a node's write key as a signing key.
func (t *Tree) nodeKey(k node.Keys) (*wallet.Key, error) {
	priv, err := k.WritePriv()
	if err != nil {
		return nil, errnoOf(syscall.EROFS, "%v", err)
	}
	return wallet.NewKey(priv, t.backend.Params())
}

// outputValue looks up an output's amount (a genesis we did not create).
func (t *Tree) outputValue(ctx context.Context, op wire.OutPoint) (int64, error) {
	tx, err := t.backend.GetTx(ctx, op.Hash)
	if err != nil {
		return 0, fmt.Errorf("genesis %v: %w", op, err)
	}
	if int(op.Index) >= len(tx.MsgTx.TxOut) {
		return 0, fmt.Errorf("genesis %v: no such output", op)
	}
	return tx.MsgTx.TxOut[op.Index].Value, nil
}

func p2pkh(h [20]byte) []byte {
	s := make([]byte, 0, 25)
	s = append(s, 0x76, 0xa9, 0x14)
	s = append(s, h[:]...)
	return append(s, 0x88, 0xac)
}

// worthDiff guesses, at memory speed, whether a delta from old to cur can
// be small: a long common prefix and suffix (an insert, a truncation, an
// append), or most 64 KiB blocks unchanged in place (an edit). Diffing
// unrelated large contents costs seconds and is always thrown away.
func worthDiff(old, cur []byte) bool {
	if len(old) == 0 || len(cur) == 0 {
		return false
	}
	if len(cur) <= 1<<20 {
		return true // cheap enough to just try
	}
	const block = 64 << 10
	p := 0
	for p < len(old) && p < len(cur) {
		n := min(block, len(old)-p, len(cur)-p)
		if !bytes.Equal(old[p:p+n], cur[p:p+n]) {
			break
		}
		p += n
	}
	q := 0
	for q < len(old)-p && q < len(cur)-p {
		n := min(block, len(old)-p-q, len(cur)-p-q)
		if !bytes.Equal(old[len(old)-q-n:len(old)-q], cur[len(cur)-q-n:len(cur)-q]) {
			break
		}
		q += n
	}
	if 2*(p+q) >= len(cur) {
		return true
	}
	same, blocks := 0, 0
	for off := 0; off+block <= len(cur) && off+block <= len(old); off += block {
		blocks++
		if bytes.Equal(old[off:off+block], cur[off:off+block]) {
			same++
		}
	}
	return blocks > 0 && 2*same >= blocks
}
