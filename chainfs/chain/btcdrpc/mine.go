package btcdrpc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

// coinbaseFlags marks blocks this client mined.
const coinbaseFlags = "/integrity/"

// witnessMagic prefixes a BIP141 witness commitment output script.
var witnessMagic = []byte{txscript.OP_RETURN, txscript.OP_DATA_36, 0xaa, 0x21, 0xa9, 0xed}

// template is what a block needs besides its coinbase.
type template struct {
	height     int32
	prev       chainhash.Hash
	version    int32
	time       time.Time
	bits       uint32
	value      int64 // coinbase value: subsidy plus fees
	txs        []*wire.MsgTx
	commitment []byte // witness commitment output script, if required
}

// Mine implements chain.Backend. btcd's own generate RPC pays only its
// --miningaddr, so Mine takes getblocktemplate's transactions, builds a
// coinbase paying payTo, solves the (trivial) proof of work and submits
// the block. Only simnet and regtest, whose work a CPU does instantly.
func (c *Client) Mine(ctx context.Context, n int, payTo address.Address) ([]chainhash.Hash, error) {
	if !canMine(c.params) {
		return nil, fmt.Errorf("btcd: mining on %s: %w", c.params.Name, chain.ErrUnsupported)
	}
	if payTo == nil || !payTo.IsForNet(c.params) {
		return nil, fmt.Errorf("btcd: mine: address %v is not for network %s", payTo, c.params.Name)
	}
	pkScript, err := txscript.PayToAddrScript(payTo)
	if err != nil {
		return nil, fmt.Errorf("btcd: mine: %w", err)
	}
	c.mineMu.Lock()
	defer c.mineMu.Unlock()
	var hashes []chainhash.Hash
	for i := 0; i < n; i++ {
		h, err := c.mineOne(ctx, pkScript)
		if err != nil {
			return hashes, err
		}
		hashes = append(hashes, h)
	}
	return hashes, nil
}

func canMine(p *chaincfg.Params) bool {
	return p.Name == chaincfg.SimNetParams.Name || p.Name == chaincfg.RegressionNetParams.Name
}

// mineOne mines a block on the current tip. A block that loses a race
// with another miner is retried on the new tip.
func (c *Client) mineOne(ctx context.Context, pkScript []byte) (chainhash.Hash, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		tmpl, err := c.template(ctx)
		if err != nil {
			return chainhash.Hash{}, err
		}
		h, err := c.submit(ctx, tmpl, pkScript)
		if !errors.Is(err, errStale) {
			return h, err
		}
		lastErr = err
	}
	return chainhash.Hash{}, lastErr
}

var errStale = errors.New("mined block is not the node's best block")

// template asks the node for a block template. A simnet or regtest chain
// idle for more than a day makes btcd think it is still syncing and refuse
// templates; a first empty block stamped "now" wakes it up.
func (c *Client) template(ctx context.Context) (*template, error) {
	req := &btcjson.TemplateRequest{
		Mode:         "template",
		Capabilities: []string{"coinbasevalue"},
		Rules:        []string{"segwit"},
	}
	var res btcjson.GetBlockTemplateResult
	err := c.call(ctx, btcjson.NewGetBlockTemplateCmd(req), &res)
	var re *btcjson.RPCError
	if errors.As(err, &re) && re.Code == btcjson.ErrRPCClientInInitialDownload {
		c.log.Info("btcd: chain tip is older than a day; mining an empty block to bring it current")
		return c.wakeTemplate(ctx)
	}
	if err != nil {
		return nil, c.unexpected(err)
	}
	t, err := parseTemplate(&res)
	if err != nil {
		return nil, c.unavailable("getblocktemplate: "+err.Error(), err)
	}
	return t, nil
}

// parseTemplate checks and decodes a getblocktemplate answer.
func parseTemplate(res *btcjson.GetBlockTemplateResult) (*template, error) {
	if res.Height <= 0 || res.Height > 1<<31-1 {
		return nil, fmt.Errorf("height %d out of range", res.Height)
	}
	if res.CoinbaseValue == nil || *res.CoinbaseValue < 0 || *res.CoinbaseValue > btcutil.MaxSatoshi {
		return nil, errors.New("no valid coinbasevalue")
	}
	prev, err := chainhash.NewHashFromStr(res.PreviousHash)
	if err != nil {
		return nil, fmt.Errorf("previousblockhash: %w", err)
	}
	bits, err := strconv.ParseUint(res.Bits, 16, 32)
	if err != nil {
		return nil, fmt.Errorf("bits %q: %w", res.Bits, err)
	}
	t := &template{
		height:  int32(res.Height),
		prev:    *prev,
		version: res.Version,
		time:    time.Unix(res.CurTime, 0),
		bits:    uint32(bits),
		value:   *res.CoinbaseValue,
	}
	for i, tx := range res.Transactions {
		m, err := decodeTx(tx.Data)
		if err != nil {
			return nil, fmt.Errorf("transaction %d: %w", i, err)
		}
		t.txs = append(t.txs, m)
	}
	if s := res.DefaultWitnessCommitment; s != "" {
		raw, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("witness commitment: %w", err)
		}
		switch {
		case len(raw) == 32: // btcd sends the bare commitment
			t.commitment = append(bytes.Clone(witnessMagic), raw...)
		case len(raw) == 38 && bytes.HasPrefix(raw, witnessMagic): // Bitcoin Core, the script
			t.commitment = raw
		default:
			return nil, fmt.Errorf("witness commitment of %d bytes", len(raw))
		}
	}
	return t, nil
}

// wakeTemplate is an empty block on the tip at the minimum difficulty,
// which simnet and regtest allow after a long gap between blocks.
func (c *Client) wakeTemplate(ctx context.Context) (*template, error) {
	best, err := c.bestBlock(ctx)
	if err != nil {
		return nil, err
	}
	prevTime, err := c.blockTime(ctx, best.Hash)
	if err != nil {
		return nil, err
	}
	now := time.Unix(time.Now().Unix(), 0)
	if !now.After(prevTime) {
		now = prevTime.Add(time.Second)
	}
	height := best.Height + 1
	return &template{
		height:  height,
		prev:    best.Hash,
		version: 0x20000000, // BIP9 version bits, no deployments signalled
		time:    now,
		bits:    c.params.PowLimitBits,
		value:   blockchain.CalcBlockSubsidy(height, c.params),
	}, nil
}

// buildBlock assembles a block from a template with a coinbase paying
// pkScript; extraNonce makes the coinbase (and so the block) unique.
func buildBlock(t *template, pkScript []byte, extraNonce uint64) (*wire.MsgBlock, error) {
	script, err := txscript.NewScriptBuilder().
		AddInt64(int64(t.height)). // BIP34
		AddInt64(int64(extraNonce & (1<<62 - 1))).
		AddData([]byte(coinbaseFlags)).
		Script()
	if err != nil {
		return nil, fmt.Errorf("coinbase script: %w", err)
	}
	cb := wire.NewMsgTx(wire.TxVersion)
	cb.AddTxIn(&wire.TxIn{
		PreviousOutPoint: wire.OutPoint{Index: wire.MaxPrevOutIndex},
		SignatureScript:  script,
		Sequence:         wire.MaxTxInSequenceNum,
	})
	cb.AddTxOut(wire.NewTxOut(t.value, pkScript))
	if t.commitment != nil {
		// The commitment covers the other transactions' witnesses
		// with this all-zero coinbase witness, as btcd's template did.
		cb.TxIn[0].Witness = wire.TxWitness{make([]byte, blockchain.CoinbaseWitnessDataLen)}
		cb.AddTxOut(wire.NewTxOut(0, t.commitment))
	}
	blk := &wire.MsgBlock{
		Header: wire.BlockHeader{
			Version:   t.version,
			PrevBlock: t.prev,
			Timestamp: t.time,
			Bits:      t.bits,
		},
		Transactions: append([]*wire.MsgTx{cb}, t.txs...),
	}
	utxs := make([]*btcutil.Tx, len(blk.Transactions))
	for i, tx := range blk.Transactions {
		utxs[i] = btcutil.NewTx(tx)
	}
	blk.Header.MerkleRoot = blockchain.CalcMerkleRoot(utxs, false)
	return blk, nil
}

// solve searches nonces (and extra nonces) for proof of work.
func solve(ctx context.Context, t *template, pkScript []byte) (*wire.MsgBlock, error) {
	target := blockchain.CompactToBig(t.bits)
	if target.Sign() <= 0 {
		return nil, fmt.Errorf("template target %#08x is not positive", t.bits)
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("extra nonce: %w", err)
	}
	extra := binary.LittleEndian.Uint64(seed[:])
	var hashNum big.Int
	for {
		blk, err := buildBlock(t, pkScript, extra)
		if err != nil {
			return nil, err
		}
		for nonce := uint64(0); nonce <= 0xffffffff; nonce++ {
			if nonce&0xffff == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			blk.Header.Nonce = uint32(nonce)
			h := blk.Header.BlockHash()
			if hashToBig(&h, &hashNum).Cmp(target) <= 0 {
				return blk, nil
			}
		}
		extra++
	}
}

// hashToBig reads a block hash as the little-endian number PoW compares.
func hashToBig(h *chainhash.Hash, out *big.Int) *big.Int {
	var be [32]byte
	for i := range h {
		be[31-i] = h[i]
	}
	return out.SetBytes(be[:])
}

// submit solves and submits a block and waits until it is the node's best.
func (c *Client) submit(ctx context.Context, t *template, pkScript []byte) (chainhash.Hash, error) {
	blk, err := solve(ctx, t, pkScript)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("btcd: mine block %d: %w", t.height, err)
	}
	var buf bytes.Buffer
	if err := blk.Serialize(&buf); err != nil {
		return chainhash.Hash{}, fmt.Errorf("btcd: serialize block: %w", err)
	}
	hash := blk.BlockHash()
	// submitblock answers null, or a string saying why it refused.
	var reason *string
	if err := c.call(ctx, btcjson.NewSubmitBlockCmd(hex.EncodeToString(buf.Bytes()), nil), &reason); err != nil {
		return chainhash.Hash{}, c.unexpected(err)
	}
	if reason != nil && *reason != "" {
		return chainhash.Hash{}, fmt.Errorf("btcd: block %s at height %d refused: %s", hash, t.height, *reason)
	}
	// submitblock returns once btcd has processed the block; it is the
	// tip unless another miner's block won.
	best, err := c.bestBlock(ctx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	if best.Hash != hash {
		return chainhash.Hash{}, fmt.Errorf("btcd: block %s at height %d: %w (tip is %s at %d)", hash, t.height, errStale, best.Hash, best.Height)
	}
	return hash, nil
}
