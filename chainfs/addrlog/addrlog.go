// Package addrlog treats a chain address as a log of integrity messages:
// publishing appends a message by spending from the address (so only its
// key holder can), and reading lists the messages of the transactions that
// spend from it, ignoring everything anyone else sent there. The bootstrap
// messages at a presentation address use it directly; chainfs nodes build
// their stricter spend-chain replay on the same rule.
package addrlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// Log publishes and reads address logs.
type Log struct {
	Backend chain.Backend
	Wallet  *wallet.Wallet
	Logger  *slog.Logger
}

// Message is one message read from an address.
type Message struct {
	envelope.Message
	TxID   chainhash.Hash
	Height int32 // -1 while unconfirmed
}

// Publish appends a message to key's address: a transaction spending every
// output the address holds (so its history stays one chain), with the
// OP_RETURN first, the address's change second and pays after. When the
// address holds nothing yet, the wallet first pays it a dust output to
// spend.
func (l *Log) Publish(ctx context.Context, key *wallet.Key, t envelope.Type, fields [][]byte, pays []*wire.TxOut) (chainhash.Hash, error) {
	script, err := envelope.Encode(t, fields...)
	if err != nil {
		return chainhash.Hash{}, err
	}
	utxos, err := l.Backend.UTXOs(ctx, key.Address())
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("outputs of %s: %w", key.Address(), err)
	}
	if len(utxos) == 0 {
		out, err := wallet.PayTo(key.Address(), 2*wallet.DustLimit)
		if err != nil {
			return chainhash.Hash{}, err
		}
		_, created, err := l.Wallet.Pay(ctx, []wallet.Output{out})
		if err != nil {
			return chainhash.Hash{}, fmt.Errorf("fund %s: %w", key.Address(), err)
		}
		utxos = created
	}
	tx, _, err := l.Wallet.Commit(ctx, key, utxos, script, pays, 10*wallet.DustLimit)
	if err != nil {
		return chainhash.Hash{}, err
	}
	return tx.TxHash(), nil
}

// Messages returns the integrity messages published from addr, in chain
// order. Transactions that do not spend from addr are not messages of it
// (anyone can pay an address); a malformed envelope from the key holder is
// skipped with a log line.
func (l *Log) Messages(ctx context.Context, addr address.Address) ([]Message, error) {
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("addrlog: %w", err)
	}
	txs, err := l.Backend.AddressTxs(ctx, addr)
	if err != nil {
		return nil, err
	}
	var out []Message
	for i := range txs {
		tx := &txs[i]
		if !tx.SpendsFrom(pk) || len(tx.MsgTx.TxOut) == 0 {
			continue
		}
		m, err := envelope.Decode(tx.MsgTx.TxOut[0].PkScript)
		if errors.Is(err, envelope.ErrNotIntegrity) {
			continue
		}
		if err != nil {
			l.logger().Warn("addrlog: skipping a malformed message", "address", addr, "tx", tx.Hash(), "err", err)
			continue
		}
		out = append(out, Message{Message: m, TxID: tx.Hash(), Height: tx.Height})
	}
	return out, nil
}

// Payers returns the P2PKH addresses (HASH160) that signed payments to
// addr, oldest first, each once.
func (l *Log) Payers(ctx context.Context, addr address.Address) ([][20]byte, error) {
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("addrlog: %w", err)
	}
	txs, err := l.Backend.AddressTxs(ctx, addr)
	if err != nil {
		return nil, err
	}
	seen := map[[20]byte]bool{}
	var out [][20]byte
	for i := range txs {
		pays := false
		for _, o := range txs[i].MsgTx.TxOut {
			if string(o.PkScript) == string(pk) {
				pays = true
			}
		}
		if !pays {
			continue
		}
		for _, p := range txs[i].PrevOuts {
			if h, ok := P2PKHHash(p.PkScript); ok && !seen[h] {
				seen[h] = true
				out = append(out, h)
			}
		}
	}
	return out, nil
}

// P2PKHHash returns the HASH160 a P2PKH script pays.
func P2PKHHash(script []byte) ([20]byte, bool) {
	var h [20]byte
	if len(script) != 25 || script[0] != txscript.OP_DUP || script[1] != txscript.OP_HASH160 ||
		script[2] != 20 || script[23] != txscript.OP_EQUALVERIFY || script[24] != txscript.OP_CHECKSIG {
		return h, false
	}
	copy(h[:], script[3:23])
	return h, true
}

func (l *Log) logger() *slog.Logger {
	if l.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Logger
}
