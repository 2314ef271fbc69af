package chaintest

import (
	"context"
	"crypto/rand"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// commitsPerBlock keeps blocks just under the 1 MB base size with 1 KB
// commits (about 1,230 bytes each, signed).
const commitsPerBlock = 800

// benchNodes funds n node keys from a freshly mined wallet and confirms
// the funding, so the benchmark measures commits only.
func benchNodes(ctx context.Context, b *testing.B, be chain.Backend, n int, perNode int64) ([]*wallet.Key, []chain.UTXO, *wallet.Wallet) {
	b.Helper()
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	w, err := wallet.New(seed, be, wallet.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := be.Mine(ctx, int(be.Params().CoinbaseMaturity)+50, w.Address()); err != nil {
		b.Fatal(err)
	}
	keys := make([]*wallet.Key, n)
	heads := make([]chain.UTXO, n)
	for start := 0; start < n; start += 500 {
		end := min(start+500, n)
		var outs []wallet.Output
		for i := start; i < end; i++ {
			keys[i] = newBenchKey(b, be)
			o, err := wallet.PayTo(keys[i].Address(), perNode)
			if err != nil {
				b.Fatal(err)
			}
			outs = append(outs, o)
		}
		_, created, err := w.Pay(ctx, outs)
		if err != nil {
			b.Fatal(err)
		}
		copy(heads[start:end], created)
		if _, err := be.Mine(ctx, 1, w.Address()); err != nil {
			b.Fatal(err)
		}
	}
	return keys, heads, w
}

// BenchCommits measures node commits with a 1 KB payload, end to end:
// signed, accepted by the backend's mempool (full validation by btcd), and
// mined into blocks. It reports commits/s.
func BenchCommits(b *testing.B, be chain.Backend) {
	ctx := context.Background()
	const nodes = 1000
	keys, heads, w := benchNodes(ctx, b, be, nodes, 5_000_000)
	payload := make([]byte, 1000)
	_, _ = rand.Read(payload)
	script, err := envelope.Encode(envelope.TypeNodeCommit, payload)
	if err != nil {
		b.Fatal(err)
	}
	// Sign on every core, feed the mempool in order: btcd validates under
	// one lock, so broadcasting is the serial part.
	b.ResetTimer()
	start := time.Now()
	for done := 0; done < b.N; {
		batch := min(b.N-done, commitsPerBlock)
		txs := make([]*wire.MsgTx, batch)
		var wg sync.WaitGroup
		workers := runtime.GOMAXPROCS(0)
		for wk := 0; wk < workers; wk++ {
			wg.Add(1)
			go func(wk int) {
				defer wg.Done()
				for i := wk; i < batch; i += workers {
					n := (done + i) % nodes
					tx, next, err := keys[n].Commit([]chain.UTXO{heads[n]}, script, w.FeeRate())
					if err != nil {
						b.Error(err)
						return
					}
					heads[n] = next
					txs[i] = tx
				}
			}(wk)
		}
		wg.Wait()
		if b.Failed() {
			return
		}
		for _, tx := range txs {
			if err := be.Broadcast(ctx, tx); err != nil {
				b.Fatal(err)
			}
		}
		done += batch
		if _, err := be.Mine(ctx, 1, w.Address()); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(start)
	b.ReportMetric(float64(b.N)/el.Seconds(), "commits/s")
}

// BenchBlockConnect measures mining and connecting one block full of 1 KB
// commits (as many as fit, about 800), and reports the time per block.
func BenchBlockConnect(b *testing.B, be chain.Backend) {
	ctx := context.Background()
	keys, heads, w := benchNodes(ctx, b, be, commitsPerBlock, 5_000_000)
	payload := make([]byte, 1000)
	_, _ = rand.Read(payload)
	script, err := envelope.Encode(envelope.TypeNodeCommit, payload)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for n := range keys {
			tx, next, err := keys[n].Commit([]chain.UTXO{heads[n]}, script, w.FeeRate())
			if err != nil {
				b.Fatal(err)
			}
			if err := be.Broadcast(ctx, tx); err != nil {
				b.Fatal(err)
			}
			heads[n] = next
		}
		b.StartTimer()
		t0 := time.Now()
		if _, err := be.Mine(ctx, 1, w.Address()); err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
		if st, err := be.Status(ctx); err != nil || st.MempoolSize != 0 {
			b.Fatalf("block left %d commits in the mempool (%v)", st.MempoolSize, err)
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/block")
	b.ReportMetric(commitsPerBlock, "commits/block")
}

func newBenchKey(b *testing.B, be chain.Backend) *wallet.Key {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	k, err := wallet.DeriveKey(seed, be.Params())
	if err != nil {
		b.Fatal(err)
	}
	return k
}
