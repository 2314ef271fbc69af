package wallet

import (
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

// Sizes used to budget fees before signing. A P2PKH signature script is at
// most one push of a 72-byte DER signature plus sighash byte and one push
// of a 33-byte compressed key.
const (
	maxSigScriptLen = 1 + 73 + 1 + 33
	// DustLimit is the smallest P2PKH output btcd relays at its default
	// minimum relay fee (mempool.GetDustThreshold for a 25-byte script).
	DustLimit = 546
	// DefaultFeeRate in satoshis per byte: btcd's default minimum relay
	// fee (1,000 sat/kB). Fees are computed on the largest size the
	// signed transaction can have, so this always clears the minimum.
	DefaultFeeRate = 1
)

// ErrInsufficientFunds means the inputs cannot pay the outputs and fee.
var ErrInsufficientFunds = errors.New("insufficient funds")

// InsufficientFundsError says how much was missing.
type InsufficientFundsError struct {
	Have, Need int64
}

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("insufficient funds: have %d sat, need %d sat", e.Have, e.Need)
}

func (e *InsufficientFundsError) Unwrap() error { return ErrInsufficientFunds }

// Key is a private key that controls one P2PKH address, with the values
// derived from it computed once (btcd's SignatureScript would recompute
// the public key on every signature).
type Key struct {
	priv     *btcec.PrivateKey
	pub      []byte // compressed
	addr     *address.AddressPubKeyHash
	pkScript []byte
}

// NewKey wraps a private key for a network.
func NewKey(priv *btcec.PrivateKey, params *chaincfg.Params) (*Key, error) {
	pub := priv.PubKey().SerializeCompressed()
	addr, err := address.NewAddressPubKeyHash(address.Hash160(pub), params)
	if err != nil {
		return nil, fmt.Errorf("wallet: address: %w", err)
	}
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("wallet: script: %w", err)
	}
	return &Key{priv: priv, pub: pub, addr: addr, pkScript: pk}, nil
}

// Address is the key's P2PKH address.
func (k *Key) Address() *address.AddressPubKeyHash { return k.addr }

// PkScript is the output script paying the key's address.
func (k *Key) PkScript() []byte { return k.pkScript }

// PubKey is the compressed public key.
func (k *Key) PubKey() []byte { return k.pub }

// PrivKey exposes the private key for protocols that sign messages with a
// node's write key (image servers). Callers must not persist it.
func (k *Key) PrivKey() *btcec.PrivateKey { return k.priv }

// sign fills input idx's signature script; the input must spend an output
// paying this key's address.
func (k *Key) sign(tx *wire.MsgTx, idx int) error {
	hash, err := txscript.CalcSignatureHash(k.pkScript, txscript.SigHashAll, tx, idx)
	if err != nil {
		return fmt.Errorf("wallet: signature hash: %w", err)
	}
	sig := ecdsa.Sign(k.priv, hash).Serialize()
	script, err := txscript.NewScriptBuilder().
		AddData(append(sig, byte(txscript.SigHashAll))).
		AddData(k.pub).
		Script()
	if err != nil {
		return fmt.Errorf("wallet: signature script: %w", err)
	}
	tx.TxIn[idx].SignatureScript = script
	return nil
}

// fee returns the fee for tx once every input is signed, at rate sat/byte.
func fee(tx *wire.MsgTx, rate int64) int64 {
	size := tx.SerializeSize()
	for _, in := range tx.TxIn {
		size += maxSigScriptLen - len(in.SignatureScript)
	}
	return int64(size) * rate
}

// Spend builds and signs a transaction spending inputs — all paying k's
// address — to outs, with any change of at least DustLimit back to k's
// address as the last output (smaller change goes to the miner).
func (k *Key) Spend(inputs []chain.UTXO, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	tx := wire.NewMsgTx(wire.TxVersion)
	var have, want int64
	for _, in := range inputs {
		tx.AddTxIn(wire.NewTxIn(&in.OutPoint, nil, nil))
		have += in.Value
	}
	for _, o := range outs {
		tx.AddTxOut(o)
		want += o.Value
	}
	tx.AddTxOut(wire.NewTxOut(0, k.pkScript))
	f := fee(tx, feeRate)
	switch change := have - want - f; {
	case change >= DustLimit:
		tx.TxOut[len(tx.TxOut)-1].Value = change
	case change < 0:
		return nil, &InsufficientFundsError{Have: have, Need: want + f}
	default:
		tx.TxOut = tx.TxOut[:len(tx.TxOut)-1]
	}
	for i := range tx.TxIn {
		if err := k.sign(tx, i); err != nil {
			return nil, err
		}
	}
	return tx, nil
}

// Commit builds and signs a node commit (docs/PROTOCOL.md, "Commits"):
// it spends inputs — all paying k's address, inputs[0] being the node's
// current head — into output 0, the OP_RETURN script, and output 1, the
// change back to k's address, which becomes the new head. The spend chain
// this forms is what orders a node's commits and makes concurrent writers
// collide. Wallet.Commit is the variant that tops a node up.
func (k *Key) Commit(inputs []chain.UTXO, opReturn []byte, feeRate int64) (*wire.MsgTx, chain.UTXO, error) {
	if len(inputs) == 0 {
		return nil, chain.UTXO{}, errors.New("wallet: commit needs at least one input (the node's head)")
	}
	tx, change, err := k.spendHeadSecond(inputs, []*wire.TxOut{wire.NewTxOut(0, opReturn)}, feeRate)
	if err != nil {
		return nil, chain.UTXO{}, err
	}
	return tx, headOf(tx, k, change), nil
}

// CommitFee returns the fee a commit with nInputs inputs and an OP_RETURN
// script of scriptLen bytes pays at feeRate, so callers can fund nodes
// before they commit.
func CommitFee(nInputs, scriptLen int, feeRate int64) int64 {
	tx := wire.NewMsgTx(wire.TxVersion)
	for i := 0; i < nInputs; i++ {
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, nil))
	}
	tx.AddTxOut(wire.NewTxOut(0, make([]byte, scriptLen)))
	tx.AddTxOut(wire.NewTxOut(0, make([]byte, 25)))
	return fee(tx, feeRate)
}
