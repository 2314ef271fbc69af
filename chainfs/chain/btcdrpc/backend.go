package btcdrpc

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

const (
	// defaultPageSize is how many transactions one searchrawtransactions call
	// returns; commits can carry 90 KB each, so pages stay modest.
	defaultPageSize = 200
	// historyAttempts: AddressTxs re-reads when a block arrived during
	// the read, since the node's answer then may miss or repeat entries.
	historyAttempts = 5
	// inFlight caps pipelined requests (btcd serves 20 at once per client
	// by default; the rest queue on its side).
	inFlight = 64
	// maxSeen bounds the first-seen times kept for mempool transactions.
	maxSeen = 100_000
)

var errTrailing = errors.New("trailing bytes")

// errChanged: the chain moved under a multi-request read; retry it.
var errChanged = errors.New("chain changed during the read")

func searchCmd(addr address.Address, skip, count int) *btcjson.SearchRawTransactionsCmd {
	return btcjson.NewSearchRawTransactionsCmd(addr.EncodeAddress(),
		btcjson.Int(1), btcjson.Int(skip), btcjson.Int(count), btcjson.Int(0), btcjson.Bool(false), nil)
}

// zeroAddress is a valid address nobody can spend from, used to probe the
// address index.
func zeroAddress(p *chaincfg.Params) (address.Address, error) {
	return address.NewAddressPubKeyHash(make([]byte, 20), p)
}

// AddressTxs implements chain.Backend. Confirmed transactions come in chain
// order with Index their real position in the block; unconfirmed ones
// follow in dependency order (btcd returns them in map order), ties broken
// by when this client first saw them, and Index is that order.
func (c *Client) AddressTxs(ctx context.Context, addr address.Address) ([]chain.Tx, error) {
	if addr == nil || !addr.IsForNet(c.params) {
		return nil, fmt.Errorf("btcd: address %v is not for network %s", addr, c.params.Name)
	}
	for attempt := 0; attempt < historyAttempts; attempt++ {
		before, err := c.bestBlock(ctx)
		if err != nil {
			return nil, err
		}
		rows, err := c.search(ctx, addr)
		if err != nil {
			return nil, err
		}
		after, err := c.bestBlock(ctx)
		if err != nil {
			return nil, err
		}
		if before.Hash != after.Hash {
			continue
		}
		txs, err := c.history(ctx, rows)
		if errors.Is(err, errChanged) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("btcd: transactions of %s: %w", addr, err)
		}
		return txs, nil
	}
	return nil, c.unavailable(fmt.Sprintf("transactions of %s: the chain kept changing during %d reads", addr, historyAttempts), nil)
}

// search pages through searchrawtransactions. The node lists confirmed
// transactions first (index order), then mempool ones in map order — which
// differs per call, so the mempool part is fetched in a single call.
func (c *Client) search(ctx context.Context, addr address.Address) ([]row, error) {
	var out []row
	for skip := 0; ; {
		page, err := c.searchPage(ctx, addr, skip, c.pageSize)
		if err != nil {
			return nil, err
		}
		confirmed := 0
		for _, r := range page {
			if r.block != nil {
				confirmed++
			}
		}
		if confirmed < len(page) && len(page) == c.pageSize {
			// The mempool part may continue on the next page: read
			// it whole, sized by the mempool (the most it can be).
			for _, r := range page {
				if r.block != nil {
					out = append(out, r)
				}
			}
			rest, err := c.searchRest(ctx, addr, skip+confirmed)
			if err != nil {
				return nil, err
			}
			return append(out, rest...), nil
		}
		out = append(out, page...)
		if len(page) < c.pageSize {
			return out, nil
		}
		skip += len(page)
	}
}

func (c *Client) searchRest(ctx context.Context, addr address.Address, skip int) ([]row, error) {
	var info btcjson.GetMempoolInfoResult
	if err := c.call(ctx, btcjson.NewGetMempoolInfoCmd(), &info); err != nil {
		return nil, c.unexpected(err)
	}
	count := int(info.Size) + c.pageSize
	for {
		rows, err := c.searchPage(ctx, addr, skip, count)
		if err != nil {
			return nil, err
		}
		if len(rows) < count {
			return rows, nil
		}
		count *= 2 // the mempool grew meanwhile
	}
}

func (c *Client) searchPage(ctx context.Context, addr address.Address, skip, count int) ([]row, error) {
	var res []btcjson.SearchRawTransactionsResult
	err := c.call(ctx, searchCmd(addr, skip, count), &res)
	if isNoAddressInfo(err) {
		return nil, nil // no (more) transactions: btcd says so with an error
	}
	if err != nil {
		return nil, c.unexpected(err)
	}
	rows, err := rowsFromSearch(res)
	if err != nil {
		return nil, c.unavailable("searchrawtransactions: "+err.Error(), err)
	}
	return rows, nil
}

// row is one searchrawtransactions entry.
type row struct {
	tx    *wire.MsgTx
	hash  chainhash.Hash
	block *chainhash.Hash // nil while unconfirmed
}

// rowsFromSearch decodes the node's answer, checking each entry's txid
// against its bytes.
func rowsFromSearch(res []btcjson.SearchRawTransactionsResult) ([]row, error) {
	rows := make([]row, 0, len(res))
	for i := range res {
		r := &res[i]
		tx, err := decodeTx(r.Hex)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		h := tx.TxHash()
		if r.Txid != h.String() {
			return nil, fmt.Errorf("entry %d: txid %q does not match its bytes (%s)", i, r.Txid, h)
		}
		out := row{tx: tx, hash: h}
		if r.BlockHash != "" {
			bh, err := chainhash.NewHashFromStr(r.BlockHash)
			if err != nil {
				return nil, fmt.Errorf("entry %d: block hash: %w", i, err)
			}
			out.block = bh
		}
		rows = append(rows, out)
	}
	return rows, nil
}

// decodeTx decodes a hex transaction, rejecting trailing bytes.
func decodeTx(s string) (*wire.MsgTx, error) {
	raw, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("transaction hex: %w", err)
	}
	var tx wire.MsgTx
	r := bytes.NewReader(raw)
	if err := tx.Deserialize(r); err != nil {
		return nil, fmt.Errorf("decode transaction: %w", err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("decode transaction: %d trailing bytes", r.Len())
	}
	return &tx, nil
}

// history turns search rows into the contract's order with block
// positions, times and previous outputs filled in.
func (c *Client) history(ctx context.Context, rows []row) ([]chain.Tx, error) {
	// A transaction mined while the node answered can show up twice;
	// the confirmed entry wins.
	idx := make(map[chainhash.Hash]int, len(rows))
	var uniq []row
	for _, r := range rows {
		if i, ok := idx[r.hash]; ok {
			if uniq[i].block == nil && r.block != nil {
				uniq[i] = r
			}
			continue
		}
		idx[r.hash] = len(uniq)
		uniq = append(uniq, r)
	}
	var hashes []chainhash.Hash
	for _, r := range uniq {
		if r.block != nil {
			hashes = append(hashes, *r.block)
		}
	}
	blocks, err := c.blockInfos(ctx, hashes)
	if err != nil {
		return nil, err
	}
	var confirmed, pool []chain.Tx
	local := make(map[chainhash.Hash]*wire.MsgTx, len(uniq))
	for _, r := range uniq {
		local[r.hash] = r.tx
		if r.block == nil {
			pool = append(pool, chain.Tx{MsgTx: r.tx, Height: -1, Time: c.firstSeen(r.hash)})
			continue
		}
		b := blocks[*r.block]
		pos, ok := b.pos[r.hash]
		if !ok {
			return nil, errChanged
		}
		c.forget(r.hash)
		confirmed = append(confirmed, chain.Tx{MsgTx: r.tx, Height: b.height, BlockHash: b.hash, Index: pos, Time: b.time})
	}
	sort.SliceStable(confirmed, func(i, j int) bool {
		if confirmed[i].Height != confirmed[j].Height {
			return confirmed[i].Height < confirmed[j].Height
		}
		return confirmed[i].Index < confirmed[j].Index
	})
	out := append(confirmed, dependencyOrder(pool)...)
	if err := c.resolvePrevOuts(ctx, out, local); err != nil {
		return nil, err
	}
	return out, nil
}

// dependencyOrder sorts unconfirmed transactions so parents precede
// children, otherwise by Time then hash, and numbers them in Index.
func dependencyOrder(txs []chain.Tx) []chain.Tx {
	n := len(txs)
	hashes := make([]chainhash.Hash, n)
	for i := range txs {
		hashes[i] = txs[i].MsgTx.TxHash()
	}
	rank := make([]int, n)
	for i := range rank {
		rank[i] = i
	}
	sort.Slice(rank, func(a, b int) bool {
		ta, tb := txs[rank[a]].Time, txs[rank[b]].Time
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return bytes.Compare(hashes[rank[a]][:], hashes[rank[b]][:]) < 0
	})
	byHash := make(map[chainhash.Hash]int, n)
	for i, h := range hashes {
		byHash[h] = i
	}
	// Kahn's algorithm, always taking the best-ranked ready transaction.
	pos := make([]int, n) // position in rank order
	for p, i := range rank {
		pos[i] = p
	}
	waiting := make([]int, n)
	children := make([][]int, n)
	for i := range txs {
		seen := map[int]bool{}
		for _, in := range txs[i].MsgTx.TxIn {
			if p, ok := byHash[in.PreviousOutPoint.Hash]; ok && p != i && !seen[p] {
				seen[p] = true
				waiting[i]++
				children[p] = append(children[p], i)
			}
		}
	}
	ready := &intHeap{less: func(a, b int) bool { return pos[a] < pos[b] }}
	for i := range txs {
		if waiting[i] == 0 {
			ready.push(i)
		}
	}
	out := make([]chain.Tx, 0, n)
	done := make([]bool, n)
	for ready.len() > 0 {
		i := ready.pop()
		done[i] = true
		out = append(out, txs[i])
		for _, ch := range children[i] {
			if waiting[ch]--; waiting[ch] == 0 {
				ready.push(ch)
			}
		}
	}
	// A cycle cannot happen with real txids; keep anything left anyway.
	for _, i := range rank {
		if !done[i] {
			out = append(out, txs[i])
		}
	}
	for i := range out {
		out[i].Index = i
	}
	return out
}

// intHeap is a small binary heap of indices.
type intHeap struct {
	v    []int
	less func(a, b int) bool
}

func (h *intHeap) len() int { return len(h.v) }

func (h *intHeap) push(x int) {
	h.v = append(h.v, x)
	for i := len(h.v) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(h.v[i], h.v[p]) {
			break
		}
		h.v[i], h.v[p] = h.v[p], h.v[i]
		i = p
	}
}

func (h *intHeap) pop() int {
	top := h.v[0]
	last := len(h.v) - 1
	h.v[0] = h.v[last]
	h.v = h.v[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h.v) && h.less(h.v[l], h.v[m]) {
			m = l
		}
		if r < len(h.v) && h.less(h.v[r], h.v[m]) {
			m = r
		}
		if m == i {
			break
		}
		h.v[i], h.v[m] = h.v[m], h.v[i]
		i = m
	}
	return top
}

// blockInfo is what this client keeps of a block: enough to place a
// transaction in it. Blocks are immutable, so it is cached by hash.
type blockInfo struct {
	hash   chainhash.Hash
	height int32
	time   time.Time
	pos    map[chainhash.Hash]int
}

// blockInfos returns the given blocks, fetching unknown ones (getblock
// with txids) in parallel.
func (c *Client) blockInfos(ctx context.Context, hashes []chainhash.Hash) (map[chainhash.Hash]*blockInfo, error) {
	out := make(map[chainhash.Hash]*blockInfo)
	var missing []chainhash.Hash
	for _, h := range hashes {
		if _, ok := out[h]; ok {
			continue
		}
		if b, ok := c.blocks.get(h); ok {
			out[h] = b
			continue
		}
		out[h] = nil
		missing = append(missing, h)
	}
	for start := 0; start < len(missing); start += inFlight {
		batch := missing[start:min(start+inFlight, len(missing))]
		ps := make([]pending, len(batch))
		for i, h := range batch {
			p, err := c.send(ctx, btcjson.NewGetBlockCmd(h.String(), btcjson.Int(1)))
			if err != nil {
				return nil, err
			}
			ps[i] = p
		}
		var firstErr error
		for i, p := range ps {
			var res btcjson.GetBlockVerboseResult
			err := c.wait(ctx, p, &res)
			if err == nil {
				var b *blockInfo
				b, err = blockInfoFromVerbose(batch[i], &res)
				if err == nil {
					c.blocks.put(b.hash, b)
					out[b.hash] = b
					continue
				}
				err = c.unavailable("getblock: "+err.Error(), err)
			} else if isRPC(err) {
				// A block the index named but the node no
				// longer has: a reorganisation.
				err = errChanged
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		if firstErr != nil {
			return nil, firstErr
		}
	}
	return out, nil
}

func blockInfoFromVerbose(want chainhash.Hash, res *btcjson.GetBlockVerboseResult) (*blockInfo, error) {
	if res.Hash != want.String() {
		return nil, fmt.Errorf("asked for block %s, got %q", want, res.Hash)
	}
	if res.Height < 0 || res.Height > 1<<31-1 {
		return nil, fmt.Errorf("block %s: height %d out of range", want, res.Height)
	}
	b := &blockInfo{hash: want, height: int32(res.Height), time: time.Unix(res.Time, 0), pos: make(map[chainhash.Hash]int, len(res.Tx))}
	for i, s := range res.Tx {
		h, err := chainhash.NewHashFromStr(s)
		if err != nil {
			return nil, fmt.Errorf("block %s: txid %d: %w", want, i, err)
		}
		b.pos[*h] = i
	}
	return b, nil
}

// outputsOf returns a transaction's outputs as PrevOuts, with scripts
// copied (a decoded MsgTx keeps all scripts in one buffer, which a cache
// entry must not pin). OP_RETURN outputs can never be spent, so their
// (possibly 90 KB) scripts are not kept.
func outputsOf(tx *wire.MsgTx) []chain.PrevOut {
	out := make([]chain.PrevOut, len(tx.TxOut))
	for i, o := range tx.TxOut {
		out[i].Value = o.Value
		if len(o.PkScript) > 0 && o.PkScript[0] == txscript.OP_RETURN {
			continue
		}
		out[i].PkScript = bytes.Clone(o.PkScript)
	}
	return out
}

// resolvePrevOuts fills PrevOuts for txs, looking parents up in local (the
// transactions at hand), then the cache, then the node.
func (c *Client) resolvePrevOuts(ctx context.Context, txs []chain.Tx, local map[chainhash.Hash]*wire.MsgTx) error {
	var missing []chainhash.Hash
	want := make(map[chainhash.Hash]bool)
	for i := range txs {
		if chain.IsCoinbase(txs[i].MsgTx) {
			continue
		}
		for _, in := range txs[i].MsgTx.TxIn {
			h := in.PreviousOutPoint.Hash
			if local[h] != nil || want[h] {
				continue
			}
			if _, ok := c.txs.get(h); ok {
				continue
			}
			want[h] = true
			missing = append(missing, h)
		}
	}
	fetched := make(map[chainhash.Hash][]chain.PrevOut, len(missing))
	for start := 0; start < len(missing); start += inFlight {
		batch := missing[start:min(start+inFlight, len(missing))]
		ps := make([]pending, len(batch))
		for i, h := range batch {
			p, err := c.send(ctx, btcjson.NewGetRawTransactionCmd(h.String(), btcjson.Int(0)))
			if err != nil {
				return err
			}
			ps[i] = p
		}
		var firstErr error
		for i, p := range ps {
			var s string
			err := c.wait(ctx, p, &s)
			if err == nil {
				var tx *wire.MsgTx
				if tx, err = decodeTx(s); err == nil && tx.TxHash() != batch[i] {
					err = fmt.Errorf("asked for transaction %s, got %s", batch[i], tx.TxHash())
				}
				if err == nil {
					outs := outputsOf(tx)
					c.txs.put(batch[i], outs)
					fetched[batch[i]] = outs
					continue
				}
				err = c.unavailable("getrawtransaction: "+err.Error(), err)
			} else if isNoTxInfo(err) {
				err = fmt.Errorf("input spends unknown transaction %s: %w", batch[i], errChanged)
			} else {
				err = c.unexpected(err)
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		if firstErr != nil {
			return firstErr
		}
	}
	for i := range txs {
		t := &txs[i]
		t.PrevOuts = make([]chain.PrevOut, len(t.MsgTx.TxIn))
		if chain.IsCoinbase(t.MsgTx) {
			continue
		}
		for j, in := range t.MsgTx.TxIn {
			op := in.PreviousOutPoint
			var outs []chain.PrevOut
			if p := local[op.Hash]; p != nil {
				if int(op.Index) < len(p.TxOut) {
					o := p.TxOut[op.Index]
					t.PrevOuts[j] = chain.PrevOut{PkScript: o.PkScript, Value: o.Value}
					continue
				}
			} else if o, ok := fetched[op.Hash]; ok {
				outs = o
			} else {
				outs, _ = c.txs.get(op.Hash)
			}
			if int(op.Index) >= len(outs) {
				return fmt.Errorf("transaction %s input %d spends missing output %v", t.Hash(), j, op)
			}
			t.PrevOuts[j] = outs[op.Index]
		}
		// Its outputs will be some later transaction's inputs.
		if h := t.Hash(); !c.txs.has(h) {
			c.txs.put(h, outputsOf(t.MsgTx))
		}
	}
	return nil
}

func (c *Client) firstSeen(h chainhash.Hash) time.Time {
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	if t, ok := c.seen[h]; ok {
		return t
	}
	if len(c.seen) >= maxSeen {
		clear(c.seen) // only tie-break order and a display time are lost
	}
	t := time.Now()
	c.seen[h] = t
	return t
}

func (c *Client) forget(h chainhash.Hash) {
	c.seenMu.Lock()
	delete(c.seen, h)
	c.seenMu.Unlock()
}

// UTXOs implements chain.Backend from the address's full history.
func (c *Client) UTXOs(ctx context.Context, addr address.Address) ([]chain.UTXO, error) {
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("btcd: %w", err)
	}
	hist, err := c.AddressTxs(ctx, addr)
	if err != nil {
		return nil, err
	}
	return chain.UTXOsFromHistory(pk, hist), nil
}

// GetTx implements chain.Backend.
func (c *Client) GetTx(ctx context.Context, h chainhash.Hash) (*chain.Tx, error) {
	for attempt := 0; attempt < historyAttempts; attempt++ {
		t, err := c.getTx(ctx, h)
		if errors.Is(err, errChanged) {
			continue
		}
		return t, err
	}
	return nil, c.unavailable(fmt.Sprintf("transaction %s: the chain kept changing", h), nil)
}

func (c *Client) getTx(ctx context.Context, h chainhash.Hash) (*chain.Tx, error) {
	var res btcjson.TxRawResult
	err := c.call(ctx, btcjson.NewGetRawTransactionCmd(h.String(), btcjson.Int(1)), &res)
	if isNoTxInfo(err) {
		return nil, fmt.Errorf("btcd: transaction %s: %w", h, chain.ErrNotFound)
	}
	if err != nil {
		return nil, c.unexpected(err)
	}
	tx, err := decodeTx(res.Hex)
	if err == nil && tx.TxHash() != h {
		err = fmt.Errorf("asked for %s, got %s", h, tx.TxHash())
	}
	if err != nil {
		return nil, c.unavailable("getrawtransaction: "+err.Error(), err)
	}
	t := chain.Tx{MsgTx: tx, Height: -1}
	if res.BlockHash == "" {
		t.Time = c.firstSeen(h)
	} else {
		bh, err := chainhash.NewHashFromStr(res.BlockHash)
		if err != nil {
			return nil, c.unavailable("getrawtransaction: block hash: "+err.Error(), err)
		}
		blocks, err := c.blockInfos(ctx, []chainhash.Hash{*bh})
		if err != nil {
			return nil, err
		}
		b := blocks[*bh]
		pos, ok := b.pos[h]
		if !ok {
			return nil, errChanged
		}
		c.forget(h)
		t.Height, t.BlockHash, t.Index, t.Time = b.height, b.hash, pos, b.time
	}
	one := []chain.Tx{t}
	if err := c.resolvePrevOuts(ctx, one, nil); err != nil {
		return nil, err
	}
	return &one[0], nil
}

// Broadcast implements chain.Backend. Re-broadcasting a transaction the
// node already has, in its mempool or a block, succeeds.
func (c *Client) Broadcast(ctx context.Context, tx *wire.MsgTx) error {
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return fmt.Errorf("btcd: serialize transaction: %w", err)
	}
	h := tx.TxHash()
	err := c.call(ctx, btcjson.NewSendRawTransactionCmd(hex.EncodeToString(buf.Bytes()), btcjson.Bool(false)), nil)
	if err == nil {
		c.firstSeen(h)
		c.txs.put(h, outputsOf(tx))
		return nil
	}
	var re *btcjson.RPCError
	if !errors.As(err, &re) {
		return err
	}
	switch classifyReject(re.Message) {
	case rejectDuplicate:
		return nil
	case rejectConflict:
		// A confirmed transaction whose outputs are all spent looks,
		// to the mempool, like a spend of spent outputs.
		known, kerr := c.haveTx(ctx, h)
		if kerr != nil {
			return kerr
		}
		if known {
			return nil
		}
		return fmt.Errorf("btcd: transaction %s: %s: %w", h, re.Message, chain.ErrConflict)
	default:
		return fmt.Errorf("btcd: transaction %s: %s: %w", h, re.Message, chain.ErrRejected)
	}
}

type rejectKind int

const (
	rejectOther rejectKind = iota
	rejectDuplicate
	rejectConflict
)

// classifyReject maps btcd's sendrawtransaction rejection text (the code
// alone does not separate the cases) onto the contract's outcomes.
func classifyReject(msg string) rejectKind {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "already have transaction"),
		strings.Contains(m, "transaction already exists"):
		return rejectDuplicate
	case strings.Contains(m, "already spent"), // in the mempool
		strings.Contains(m, "orphan transaction"), // unknown or fully-spent inputs
		strings.Contains(m, "fully-spent"),
		strings.Contains(m, "does not exist or has already been spent"):
		return rejectConflict
	}
	return rejectOther
}

// haveTx reports whether the node knows a transaction (mempool or chain).
func (c *Client) haveTx(ctx context.Context, h chainhash.Hash) (bool, error) {
	var s string
	err := c.call(ctx, btcjson.NewGetRawTransactionCmd(h.String(), btcjson.Int(0)), &s)
	if isNoTxInfo(err) {
		return false, nil
	}
	if err != nil {
		return false, c.unexpected(err)
	}
	return true, nil
}

// bestBlock is the node's tip hash and height.
func (c *Client) bestBlock(ctx context.Context) (chain.Tip, error) {
	var res btcjson.GetBestBlockResult
	if err := c.call(ctx, btcjson.NewGetBestBlockCmd(), &res); err != nil {
		return chain.Tip{}, c.unexpected(err)
	}
	h, err := chainhash.NewHashFromStr(res.Hash)
	if err != nil {
		return chain.Tip{}, c.unavailable("getbestblock: "+err.Error(), err)
	}
	return chain.Tip{Hash: *h, Height: res.Height}, nil
}

// Tip implements chain.Backend.
func (c *Client) Tip(ctx context.Context) (chain.Tip, error) {
	t, err := c.bestBlock(ctx)
	if err != nil {
		return chain.Tip{}, err
	}
	t.Time, err = c.blockTime(ctx, t.Hash)
	return t, err
}

// blockTime is a block's timestamp (from the block cache or its header).
func (c *Client) blockTime(ctx context.Context, h chainhash.Hash) (time.Time, error) {
	if b, ok := c.blocks.get(h); ok {
		return b.time, nil
	}
	var res btcjson.GetBlockHeaderVerboseResult
	if err := c.call(ctx, btcjson.NewGetBlockHeaderCmd(h.String(), btcjson.Bool(true)), &res); err != nil {
		return time.Time{}, c.unexpected(err)
	}
	return time.Unix(res.Time, 0), nil
}

// Status implements chain.Backend. Endpoint is host:port, never the
// credentials.
func (c *Client) Status(ctx context.Context) (chain.Status, error) {
	tip, err := c.Tip(ctx)
	if err != nil {
		return chain.Status{}, err
	}
	var info btcjson.GetMempoolInfoResult
	if err := c.call(ctx, btcjson.NewGetMempoolInfoCmd(), &info); err != nil {
		return chain.Status{}, c.unexpected(err)
	}
	return chain.Status{
		Backend:     "btcd",
		Network:     c.params.Name,
		Endpoint:    c.cfg.Host,
		Tip:         tip,
		MempoolSize: int(info.Size),
	}, nil
}
