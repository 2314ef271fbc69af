package embedded

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/chain/chaintest"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
)

func open(t testing.TB, dir string) *Chain {
	t.Helper()
	c, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestContract(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir)
	var cur chain.Backend = c
	t.Cleanup(func() { _ = cur.Close() })
	chaintest.Run(t, chaintest.Harness{
		Backend: c,
		Reopen: func(t *testing.T) chain.Backend {
			if err := cur.Close(); err != nil {
				t.Fatal(err)
			}
			cur = open(t, dir)
			return cur
		},
	})
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir)
	defer c.Close()
	_, err := Open(Config{Dir: dir})
	if !errors.Is(err, chain.ErrUnavailable) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
}

func TestClosedBackendErrors(t *testing.T) {
	c := open(t, t.TempDir())
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tip(context.Background()); !errors.Is(err, chain.ErrUnavailable) {
		t.Fatalf("tip after close: %v", err)
	}
}

func TestAutoMine(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t)
	c, err := Open(Config{Dir: dir, MineInterval: 50 * time.Millisecond, MineTo: key.Address()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	// No transactions, no blocks: the timer does not mine empty blocks.
	time.Sleep(200 * time.Millisecond)
	tip, _ := c.Tip(ctx)
	if tip.Height != 0 {
		t.Fatalf("auto-mined %d empty blocks", tip.Height)
	}
	if _, err := c.Mine(ctx, 101, key.Address()); err != nil {
		t.Fatal(err)
	}
	w := walletFor(t, c)
	if _, err := c.Mine(ctx, 101, w.Address()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Send(ctx, key.Address(), 10_000); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		txs, err := c.AddressTxs(ctx, key.Address())
		if err != nil {
			t.Fatal(err)
		}
		if last := txs[len(txs)-1]; last.Confirmed() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("transaction not mined by the timer")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newKey(t testing.TB) *wallet.Key {
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := wallet.NewKey(priv, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func walletFor(t testing.TB, c chain.Backend) *wallet.Wallet {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	w, err := wallet.New(seed, c, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestCrashKeepsMinedBlocks kills a process that is mining (with commits
// in every block) with SIGKILL and checks that every block it reported as
// mined — Mine had returned — is in the reopened chain with its commits.
func TestCrashKeepsMinedBlocks(t *testing.T) {
	if os.Getenv("INTEGRITY_CRASH_CHILD") != "" {
		t.Skip("child mode")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), "INTEGRITY_CRASH_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[chainhash.Hash]int32{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var h string
		var height int32
		if _, err := fmt.Sscanf(sc.Text(), "MINED %d %s", &height, &h); err != nil {
			continue
		}
		hash, err := chainhash.NewHashFromStr(h)
		if err != nil {
			t.Fatal(err)
		}
		acked[*hash] = height
		if len(acked) == 140 { // past maturity, with commits in the last blocks
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
	if len(acked) < 140 {
		t.Fatalf("child acknowledged only %d blocks", len(acked))
	}
	c := open(t, dir)
	defer c.Close()
	for hash, height := range acked {
		got, err := c.bc.BlockHashByHeight(height)
		if err != nil || *got != hash {
			t.Fatalf("acknowledged block %d (%s) lost after kill -9: %v %v", height, hash, got, err)
		}
	}
	// The address index survived too: the child's node has its commits.
	addr, err := address.DecodeAddress(strings.TrimSpace(readFile(t, dir+"/node-address")), &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	txs, err := c.AddressTxs(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	confirmed := 0
	for _, tx := range txs {
		if tx.Confirmed() {
			confirmed++
		}
	}
	if confirmed < 10 {
		t.Fatalf("node has %d confirmed transactions after crash, want >= 10", confirmed)
	}
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCrashChild is the process TestCrashKeepsMinedBlocks kills.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("INTEGRITY_CRASH_CHILD")
	if dir == "" {
		t.Skip("only run as a child of TestCrashKeepsMinedBlocks")
	}
	c, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := walletFor(t, c)
	node := newKey(t)
	if err := os.WriteFile(dir+"/node-address", []byte(node.Address().EncodeAddress()), 0o600); err != nil {
		t.Fatal(err)
	}
	var head chain.UTXO
	for i := 0; ; i++ {
		if i > 101 {
			if head.Value == 0 {
				o, _ := wallet.PayTo(node.Address(), 10_000_000)
				_, created, err := w.Pay(ctx, []wallet.Output{o})
				if err != nil {
					t.Fatal(err)
				}
				head = created[0]
			}
			script, _ := envelope.Encode(envelope.TypeNodeCommit, make([]byte, 1000))
			tx, next, err := node.Commit([]chain.UTXO{head}, script, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Broadcast(ctx, tx); err != nil {
				t.Fatal(err)
			}
			head = next
		}
		hashes, err := c.Mine(ctx, 1, w.Address())
		if err != nil {
			t.Fatal(err)
		}
		tip, _ := c.Tip(ctx)
		fmt.Printf("MINED %d %s\n", tip.Height, hashes[0])
	}
}

// TestCloseMinesPending: a process that broadcast and exits leaves its
// transactions in a block, not in a mempool that dies with it.
func TestCloseMinesPending(t *testing.T) {
	dir := t.TempDir()
	w0 := newKey(t)
	c, err := Open(Config{Dir: dir, MineTo: w0.Address()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := walletFor(t, c)
	if _, err := c.Mine(ctx, 101, w.Address()); err != nil {
		t.Fatal(err)
	}
	to := newKey(t)
	h, err := w.Send(ctx, to.Address(), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = open(t, dir)
	defer c.Close()
	got, err := c.GetTx(ctx, h)
	if err != nil || !got.Confirmed() {
		t.Fatalf("pending tx after close: %+v %v", got, err)
	}
}

// TestCloseMinesMoreThanABlock: what a process leaves in the mempool can
// exceed one block; closing mines until none is left.
func TestCloseMinesMoreThanABlock(t *testing.T) {
	dir := t.TempDir()
	w0 := newKey(t)
	c, err := Open(Config{Dir: dir, MineTo: w0.Address()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := walletFor(t, c)
	if _, err := c.Mine(ctx, 101, w.Address()); err != nil {
		t.Fatal(err)
	}
	var outs []wallet.Output
	var keys []*wallet.Key
	for i := 0; i < 900; i++ {
		k := newKey(t)
		o, _ := wallet.PayTo(k.Address(), 100_000)
		outs = append(outs, o)
		keys = append(keys, k)
	}
	_, created, err := w.Pay(ctx, outs)
	if err != nil {
		t.Fatal(err)
	}
	script, _ := envelope.Encode(envelope.TypeNodeCommit, make([]byte, 1200))
	var last chainhash.Hash
	for i, k := range keys {
		tx, _, err := k.Commit([]chain.UTXO{created[i]}, script, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Broadcast(ctx, tx); err != nil {
			t.Fatal(err)
		}
		last = tx.TxHash()
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = open(t, dir)
	defer c.Close()
	got, err := c.GetTx(ctx, last)
	if err != nil || !got.Confirmed() {
		t.Fatalf("last of 900 commits after close: %v", err)
	}
	if tip, _ := c.Tip(ctx); tip.Height < 103 {
		t.Fatalf("900 × 1.2 KB commits fit one block? tip %d", tip.Height)
	}
}
