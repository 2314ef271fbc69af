package btcdrpc

import (
	"bytes"
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

const (
	eventBuffer = 1024
	noteBuffer  = 4096
	// pollInterval paces polling (HTTP POST mode) and reconnection.
	pollInterval = 500 * time.Millisecond
	// wsTipCheck: with notifications on, the tip is still re-read this
	// often in case a notification was lost.
	wsTipCheck = 5 * time.Second
	// maxCatchUp caps the blocks announced after a gap; subscribers
	// re-read state anyway.
	maxCatchUp = 100
	// stepTimeout bounds one watcher step.
	stepTimeout = 30 * time.Second
	// baselineTimeout bounds what Subscribe does before returning.
	baselineTimeout = 5 * time.Second
)

// note is a notification handed from rpcclient's reader to the watcher:
// a transaction (hex) or, when block is set, "the tip moved".
type note struct {
	txHex string
	block bool
}

// watcher turns node notifications (or polling) into chain.Events. One
// goroutine, started by the first Subscribe, runs until Close; it does
// work only while someone subscribes.
type watcher struct {
	notes chan note

	subMu sync.Mutex
	subs  map[chan chain.Event]struct{}

	// mu guards the state below and is held for each watcher step, so
	// Subscribe's baseline and the goroutine never interleave.
	mu        sync.Mutex
	started   bool
	done      chan struct{}
	syncGen   uint64 // connection on which events are caught up (0: none)
	tip       chain.Tip
	haveTip   bool
	recent    map[int32]chainhash.Hash    // recent main-chain blocks, for reorgs
	mempool   map[chainhash.Hash]struct{} // mempool txs known to subscribers
	lastCheck time.Time
}

func (w *watcher) init() {
	w.notes = make(chan note, noteBuffer)
	w.subs = make(map[chan chain.Event]struct{})
	w.recent = make(map[int32]chainhash.Hash)
	w.done = make(chan struct{})
}

// poke and queueTx run on rpcclient's reader goroutine: they never block,
// and a full queue drops (the periodic tip check recovers blocks).
func (w *watcher) poke() {
	select {
	case w.notes <- note{block: true}:
	default:
	}
}

func (w *watcher) queueTx(txHex string) {
	select {
	case w.notes <- note{txHex: txHex}:
	default:
	}
}

func (w *watcher) hasSubs() bool {
	w.subMu.Lock()
	defer w.subMu.Unlock()
	return len(w.subs) > 0
}

func (w *watcher) publish(ev chain.Event) {
	w.subMu.Lock()
	defer w.subMu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- ev:
		default: // a slow subscriber misses a hint; never block
		}
	}
}

// stop waits for the goroutine (Close has closed closeCh) and closes every
// subscription.
func (w *watcher) stop() {
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if started {
		<-w.done
	}
	w.subMu.Lock()
	for ch := range w.subs {
		close(ch)
		delete(w.subs, ch)
	}
	w.subMu.Unlock()
}

// Subscribe implements chain.Backend. Before it returns, notifications are
// registered (or the polling baseline taken), so a transaction broadcast
// right after is announced. Events arrive within about a second.
func (c *Client) Subscribe(ctx context.Context) <-chan chain.Event {
	ch := make(chan chain.Event, eventBuffer)
	w := &c.w
	select {
	case <-c.closeCh:
		close(ch)
		return ch
	default:
	}
	w.mu.Lock()
	w.subMu.Lock()
	first := len(w.subs) == 0
	w.subs[ch] = struct{}{}
	w.subMu.Unlock()
	if first {
		bctx, cancel := context.WithTimeout(ctx, baselineTimeout)
		c.baseline(bctx)
		cancel()
	}
	if !w.started {
		w.started = true
		go c.watch()
	}
	w.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-c.closeCh:
		}
		w.subMu.Lock()
		if _, ok := w.subs[ch]; ok {
			delete(w.subs, ch)
			close(ch)
		}
		w.subMu.Unlock()
	}()
	return ch
}

// baseline records the current tip and mempool so only what happens from
// now on is announced. Called with w.mu held.
func (c *Client) baseline(ctx context.Context) {
	w := &c.w
	if err := c.ensureNotifications(ctx); err != nil {
		c.log.Debug("btcd: register notifications", "err", err)
	}
	gen, post := c.connState()
	tip, err := c.Tip(ctx)
	if err != nil {
		c.log.Debug("btcd: subscription baseline", "err", err)
		w.haveTip = false
		return
	}
	c.setTip(tip)
	w.lastCheck = time.Now()
	pool, err := c.rawMempool(ctx)
	if err != nil {
		c.log.Debug("btcd: subscription baseline", "err", err)
		return
	}
	w.mempool = pool
	if !post && c.registered(gen) {
		w.syncGen = gen
	}
}

// ensureNotifications registers for block and transaction notifications
// on the current websocket connection unless that is done.
func (c *Client) ensureNotifications(ctx context.Context) error {
	rpc, post, err := c.session(ctx)
	if err != nil || post {
		return err
	}
	gen, _ := c.connState()
	if c.registered(gen) {
		return nil
	}
	if err := c.register(ctx, rpc); err != nil {
		return err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.regGen = gen
	}
	c.mu.Unlock()
	return nil
}

// registered reports whether connection gen has notifications on.
func (c *Client) registered(gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.regGen == gen
}

// register asks the node for block and (verbose) transaction
// notifications on rpc.
func (c *Client) register(ctx context.Context, rpc *rpcclient.Client) error {
	blocks := pending{ws: rpc.NotifyBlocksAsync(), method: "notifyblocks"}
	txs := pending{ws: rpc.NotifyNewTransactionsAsync(true), method: "notifynewtransactions"}
	if err := c.wait(ctx, blocks, nil); err != nil {
		return c.unexpected(err)
	}
	if err := c.wait(ctx, txs, nil); err != nil {
		return c.unexpected(err)
	}
	return nil
}

func (c *Client) setTip(t chain.Tip) {
	w := &c.w
	w.tip, w.haveTip = t, true
	w.recent[t.Height] = t.Hash
	for h := range w.recent {
		if h < t.Height-maxCatchUp || h > t.Height {
			delete(w.recent, h)
		}
	}
}

func (c *Client) watch() {
	defer close(c.w.done)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.closeCh:
			return
		case n := <-c.w.notes:
			c.step(func(ctx context.Context) {
				if n.block {
					c.catchUp(ctx)
				} else {
					c.onTx(ctx, n.txHex)
				}
			})
		case <-tick.C:
			c.step(c.poll)
		}
	}
}

func (c *Client) step(f func(ctx context.Context)) {
	if !c.w.hasSubs() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	f(ctx)
}

// poll runs every pollInterval while someone subscribes. Over HTTP POST
// it polls the tip and the mempool. Over a websocket it makes sure a new
// connection has notifications on and then announces what was missed
// while there was none; it also re-reads the tip now and then in case a
// notification was lost.
func (c *Client) poll(ctx context.Context) {
	w := &c.w
	if _, _, err := c.session(ctx); err != nil {
		return // the next tick tries again
	}
	gen, post := c.connState()
	switch {
	case post:
		c.catchUp(ctx)
		c.pollMempool(ctx)
	case w.syncGen != gen:
		if err := c.ensureNotifications(ctx); err != nil {
			c.log.Debug("btcd: register notifications", "err", err)
			return
		}
		c.catchUp(ctx)
		c.pollMempool(ctx)
		w.syncGen = gen
	case time.Since(w.lastCheck) >= wsTipCheck:
		c.catchUp(ctx)
	}
}

// catchUp announces the blocks between the last announced tip and the
// node's tip, following reorganisations back to the fork point.
func (c *Client) catchUp(ctx context.Context) {
	w := &c.w
	best, err := c.bestBlock(ctx)
	if err != nil {
		c.log.Debug("btcd: watch tip", "err", err)
		return
	}
	w.lastCheck = time.Now()
	if !w.haveTip {
		if best.Time, err = c.blockTime(ctx, best.Hash); err == nil {
			c.setTip(best)
		}
		return
	}
	if best.Hash == w.tip.Hash {
		return
	}
	// The fork point is the highest remembered block still on the main
	// chain (normally the last tip itself).
	from := best.Height - maxCatchUp + 1
	for h := min(w.tip.Height, best.Height); h >= best.Height-maxCatchUp && h >= 0; h-- {
		want, ok := w.recent[h]
		if !ok {
			break
		}
		got, err := c.blockHash(ctx, h)
		if err != nil {
			c.log.Debug("btcd: watch tip", "err", err)
			return
		}
		if got == want {
			from = h + 1
			break
		}
	}
	from = max(from, best.Height-maxCatchUp+1, 0)
	for h := from; h <= best.Height; h++ {
		if err := c.announceBlock(ctx, h); err != nil {
			c.log.Debug("btcd: announce block", "height", h, "err", err)
			return
		}
	}
}

func (c *Client) blockHash(ctx context.Context, height int32) (chainhash.Hash, error) {
	var s string
	if err := c.call(ctx, btcjson.NewGetBlockHashCmd(int64(height)), &s); err != nil {
		return chainhash.Hash{}, c.unexpected(err)
	}
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		return chainhash.Hash{}, c.unavailable("getblockhash: "+err.Error(), err)
	}
	return *h, nil
}

// announceBlock publishes the main-chain block at height with its
// transactions and their inputs' previous outputs.
func (c *Client) announceBlock(ctx context.Context, height int32) error {
	hash, err := c.blockHash(ctx, height)
	if err != nil {
		return err
	}
	var s string
	if err := c.call(ctx, btcjson.NewGetBlockCmd(hash.String(), btcjson.Int(0)), &s); err != nil {
		return c.unexpected(err)
	}
	blk, err := decodeBlock(s)
	if err != nil {
		return c.unavailable("getblock: "+err.Error(), err)
	}
	if blk.BlockHash() != hash {
		return c.unavailable("getblock: asked for "+hash.String()+", got "+blk.BlockHash().String(), nil)
	}
	ts := blk.Header.Timestamp
	info := &blockInfo{hash: hash, height: height, time: ts, pos: make(map[chainhash.Hash]int, len(blk.Transactions))}
	txs := make([]chain.Tx, len(blk.Transactions))
	local := make(map[chainhash.Hash]*wire.MsgTx, len(blk.Transactions))
	for i, tx := range blk.Transactions {
		h := tx.TxHash()
		info.pos[h] = i
		local[h] = tx
		c.forget(h)
		txs[i] = chain.Tx{MsgTx: tx, Height: height, BlockHash: hash, Index: i, Time: ts}
	}
	c.blocks.put(hash, info)
	tip := chain.Tip{Height: height, Hash: hash, Time: ts}
	if err := c.resolvePrevOuts(ctx, txs, local); err != nil {
		// Still tell subscribers the tip moved; they re-read state.
		c.log.Warn("btcd: resolve inputs for block event", "block", hash, "err", err)
		txs = nil
	}
	c.setTip(tip)
	c.w.publish(chain.Event{Kind: chain.EventBlock, Tip: tip, Txs: txs})
	return nil
}

// decodeBlock decodes a hex block, rejecting trailing bytes.
func decodeBlock(s string) (*wire.MsgBlock, error) {
	raw, err := hex.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var blk wire.MsgBlock
	r := bytes.NewReader(raw)
	if err := blk.Deserialize(r); err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, errTrailing
	}
	return &blk, nil
}

func (c *Client) onTx(ctx context.Context, txHex string) {
	tx, err := decodeTx(txHex)
	if err != nil {
		c.log.Debug("btcd: transaction notification", "err", err)
		return
	}
	// Not checked against w.mempool: a transaction that arrived while
	// Subscribe took its baseline is in both; a duplicate hint is
	// harmless, a lost one is not.
	c.announceTxs(ctx, []*wire.MsgTx{tx})
}

// announceTxs publishes new mempool transactions, parents first.
func (c *Client) announceTxs(ctx context.Context, msgs []*wire.MsgTx) {
	txs := make([]chain.Tx, len(msgs))
	for i, m := range msgs {
		txs[i] = chain.Tx{MsgTx: m, Height: -1, Time: c.firstSeen(m.TxHash())}
	}
	txs = dependencyOrder(txs)
	local := make(map[chainhash.Hash]*wire.MsgTx, len(msgs))
	for _, m := range msgs {
		local[m.TxHash()] = m
	}
	for i := range txs {
		one := txs[i : i+1]
		c.knowMempoolTx(one[0].Hash())
		if err := c.resolvePrevOuts(ctx, one, local); err != nil {
			c.log.Debug("btcd: resolve inputs for transaction event", "tx", one[0].Hash(), "err", err)
			continue
		}
		one[0].Index = 0
		c.w.publish(chain.Event{Kind: chain.EventTx, Tip: c.w.tip, Txs: []chain.Tx{one[0]}})
	}
}

// knowMempoolTx records an announced transaction so a later mempool
// resync does not announce it again.
func (c *Client) knowMempoolTx(h chainhash.Hash) {
	w := &c.w
	if w.mempool == nil || len(w.mempool) >= maxSeen {
		// Bounded; a resync after this announces some txs twice.
		w.mempool = make(map[chainhash.Hash]struct{})
	}
	w.mempool[h] = struct{}{}
}

func (c *Client) rawMempool(ctx context.Context) (map[chainhash.Hash]struct{}, error) {
	var ids []string
	if err := c.call(ctx, btcjson.NewGetRawMempoolCmd(btcjson.Bool(false)), &ids); err != nil {
		return nil, c.unexpected(err)
	}
	set := make(map[chainhash.Hash]struct{}, len(ids))
	for _, s := range ids {
		h, err := chainhash.NewHashFromStr(s)
		if err != nil {
			return nil, c.unavailable("getrawmempool: "+err.Error(), err)
		}
		set[*h] = struct{}{}
	}
	return set, nil
}

// pollMempool announces mempool transactions not announced yet: every poll
// over HTTP POST, after a reconnection over a websocket.
func (c *Client) pollMempool(ctx context.Context) {
	w := &c.w
	pool, err := c.rawMempool(ctx)
	if err != nil {
		c.log.Debug("btcd: poll mempool", "err", err)
		return
	}
	var fresh []chainhash.Hash
	for h := range pool {
		if _, ok := w.mempool[h]; !ok {
			fresh = append(fresh, h)
		}
	}
	w.mempool = pool
	var msgs []*wire.MsgTx
	for start := 0; start < len(fresh); start += inFlight {
		batch := fresh[start:min(start+inFlight, len(fresh))]
		ps := make([]pending, len(batch))
		for i, h := range batch {
			p, err := c.send(ctx, btcjson.NewGetRawTransactionCmd(h.String(), btcjson.Int(0)))
			if err != nil {
				return
			}
			ps[i] = p
		}
		for i, p := range ps {
			var s string
			if err := c.wait(ctx, p, &s); err != nil {
				continue // mined or evicted meanwhile
			}
			tx, err := decodeTx(s)
			if err != nil || tx.TxHash() != batch[i] {
				continue
			}
			msgs = append(msgs, tx)
		}
	}
	if len(msgs) > 0 {
		c.announceTxs(ctx, msgs)
	}
}
