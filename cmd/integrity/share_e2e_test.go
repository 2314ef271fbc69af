package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"

	"github.com/integrity-sys/integrity/chainfs/share"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/e2e"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// eventually polls until f returns nil or the time is up.
func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileIs(p, want string) func() error {
	return func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if string(b) != want {
			return errors.New("content is " + strings.TrimSpace(string(b)))
		}
		return nil
	}
}

// TestSharingEndToEnd: two users (and a third) on one btcd chain, each with
// their own agent and mount.
func TestSharingEndToEnd(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	alice, bob, carol := e2e.NewDevice(t, node.URL), e2e.NewDevice(t, node.URL), e2e.NewDevice(t, node.URL)
	newSystem(t, alice, ss, "alice@example.com")
	newSystem(t, bob, ss, "bob@example.com")
	newSystem(t, carol, ss, "carol@example.com")
	wa, wb := whoami(t, alice), whoami(t, bob)
	alice.OK("contacts", "add", "bob", wb.PrimaryPubKey)
	bob.OK("contacts", "add", "alice", wa.PrimaryPubKey)
	ma, mb := filepath.Join(t.TempDir(), "alice"), filepath.Join(t.TempDir(), "bob")
	mountAt(t, alice, ma)
	mountAt(t, bob, mb)

	// Read-only share of /docs, with a subfolder.
	must(t, os.MkdirAll(filepath.Join(ma, "docs", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(ma, "docs", "a.txt"), []byte("alpha"), 0o644))
	must(t, os.WriteFile(filepath.Join(ma, "docs", "sub", "b.txt"), []byte("beta"), 0o644))
	alice.OK("share", "/docs", "bob")
	shared := filepath.Join(mb, "shared", "alice", "docs")
	eventually(t, 20*time.Second, "Bob sees /docs", fileIs(filepath.Join(shared, "sub", "b.txt"), "beta"))
	eventually(t, 5*time.Second, "Bob reads /docs/a.txt", fileIs(filepath.Join(shared, "a.txt"), "alpha"))
	// Added afterwards: Bob sees it too.
	must(t, os.WriteFile(filepath.Join(ma, "docs", "later.txt"), []byte("added later"), 0o644))
	eventually(t, 20*time.Second, "Bob sees a file added after the share", fileIs(filepath.Join(shared, "later.txt"), "added later"))
	// Bob's writes fail.
	if err := os.WriteFile(filepath.Join(shared, "bob.txt"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Bob writing into a read-only share: %v, want EROFS", err)
	}
	if err := os.WriteFile(filepath.Join(shared, "a.txt"), []byte("changed"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Bob changing a read-only file: %v, want EROFS", err)
	}
	if !strings.Contains(bob.OK("shares"), "/shared/alice/docs") || !strings.Contains(alice.OK("shares"), "with bob") {
		t.Fatalf("shares listings:\nalice:\n%s\nbob:\n%s", alice.OK("shares"), bob.OK("shares"))
	}

	// Read-write share of /team: both edit, each sees the other's changes.
	must(t, os.MkdirAll(filepath.Join(ma, "team"), 0o755))
	must(t, os.WriteFile(filepath.Join(ma, "team", "plan.txt"), []byte("v1 by alice"), 0o644))
	alice.OK("share", "/team", "bob", "--write")
	team := filepath.Join(mb, "shared", "alice", "team")
	eventually(t, 20*time.Second, "Bob sees /team", fileIs(filepath.Join(team, "plan.txt"), "v1 by alice"))
	must(t, os.WriteFile(filepath.Join(team, "plan.txt"), []byte("v2 by bob"), 0o644))
	must(t, os.WriteFile(filepath.Join(team, "bobs.txt"), []byte("new from bob"), 0o644))
	eventually(t, 20*time.Second, "Alice sees Bob's edit", fileIs(filepath.Join(ma, "team", "plan.txt"), "v2 by bob"))
	eventually(t, 20*time.Second, "Alice sees Bob's new file", fileIs(filepath.Join(ma, "team", "bobs.txt"), "new from bob"))
	must(t, os.WriteFile(filepath.Join(ma, "team", "plan.txt"), []byte("v3 by alice"), 0o644))
	eventually(t, 20*time.Second, "Bob sees Alice's edit", fileIs(filepath.Join(team, "plan.txt"), "v3 by alice"))

	// Published: Carol, who holds none of Alice's keys, reads it.
	must(t, os.MkdirAll(filepath.Join(ma, "pub"), 0o755))
	must(t, os.WriteFile(filepath.Join(ma, "pub", "hello.txt"), []byte("hello world"), 0o644))
	out := alice.OK("publish", "/pub")
	fields := strings.Fields(out)
	addr := strings.Trim(fields[len(fields)-1], "`")
	carol.OK("open", addr)
	if got := carol.OK("cat", "/public/"+addr+"/hello.txt"); got != "hello world" {
		t.Fatalf("Carol reads %q", got)
	}

	// Malformed, foreign and replayed inbox messages are ignored.
	attackInbox(t, node.URL, wb.PrimaryPubKey)
	before := bob.OK("shares")
	time.Sleep(time.Second)
	if after := bob.OK("shares"); after != before {
		t.Fatalf("junk in the inbox changed Bob's shares:\n%s\n%s", before, after)
	}
	log, _ := os.ReadFile(filepath.Join(bob.DataDir, "agent.log"))
	for _, want := range []string{"replayed share message is ignored", "does not open for us"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Fatalf("Bob's agent log does not say %q", want)
		}
	}

	// Revocation: /docs moves to fresh keys; Bob's view goes away and he
	// cannot read what Alice writes next.
	alice.OK("unshare", "/docs", "bob")
	eventually(t, 20*time.Second, "Bob's view of /docs withdrawn", func() error {
		if _, err := os.Stat(shared); err == nil {
			return errors.New("still there")
		}
		return nil
	})
	must(t, os.WriteFile(filepath.Join(ma, "docs", "secret.txt"), []byte("after revocation"), 0o644))
	if got := alice.OK("cat", "/docs/a.txt"); got != "alpha" {
		t.Fatalf("Alice's /docs after rekey: %q", got)
	}
	if strings.Contains(bob.OK("shares"), "/docs") {
		t.Fatalf("Bob still lists /docs:\n%s", bob.OK("shares"))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// attackInbox pays Bob's inbox with garbage, a message sealed for someone
// else, and a copy (replay) of a real share message found in his inbox.
func attackInbox(t *testing.T, chainURL, bobPubHex string) {
	t.Helper()
	ctx := context.Background()
	seed := make([]byte, 32)
	seed[0] = 0x42
	be, w := strangerWallet(t, chainURL, seed)
	pub, err := hex.DecodeString(bobPubHex)
	if err != nil {
		t.Fatal(err)
	}
	inbox := share.InboxAddr(pub)
	ia, _ := address.NewAddressPubKeyHash(inbox[:], be.Params())
	pay := func(script []byte) {
		out, _ := wallet.PayTo(ia, wallet.DustLimit)
		if _, _, err := w.Pay(ctx, []wallet.Output{{PkScript: script}, out}); err != nil {
			t.Fatal(err)
		}
	}
	garbage, _ := envelope.Encode(envelope.TypeShare, []byte("not a key"), []byte("noise"))
	pay(garbage)
	// A real share message, copied from the chain and paid again.
	txs, err := be.AddressTxs(ctx, ia)
	if err != nil {
		t.Fatal(err)
	}
	var real []byte
	for _, tx := range txs {
		if m, err := envelope.Decode(tx.MsgTx.TxOut[0].PkScript); err == nil && m.Type == envelope.TypeShare {
			real = tx.MsgTx.TxOut[0].PkScript
			break
		}
	}
	if real == nil {
		t.Fatal("no share message in Bob's inbox to replay")
	}
	pay(real)
	// A message whose sender key is swapped (sealed by someone else).
	m, _ := envelope.Decode(real)
	forged := append([][]byte{}, m.Fields...)
	forged[1] = append([]byte(nil), forged[1]...)
	forged[1][len(forged[1])-1] ^= 1
	fs, _ := envelope.Encode(envelope.TypeShare, forged...)
	pay(fs)
	if _, err := be.Mine(ctx, 1, w.Address()); err != nil {
		t.Fatal(err)
	}
}
