package secretserver

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The server key is 32 random bytes in a file of its own (hex, one line,
// mode 0600). Every other key is derived from it with HKDF-SHA256 and a
// distinct label, so one secret to back up protects everything:
//
//	badger  – Badger's at-rest encryption key (AES-256)
//	record  – AES-256-GCM key sealing each user record (slice, TOTP secret,
//	          destination, counters) with AAD binding the user id
//	user-id – HMAC key turning user ids into database keys, so no user id
//	          appears in the database even after Badger's layer is peeled
//	code    – HMAC key for stored one-time codes (codes are never stored)
const (
	serverKeySize   = 32
	keyFileHeader   = "integrity-secret-server-key-v1"
	labelBadger     = "integrity secret-server badger v1"
	labelRecord     = "integrity secret-server record v1"
	labelUserID     = "integrity secret-server user-id v1"
	labelCode       = "integrity secret-server code v1"
	recordAADPrefix = "integrity secret-server record v1\x00"
	recordVersion   = 1
)

// serverKeys are the keys derived from the server key.
type serverKeys struct {
	badger [32]byte
	record cipher.AEAD
	userID [32]byte
	code   [32]byte
}

func deriveKeys(master []byte) (*serverKeys, error) {
	k := &serverKeys{}
	for _, d := range []struct {
		label string
		dst   *[32]byte
	}{{labelBadger, &k.badger}, {labelUserID, &k.userID}, {labelCode, &k.code}} {
		out, err := hkdf.Key(sha256.New, master, nil, d.label, 32)
		if err != nil {
			return nil, fmt.Errorf("deriving %s key: %w", d.label, err)
		}
		copy(d.dst[:], out)
		clear(out)
	}
	rk, err := hkdf.Key(sha256.New, master, nil, labelRecord, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving record key: %w", err)
	}
	defer clear(rk)
	block, err := aes.NewCipher(rk)
	if err != nil {
		return nil, fmt.Errorf("record cipher: %w", err)
	}
	if k.record, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("record cipher: %w", err)
	}
	return k, nil
}

// userKey is the database key of a (normalised) user id.
func (k *serverKeys) userKey(user string) [32]byte {
	m := hmac.New(sha256.New, k.userID[:])
	m.Write([]byte(user))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// codeMAC is what is stored for a one-time code: an HMAC bound to the user
// so a stored value cannot be moved to another user.
func (k *serverKeys) codeMAC(uk [32]byte, code string) []byte {
	m := hmac.New(sha256.New, k.code[:])
	m.Write(uk[:])
	m.Write([]byte(code))
	return m.Sum(nil)
}

// loadOrCreateServerKey reads the key file, or creates it (0600, in a 0700
// directory) when it is missing and dataDir holds no database yet. A
// missing key next to an existing database is an error: a fresh key would
// not open it, and silently starting over would lose every enrolment.
func loadOrCreateServerKey(path, dataDir string, log *slog.Logger) ([]byte, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("server key file %s: %w", path, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("server key file %s is accessible by group or others (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
		}
		return parseServerKey(path, data)
	case errors.Is(err, fs.ErrNotExist):
		if hasDatabase(dataDir) {
			return nil, fmt.Errorf("server key file %s is missing but %s holds a database encrypted with it: restore the key file (a new key cannot open the data)", path, dataDir)
		}
	default:
		return nil, fmt.Errorf("reading server key file: %w", err)
	}
	key := make([]byte, serverKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating server key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for server key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating server key file: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%s\n%s\n", keyFileHeader, hex.EncodeToString(key))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("writing server key file: %w", err)
	}
	log.Warn("generated a new secret-server key; back it up — without it the database cannot be read", "path", path)
	return key, nil
}

func parseServerKey(path string, data []byte) ([]byte, error) {
	lines := strings.Fields(string(data))
	if len(lines) != 2 || lines[0] != keyFileHeader {
		return nil, fmt.Errorf("server key file %s is not an integrity secret-server key (want %q then 64 hex digits)", path, keyFileHeader)
	}
	key, err := hex.DecodeString(lines[1])
	if err != nil || len(key) != serverKeySize {
		return nil, fmt.Errorf("server key file %s: key must be %d bytes in hex", path, serverKeySize)
	}
	return key, nil
}

func hasDatabase(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		n := e.Name()
		if n == "KEYREGISTRY" || n == "MANIFEST" || strings.HasSuffix(n, ".sst") || strings.HasSuffix(n, ".vlog") {
			return true
		}
	}
	return false
}

// badgerLogger sends Badger's chatter to slog, demoting its info lines to
// debug so an operator's log shows what the server does, not what the
// storage engine does.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func openDB(dir string, key [32]byte, log *slog.Logger) (*badger.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	opts := badger.DefaultOptions(dir).
		WithEncryptionKey(key[:]).
		// Badger requires an index cache when encryption is on.
		WithIndexCacheSize(16 << 20).
		WithBlockCacheSize(8 << 20).
		// An acknowledged enrolment or lockout must survive a crash.
		WithSyncWrites(true).
		// A secret server holds kilobytes per user: small tables keep
		// memory and sparse files modest.
		WithMemTableSize(8 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		WithLogger(badgerLogger{log})
	db, err := badger.Open(opts)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("opening database in %s: the server key file does not match this database: %w", dir, err)
		}
		return nil, fmt.Errorf("opening database in %s: %w", dir, err)
	}
	return db, nil
}

// record is one user's state, stored sealed under the record key with AAD
// binding the user id.
type record struct {
	V           int       `json:"v"`
	User        string    `json:"user"`
	Method      string    `json:"method"`
	Destination string    `json:"destination,omitempty"`
	TOTPSecret  string    `json:"totp_secret,omitempty"`
	Slice       []byte    `json:"slice"`
	State       string    `json:"state"` // statePending or stateActive
	Created     time.Time `json:"created"`
	Confirmed   time.Time `json:"confirmed,omitzero"`
	SliceSet    time.Time `json:"slice_set"`

	// The one-time code in flight (MethodCode): its HMAC, never the code.
	CodeMAC     []byte    `json:"code_mac,omitempty"`
	CodeExpires time.Time `json:"code_expires,omitzero"`
	CodeSent    time.Time `json:"code_sent,omitzero"`

	// Attempts and lockout.
	Failures    int       `json:"failures,omitempty"`
	Lockouts    int       `json:"lockouts,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// LastTOTPStep is the last accepted TOTP time step; a step is
	// accepted once.
	LastTOTPStep int64 `json:"last_totp_step,omitempty"`

	// Faucet: "" never used, "pending" a payment was started (treated as
	// used, so a crash mid-payment cannot pay twice), "done".
	FaucetState   string    `json:"faucet_state,omitempty"`
	FaucetAddress string    `json:"faucet_address,omitempty"`
	FaucetTxID    string    `json:"faucet_txid,omitempty"`
	FaucetAt      time.Time `json:"faucet_at,omitzero"`
}

const (
	statePending = "pending"
	stateActive  = "active"
)

func (r *record) wipe() {
	clear(r.Slice)
	r.TOTPSecret = ""
}

var errNotFound = errors.New("no record")

func dbKey(uk [32]byte) []byte {
	return append([]byte("u/"), uk[:]...)
}

func recordAAD(user string) []byte {
	return append([]byte(recordAADPrefix), user...)
}

// load reads and opens a user's record. errNotFound means no record; any
// other error is a storage or integrity failure and must never be taken
// for "no such user" (that mistake is how duplicate accounts are born).
func (s *Server) load(uk [32]byte, user string) (*record, error) {
	var sealed []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(dbKey(uk))
		if err != nil {
			return err
		}
		sealed, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading user record: %w", err)
	}
	ns := s.keys.record.NonceSize()
	if len(sealed) < ns+s.keys.record.Overhead() {
		return nil, fmt.Errorf("user record of %d bytes is truncated", len(sealed))
	}
	pt, err := s.keys.record.Open(nil, sealed[:ns], sealed[ns:], recordAAD(user))
	if err != nil {
		return nil, fmt.Errorf("user record does not authenticate (wrong server key or tampered database): %w", err)
	}
	defer clear(pt)
	var r record
	if err := json.Unmarshal(pt, &r); err != nil {
		return nil, fmt.Errorf("decoding user record: %w", err)
	}
	if r.V != recordVersion || r.User != user {
		return nil, fmt.Errorf("user record has version %d for %q", r.V, r.User)
	}
	return &r, nil
}

func (s *Server) save(uk [32]byte, r *record) error {
	r.V = recordVersion
	pt, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding user record: %w", err)
	}
	defer clear(pt)
	ns := s.keys.record.NonceSize()
	sealed := make([]byte, ns, ns+len(pt)+s.keys.record.Overhead())
	if _, err := rand.Read(sealed); err != nil {
		return fmt.Errorf("record nonce: %w", err)
	}
	sealed = s.keys.record.Seal(sealed, sealed, pt, recordAAD(r.User))
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(dbKey(uk), sealed)
	}); err != nil {
		return fmt.Errorf("writing user record: %w", err)
	}
	return nil
}

func (s *Server) remove(uk [32]byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Delete(dbKey(uk))
	}); err != nil {
		return fmt.Errorf("deleting user record: %w", err)
	}
	return nil
}
