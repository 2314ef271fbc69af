// Package chaintest is the contract test suite every chain.Backend must
// pass. Backends call Run from their own tests with a real chain behind
// them: the embedded chain in a temporary directory, or a btcd node started
// by scripts/btcd.sh.
package chaintest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// Harness is what a backend's test hands the suite.
type Harness struct {
	// Backend under test.
	Backend chain.Backend
	// Reopen closes the backend and opens the same chain again (same
	// data directory, or a new client to the same node). The suite uses
	// what it returns from then on.
	Reopen func(t *testing.T) chain.Backend
}

// Run runs the contract suite. Subtests share one funded wallet and run in
// order; each leaves the mempool empty (it mines what it broadcasts).
func Run(t *testing.T, h Harness) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := &suite{h: h, b: h.Backend}
	s.fund(ctx, t)

	t.Run("TipAndStatus", func(t *testing.T) { s.tipAndStatus(ctx, t) })
	t.Run("SendConfirmsInOrder", func(t *testing.T) { s.sendConfirms(ctx, t) })
	t.Run("CommitPayloadsReadBackInOrder", func(t *testing.T) { s.commitPayloads(ctx, t) })
	t.Run("ForeignTxIsNotACommit", func(t *testing.T) { s.foreignTx(ctx, t) })
	t.Run("ConcurrentCommitsConflict", func(t *testing.T) { s.concurrentCommits(ctx, t) })
	t.Run("BatchFunding", func(t *testing.T) { s.batchFunding(ctx, t) })
	t.Run("BadTransactionsRejected", func(t *testing.T) { s.badTx(ctx, t) })
	t.Run("Notifications", func(t *testing.T) { s.notifications(ctx, t) })
	t.Run("InsufficientFunds", func(t *testing.T) { s.insufficient(ctx, t) })
}

type suite struct {
	h    Harness
	b    chain.Backend
	w    *wallet.Wallet
	seed []byte
}

func (s *suite) newWallet(t *testing.T) (*wallet.Wallet, []byte) {
	t.Helper()
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	w, err := wallet.New(seed, s.b, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return w, seed
}

// fund mines enough blocks that the suite's wallet has mature coins.
func (s *suite) fund(ctx context.Context, t *testing.T) {
	s.w, s.seed = s.newWallet(t)
	n := int(s.b.Params().CoinbaseMaturity) + 5
	hashes, err := s.b.Mine(ctx, n, s.w.Address())
	if err != nil {
		t.Fatalf("mine %d blocks: %v", n, err)
	}
	if len(hashes) != n {
		t.Fatalf("mined %d blocks, want %d", len(hashes), n)
	}
	bal, err := s.w.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bal.Confirmed <= 0 || bal.Immature <= 0 {
		t.Fatalf("after mining, balance %+v: want mature and immature coins", bal)
	}
}

func (s *suite) mine(ctx context.Context, t *testing.T) {
	t.Helper()
	if _, err := s.b.Mine(ctx, 1, s.w.Address()); err != nil {
		t.Fatalf("mine: %v", err)
	}
}

func (s *suite) tipAndStatus(ctx context.Context, t *testing.T) {
	tip, err := s.b.Tip(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tip.Hash != tip.Hash || st.Tip.Height != tip.Height || tip.Height < int32(s.b.Params().CoinbaseMaturity) {
		t.Fatalf("tip %+v, status %+v", tip, st)
	}
	if st.Network != s.b.Params().Name || st.Backend == "" {
		t.Fatalf("status %+v", st)
	}
	before := tip.Height
	hashes, err := s.b.Mine(ctx, 2, s.w.Address())
	if err != nil {
		t.Fatal(err)
	}
	tip, err = s.b.Tip(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tip.Height != before+2 || tip.Hash != hashes[1] {
		t.Fatalf("after mining 2: tip %+v, mined %v", tip, hashes)
	}
	if _, err := s.b.GetTx(ctx, chainhash.Hash{1, 2, 3}); !errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("GetTx of unknown hash: %v, want ErrNotFound", err)
	}
}

func newNode(t *testing.T, s *suite) *wallet.Key {
	t.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := wallet.NewKey(priv, s.b.Params())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (s *suite) sendConfirms(ctx context.Context, t *testing.T) {
	to := newNode(t, s)
	var sent []chainhash.Hash
	for _, amt := range []int64{10_000, 20_000} {
		h, err := s.w.Send(ctx, to.Address(), amt)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, h)
	}
	txs, err := s.b.AddressTxs(ctx, to.Address())
	if err != nil {
		t.Fatal(err)
	}
	if len(txs) != 2 || txs[0].Confirmed() || txs[1].Confirmed() {
		t.Fatalf("before mining: %d txs %v", len(txs), heights(txs))
	}
	got, err := s.b.GetTx(ctx, sent[0])
	if err != nil || got.Confirmed() {
		t.Fatalf("GetTx unconfirmed: %v %v", got, err)
	}
	s.mine(ctx, t)
	txs, err = s.b.AddressTxs(ctx, to.Address())
	if err != nil {
		t.Fatal(err)
	}
	if len(txs) != 2 || !txs[0].Confirmed() || txs[0].Height != txs[1].Height {
		t.Fatalf("after mining: %d txs %v", len(txs), heights(txs))
	}
	utxos, err := s.b.UTXOs(ctx, to.Address())
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, u := range utxos {
		total += u.Value
	}
	if len(utxos) != 2 || total != 30_000 {
		t.Fatalf("UTXOs %+v", utxos)
	}
	got, err = s.b.GetTx(ctx, sent[1])
	if err != nil || !got.Confirmed() || got.Hash() != sent[1] {
		t.Fatalf("GetTx confirmed: %+v %v", got, err)
	}
	if len(got.PrevOuts) != len(got.MsgTx.TxIn) || !bytes.Equal(got.PrevOuts[0].PkScript, mustScript(t, s.w.Address())) {
		t.Fatalf("GetTx prevouts do not name the wallet: %+v", got.PrevOuts)
	}
}

func heights(txs []chain.Tx) []int32 {
	var h []int32
	for _, t := range txs {
		h = append(h, t.Height)
	}
	return h
}

func mustScript(t *testing.T, a address.Address) []byte {
	t.Helper()
	o, err := wallet.PayTo(a, 1)
	if err != nil {
		t.Fatal(err)
	}
	return o.PkScript
}

// fundNode pays a node address and returns the output as its first head.
func (s *suite) fundNode(ctx context.Context, t *testing.T, k *wallet.Key, value int64) chain.UTXO {
	t.Helper()
	out, err := wallet.PayTo(k.Address(), value)
	if err != nil {
		t.Fatal(err)
	}
	_, created, err := s.w.Pay(ctx, []wallet.Output{out})
	if err != nil {
		t.Fatal(err)
	}
	return created[0]
}

func payload(t *testing.T, n int, tag byte) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	p[0] = tag
	return p
}

// commitPayloads: payloads of 2,000 bytes and of 50 KB committed from a node
// address read back, in order, by AddressTxs — before and after a restart.
func (s *suite) commitPayloads(ctx context.Context, t *testing.T) {
	node := newNode(t, s)
	head := s.fundNode(ctx, t, node, 1_000_000)
	payloads := [][]byte{payload(t, 2000, 1), payload(t, 50_000, 2), payload(t, 2000, 3)}
	for i, p := range payloads {
		script, err := envelope.Encode(envelope.TypeNodeCommit, p)
		if err != nil {
			t.Fatal(err)
		}
		tx, next, err := node.Commit([]chain.UTXO{head}, script, s.w.FeeRate())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.b.Broadcast(ctx, tx); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		// Re-broadcasting is idempotent (journals replay after restarts).
		if err := s.b.Broadcast(ctx, tx); err != nil {
			t.Fatalf("re-broadcast of commit %d: %v", i, err)
		}
		head = next
		if i == 0 {
			s.mine(ctx, t) // one confirmed, the rest chained in the mempool
		}
	}
	check := func(stage string, wantConfirmed int) {
		t.Helper()
		txs, err := s.b.AddressTxs(ctx, node.Address())
		if err != nil {
			t.Fatal(err)
		}
		var got [][]byte
		confirmed := 0
		for i := range txs {
			if !txs[i].SpendsFrom(node.PkScript()) {
				continue
			}
			if txs[i].Confirmed() {
				confirmed++
			}
			m, err := envelope.Decode(txs[i].MsgTx.TxOut[0].PkScript)
			if err != nil {
				t.Fatalf("%s: decode commit: %v", stage, err)
			}
			got = append(got, m.Fields[0])
		}
		if len(got) != len(payloads) || confirmed != wantConfirmed {
			t.Fatalf("%s: %d commits (%d confirmed), want %d (%d)", stage, len(got), confirmed, len(payloads), wantConfirmed)
		}
		for i := range got {
			if !bytes.Equal(got[i], payloads[i]) {
				t.Fatalf("%s: commit %d differs", stage, i)
			}
		}
		utxos, err := s.b.UTXOs(ctx, node.Address())
		if err != nil {
			t.Fatal(err)
		}
		if len(utxos) != 1 || utxos[0].OutPoint != head.OutPoint {
			t.Fatalf("%s: node UTXOs %+v, want only head %v", stage, utxos, head.OutPoint)
		}
	}
	check("unconfirmed", 1)
	s.mine(ctx, t)
	check("confirmed", 3)
	if s.h.Reopen != nil {
		s.b = s.h.Reopen(t)
		w, err := wallet.New(s.seed, s.b, wallet.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.w = w
		check("after restart", 3)
	}
}

// foreignTx: someone else pays the node address with an OP_RETURN that
// mimics a commit. It is listed for the address but does not spend from it.
func (s *suite) foreignTx(ctx context.Context, t *testing.T) {
	node := newNode(t, s)
	s.fundNode(ctx, t, node, 100_000)
	mimic, err := envelope.Encode(envelope.TypeNodeCommit, []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	// The attacker spends their own coins: an input from their address,
	// the mimic OP_RETURN, and a payment to the node's address.
	attacker := newNode(t, s)
	ahead := s.fundNode(ctx, t, attacker, 100_000)
	forged, err := attacker.Spend([]chain.UTXO{ahead}, []*wire.TxOut{
		wire.NewTxOut(0, mimic),
		wire.NewTxOut(1000, node.PkScript()),
	}, s.w.FeeRate())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.b.Broadcast(ctx, forged); err != nil {
		t.Fatal(err)
	}
	s.mine(ctx, t)
	txs, err := s.b.AddressTxs(ctx, node.Address())
	if err != nil {
		t.Fatal(err)
	}
	var listed, commits int
	for i := range txs {
		if txs[i].Hash() == forged.TxHash() {
			listed++
		}
		if txs[i].SpendsFrom(node.PkScript()) {
			commits++
		}
	}
	if listed != 1 || commits != 0 {
		t.Fatalf("foreign tx listed %d times, %d commits seen; want 1 and 0", listed, commits)
	}
}

func (s *suite) concurrentCommits(ctx context.Context, t *testing.T) {
	node := newNode(t, s)
	head := s.fundNode(ctx, t, node, 500_000)
	s.mine(ctx, t)
	var txs []*wire.MsgTx
	for i := 0; i < 2; i++ {
		script, err := envelope.Encode(envelope.TypeNodeCommit, []byte{byte(i), 'd', 'e', 'v'})
		if err != nil {
			t.Fatal(err)
		}
		tx, _, err := node.Commit([]chain.UTXO{head}, script, s.w.FeeRate())
		if err != nil {
			t.Fatal(err)
		}
		txs = append(txs, tx)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range txs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = s.b.Broadcast(ctx, txs[i])
		}(i)
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, chain.ErrConflict):
			conflict++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 || conflict != 1 {
		t.Fatalf("%d accepted, %d conflicts: %v", ok, conflict, errs)
	}
	s.mine(ctx, t)
	// The loser stays a conflict once the winner is in a block.
	loser := txs[0]
	if errs[0] == nil {
		loser = txs[1]
	}
	if err := s.b.Broadcast(ctx, loser); !errors.Is(err, chain.ErrConflict) {
		t.Fatalf("after confirmation, loser: %v, want ErrConflict", err)
	}
}

func (s *suite) batchFunding(ctx context.Context, t *testing.T) {
	var nodes []*wallet.Key
	var outs []wallet.Output
	for i := 0; i < 20; i++ {
		k := newNode(t, s)
		nodes = append(nodes, k)
		o, err := wallet.PayTo(k.Address(), 10_000)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, o)
	}
	tx, created, err := s.w.Pay(ctx, outs)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 20 {
		t.Fatalf("%d outputs created", len(created))
	}
	// Every node can commit at once, spending the unconfirmed funding.
	for i, k := range nodes {
		script, _ := envelope.Encode(envelope.TypeNodeCommit, []byte{byte(i)})
		c, _, err := k.Commit([]chain.UTXO{created[i]}, script, s.w.FeeRate())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.b.Broadcast(ctx, c); err != nil {
			t.Fatalf("node %d commit: %v", i, err)
		}
	}
	s.mine(ctx, t)
	for i, k := range nodes {
		txs, err := s.b.AddressTxs(ctx, k.Address())
		if err != nil {
			t.Fatal(err)
		}
		if len(txs) != 2 || txs[0].Hash() != tx.TxHash() || !txs[1].SpendsFrom(k.PkScript()) {
			t.Fatalf("node %d history: %d txs", i, len(txs))
		}
	}
}

func (s *suite) badTx(ctx context.Context, t *testing.T) {
	node := newNode(t, s)
	head := s.fundNode(ctx, t, node, 100_000)
	s.mine(ctx, t)
	script, _ := envelope.Encode(envelope.TypeNodeCommit, []byte("x"))
	tx, _, err := node.Commit([]chain.UTXO{head}, script, s.w.FeeRate())
	if err != nil {
		t.Fatal(err)
	}
	// Tamper after signing: the signature no longer matches.
	bad := tx.Copy()
	bad.TxOut[1].Value -= 1
	if err := s.b.Broadcast(ctx, bad); !errors.Is(err, chain.ErrRejected) {
		t.Fatalf("tampered tx: %v, want ErrRejected", err)
	}
	// Signed by the wrong key.
	other := newNode(t, s)
	wrong, _, err := other.Commit([]chain.UTXO{{OutPoint: head.OutPoint, Value: head.Value, PkScript: other.PkScript()}}, script, s.w.FeeRate())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.b.Broadcast(ctx, wrong); !errors.Is(err, chain.ErrRejected) {
		t.Fatalf("wrongly signed tx: %v, want ErrRejected", err)
	}
	// Spending an output that never existed.
	ghost := chain.UTXO{OutPoint: wire.OutPoint{Hash: chainhash.Hash{9, 9, 9}, Index: 0}, Value: 100_000, PkScript: node.PkScript()}
	g, _, err := node.Commit([]chain.UTXO{ghost}, script, s.w.FeeRate())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.b.Broadcast(ctx, g); !errors.Is(err, chain.ErrConflict) {
		t.Fatalf("spend of unknown output: %v, want ErrConflict", err)
	}
	// The honest one still goes through.
	if err := s.b.Broadcast(ctx, tx); err != nil {
		t.Fatal(err)
	}
	s.mine(ctx, t)
}

func (s *suite) notifications(ctx context.Context, t *testing.T) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.b.Subscribe(sctx)
	to := newNode(t, s)
	h, err := s.w.Send(ctx, to.Address(), 50_000)
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(kind chain.EventKind) chain.Event {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatal("event channel closed")
				}
				if ev.Kind != kind {
					continue
				}
				for _, tx := range ev.Txs {
					if tx.Hash() == h {
						return ev
					}
				}
			case <-deadline:
				t.Fatalf("no event of kind %d for %s", kind, h)
			}
		}
	}
	ev := waitFor(chain.EventTx)
	if len(ev.Txs) != 1 || ev.Txs[0].Confirmed() {
		t.Fatalf("tx event %+v", ev)
	}
	s.mine(ctx, t)
	ev = waitFor(chain.EventBlock)
	tip, err := s.b.Tip(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Tip.Height != tip.Height {
		t.Fatalf("block event tip %d, chain tip %d", ev.Tip.Height, tip.Height)
	}
	cancel()
	// The channel closes once the subscription's context ends.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("event channel not closed after cancel")
		}
	}
}

func (s *suite) insufficient(ctx context.Context, t *testing.T) {
	poor, _ := s.newWallet(t)
	_, err := poor.Send(ctx, s.w.Address(), 10_000)
	var ife *wallet.InsufficientFundsError
	if !errors.As(err, &ife) || !errors.Is(err, wallet.ErrInsufficientFunds) {
		t.Fatalf("send from empty wallet: %v", err)
	}
	node := newNode(t, s)
	head := s.fundNode(ctx, t, node, 600)
	script, _ := envelope.Encode(envelope.TypeNodeCommit, make([]byte, 1000))
	if _, _, err := node.Commit([]chain.UTXO{head}, script, s.w.FeeRate()); !errors.Is(err, wallet.ErrInsufficientFunds) {
		t.Fatalf("commit beyond node balance: %v", err)
	}
	s.mine(ctx, t)
}
