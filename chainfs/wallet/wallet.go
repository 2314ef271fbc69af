// Package wallet pays for integrity's transactions: an HD wallet
// (btcutil/hdkeychain) that tracks its P2PKH outputs from the chain, selects
// coins, pays fees and returns change; batched funding of node addresses;
// and the construction of node commits, whose inputs and change form each
// node's spend chain (docs/PROTOCOL.md, "Commits").
package wallet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

// Wallet spends from one address derived from a seed at m/0'/0'/0'. One
// address keeps the wallet's history a single index query; the cost — every
// node funding links back to it — is recorded in docs/SECURITY.md.
type Wallet struct {
	backend chain.Backend
	key     *Key
	feeRate int64

	mu sync.Mutex
	// utxos is the wallet's view of its unspent outputs, loaded from the
	// chain and updated by its own spends; nil means "reload".
	utxos map[wire.OutPoint]chain.UTXO
}

// Options tune a wallet.
type Options struct {
	FeeRate int64 // sat/byte; DefaultFeeRate when zero
}

// New derives the wallet key from seed (16–64 bytes).
func New(seed []byte, backend chain.Backend, opts Options) (*Wallet, error) {
	key, err := DeriveKey(seed, backend.Params())
	if err != nil {
		return nil, err
	}
	if opts.FeeRate <= 0 {
		opts.FeeRate = DefaultFeeRate
	}
	return &Wallet{backend: backend, key: key, feeRate: opts.FeeRate}, nil
}

// DeriveKey derives the wallet's key, m/0'/0'/0' of the seed's BIP32 tree.
func DeriveKey(seed []byte, params *chaincfg.Params) (*Key, error) {
	master, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		return nil, fmt.Errorf("wallet: master key: %w", err)
	}
	k := master
	for _, i := range []uint32{0, 0, 0} {
		next, err := k.Derive(hdkeychain.HardenedKeyStart + i)
		k.Zero()
		if err != nil {
			return nil, fmt.Errorf("wallet: derive: %w", err)
		}
		k = next
	}
	priv, err := k.ECPrivKey()
	k.Zero()
	if err != nil {
		return nil, fmt.Errorf("wallet: key: %w", err)
	}
	return NewKey(priv, params)
}

// Address is where the wallet receives funds.
func (w *Wallet) Address() address.Address { return w.key.Address() }

// FeeRate is the wallet's fee rate in sat/byte.
func (w *Wallet) FeeRate() int64 { return w.feeRate }

// Balance splits the wallet's funds by spendability.
type Balance struct {
	Confirmed   int64 // in blocks and spendable
	Unconfirmed int64 // in the mempool
	Immature    int64 // coinbase outputs waiting for maturity
}

// Total is everything the wallet holds.
func (b Balance) Total() int64 { return b.Confirmed + b.Unconfirmed + b.Immature }

// Spendable is what can be spent now.
func (b Balance) Spendable() int64 { return b.Confirmed + b.Unconfirmed }

// Balance reloads the wallet's outputs from the chain and sums them.
func (w *Wallet) Balance(ctx context.Context) (Balance, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.utxos = nil
	utxos, next, err := w.load(ctx)
	if err != nil {
		return Balance{}, err
	}
	var b Balance
	maturity := w.backend.Params().CoinbaseMaturity
	for _, u := range utxos {
		switch {
		case !u.Spendable(next, maturity):
			b.Immature += u.Value
		case u.Height < 0:
			b.Unconfirmed += u.Value
		default:
			b.Confirmed += u.Value
		}
	}
	return b, nil
}

// load returns the cached UTXO set (loading it if needed) and the height
// of the next block.
func (w *Wallet) load(ctx context.Context) (map[wire.OutPoint]chain.UTXO, int32, error) {
	tip, err := w.backend.Tip(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("wallet: %w", err)
	}
	if w.utxos == nil {
		list, err := w.backend.UTXOs(ctx, w.key.Address())
		if err != nil {
			return nil, 0, fmt.Errorf("wallet: outputs of %s: %w", w.key.Address(), err)
		}
		w.utxos = make(map[wire.OutPoint]chain.UTXO, len(list))
		for _, u := range list {
			w.utxos[u.OutPoint] = u
		}
	}
	return w.utxos, tip.Height + 1, nil
}

// Output is one payment.
type Output struct {
	PkScript []byte
	Value    int64
}

// PayTo returns an Output paying value to addr.
func PayTo(addr address.Address, value int64) (Output, error) {
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return Output{}, fmt.Errorf("wallet: %w", err)
	}
	return Output{PkScript: pk, Value: value}, nil
}

// Send pays amount satoshis to addr.
func (w *Wallet) Send(ctx context.Context, to address.Address, amount int64) (chainhash.Hash, error) {
	if !to.IsForNet(w.backend.Params()) {
		return chainhash.Hash{}, fmt.Errorf("wallet: address %s is not for network %s", to, w.backend.Params().Name)
	}
	if amount < DustLimit {
		return chainhash.Hash{}, fmt.Errorf("wallet: amount %d sat is below the dust limit of %d sat", amount, DustLimit)
	}
	out, err := PayTo(to, amount)
	if err != nil {
		return chainhash.Hash{}, err
	}
	tx, _, err := w.Pay(ctx, []Output{out})
	if err != nil {
		return chainhash.Hash{}, err
	}
	return tx.TxHash(), nil
}

// Pay builds, signs and broadcasts one transaction paying every output,
// with change back to the wallet. It returns the transaction and, for each
// requested output in order, the UTXO it created — so a batch funding N
// node addresses is one transaction whose outputs the nodes can spend at
// once, before it confirms.
//
// The wallet works from a cached view of its outputs; when that view fails
// it (a conflict, or too little money) it is reloaded from the chain and the
// payment tried once more.
func (w *Wallet) Pay(ctx context.Context, outs []Output) (*wire.MsgTx, []chain.UTXO, error) {
	if len(outs) == 0 {
		return nil, nil, errors.New("wallet: nothing to pay")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for attempt := 0; ; attempt++ {
		cached := w.utxos != nil
		tx, created, err := w.pay(ctx, outs)
		// A stale view — coins another device spent, or coins that
		// arrived (a mined block) since it was loaded — gets one reload.
		if cached && attempt == 0 && (errors.Is(err, chain.ErrConflict) || errors.Is(err, ErrInsufficientFunds)) {
			w.utxos = nil
			continue
		}
		return tx, created, err
	}
}

func (w *Wallet) pay(ctx context.Context, outs []Output) (*wire.MsgTx, []chain.UTXO, error) {
	utxos, next, err := w.load(ctx)
	if err != nil {
		return nil, nil, err
	}
	var want int64
	txOuts := make([]*wire.TxOut, 0, len(outs))
	for _, o := range outs {
		if o.Value < DustLimit && !(o.Value == 0 && len(o.PkScript) > 0 && o.PkScript[0] == txscript.OP_RETURN) {
			return nil, nil, fmt.Errorf("wallet: output of %d sat is below the dust limit", o.Value)
		}
		want += o.Value
		txOuts = append(txOuts, wire.NewTxOut(o.Value, o.PkScript))
	}

	// Largest coins first: fewest inputs, smallest fee. Confirmed before
	// unconfirmed at equal value, so chains of unconfirmed change stay
	// short.
	maturity := w.backend.Params().CoinbaseMaturity
	cands := make([]chain.UTXO, 0, len(utxos))
	var spendable int64
	for _, u := range utxos {
		if u.Spendable(next, maturity) {
			cands = append(cands, u)
			spendable += u.Value
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].Value != cands[j].Value {
			return cands[i].Value > cands[j].Value
		}
		return cands[i].Height > cands[j].Height
	})
	// Add coins until the signed transaction balances; the fee grows with
	// each input, so only Spend can say when that is.
	var have int64
	var used []chain.UTXO
	var tx *wire.MsgTx
	for _, u := range cands {
		used = append(used, u)
		have += u.Value
		if have < want {
			continue
		}
		tx, err = w.key.Spend(used, txOuts, w.feeRate)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrInsufficientFunds) {
			return nil, nil, err
		}
	}
	if tx == nil {
		return nil, nil, &InsufficientFundsError{Have: spendable, Need: want + CommitFee(len(used), 0, w.feeRate)}
	}
	if err := w.backend.Broadcast(ctx, tx); err != nil {
		return nil, nil, fmt.Errorf("wallet: broadcast: %w", err)
	}
	h := tx.TxHash()
	for _, u := range used {
		delete(w.utxos, u.OutPoint)
	}
	created := make([]chain.UTXO, len(outs))
	for i, o := range tx.TxOut {
		u := chain.UTXO{OutPoint: wire.OutPoint{Hash: h, Index: uint32(i)}, Value: o.Value, PkScript: o.PkScript, Height: -1}
		if i < len(outs) {
			created[i] = u
		} else {
			w.utxos[u.OutPoint] = u
		}
	}
	return tx, created, nil
}

// Invalidate drops the cached outputs so the next spend reloads them from
// the chain (after a block, or when another device may have spent).
func (w *Wallet) Invalidate() {
	w.mu.Lock()
	w.utxos = nil
	w.mu.Unlock()
}

// Commit builds, signs and broadcasts a commit from key's address (see
// Key.Commit for the layout) with pays as outputs 2..: the node's own
// inputs pay when they can; otherwise the wallet adds inputs and the new
// head is set to topUp, so a busy node is refilled in the same transaction
// instead of a separate funding one. Outputs: 0 OP_RETURN, 1 new head,
// 2.. pays, then the wallet's change if it contributed.
func (w *Wallet) Commit(ctx context.Context, key *Key, inputs []chain.UTXO, opReturn []byte, pays []*wire.TxOut, topUp int64) (*wire.MsgTx, chain.UTXO, error) {
	if len(inputs) == 0 {
		return nil, chain.UTXO{}, errors.New("wallet: commit needs at least one input (the node's head)")
	}
	outs := append([]*wire.TxOut{wire.NewTxOut(0, opReturn)}, pays...)
	// Node-funded: head = change.
	if tx, change, err := key.spendHeadSecond(inputs, outs, w.feeRate); err == nil {
		if err := w.backend.Broadcast(ctx, tx); err != nil {
			return nil, chain.UTXO{}, fmt.Errorf("wallet: broadcast commit: %w", err)
		}
		return tx, headOf(tx, key, change), nil
	} else if !errors.Is(err, ErrInsufficientFunds) {
		return nil, chain.UTXO{}, err
	}
	if topUp < DustLimit {
		topUp = DustLimit
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for attempt := 0; ; attempt++ {
		cached := w.utxos != nil
		tx, err := w.coFund(ctx, key, inputs, outs, topUp)
		if cached && attempt == 0 && (errors.Is(err, chain.ErrConflict) || errors.Is(err, ErrInsufficientFunds)) {
			w.utxos = nil
			continue
		}
		if err != nil {
			return nil, chain.UTXO{}, err
		}
		return tx, headOf(tx, key, topUp), nil
	}
}

func headOf(tx *wire.MsgTx, key *Key, value int64) chain.UTXO {
	return chain.UTXO{OutPoint: wire.OutPoint{Hash: tx.TxHash(), Index: 1}, Value: value, PkScript: key.pkScript, Height: -1}
}

// spendHeadSecond is Key.spend with the change (the new head) placed at
// output 1, right after the OP_RETURN.
func (k *Key) spendHeadSecond(inputs []chain.UTXO, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, int64, error) {
	tx := wire.NewMsgTx(wire.TxVersion)
	var have, want int64
	for _, in := range inputs {
		tx.AddTxIn(wire.NewTxIn(&in.OutPoint, nil, nil))
		have += in.Value
	}
	tx.AddTxOut(outs[0])
	tx.AddTxOut(wire.NewTxOut(0, k.pkScript))
	for _, o := range outs {
		want += o.Value
	}
	for _, o := range outs[1:] {
		tx.AddTxOut(o)
	}
	f := fee(tx, feeRate)
	change := have - want - f
	if change < DustLimit {
		return nil, 0, &InsufficientFundsError{Have: have, Need: want + f + DustLimit}
	}
	tx.TxOut[1].Value = change
	for i := range tx.TxIn {
		if err := k.sign(tx, i); err != nil {
			return nil, 0, err
		}
	}
	return tx, change, nil
}

// coFund adds wallet inputs to a commit so the new head holds topUp.
// Called with w.mu held.
func (w *Wallet) coFund(ctx context.Context, key *Key, inputs []chain.UTXO, outs []*wire.TxOut, topUp int64) (*wire.MsgTx, error) {
	utxos, next, err := w.load(ctx)
	if err != nil {
		return nil, err
	}
	maturity := w.backend.Params().CoinbaseMaturity
	cands := make([]chain.UTXO, 0, len(utxos))
	var spendable int64
	for _, u := range utxos {
		if u.Spendable(next, maturity) {
			cands = append(cands, u)
			spendable += u.Value
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Value > cands[j].Value })
	var nodeHave, want int64
	for _, in := range inputs {
		nodeHave += in.Value
	}
	for _, o := range outs {
		want += o.Value
	}
	want += topUp
	for n := 1; n <= len(cands); n++ {
		tx := wire.NewMsgTx(wire.TxVersion)
		have := nodeHave
		for _, in := range inputs {
			tx.AddTxIn(wire.NewTxIn(&in.OutPoint, nil, nil))
		}
		for _, u := range cands[:n] {
			tx.AddTxIn(wire.NewTxIn(&u.OutPoint, nil, nil))
			have += u.Value
		}
		tx.AddTxOut(outs[0])
		tx.AddTxOut(wire.NewTxOut(topUp, key.pkScript))
		for _, o := range outs[1:] {
			tx.AddTxOut(o)
		}
		tx.AddTxOut(wire.NewTxOut(0, w.key.pkScript))
		f := fee(tx, w.feeRate)
		change := have - want - f
		if change < 0 {
			continue
		}
		if change < DustLimit {
			tx.TxOut = tx.TxOut[:len(tx.TxOut)-1]
		} else {
			tx.TxOut[len(tx.TxOut)-1].Value = change
		}
		for i := range tx.TxIn {
			signer := key
			if i >= len(inputs) {
				signer = w.key
			}
			if err := signer.sign(tx, i); err != nil {
				return nil, err
			}
		}
		if err := w.backend.Broadcast(ctx, tx); err != nil {
			return nil, fmt.Errorf("wallet: broadcast commit: %w", err)
		}
		h := tx.TxHash()
		for _, u := range cands[:n] {
			delete(w.utxos, u.OutPoint)
		}
		if change >= DustLimit {
			idx := uint32(len(tx.TxOut) - 1)
			w.utxos[wire.OutPoint{Hash: h, Index: idx}] = chain.UTXO{OutPoint: wire.OutPoint{Hash: h, Index: idx}, Value: change, PkScript: w.key.pkScript, Height: -1}
		}
		return tx, nil
	}
	return nil, &InsufficientFundsError{Have: spendable, Need: want - nodeHave}
}
