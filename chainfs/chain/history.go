package chain

import (
	"bytes"

	"github.com/btcsuite/btcd/wire/v2"
)

// IsCoinbase reports whether a transaction is a coinbase.
func IsCoinbase(tx *wire.MsgTx) bool {
	if len(tx.TxIn) != 1 {
		return false
	}
	prev := tx.TxIn[0].PreviousOutPoint
	return prev.Index == wire.MaxPrevOutIndex && prev.Hash == ([32]byte{})
}

// UTXOsFromHistory derives an address's unspent outputs from its complete
// transaction history (as AddressTxs returns it): every output paying
// pkScript that no transaction in the history spends. It is correct because
// an address index lists the spenders of an address's outputs under that
// address too.
func UTXOsFromHistory(pkScript []byte, history []Tx) []UTXO {
	spent := make(map[wire.OutPoint]bool)
	for i := range history {
		for _, in := range history[i].MsgTx.TxIn {
			spent[in.PreviousOutPoint] = true
		}
	}
	var out []UTXO
	for i := range history {
		t := &history[i]
		hash := t.MsgTx.TxHash()
		cb := IsCoinbase(t.MsgTx)
		for idx, o := range t.MsgTx.TxOut {
			if !bytes.Equal(o.PkScript, pkScript) {
				continue
			}
			op := wire.OutPoint{Hash: hash, Index: uint32(idx)}
			if spent[op] {
				continue
			}
			out = append(out, UTXO{OutPoint: op, Value: o.Value, PkScript: o.PkScript, Height: t.Height, Coinbase: cb})
		}
	}
	return out
}

// Spendable reports whether a UTXO may be spent in a block at height next:
// coinbase outputs must wait for maturity confirmations.
func (u UTXO) Spendable(next int32, maturity uint16) bool {
	if !u.Coinbase {
		return true
	}
	return u.Height >= 0 && next-u.Height >= int32(maturity)
}

// SpendsFrom reports whether any input of t spends an output paying
// pkScript. A node commit is only valid if it does: anyone can pay an
// address, only its key holder can spend from it.
func (t *Tx) SpendsFrom(pkScript []byte) bool {
	for _, p := range t.PrevOuts {
		if bytes.Equal(p.PkScript, pkScript) {
			return true
		}
	}
	return false
}
