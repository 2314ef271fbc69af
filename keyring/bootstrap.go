package keyring

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/btcsuite/btcd/btcec/v2"
	"golang.org/x/crypto/hkdf"

	"github.com/integrity-sys/integrity/internal/envelope"
)

// Chain is what keyring needs of a blockchain: publish a message from the
// address of a key, and list what an address has published. keyring does
// not import chainfs; the agent wires chainfs's backend in.
type Chain interface {
	// Publish broadcasts one message from key's P2PKH address — a
	// transaction spending from that address, so only the key holder can
	// publish — with pays as additional outputs after the OP_RETURN and
	// the address's change (output 0: OP_RETURN, 1: change, 2..: pays).
	Publish(ctx context.Context, key *btcec.PrivateKey, t envelope.Type, fields [][]byte, pays []Payment) (txid [32]byte, err error)
	// Messages returns the integrity messages published from the address
	// with HASH160 addr (transactions that spend from it), in chain order.
	// A failure to reach the chain is an error, never an empty list.
	Messages(ctx context.Context, addr [20]byte) ([]Published, error)
	// Payers returns the addresses (HASH160) whose keys signed a payment
	// to addr, in chain order: how a backup key finds its System.
	Payers(ctx context.Context, addr [20]byte) ([][20]byte, error)
}

// Payment is an extra output of a published transaction.
type Payment struct {
	PkScript []byte
	Value    int64
}

// Published is one message as read from the chain.
type Published struct {
	envelope.Message
	TxID      [32]byte
	Confirmed bool
}

// OutPoint names a transaction output.
type OutPoint struct {
	TxID  [32]byte
	Index uint32
}

// Amounts paid by bootstrap transactions.
const (
	// GenesisValue funds the root node's first head (docs/PROTOCOL.md,
	// "Commits"); later commits add wallet inputs as they need them.
	GenesisValue = 10_000
	// LocatorValue is the dust payment that lets a backup key find its
	// presentation address.
	LocatorValue = 546
	// PresentationFunding is what the presentation address needs to
	// publish the bootstrap set (ten small transactions and two payments).
	PresentationFunding = 100_000
)

// Errors of sign-on and recovery.
var (
	ErrNoSystem        = errors.New("no System is published at this presentation address")
	ErrWrongFactors    = errors.New("wrong password, presentation key or backup key")
	ErrBackupReplaced  = errors.New("this backup key has been replaced by a newer one")
	ErrBootstrapBroken = errors.New("the System's bootstrap messages are incomplete or corrupt")
)

// epoch tags bind a wrapping to the factor generation it was made for, so
// sign-on can choose a consistent set after a password or backup change.
func pwEpoch(kdfBlob []byte) []byte {
	h := sha256.Sum256(append([]byte("integrity password epoch v1"), kdfBlob...))
	return h[:8]
}

func bkEpoch(bk Key) []byte {
	m := hmac.New(sha256.New, bk[:])
	m.Write([]byte("integrity backup epoch v1"))
	return m.Sum(nil)[:8]
}

// locatorKey derives the key whose address the bootstrap set pays, so that
// password + backup key can find the System without the presentation key.
func locatorKey(bk Key) (*btcec.PrivateKey, error) {
	r := hkdf.New(sha256.New, bk[:], nil, []byte("integrity backup locator v1"))
	for i := 0; i < 16; i++ {
		var k Key
		if _, err := io.ReadFull(r, k[:]); err != nil {
			return nil, fmt.Errorf("keyring: locator key: %w", err)
		}
		if k.IsScalar() {
			p, err := k.PrivateKey()
			k.Wipe()
			return p, err
		}
	}
	return nil, errors.New("keyring: locator key: no valid scalar")
}

// p2pkh returns the P2PKH output script paying HASH160 h.
func p2pkh(h []byte) []byte {
	s := make([]byte, 0, 25)
	s = append(s, 0x76, 0xa9, 0x14)
	s = append(s, h...)
	return append(s, 0x88, 0xac)
}

func hash160(pub []byte) [20]byte {
	var h [20]byte
	copy(h[:], btcutilHash160(pub))
	return h
}

// aad binds a sealed field to its type, publishing address and epochs.
func aad(t envelope.Type, addr [20]byte, epochs ...[]byte) []byte {
	a := envelope.AAD(t, addr[:])
	for _, e := range epochs {
		a = append(a, e...)
	}
	return a
}

// rootsPlain is the plaintext of the FS roots message: the read tree's and
// the write tree's root extended private keys, each as key ‖ chain code.
const rootsPlainLen = 128

// InitParams are the user's choices for a new System.
type InitParams struct {
	Password []byte
	KDF      KDFParams // zero: NewKDFParams()
	// Presentation is the presentation key (already enrolled at the
	// secret servers by the caller, who handles verification).
	Presentation Key
	Backup       BackupKey
	// Fund pays the presentation address (paper step 6): from a secret
	// server's faucet, the user's own wallet, or a local miner.
	Fund func(ctx context.Context, presentationAddr [20]byte, amount int64) error
}

// Bootstrap performs the paper's Initial Bootstrap Process, steps 1 and
// 4–17 (the caller generated the presentation and backup keys, steps 2–3,
// and enrolled the presentation key, step 5). It returns the unlocked
// identity; the password key and backup key are wiped.
func Bootstrap(ctx context.Context, ch Chain, p InitParams) (*Identity, error) {
	kdf := p.KDF
	if kdf.Algorithm == 0 {
		var err error
		if kdf, err = NewKDFParams(); err != nil {
			return nil, err
		}
	}
	kdfBlob, err := kdf.MarshalBinary()
	if err != nil {
		return nil, err
	}
	pw, err := DeriveKey(p.Password, kdf) // step 1
	if err != nil {
		return nil, err
	}
	defer pw.Wipe()
	bk := p.Backup.Key()
	defer bk.Wipe()

	id, err := newIdentity() // step 4 and 16
	if err != nil {
		return nil, err
	}
	presPriv, err := p.Presentation.PrivateKey()
	if err != nil {
		return nil, fmt.Errorf("keyring: presentation key: %w", err)
	}
	id.PresentationAddr = hash160(presPriv.PubKey().SerializeCompressed())
	if err := p.Fund(ctx, id.PresentationAddr, PresentationFunding); err != nil { // step 6
		return nil, fmt.Errorf("keyring: fund presentation address: %w", err)
	}
	set := bootSet{id: id, pres: p.Presentation, presPriv: presPriv, pw: pw, bk: bk, kdfBlob: kdfBlob}
	genesis, err := set.publishAll(ctx, ch, nil)
	if err != nil {
		id.Wipe()
		return nil, err
	}
	id.RootGenesis = genesis
	id.kdfBlob = kdfBlob
	return id, nil
}

// bootSet publishes a complete set of bootstrap messages at one
// presentation address.
type bootSet struct {
	id       *Identity
	pres     Key
	presPriv *btcec.PrivateKey
	pw, bk   Key
	kdfBlob  []byte
}

// publishAll publishes steps 7–16. genesis, if non-nil, names the root's
// existing genesis output (a set republished at a new presentation
// address); otherwise the FS roots transaction creates it.
func (s *bootSet) publishAll(ctx context.Context, ch Chain, genesis *OutPoint) (OutPoint, error) {
	id := s.id
	pe, be := pwEpoch(s.kdfBlob), bkEpoch(s.bk)
	loc, err := locatorKey(s.bk)
	if err != nil {
		return OutPoint{}, err
	}
	locPay := []Payment{{PkScript: p2pkh(btcutilHash160(loc.PubKey().SerializeCompressed())), Value: LocatorValue}}
	pub := func(t envelope.Type, pays []Payment, fields ...[]byte) ([32]byte, error) {
		txid, err := ch.Publish(ctx, s.presPriv, t, fields, pays)
		if err != nil {
			return txid, fmt.Errorf("keyring: publish %s: %w", t, err)
		}
		return txid, nil
	}
	seal := func(key Key, plain []byte, t envelope.Type, epochs ...[]byte) ([]byte, error) {
		return Seal(key, plain, aad(t, id.PresentationAddr, epochs...))
	}
	type msg struct {
		t      envelope.Type
		key    Key
		plain  []byte
		epochs [][]byte
		pays   []Payment
	}
	primary, priv := id.Primary, id.privileged
	msgs := []msg{
		{t: envelope.TypeBootWrapPwPres, key: XOR(s.pw, s.pres), plain: primary[:], epochs: [][]byte{pe}},                   // step 8
		{t: envelope.TypeBootWrapPwBackup, key: XOR(s.pw, s.bk), plain: primary[:], epochs: [][]byte{pe, be}, pays: locPay}, // step 9
		{t: envelope.TypeBootWrapPresBkp, key: XOR(s.pres, s.bk), plain: primary[:], epochs: [][]byte{be}},                  // step 10
		{t: envelope.TypeBootPrivPwPrim, key: XOR(s.pw, primary), plain: priv[:], epochs: [][]byte{pe}},                     // step 11
		{t: envelope.TypeBootPrivPresBkp, key: XOR(s.pres, s.bk), plain: priv[:], epochs: [][]byte{be}},                     // step 12
		{t: envelope.TypeBootPrimaryPair, key: primary, plain: id.PrimaryPair.Serialize()},                                  // step 14
		{t: envelope.TypeBootPrivPair, key: priv, plain: id.privilegedPair.Serialize()},                                     // step 15
	}
	// Step 7: the salt. Wrappings that name its epoch are only used once
	// the salt itself is on chain, but at first bootstrap order does not
	// matter, so follow the paper.
	if _, err := pub(envelope.TypeBootSalt, nil, s.kdfBlob); err != nil {
		return OutPoint{}, err
	}
	for _, m := range msgs {
		sealed, err := seal(m.key, m.plain, m.t, m.epochs...)
		key := m.key
		key.Wipe()
		if err != nil {
			return OutPoint{}, err
		}
		if _, err := pub(m.t, m.pays, append([][]byte{sealed}, m.epochs...)...); err != nil {
			return OutPoint{}, err
		}
		switch m.t { // kept so the password alone can unlock later
		case envelope.TypeBootPrivPwPrim:
			id.privWrap = sealed
		case envelope.TypeBootPrivPair:
			id.privPairSealed = sealed
		}
		if m.t == envelope.TypeBootPrivPresBkp { // step 13 between 12 and 14
			if _, err := pub(envelope.TypeBootPubKeys, nil, id.PrimaryPub, id.PrivilegedPub); err != nil {
				return OutPoint{}, err
			}
		}
	}
	// Step 16: the filesystem roots, and the root node's genesis output.
	roots := make([]byte, 0, rootsPlainLen)
	roots = append(append(roots, id.ReadRoot[:]...), id.WriteRoot[:]...)
	sealed, err := seal(id.Primary, roots, envelope.TypeBootFSRoots)
	Wipe(roots)
	if err != nil {
		return OutPoint{}, err
	}
	if genesis != nil {
		if _, err := pub(envelope.TypeBootFSRoots, nil, sealed, encodeOutPoint(*genesis)); err != nil {
			return OutPoint{}, err
		}
		return *genesis, nil
	}
	rootPay := []Payment{{PkScript: p2pkh(id.RootAddr[:]), Value: GenesisValue}}
	txid, err := pub(envelope.TypeBootFSRoots, rootPay, sealed, nil)
	if err != nil {
		return OutPoint{}, err
	}
	return OutPoint{TxID: txid, Index: 2}, nil
}

func encodeOutPoint(o OutPoint) []byte {
	b := make([]byte, 36)
	copy(b, o.TxID[:])
	b[32], b[33], b[34], b[35] = byte(o.Index), byte(o.Index>>8), byte(o.Index>>16), byte(o.Index>>24)
	return b
}

func decodeOutPoint(b []byte) (OutPoint, error) {
	if len(b) != 36 {
		return OutPoint{}, fmt.Errorf("outpoint of %d bytes, want 36", len(b))
	}
	var o OutPoint
	copy(o.TxID[:], b)
	o.Index = uint32(b[32]) | uint32(b[33])<<8 | uint32(b[34])<<16 | uint32(b[35])<<24
	return o, nil
}

// sameBytes compares epoch tags.
func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }
