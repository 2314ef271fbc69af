package chainfs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/node"
)

// History lists a node's revisions, oldest first (revision 1 is its
// first commit).
func (t *Tree) History(ino uint64) ([]Revision, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return nil, err
	}
	out := make([]Revision, len(n.revs))
	for i, r := range n.revs {
		out[i] = Revision{Rev: i + 1, TxID: chainhash.Hash(r.txid).String(), Height: r.height, Time: r.time, Size: r.size, Summary: summarize(r.body)}
	}
	return out, nil
}

func summarize(b node.Body) string {
	var parts []string
	for _, op := range b.Ops {
		switch op.Code {
		case node.OpKind:
			parts = append(parts, "create "+op.Kind.String())
		case node.OpAttr:
			parts = append(parts, fmt.Sprintf("mode %04o, mtime %s", op.Mode, time.Unix(0, op.Mtime).UTC().Format(time.RFC3339)))
		case node.OpData:
			parts = append(parts, fmt.Sprintf("write %d bytes", len(op.Data)))
		case node.OpBlob:
			parts = append(parts, "write (blob)")
		case node.OpPatch:
			parts = append(parts, fmt.Sprintf("patch (%d-byte delta)", len(op.Data)))
		case node.OpTruncate:
			parts = append(parts, fmt.Sprintf("truncate to %d", op.Size))
		case node.OpSymlink:
			parts = append(parts, "symlink → "+string(op.Data))
		case node.OpXattrSet:
			parts = append(parts, "set "+op.Name)
		case node.OpXattrDel:
			parts = append(parts, "remove "+op.Name)
		case node.OpDelete:
			parts = append(parts, "delete")
		case node.OpEntryNew:
			parts = append(parts, "+"+op.Entry.Name)
		case node.OpEntryLink:
			parts = append(parts, "+"+op.Entry.Name+" (moved in)")
		case node.OpEntryDel:
			parts = append(parts, "-"+op.Name)
		}
	}
	s := strings.Join(parts, "; ")
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

// stateAt replays a node's first k revisions (t.mu held).
func (t *Tree) stateAt(n *Node, k int) *node.State {
	s := node.NewState(n.committed.Kind)
	load := func(ref blob.Ref) ([]byte, error) {
		if t.cfg.Blobs == nil {
			return nil, fmt.Errorf("no blob store")
		}
		return blob.Load(context.Background(), t.cfg.Blobs, ref)
	}
	for i := 0; i < k && i < len(n.revs); i++ {
		if err := s.Apply(n.revs[i].body, n.revs[i].txid, load); err != nil {
			t.log.Warn("chainfs: replaying history", "path", n.path(), "rev", i+1, "err", err)
		}
	}
	return s
}

// ReadRevision returns a file's content (a symlink's target, a
// directory's listing) as of revision rev.
func (t *Tree) ReadRevision(ino uint64, rev int) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return nil, err
	}
	if rev < 1 || rev > len(n.revs) {
		return nil, errnoOf(syscall.ENOENT, "%s has revisions 1..%d, not %d", n.path(), len(n.revs), rev)
	}
	s := t.stateAt(n, rev)
	switch s.Kind {
	case node.KindDir:
		var b strings.Builder
		for _, name := range s.Names() {
			fmt.Fprintf(&b, "%s\t%s\n", s.Entries[name].Kind, name)
		}
		return []byte(b.String()), nil
	case node.KindSymlink:
		return []byte(s.Target), nil
	}
	return s.Content, nil
}

// Restore makes revision rev the current content (and mode) of a file or
// symlink, or the current entries of a directory, as a new commit: history
// only grows.
func (t *Tree) Restore(ino uint64, rev int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return err
	}
	if err := t.writable(n); err != nil {
		return err
	}
	if rev < 1 || rev > len(n.revs) {
		return errnoOf(syscall.ENOENT, "%s has revisions 1..%d, not %d", n.path(), len(n.revs), rev)
	}
	old := t.stateAt(n, rev)
	s := n.mutable()
	s.Mode = old.Mode
	switch s.Kind {
	case node.KindFile:
		s.Content = old.Content
		n.ownContent = false
	case node.KindSymlink:
		s.Target = old.Target
	case node.KindDir:
		for name := range s.Entries {
			if _, ok := old.Entries[name]; !ok {
				delete(s.Entries, name)
			}
		}
		for name, e := range old.Entries {
			if cur, ok := s.Entries[name]; !ok || cur.Addr != e.Addr {
				s.Entries[name] = e
			}
		}
	}
	t.touch(n, true)
	return nil
}

// SetBootloader stores a WebAssembly module as the System's bootloader: a
// blob, named by an OpBoot commit at "/" (the paper: "broadcast as a
// special type of transaction to the / node address"). It returns once the
// commit is broadcast.
func (t *Tree) SetBootloader(ctx context.Context, wasm []byte) error {
	if t.cfg.Blobs == nil {
		return fmt.Errorf("chainfs: no blob store for the bootloader")
	}
	ref, err := t.putBlob(ctx, wasm)
	if err != nil {
		return fmt.Errorf("chainfs: store bootloader: %w", err)
	}
	b, err := ref.MarshalBinary()
	if err != nil {
		return err
	}
	t.mu.Lock()
	if err := t.writable(t.root); err != nil {
		t.mu.Unlock()
		return err
	}
	t.root.mutable().Boot = b
	t.touch(t.root, false)
	t.mu.Unlock()
	return t.Sync(ctx, RootIno)
}

// Bootloader returns the System's bootloader module (ENOENT if none was
// installed).
func (t *Tree) Bootloader(ctx context.Context) ([]byte, error) {
	t.mu.Lock()
	b := t.root.local.Boot
	t.mu.Unlock()
	if len(b) == 0 {
		return nil, errnoOf(syscall.ENOENT, "no bootloader installed")
	}
	var ref blob.Ref
	if err := ref.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return blob.Load(ctx, t.cfg.Blobs, ref)
}
