package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/chain/btcdrpc"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
	"github.com/integrity-sys/integrity/internal/e2e"
	"github.com/integrity-sys/integrity/internal/envelope"
	"github.com/integrity-sys/integrity/keyring"
)

func whoami(t *testing.T, d *e2e.Device) system.WhoAmI {
	t.Helper()
	var w system.WhoAmI
	if err := json.Unmarshal([]byte(d.OK("whoami", "--json")), &w); err != nil {
		t.Fatal(err)
	}
	return w
}

func sameSystem(t *testing.T, what string, a, b system.WhoAmI) {
	t.Helper()
	if a.PrimaryPubKey == "" || a.PrimaryPubKey != b.PrimaryPubKey || a.PrivilegedPubKey != b.PrivilegedPubKey || a.RootAddress != b.RootAddress {
		t.Fatalf("%s: not the same System:\n%+v\n%+v", what, a, b)
	}
}

// TestAccountsEndToEnd: init on device A; sign-on on other devices with
// each pair of factors; password change; replacing each lost factor; the
// errors users hit. Real btcd, real secret server process, real CLI.
func TestAccountsEndToEnd(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	pw := e2e.WriteFile(t, "pw", "correct horse battery\n")
	backup := filepath.Join(t.TempDir(), "backup")
	dev := func() *e2e.Device { return e2e.NewDevice(t, node.URL) }
	srv := []string{"--user", "alice@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile}

	a := dev()
	a.OK(append([]string{"init", "--destination", "alice@example.com", "--password-file", pw, "--backup-key-out", backup}, srv...)...)
	wa := whoami(t, a)
	if wa.User != "alice@example.com" || wa.PresentationAddress == "" {
		t.Fatalf("whoami after init: %+v", wa)
	}
	// A second init for the same user at the same server is refused: no
	// duplicate accounts.
	dev().Fail("already has an account", append([]string{"init", "--destination", "x", "--password-file", pw, "--backup-key-out", filepath.Join(t.TempDir(), "b2")}, srv...)...)
	a.Fail("already holds a System", append([]string{"init", "--password-file", pw, "--backup-key-out", filepath.Join(t.TempDir(), "b3")}, srv...)...)

	// Sign-on with each pair of factors.
	b := dev()
	b.OK(append([]string{"login", "--password-file", pw}, srv...)...)
	sameSystem(t, "password + presentation", wa, whoami(t, b))
	c := dev()
	c.OK("login", "--user", "alice@example.com", "--no-secret-server", "--password-file", pw, "--backup-key-file", backup)
	sameSystem(t, "password + backup", wa, whoami(t, c))
	d := dev()
	d.OK(append([]string{"login", "--no-password", "--backup-key-file", backup}, srv...)...)
	sameSystem(t, "presentation + backup", wa, whoami(t, d))

	// Errors: clear, one line, nothing written.
	wrong := e2e.WriteFile(t, "wrong", "not it\n")
	x := dev()
	x.Fail("wrong password", append([]string{"login", "--password-file", wrong}, srv...)...)
	x.Fail("unknown user", "login", "--user", "mallory", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	x.Fail("code", "login", "--user", "alice@example.com", "--secret-server", ss.URL, "--code", "000000", "--password-file", pw)
	x.Fail("unreachable", "login", "--user", "alice@example.com", "--secret-server", "http://127.0.0.1:1", "--password-file", pw)
	if _, err := os.Stat(filepath.Join(x.DataDir, "keys.sealed")); !os.IsNotExist(err) {
		t.Fatalf("a failed login left keys behind: %v", err)
	}
	x.Fail("no System on this device", "whoami")

	// passwd: the old password stops working on a fresh device, the new
	// one works with either other factor.
	pw2 := e2e.WriteFile(t, "pw2", "new and better password\n")
	a.OK("passwd", "--password-file", pw, "--new-password-file", pw2, "--backup-key-file", backup, "--code-file", ss.CodeFile)
	dev().Fail("wrong password", append([]string{"login", "--password-file", pw}, srv...)...)
	dev().Fail("", "login", "--user", "alice@example.com", "--no-secret-server", "--password-file", pw, "--backup-key-file", backup)
	e := dev()
	e.OK(append([]string{"login", "--password-file", pw2}, srv...)...)
	sameSystem(t, "after passwd", wa, whoami(t, e))
	f := dev()
	f.OK("login", "--user", "alice@example.com", "--no-secret-server", "--password-file", pw2, "--backup-key-file", backup)
	sameSystem(t, "after passwd, password + backup", wa, whoami(t, f))

	// Lost backup key: password + presentation issue a new one; the old
	// one is useless afterwards.
	backup2 := filepath.Join(t.TempDir(), "backup2")
	g := dev()
	g.OK(append([]string{"recover", "--replace", "backup", "--password-file", pw2, "--backup-key-out", backup2}, srv...)...)
	sameSystem(t, "recover backup", wa, whoami(t, g))
	dev().Fail("replaced", append([]string{"login", "--no-password", "--backup-key-file", backup}, srv...)...)
	h := dev()
	h.OK(append([]string{"login", "--no-password", "--backup-key-file", backup2}, srv...)...)
	sameSystem(t, "new backup key", wa, whoami(t, h))

	// Lost password: presentation + backup set a new one.
	pw3 := e2e.WriteFile(t, "pw3", "third password\n")
	i := dev()
	i.OK(append([]string{"recover", "--replace", "password", "--backup-key-file", backup2, "--new-password-file", pw3}, srv...)...)
	sameSystem(t, "recover password", wa, whoami(t, i))
	dev().Fail("wrong password", append([]string{"login", "--password-file", pw2}, srv...)...)
	j := dev()
	j.OK("login", "--user", "alice@example.com", "--no-secret-server", "--password-file", pw3, "--backup-key-file", backup2)
	sameSystem(t, "after recover password", wa, whoami(t, j))

	// Lost presentation key (say the secret-server account is gone):
	// password + backup move the System to a new presentation key enrolled
	// under a new account; sign-on through it opens the same System.
	k := dev()
	srv2 := []string{"--user", "alice-new@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile}
	k.OK(append([]string{"recover", "--replace", "presentation", "--destination", "alice-new@example.com", "--password-file", pw3, "--backup-key-file", backup2}, srv2...)...)
	wk := whoami(t, k)
	sameSystem(t, "recover presentation", wa, wk)
	if wk.PresentationAddress == wa.PresentationAddress {
		t.Fatal("presentation address did not change")
	}
	l := dev()
	l.OK(append([]string{"login", "--password-file", pw3}, srv2...)...)
	sameSystem(t, "login via new presentation key", wa, whoami(t, l))

	// Logout forgets the keys.
	l.OK("logout")
	l.Fail("no System on this device", "whoami")

	// A secret server that is down: a clear error.
	ss.Stop()
	dev().Fail("unreachable", append([]string{"login", "--password-file", pw3}, srv...)...)
	if !strings.HasPrefix(wa.PresentationAddress, "S") {
		t.Fatalf("simnet address expected: %s", wa.PresentationAddress)
	}
}

// TestTwoSecretServersAndForgedBootstrap: the presentation key split over
// two secret servers (paper footnote 1) — sign-on needs both slices — and a
// third party paying the presentation address with forged bootstrap
// messages (a weaker salt, a bogus wrapping) changes nothing.
func TestTwoSecretServersAndForgedBootstrap(t *testing.T) {
	node := e2e.StartBtcd(t)
	s1 := e2e.StartSecretServer(t)
	s2 := e2e.StartSecretServerCodes(t, s1.CodeFile)
	pw := e2e.WriteFile(t, "pw", "two servers\n")
	backup := filepath.Join(t.TempDir(), "backup")
	a := e2e.NewDevice(t, node.URL)
	// Both servers send their codes to one file, in server order.
	a.OK("init", "--user", "carol@example.com", "--destination", "carol@example.com",
		"--secret-server", s1.URL, "--secret-server", s2.URL, "--code-file", s1.CodeFile,
		"--password-file", pw, "--backup-key-out", backup)
	wa := whoami(t, a)
	if len(wa.SecretServers) != 2 {
		t.Fatalf("servers remembered: %v", wa.SecretServers)
	}

	forgeBootstrap(t, node.URL, wa.PresentationAddress)

	b := e2e.NewDevice(t, node.URL)
	b.OK("login", "--user", "carol@example.com", "--secret-server", s1.URL, "--secret-server", s2.URL,
		"--code-file", s1.CodeFile, "--password-file", pw)
	sameSystem(t, "two slices", wa, whoami(t, b))
	// One slice alone is not the presentation key.
	e2e.NewDevice(t, node.URL).Fail("no System", "login", "--user", "carol@example.com", "--secret-server", s1.URL,
		"--code-file", s1.CodeFile, "--password-file", pw)
}

// forgeBootstrap pays the presentation address from a stranger's wallet
// with OP_RETURNs that look like a newer salt and wrapping. They do not
// spend from the address, so they are not its messages.
func forgeBootstrap(t *testing.T, chainURL, presAddr string) {
	t.Helper()
	ctx := context.Background()
	seed := make([]byte, 32)
	seed[0] = 7
	be, w := strangerWallet(t, chainURL, seed)
	to, err := address.DecodeAddress(presAddr, be.Params())
	if err != nil {
		t.Fatal(err)
	}
	weak := keyring.TestKDFParams()
	blob, err := weak.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		typ    envelope.Type
		fields [][]byte
	}{
		{envelope.TypeBootSalt, [][]byte{blob}},
		{envelope.TypeBootWrapPwPres, [][]byte{make([]byte, 60), make([]byte, 8)}},
	} {
		script, err := envelope.Encode(m.typ, m.fields...)
		if err != nil {
			t.Fatal(err)
		}
		pay, err := wallet.PayTo(to, 1000)
		if err != nil {
			t.Fatal(err)
		}
		utxos, err := be.UTXOs(ctx, w.Address())
		if err != nil {
			t.Fatal(err)
		}
		key, err := wallet.DeriveKey(seed, be.Params())
		if err != nil {
			t.Fatal(err)
		}
		var in []chain.UTXO
		for _, u := range utxos {
			if u.Spendable(0x7fffffff, be.Params().CoinbaseMaturity) {
				in = append(in, u)
				break
			}
		}
		tx, err := key.Spend(in, []*wire.TxOut{wire.NewTxOut(0, script), wire.NewTxOut(1000, pay.PkScript)}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Broadcast(ctx, tx); err != nil {
			t.Fatal(err)
		}
		if _, err := be.Mine(ctx, 1, w.Address()); err != nil {
			t.Fatal(err)
		}
	}
}

// strangerWallet is an attacker's own wallet on the test chain, funded by
// mining to it; the backend closes when the test ends.
func strangerWallet(t *testing.T, chainURL string, seed []byte) (*btcdrpc.Client, *wallet.Wallet) {
	t.Helper()
	ctx := context.Background()
	be, err := btcdrpc.Dial(ctx, chainURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	w, err := wallet.New(seed, be, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Mine(ctx, int(be.Params().CoinbaseMaturity)+1, w.Address()); err != nil {
		t.Fatal(err)
	}
	return be, w
}
