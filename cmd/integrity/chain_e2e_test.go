package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/internal/e2e"
)

// TestChainAndWalletCLI: the foundation commands on the embedded chain,
// with and without an agent running.
func TestChainAndWalletCLI(t *testing.T) {
	d := e2e.NewDevice(t, "")
	st := d.OK("chain", "status")
	if e2e.Field(st, "network") != "regtest" || !strings.HasPrefix(e2e.Field(st, "tip"), "0 ") {
		t.Fatalf("fresh chain status:\n%s", st)
	}
	if out := d.OK("chain", "mine", "101"); !strings.Contains(out, "tip height 101") {
		t.Fatalf("mine: %s", out)
	}
	bal := d.OK("wallet", "balance")
	if e2e.Field(bal, "confirmed") != "100 BTC" {
		t.Fatalf("balance after 101 blocks:\n%s", bal)
	}
	// Another device's address to pay.
	other := e2e.NewDevice(t, "")
	to := strings.TrimSpace(other.OK("wallet", "address"))
	txid := strings.TrimSpace(d.OK("wallet", "send", to, "1.5"))
	if len(txid) != 64 {
		t.Fatalf("send printed %q", txid)
	}
	// The command's process mined its transaction before exiting: the
	// embedded mempool does not outlive it.
	st = d.OK("chain", "status")
	if !strings.HasPrefix(e2e.Field(st, "tip"), "102 ") || e2e.Field(st, "mempool") != "0 transactions" {
		t.Fatalf("after send:\n%s", st)
	}

	// Bad input: one clear line, exit 1, nothing spent.
	d.Fail("invalid address", "wallet", "send", "not-an-address", "1")
	d.Fail("invalid amount", "wallet", "send", to, "0.1.2")
	d.Fail("insufficient funds", "wallet", "send", to, "100000")
	d.Fail("not a positive block count", "chain", "mine", "zero")
	d.Fail("uses embedded, not btcd://", "--chain", "btcd://u:p@127.0.0.1:1?net=simnet", "chain", "status")

	// With an agent running, commands go through its socket (the agent
	// owns the embedded chain's database).
	agent := exec.Command(d.Bin, "--data-dir", d.DataDir, "agent", "--mine-interval", "1h")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = agent.Process.Kill(); _ = agent.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !socketUp(filepath.Join(d.DataDir, "agent.sock")) {
		if time.Now().After(deadline) {
			t.Fatal("agent did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.OK("wallet", "send", to, "0.25")
	st = d.OK("chain", "status")
	if !strings.HasPrefix(e2e.Field(st, "tip"), "102 ") || e2e.Field(st, "mempool") != "1 transactions" {
		t.Fatalf("through the agent, before its miner runs:\n%s", st)
	}
	d.OK("chain", "mine", "1")
	if st = d.OK("chain", "status"); e2e.Field(st, "mempool") != "0 transactions" {
		t.Fatalf("after mining through the agent:\n%s", st)
	}
}

// TestChainCLIAgainstBtcd: the same commands against a real btcd node, and
// the errors a misconfigured node gives.
func TestChainCLIAgainstBtcd(t *testing.T) {
	node := e2e.StartBtcd(t)
	d := e2e.NewDevice(t, node.URL)
	st := d.OK("chain", "status")
	if e2e.Field(st, "network") != "simnet" || !strings.HasPrefix(e2e.Field(st, "backend"), "btcd") {
		t.Fatalf("status:\n%s", st)
	}
	d.OK("chain", "mine", "101")
	if e2e.Field(d.OK("wallet", "balance"), "confirmed") == "0 BTC" {
		t.Fatal("no funds after mining on btcd")
	}
	// The chain is remembered: no --chain needed afterwards.
	d.Chain = ""
	to := strings.TrimSpace(e2e.NewDevice(t, node.URL).OK("wallet", "address"))
	d.OK("wallet", "send", to, "2")

	down := e2e.NewDevice(t, "btcd://integrity:x@127.0.0.1:1?net=simnet")
	down.Fail("connection refused", "chain", "status")
	wrong := strings.Replace(node.URL, "integrity:", "integrity:wrong", 1)
	if wrong == node.URL {
		t.Fatalf("cannot build a wrong-password URL from %s", node.URL)
	}
	bad := e2e.NewDevice(t, wrong)
	line := bad.Fail("authentication failed", "chain", "status")
	if strings.Contains(line, "wrong") {
		t.Fatalf("error line leaks the password: %s", line)
	}
}

// socketUp reports whether an agent answers on its socket.
func socketUp(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
