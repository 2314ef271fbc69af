package keyring

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"

	"github.com/integrity-sys/integrity/internal/addrsafe"
	"github.com/integrity-sys/integrity/internal/envelope"
)

// PrivilegedTTL is how long the privileged access key stays unlocked
// after the password was entered (paper: "generally every 5 minutes").
const PrivilegedTTL = 5 * time.Minute

// ErrLocked means the privileged access key must be unlocked with the
// password first.
var ErrLocked = errors.New("the privileged access key is locked: enter the password")

// Identity is an unlocked System: what the primary key opens, plus the
// privileged key while it is unlocked. Only the agent holds one.
type Identity struct {
	PresentationAddr [20]byte
	Primary          Key
	PrimaryPair      *btcec.PrivateKey
	PrimaryPub       []byte // compressed, 33 bytes
	PrivilegedPub    []byte
	// ReadRoot and WriteRoot are the filesystem trees' root extended
	// private keys as key ‖ chain code.
	ReadRoot, WriteRoot [64]byte
	// RootAddr is HASH160 of the write root's public key: the "/" node.
	RootAddr    [20]byte
	RootGenesis OutPoint

	// For unlocking the privileged key with the password alone.
	kdfBlob        []byte
	privWrap       []byte // boot-priv-pw-primary's sealed field
	privPairSealed []byte // boot-priv-pair's sealed field

	mu             sync.Mutex
	privileged     Key
	privilegedPair *btcec.PrivateKey
	unlockedAt     time.Time
}

// newIdentity generates the keys of paper steps 4 and 16.
func newIdentity() (*Identity, error) {
	id := &Identity{}
	var err error
	if id.Primary, err = NewRandomKey(); err != nil {
		return nil, err
	}
	if id.privileged, err = NewRandomKey(); err != nil {
		return nil, err
	}
	// The primary public key's P2PKH address is the user's inbox (shares
	// are paid to it), so it must be one btcd can look up.
	for {
		if id.PrimaryPair, err = btcec.NewPrivateKey(); err != nil {
			return nil, fmt.Errorf("keyring: primary key pair: %w", err)
		}
		h := hash160(id.PrimaryPair.PubKey().SerializeCompressed())
		if addrsafe.Queryable(h[:]) {
			break
		}
	}
	if id.privilegedPair, err = btcec.NewPrivateKey(); err != nil {
		return nil, fmt.Errorf("keyring: privileged key pair: %w", err)
	}
	id.PrimaryPub = id.PrimaryPair.PubKey().SerializeCompressed()
	id.PrivilegedPub = id.privilegedPair.PubKey().SerializeCompressed()
	if err := newTreeRoot(&id.ReadRoot); err != nil {
		return nil, err
	}
	for {
		if err := newTreeRoot(&id.WriteRoot); err != nil {
			return nil, err
		}
		if err := id.deriveRootAddr(); err != nil {
			return nil, err
		}
		if addrsafe.Queryable(id.RootAddr[:]) {
			break
		}
	}
	id.unlockedAt = time.Now()
	return id, nil
}

// newTreeRoot makes a BIP32 master key from a fresh seed.
func newTreeRoot(out *[64]byte) error {
	for {
		seed := make([]byte, hdkeychain.RecommendedSeedLen)
		if _, err := rand.Read(seed); err != nil {
			return fmt.Errorf("keyring: tree seed: %w", err)
		}
		m, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
		Wipe(seed)
		if errors.Is(err, hdkeychain.ErrUnusableSeed) {
			continue
		}
		if err != nil {
			return fmt.Errorf("keyring: tree root: %w", err)
		}
		priv, err := m.ECPrivKey()
		if err != nil {
			return fmt.Errorf("keyring: tree root: %w", err)
		}
		k := priv.Key.Bytes()
		copy(out[:32], k[:])
		copy(out[32:], m.ChainCode())
		Wipe(k[:])
		m.Zero()
		return nil
	}
}

// TreeRoot returns a root as a BIP32 extended private key. The network
// only affects serialisation, which integrity never publishes.
func TreeRoot(root [64]byte) *hdkeychain.ExtendedKey {
	return hdkeychain.NewExtendedKey(chaincfg.MainNetParams.HDPrivateKeyID[:], root[:32], root[32:], []byte{0, 0, 0, 0}, 0, 0, true)
}

func (id *Identity) deriveRootAddr() error {
	pub, err := TreeRoot(id.WriteRoot).ECPubKey()
	if err != nil {
		return fmt.Errorf("keyring: write root: %w", err)
	}
	id.RootAddr = hash160(pub.SerializeCompressed())
	return nil
}

func btcutilHash160(b []byte) []byte { return address.Hash160(b) }

// UnlockPrivileged opens the privileged access key and key pair with the
// password (paper: "Proper Use of the Privileged Access Key"). They stay
// in memory for PrivilegedTTL and are never written to disk.
func (id *Identity) UnlockPrivileged(password []byte) error {
	params, err := ParseKDFParams(id.kdfBlob)
	if err != nil {
		return err
	}
	pw, err := DeriveKey(password, params)
	if err != nil {
		return err
	}
	defer pw.Wipe()
	wrap := XOR(pw, id.Primary)
	defer wrap.Wipe()
	plain, err := Open(wrap, id.privWrap, aad(envelope.TypeBootPrivPwPrim, id.PresentationAddr, pwEpoch(id.kdfBlob)))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrWrongFactors, err)
	}
	return id.setPrivileged(plain)
}

// setPrivileged installs the privileged key (and opens its key pair).
func (id *Identity) setPrivileged(plain []byte) error {
	defer Wipe(plain)
	k, err := KeyFromBytes(plain)
	if err != nil {
		return fmt.Errorf("%w: privileged key: %v", ErrBootstrapBroken, err)
	}
	pairPlain, err := Open(k, id.privPairSealed, aad(envelope.TypeBootPrivPair, id.PresentationAddr))
	if err != nil {
		k.Wipe()
		return fmt.Errorf("%w: privileged key pair: %v", ErrBootstrapBroken, err)
	}
	pair, _ := btcec.PrivKeyFromBytes(pairPlain)
	Wipe(pairPlain)
	if !pubEqual(pair.PubKey().SerializeCompressed(), id.PrivilegedPub) {
		k.Wipe()
		return fmt.Errorf("%w: privileged key pair does not match its published public key", ErrBootstrapBroken)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	id.privileged.Wipe()
	id.privileged = k
	id.privilegedPair = pair
	id.unlockedAt = time.Now()
	return nil
}

// Privileged returns the privileged key and key pair if they were unlocked
// less than PrivilegedTTL ago; otherwise it wipes them and returns
// ErrLocked.
func (id *Identity) Privileged(now time.Time) (Key, *btcec.PrivateKey, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.privilegedPair == nil || now.Sub(id.unlockedAt) > PrivilegedTTL {
		id.lockLocked()
		return Key{}, nil, ErrLocked
	}
	return id.privileged, id.privilegedPair, nil
}

// Lock forgets the privileged key now.
func (id *Identity) Lock() {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.lockLocked()
}

func (id *Identity) lockLocked() {
	id.privileged.Wipe()
	if id.privilegedPair != nil {
		id.privilegedPair.Zero()
		id.privilegedPair = nil
	}
}

// Wipe clears every secret the identity holds (paper step 17 for what the
// device does not keep).
func (id *Identity) Wipe() {
	id.Lock()
	id.Primary.Wipe()
	if id.PrimaryPair != nil {
		id.PrimaryPair.Zero()
	}
	Wipe(id.ReadRoot[:])
	Wipe(id.WriteRoot[:])
}

func pubEqual(a, b []byte) bool { return sameBytes(a, b) }

// deviceRecord is what a device keeps after login, sealed under its device
// key: everything the primary key opens, never the privileged key.
type deviceRecord struct {
	V                int      `json:"v"`
	PresentationAddr []byte   `json:"presentation_addr"`
	Primary          []byte   `json:"primary"`
	PrimaryPair      []byte   `json:"primary_pair"`
	PrimaryPub       []byte   `json:"primary_pub"`
	PrivilegedPub    []byte   `json:"privileged_pub"`
	ReadRoot         []byte   `json:"read_root"`
	WriteRoot        []byte   `json:"write_root"`
	RootGenesis      []byte   `json:"root_genesis"`
	KDF              []byte   `json:"kdf"`
	PrivWrap         []byte   `json:"priv_wrap"`
	PrivPair         []byte   `json:"priv_pair"`
	Extra            []string `json:"extra,omitempty"`
}

var deviceAAD = []byte("integrity device record v1")

// SealForDevice encrypts the identity (without the privileged key) under a
// device key, for the data directory.
func (id *Identity) SealForDevice(deviceKey Key) ([]byte, error) {
	r := deviceRecord{
		V: 1, PresentationAddr: id.PresentationAddr[:], Primary: id.Primary[:],
		PrimaryPair: id.PrimaryPair.Serialize(), PrimaryPub: id.PrimaryPub, PrivilegedPub: id.PrivilegedPub,
		ReadRoot: id.ReadRoot[:], WriteRoot: id.WriteRoot[:], RootGenesis: encodeOutPoint(id.RootGenesis),
		KDF: id.kdfBlob, PrivWrap: id.privWrap, PrivPair: id.privPairSealed,
	}
	plain, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("keyring: encode device record: %w", err)
	}
	defer Wipe(plain)
	return Seal(deviceKey, plain, deviceAAD)
}

// OpenDevice decrypts a device record.
func OpenDevice(deviceKey Key, sealed []byte) (*Identity, error) {
	plain, err := Open(deviceKey, sealed, deviceAAD)
	if err != nil {
		return nil, fmt.Errorf("keyring: device keys: %w", err)
	}
	defer Wipe(plain)
	var r deviceRecord
	if err := json.Unmarshal(plain, &r); err != nil {
		return nil, fmt.Errorf("keyring: device keys are corrupt: %w", err)
	}
	if r.V != 1 || len(r.PresentationAddr) != 20 || len(r.Primary) != 32 || len(r.PrimaryPair) != 32 ||
		len(r.ReadRoot) != 64 || len(r.WriteRoot) != 64 {
		return nil, errors.New("keyring: device keys are corrupt (bad record)")
	}
	id := &Identity{PrimaryPub: r.PrimaryPub, PrivilegedPub: r.PrivilegedPub, kdfBlob: r.KDF, privWrap: r.PrivWrap, privPairSealed: r.PrivPair}
	copy(id.PresentationAddr[:], r.PresentationAddr)
	copy(id.Primary[:], r.Primary)
	id.PrimaryPair, _ = btcec.PrivKeyFromBytes(r.PrimaryPair)
	copy(id.ReadRoot[:], r.ReadRoot)
	copy(id.WriteRoot[:], r.WriteRoot)
	if id.RootGenesis, err = decodeOutPoint(r.RootGenesis); err != nil {
		return nil, fmt.Errorf("keyring: device keys are corrupt: %w", err)
	}
	if err := id.deriveRootAddr(); err != nil {
		return nil, err
	}
	Wipe(r.Primary)
	Wipe(r.PrimaryPair)
	Wipe(r.ReadRoot)
	Wipe(r.WriteRoot)
	return id, nil
}

// NewPresentationKey returns a presentation key whose address every btcd
// network can look up (internal/addrsafe).
func NewPresentationKey() (Key, error) {
	for {
		k, err := NewScalarKey()
		if err != nil {
			return Key{}, err
		}
		p, err := k.PrivateKey()
		if err != nil {
			return Key{}, err
		}
		h := hash160(p.PubKey().SerializeCompressed())
		if addrsafe.Queryable(h[:]) {
			return k, nil
		}
	}
}

// NewSafeBackupKey returns a backup key whose locator address every btcd
// network can look up (internal/addrsafe).
func NewSafeBackupKey() (BackupKey, error) {
	for {
		b, err := NewBackupKey()
		if err != nil {
			return BackupKey{}, err
		}
		loc, err := locatorKey(b.Key())
		if err != nil {
			return BackupKey{}, err
		}
		h := hash160(loc.PubKey().SerializeCompressed())
		if addrsafe.Queryable(h[:]) {
			return b, nil
		}
	}
}
