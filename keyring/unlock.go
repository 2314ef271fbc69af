package keyring

import (
	"context"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/integrity-sys/integrity/internal/envelope"
)

// bootState is what sign-on reads at a presentation address: for each
// message type, every valid-looking message in chain order.
type bootState struct {
	addr  [20]byte
	byTyp map[envelope.Type][]Published
}

// readBoot lists the bootstrap messages at addr. A chain failure is an
// error — never "no System" — so a flaky lookup cannot lead to a second
// System being created for the same person.
func readBoot(ctx context.Context, ch Chain, addr [20]byte) (*bootState, error) {
	msgs, err := ch.Messages(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("keyring: read bootstrap messages: %w", err)
	}
	st := &bootState{addr: addr, byTyp: map[envelope.Type][]Published{}}
	for _, m := range msgs {
		if m.Type >= envelope.TypeBootSalt && m.Type <= envelope.TypeBootRetire {
			st.byTyp[m.Type] = append(st.byTyp[m.Type], m)
		}
	}
	if len(st.byTyp) == 0 {
		return nil, ErrNoSystem
	}
	return st, nil
}

// latest returns the newest message of type t whose trailing epoch fields
// equal epochs (and that has the expected field count).
func (st *bootState) latest(t envelope.Type, nfields int, epochs ...[]byte) (Published, bool) {
	list := st.byTyp[t]
	for i := len(list) - 1; i >= 0; i-- {
		m := list[i]
		if len(m.Fields) != nfields {
			continue
		}
		ok := true
		for j, e := range epochs {
			if !sameBytes(m.Fields[1+j], e) {
				ok = false
				break
			}
		}
		if ok {
			return m, true
		}
	}
	return Published{}, false
}

// currentSalt is the newest salt whose wrappings are complete: a password
// change publishes its wrappings before its salt, so the newest salt
// always is; older sets are never used (the old password must fail).
func (st *bootState) currentSalt() (KDFParams, []byte, error) {
	list := st.byTyp[envelope.TypeBootSalt]
	for i := len(list) - 1; i >= 0; i-- {
		if len(list[i].Fields) != 1 {
			continue
		}
		blob := list[i].Fields[0]
		p, err := ParseKDFParams(blob)
		if err != nil {
			continue // a malformed salt message is skipped, not fatal
		}
		return p, blob, nil
	}
	return KDFParams{}, nil, fmt.Errorf("%w: no usable salt message", ErrBootstrapBroken)
}

// currentBackupEpoch is the epoch of the newest presentation+backup wrap:
// a backup change publishes it last.
func (st *bootState) currentBackupEpoch() ([]byte, bool) {
	list := st.byTyp[envelope.TypeBootWrapPresBkp]
	for i := len(list) - 1; i >= 0; i-- {
		if len(list[i].Fields) == 2 {
			return list[i].Fields[1], true
		}
	}
	return nil, false
}

// Factors are what the user offers: any two of the three.
type Factors struct {
	Password     []byte
	Presentation *Key
	Backup       *BackupKey
}

// Unlock performs the System Sign-on Process (password + presentation
// key) or one of the recovery modes (presentation + backup key, password +
// backup key). With the presentation key, the System is found at its
// address; with password + backup key, through the backup key's locator.
func Unlock(ctx context.Context, ch Chain, f Factors) (*Identity, error) {
	n := 0
	for _, have := range []bool{f.Password != nil, f.Presentation != nil, f.Backup != nil} {
		if have {
			n++
		}
	}
	if n < 2 {
		return nil, errors.New("keyring: two of password, presentation key and backup key are needed")
	}
	if f.Presentation != nil {
		priv, err := f.Presentation.PrivateKey()
		if err != nil {
			return nil, fmt.Errorf("keyring: presentation key: %w", err)
		}
		addr := hash160(priv.PubKey().SerializeCompressed())
		return unlockAt(ctx, ch, addr, f)
	}
	// Password + backup key: the backup key's locator address was paid by
	// every presentation address that holds a wrapping for it.
	loc, err := locatorKey(f.Backup.Key())
	if err != nil {
		return nil, err
	}
	payers, err := ch.Payers(ctx, hash160(loc.PubKey().SerializeCompressed()))
	if err != nil {
		return nil, fmt.Errorf("keyring: find System by backup key: %w", err)
	}
	if len(payers) == 0 {
		return nil, fmt.Errorf("%w (no System pays this backup key's locator: is the backup key right?)", ErrNoSystem)
	}
	var firstErr error
	for i := len(payers) - 1; i >= 0; i-- { // newest presentation address first
		id, err := unlockAt(ctx, ch, payers[i], f)
		if err == nil {
			return id, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func unlockAt(ctx context.Context, ch Chain, addr [20]byte, f Factors) (*Identity, error) {
	st, err := readBoot(ctx, ch, addr)
	if err != nil {
		return nil, err
	}
	params, kdfBlob, err := st.currentSalt()
	if err != nil {
		return nil, err
	}
	pe := pwEpoch(kdfBlob)
	var pw, bk Key
	defer pw.Wipe()
	defer bk.Wipe()
	if f.Password != nil {
		if pw, err = DeriveKey(f.Password, params); err != nil {
			return nil, err
		}
	}
	var be []byte
	if f.Backup != nil {
		bk = f.Backup.Key()
		be = bkEpoch(bk)
		cur, ok := st.currentBackupEpoch()
		if !ok {
			return nil, fmt.Errorf("%w: no backup wrappings", ErrBootstrapBroken)
		}
		if !sameBytes(cur, be) {
			return nil, ErrBackupReplaced
		}
	}

	// The primary key, from whichever pair of factors we have.
	var wrapType envelope.Type
	var wrapKey Key
	var epochs [][]byte
	switch {
	case f.Password != nil && f.Presentation != nil:
		wrapType, wrapKey, epochs = envelope.TypeBootWrapPwPres, XOR(pw, *f.Presentation), [][]byte{pe}
	case f.Presentation != nil && f.Backup != nil:
		wrapType, wrapKey, epochs = envelope.TypeBootWrapPresBkp, XOR(*f.Presentation, bk), [][]byte{be}
	default:
		wrapType, wrapKey, epochs = envelope.TypeBootWrapPwBackup, XOR(pw, bk), [][]byte{pe, be}
	}
	defer wrapKey.Wipe()
	m, ok := st.latest(wrapType, 1+len(epochs), epochs...)
	if !ok {
		return nil, fmt.Errorf("%w: no %s wrapping for the current factors", ErrBootstrapBroken, wrapType)
	}
	plain, err := Open(wrapKey, m.Fields[0], aad(wrapType, addr, epochs...))
	if err != nil {
		return nil, ErrWrongFactors
	}
	id := &Identity{PresentationAddr: addr, kdfBlob: kdfBlob}
	id.Primary, err = KeyFromBytes(plain)
	Wipe(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: primary key: %v", ErrBootstrapBroken, err)
	}
	if err := st.openPrimaryData(id); err != nil {
		id.Wipe()
		return nil, err
	}
	// The privileged key: with the password via the primary key (step 11),
	// else with presentation + backup (step 12).
	if pm, ok := st.latest(envelope.TypeBootPrivPwPrim, 2, pe); ok {
		id.privWrap = pm.Fields[0]
	}
	if f.Password != nil {
		if id.privWrap == nil {
			id.Wipe()
			return nil, fmt.Errorf("%w: no privileged wrapping for the current password", ErrBootstrapBroken)
		}
		err = id.UnlockPrivilegedWithKey(pw)
	} else {
		pm, ok := st.latest(envelope.TypeBootPrivPresBkp, 2, be)
		if !ok {
			id.Wipe()
			return nil, fmt.Errorf("%w: no privileged wrapping for the current backup key", ErrBootstrapBroken)
		}
		k := XOR(*f.Presentation, bk)
		plain, oerr := Open(k, pm.Fields[0], aad(envelope.TypeBootPrivPresBkp, addr, be))
		k.Wipe()
		if oerr != nil {
			id.Wipe()
			return nil, fmt.Errorf("%w: privileged key: %v", ErrBootstrapBroken, oerr)
		}
		err = id.setPrivileged(plain)
	}
	if err != nil {
		id.Wipe()
		return nil, err
	}
	return id, nil
}

// UnlockPrivilegedWithKey is UnlockPrivileged for a password key already
// derived (sign-on derives it once).
func (id *Identity) UnlockPrivilegedWithKey(pw Key) error {
	wrap := XOR(pw, id.Primary)
	defer wrap.Wipe()
	plain, err := Open(wrap, id.privWrap, aad(envelope.TypeBootPrivPwPrim, id.PresentationAddr, pwEpoch(id.kdfBlob)))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrWrongFactors, err)
	}
	return id.setPrivileged(plain)
}

// openPrimaryData reads what the primary key opens: the key pairs' public
// keys, the primary key pair, the filesystem roots (steps 13, 14, 16).
func (st *bootState) openPrimaryData(id *Identity) error {
	pk, ok := st.latest(envelope.TypeBootPubKeys, 2)
	if !ok || len(pk.Fields[0]) != 33 || len(pk.Fields[1]) != 33 {
		return fmt.Errorf("%w: no public keys message", ErrBootstrapBroken)
	}
	id.PrimaryPub, id.PrivilegedPub = pk.Fields[0], pk.Fields[1]
	pp, ok := st.latest(envelope.TypeBootPrimaryPair, 1)
	if !ok {
		return fmt.Errorf("%w: no primary key pair message", ErrBootstrapBroken)
	}
	plain, err := Open(id.Primary, pp.Fields[0], aad(envelope.TypeBootPrimaryPair, st.addr))
	if err != nil {
		return fmt.Errorf("%w: primary key pair: %v", ErrBootstrapBroken, err)
	}
	id.PrimaryPair, _ = btcec.PrivKeyFromBytes(plain)
	Wipe(plain)
	if !pubEqual(id.PrimaryPair.PubKey().SerializeCompressed(), id.PrimaryPub) {
		return fmt.Errorf("%w: primary key pair does not match its published public key", ErrBootstrapBroken)
	}
	if vp, ok := st.latest(envelope.TypeBootPrivPair, 1); ok {
		id.privPairSealed = vp.Fields[0]
	} else {
		return fmt.Errorf("%w: no privileged key pair message", ErrBootstrapBroken)
	}
	fr, ok := st.latest(envelope.TypeBootFSRoots, 2)
	if !ok {
		return fmt.Errorf("%w: no filesystem roots message", ErrBootstrapBroken)
	}
	plain, err = Open(id.Primary, fr.Fields[0], aad(envelope.TypeBootFSRoots, st.addr))
	if err != nil || len(plain) != rootsPlainLen {
		Wipe(plain)
		return fmt.Errorf("%w: filesystem roots: %v", ErrBootstrapBroken, err)
	}
	copy(id.ReadRoot[:], plain[:64])
	copy(id.WriteRoot[:], plain[64:])
	Wipe(plain)
	if len(fr.Fields[1]) == 0 {
		id.RootGenesis = OutPoint{TxID: fr.TxID, Index: 2}
	} else if id.RootGenesis, err = decodeOutPoint(fr.Fields[1]); err != nil {
		return fmt.Errorf("%w: root genesis: %v", ErrBootstrapBroken, err)
	}
	return id.deriveRootAddr()
}
