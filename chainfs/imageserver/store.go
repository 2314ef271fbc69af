package imageserver

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The server's state in Badger (JSON values, version field v):
//
//	q/<quote id>          quoteRec, with a TTL of twice its validity
//	i/<hash hex>          imageRec: what is hosted and for whom
//	n/<nonce hex>         challengeRec, with a TTL
//	o/<txid>:<index>      quote id that an on-chain payment output paid
//	s/address             next payment address index (big-endian uint64)
//
// The content itself is in a blob.Dir next to the database.
const recVersion = 1

type quoteRec struct {
	V         int        `json:"v"`
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Hash      string     `json:"hash"`
	Size      int64      `json:"size"`
	Days      int        `json:"days,omitempty"`
	Public    bool       `json:"public"`
	Amount    int64      `json:"amount"`
	Address   string     `json:"address,omitempty"`
	Challenge string     `json:"challenge,omitempty"`
	Created   time.Time  `json:"created"`
	Expires   time.Time  `json:"expires"`
	Paid      bool       `json:"paid,omitempty"`
	PaidAt    time.Time  `json:"paid_at,omitzero"`
	Received  int64      `json:"received,omitempty"`
	Outpoints []outpoint `json:"outpoints,omitempty"`
	// Seen are the outputs paying Address found before the quote
	// expired: only they may still count after it, once confirmed.
	Seen []outpoint `json:"seen,omitempty"`
	Used bool       `json:"used,omitempty"`
	// Served counts the bytes a download ticket has served.
	Served int64 `json:"served,omitempty"`
}

type hold struct {
	Owner []byte    `json:"owner,omitempty"` // compressed public key; none: anonymous
	Until time.Time `json:"until"`
	Quote string    `json:"quote,omitempty"`
	// Size is the content size the hold was paid for (0 in records from
	// before it was kept: the image's size). A free patch may grow the
	// image to Size + PatchSlack, and the moved hold keeps Size, so a
	// chain of free patches cannot grow an image without bound.
	Size int64 `json:"size,omitempty"`
}

type imageRec struct {
	V       int       `json:"v"`
	Hash    string    `json:"hash"`
	Size    int64     `json:"size"`
	Content string    `json:"content"`
	Public  bool      `json:"public"`
	Holds   []hold    `json:"holds"`
	Created time.Time `json:"created"`
	Parent  string    `json:"parent,omitempty"`
}

// maxHolds bounds the live holds on one image (uploads of the same bytes
// by several payers, patches). A hold is never pushed out by another
// owner's: beyond the limit a new holder is refused (holdFull), while an
// existing holder extends its own hold.
const maxHolds = 64

func (r *imageRec) until() time.Time {
	var t time.Time
	for _, h := range r.Holds {
		if h.Until.After(t) {
			t = h.Until
		}
	}
	return t
}

func (r *imageRec) owners() int {
	seen := map[string]bool{}
	for _, h := range r.Holds {
		if len(h.Owner) > 0 {
			seen[string(h.Owner)] = true
		}
	}
	return len(seen)
}

// ownerHold is owner's live hold ending last.
func (r *imageRec) ownerHold(owner []byte, now time.Time) (hold, bool) {
	var best hold
	ok := false
	for _, h := range r.Holds {
		if string(h.Owner) == string(owner) && h.Until.After(now) && (!ok || h.Until.After(best.Until)) {
			best, ok = h, true
		}
	}
	if ok && best.Size <= 0 {
		best.Size = r.Size
	}
	return best, ok
}

// ownerUntil is the latest hold of owner, or zero.
func (r *imageRec) ownerUntil(owner []byte, now time.Time) time.Time {
	var t time.Time
	for _, h := range r.Holds {
		if string(h.Owner) == string(owner) && h.Until.After(now) && h.Until.After(t) {
			t = h.Until
		}
	}
	return t
}

// dropEnded removes the holds that ended by now.
func (r *imageRec) dropEnded(now time.Time) {
	keep := r.Holds[:0]
	for _, h := range r.Holds {
		if h.Until.After(now) {
			keep = append(keep, h)
		}
	}
	r.Holds = keep
}

// holdFull reports whether addHold would refuse owner: it holds nothing
// live here and maxHolds others do.
func (r *imageRec) holdFull(owner []byte, now time.Time) bool {
	live := 0
	for _, h := range r.Holds {
		if !h.Until.After(now) {
			continue
		}
		if string(h.Owner) == string(owner) {
			return false
		}
		live++
	}
	return live >= maxHolds
}

// addHold adds h, first dropping ended holds. An owner (or the anonymous
// "owner", nil) already holding the image has its hold extended to
// h.Until instead, so one payer cannot take up several places; a new
// owner beyond maxHolds live holds is refused (errTooManyHolders), so
// nobody can push out a holder by adding holds of their own.
func (r *imageRec) addHold(h hold, now time.Time) error {
	r.dropEnded(now)
	for i := range r.Holds {
		x := &r.Holds[i]
		if string(x.Owner) != string(h.Owner) {
			continue
		}
		if h.Until.After(x.Until) {
			*x = h
		}
		return nil
	}
	if len(r.Holds) >= maxHolds {
		return errTooManyHolders
	}
	r.Holds = append(r.Holds, h)
	return nil
}

// cutHolds ends owner's holds at until, where they last longer.
func (r *imageRec) cutHolds(owner []byte, until time.Time) {
	for i := range r.Holds {
		if string(r.Holds[i].Owner) == string(owner) && r.Holds[i].Until.After(until) {
			r.Holds[i].Until = until
		}
	}
}

type challengeRec struct {
	V       int       `json:"v"`
	Hash    string    `json:"hash"`
	Action  string    `json:"action"`
	Expires time.Time `json:"expires"`
}

var errNoRecord = errors.New("no record")

// errTooManyHolders: see imageRec.addHold; handlers answer tooManyHolders.
var errTooManyHolders = errors.New("too many holders")

func quoteKey(id string) []byte      { return []byte("q/" + id) }
func imageKey(hash [32]byte) []byte  { return []byte("i/" + hex.EncodeToString(hash[:])) }
func challengeKey(n [32]byte) []byte { return []byte("n/" + hex.EncodeToString(n[:])) }
func getJSON(txn *badger.Txn, key []byte, dst any) error {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return errNoRecord
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	return item.Value(func(v []byte) error {
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		return nil
	})
}

func setJSON(txn *badger.Txn, key []byte, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	e := badger.NewEntry(key, b)
	if ttl > 0 {
		e = e.WithTTL(ttl)
	}
	return txn.SetEntry(e)
}

func (s *Server) view(fn func(*badger.Txn) error) error   { return s.db.View(fn) }
func (s *Server) update(fn func(*badger.Txn) error) error { return s.db.Update(fn) }

func (s *Server) loadImage(hash [32]byte) (*imageRec, error) {
	var r imageRec
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, imageKey(hash), &r) })
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *Server) saveImage(hash [32]byte, r *imageRec) error {
	r.V = recVersion
	return s.update(func(txn *badger.Txn) error { return setJSON(txn, imageKey(hash), r, 0) })
}

func (s *Server) loadQuote(id string) (*quoteRec, error) {
	var q quoteRec
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, quoteKey(id), &q) })
	if err != nil {
		return nil, err
	}
	return &q, nil
}

func (s *Server) saveQuote(q *quoteRec) error {
	q.V = recVersion
	return s.update(func(txn *badger.Txn) error { return setJSON(txn, quoteKey(q.ID), q, s.quoteKeep()) })
}

// quoteKeep is how long a quote record stays: a paid download ticket is
// good for TicketTTL after payment, an upload quote until it expires.
func (s *Server) quoteKeep() time.Duration {
	return 2*s.cfg.QuoteTTL + s.cfg.TicketTTL
}

// badgerLogger sends Badger's chatter to slog at debug level.
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

func openDB(dir string, log *slog.Logger) (*badger.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	opts := badger.DefaultOptions(dir).
		// An acknowledged upload or payment must survive a crash.
		WithSyncWrites(true).
		// The state is small (records per quote and image): small tables
		// keep memory and sparse files modest.
		WithMemTableSize(8 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		WithBlockCacheSize(8 << 20).
		WithLogger(badgerLogger{log})
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening state database in %s: %w", dir, err)
	}
	return db, nil
}

// lockImages locks two images' records, in hash order so two patches
// between the same pair cannot deadlock; it returns the unlock.
func (s *Server) lockImages(a, b [32]byte) func() {
	x, y := hex.EncodeToString(a[:]), hex.EncodeToString(b[:])
	if x > y {
		x, y = y, x
	}
	ux := s.locks.lock("i/" + x)
	if x == y {
		return ux
	}
	uy := s.locks.lock("i/" + y)
	return func() { uy(); ux() }
}

// keyLocks serialises work on one key (a quote, an image).
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (l *keyLocks) lock(key string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*keyLock)
	}
	k := l.m[key]
	if k == nil {
		k = &keyLock{}
		l.m[key] = k
	}
	k.refs++
	l.mu.Unlock()
	k.mu.Lock()
	return func() {
		k.mu.Unlock()
		l.mu.Lock()
		k.refs--
		if k.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}
