package wallet

import (
	"bytes"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

func testKey(t *testing.T) *Key {
	t.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKey(priv, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verify runs btcd's script engine on every input.
func verify(t *testing.T, tx *wire.MsgTx, prev []chain.UTXO) {
	t.Helper()
	fetcher := txscript.NewMultiPrevOutFetcher(nil)
	for _, p := range prev {
		fetcher.AddPrevOut(p.OutPoint, wire.NewTxOut(p.Value, p.PkScript))
	}
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, p := range prev {
		vm, err := txscript.NewEngine(p.PkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, p.Value, fetcher)
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.Execute(); err != nil {
			t.Fatalf("input %d does not verify: %v", i, err)
		}
	}
}

func utxo(k *Key, idx uint32, value int64) chain.UTXO {
	return chain.UTXO{OutPoint: wire.OutPoint{Hash: [32]byte{byte(idx), 7}, Index: idx}, Value: value, PkScript: k.PkScript(), Height: 5}
}

func TestCommitLayoutAndFee(t *testing.T) {
	k := testKey(t)
	script := append([]byte{0x6a, 0x4d, 0xe8, 0x03}, make([]byte, 1000)...)
	in := []chain.UTXO{utxo(k, 0, 100_000), utxo(k, 1, 5_000)}
	tx, head, err := k.Commit(in, script, 1)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, tx, in)
	if len(tx.TxOut) != 2 || !bytes.Equal(tx.TxOut[0].PkScript, script) || tx.TxOut[0].Value != 0 {
		t.Fatalf("output 0 is not the OP_RETURN: %+v", tx.TxOut[0])
	}
	if !bytes.Equal(tx.TxOut[1].PkScript, k.PkScript()) || head.OutPoint != (wire.OutPoint{Hash: tx.TxHash(), Index: 1}) || head.Value != tx.TxOut[1].Value {
		t.Fatalf("output 1 is not the new head: %+v vs %+v", tx.TxOut[1], head)
	}
	paid := 105_000 - head.Value
	size := int64(tx.SerializeSize())
	// At 1 sat/byte the fee covers the real size, and overpays by at most
	// the signature-length slack of the inputs.
	if paid < size || paid > size+2*2 {
		t.Fatalf("fee %d for a %d-byte transaction", paid, size)
	}
	if got := CommitFee(2, len(script), 1); got != paid {
		t.Fatalf("CommitFee %d, paid %d", got, paid)
	}
}

func TestCommitNeedsHeadAndFunds(t *testing.T) {
	k := testKey(t)
	if _, _, err := k.Commit(nil, []byte{0x6a}, 1); err == nil {
		t.Fatal("commit without inputs")
	}
	_, _, err := k.Commit([]chain.UTXO{utxo(k, 0, 700)}, append([]byte{0x6a, 0x4c, 200}, make([]byte, 200)...), 1)
	var ife *InsufficientFundsError
	if !errors.As(err, &ife) || !errors.Is(err, ErrInsufficientFunds) || ife.Need <= 700 {
		t.Fatalf("commit beyond funds: %v", err)
	}
}

func TestSpendChangeAndDust(t *testing.T) {
	k, to := testKey(t), testKey(t)
	in := []chain.UTXO{utxo(k, 0, 50_000)}
	tx, err := k.Spend(in, []*wire.TxOut{wire.NewTxOut(40_000, to.PkScript())}, 1)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, tx, in)
	if len(tx.TxOut) != 2 || !bytes.Equal(tx.TxOut[1].PkScript, k.PkScript()) {
		t.Fatalf("no change output: %+v", tx.TxOut)
	}
	// Change that would be dust goes to the miner.
	tx, err = k.Spend(in, []*wire.TxOut{wire.NewTxOut(50_000-300, to.PkScript())}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(tx.TxOut) != 1 {
		t.Fatalf("dust change kept: %+v", tx.TxOut)
	}
	if _, err := k.Spend(in, []*wire.TxOut{wire.NewTxOut(50_000, to.PkScript())}, 1); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("overspend: %v", err)
	}
}

func TestDeriveKeyDeterministic(t *testing.T) {
	seed := bytes.Repeat([]byte{3}, 32)
	a, err := DeriveKey(seed, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DeriveKey(seed, &chaincfg.RegressionNetParams)
	c, _ := DeriveKey(bytes.Repeat([]byte{4}, 32), &chaincfg.RegressionNetParams)
	if a.Address().EncodeAddress() != b.Address().EncodeAddress() || a.Address().EncodeAddress() == c.Address().EncodeAddress() {
		t.Fatal("wallet key is not a function of the seed")
	}
	if _, err := DeriveKey([]byte{1, 2}, &chaincfg.RegressionNetParams); err == nil {
		t.Fatal("short seed accepted")
	}
}
