// Package hostdev backs the System VM's devices with the agent's real
// parts: the guest's disk with a chainfs.Tree, the blockchain module with a
// chain.Backend, the identity module with a keyring.Identity, and the
// network module with DNS (then the Domain System) and outbound TCP.
//
// Key material stays in this package's callers' memory: the identity
// device returns only public keys, signatures, ciphertexts and derived
// secrets.
package hostdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/vm"
)

// Tree is a chainfs.Tree as the VM's disk.
type Tree struct{ T *chainfs.Tree }

var _ vm.Tree = Tree{}

func kindOf(k node.Kind) vm.Kind {
	switch k {
	case node.KindDir:
		return vm.KindDir
	case node.KindSymlink:
		return vm.KindSymlink
	}
	return vm.KindFile
}

func nodeKind(k vm.Kind) node.Kind {
	switch k {
	case vm.KindDir:
		return node.KindDir
	case vm.KindSymlink:
		return node.KindSymlink
	}
	return node.KindFile
}

func attrOf(a chainfs.Attr) vm.Attr {
	return vm.Attr{Ino: a.Ino, Kind: kindOf(a.Kind), Mode: a.Mode, Size: a.Size, Mtime: a.Mtime, Ctime: a.Ctime, Nlink: a.Nlink}
}

func (t Tree) Root() uint64 { return chainfs.RootIno }

func (t Tree) Lookup(dir uint64, name string) (vm.Attr, error) {
	a, err := t.T.Lookup(dir, name)
	return attrOf(a), err
}

func (t Tree) GetAttr(ino uint64) (vm.Attr, error) {
	a, err := t.T.GetAttr(ino)
	return attrOf(a), err
}

func (t Tree) SetAttr(ino uint64, in vm.SetAttr) (vm.Attr, error) {
	a, err := t.T.SetAttr(ino, chainfs.SetAttr{Mode: in.Mode, Size: in.Size, Mtime: in.Mtime})
	return attrOf(a), err
}

func (t Tree) ReadDir(dir uint64) ([]vm.DirEntry, error) {
	ents, err := t.T.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]vm.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = vm.DirEntry{Name: e.Name, Ino: e.Ino, Kind: kindOf(e.Kind)}
	}
	return out, nil
}

func (t Tree) Create(dir uint64, name string, kind vm.Kind, mode uint32, target string) (vm.Attr, error) {
	a, err := t.T.Create(dir, name, nodeKind(kind), mode, target)
	return attrOf(a), err
}

func (t Tree) Remove(dir uint64, name string, isDir bool) error { return t.T.Remove(dir, name, isDir) }

func (t Tree) Rename(oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error {
	return t.T.Rename(oldDir, oldName, newDir, newName, noReplace)
}

func (t Tree) ReadLink(ino uint64) (string, error) { return t.T.ReadLink(ino) }

func (t Tree) Read(ino uint64, off int64, dest []byte) (int, error) { return t.T.Read(ino, off, dest) }

func (t Tree) Write(ino uint64, off int64, data []byte) (int, error) {
	return t.T.Write(ino, off, data)
}

func (t Tree) Flush(ino uint64) error { return t.T.Flush(ino) }

func (t Tree) Sync(ctx context.Context, ino uint64) error { return t.T.Sync(ctx, ino) }

// Chain is a chain.Backend as the VM's blockchain device.
type Chain struct{ Backend chain.Backend }

var _ vm.Blockchain = Chain{}

// chainErr maps the backend's error classes onto the VM's.
func chainErr(op string, err error) error {
	var class error
	switch {
	case errors.Is(err, chain.ErrNotFound):
		class = vm.ErrNoSuch
	case errors.Is(err, chain.ErrConflict):
		class = vm.ErrDoubleSpend
	case errors.Is(err, chain.ErrRejected):
		class = vm.ErrRefusedTx
	case errors.Is(err, chain.ErrUnavailable):
		class = vm.ErrOffline
	case errors.Is(err, chain.ErrUnsupported):
		class = vm.ErrNotSupported
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w (%v)", op, class, err)
}

func (c Chain) decode(s string) (address.Address, error) {
	params := c.Backend.Params()
	a, err := address.DecodeAddress(s, params)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w (%v)", s, vm.ErrBadInput, err)
	}
	if !a.IsForNet(params) {
		return nil, fmt.Errorf("address %q is not of network %s: %w", s, params.Name, vm.ErrBadInput)
	}
	return a, nil
}

// display turns a hash into the order block explorers print.
func display(h chainhash.Hash) [32]byte {
	var out [32]byte
	for i := range h {
		out[i] = h[len(h)-1-i]
	}
	return out
}

func internal(id [32]byte) chainhash.Hash {
	var h chainhash.Hash
	for i := range id {
		h[i] = id[len(id)-1-i]
	}
	return h
}

func (c Chain) AddressTxs(ctx context.Context, s string) ([]vm.TxRef, error) {
	a, err := c.decode(s)
	if err != nil {
		return nil, err
	}
	txs, err := c.Backend.AddressTxs(ctx, a)
	if err != nil {
		return nil, chainErr("address transactions", err)
	}
	out := make([]vm.TxRef, len(txs))
	for i, t := range txs {
		out[i] = vm.TxRef{TxID: display(t.Hash()), Height: t.Height}
	}
	return out, nil
}

func (c Chain) Balance(ctx context.Context, s string) (vm.Balance, error) {
	a, err := c.decode(s)
	if err != nil {
		return vm.Balance{}, err
	}
	us, err := c.Backend.UTXOs(ctx, a)
	if err != nil {
		return vm.Balance{}, chainErr("balance", err)
	}
	var b vm.Balance
	for _, u := range us {
		if u.Height >= 0 {
			b.Confirmed += u.Value
		} else {
			b.Unconfirmed += u.Value
		}
	}
	return b, nil
}

func (c Chain) TxAddresses(ctx context.Context, id [32]byte) ([]string, error) {
	tx, err := c.Backend.GetTx(ctx, internal(id))
	if err != nil {
		return nil, chainErr("transaction", err)
	}
	var out []string
	add := func(script []byte) {
		_, addrs, _, err := txscript.ExtractPkScriptAddrs(script, c.Backend.Params())
		if err != nil {
			return
		}
		for _, a := range addrs {
			if s := a.EncodeAddress(); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	for _, p := range tx.PrevOuts {
		add(p.PkScript)
	}
	for _, o := range tx.MsgTx.TxOut {
		add(o.PkScript)
	}
	return out, nil
}

func (c Chain) GetTx(ctx context.Context, id [32]byte) ([]byte, error) {
	tx, err := c.Backend.GetTx(ctx, internal(id))
	if err != nil {
		return nil, chainErr("transaction", err)
	}
	var buf bytes.Buffer
	if err := tx.MsgTx.Serialize(&buf); err != nil {
		return nil, fmt.Errorf("encode transaction: %w", err)
	}
	return buf.Bytes(), nil
}

func (c Chain) Broadcast(ctx context.Context, raw []byte) ([32]byte, error) {
	var tx wire.MsgTx
	r := bytes.NewReader(raw)
	if err := tx.Deserialize(r); err != nil {
		return [32]byte{}, fmt.Errorf("decode transaction: %w (%v)", vm.ErrBadInput, err)
	}
	if r.Len() != 0 {
		return [32]byte{}, fmt.Errorf("%d bytes after the transaction: %w", r.Len(), vm.ErrBadInput)
	}
	if err := c.Backend.Broadcast(ctx, &tx); err != nil {
		return [32]byte{}, chainErr("broadcast", err)
	}
	return display(tx.TxHash()), nil
}

func (c Chain) TipHeight(ctx context.Context) (int32, error) {
	t, err := c.Backend.Tip(ctx)
	if err != nil {
		return 0, chainErr("tip", err)
	}
	return t.Height, nil
}

// rootAddress encodes a node address for a network.
func rootAddress(h [20]byte, params *chaincfg.Params) string {
	a, err := address.NewAddressPubKeyHash(h[:], params)
	if err != nil {
		return ""
	}
	return a.EncodeAddress()
}
