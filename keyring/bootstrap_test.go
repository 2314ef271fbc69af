package keyring

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/integrity-sys/integrity/internal/envelope"
)

// memChain is an in-memory Chain for unit tests of the bootstrap logic
// (the end-to-end tests run the real chain).
type memChain struct {
	mu     sync.Mutex
	msgs   map[[20]byte][]Published
	payers map[[20]byte][][20]byte
	n      int
	fail   error
}

func newMemChain() *memChain {
	return &memChain{msgs: map[[20]byte][]Published{}, payers: map[[20]byte][][20]byte{}}
}

func (c *memChain) Publish(_ context.Context, key *btcec.PrivateKey, t envelope.Type, fields [][]byte, pays []Payment) ([32]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return [32]byte{}, c.fail
	}
	c.n++
	txid := sha256.Sum256([]byte{byte(c.n), byte(c.n >> 8)})
	from := hash160(key.PubKey().SerializeCompressed())
	cp := make([][]byte, len(fields))
	for i, f := range fields {
		cp[i] = append([]byte(nil), f...)
	}
	c.msgs[from] = append(c.msgs[from], Published{Message: envelope.Message{Type: t, Fields: cp}, TxID: txid})
	for _, p := range pays {
		var to [20]byte
		copy(to[:], p.PkScript[3:23])
		c.payers[to] = append(c.payers[to], from)
	}
	return txid, nil
}

func (c *memChain) Messages(_ context.Context, addr [20]byte) ([]Published, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, c.fail
	}
	return append([]Published(nil), c.msgs[addr]...), nil
}

func (c *memChain) Payers(_ context.Context, addr [20]byte) ([][20]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, c.fail
	}
	return append([][20]byte(nil), c.payers[addr]...), nil
}

type testSystem struct {
	ch     *memChain
	id     *Identity
	pres   Key
	backup BackupKey
	pw     []byte
}

func bootstrapTest(t *testing.T) *testSystem {
	t.Helper()
	ch := newMemChain()
	pres, err := NewScalarKey()
	if err != nil {
		t.Fatal(err)
	}
	bk, err := NewBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	funded := false
	id, err := Bootstrap(context.Background(), ch, InitParams{
		Password: []byte("correct horse"), KDF: TestKDFParams(), Presentation: pres, Backup: bk,
		Fund: func(_ context.Context, addr [20]byte, amount int64) error {
			funded = amount > 0
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !funded {
		t.Fatal("presentation address not funded")
	}
	return &testSystem{ch: ch, id: id, pres: pres, backup: bk, pw: []byte("correct horse")}
}

func sameIdentity(t *testing.T, a, b *Identity) {
	t.Helper()
	if !a.Primary.Equal(&b.Primary) || a.ReadRoot != b.ReadRoot || a.WriteRoot != b.WriteRoot ||
		a.RootGenesis != b.RootGenesis || a.RootAddr != b.RootAddr || !pubEqual(a.PrimaryPub, b.PrimaryPub) ||
		!pubEqual(a.PrivilegedPub, b.PrivilegedPub) {
		t.Fatal("unlocked identity differs from the bootstrapped one")
	}
}

func TestUnlockAllThreeWays(t *testing.T) {
	s := bootstrapTest(t)
	ctx := context.Background()
	for name, f := range map[string]Factors{
		"password+presentation": {Password: s.pw, Presentation: &s.pres},
		"presentation+backup":   {Presentation: &s.pres, Backup: &s.backup},
		"password+backup":       {Password: s.pw, Backup: &s.backup},
	} {
		id, err := Unlock(ctx, s.ch, f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameIdentity(t, s.id, id)
		if _, _, err := id.Privileged(id.unlockedAt); err != nil {
			t.Fatalf("%s: privileged key not unlocked: %v", name, err)
		}
	}
	if _, err := Unlock(ctx, s.ch, Factors{Password: s.pw}); err == nil {
		t.Fatal("one factor accepted")
	}
}

func TestWrongFactorsAndMissingSystem(t *testing.T) {
	s := bootstrapTest(t)
	ctx := context.Background()
	if _, err := Unlock(ctx, s.ch, Factors{Password: []byte("wrong"), Presentation: &s.pres}); !errors.Is(err, ErrWrongFactors) {
		t.Fatalf("wrong password: %v", err)
	}
	other, _ := NewScalarKey()
	if _, err := Unlock(ctx, s.ch, Factors{Password: s.pw, Presentation: &other}); !errors.Is(err, ErrNoSystem) {
		t.Fatalf("unknown presentation key: %v", err)
	}
	otherBk, _ := NewBackupKey()
	if _, err := Unlock(ctx, s.ch, Factors{Password: s.pw, Backup: &otherBk}); !errors.Is(err, ErrNoSystem) {
		t.Fatalf("unknown backup key: %v", err)
	}
	// An unreachable chain is never "no System".
	s.ch.fail = errors.New("connection refused")
	_, err := Unlock(ctx, s.ch, Factors{Password: s.pw, Presentation: &s.pres})
	if err == nil || errors.Is(err, ErrNoSystem) {
		t.Fatalf("chain failure reported as %v", err)
	}
}

func TestTamperedWrapRefused(t *testing.T) {
	s := bootstrapTest(t)
	addr := s.id.PresentationAddr
	list := s.ch.msgs[addr]
	for i := range list {
		if list[i].Type == envelope.TypeBootWrapPwPres {
			list[i].Fields[0][20] ^= 1
		}
	}
	_, err := Unlock(context.Background(), s.ch, Factors{Password: s.pw, Presentation: &s.pres})
	if !errors.Is(err, ErrWrongFactors) {
		t.Fatalf("tampered wrap: %v", err)
	}
	// The other modes still work: nothing was overwritten.
	if _, err := Unlock(context.Background(), s.ch, Factors{Presentation: &s.pres, Backup: &s.backup}); err != nil {
		t.Fatal(err)
	}
}

// A wrap copied from another message type (same key, same address) does
// not open: the AAD binds the type.
func TestWrapReplayAcrossTypesRefused(t *testing.T) {
	s := bootstrapTest(t)
	addr := s.id.PresentationAddr
	var priv []byte
	for _, m := range s.ch.msgs[addr] {
		if m.Type == envelope.TypeBootPrivPwPrim {
			priv = m.Fields[0]
		}
	}
	list := s.ch.msgs[addr]
	for i := range list {
		if list[i].Type == envelope.TypeBootWrapPwPres {
			list[i].Fields[0] = priv
		}
	}
	if _, err := Unlock(context.Background(), s.ch, Factors{Password: s.pw, Presentation: &s.pres}); err == nil {
		t.Fatal("wrap replayed from another type opened")
	}
}

func TestChangePasswordAndBackup(t *testing.T) {
	s := bootstrapTest(t)
	ctx := context.Background()
	newPw := []byte("battery staple")
	if err := (Rewrap{Presentation: s.pres, Password: newPw, NewPassword: true, KDF: TestKDFParams(), Backup: s.backup}).Apply(ctx, s.ch, s.id); err != nil {
		t.Fatal(err)
	}
	if _, err := Unlock(ctx, s.ch, Factors{Password: s.pw, Presentation: &s.pres}); !errors.Is(err, ErrWrongFactors) {
		t.Fatalf("old password after passwd: %v", err)
	}
	if _, err := Unlock(ctx, s.ch, Factors{Password: s.pw, Backup: &s.backup}); err == nil {
		t.Fatal("old password + backup after passwd")
	}
	for _, f := range []Factors{{Password: newPw, Presentation: &s.pres}, {Password: newPw, Backup: &s.backup}} {
		id, err := Unlock(ctx, s.ch, f)
		if err != nil {
			t.Fatal(err)
		}
		sameIdentity(t, s.id, id)
	}
	// A stated wrong current password is refused before anything is
	// published.
	before := len(s.ch.msgs[s.id.PresentationAddr])
	if err := (Rewrap{Presentation: s.pres, Password: []byte("nope"), Backup: s.backup}).Apply(ctx, s.ch, s.id); !errors.Is(err, ErrWrongFactors) {
		t.Fatalf("rewrap with wrong password: %v", err)
	}
	if len(s.ch.msgs[s.id.PresentationAddr]) != before {
		t.Fatal("a refused rewrap published messages")
	}

	// New backup key: the old one becomes useless.
	nb, _ := NewBackupKey()
	if err := (Rewrap{Presentation: s.pres, Password: newPw, Backup: nb, NewBackup: true}).Apply(ctx, s.ch, s.id); err != nil {
		t.Fatal(err)
	}
	if _, err := Unlock(ctx, s.ch, Factors{Presentation: &s.pres, Backup: &s.backup}); !errors.Is(err, ErrBackupReplaced) {
		t.Fatalf("replaced backup key: %v", err)
	}
	for _, f := range []Factors{{Presentation: &s.pres, Backup: &nb}, {Password: newPw, Backup: &nb}, {Password: newPw, Presentation: &s.pres}} {
		if _, err := Unlock(ctx, s.ch, f); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReplacePresentation(t *testing.T) {
	s := bootstrapTest(t)
	ctx := context.Background()
	np, _ := NewScalarKey()
	if err := ReplacePresentation(ctx, s.ch, s.id, np, s.pw, s.backup, func(context.Context, [20]byte, int64) error { return nil }); err != nil {
		t.Fatal(err)
	}
	id, err := Unlock(ctx, s.ch, Factors{Password: s.pw, Presentation: &np})
	if err != nil {
		t.Fatal(err)
	}
	sameIdentity(t, s.id, id)
	// Password + backup finds the newest presentation address.
	id, err = Unlock(ctx, s.ch, Factors{Password: s.pw, Backup: &s.backup})
	if err != nil || id.PresentationAddr == (hash160PubOf(t, s.pres)) {
		t.Fatalf("password+backup after replacement: %v", err)
	}
}

func hash160PubOf(t *testing.T, k Key) [20]byte {
	p, err := k.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return hash160(p.PubKey().SerializeCompressed())
}

func TestDeviceRecordAndPrivilegedTTL(t *testing.T) {
	s := bootstrapTest(t)
	dk, _ := NewRandomKey()
	blob, err := s.id.SealForDevice(dk)
	if err != nil {
		t.Fatal(err)
	}
	id, err := OpenDevice(dk, blob)
	if err != nil {
		t.Fatal(err)
	}
	sameIdentity(t, s.id, id)
	if _, _, err := id.Privileged(id.unlockedAt); !errors.Is(err, ErrLocked) {
		t.Fatal("device record carried the privileged key")
	}
	if err := id.UnlockPrivileged([]byte("wrong")); !errors.Is(err, ErrWrongFactors) {
		t.Fatalf("unlock with wrong password: %v", err)
	}
	if err := id.UnlockPrivileged(s.pw); err != nil {
		t.Fatal(err)
	}
	if _, _, err := id.Privileged(id.unlockedAt.Add(PrivilegedTTL - 1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := id.Privileged(id.unlockedAt.Add(PrivilegedTTL + 1)); !errors.Is(err, ErrLocked) {
		t.Fatal("privileged key outlived its TTL")
	}
	wrong, _ := NewRandomKey()
	if _, err := OpenDevice(wrong, blob); err == nil {
		t.Fatal("device record opened with another device key")
	}
}
