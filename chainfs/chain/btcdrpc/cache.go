package btcdrpc

import (
	"container/list"
	"sync"

	"github.com/integrity-sys/integrity/chainfs/chain"
)

const (
	// txCacheBytes bounds the cached outputs of transactions (scripts
	// plus overhead); OP_RETURN payloads are not kept, so this holds
	// hundreds of thousands of ordinary outputs.
	txCacheBytes = 32 << 20
	// blockCacheCost bounds cached block positions, counted in
	// transactions (about 60 bytes each).
	blockCacheCost = 500_000
)

func prevOutsCost(v []chain.PrevOut) int {
	n := 64
	for _, p := range v {
		n += len(p.PkScript) + 32
	}
	return n
}

func blockInfoCost(b *blockInfo) int { return len(b.pos) + 1 }

// lru is a least-recently-used cache bounded by a total cost. The values
// it holds are immutable facts about the chain (a transaction's outputs, a
// block's contents), so entries never go stale — they only get evicted.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	used  int
	cost  func(V) int
	order *list.List // front = most recent
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key  K
	val  V
	cost int
}

func newLRU[K comparable, V any](max int, cost func(V) int) *lru[K, V] {
	return &lru[K, V]{max: max, cost: cost, order: list.New(), items: make(map[K]*list.Element)}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) has(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[k]
	return ok
}

func (c *lru[K, V]) put(k K, v V) {
	cost := c.cost(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cost > c.max {
		return
	}
	if e, ok := c.items[k]; ok {
		old := e.Value.(*lruEntry[K, V])
		c.used += cost - old.cost
		old.val, old.cost = v, cost
		c.order.MoveToFront(e)
	} else {
		c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: v, cost: cost})
		c.used += cost
	}
	for c.used > c.max {
		e := c.order.Back()
		ent := e.Value.(*lruEntry[K, V])
		c.order.Remove(e)
		delete(c.items, ent.key)
		c.used -= ent.cost
	}
}
