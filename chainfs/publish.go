package chainfs

import (
	"bytes"
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/share"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// NodeGrant describes a node for sharing: what a recipient needs to read
// (and, with write, change) it. The node is committed first, so its genesis
// output exists.
func (t *Tree) NodeGrant(ctx context.Context, ino uint64, write bool) (share.Grant, error) {
	if err := t.Sync(ctx, ino); err != nil {
		return share.Grant{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.node(ino)
	if err != nil {
		return share.Grant{}, err
	}
	if n == t.root {
		return share.Grant{}, errnoOf(syscall.EINVAL, "share a folder, not your whole System")
	}
	if n.genesis.IsZero() {
		return share.Grant{}, errnoOf(syscall.EAGAIN, "%s is not on chain yet", n.path())
	}
	if write && !n.keys.HasWrite {
		return share.Grant{}, errnoOf(syscall.EPERM, "%s: you cannot give write access you do not have", n.path())
	}
	g := share.Grant{Kind: n.local.Kind, Addr: n.keys.Addr, Genesis: n.genesis, Read: n.keys.Read,
		Name: n.name, Path: n.path(), Sent: t.cfg.Now()}
	if write {
		g.Flags |= share.FlagWrite
		g.Write = n.keys.Write
	}
	return g, nil
}

// PublishKeys broadcasts a node's keys in the clear from the node's own
// address (a transaction of its spend chain), so that anyone can open it.
func (t *Tree) PublishKeys(ctx context.Context, ino uint64, write bool) error {
	g, err := t.NodeGrant(ctx, ino, write)
	if err != nil {
		return err
	}
	script, err := envelope.Encode(envelope.TypePublish, share.Published(g)...)
	if err != nil {
		return err
	}
	for {
		t.mu.Lock()
		n, err := t.node(ino)
		if err != nil {
			t.mu.Unlock()
			return err
		}
		if n.committing {
			t.mu.Unlock()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		n.committing = true
		head, hasHead, keys := n.head, n.hasHead, n.keys
		if !hasHead {
			head = chain.UTXO{OutPoint: wire.OutPoint{Hash: n.genesis.TxID, Index: n.genesis.Index}, Value: n.genesisValue, Height: -1}
		}
		t.mu.Unlock()
		err = t.publishFrom(ctx, n, keys, head, script)
		t.mu.Lock()
		n.committing = false
		t.mu.Unlock()
		return err
	}
}

func (t *Tree) publishFrom(ctx context.Context, n *Node, keys node.Keys, head chain.UTXO, script []byte) error {
	signer, err := t.signerOf(n, keys)
	if err != nil {
		return err
	}
	if head.Value == 0 {
		if head.Value, err = t.outputValue(ctx, head.OutPoint); err != nil {
			return err
		}
	}
	head.PkScript = signer.PkScript()
	tx, newHead, err := t.wallet.Commit(ctx, signer, []chain.UTXO{head}, script, nil, 10*t.cfg.ChildFunding)
	if err != nil {
		return fmt.Errorf("publish %x: %w", keys.Addr[:4], err)
	}
	raw := new(bytes.Buffer)
	_ = tx.Serialize(raw)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ours[tx.TxHash()] = struct{}{}
	t.j.putUnconfirmed(tx.TxHash(), raw.Bytes())
	n.head, n.hasHead = newHead, true
	return nil
}
