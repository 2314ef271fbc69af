package system

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/integrity-sys/integrity/chainfs/addrlog"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
	"github.com/integrity-sys/integrity/internal/envelope"
	"github.com/integrity-sys/integrity/keyring"
	"github.com/integrity-sys/integrity/keyring/secretserver"
)

// Errors of the account commands.
var (
	ErrNotLoggedIn = errors.New("no System on this device: run `integrity init` or `integrity login`")
	ErrLoggedIn    = errors.New("this data directory already holds a System")
	ErrNoFunds     = errors.New("cannot fund the presentation address")
)

// flowTTL bounds how long a begun account operation waits for its codes.
const flowTTL = 15 * time.Minute

// AuthBegin starts an account operation (auth.begin).
type AuthBegin struct {
	Op string `json:"op"` // init, login, passwd, recover
	// Replace, for recover: the lost factor — password, backup or
	// presentation.
	Replace     string   `json:"replace,omitempty"`
	User        string   `json:"user,omitempty"`
	Servers     []string `json:"servers,omitempty"`
	Method      string   `json:"method,omitempty"`      // init/recover presentation: code or totp
	Destination string   `json:"destination,omitempty"` // where codes go
	Password    []byte   `json:"password,omitempty"`
	NewPassword []byte   `json:"new_password,omitempty"`
	Backup      string   `json:"backup,omitempty"` // the user's backup key text
	NewBackup   bool     `json:"new_backup,omitempty"`
	// NoPresentation: log in with password + backup key, without the
	// secret servers.
	NoPresentation bool   `json:"no_presentation,omitempty"`
	KDF            string `json:"kdf,omitempty"` // argon2id (default) or pbkdf2
}

// Prompt asks the user for one code.
type Prompt struct {
	Server string `json:"server"`
	Kind   string `json:"kind"` // code (sent to Info) or totp (from the app; TOTPURI set at enrolment)
	Info   string `json:"info,omitempty"`
	// TOTPURI and TOTPSecret are shown once, at enrolment.
	TOTPURI    string `json:"totp_uri,omitempty"`
	TOTPSecret string `json:"totp_secret,omitempty"`
}

// AuthBegun answers auth.begin.
type AuthBegun struct {
	Flow    string   `json:"flow"`
	Prompts []Prompt `json:"prompts"`
	// BackupKey is a newly issued backup key: show it and have the user
	// type it back (auth.finish checks).
	BackupKey string `json:"backup_key,omitempty"`
}

// AuthFinish completes an operation (auth.finish).
type AuthFinish struct {
	Flow          string   `json:"flow"`
	Codes         []string `json:"codes,omitempty"` // one per prompt
	BackupConfirm string   `json:"backup_confirm,omitempty"`
}

// WhoAmI describes the System (auth.whoami).
type WhoAmI struct {
	User                string   `json:"user"`
	SecretServers       []string `json:"secret_servers"`
	PresentationAddress string   `json:"presentation_address"`
	RootAddress         string   `json:"root_address"`
	PrimaryPubKey       string   `json:"primary_pubkey"`
	PrivilegedPubKey    string   `json:"privileged_pubkey"`
	WalletAddress       string   `json:"wallet_address"`
	Network             string   `json:"network"`
}

type flow struct {
	begin    AuthBegin
	created  time.Time
	servers  []*secretserver.Client
	backup   *keyring.BackupKey // the user's
	issued   *keyring.BackupKey // newly issued
	pres     keyring.Key        // new presentation key (init, replace)
	slices   []keyring.Key
	prompts  []Prompt
	sessions []secretserver.Session
}

func (f *flow) wipe() {
	keyring.Wipe(f.begin.Password)
	keyring.Wipe(f.begin.NewPassword)
	if f.backup != nil {
		f.backup.Wipe()
	}
	if f.issued != nil {
		f.issued.Wipe()
	}
	f.pres.Wipe()
	for i := range f.slices {
		f.slices[i].Wipe()
	}
}

func (s *System) authHandlers() map[string]func(context.Context, json.RawMessage) (any, error) {
	return map[string]func(context.Context, json.RawMessage) (any, error){
		"auth.begin":  s.authBegin,
		"auth.finish": s.authFinish,
		"auth.whoami": s.authWhoAmI,
		"auth.logout": s.authLogout,
		"auth.unlock": s.authUnlock,
	}
}

func (s *System) authBegin(ctx context.Context, raw json.RawMessage) (any, error) {
	var b AuthBegin
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("auth.begin: %w", err)
	}
	f := &flow{begin: b, created: time.Now()}
	ok := false
	defer func() {
		if !ok {
			f.wipe()
		}
	}()
	s.mu.Lock()
	id := s.id
	settings := s.opts.Settings
	s.mu.Unlock()
	switch b.Op {
	case "init", "login", "recover":
		if id != nil {
			return nil, fmt.Errorf("%w (user %q): use another --data-dir, or `integrity logout` first", ErrLoggedIn, settings.User)
		}
	case "passwd":
		if id == nil {
			return nil, ErrNotLoggedIn
		}
		if b.User == "" {
			f.begin.User = settings.User
		}
		if len(b.Servers) == 0 {
			f.begin.Servers = settings.SecretServers
		}
	default:
		return nil, fmt.Errorf("unknown account operation %q", b.Op)
	}
	if f.begin.User == "" {
		return nil, errors.New("a user id is needed (--user): the name your secret servers know you by")
	}
	if b.Backup != "" {
		bk, err := keyring.ParseBackupKey(b.Backup)
		if err != nil {
			return nil, err
		}
		f.backup = &bk
	}
	usePres := !(b.Op == "login" && b.NoPresentation) && !(b.Op == "recover" && b.Replace == "presentation")
	enrol := b.Op == "init" || (b.Op == "recover" && b.Replace == "presentation")
	if (usePres || enrol) && len(f.begin.Servers) == 0 {
		return nil, errors.New("no secret server given (--secret-server)")
	}
	for _, u := range f.begin.Servers {
		c, err := secretserver.NewClient(u, nil)
		if err != nil {
			return nil, err
		}
		f.servers = append(f.servers, c)
	}
	// Which factors each operation needs, checked before any server is
	// contacted.
	switch {
	case b.Op == "init" && len(b.Password) == 0:
		return nil, errors.New("init needs a password")
	case b.Op == "login" && b.NoPresentation && (len(b.Password) == 0 || f.backup == nil):
		return nil, errors.New("logging in without the secret servers needs the password and the backup key")
	case b.Op == "login" && !b.NoPresentation && len(b.Password) == 0 && f.backup == nil:
		return nil, errors.New("logging in needs the password (or the backup key)")
	case b.Op == "passwd" && (len(b.Password) == 0 || len(b.NewPassword) == 0):
		return nil, errors.New("passwd needs the current and the new password")
	case b.Op == "passwd" && f.backup == nil && !b.NewBackup:
		return nil, errors.New("passwd needs the backup key (or a new one, --new-backup-key) so password + backup recovery keeps working")
	case b.Op == "recover" && b.Replace == "password" && (f.backup == nil || len(b.NewPassword) == 0):
		return nil, errors.New("replacing a lost password needs the backup key and a new password")
	case b.Op == "recover" && b.Replace == "backup" && len(b.Password) == 0:
		return nil, errors.New("replacing a lost backup key needs the password")
	case b.Op == "recover" && b.Replace == "presentation" && (len(b.Password) == 0 || f.backup == nil):
		return nil, errors.New("replacing a lost presentation key needs the password and the backup key")
	case b.Op == "recover" && b.Replace != "password" && b.Replace != "backup" && b.Replace != "presentation":
		return nil, fmt.Errorf("recover --replace %q: want password, backup or presentation", b.Replace)
	}
	if b.Op == "init" || b.NewBackup || (b.Op == "recover" && b.Replace == "backup") {
		bk, err := keyring.NewSafeBackupKey()
		if err != nil {
			return nil, err
		}
		f.issued = &bk
	}
	if enrol {
		if err := s.enrolAll(ctx, f); err != nil {
			return nil, err
		}
	} else if usePres {
		for _, c := range f.servers {
			ch, err := c.Challenge(ctx, f.begin.User)
			if err != nil {
				return nil, err
			}
			p := Prompt{Server: c.URL(), Kind: "totp"}
			if ch.Method == secretserver.MethodCode {
				p.Kind, p.Info = "code", ch.Destination
			}
			f.prompts = append(f.prompts, p)
		}
	}
	flowID := make([]byte, 16)
	if _, err := rand.Read(flowID); err != nil {
		return nil, err
	}
	res := AuthBegun{Flow: hex.EncodeToString(flowID), Prompts: f.prompts}
	if f.issued != nil {
		res.BackupKey = f.issued.Text()
	}
	s.mu.Lock()
	for k, old := range s.flows {
		if time.Since(old.created) > flowTTL {
			old.wipe()
			delete(s.flows, k)
		}
	}
	s.flows[res.Flow] = f
	s.mu.Unlock()
	ok = true
	return res, nil
}

// enrolAll generates a presentation key and enrols one slice of it at each
// secret server (paper step 5 and footnote 1).
func (s *System) enrolAll(ctx context.Context, f *flow) error {
	var err error
	if f.pres, err = keyring.NewPresentationKey(); err != nil {
		return err
	}
	if f.slices, err = keyring.SplitKey(f.pres, len(f.servers)); err != nil {
		return err
	}
	method := f.begin.Method
	if method == "" {
		method = secretserver.MethodCode
	}
	for i, c := range f.servers {
		e, err := c.Enrol(ctx, secretserver.EnrolRequest{User: f.begin.User, Method: method, Destination: f.begin.Destination, Slice: f.slices[i]})
		if errors.Is(err, secretserver.ErrExists) {
			return fmt.Errorf("secret server %s already has an account %q (use `integrity login`, or another --user): %w", c.URL(), f.begin.User, err)
		}
		if err != nil {
			return err
		}
		p := Prompt{Server: c.URL(), Kind: "code", Info: e.Destination}
		if method == secretserver.MethodTOTP {
			p = Prompt{Server: c.URL(), Kind: "totp", TOTPURI: e.TOTPURI, TOTPSecret: e.TOTPSecret}
		}
		f.prompts = append(f.prompts, p)
	}
	return nil
}

func (s *System) takeFlow(id string) (*flow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.flows[id]
	if !ok || time.Since(f.created) > flowTTL {
		return nil, errors.New("this account operation expired or is unknown: start again")
	}
	delete(s.flows, id)
	return f, nil
}

func (s *System) authFinish(ctx context.Context, raw json.RawMessage) (any, error) {
	var a AuthFinish
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("auth.finish: %w", err)
	}
	f, err := s.takeFlow(a.Flow)
	if err != nil {
		return nil, err
	}
	defer f.wipe()
	if len(a.Codes) != len(f.prompts) {
		return nil, fmt.Errorf("%d codes given, %d needed", len(a.Codes), len(f.prompts))
	}
	if f.issued != nil {
		typed, err := keyring.ParseBackupKey(a.BackupConfirm)
		if err != nil {
			return nil, fmt.Errorf("the backup key typed back: %w", err)
		}
		same := typed.Key() == f.issued.Key()
		typed.Wipe()
		if !same {
			return nil, errors.New("the backup key typed back does not match the one shown: nothing was changed")
		}
	}
	enrolled := f.pres != (keyring.Key{})
	// Verify at every server; collect slices (sign-on) or sessions
	// (enrolment, for the faucet).
	var pres keyring.Key
	defer pres.Wipe()
	for i, c := range f.servers[:len(f.prompts)] {
		code := strings.TrimSpace(a.Codes[i])
		var sess secretserver.Session
		if enrolled {
			sess, err = c.ConfirmEnrolment(ctx, f.begin.User, code)
		} else {
			sess, err = c.Verify(ctx, f.begin.User, code)
		}
		if err != nil {
			return nil, err
		}
		f.sessions = append(f.sessions, sess)
		if !enrolled {
			sl, err := c.Slice(ctx, sess)
			if err != nil {
				return nil, err
			}
			pres = keyring.XOR(pres, keyring.Key(sl))
		}
	}
	ch := s.keyringChain()
	var id *keyring.Identity
	b := f.begin
	switch {
	case b.Op == "init":
		kdf, err := kdfParams(b.KDF)
		if err != nil {
			return nil, err
		}
		id, err = keyring.Bootstrap(ctx, ch, keyring.InitParams{
			Password: b.Password, KDF: kdf, Presentation: f.pres, Backup: *f.issued,
			Fund: func(ctx context.Context, addr [20]byte, amount int64) error { return s.fund(ctx, addr, amount, f) },
		})
		if err != nil {
			return nil, err
		}
	case b.Op == "login":
		fac := keyring.Factors{Backup: f.backup}
		if len(b.Password) > 0 {
			fac.Password = b.Password
		}
		if !b.NoPresentation {
			fac.Presentation = &pres
		}
		if id, err = keyring.Unlock(ctx, ch, fac); err != nil {
			return nil, err
		}
	case b.Op == "passwd":
		s.mu.Lock()
		id = s.id
		s.mu.Unlock()
		if err := id.UnlockPrivileged(b.Password); err != nil {
			return nil, err
		}
		rw := keyring.Rewrap{Presentation: pres, Password: b.NewPassword, NewPassword: true}
		if rw.KDF, err = kdfParams(b.KDF); err != nil {
			return nil, err
		}
		if f.issued != nil {
			rw.Backup, rw.NewBackup = *f.issued, true
		} else {
			rw.Backup = *f.backup
		}
		if err := rw.Apply(ctx, ch, id); err != nil {
			return nil, err
		}
	case b.Replace == "password":
		if id, err = keyring.Unlock(ctx, ch, keyring.Factors{Presentation: &pres, Backup: f.backup}); err != nil {
			return nil, err
		}
		rw := keyring.Rewrap{Presentation: pres, Password: b.NewPassword, NewPassword: true, Backup: *f.backup}
		if rw.KDF, err = kdfParams(b.KDF); err != nil {
			return nil, err
		}
		if err := rw.Apply(ctx, ch, id); err != nil {
			return nil, err
		}
	case b.Replace == "backup":
		if id, err = keyring.Unlock(ctx, ch, keyring.Factors{Password: b.Password, Presentation: &pres}); err != nil {
			return nil, err
		}
		rw := keyring.Rewrap{Presentation: pres, Password: b.Password, Backup: *f.issued, NewBackup: true}
		if err := rw.Apply(ctx, ch, id); err != nil {
			return nil, err
		}
	case b.Replace == "presentation":
		if id, err = keyring.Unlock(ctx, ch, keyring.Factors{Password: b.Password, Backup: f.backup}); err != nil {
			return nil, err
		}
		fund := func(ctx context.Context, addr [20]byte, amount int64) error { return s.fund(ctx, addr, amount, f) }
		if err := keyring.ReplacePresentation(ctx, ch, id, f.pres, b.Password, *f.backup, fund); err != nil {
			return nil, err
		}
	}
	if err := s.adopt(id, b.User, b.Servers); err != nil {
		return nil, err
	}
	if b.Op != "init" {
		// A device that just signed on reads its whole tree now (with a
		// progress bar when someone watches), so the first command or
		// mount does not wait for it.
		if _, err := s.Tree(ctx); err != nil {
			s.log.Warn("signed on, but the tree could not be read yet", "err", err)
		}
	}
	return s.whoami(), nil
}

func kdfParams(name string) (keyring.KDFParams, error) {
	switch name {
	case "", "argon2id":
		return keyring.NewKDFParams()
	case "pbkdf2":
		return keyring.NewPBKDF2Params(0)
	}
	return keyring.KDFParams{}, fmt.Errorf("unknown KDF %q: want argon2id or pbkdf2", name)
}

// fund pays the presentation address (paper step 6): from this device's
// wallet if it can, else from a secret server's faucet, else — on a test
// network — by mining to the wallet first.
func (s *System) fund(ctx context.Context, addr [20]byte, amount int64, f *flow) error {
	to, err := address.NewAddressPubKeyHash(addr[:], s.backend.Params())
	if err != nil {
		return err
	}
	out, err := wallet.PayTo(to, amount)
	if err != nil {
		return err
	}
	if _, _, err := s.wallet.Pay(ctx, []wallet.Output{out}); err == nil {
		return nil
	} else if !errors.Is(err, wallet.ErrInsufficientFunds) {
		return err
	}
	for i, sess := range f.sessions {
		if _, err := f.servers[i].Fund(ctx, sess, to.EncodeAddress()); err == nil {
			return nil
		} else {
			s.log.Info("faucet did not pay", "server", f.servers[i].URL(), "err", err)
		}
	}
	n := int(s.backend.Params().CoinbaseMaturity) + 1
	if _, err := s.backend.Mine(ctx, n, s.wallet.Address()); err != nil {
		if errors.Is(err, chain.ErrUnsupported) {
			return fmt.Errorf("%w: the wallet has no funds and no faucet paid; send coins to %s", ErrNoFunds, s.wallet.Address())
		}
		return err
	}
	s.wallet.Invalidate()
	if _, _, err := s.wallet.Pay(ctx, []wallet.Output{out}); err != nil {
		return fmt.Errorf("%w: %v", ErrNoFunds, err)
	}
	return nil
}

// adopt makes id this device's System: sealed to disk under the device
// key, remembered in the settings, held in memory.
func (s *System) adopt(id *keyring.Identity, user string, servers []string) error {
	dk, err := loadOrCreateDeviceKey(s.opts.Dir.DeviceKey())
	if err != nil {
		return err
	}
	defer dk.Wipe()
	sealed, err := id.SealForDevice(dk)
	if err != nil {
		return err
	}
	if err := config.WriteFileAtomic(s.opts.Dir.KeysFile(), sealed, 0o600); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if user != "" {
		s.opts.Settings.User = user
	}
	if len(servers) > 0 {
		s.opts.Settings.SecretServers = servers
	}
	if err := s.opts.Dir.Save(s.opts.Settings); err != nil {
		return err
	}
	if s.id != nil && s.id != id {
		s.id.Wipe()
	}
	s.id = id
	return nil
}

func loadOrCreateDeviceKey(path string) (keyring.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := keyring.KeyFromBytes(b)
		keyring.Wipe(b)
		if err != nil {
			return keyring.Key{}, fmt.Errorf("device key %s is corrupt: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return keyring.Key{}, fmt.Errorf("read device key: %w", err)
	}
	k, err := keyring.NewRandomKey()
	if err != nil {
		return keyring.Key{}, err
	}
	if err := config.WriteFileAtomic(path, k[:], 0o600); err != nil {
		return keyring.Key{}, err
	}
	return k, nil
}

// loadIdentity opens the device's sealed keys, if it has any.
func loadIdentity(d config.Dir) (*keyring.Identity, error) {
	sealed, err := os.ReadFile(d.KeysFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read device keys: %w", err)
	}
	dk, err := loadOrCreateDeviceKey(d.DeviceKey())
	if err != nil {
		return nil, err
	}
	defer dk.Wipe()
	return keyring.OpenDevice(dk, sealed)
}

func (s *System) whoami() WhoAmI {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id
	params := s.backend.Params()
	w := WhoAmI{User: s.opts.Settings.User, SecretServers: s.opts.Settings.SecretServers,
		WalletAddress: s.wallet.Address().EncodeAddress(), Network: params.Name}
	if id != nil {
		if a, err := address.NewAddressPubKeyHash(id.PresentationAddr[:], params); err == nil {
			w.PresentationAddress = a.EncodeAddress()
		}
		if a, err := address.NewAddressPubKeyHash(id.RootAddr[:], params); err == nil {
			w.RootAddress = a.EncodeAddress()
		}
		w.PrimaryPubKey = hex.EncodeToString(id.PrimaryPub)
		w.PrivilegedPubKey = hex.EncodeToString(id.PrivilegedPub)
	}
	return w
}

func (s *System) authWhoAmI(context.Context, json.RawMessage) (any, error) {
	s.mu.Lock()
	in := s.id != nil
	s.mu.Unlock()
	if !in {
		return nil, ErrNotLoggedIn
	}
	return s.whoami(), nil
}

func (s *System) authLogout(ctx context.Context, _ json.RawMessage) (any, error) {
	s.mu.Lock()
	t := s.tree
	s.tree = nil
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.mu.Unlock()
	if t != nil {
		// Commit what is pending first: after logout this device cannot.
		if err := t.Close(ctx); err != nil {
			return nil, fmt.Errorf("logout: commit pending changes: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == nil {
		return nil, ErrNotLoggedIn
	}
	// The cache is encrypted under a key derived from the primary key;
	// without the keys it is noise, so drop it. Blobs stay: they may be
	// the only copy of large content until an image server holds it.
	if err := os.RemoveAll(s.opts.Dir.CacheDir()); err != nil {
		return nil, fmt.Errorf("logout: remove cache: %w", err)
	}
	for _, p := range []string{s.opts.Dir.KeysFile(), s.opts.Dir.DeviceKey()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("logout: %w", err)
		}
	}
	s.id.Wipe()
	s.id = nil
	s.opts.Settings.User, s.opts.Settings.SecretServers = "", nil
	if err := s.opts.Dir.Save(s.opts.Settings); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// UnlockArgs unlock the privileged key (auth.unlock).
type UnlockArgs struct {
	Password []byte `json:"password"`
}

func (s *System) authUnlock(_ context.Context, raw json.RawMessage) (any, error) {
	var a UnlockArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("auth.unlock: %w", err)
	}
	defer keyring.Wipe(a.Password)
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	if id == nil {
		return nil, ErrNotLoggedIn
	}
	if err := id.UnlockPrivileged(a.Password); err != nil {
		return nil, err
	}
	return struct {
		Until time.Time `json:"until"`
	}{time.Now().Add(keyring.PrivilegedTTL)}, nil
}

// keyringChain adapts the address log to keyring.Chain.
func (s *System) keyringChain() keyring.Chain {
	return &kchain{log: &addrlog.Log{Backend: s.backend, Wallet: s.wallet, Logger: s.log}, s: s}
}

type kchain struct {
	log *addrlog.Log
	s   *System
}

func (k *kchain) Publish(ctx context.Context, priv *btcec.PrivateKey, t envelope.Type, fields [][]byte, pays []keyring.Payment) ([32]byte, error) {
	key, err := wallet.NewKey(priv, k.s.backend.Params())
	if err != nil {
		return [32]byte{}, err
	}
	outs := make([]*wire.TxOut, len(pays))
	for i, p := range pays {
		outs[i] = wire.NewTxOut(p.Value, p.PkScript)
	}
	h, err := k.log.Publish(ctx, key, t, fields, outs)
	return h, err
}

func (k *kchain) Messages(ctx context.Context, addr [20]byte) ([]keyring.Published, error) {
	a, err := address.NewAddressPubKeyHash(addr[:], k.s.backend.Params())
	if err != nil {
		return nil, err
	}
	msgs, err := k.log.Messages(ctx, a)
	if err != nil {
		return nil, err
	}
	out := make([]keyring.Published, len(msgs))
	for i, m := range msgs {
		out[i] = keyring.Published{Message: m.Message, TxID: m.TxID, Confirmed: m.Height >= 0}
	}
	return out, nil
}

func (k *kchain) Payers(ctx context.Context, addr [20]byte) ([][20]byte, error) {
	a, err := address.NewAddressPubKeyHash(addr[:], k.s.backend.Params())
	if err != nil {
		return nil, err
	}
	return k.log.Payers(ctx, a)
}
