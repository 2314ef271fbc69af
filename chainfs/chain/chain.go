// Package chain is the paper's Blockchain Data Interface: the one interface
// through which integrity reads and writes a Bitcoin-protocol chain.
//
// Two backends implement it: chainfs/chain/embedded (an in-process regtest
// chain built from btcd's own packages) and chainfs/chain/btcdrpc (a btcd
// node over JSON-RPC). chainfs/chain/chaintest holds the contract test suite
// both must pass. Everything above this package is written against Backend
// only.
package chain

import (
	"context"
	"errors"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// Errors every backend maps its failures onto, so callers can branch with
// errors.Is whatever the backend.
var (
	// ErrConflict: the transaction spends an output that another
	// transaction (in the mempool or a block) already spends, or that does
	// not exist. For node commits this means another writer got there
	// first.
	ErrConflict = errors.New("chain: conflicting spend")
	// ErrRejected: the transaction is invalid or against policy for a
	// reason other than a conflict (bad signature, fee too low, ...).
	ErrRejected = errors.New("chain: transaction rejected")
	// ErrNotFound: no such transaction or block.
	ErrNotFound = errors.New("chain: not found")
	// ErrUnavailable: the backend cannot be reached or is not ready. An
	// answer that fails with it says nothing about the chain's contents
	// (an unreachable node is never "no transactions").
	ErrUnavailable = errors.New("chain: backend unavailable")
	// ErrUnsupported: the backend cannot do this (mining on a public
	// network, for instance).
	ErrUnsupported = errors.New("chain: operation not supported by this backend")
)

// Tx is a transaction as seen from the chain.
type Tx struct {
	MsgTx *wire.MsgTx
	// Height of the containing block, or -1 while unconfirmed.
	Height int32
	// BlockHash is the containing block's hash (zero while unconfirmed).
	BlockHash chainhash.Hash
	// Index is the position inside the block; for unconfirmed
	// transactions, the position in the backend's dependency order.
	Index int
	// Time is the block's timestamp, or when the backend first saw an
	// unconfirmed transaction.
	Time time.Time
	// PrevOuts holds, for each input in order, the output it spends.
	// Coinbase inputs get a zero PrevOut.
	PrevOuts []PrevOut
}

// PrevOut is the output an input spends.
type PrevOut struct {
	PkScript []byte
	Value    int64
}

// Hash returns the transaction id.
func (t *Tx) Hash() chainhash.Hash { return t.MsgTx.TxHash() }

// Confirmed reports whether the transaction is in a block.
func (t *Tx) Confirmed() bool { return t.Height >= 0 }

// UTXO is an unspent output.
type UTXO struct {
	OutPoint wire.OutPoint
	Value    int64
	PkScript []byte
	// Height of the block that created it, or -1 while unconfirmed.
	Height   int32
	Coinbase bool
}

// Tip is the best block.
type Tip struct {
	Height int32
	Hash   chainhash.Hash
	Time   time.Time
}

// Status describes a backend for `integrity chain status`.
type Status struct {
	Backend     string // "embedded" or "btcd"
	Network     string // chaincfg network name
	Endpoint    string // data directory or RPC host
	Tip         Tip
	MempoolSize int
}

// EventKind says what an Event announces.
type EventKind int

const (
	// EventTx: a transaction entered the mempool.
	EventTx EventKind = iota + 1
	// EventBlock: a block was connected to the best chain; Txs holds its
	// transactions.
	EventBlock
)

// Event is a notification from Subscribe.
type Event struct {
	Kind EventKind
	Tip  Tip  // the best block after this event
	Txs  []Tx // the new transaction, or the block's transactions
}

// Backend is the Blockchain Data Interface.
//
// Every method takes a context for cancellation; every failure to reach the
// chain is reported as (a wrap of) ErrUnavailable, never as an empty answer.
type Backend interface {
	// Params are the network's parameters (address encoding, maturity).
	Params() *chaincfg.Params

	// AddressTxs returns every transaction that pays to addr or spends an
	// output paying to it: confirmed ones in chain order (height, then
	// position in block), then unconfirmed ones in dependency order.
	AddressTxs(ctx context.Context, addr address.Address) ([]Tx, error)

	// UTXOs returns addr's unspent outputs, counting unconfirmed
	// transactions (outputs they create are included, outputs they spend
	// are not).
	UTXOs(ctx context.Context, addr address.Address) ([]UTXO, error)

	// GetTx returns one transaction, confirmed or in the mempool
	// (ErrNotFound otherwise).
	GetTx(ctx context.Context, hash chainhash.Hash) (*Tx, error)

	// Broadcast submits a transaction. It returns once the backend has
	// accepted it into its mempool (ErrConflict or ErrRejected otherwise).
	Broadcast(ctx context.Context, tx *wire.MsgTx) error

	// Tip returns the best block.
	Tip(ctx context.Context) (Tip, error)

	// Status describes the backend.
	Status(ctx context.Context) (Status, error)

	// Subscribe delivers events until ctx ends, then closes the channel.
	// A slow reader may miss events (the channel is buffered, not
	// blocking the chain); callers treat events as hints and re-read
	// state from AddressTxs when they matter.
	Subscribe(ctx context.Context) <-chan Event

	// Mine mines n blocks paying their coinbase to payTo and returns their
	// hashes once they are part of the best chain and durable. Backends
	// that cannot mine return ErrUnsupported.
	Mine(ctx context.Context, n int, payTo address.Address) ([]chainhash.Hash, error)

	// Close releases the backend.
	Close() error
}
