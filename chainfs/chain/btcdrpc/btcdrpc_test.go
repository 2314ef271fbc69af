package btcdrpc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/chain/chaintest"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/e2e"
)

func TestContract(t *testing.T) {
	n := sharedNode(t)
	c := dial(t, n.url)
	var cur chain.Backend = c
	t.Cleanup(func() { _ = cur.Close() })
	chaintest.Run(t, chaintest.Harness{
		Backend: c,
		Reopen: func(t *testing.T) chain.Backend {
			if err := cur.Close(); err != nil {
				t.Fatal(err)
			}
			cur = dial(t, n.url)
			return cur
		},
	})
}

func newKey(t *testing.T) *wallet.Key {
	t.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := wallet.NewKey(priv, &chaincfg.SimNetParams)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newWallet(t *testing.T, b chain.Backend) *wallet.Wallet {
	t.Helper()
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	w, err := wallet.New(seed, b, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// waitEvent waits for an event of kind that carries transaction h.
func waitEvent(t *testing.T, events <-chan chain.Event, kind chain.EventKind, h chainhash.Hash, within time.Duration) chain.Event {
	t.Helper()
	deadline := time.After(within)
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
			t.Fatalf("no event of kind %d for %s within %s", kind, h, within)
		}
	}
}

// eventually retries f every 50 ms until it returns nil or within passes.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTwoNodes: two btcd nodes peered on loopback share one chain. A
// transaction broadcast through node 1 shows up in node 2's address index
// and subscriptions (websocket and polling) within seconds, and a node
// that goes away gives ErrUnavailable, not an empty answer. On the way, it
// checks that a chain whose tip is older than a day can still be mined.
func TestTwoNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n1 := startNode(t, nodeOpts{})
	n2 := startNode(t, nodeOpts{peers: []string{n1.p2pAddr}})
	c1 := dial(t, n1.url)
	defer c1.Close()
	c2 := dial(t, n2.url)
	defer c2.Close()
	poll2 := dial(t, n2.url+"&transport=post")
	defer poll2.Close()

	// A tip from 2014: btcd then believes it is syncing and refuses
	// getblocktemplate; Mine must still work.
	payee := newKey(t)
	tmpl, err := c1.wakeTemplate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.time = c1.params.GenesisBlock.Header.Timestamp.Add(time.Second)
	if _, err := c1.submit(ctx, tmpl, payee.PkScript()); err != nil {
		t.Fatalf("old block: %v", err)
	}
	if _, err := c1.Mine(ctx, 1, payee.Address()); err != nil {
		t.Fatalf("mine on a day-old tip: %v", err)
	}

	w := newWallet(t, c1)
	if _, err := c1.Mine(ctx, int(c1.params.CoinbaseMaturity)+1, w.Address()); err != nil {
		t.Fatal(err)
	}
	tip1, err := c1.Tip(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		tip2, err := c2.Tip(ctx)
		if err != nil {
			return err
		}
		if tip2.Hash != tip1.Hash {
			return errors.New("node 2 did not sync node 1's blocks: tip " + strconv.Itoa(int(tip2.Height)) + " vs " + strconv.Itoa(int(tip1.Height)))
		}
		return nil
	})

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	wsEvents := c2.Subscribe(sctx)
	pollEvents := poll2.Subscribe(sctx)

	to := newKey(t)
	h, err := w.Send(ctx, to.Address(), 50_000)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev := waitEvent(t, wsEvents, chain.EventTx, h, 5*time.Second)
	if ev.Txs[0].Confirmed() || !bytes.Equal(ev.Txs[0].PrevOuts[0].PkScript, mustScript(t, w.Address())) {
		t.Fatalf("tx event on node 2: %+v", ev.Txs[0])
	}
	waitEvent(t, pollEvents, chain.EventTx, h, 5*time.Second)
	t.Logf("node 2 announced the transaction after %s", time.Since(start))
	eventually(t, 5*time.Second, func() error {
		txs, err := c2.AddressTxs(ctx, to.Address())
		if err != nil {
			return err
		}
		if len(txs) != 1 || txs[0].Hash() != h || txs[0].Confirmed() {
			return errors.New("node 2 does not list the unconfirmed transaction")
		}
		return nil
	})

	mined, err := c1.Mine(ctx, 1, w.Address())
	if err != nil {
		t.Fatal(err)
	}
	ev = waitEvent(t, wsEvents, chain.EventBlock, h, 5*time.Second)
	if ev.Tip.Hash != mined[0] {
		t.Fatalf("block event tip %s, mined %s", ev.Tip.Hash, mined[0])
	}
	for _, tx := range ev.Txs[1:] {
		if len(tx.PrevOuts) != len(tx.MsgTx.TxIn) || tx.PrevOuts[0].PkScript == nil {
			t.Fatalf("block event transaction %s without resolved inputs", tx.Hash())
		}
	}
	waitEvent(t, pollEvents, chain.EventBlock, h, 5*time.Second)
	eventually(t, 5*time.Second, func() error {
		txs, err := c2.AddressTxs(ctx, to.Address())
		if err != nil {
			return err
		}
		if len(txs) != 1 || txs[0].BlockHash != mined[0] || txs[0].Height != ev.Tip.Height || txs[0].Index < 1 {
			return errors.New("node 2 does not list the confirmed transaction in the mined block")
		}
		return nil
	})

	// Node 2 goes away: answers become ErrUnavailable, never empty.
	stopNode(n2.dir)
	for _, b := range []chain.Backend{c2, poll2} {
		qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
		txs, err := b.AddressTxs(qctx, to.Address())
		qcancel()
		if !errors.Is(err, chain.ErrUnavailable) || txs != nil {
			t.Fatalf("AddressTxs on a stopped node: %d txs, %v; want ErrUnavailable", len(txs), err)
		}
		t.Logf("stopped node: %v", err)
	}

	// Node 2 comes back (simnet keeps its chain): the clients reconnect,
	// the websocket subscription re-registers and catches up.
	if _, err := startNodeWith(t, n2.nodeOpts); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		txs, err := c2.AddressTxs(ctx, to.Address())
		if err != nil {
			return err
		}
		if len(txs) != 1 || txs[0].BlockHash != mined[0] {
			return errors.New("restarted node 2 lost the transaction")
		}
		return nil
	})
	// btcd does not exchange mempools when peers connect: wait for the
	// connection before broadcasting, or node 2 would only see the
	// transaction once mined.
	eventually(t, 15*time.Second, func() error {
		var peers int64
		if err := c2.call(ctx, btcjson.NewGetConnectionCountCmd(), &peers); err != nil {
			return err
		}
		if peers == 0 {
			return errors.New("restarted node 2 has not reconnected to node 1")
		}
		return nil
	})
	h2, err := w.Send(ctx, to.Address(), 60_000)
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, wsEvents, chain.EventTx, h2, 10*time.Second)
	waitEvent(t, pollEvents, chain.EventTx, h2, 10*time.Second)
	if _, err := c1.Mine(ctx, 1, w.Address()); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, wsEvents, chain.EventBlock, h2, 10*time.Second)
}

func mustScript(t *testing.T, a address.Address) []byte {
	t.Helper()
	o, err := wallet.PayTo(a, 1)
	if err != nil {
		t.Fatal(err)
	}
	return o.PkScript
}

func TestUnreachable(t *testing.T) {
	port := e2e.FreePort(t)
	u := "btcd://user:sekrit@127.0.0.1:" + strconv.Itoa(port) + "?net=simnet"
	for _, transport := range []string{"auto", "post"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		c, err := Dial(ctx, u+"&transport="+transport, nil)
		cancel()
		if c != nil || !errors.Is(err, chain.ErrUnavailable) {
			t.Fatalf("%s: dial of a closed port: %v, want ErrUnavailable", transport, err)
		}
		msg := err.Error()
		if strings.Contains(msg, "sekrit") || strings.Contains(msg, "\n") {
			t.Fatalf("%s: error leaks the password or spans lines: %q", transport, msg)
		}
		if transport == "auto" && msg != "btcd at 127.0.0.1:"+strconv.Itoa(port)+": connection refused (is btcd running?)" {
			t.Fatalf("unclear error: %q", msg)
		}
		t.Logf("%s (%s): %v", transport, time.Since(start).Round(time.Millisecond), err)
	}
}

func TestWrongPassword(t *testing.T) {
	n := sharedNode(t)
	cfg, err := ParseURL(n.url)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(n.url)
	u.User = url.UserPassword(cfg.User, "wrong")
	for _, transport := range []string{"auto", "post"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := Dial(ctx, u.String()+"&transport="+transport, nil)
		cancel()
		if c != nil || !errors.Is(err, chain.ErrUnavailable) {
			t.Fatalf("%s: wrong password: %v, want ErrUnavailable", transport, err)
		}
		want := "btcd at " + cfg.Host + ": authentication failed (check user/password)"
		if err.Error() != want {
			t.Fatalf("%s: wrong password: %q, want %q", transport, err, want)
		}
	}
}

// TestContractHTTPPost runs the contract over HTTP POST, where
// notifications come from polling.
func TestContractHTTPPost(t *testing.T) {
	n := sharedNode(t)
	u := n.url + "&transport=post"
	c := dial(t, u)
	var cur chain.Backend = c
	t.Cleanup(func() { _ = cur.Close() })
	chaintest.Run(t, chaintest.Harness{
		Backend: c,
		Reopen: func(t *testing.T) chain.Backend {
			if err := cur.Close(); err != nil {
				t.Fatal(err)
			}
			cur = dial(t, u)
			return cur
		},
	})
}

func TestTLS(t *testing.T) {
	n := startNode(t, nodeOpts{tls: true})
	if !strings.Contains(n.url, "tls=1&cert=") {
		t.Fatalf("script URL for a TLS node: %s", n.url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, transport := range []string{"ws", "post"} {
		c := dial(t, n.url+"&transport="+transport)
		if _, err := c.Tip(ctx); err != nil {
			t.Fatalf("%s over TLS: %v", transport, err)
		}
		c.Close()
	}
	// Without TLS against a TLS node: one clear error.
	plain := strings.Replace(n.url, "&tls=1", "", 1)
	plain = plain[:strings.Index(plain, "&cert=")]
	_, err := Dial(ctx, plain, nil)
	if !errors.Is(err, chain.ErrUnavailable) || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("plain client, TLS node: %v", err)
	}
	t.Log(err)
}

func TestWrongNetwork(t *testing.T) {
	n := sharedNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Dial(ctx, strings.Replace(n.url, "net=simnet", "net=regtest", 1), nil)
	if err == nil || !strings.Contains(err.Error(), "is on network simnet, the URL says regtest") {
		t.Fatalf("dial with the wrong network: %v", err)
	}
}

func TestStatusAndMiningLimits(t *testing.T) {
	n := sharedNode(t)
	c := dial(t, n.url)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := ParseURL(n.url)
	if st.Backend != "btcd" || st.Network != "simnet" || st.Endpoint != cfg.Host {
		t.Fatalf("status %+v", st)
	}
	if s := cfg.String(); strings.Contains(s, cfg.Pass) || !strings.Contains(s, cfg.Host) {
		t.Fatalf("Config.String does not redact: %s", s)
	}
	if _, err := c.GetTx(ctx, chainhash.Hash{7}); !errors.Is(err, chain.ErrNotFound) {
		t.Fatalf("GetTx of unknown hash: %v", err)
	}
	// An address with no history is an empty list, not an error.
	txs, err := c.AddressTxs(ctx, newKey(t).Address())
	if err != nil || len(txs) != 0 {
		t.Fatalf("fresh address: %v %v", txs, err)
	}
	sub := c.Subscribe(context.Background())
	c.Close()
	select {
	case _, ok := <-sub:
		if ok {
			t.Fatal("event after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the subscription")
	}
	if _, err := c.Tip(ctx); !errors.Is(err, chain.ErrUnavailable) {
		t.Fatalf("Tip after Close: %v", err)
	}
	other := &Client{params: &chaincfg.TestNet3Params}
	if _, err := other.Mine(ctx, 1, nil); !errors.Is(err, chain.ErrUnsupported) {
		t.Fatalf("mining on testnet3: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	good := map[string]Config{
		"btcd://u:p@127.0.0.1:18556?net=simnet": {Host: "127.0.0.1:18556", User: "u", Pass: "p", Params: &chaincfg.SimNetParams, Transport: "auto"},
		"btcd://u:p%40ss@localhost":             {Host: "localhost:18556", User: "u", Pass: "p@ss", Params: &chaincfg.SimNetParams, Transport: "auto"},
		"btcd://u:p@[::1]:1?net=regtest&transport=post": {Host: "[::1]:1", User: "u", Pass: "p",
			Params: &chaincfg.RegressionNetParams, Transport: "post"},
		"btcd://u:p@h:2?net=mainnet&tls=1&cert=/x.pem": {Host: "h:2", User: "u", Pass: "p", Params: &chaincfg.MainNetParams,
			TLS: true, CertFile: "/x.pem", Transport: "auto"},
	}
	for raw, want := range good {
		got, err := ParseURL(raw)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	bad := []string{
		"",
		"http://u:p@127.0.0.1:1",
		"btcd://127.0.0.1:1",                         // no user
		"btcd://u:sekrit@127.0.0.1:99999",            // port
		"btcd://u:sekrit@127.0.0.1:1?net=bogus",      // network
		"btcd://u:sekrit@127.0.0.1:1?nett=simnet",    // typo
		"btcd://u:sekrit@127.0.0.1:1?cert=/x",        // cert without tls
		"btcd://u:sekrit@127.0.0.1:1?tls=maybe",      // tls value
		"btcd://u:sekrit@127.0.0.1:1/path",           // path
		"btcd://u:sekrit@127.0.0.1:1?net=a&net=b",    // repeated
		"btcd://u:sekrit@127.0.0.1:1?transport=smtp", // transport
		"btcd://u:sekrit@%zz",                        // escape
		"btcd:opaque",
	}
	for _, raw := range bad {
		_, err := ParseURL(raw)
		if err == nil {
			t.Errorf("ParseURL(%q) accepted", raw)
			continue
		}
		if strings.Contains(err.Error(), "sekrit") {
			t.Errorf("ParseURL(%q) error leaks the password: %v", raw, err)
		}
		if errors.Is(err, chain.ErrUnavailable) {
			t.Errorf("ParseURL(%q): a bad URL is not an unavailable node: %v", raw, err)
		}
	}
	ctx := context.Background()
	if _, err := Dial(ctx, "btcd://nobody@", nil); err == nil || !strings.Contains(err.Error(), "btcd URL") {
		t.Fatalf("Dial of a malformed URL: %v", err)
	}
}

func TestClassifyReject(t *testing.T) {
	cases := map[string]rejectKind{
		"TX rejected: already have transaction in mempool abc":                                           rejectDuplicate,
		"TX rejected: transaction already exists in blockchain":                                          rejectDuplicate,
		"TX rejected: output already spent in mempool: output=x:0, tx=y":                                 rejectConflict,
		"TX rejected: orphan transaction abc references outputs of unknown or fully-spent transaction d": rejectConflict,
		"TX rejected: failed to validate input abc:0 which references output x:0 - signature invalid":    rejectOther,
		"TX rejected: transaction abc has 0 fees which is under the required amount of 226":              rejectOther,
		"TX decode failed: unexpected EOF":                                                               rejectOther,
	}
	for msg, want := range cases {
		if got := classifyReject(msg); got != want {
			t.Errorf("classifyReject(%q) = %d, want %d", msg, got, want)
		}
	}
}

func TestDependencyOrder(t *testing.T) {
	// c spends b spends a; d is independent and seen first.
	mk := func(parent *wire.MsgTx, tag byte) *wire.MsgTx {
		tx := wire.NewMsgTx(2)
		prev := wire.OutPoint{Hash: chainhash.Hash{tag}}
		if parent != nil {
			prev = wire.OutPoint{Hash: parent.TxHash()}
		}
		tx.AddTxIn(wire.NewTxIn(&prev, nil, nil))
		tx.AddTxOut(wire.NewTxOut(int64(tag), []byte{tag}))
		return tx
	}
	a := mk(nil, 1)
	b := mk(a, 2)
	c := mk(b, 3)
	d := mk(nil, 4)
	now := time.Now()
	// Times deliberately contradict dependencies for a, b, c.
	in := []chain.Tx{
		{MsgTx: c, Time: now.Add(-3 * time.Second)},
		{MsgTx: d, Time: now.Add(-4 * time.Second)},
		{MsgTx: b, Time: now.Add(-2 * time.Second)},
		{MsgTx: a, Time: now.Add(-1 * time.Second)},
	}
	out := dependencyOrder(in)
	var got []chainhash.Hash
	for i, tx := range out {
		if tx.Index != i {
			t.Fatalf("Index %d at position %d", tx.Index, i)
		}
		got = append(got, tx.Hash())
	}
	want := []chainhash.Hash{d.TxHash(), a.TxHash(), b.TxHash(), c.TxHash()}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}

// TestLongHistory pages through histories longer than a page whose
// mempool part straddles a page boundary (btcd returns mempool entries in
// map order, different on every call), and checks the order.
func TestLongHistory(t *testing.T) {
	n := sharedNode(t)
	c := dial(t, n.url)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := newWallet(t, c)
	if _, err := c.Mine(ctx, int(c.params.CoinbaseMaturity)+1, w.Address()); err != nil {
		t.Fatal(err)
	}
	to := newKey(t)
	sent := map[chainhash.Hash]bool{}
	for i := 0; i < 18; i++ {
		h, err := w.Send(ctx, to.Address(), int64(10_000+i))
		if err != nil {
			t.Fatal(err)
		}
		sent[h] = true
		if i == 11 {
			if _, err := c.Mine(ctx, 1, w.Address()); err != nil {
				t.Fatal(err)
			}
		}
	}
	ref := dial(t, n.url) // default page size: one page
	defer ref.Close()
	want, err := ref.AddressTxs(ctx, w.Address())
	if err != nil {
		t.Fatal(err)
	}
	c.pageSize = 5 // 12 confirmed: pages of 5, 5, then 2 confirmed + 3 of 6 unconfirmed
	for round := 0; round < 4; round++ {
		txs, err := c.AddressTxs(ctx, to.Address())
		if err != nil {
			t.Fatal(err)
		}
		if len(txs) != 18 {
			t.Fatalf("round %d: %d transactions, want 18", round, len(txs))
		}
		for i, tx := range txs {
			if !sent[tx.Hash()] {
				t.Fatalf("round %d: unexpected transaction %s", round, tx.Hash())
			}
			if (i < 12) != tx.Confirmed() {
				t.Fatalf("round %d: transaction %d confirmed=%v", round, i, tx.Confirmed())
			}
			if i > 0 && i < 12 && tx.Index <= txs[i-1].Index {
				t.Fatalf("round %d: confirmed out of block order", round)
			}
			if i >= 12 && tx.Index != i-12 {
				t.Fatalf("round %d: unconfirmed Index %d at %d", round, tx.Index, i)
			}
		}
		// The wallet's history: a chain of unconfirmed change, which
		// must come parents first, and the same as read in one page.
		got, err := c.AddressTxs(ctx, w.Address())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: wallet history of %d in pages, %d in one", round, len(got), len(want))
		}
		pos := map[chainhash.Hash]int{}
		for i, tx := range got {
			if tx.Hash() != want[i].Hash() {
				t.Fatalf("round %d: wallet history differs at %d", round, i)
			}
			pos[tx.Hash()] = i
		}
		for i, tx := range got {
			for _, in := range tx.MsgTx.TxIn {
				if p, ok := pos[in.PreviousOutPoint.Hash]; ok && p >= i {
					t.Fatalf("round %d: transaction %d listed before its parent %d", round, i, p)
				}
			}
		}
	}
	if _, err := c.Mine(ctx, 1, w.Address()); err != nil { // leave the mempool empty
		t.Fatal(err)
	}
}
