package chainfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/keyring"
)

// The journal is a Badger database, encrypted at rest, holding what is not
// on chain yet: local changes of nodes (written on close and fsync), and
// the raw transactions of commits broadcast but not yet in a block. It is
// the write-ahead log that makes a crash lose nothing flushed.
type journal struct {
	db  *badger.DB
	log *slog.Logger

	mu  sync.Mutex
	seq uint64
	utx map[[32]byte]uint64
}

var (
	prefLocal = []byte("L/")
	prefUTX   = []byte("U/")
)

// localRecord is a node's local state as journaled.
type localRecord struct {
	Addr, Parent [20]byte
	Depth        int
	Name         string
	Kind         node.Kind
	Mode         uint32
	Mtime        int64
	Target       string
	Xattrs       map[string][]byte
	Entries      []node.Entry
	NextIndex    uint32
	// A folder's image (node.State: Image, ImageNext, Hidden).
	Image     []byte
	ImageNext uint32
	Hidden    map[uint32]bool
	Content   []byte
	// For content over chainMax (Badger values stay small): ContentDelta
	// turns the committed content at BaseRev into it, when that is small;
	// else ContentBlob names an encrypted blob in the blob store holding it.
	ContentDelta []byte
	ContentBlob  []byte
	// BaseRev and BaseTx say which chain state the change was made on,
	// so a restore merges with what others committed since.
	BaseRev int
	BaseTx  [32]byte
}

type utxRecord struct {
	seq  uint64
	txid [32]byte
	raw  []byte
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(string, ...any)        {}
func (b badgerLogger) Debugf(string, ...any)       {}

func openJournal(dir string, key keyring.Key, log *slog.Logger) (*journal, error) {
	if dir == "" {
		return nil, errors.New("chainfs: no cache directory")
	}
	opts := badger.DefaultOptions(dir).
		WithEncryptionKey(key[:]).
		WithIndexCacheSize(16 << 20).
		WithLogger(badgerLogger{log}).
		WithNumVersionsToKeep(1).
		WithValueLogFileSize(256 << 20).
		WithMemTableSize(16 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("chainfs: open cache %s (wrong key for this data dir?): %w", dir, err)
	}
	j := &journal{db: db, log: log, utx: map[[32]byte]uint64{}}
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefUTX})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefUTX)+8 {
				continue
			}
			seq := binary.BigEndian.Uint64(k[len(prefUTX):])
			v, err := it.Item().ValueCopy(nil)
			if err != nil || len(v) < 32 {
				continue
			}
			var txid [32]byte
			copy(txid[:], v)
			j.utx[txid] = seq
			j.seq = max(j.seq, seq)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("chainfs: read journal: %w", err)
	}
	return j, nil
}

func (j *journal) close() error {
	return j.db.Close()
}

func localKey(addr [20]byte) []byte { return append(append([]byte{}, prefLocal...), addr[:]...) }

// journalErr keeps the first line of a Badger error: some of its errors
// dump the value they refused — plaintext content — into the message.
func journalErr(op string, err error) error {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.Index(msg, "Value:"); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return fmt.Errorf("chainfs: journal %s: %s", op, strings.TrimSpace(msg))
}

// putLocals writes records in one transaction.
func (j *journal) putLocals(rs []localRecord) error {
	if len(rs) == 0 {
		return nil
	}
	wb := j.db.NewWriteBatch()
	defer wb.Cancel()
	for _, r := range rs {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(r); err != nil {
			return fmt.Errorf("chainfs: journal: %w", err)
		}
		if err := wb.Set(localKey(r.Addr), buf.Bytes()); err != nil {
			return journalErr("write", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return journalErr("write", err)
	}
	return nil
}

func (j *journal) sync() error {
	if err := j.db.Sync(); err != nil {
		return journalErr("sync", err)
	}
	return nil
}

func (j *journal) deleteLocal(addr [20]byte) {
	if err := j.db.Update(func(txn *badger.Txn) error { return txn.Delete(localKey(addr)) }); err != nil {
		j.log.Warn("chainfs: journal delete", "err", err)
	}
}

func (j *journal) locals() ([]localRecord, error) {
	var out []localRecord
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefLocal, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var r localRecord
			if err := gob.NewDecoder(bytes.NewReader(v)).Decode(&r); err != nil {
				j.log.Warn("chainfs: skipping a corrupt journal record", "err", err)
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	sort.Slice(out, func(a, b int) bool { return out[a].Depth < out[b].Depth })
	return out, err
}

func (j *journal) putUnconfirmed(txid [32]byte, raw []byte) {
	j.mu.Lock()
	j.seq++
	seq := j.seq
	j.utx[txid] = seq
	j.mu.Unlock()
	k := binary.BigEndian.AppendUint64(append([]byte{}, prefUTX...), seq)
	v := append(append([]byte{}, txid[:]...), raw...)
	if err := j.db.Update(func(txn *badger.Txn) error { return txn.Set(k, v) }); err != nil {
		j.log.Warn("chainfs: journal unconfirmed commit", "err", err)
	}
}

func (j *journal) deleteUnconfirmed(txid [32]byte) {
	j.mu.Lock()
	seq, ok := j.utx[txid]
	delete(j.utx, txid)
	j.mu.Unlock()
	if !ok {
		return
	}
	k := binary.BigEndian.AppendUint64(append([]byte{}, prefUTX...), seq)
	if err := j.db.Update(func(txn *badger.Txn) error { return txn.Delete(k) }); err != nil {
		j.log.Warn("chainfs: journal delete", "err", err)
	}
}

func (j *journal) unconfirmed() []utxRecord {
	var out []utxRecord
	_ = j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefUTX, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			v, err := it.Item().ValueCopy(nil)
			if err != nil || len(v) < 32 || len(k) != len(prefUTX)+8 {
				continue
			}
			r := utxRecord{seq: binary.BigEndian.Uint64(k[len(prefUTX):]), raw: v[32:]}
			copy(r.txid[:], v)
			out = append(out, r)
		}
		return nil
	})
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

// journalLocked writes n's local state and its dirty ancestors' (whose
// entries make it reachable) to the journal (t.mu held).
func (t *Tree) journalLocked(n *Node, sync bool) error {
	var recs []localRecord
	for c := n; c != nil; c = c.parent {
		if _, dirty := t.dirty[c]; !dirty || c.journaledVer == c.ver {
			continue
		}
		r, err := t.record(c)
		if err != nil {
			return err
		}
		recs = append(recs, r)
		c.journaledVer = c.ver
		delete(t.jpending, c)
	}
	if err := t.j.putLocals(recs); err != nil {
		return err
	}
	if sync {
		return t.j.sync()
	}
	return nil
}

// journalDelay is how long a closed file's change waits to be journaled
// with others.
const journalDelay = 100 * time.Millisecond

// journalLoop writes the records of nodes closed since its last round.
func (t *Tree) journalLoop() {
	defer t.done.Done()
	tick := time.NewTicker(journalDelay)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		t.journalPending()
	}
}

// journalPending writes the records of the nodes closed since the last
// round.
func (t *Tree) journalPending() {
	t.mu.Lock()
	pending := make([]*Node, 0, len(t.jpending))
	for c := range t.jpending {
		delete(t.jpending, c)
		// A file written again since it was closed is journaled at its
		// next close or fsync: its content now is neither what was
		// closed nor final, and encrypting it would be wasted.
		if !c.unflushed {
			pending = append(pending, c)
		}
	}
	t.mu.Unlock()
	// Large files are encrypted into blobs first, without the lock, so
	// the filesystem stays usable meanwhile.
	for _, c := range pending {
		t.prestage(context.Background(), c)
	}
	t.mu.Lock()
	var recs []localRecord
	for _, c := range pending {
		if _, dirty := t.dirty[c]; !dirty || c.journaledVer == c.ver || c.unflushed || (c.parent == nil && c != t.root) {
			continue
		}
		r, err := t.record(c)
		if err != nil {
			t.log.Warn("chainfs: journal", "path", c.path(), "err", err)
			continue
		}
		recs = append(recs, r)
		c.journaledVer = c.ver
	}
	t.mu.Unlock()
	if err := t.j.putLocals(recs); err != nil {
		t.log.Warn("chainfs: journal", "err", err)
	}
}

func (t *Tree) record(n *Node) (localRecord, error) {
	s := n.local
	r := localRecord{Addr: n.keys.Addr, Depth: depth(n), Name: n.name, Kind: s.Kind, Mode: s.Mode, Mtime: s.Mtime,
		Target: s.Target, Xattrs: s.Xattrs, NextIndex: s.NextIndex, Content: s.Content, BaseRev: len(n.revs),
		Image: s.Image, ImageNext: s.ImageNext, Hidden: s.Hidden}
	if n.parent != nil {
		r.Parent = n.parent.keys.Addr
	}
	if len(n.revs) > 0 {
		r.BaseTx = n.revs[len(n.revs)-1].txid
	}
	for _, e := range s.Entries {
		r.Entries = append(r.Entries, e)
	}
	if len(s.Content) <= chainMax {
		return r, nil
	}
	if worthDiff(n.committed.Content, s.Content) {
		if d := delta.Diff(n.committed.Content, s.Content); len(d) <= chainMax {
			r.Content, r.ContentDelta = nil, d
			return r, nil
		}
	}
	if t.cfg.Blobs != nil {
		ref, err := t.stage(n)
		if err != nil {
			return r, err
		}
		b, err := ref.MarshalBinary()
		if err != nil {
			return r, err
		}
		r.Content, r.ContentBlob = nil, b
	}
	return r, nil
}

// stage returns a blob holding a large file's current content (t.mu
// held). The journal and the commit loop normally stage a version before
// they get here (stageContent, without the lock); this is the fallback for
// a version written in between.
func (t *Tree) stage(n *Node) (blob.Ref, error) {
	if n.staged != nil && n.stagedVer == n.ver {
		return *n.staged, nil
	}
	ref, err := t.putBlob(context.Background(), n.local.Content)
	if err != nil {
		return blob.Ref{}, fmt.Errorf("chainfs: stage %s: %w", n.path(), err)
	}
	n.staged, n.stagedVer = &ref, n.ver
	return ref, nil
}

// stageCall is one encryption of a version of a file's content into a
// blob; others wanting the same version wait for it.
type stageCall struct {
	ver  uint64
	done chan struct{}
	ref  blob.Ref
	err  error
}

// prestage stages n's current content if it is large and would go to a
// blob, without holding t.mu while it encrypts (t.mu not held).
func (t *Tree) prestage(ctx context.Context, n *Node) {
	t.mu.Lock()
	if t.cfg.Blobs == nil || n.local == nil || len(n.local.Content) <= chainMax ||
		(n.staged != nil && n.stagedVer == n.ver) || worthDiff(n.committed.Content, n.local.Content) {
		t.mu.Unlock()
		return
	}
	ver, content := n.ver, n.local.Content
	n.ownContent = false // later writes copy: content is shared
	t.mu.Unlock()
	if _, err := t.stageContent(ctx, n, ver, content); err != nil {
		t.log.Warn("chainfs: staging a large file", "err", err)
	}
}

// stageContent makes sure a blob holds version ver of n's content,
// encrypting each version once however many goroutines (journal, commit
// loop, fsync) want it. content must not change meanwhile: callers take
// it with ownContent cleared. Called without t.mu.
func (t *Tree) stageContent(ctx context.Context, n *Node, ver uint64, content []byte) (blob.Ref, error) {
	t.mu.Lock()
	if n.staged != nil && n.stagedVer == ver {
		ref := *n.staged
		t.mu.Unlock()
		return ref, nil
	}
	if c := n.staging; c != nil && c.ver == ver {
		t.mu.Unlock()
		select {
		case <-c.done:
			return c.ref, c.err
		case <-ctx.Done():
			return blob.Ref{}, ctx.Err()
		}
	}
	c := &stageCall{ver: ver, done: make(chan struct{})}
	n.staging = c
	t.mu.Unlock()

	c.ref, c.err = t.putBlob(ctx, content)

	t.mu.Lock()
	if n.staging == c {
		n.staging = nil
	}
	if c.err == nil && (n.staged == nil || ver >= n.stagedVer) {
		ref := c.ref
		n.staged, n.stagedVer = &ref, ver
	}
	t.mu.Unlock()
	close(c.done)
	return c.ref, c.err
}

// encryptingStore is a blob store that encrypts straight into itself
// (blob.Dir): one pass over the content, no ciphertext copy in memory and
// no second hash to verify it.
type encryptingStore interface {
	PutEncrypted(ctx context.Context, r io.Reader) (blob.Ref, error)
}

// putBlob encrypts content under a fresh key into the blob store.
func (t *Tree) putBlob(ctx context.Context, content []byte) (blob.Ref, error) {
	if es, ok := t.cfg.Blobs.(encryptingStore); ok {
		return es.PutEncrypted(ctx, bytes.NewReader(content))
	}
	enc, ref, err := blob.Encrypt(content)
	if err != nil {
		return blob.Ref{}, err
	}
	if err := t.cfg.Blobs.Put(ctx, ref.Hash, bytes.NewReader(enc), int64(len(enc))); err != nil {
		return blob.Ref{}, fmt.Errorf("store blob: %w", err)
	}
	return ref, nil
}

// restoreJournal re-applies journaled local changes after a restart,
// parents first, merging with whatever reached the chain meanwhile.
func (t *Tree) restoreJournal() error {
	recs, err := t.j.locals()
	if err != nil {
		return fmt.Errorf("chainfs: read journal: %w", err)
	}
	var remount []*Node
	t.mu.Lock()
	defer func() {
		t.mu.Unlock()
		for _, n := range remount {
			t.remount(n)
		}
	}()
	for _, r := range recs {
		n, ok := t.byAddr[r.Addr]
		if !ok {
			t.log.Warn("chainfs: a journaled change belongs to a node no longer in the tree; dropped", "name", r.Name)
			t.j.deleteLocal(r.Addr)
			continue
		}
		local := node.NewState(r.Kind)
		local.Mode, local.Mtime, local.Target, local.NextIndex, local.Content = r.Mode, r.Mtime, r.Target, r.NextIndex, r.Content
		local.Image, local.ImageNext, local.Hidden = r.Image, r.ImageNext, r.Hidden
		if r.Image != nil && (n.imgDir == nil || !bytes.Equal(n.imgDir.mount, r.Image)) {
			// A mount not yet committed: its image is read after.
			remount = append(remount, n)
		}
		if len(r.ContentDelta) > 0 {
			c, err := delta.Apply(t.stateAt(n, r.BaseRev).Content, r.ContentDelta, node.MaxFileSize)
			if err != nil {
				t.log.Error("chainfs: a journaled change no longer applies to its base; it is lost", "name", r.Name, "err", err)
				t.j.deleteLocal(r.Addr)
				continue
			}
			local.Content = c
		}
		if len(r.ContentBlob) > 0 {
			var ref blob.Ref
			err := ref.UnmarshalBinary(r.ContentBlob)
			if err == nil {
				local.Content, err = blob.Load(context.Background(), t.cfg.Blobs, ref)
			}
			if err != nil {
				t.log.Error("chainfs: a journaled large file's content is unreadable; its change is lost", "name", r.Name, "err", err)
				t.j.deleteLocal(r.Addr)
				continue
			}
		}
		if r.Xattrs != nil {
			local.Xattrs = r.Xattrs
		}
		for _, e := range r.Entries {
			local.Entries[e.Name] = e
		}
		base := n.committed
		if len(n.revs) > r.BaseRev {
			if r.BaseRev == 0 || n.revs[r.BaseRev-1].txid == r.BaseTx {
				base = t.stateAt(n, r.BaseRev)
			}
		}
		n.local = local
		n.ownContent = true
		t.dirty[n] = struct{}{}
		if base != n.committed {
			t.merge(n, base, n.committed)
		}
		n.ver++
		// Children created before the crash exist only in this entry
		// list: instantiate them so their own records find them.
		for _, e := range t.sortedEntries(n) {
			if _, err := t.childFor(n, e); err != nil {
				t.log.Warn("chainfs: journaled entry unreadable", "name", e.Name, "err", err)
			}
		}
		t.log.Info("chainfs: restored uncommitted changes from the journal", "path", n.path())
	}
	if len(recs) > 0 {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
	return nil
}
