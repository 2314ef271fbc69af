package keyring

import (
	"context"
	"fmt"
	"time"

	"github.com/integrity-sys/integrity/internal/envelope"
)

// Rewrap replaces the password, the backup key or both (paper: System
// Recovery Process — "new versions of the affected keys can be
// re-broadcasted ... the underlying keys themselves never need to change").
// The identity must have its privileged key unlocked. Presentation is the
// current presentation key (from the secret servers).
type Rewrap struct {
	Presentation Key
	// Password is the password that will be current afterwards; if
	// NewPassword, it is new and gets a fresh salt (KDF, zero for the
	// default parameters).
	Password    []byte
	NewPassword bool
	KDF         KDFParams
	// Backup is the backup key that will be current afterwards; new if
	// NewBackup.
	Backup    BackupKey
	NewBackup bool
}

// Apply publishes the new wrappings. Order makes a crash harmless: the
// wrappings first, then the message that makes them current (the new
// backup's presentation+backup wrap, then the new salt), so until the last
// message lands the old factors keep working.
func (r Rewrap) Apply(ctx context.Context, ch Chain, id *Identity) error {
	priv, _, err := id.Privileged(time.Now())
	if err != nil {
		return err
	}
	presPriv, err := r.Presentation.PrivateKey()
	if err != nil {
		return fmt.Errorf("keyring: presentation key: %w", err)
	}
	if hash160(presPriv.PubKey().SerializeCompressed()) != id.PresentationAddr {
		return fmt.Errorf("keyring: the presentation key does not belong to this System")
	}
	kdfBlob := id.kdfBlob
	if r.NewPassword {
		kdf := r.KDF
		if kdf.Algorithm == 0 {
			if kdf, err = NewKDFParams(); err != nil {
				return err
			}
		}
		if kdfBlob, err = kdf.MarshalBinary(); err != nil {
			return err
		}
	}
	params, err := ParseKDFParams(kdfBlob)
	if err != nil {
		return err
	}
	pw, err := DeriveKey(r.Password, params)
	if err != nil {
		return err
	}
	defer pw.Wipe()
	if !r.NewPassword {
		// Prove the stated current password before publishing with it.
		probe := XOR(pw, id.Primary)
		_, oerr := Open(probe, id.privWrap, aad(envelope.TypeBootPrivPwPrim, id.PresentationAddr, pwEpoch(kdfBlob)))
		probe.Wipe()
		if oerr != nil {
			return ErrWrongFactors
		}
	}
	bk := r.Backup.Key()
	defer bk.Wipe()
	pe, be := pwEpoch(kdfBlob), bkEpoch(bk)
	addr := id.PresentationAddr

	publish := func(t envelope.Type, key Key, plain []byte, pays []Payment, epochs ...[]byte) ([]byte, error) {
		defer key.Wipe()
		sealed, err := Seal(key, plain, aad(t, addr, epochs...))
		if err != nil {
			return nil, err
		}
		if _, err := ch.Publish(ctx, presPriv, t, append([][]byte{sealed}, epochs...), pays); err != nil {
			return nil, fmt.Errorf("keyring: publish %s: %w", t, err)
		}
		return sealed, nil
	}
	var locPay []Payment
	if r.NewBackup {
		loc, err := locatorKey(bk)
		if err != nil {
			return err
		}
		locPay = []Payment{{PkScript: p2pkh(btcutilHash160(loc.PubKey().SerializeCompressed())), Value: LocatorValue}}
	}
	primary := id.Primary
	var newPrivWrap []byte
	if r.NewPassword {
		if _, err := publish(envelope.TypeBootWrapPwPres, XOR(pw, r.Presentation), primary[:], nil, pe); err != nil {
			return err
		}
		if newPrivWrap, err = publish(envelope.TypeBootPrivPwPrim, XOR(pw, primary), priv[:], nil, pe); err != nil {
			return err
		}
	}
	if _, err := publish(envelope.TypeBootWrapPwBackup, XOR(pw, bk), primary[:], locPay, pe, be); err != nil {
		return err
	}
	if r.NewBackup {
		if _, err := publish(envelope.TypeBootPrivPresBkp, XOR(r.Presentation, bk), priv[:], nil, be); err != nil {
			return err
		}
		if _, err := publish(envelope.TypeBootWrapPresBkp, XOR(r.Presentation, bk), primary[:], nil, be); err != nil {
			return err
		}
	}
	if r.NewPassword {
		if _, err := ch.Publish(ctx, presPriv, envelope.TypeBootSalt, [][]byte{kdfBlob}, nil); err != nil {
			return fmt.Errorf("keyring: publish %s: %w", envelope.TypeBootSalt, err)
		}
		id.kdfBlob, id.privWrap = kdfBlob, newPrivWrap
	}
	return nil
}

// ReplacePresentation moves the System to a new presentation key (the old
// one is lost, or its secret server account is): a complete bootstrap set
// is published at the new key's address, naming the same filesystem root.
// The identity must have its privileged key unlocked.
func ReplacePresentation(ctx context.Context, ch Chain, id *Identity, newPres Key, password []byte, backup BackupKey,
	fund func(ctx context.Context, addr [20]byte, amount int64) error) error {
	if _, _, err := id.Privileged(time.Now()); err != nil {
		return err
	}
	params, err := ParseKDFParams(id.kdfBlob)
	if err != nil {
		return err
	}
	pw, err := DeriveKey(password, params)
	if err != nil {
		return err
	}
	defer pw.Wipe()
	probe := XOR(pw, id.Primary)
	_, oerr := Open(probe, id.privWrap, aad(envelope.TypeBootPrivPwPrim, id.PresentationAddr, pwEpoch(id.kdfBlob)))
	probe.Wipe()
	if oerr != nil {
		return ErrWrongFactors
	}
	presPriv, err := newPres.PrivateKey()
	if err != nil {
		return fmt.Errorf("keyring: presentation key: %w", err)
	}
	bk := backup.Key()
	defer bk.Wipe()
	oldAddr, oldPrivWrap, oldPrivPair := id.PresentationAddr, id.privWrap, id.privPairSealed
	newAddr := hash160(presPriv.PubKey().SerializeCompressed())
	if err := fund(ctx, newAddr, PresentationFunding); err != nil {
		return fmt.Errorf("keyring: fund new presentation address: %w", err)
	}
	id.PresentationAddr = newAddr
	set := bootSet{id: id, pres: newPres, presPriv: presPriv, pw: pw, bk: bk, kdfBlob: id.kdfBlob}
	genesis := id.RootGenesis
	if _, err := set.publishAll(ctx, ch, &genesis); err != nil {
		id.PresentationAddr, id.privWrap, id.privPairSealed = oldAddr, oldPrivWrap, oldPrivPair
		return err
	}
	return nil
}
