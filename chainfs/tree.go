// Package chainfs is the chain-backed tree: a person's encrypted,
// versioned files and folders, each a node with its own address, whose
// every change is a commit transaction (docs/PROTOCOL.md, "Nodes").
//
// A Tree holds the decoded tree in memory. Users' changes apply locally at
// once and are committed in the background — coalesced per node, parents
// before children — or at once on Sync (fsync). Commits not yet on chain
// live in an encrypted Badger journal, so a crash loses nothing that was
// flushed. Other devices' commits arrive through the backend's
// notifications; concurrent edits of one file keep both versions (the
// loser as a conflict copy).
package chainfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/keyring"
)

// Config opens a Tree.
type Config struct {
	Backend chain.Backend
	Wallet  *wallet.Wallet
	// Root is "/": its keys and genesis output (from the keyring).
	RootKeys    node.Keys
	RootGenesis node.OutPoint
	// CacheDir holds the Badger journal and cache, encrypted at rest
	// under CacheKey.
	CacheDir string
	CacheKey keyring.Key
	// Blobs stores large content (a local blob directory, or image
	// servers).
	Blobs blob.Store
	// Images finds the stores of mounted images (their servers); without
	// it folders with images cannot be read.
	Images ImageStores
	// Device names this device in conflict copies ("laptop").
	Device string
	// CommitDelay is how long a change waits to be coalesced with the
	// next before it is committed (default 200 ms).
	CommitDelay time.Duration
	// ChildFunding is what a directory's commit gives each new child's
	// genesis output (default 20,000 sat).
	ChildFunding int64
	// InlineMax is the largest content stored inline in a commit; above
	// it content goes to a blob (default 32 KiB).
	InlineMax int
	// Roots are other people's nodes this tree shows (shares, published
	// folders), each under a read-only virtual path such as
	// shared/<from>/<name>.
	Roots []Root
	// Progress, if set, is told how many nodes a full sync has found and
	// finished.
	Progress func(done, found int)
	// RetryInterval is how often nodes whose content or image could not
	// be fetched (image servers down or unknown) are read again (default
	// 30 s; negative: never).
	RetryInterval time.Duration
	Logger        *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Attr describes a node.
type Attr struct {
	Ino   uint64
	Kind  node.Kind
	Mode  uint32
	Size  int64
	Mtime time.Time
	Ctime time.Time
	Nlink uint32
}

// DirEntry is one directory entry.
type DirEntry struct {
	Name string
	Ino  uint64
	Kind node.Kind
}

// SetAttr changes a node's attributes; nil fields stay.
type SetAttr struct {
	Mode  *uint32
	Size  *int64
	Mtime *time.Time
}

// Revision is one commit of a node.
type Revision struct {
	Rev     int
	TxID    string
	Height  int32 // -1 while unconfirmed
	Time    time.Time
	Size    int64
	Summary string
}

// Root is a node of someone else's tree shown in this one.
type Root struct {
	// Path is where it appears, e.g. ["shared", "alice", "docs"]: every
	// element but the last is a virtual, read-only folder.
	Path    []string
	Keys    node.Keys
	Kind    node.Kind
	Genesis node.OutPoint
}

// RootIno is the inode number of "/".
const RootIno = 1

// Tree is an open chain-backed tree.
type Tree struct {
	cfg     Config
	log     *slog.Logger
	backend chain.Backend
	wallet  *wallet.Wallet
	j       *journal

	mu      sync.Mutex
	root    *Node
	byIno   map[uint64]*Node
	byAddr  map[[20]byte]*Node
	nextIno uint64
	dirty   map[*Node]struct{}
	// jpending are nodes closed since the journal loop last ran.
	jpending map[*Node]struct{}
	// ours are the transactions this tree broadcast: notifications
	// about them are not news.
	ours map[[32]byte]struct{}
	// noFunds is set when the wallet could not pay; writes fail with
	// ENOSPC until a commit succeeds again.
	noFunds error
	// lastSync is when a sync from the chain last completed.
	lastSync time.Time
	// kick wakes the committer after its coalescing delay; urgentCh at
	// once.
	kick     chan struct{}
	urgentCh chan struct{}
	resync   chan *Node
	stop     chan struct{}
	done     sync.WaitGroup
	closed   bool
}

// Node is one file, directory or symlink.
type Node struct {
	ino    uint64
	keys   node.Keys
	parent *Node
	name   string
	// genesis is the output the node's first commit spends (zero until
	// the parent's commit allocating it is broadcast); genesisValue its
	// amount.
	genesis      node.OutPoint
	genesisValue int64
	// committed is the state on chain (including our unconfirmed
	// commits); local is what users see. local == committed unless
	// dirty.
	committed *node.State
	local     *node.State
	// ownContent is true when local.Content is this node's own buffer
	// (writes may modify it in place); false when it is shared with
	// committed.
	ownContent bool
	ver        uint64 // bumped by every local change
	// committedVer is the local version the last commit captured;
	// journaledVer the last one written to the journal.
	committedVer uint64
	journaledVer uint64
	head         chain.UTXO
	hasHead      bool
	revs         []rev
	committing   bool
	waiters      []waiter
	ctime        time.Time
	// unavailable: the content is in a blob this device cannot fetch, or
	// the folder's image could not be read (retryLoop reads it again).
	unavailable bool
	// signer is the write key ready to sign (cached).
	signer *wallet.Key
	// staged is a blob holding the content of version stagedVer (large
	// files, written when journaled or committed, whichever comes first;
	// the other reuses it). staging is the encryption in flight.
	staged    *blob.Ref
	stagedVer uint64
	staging   *stageCall
	// virtual folders (shared/, public/ and below) exist only on this
	// device: they show Roots and are never committed.
	virtual bool
	kids    map[string]*Node
	// unflushed: content changed since the last close or fsync. Such a
	// file is not committed in the background (a program still writing it
	// would see its file committed piecemeal); Flush and Sync clear it.
	unflushed bool
	// Images (image.go): imgDir is the image folder a folder shows (the
	// mount folder's image, or a folder inside one); imgOf and imgIndex
	// name the image entry the node is, if it is one; imgFile, while
	// set, reads an image file's content not yet loaded (imgSize bytes).
	imgDir   *imgDir
	imgOf    *imgDir
	imgIndex uint32
	imgFile  *imgFile
	imgSize  int64
}

type rev struct {
	txid   [32]byte
	height int32
	time   time.Time
	body   node.Body
	size   int64
}

type waiter struct {
	ver uint64
	ch  chan error
}

// Defaults.
const (
	defaultCommitDelay  = 200 * time.Millisecond
	defaultChildFunding = 20_000
	defaultInlineMax    = 32 << 10
	// maxBody keeps a sealed commit body inside the 100 KB envelope.
	maxBody = 90_000
)

// Open loads the tree: re-broadcasts journaled commits, rebuilds the tree
// from the chain, re-applies journaled local changes, and starts the
// committer and the sync loop.
func Open(ctx context.Context, cfg Config) (*Tree, error) {
	if cfg.CommitDelay <= 0 {
		cfg.CommitDelay = defaultCommitDelay
	}
	if cfg.ChildFunding <= 0 {
		cfg.ChildFunding = defaultChildFunding
	}
	if cfg.InlineMax <= 0 {
		cfg.InlineMax = defaultInlineMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Device == "" {
		cfg.Device = "this device"
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = defaultRetryInterval
	}
	t := &Tree{
		cfg: cfg, log: cfg.Logger, backend: cfg.Backend, wallet: cfg.Wallet,
		byIno: map[uint64]*Node{}, byAddr: map[[20]byte]*Node{}, nextIno: RootIno,
		dirty: map[*Node]struct{}{}, jpending: map[*Node]struct{}{}, ours: map[[32]byte]struct{}{},
		kick: make(chan struct{}, 1), urgentCh: make(chan struct{}, 1), resync: make(chan *Node, 1024), stop: make(chan struct{}),
	}
	j, err := openJournal(cfg.CacheDir, cfg.CacheKey, cfg.Logger)
	if err != nil {
		return nil, err
	}
	t.j = j
	t.root = t.newNode(nil, "", cfg.RootKeys, node.KindDir)
	t.root.genesis = cfg.RootGenesis
	for _, r := range cfg.Roots {
		if _, err := t.addRoot(r); err != nil {
			j.close()
			return nil, err
		}
	}
	if err := t.rebroadcast(ctx); err != nil {
		j.close()
		return nil, err
	}
	if err := t.syncAll(ctx); err != nil {
		j.close()
		return nil, err
	}
	if err := t.restoreJournal(); err != nil {
		j.close()
		return nil, err
	}
	t.done.Add(3)
	go t.commitLoop()
	go t.syncLoop()
	go t.journalLoop()
	if cfg.RetryInterval > 0 {
		t.done.Add(1)
		go t.retryLoop()
	}
	return t, nil
}

// defaultRetryInterval: see Config.RetryInterval.
const defaultRetryInterval = 30 * time.Second

// retryLoop reads unavailable nodes again now and then, so a folder whose
// image servers were unreachable when the tree was read fills in once they
// answer, without a restart.
func (t *Tree) retryLoop() {
	defer t.done.Done()
	tick := time.NewTicker(t.cfg.RetryInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), imageTimeout)
		go func() {
			select {
			case <-t.stop: // Close does not wait for image servers
				cancel()
			case <-ctx.Done():
			}
		}()
		t.RetryUnavailable(ctx)
		cancel()
	}
}

// newNode registers a node (t.mu held, or during Open).
func (t *Tree) newNode(parent *Node, name string, keys node.Keys, kind node.Kind) *Node {
	n := &Node{ino: t.nextIno, keys: keys, parent: parent, name: name, committed: node.NewState(kind), ctime: t.cfg.Now()}
	n.local = n.committed
	t.nextIno++
	t.byIno[n.ino] = n
	t.byAddr[keys.Addr] = n
	return n
}

// Close stops the background work after committing what is pending, and
// closes the journal.
func (t *Tree) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	err := t.SyncAll(ctx)
	close(t.stop)
	t.done.Wait()
	if jerr := t.j.close(); err == nil {
		err = jerr
	}
	return err
}

// errno helpers.
func errnoOf(e syscall.Errno, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), e)
}

// node returns the node of an inode (t.mu held).
func (t *Tree) node(ino uint64) (*Node, error) {
	n, ok := t.byIno[ino]
	if !ok {
		return nil, errnoOf(syscall.ENOENT, "no inode %d", ino)
	}
	return n, nil
}

// child returns (creating the in-memory node if needed) the child named
// by an entry of n's local state (t.mu held).
func (t *Tree) child(n *Node, name string) (*Node, error) {
	if n.kids != nil {
		if c, ok := n.kids[name]; ok {
			return c, nil // virtual folders shadow real entries
		}
		if n.virtual {
			return nil, errnoOf(syscall.ENOENT, "%s", name)
		}
	}
	e, ok := n.local.Entries[name]
	if !ok {
		return nil, errnoOf(syscall.ENOENT, "%s", name)
	}
	return t.childFor(n, e)
}

func (t *Tree) childFor(n *Node, e node.Entry) (*Node, error) {
	if c, ok := t.byAddr[e.Addr]; ok {
		if c.parent != n || c.name != e.Name {
			c.parent, c.name = n, e.Name
		}
		if c.genesis.IsZero() && !e.Genesis.IsZero() {
			c.genesis = e.Genesis
		}
		t.imageChild(n, c, e)
		return c, nil
	}
	keys, err := n.keys.ChildKeys(e)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, err)
	}
	c := t.newNode(n, e.Name, keys, e.Kind)
	c.genesis = e.Genesis
	t.imageChild(n, c, e)
	return c, nil
}

// imageChild gives a child that is an entry of n's image its image state
// (t.mu held).
func (t *Tree) imageChild(n, c *Node, e node.Entry) {
	if n.imgDir == nil || !e.Native {
		return
	}
	if _, ok := n.imgDir.entries[e.Index]; ok {
		t.setImageBase(n, c, e.Index)
	}
}

// attr builds a node's attributes (t.mu held).
func (t *Tree) attr(n *Node) Attr {
	s := n.local
	a := Attr{Ino: n.ino, Kind: s.Kind, Mode: s.Mode, Nlink: 1, Ctime: n.ctime}
	if n.virtual {
		return Attr{Ino: n.ino, Kind: node.KindDir, Mode: 0o555, Nlink: uint32(2 + len(n.kids)), Size: 4096, Mtime: n.ctime, Ctime: n.ctime}
	}
	if n.parent == nil && n != t.root {
		a.Nlink = 0 // removed, still open somewhere
	}
	if s.Mtime != 0 {
		a.Mtime = time.Unix(0, s.Mtime)
	} else {
		a.Mtime = n.ctime
	}
	switch s.Kind {
	case node.KindDir:
		if a.Nlink == 0 {
			break
		}
		a.Nlink = 2
		for _, e := range s.Entries {
			if e.Kind == node.KindDir {
				a.Nlink++
			}
		}
		a.Size = 4096
	case node.KindSymlink:
		a.Size = int64(len(s.Target))
	default:
		a.Size = int64(len(s.Content))
		if n.imgFile != nil {
			a.Size = n.imgSize // not loaded from its image yet
		}
	}
	return a
}

// Path returns a node's path from the root (t.mu held).
func (n *Node) path() string {
	if n.parent == nil {
		return "/"
	}
	var parts []string
	for c := n; c.parent != nil; c = c.parent {
		parts = append(parts, c.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return "/" + strings.Join(parts, "/")
}

// Resolve finds a path ("/a/b") and returns its inode.
func (t *Tree) Resolve(path string) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.resolve(path)
	if err != nil {
		return 0, err
	}
	return n.ino, nil
}

func (t *Tree) resolve(path string) (*Node, error) {
	n := t.root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" || part == "." {
			continue
		}
		if n.local.Kind != node.KindDir {
			return nil, errnoOf(syscall.ENOTDIR, "%s", n.path())
		}
		if part == ".." {
			if n.parent != nil {
				n = n.parent
			}
			continue
		}
		c, err := t.child(n, part)
		if err != nil {
			return nil, errnoOf(syscall.ENOENT, "%s", path)
		}
		n = c
	}
	return n, nil
}

// Status summarises the tree for `integrity status`.
type Status struct {
	Nodes    int
	Pending  int
	LastSync time.Time
	NoFunds  string
}

// Status reports counts and health.
func (t *Tree) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Status{Nodes: len(t.byIno), Pending: len(t.dirty), LastSync: t.lastSync}
	if t.noFunds != nil {
		s.NoFunds = t.noFunds.Error()
	}
	return s
}

// sortedEntries lists a directory (t.mu held).
func (t *Tree) sortedEntries(n *Node) []node.Entry {
	out := make([]node.Entry, 0, len(n.local.Entries))
	for _, e := range n.local.Entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }

var errClosed = errors.New("chainfs: tree is closed")

// Forget drops a removed node once nothing holds it open any more (the
// kernel's FORGET). Linked nodes stay: they are part of the tree.
func (t *Tree) Forget(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.byIno[ino]
	if !ok || n == t.root || n.parent != nil {
		return
	}
	delete(t.byIno, ino)
	if t.byAddr[n.keys.Addr] == n {
		delete(t.byAddr, n.keys.Addr)
	}
}

// addRoot creates the virtual folders of r.Path and the foreign node at its
// end (t.mu held, or during Open).
func (t *Tree) addRoot(r Root) (*Node, error) {
	if len(r.Path) < 2 {
		return nil, fmt.Errorf("chainfs: root path %v: want at least a folder and a name", r.Path)
	}
	for _, p := range r.Path {
		if err := node.ValidName(p); err != nil {
			return nil, fmt.Errorf("chainfs: root path %v: %w", r.Path, err)
		}
	}
	dir := t.root
	for _, p := range r.Path[:len(r.Path)-1] {
		if dir.kids == nil {
			dir.kids = map[string]*Node{}
		}
		v, ok := dir.kids[p]
		if !ok {
			v = &Node{ino: t.nextIno, parent: dir, name: p, virtual: true, kids: map[string]*Node{}, ctime: t.cfg.Now()}
			v.committed = node.NewState(node.KindDir)
			v.local = v.committed
			t.nextIno++
			t.byIno[v.ino] = v
			dir.kids[p] = v
		}
		if !v.virtual {
			return nil, fmt.Errorf("chainfs: root path %v crosses a shared folder", r.Path)
		}
		dir = v
	}
	name := r.Path[len(r.Path)-1]
	if old, ok := dir.kids[name]; ok {
		if old.keys.Addr == r.Keys.Addr && old.keys.HasWrite == r.Keys.HasWrite {
			return old, nil
		}
		t.dropRoot(old)
	}
	if c, ok := t.byAddr[r.Keys.Addr]; ok && c.parent != nil {
		// Already in the tree (our own node, shared back to us).
		return c, nil
	}
	n := t.newNode(dir, name, r.Keys, r.Kind)
	n.genesis = r.Genesis
	dir.kids[name] = n
	return n, nil
}

func (t *Tree) dropRoot(n *Node) {
	if p := n.parent; p != nil && p.kids != nil {
		delete(p.kids, n.name)
	}
	t.detach(n)
}

// AddRoot shows someone else's node (a share, a published folder) at
// r.Path and reads it from the chain. It returns its inode.
func (t *Tree) AddRoot(ctx context.Context, r Root) (uint64, error) {
	t.mu.Lock()
	n, err := t.addRoot(r)
	t.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if err := t.syncFrom(ctx, []*Node{n}); err != nil {
		return 0, err
	}
	return n.ino, nil
}

// RemoveRoot stops showing the root at path (a revoked share).
func (t *Tree) RemoveRoot(path []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.resolve("/" + strings.Join(path, "/"))
	if err == nil && n.parent != nil && n.parent.virtual {
		t.dropRoot(n)
	}
}
