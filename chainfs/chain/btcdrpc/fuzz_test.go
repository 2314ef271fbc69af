package btcdrpc

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

// These targets cover the code that turns a node's bytes into integrity's
// types: whatever a (broken or hostile) node answers, the client returns
// an error or a value — it never panics.

func sampleTxHex(t testing.TB) (string, *wire.MsgTx) {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{1}}, []byte{1, 2}, nil))
	tx.AddTxOut(wire.NewTxOut(5000, []byte{0x76, 0xa9}))
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(buf.Bytes()), tx
}

func FuzzRowsFromSearch(f *testing.F) {
	txHex, tx := sampleTxHex(f)
	good, _ := json.Marshal([]btcjson.SearchRawTransactionsResult{
		{Hex: txHex, Txid: tx.TxHash().String()},
		{Hex: txHex, Txid: tx.TxHash().String(), BlockHash: chainhash.Hash{2}.String()},
	})
	f.Add(good)
	f.Add([]byte(`[{"hex":"00","txid":"x"}]`))
	f.Add([]byte(`[{"hex":"zz"}]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var res []btcjson.SearchRawTransactionsResult
		if json.Unmarshal(data, &res) != nil {
			return
		}
		rows, err := rowsFromSearch(res)
		if err != nil {
			return
		}
		var pool []chain.Tx
		for _, r := range rows {
			if r.tx.TxHash() != r.hash {
				t.Fatalf("row hash %s does not match its transaction", r.hash)
			}
			if r.block == nil {
				pool = append(pool, chain.Tx{MsgTx: r.tx})
			}
		}
		if out := dependencyOrder(pool); len(out) != len(pool) {
			t.Fatalf("dependencyOrder lost transactions: %d of %d", len(out), len(pool))
		}
	})
}

func FuzzParseTemplate(f *testing.F) {
	txHex, _ := sampleTxHex(f)
	v := int64(5_000_000_000)
	good, _ := json.Marshal(btcjson.GetBlockTemplateResult{
		Bits: "207fffff", CurTime: 1700000000, Height: 5, PreviousHash: chainhash.Hash{3}.String(),
		Version: 0x20000000, CoinbaseValue: &v,
		Transactions:             []btcjson.GetBlockTemplateResultTx{{Data: txHex}},
		DefaultWitnessCommitment: hex.EncodeToString(make([]byte, 32)),
	})
	f.Add(good)
	f.Add([]byte(`{"bits":"zz","height":1}`))
	f.Add([]byte(`{"bits":"1d00ffff","height":-1,"coinbasevalue":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var res btcjson.GetBlockTemplateResult
		if json.Unmarshal(data, &res) != nil {
			return
		}
		tmpl, err := parseTemplate(&res)
		if err != nil {
			return
		}
		blk, err := buildBlock(tmpl, []byte{0x51}, 7)
		if err != nil {
			return
		}
		if len(blk.Transactions) != len(tmpl.txs)+1 || !chain.IsCoinbase(blk.Transactions[0]) {
			t.Fatalf("block of %d transactions from a template of %d", len(blk.Transactions), len(tmpl.txs))
		}
	})
}

func FuzzParsePostReply(f *testing.F) {
	f.Add(200, []byte(`{"result":{"hash":"00","height":1},"error":null,"id":1}`))
	f.Add(500, []byte(`{"result":null,"error":{"code":-5,"message":"No information available about address"},"id":1}`))
	f.Add(401, []byte("401 Unauthorized.\n"))
	f.Add(200, []byte(`{"id":1}`))
	f.Add(503, []byte(``))
	f.Fuzz(func(t *testing.T, status int, data []byte) {
		raw, err := parsePostReply(status, data)
		if err == nil && !json.Valid(raw) {
			t.Fatalf("accepted reply %q yields invalid JSON %q", data, raw)
		}
	})
}

func FuzzDecodeBlock(f *testing.F) {
	var buf bytes.Buffer
	_ = (&wire.MsgBlock{Header: wire.BlockHeader{Version: 1}}).Serialize(&buf)
	f.Add(hex.EncodeToString(buf.Bytes()))
	f.Add("00")
	f.Fuzz(func(t *testing.T, s string) {
		if blk, err := decodeBlock(s); err == nil {
			_ = blk.BlockHash()
		}
		if tx, err := decodeTx(s); err == nil {
			_ = outputsOf(tx)
		}
	})
}
