package hostdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/addrlog"
	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/chain/embedded"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/internal/envelope"
	"github.com/integrity-sys/integrity/keyring"
	"github.com/integrity-sys/integrity/vm"
	"github.com/integrity-sys/integrity/vm/internal/wasmbuild"
)

var builder = wasmbuild.New()

func TestMain(m *testing.M) {
	code := m.Run()
	builder.Cleanup()
	os.Exit(code)
}

func module(t testing.TB, pkg string) []byte {
	t.Helper()
	b, err := os.ReadFile(builder.Build(t, pkg))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// system is a user's System as the agent holds it: a real keyring
// identity bootstrapped on the embedded chain and the real tree it opens.
type system struct {
	backend  *embedded.Chain
	wallet   *wallet.Wallet
	id       *keyring.Identity
	password []byte
	blobs    blob.Store
	cacheKey keyring.Key
}

// kchain is keyring.Chain over the address log (as the agent wires it).
type kchain struct{ s *system }

func (k kchain) log() *addrlog.Log { return &addrlog.Log{Backend: k.s.backend, Wallet: k.s.wallet} }

func (k kchain) Publish(ctx context.Context, priv *btcec.PrivateKey, t envelope.Type, fields [][]byte, pays []keyring.Payment) ([32]byte, error) {
	key, err := wallet.NewKey(priv, k.s.backend.Params())
	if err != nil {
		return [32]byte{}, err
	}
	outs := make([]*wire.TxOut, len(pays))
	for i, p := range pays {
		outs[i] = wire.NewTxOut(p.Value, p.PkScript)
	}
	return k.log().Publish(ctx, key, t, fields, outs)
}

func (k kchain) Messages(ctx context.Context, addr [20]byte) ([]keyring.Published, error) {
	a, err := address.NewAddressPubKeyHash(addr[:], k.s.backend.Params())
	if err != nil {
		return nil, err
	}
	msgs, err := k.log().Messages(ctx, a)
	if err != nil {
		return nil, err
	}
	out := make([]keyring.Published, len(msgs))
	for i, m := range msgs {
		out[i] = keyring.Published{Message: m.Message, TxID: m.TxID, Confirmed: m.Height >= 0}
	}
	return out, nil
}

func (k kchain) Payers(ctx context.Context, addr [20]byte) ([][20]byte, error) {
	a, err := address.NewAddressPubKeyHash(addr[:], k.s.backend.Params())
	if err != nil {
		return nil, err
	}
	return k.log().Payers(ctx, a)
}

func newSystem(t testing.TB) *system {
	t.Helper()
	ctx := context.Background()
	c, err := embedded.Open(embedded.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	w, err := wallet.New(seed, c, wallet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Mine(ctx, 101, w.Address()); err != nil {
		t.Fatal(err)
	}
	s := &system{backend: c, wallet: w, password: []byte("correct horse")}
	pres, err := keyring.NewPresentationKey()
	if err != nil {
		t.Fatal(err)
	}
	bk, err := keyring.NewSafeBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	s.id, err = keyring.Bootstrap(ctx, kchain{s}, keyring.InitParams{
		Password: s.password, KDF: keyring.TestKDFParams(), Presentation: pres, Backup: bk,
		Fund: func(ctx context.Context, addr [20]byte, amount int64) error {
			to, err := address.NewAddressPubKeyHash(addr[:], c.Params())
			if err != nil {
				return err
			}
			out, err := wallet.PayTo(to, amount)
			if err != nil {
				return err
			}
			_, _, err = w.Pay(ctx, []wallet.Output{out})
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.blobs, err = blob.NewDir(filepath.Join(t.TempDir(), "blobs")); err != nil {
		t.Fatal(err)
	}
	s.cacheKey, _ = keyring.NewRandomKey()
	return s
}

// open opens the System's tree, as one device.
func (s *system) open(t testing.TB) *chainfs.Tree {
	t.Helper()
	rk, err := node.RootKeys(s.id.ReadRoot, s.id.WriteRoot)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := chainfs.Open(context.Background(), chainfs.Config{
		Backend: s.backend, Wallet: s.wallet, RootKeys: rk,
		RootGenesis: node.OutPoint{TxID: s.id.RootGenesis.TxID, Index: s.id.RootGenesis.Index},
		CacheDir:    t.TempDir(), CacheKey: s.cacheKey, Blobs: s.blobs, Device: "test", CommitDelay: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(context.Background()) })
	return tr
}

func (s *system) identity() *Identity {
	return &Identity{Get: func() (*keyring.Identity, error) { return s.id, nil }, User: "ada@example.com", Params: s.backend.Params()}
}

// unlocker unlocks with the password, as a user at the terminal would.
type unlocker struct {
	id    *keyring.Identity
	pw    []byte
	asked int
	// approve answers Approve's questions; approvals counts them.
	approve   bool
	approvals []string
}

func (u *unlocker) Approve(ctx context.Context, kind, reason string) error {
	u.approvals = append(u.approvals, kind+": "+reason)
	if !u.approve {
		return vm.ErrNotApproved
	}
	return u.Unlock(ctx, reason)
}

func (u *unlocker) Unlock(context.Context, string) error {
	if _, _, err := u.id.Privileged(time.Now()); err == nil {
		return nil
	}
	u.asked++
	if u.pw == nil {
		return vm.ErrPrivLocked
	}
	return u.id.UnlockPrivileged(u.pw)
}

func newRuntime(t testing.TB) *vm.Runtime {
	t.Helper()
	r, err := vm.New(vm.Options{CacheDir: filepath.Join(os.TempDir(), "integrity-vm-test-cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func writeFile(t testing.TB, tr *chainfs.Tree, dir, name, content string) {
	t.Helper()
	d, err := tr.Resolve(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tr.Create(d, name, node.KindFile, 0o644, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Write(a.Ino, 0, []byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(a.Ino); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, tr *chainfs.Tree, p string) string {
	t.Helper()
	ino, err := tr.Resolve(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	buf := make([]byte, 1<<16)
	n, err := tr.Read(ino, 0, buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// TestShellOnChainTree boots the real sample OS on a real tree on the
// embedded chain: the guest reads a file written through the tree, and a
// file it writes is committed and read back by a second device.
func TestShellOnChainTree(t *testing.T) {
	ctx := context.Background()
	s := newSystem(t)
	tr := s.open(t)
	root, _ := tr.Resolve("/")
	if _, err := tr.Create(root, "inbox", node.KindDir, 0o755, ""); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tr, "/inbox", "from-tree.txt", "written through the tree\n")

	script := "cat /inbox/from-tree.txt\nmkdir /notes\nwrite /notes/hello.txt hello from the VM\nls /notes\nwhoami\nbalance\nexit\n"
	var out, errb bytes.Buffer
	err := newRuntime(t).Boot(ctx, vm.Machine{Module: module(t, "./vm/os"), Args: []string{"os"},
		Stdin: strings.NewReader(script), Stdout: &out, Stderr: &errb,
		Disk: Tree{T: tr}, Chain: Chain{Backend: s.backend}, Identity: s.identity(), Network: &Network{},
		Timeout: time.Minute})
	if err != nil {
		t.Fatalf("boot: %v: %s", err, errb.String())
	}
	got := out.String()
	for _, want := range []string{"written through the tree\n", "hello.txt", "user:           ada@example.com",
		hex.EncodeToString(s.id.PrimaryPub), "sat confirmed"} {
		if !strings.Contains(got, want) {
			t.Errorf("stdout lacks %q:\n%s", want, got)
		}
	}
	if errb.Len() > 0 {
		t.Errorf("stderr: %s", errb.String())
	}
	if c := readFile(t, tr, "/notes/hello.txt"); c != "hello from the VM\n" {
		t.Fatalf("tree has %q", c)
	}
	// The guest's close made it a commit: fsync waits for it, and a new
	// device reading the chain sees the file.
	ino, _ := tr.Resolve("/notes/hello.txt")
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := tr.Sync(sctx, ino); err != nil {
		t.Fatal(err)
	}
	if h, err := tr.History(ino); err != nil || len(h) == 0 {
		t.Fatalf("history %v, %v", h, err)
	}
	other := s.open(t)
	if c := readFile(t, other, "/notes/hello.txt"); c != "hello from the VM\n" {
		t.Fatalf("second device reads %q", c)
	}
}

// secrets lists every secret the identity holds, as raw bytes.
func secrets(t testing.TB, id *keyring.Identity) map[string][]byte {
	t.Helper()
	priv, pair, err := id.Privileged(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rootKey := func(r [64]byte) []byte { return append([]byte(nil), r[:]...) }
	return map[string][]byte{
		"primary key":           append([]byte(nil), id.Primary[:]...),
		"primary key pair":      id.PrimaryPair.Serialize(),
		"privileged key":        append([]byte(nil), priv[:]...),
		"privileged key pair":   pair.Serialize(),
		"read root key":         rootKey(id.ReadRoot)[:32],
		"read root chain code":  rootKey(id.ReadRoot)[32:],
		"write root key":        rootKey(id.WriteRoot)[:32],
		"write root chain code": rootKey(id.WriteRoot)[32:],
		"VM encryption key":     func() []byte { k, _ := vmKey(id.Primary); return k[:] }(),
	}
}

// leaks reports which secrets appear in out, raw or in hex.
func leaks(out []byte, secrets map[string][]byte) []string {
	var found []string
	lower := bytes.ToLower(out)
	for name, s := range secrets {
		for i := 0; i+16 <= len(s); i++ { // every 16-byte window
			w := s[i : i+16]
			if bytes.Contains(out, w) || bytes.Contains(lower, []byte(hex.EncodeToString(w))) {
				found = append(found, name)
				break
			}
		}
	}
	return found
}

// TestGuestGetsNoKeyMaterial: a hostile guest calls every host function —
// with the privileged key unlocked, so every operation succeeds — and
// tries to decrypt a ciphertext the System sealed under the primary key
// (the primary key pair, as published on chain). Nothing it receives holds
// key material.
func TestGuestGetsNoKeyMaterial(t *testing.T) {
	ctx := context.Background()
	s := newSystem(t)
	tr := s.open(t)
	// The on-chain boot-primary-pair message: the primary key pair sealed
	// under the primary key.
	msgs, err := kchain{s}.Messages(ctx, s.id.PresentationAddr)
	if err != nil {
		t.Fatal(err)
	}
	var sealed []byte
	var txid string
	for _, m := range msgs {
		if m.Type == envelope.TypeBootPrimaryPair {
			sealed = m.Fields[0]
			h := m.TxID
			for i, j := 0, len(h)-1; i < j; i, j = i+1, j-1 {
				h[i], h[j] = h[j], h[i]
			}
			txid = hex.EncodeToString(h[:])
		}
	}
	if sealed == nil {
		t.Fatal("no boot-primary-pair message on chain")
	}
	root, _ := tr.Resolve("/")
	a, err := tr.Create(root, "sealed.bin", node.KindFile, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Write(a.Ino, 0, sealed); err != nil {
		t.Fatal(err)
	}
	if err := s.id.UnlockPrivileged(s.password); err != nil {
		t.Fatal(err)
	}
	un := &unlocker{id: s.id, pw: s.password, approve: true}
	var out, errb bytes.Buffer
	err = newRuntime(t).Boot(ctx, vm.Machine{Module: module(t, "./vm/testdata/hostile"),
		Args: []string{"hostile", "keys", "/sealed.bin", txid}, Stdout: &out, Stderr: &errb,
		Disk: Tree{T: tr}, Chain: Chain{Backend: s.backend}, Identity: s.identity(), Unlocker: un,
		Network: &Network{}, Sharing: vm.Unsupported{}, Timeout: time.Minute})
	if err != nil {
		t.Fatalf("boot: %v: %s", err, errb.String())
	}
	got := out.Bytes()
	for _, want := range []string{"decrypt-system  err=decrypt", "get_tx ", "sign 1 1 ", "ecdh 0 ", "publish  err=not_supported"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Privileged operations succeeded (so the test covers their results).
	for _, line := range strings.Split(out.String(), "\n") {
		if (strings.HasPrefix(line, "sign 1 ") || strings.HasPrefix(line, "ecdh 0 ")) && !strings.HasSuffix(line, "err=<nil>") {
			t.Errorf("privileged operation failed: %s", line)
		}
	}
	all := secrets(t, s.id)
	// The node keys of what the guest touched: "/" and the file.
	for _, p := range []string{"/", "/sealed.bin"} {
		ino, err := tr.Resolve(p)
		if err != nil {
			t.Fatal(err)
		}
		k, err := tr.Keys(ino)
		if err != nil {
			t.Fatal(err)
		}
		all[p+" read key"], all[p+" read chain code"] = k.Read[:32], k.Read[32:]
		all[p+" write key"], all[p+" write chain code"] = k.Write[:32], k.Write[32:]
	}
	// The detector finds a key hidden in output, raw or in hex, at any
	// offset (else passing below would prove nothing).
	k := all["/sealed.bin write key"]
	for _, planted := range [][]byte{append([]byte("xyz"), k[5:21]...), []byte("abc" + hex.EncodeToString(k[3:19]))} {
		if len(leaks(planted, all)) == 0 {
			t.Fatalf("the leak detector misses %q", planted)
		}
	}
	if found := leaks(got, all); len(found) > 0 {
		t.Fatalf("the guest obtained: %v", found)
	}
	if found := leaks(errb.Bytes(), all); len(found) > 0 {
		t.Fatalf("the guest's stderr holds: %v", found)
	}
	t.Logf("hostile guest made %d calls; %d bytes of results, no key material", bytes.Count(got, []byte("\n")), len(got))
}

// TestPrivilegedNeedsUnlock: while the privileged key is locked and nobody
// can be asked, privileged operations fail with "locked"; the Unlocker is
// asked, and once the user unlocks, they work without asking again.
func TestPrivilegedNeedsUnlock(t *testing.T) {
	ctx := context.Background()
	s := newSystem(t)
	tr := s.open(t)
	s.id.Lock()
	run := func(u vm.Unlocker) string {
		var out, errb bytes.Buffer
		err := newRuntime(t).Boot(ctx, vm.Machine{Module: module(t, "./vm/os"),
			Stdin:  strings.NewReader("sign --privileged hello\nsign hello\nexit\n"),
			Stdout: &out, Stderr: &errb, Disk: Tree{T: tr}, Identity: s.identity(), Unlocker: u, Timeout: time.Minute})
		if err != nil {
			t.Fatalf("boot: %v", err)
		}
		return out.String() + errb.String()
	}
	locked := &unlocker{id: s.id}
	if got := run(locked); !strings.Contains(got, "sign: locked") || locked.asked != 1 {
		t.Fatalf("locked: asked %d times, got %q", locked.asked, got)
	}
	un := &unlocker{id: s.id, pw: s.password}
	got := run(un)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if un.asked != 1 || len(lines) != 2 {
		t.Fatalf("unlock: asked %d times, got %q", un.asked, got)
	}
	pub := map[int][]byte{0: s.id.PrivilegedPub, 1: s.id.PrimaryPub}
	for i, l := range lines {
		sig, err := hex.DecodeString(l)
		if err != nil || !vm.Verify(pub[i], []byte("hello"), sig) {
			t.Fatalf("signature %d %q does not verify", i, l)
		}
	}
	// Within the TTL nobody is asked again.
	again := &unlocker{id: s.id}
	if got := run(again); again.asked != 0 || strings.Contains(got, "locked") {
		t.Fatalf("asked again within the TTL: %d, %q", again.asked, got)
	}
}

// sharingLog is a Sharing that records what reached it.
type sharingLog struct{ calls []string }

func (l *sharingLog) Publish(_ context.Context, p string, w bool) error {
	l.calls = append(l.calls, fmt.Sprintf("publish %s %v", p, w))
	return nil
}
func (l *sharingLog) Share(_ context.Context, p, to string, w bool) error {
	l.calls = append(l.calls, fmt.Sprintf("share %s %s %v", p, to, w))
	return nil
}
func (l *sharingLog) CreateImage(_ context.Context, p string, pub bool) (string, error) {
	l.calls = append(l.calls, fmt.Sprintf("image %s %v", p, pub))
	return "ref", nil
}
func (l *sharingLog) MountImage(context.Context, string, string) error { return nil }
func (l *sharingLog) UnmountImage(context.Context, string) error       { return nil }

// TestSharingNeedsApproval: with the privileged key unlocked (the user
// typed the password a minute ago, say for a signature), a guest still
// cannot share, publish or make an image of the tree unless the user
// approves that very operation; each is asked about, with its path.
func TestSharingNeedsApproval(t *testing.T) {
	ctx := context.Background()
	s := newSystem(t)
	tr := s.open(t)
	root, _ := tr.Resolve("/")
	if _, err := tr.Create(root, "docs", node.KindDir, 0o755, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Create(root, "via-link", node.KindSymlink, 0o777, "/docs"); err != nil {
		t.Fatal(err)
	}
	if err := s.id.UnlockPrivileged(s.password); err != nil {
		t.Fatal(err)
	}
	script := "share /docs 02" + strings.Repeat("ab", 32) + "\npublish /docs\nimage create /docs\npublish /via-link\nexit 0\n"
	run := func(u *unlocker) (*sharingLog, string) {
		l := &sharingLog{}
		var out, errb bytes.Buffer
		err := newRuntime(t).Boot(ctx, vm.Machine{Module: module(t, "./vm/os"), Stdin: strings.NewReader(script),
			Stdout: &out, Stderr: &errb, Disk: Tree{T: tr}, Identity: s.identity(), Unlocker: u, Sharing: l, Timeout: time.Minute})
		if err != nil {
			t.Fatalf("boot: %v", err)
		}
		return l, out.String() + errb.String()
	}
	no := &unlocker{id: s.id}
	l, got := run(no)
	if len(l.calls) != 0 || strings.Count(got, "denied") != 3 {
		t.Fatalf("unapproved: reached the Client %v; console %q", l.calls, got)
	}
	if len(no.approvals) != 3 || !strings.Contains(no.approvals[0], `share "/docs" with`) || !strings.Contains(no.approvals[2], "paid from your wallet") {
		t.Fatalf("questions asked: %q", no.approvals)
	}
	// A path through a symlink is refused outright: the Client would act
	// on another node than the one the guest named.
	if !strings.Contains(got, "invalid") {
		t.Fatalf("publish through a symlink: %q", got)
	}
	yes := &unlocker{id: s.id, approve: true}
	l, got = run(yes)
	if len(l.calls) != 3 || len(yes.approvals) != 3 {
		t.Fatalf("approved: calls %v, approvals %q, console %q", l.calls, yes.approvals, got)
	}
}

// TestBroadcastAndQuery: a guest's blockchain calls reach the real chain.
func TestChainDevice(t *testing.T) {
	ctx := context.Background()
	s := newSystem(t)
	c := Chain{Backend: s.backend}
	addr := s.wallet.Address().EncodeAddress()
	txs, err := c.AddressTxs(ctx, addr)
	if err != nil || len(txs) == 0 {
		t.Fatalf("address txs: %v, %v", txs, err)
	}
	b, err := c.Balance(ctx, addr)
	if err != nil || b.Confirmed+b.Unconfirmed == 0 {
		t.Fatalf("balance: %+v, %v", b, err)
	}
	as, err := c.TxAddresses(ctx, txs[len(txs)-1].TxID)
	if err != nil || len(as) == 0 {
		t.Fatalf("tx addresses: %v, %v", as, err)
	}
	raw, err := c.GetTx(ctx, txs[len(txs)-1].TxID)
	if err != nil {
		t.Fatal(err)
	}
	// Re-broadcasting a known transaction does no harm.
	if id, err := c.Broadcast(ctx, raw); err == nil && id != txs[len(txs)-1].TxID {
		t.Fatalf("re-broadcast answered txid %x", id)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, append(raw, 0)} {
		if _, err := c.Broadcast(ctx, bad); !errors.Is(err, vm.ErrBadInput) {
			t.Fatalf("broadcast %x: %v", bad, err)
		}
	}
	for _, bad := range []string{"nonsense", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"} { // mainnet address on regtest
		if _, err := c.Balance(ctx, bad); !errors.Is(err, vm.ErrBadInput) {
			t.Fatalf("balance %s: %v", bad, err)
		}
	}
	if _, err := c.GetTx(ctx, [32]byte{1}); !errors.Is(err, vm.ErrNoSuch) {
		t.Fatalf("get unknown tx: %v", err)
	}
}

// TestNetworkDevice: a guest resolves names (DNS, then nothing: the Domain
// System does not exist yet) and talks TCP through the host.
func TestNetworkDevice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(bytes.ToUpper(buf[:n]))
		c.Close()
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	run := func(args ...string) string {
		var out, errb bytes.Buffer
		err := newRuntime(t).Boot(context.Background(), vm.Machine{Module: module(t, "./vm/testdata/bench"),
			Args: append([]string{"bench"}, args...), Stdout: &out, Stderr: &errb, Network: &Network{AllowLoopback: true}, Timeout: time.Minute})
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, errb.String())
		}
		return out.String()
	}
	got := run("echo", "localhost", port, "hello over tcp")
	for _, want := range []string{"resolved [127.0.0.1", `read "HELLO OVER TCP" until EOF`, "close <nil>", "close-again bad_handle"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	// "unavailable" where this machine has no DNS server at all.
	if got := run("resolve", "no-such-name.invalid"); !strings.Contains(got, "[] not_found") && !strings.Contains(got, "[] unavailable") {
		t.Errorf("unknown name: %q", got)
	}
	// A Domain System, once there, answers what DNS does not know.
	n := &Network{Domains: domains{"alice.integrity": netip.MustParseAddr("10.1.2.3")}}
	if a, err := n.Resolve(context.Background(), "alice.integrity"); err != nil || a[0].String() != "10.1.2.3" {
		t.Fatalf("domain system: %v, %v", a, err)
	}
	if _, err := n.Resolve(context.Background(), "bob.invalid"); !errors.Is(err, vm.ErrNoSuch) {
		t.Fatalf("unknown everywhere: %v", err)
	}
}

// TestNetworkPolicy: a guest's TCP cannot reach the agent's loopback
// neighbours (unless allowed), cloud metadata or other link-local
// addresses, nor open connections faster than the rate limit.
func TestNetworkPolicy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ctx := context.Background()
	strict := &Network{}
	for _, host := range []string{"127.0.0.1", "localhost", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "255.255.255.255", "::ffff:127.0.0.1"} {
		c, err := strict.DialTCP(ctx, host, port)
		if err == nil {
			c.Close()
			t.Fatalf("connected to %s", host)
		}
		if !errors.Is(err, vm.ErrForbidden) {
			t.Fatalf("%s: %v, want a refusal by policy", host, err)
		}
	}
	// Allowed loopback works, up to the rate limit.
	open := &Network{AllowLoopback: true, DialRate: 1, DialBurst: 3}
	for i := range 3 {
		c, err := open.DialTCP(ctx, "127.0.0.1", port)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Close()
	}
	if _, err := open.DialTCP(ctx, "127.0.0.1", port); !errors.Is(err, vm.ErrForbidden) {
		t.Fatalf("past the rate limit: %v", err)
	}
}

type domains map[string]netip.Addr

func (d domains) Lookup(_ context.Context, name string) ([]netip.Addr, error) {
	if a, ok := d[name]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, vm.ErrNoSuch
}
