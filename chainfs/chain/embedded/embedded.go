// Package embedded is the default chain backend: a regtest chain running in
// the agent's process, built from btcd's own packages — blockchain (with
// full consensus and script validation), the address and transaction
// indexes, the ffldb database, the mempool (accepting non-standard data
// carriers) and the mining template generator. Nothing here validates a
// transaction by hand: btcd does.
//
// The chain persists in its directory. Every mined block is made durable
// (block file synced, metadata flushed to leveldb) before Mine returns, so a
// kill -9 never loses a confirmed block. The mempool, as in btcd, is not
// persistent: callers keep their own journal of unconfirmed transactions
// and re-broadcast after a restart.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/blockchain/indexers"
	"github.com/btcsuite/btcd/btcutil/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/database"
	_ "github.com/btcsuite/btcd/database/ffldb" // registers the ffldb driver
	"github.com/btcsuite/btcd/mempool"
	"github.com/btcsuite/btcd/mining"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

// Config configures an embedded chain.
type Config struct {
	// Dir holds the chain's database; created if missing.
	Dir string
	// Params defaults to regtest. Only networks whose proof of work a CPU
	// solves instantly (regtest, simnet) make sense here.
	Params *chaincfg.Params
	// MineInterval, when positive, mines a block paying MineTo whenever
	// the mempool holds transactions and that long has passed since the
	// last block. Zero mines only on demand.
	MineInterval time.Duration
	// MineTo, when set, also makes Close mine what is still in the
	// mempool: the mempool is memory only, and a process that broadcast
	// must not take its transactions away with it.
	MineTo address.Address
	Logger *slog.Logger
}

const (
	// Sized well above the mempool: at 1,000 entries, mining a block
	// re-verified signatures and ran 2.4x slower (measured, btcd v0.26.2).
	sigCacheSize   = 200_000
	utxoCacheBytes = 64 << 20
	// The mining template may fill a block up to the consensus limits,
	// leaving room for the coinbase.
	blockMaxWeight = blockchain.MaxBlockWeight - 4000
	blockMaxSize   = blockchain.MaxBlockBaseSize - 1000
	// ffldb's own flush interval, restored after each forced flush.
	ffldbFlushInterval = 300 * time.Second
	eventBuffer        = 1024
)

// Chain is an open embedded chain. It implements chain.Backend.
type Chain struct {
	cfg    Config
	params *chaincfg.Params
	log    *slog.Logger
	lock   *os.File

	db        database.DB
	bc        *blockchain.BlockChain
	txIndex   *indexers.TxIndex
	addrIndex *indexers.AddrIndex
	pool      *mempool.TxPool
	gen       *mining.BlkTmplGenerator
	interrupt chan struct{}

	// mineMu: one block at a time, and no mempool acceptance meanwhile:
	// both fill btcd's UTXO cache, which is not safe for two callers
	// (found by the race detector).
	mineMu sync.Mutex

	mu       sync.Mutex
	seen     map[chainhash.Hash]seenTx // mempool arrival order and time
	seq      uint64
	subs     map[chan chain.Event]struct{}
	closed   bool
	stopMine chan struct{}
	mineDone chan struct{}
}

type seenTx struct {
	seq  uint64
	time time.Time
}

var _ chain.Backend = (*Chain)(nil)

// Open opens (creating if needed) the chain in cfg.Dir. Only one process
// may hold a chain open; a second Open fails with a clear error.
func Open(cfg Config) (*Chain, error) {
	if cfg.Params == nil {
		cfg.Params = &chaincfg.RegressionNetParams
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded chain: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	c := &Chain{
		cfg:       cfg,
		params:    cfg.Params,
		log:       cfg.Logger,
		lock:      lock,
		interrupt: make(chan struct{}),
		seen:      make(map[chainhash.Hash]seenTx),
		subs:      make(map[chan chain.Event]struct{}),
	}
	if err := c.open(); err != nil {
		c.closeStores()
		_ = lock.Close()
		return nil, err
	}
	if cfg.MineInterval > 0 && cfg.MineTo != nil {
		c.stopMine = make(chan struct{})
		c.mineDone = make(chan struct{})
		go c.autoMine()
	}
	return c, nil
}

// lockDir takes an exclusive advisory lock so two processes never open one
// chain database (ffldb would corrupt it).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded chain: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("embedded chain %s is in use by another process (is the agent running?): %w", dir, chain.ErrUnavailable)
		}
		return nil, fmt.Errorf("embedded chain: lock %s: %w", dir, err)
	}
	return f, nil
}

func (c *Chain) open() error {
	dbPath := filepath.Join(c.cfg.Dir, "ffldb")
	db, err := database.Open("ffldb", dbPath, c.params.Net)
	if err != nil {
		var dbErr database.Error
		if !errors.As(err, &dbErr) || dbErr.ErrorCode != database.ErrDbDoesNotExist {
			return fmt.Errorf("embedded chain: open database: %w", err)
		}
		db, err = database.Create("ffldb", dbPath, c.params.Net)
		if err != nil {
			return fmt.Errorf("embedded chain: create database: %w", err)
		}
	}
	c.db = db
	// Fail now, not at the first block, if this btcd's ffldb cannot be
	// flushed on demand.
	if err := c.flushDB(); err != nil {
		return err
	}

	c.txIndex = indexers.NewTxIndex(db)
	c.addrIndex = indexers.NewAddrIndex(db, c.params)
	sigCache := txscript.NewSigCache(sigCacheSize)
	hashCache := txscript.NewHashCache(sigCacheSize)
	timeSource := blockchain.NewMedianTime()
	c.bc, err = blockchain.New(&blockchain.Config{
		DB:               db,
		Interrupt:        c.interrupt,
		ChainParams:      c.params,
		TimeSource:       timeSource,
		SigCache:         sigCache,
		HashCache:        hashCache,
		IndexManager:     indexers.NewManager(db, []indexers.Indexer{c.txIndex, c.addrIndex}),
		UtxoCacheMaxSize: utxoCacheBytes,
	})
	if err != nil {
		return fmt.Errorf("embedded chain: load chain: %w", err)
	}
	policy := mempool.Policy{
		DisableRelayPriority: true,
		AcceptNonStd:         true, // data carriers beyond 80 bytes
		FreeTxRelayLimit:     15,
		MaxOrphanTxs:         0, // a missing parent is a conflict, not a wait
		MaxOrphanTxSize:      100_000,
		MaxSigOpCostPerTx:    blockchain.MaxBlockSigOpsCost / 4,
		MinRelayTxFee:        mempool.DefaultMinRelayTxFee,
		MaxTxVersion:         2,
		RejectReplacement:    true, // concurrent writers must collide
	}
	c.pool = mempool.New(&mempool.Config{
		Policy:         policy,
		ChainParams:    c.params,
		FetchUtxoView:  c.bc.FetchUtxoView,
		BestHeight:     func() int32 { return c.bc.BestSnapshot().Height },
		MedianTimePast: func() time.Time { return c.bc.BestSnapshot().MedianTime },
		CalcSequenceLock: func(tx *btcutil.Tx, view *blockchain.UtxoViewpoint) (*blockchain.SequenceLock, error) {
			return c.bc.CalcSequenceLock(tx, view, true)
		},
		IsDeploymentActive: c.bc.IsDeploymentActive,
		SigCache:           sigCache,
		HashCache:          hashCache,
		AddrIndex:          c.addrIndex,
	})
	c.gen = mining.NewBlkTmplGenerator(&mining.Policy{
		BlockMaxWeight: blockMaxWeight,
		BlockMaxSize:   blockMaxSize,
		TxMinFreeFee:   mempool.DefaultMinRelayTxFee,
	}, c.params, c.pool, c.bc, timeSource, sigCache, hashCache)
	return nil
}

// Params implements chain.Backend.
func (c *Chain) Params() *chaincfg.Params { return c.params }

// Tip implements chain.Backend.
func (c *Chain) Tip(ctx context.Context) (chain.Tip, error) {
	if err := c.check(ctx); err != nil {
		return chain.Tip{}, err
	}
	return c.tip(), nil
}

func (c *Chain) tip() chain.Tip {
	s := c.bc.BestSnapshot()
	h, err := c.bc.HeaderByHash(&s.Hash)
	t := s.MedianTime
	if err == nil {
		t = h.Timestamp
	}
	return chain.Tip{Height: s.Height, Hash: s.Hash, Time: t}
}

// Status implements chain.Backend.
func (c *Chain) Status(ctx context.Context) (chain.Status, error) {
	if err := c.check(ctx); err != nil {
		return chain.Status{}, err
	}
	return chain.Status{
		Backend:     "embedded",
		Network:     c.params.Name,
		Endpoint:    c.cfg.Dir,
		Tip:         c.tip(),
		MempoolSize: c.pool.Count(),
	}, nil
}

func (c *Chain) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("embedded chain is closed: %w", chain.ErrUnavailable)
	}
	return nil
}

// AddressTxs implements chain.Backend.
func (c *Chain) AddressTxs(ctx context.Context, addr address.Address) ([]chain.Tx, error) {
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	var out []chain.Tx
	err := c.db.View(func(dbTx database.Tx) error {
		// Fetch in pages so a long history is not one giant allocation.
		const page = 1000
		for skip := 0; ; skip += page {
			regions, _, err := c.addrIndex.TxRegionsForAddress(dbTx, addr, uint32(skip), page, false)
			if err != nil {
				return fmt.Errorf("address index: %w", err)
			}
			if len(regions) == 0 {
				return nil
			}
			raws, err := dbTx.FetchBlockRegions(regions)
			if err != nil {
				return fmt.Errorf("fetch transactions: %w", err)
			}
			for i, raw := range raws {
				t, err := c.confirmedTx(raw, &regions[i])
				if err != nil {
					return err
				}
				out = append(out, t)
			}
			if len(regions) < page {
				return nil
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("embedded chain: transactions of %s: %w", addr, err)
	}
	// The index stores entries in block order; sort defensively by
	// height, then position (byte offset) inside the block.
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Height != out[j].Height {
			return out[i].Height < out[j].Height
		}
		return out[i].Index < out[j].Index
	})
	unconf := c.addrIndex.UnconfirmedTxnsForAddress(addr)
	ordered := c.mempoolOrder(unconf)
	for i, tx := range ordered {
		t, err := c.mempoolTx(tx.tx, tx.seen, i)
		if err != nil {
			return nil, fmt.Errorf("embedded chain: transactions of %s: %w", addr, err)
		}
		out = append(out, t)
	}
	return out, nil
}

type orderedTx struct {
	tx   *btcutil.Tx
	seen seenTx
}

// mempoolOrder sorts unconfirmed transactions by arrival. Every transaction
// enters through Broadcast and orphans are refused, so a parent always
// arrives before its children: arrival order is a dependency order.
func (c *Chain) mempoolOrder(txs []*btcutil.Tx) []orderedTx {
	c.mu.Lock()
	out := make([]orderedTx, 0, len(txs))
	for _, tx := range txs {
		out = append(out, orderedTx{tx: tx, seen: c.seen[*tx.Hash()]})
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seen.seq < out[j].seen.seq })
	return out
}

func (c *Chain) confirmedTx(raw []byte, region *database.BlockRegion) (chain.Tx, error) {
	var msg wire.MsgTx
	if err := msg.Deserialize(bytesReader(raw)); err != nil {
		return chain.Tx{}, fmt.Errorf("decode transaction in block %s: %w", region.Hash, err)
	}
	height, err := c.bc.BlockHeightByHash(region.Hash)
	if err != nil {
		return chain.Tx{}, fmt.Errorf("height of block %s: %w", region.Hash, err)
	}
	hdr, err := c.bc.HeaderByHash(region.Hash)
	if err != nil {
		return chain.Tx{}, fmt.Errorf("header of block %s: %w", region.Hash, err)
	}
	prev, err := c.prevOuts(&msg)
	if err != nil {
		return chain.Tx{}, err
	}
	return chain.Tx{
		MsgTx:     &msg,
		Height:    height,
		BlockHash: *region.Hash,
		Index:     int(region.Offset),
		Time:      hdr.Timestamp,
		PrevOuts:  prev,
	}, nil
}

func (c *Chain) mempoolTx(tx *btcutil.Tx, seen seenTx, idx int) (chain.Tx, error) {
	prev, err := c.prevOuts(tx.MsgTx())
	if err != nil {
		return chain.Tx{}, err
	}
	return chain.Tx{MsgTx: tx.MsgTx(), Height: -1, Index: idx, Time: seen.time, PrevOuts: prev}, nil
}

// prevOuts resolves the output each input spends: from the mempool when
// the parent is unconfirmed, else through the transaction index.
func (c *Chain) prevOuts(msg *wire.MsgTx) ([]chain.PrevOut, error) {
	out := make([]chain.PrevOut, len(msg.TxIn))
	if chain.IsCoinbase(msg) {
		return out, nil
	}
	parents := make(map[chainhash.Hash]*wire.MsgTx)
	for i, in := range msg.TxIn {
		h := in.PreviousOutPoint.Hash
		p, ok := parents[h]
		if !ok {
			var err error
			p, err = c.fetchTx(h)
			if err != nil {
				return nil, fmt.Errorf("input %d: %w", i, err)
			}
			parents[h] = p
		}
		idx := in.PreviousOutPoint.Index
		if int(idx) >= len(p.TxOut) {
			return nil, fmt.Errorf("input %d spends missing output %v", i, in.PreviousOutPoint)
		}
		out[i] = chain.PrevOut{PkScript: p.TxOut[idx].PkScript, Value: p.TxOut[idx].Value}
	}
	return out, nil
}

func (c *Chain) fetchTx(h chainhash.Hash) (*wire.MsgTx, error) {
	if tx, err := c.pool.FetchTransaction(&h); err == nil {
		return tx.MsgTx(), nil
	}
	region, err := c.txIndex.TxBlockRegion(&h)
	if err != nil {
		return nil, fmt.Errorf("transaction index: %w", err)
	}
	if region == nil {
		return nil, fmt.Errorf("transaction %s: %w", h, chain.ErrNotFound)
	}
	var raw []byte
	err = c.db.View(func(dbTx database.Tx) error {
		var err error
		raw, err = dbTx.FetchBlockRegion(region)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fetch transaction %s: %w", h, err)
	}
	var msg wire.MsgTx
	if err := msg.Deserialize(bytesReader(raw)); err != nil {
		return nil, fmt.Errorf("decode transaction %s: %w", h, err)
	}
	return &msg, nil
}

// GetTx implements chain.Backend.
func (c *Chain) GetTx(ctx context.Context, h chainhash.Hash) (*chain.Tx, error) {
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	if tx, err := c.pool.FetchTransaction(&h); err == nil {
		c.mu.Lock()
		s := c.seen[h]
		c.mu.Unlock()
		t, err := c.mempoolTx(tx, s, 0)
		if err != nil {
			return nil, fmt.Errorf("embedded chain: %w", err)
		}
		return &t, nil
	}
	region, err := c.txIndex.TxBlockRegion(&h)
	if err != nil {
		return nil, fmt.Errorf("embedded chain: transaction index: %w", err)
	}
	if region == nil {
		return nil, fmt.Errorf("embedded chain: transaction %s: %w", h, chain.ErrNotFound)
	}
	var raw []byte
	err = c.db.View(func(dbTx database.Tx) error {
		var err error
		raw, err = dbTx.FetchBlockRegion(region)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("embedded chain: fetch %s: %w", h, err)
	}
	t, err := c.confirmedTx(raw, region)
	if err != nil {
		return nil, fmt.Errorf("embedded chain: %w", err)
	}
	return &t, nil
}

// UTXOs implements chain.Backend.
func (c *Chain) UTXOs(ctx context.Context, addr address.Address) ([]chain.UTXO, error) {
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded chain: %w", err)
	}
	hist, err := c.AddressTxs(ctx, addr)
	if err != nil {
		return nil, err
	}
	return chain.UTXOsFromHistory(pk, hist), nil
}

// Broadcast implements chain.Backend. Re-broadcasting a transaction the
// chain already has (in the mempool or a block) succeeds, so callers can
// replay their journal after a restart without special cases.
func (c *Chain) Broadcast(ctx context.Context, msg *wire.MsgTx) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	tx := btcutil.NewTx(msg)
	h := *tx.Hash()
	// Register arrival before acceptance so AddressTxs never sees a
	// mempool transaction without an order.
	c.mu.Lock()
	c.seq++
	c.seen[h] = seenTx{seq: c.seq, time: time.Now()}
	c.mu.Unlock()
	c.mineMu.Lock()
	_, err := c.pool.ProcessTransaction(tx, false, false, 0)
	c.mineMu.Unlock()
	if err != nil {
		if c.pool.HaveTransaction(&h) || c.confirmedTxExists(h) {
			return nil
		}
		c.mu.Lock()
		delete(c.seen, h)
		c.mu.Unlock()
		return classify(h, err)
	}
	c.mu.Lock()
	s, hasSubs := c.seen[h], len(c.subs) > 0
	c.mu.Unlock()
	if hasSubs {
		if t, perr := c.mempoolTx(tx, s, 0); perr == nil {
			c.publish(chain.Event{Kind: chain.EventTx, Tip: c.tip(), Txs: []chain.Tx{t}})
		}
	}
	return nil
}

func (c *Chain) confirmedTxExists(h chainhash.Hash) bool {
	region, err := c.txIndex.TxBlockRegion(&h)
	return err == nil && region != nil
}

// classify maps mempool rejections onto the chain package's errors.
func classify(h chainhash.Hash, err error) error {
	var rerr mempool.RuleError
	if errors.As(err, &rerr) {
		var terr mempool.TxRuleError
		if errors.As(rerr.Err, &terr) && terr.RejectCode == wire.RejectDuplicate {
			// Spent in the mempool, or an input that is unknown or
			// already spent in a block: either way another spender won.
			return fmt.Errorf("transaction %s: %s: %w", h, terr.Description, chain.ErrConflict)
		}
		var cerr blockchain.RuleError
		if errors.As(rerr.Err, &cerr) && cerr.ErrorCode == blockchain.ErrMissingTxOut {
			return fmt.Errorf("transaction %s: %s: %w", h, cerr.Description, chain.ErrConflict)
		}
		return fmt.Errorf("transaction %s: %v: %w", h, rerr, chain.ErrRejected)
	}
	return fmt.Errorf("transaction %s: %v: %w", h, err, chain.ErrRejected)
}

// Subscribe implements chain.Backend.
func (c *Chain) Subscribe(ctx context.Context) <-chan chain.Event {
	ch := make(chan chain.Event, eventBuffer)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		close(ch)
		return ch
	}
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	go func() {
		<-ctx.Done()
		c.mu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.mu.Unlock()
	}()
	return ch
}

func (c *Chain) publish(ev chain.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.subs {
		select {
		case ch <- ev:
		default: // a slow subscriber misses a hint, never blocks the chain
		}
	}
}

// Mine implements chain.Backend.
func (c *Chain) Mine(ctx context.Context, n int, payTo address.Address) ([]chainhash.Hash, error) {
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	if payTo == nil {
		return nil, errors.New("embedded chain: mine: no address to pay")
	}
	c.mineMu.Lock()
	defer c.mineMu.Unlock()
	var hashes []chainhash.Hash
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return hashes, err
		}
		h, err := c.mineOne(payTo)
		if err != nil {
			return hashes, err
		}
		hashes = append(hashes, h)
	}
	return hashes, nil
}

func (c *Chain) mineOne(payTo address.Address) (chainhash.Hash, error) {
	tmpl, err := c.gen.NewBlockTemplate(payTo)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("embedded chain: block template: %w", err)
	}
	msg := tmpl.Block
	if err := solve(msg, tmpl.Height, c.gen); err != nil {
		return chainhash.Hash{}, err
	}
	block := btcutil.NewBlock(msg)
	block.SetHeight(tmpl.Height)
	isMain, isOrphan, err := c.bc.ProcessBlock(block, blockchain.BFNone)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("embedded chain: block rejected: %w", err)
	}
	if !isMain || isOrphan {
		return chainhash.Hash{}, fmt.Errorf("embedded chain: mined block %s did not extend the chain", block.Hash())
	}
	// Durable before anyone hears of it: UTXO cache into the database,
	// then the database cache onto disk.
	if err := c.bc.FlushUtxoCache(blockchain.FlushRequired); err != nil {
		return chainhash.Hash{}, fmt.Errorf("embedded chain: flush utxo cache: %w", err)
	}
	if err := c.flushDB(); err != nil {
		return chainhash.Hash{}, err
	}
	c.log.Debug("embedded chain: mined", "height", tmpl.Height, "txs", len(block.Transactions()), "hash", block.Hash())
	// What netsync does for a connected block.
	for _, tx := range block.Transactions()[1:] {
		c.pool.RemoveTransaction(tx, false)
		c.pool.RemoveDoubleSpends(tx)
		c.pool.RemoveOrphan(tx)
		c.pool.ProcessOrphans(tx)
	}
	c.mu.Lock()
	for _, tx := range block.Transactions() {
		delete(c.seen, *tx.Hash())
	}
	hasSubs := len(c.subs) > 0
	c.mu.Unlock()
	if hasSubs {
		c.publishBlock(block, tmpl.Height)
	}
	return *block.Hash(), nil
}

func (c *Chain) publishBlock(block *btcutil.Block, height int32) {
	txs := make([]chain.Tx, 0, len(block.Transactions()))
	for i, tx := range block.Transactions() {
		prev, err := c.prevOuts(tx.MsgTx())
		if err != nil {
			c.log.Warn("embedded chain: resolve inputs for event", "tx", tx.Hash(), "err", err)
			continue
		}
		txs = append(txs, chain.Tx{
			MsgTx: tx.MsgTx(), Height: height, BlockHash: *block.Hash(),
			Index: i, Time: block.MsgBlock().Header.Timestamp, PrevOuts: prev,
		})
	}
	c.publish(chain.Event{Kind: chain.EventBlock, Tip: c.tip(), Txs: txs})
}

// minePending mines blocks until the mempool is empty — a burst of
// commits can fill several blocks — or a block makes no progress
// (c.mineMu held).
func (c *Chain) minePending(payTo address.Address) error {
	for i := 0; i < 1000 && c.pool.Count() > 0; i++ {
		before := c.pool.Count()
		if _, err := c.mineOne(payTo); err != nil {
			return err
		}
		if c.pool.Count() >= before {
			return fmt.Errorf("%d transactions stay in the mempool: no block takes them", c.pool.Count())
		}
	}
	return nil
}

// solve finds a nonce meeting the block's target. On regtest and simnet the
// target is so easy that this takes a few hashes.
func solve(msg *wire.MsgBlock, height int32, gen *mining.BlkTmplGenerator) error {
	target := blockchain.CompactToBig(msg.Header.Bits)
	for extra := uint64(0); extra < 1<<16; extra++ {
		if extra > 0 {
			if err := gen.UpdateExtraNonce(msg, height, extra); err != nil {
				return fmt.Errorf("embedded chain: extra nonce: %w", err)
			}
		}
		for nonce := uint32(0); nonce < 1<<20; nonce++ {
			msg.Header.Nonce = nonce
			h := msg.Header.BlockHash()
			if blockchain.HashToBig(&h).Cmp(target) <= 0 {
				return nil
			}
		}
	}
	return errors.New("embedded chain: no proof of work found (is this a regtest/simnet network?)")
}

func (c *Chain) autoMine() {
	defer close(c.mineDone)
	t := time.NewTicker(c.cfg.MineInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stopMine:
			return
		case <-t.C:
			c.mineMu.Lock()
			err := c.minePending(c.cfg.MineTo)
			c.mineMu.Unlock()
			if err != nil {
				c.log.Error("embedded chain: automatic mining failed", "err", err)
			}
		}
	}
}

// Close implements chain.Backend. It flushes everything and releases the
// directory lock.
func (c *Chain) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for ch := range c.subs {
		close(ch)
		delete(c.subs, ch)
	}
	c.mu.Unlock()
	if c.stopMine != nil {
		close(c.stopMine)
		<-c.mineDone
	}
	c.mineMu.Lock()
	defer c.mineMu.Unlock()
	var err error
	if c.cfg.MineTo != nil {
		if merr := c.minePending(c.cfg.MineTo); merr != nil {
			err = fmt.Errorf("embedded chain: mine pending transactions on close: %w", merr)
		}
	}
	close(c.interrupt)
	if cerr := c.closeStores(); err == nil {
		err = cerr
	}
	if lerr := c.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

func (c *Chain) closeStores() error {
	var err error
	if c.bc != nil {
		if ferr := c.bc.FlushUtxoCache(blockchain.FlushRequired); ferr != nil {
			err = fmt.Errorf("embedded chain: flush utxo cache: %w", ferr)
		}
	}
	if c.db != nil {
		if cerr := c.db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("embedded chain: close database: %w", cerr)
		}
	}
	return err
}
