package imageserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
)

// StoreOptions configure a Store.
type StoreOptions struct {
	// Payer pays upload quotes and, on servers that charge for them,
	// download quotes. Nil: only free servers work. Downloads are paid
	// without asking anyone, so give a LimitedPayer (WalletPayer is one):
	// a quote above its limit fails with ErrOverLimit, unpaid.
	Payer Payer
	// Days is the hosting period bought by Put (0: the server's minimum).
	Days int
	// Public marks Puts as public images (else private: images or
	// encrypted blobs).
	Public bool
	// Owner registers uploads, and Delete releases them. Nil: uploads are
	// anonymous (they expire) and Delete fails.
	Owner Signer
	// Progress, if set, is called during Put and Get transfers.
	Progress func(done, total int64)
}

// Store is a blob.Store on one image server: chainfs's large-content
// blobs and images can live on image servers through it (combine several
// with blob.NewMulti, which skips and reports a server that fails or
// serves wrong bytes). Get verifies the hash; GetRange cannot (blob and
// image readers authenticate what they fetch).
type Store struct {
	c    *Client
	opts StoreOptions

	mu      sync.Mutex
	tickets map[[32]byte]ticket // paid download quotes
	// buy serialises ticket purchases: reads refused together pay once.
	buy sync.Mutex
}

// ticket is a paid download quote.
type ticket struct {
	id     string
	bought time.Time
}

// ticketRebuyAfter: a server that refuses a ticket sooner than this after
// it was bought is not paid again for the same content (else a server
// could refuse every ticket and be paid on every read); it fails like any
// other broken server, and a Multi moves on. An honest ticket serves
// twice the content's size for a day (docs/IMAGE-SERVER.md).
const ticketRebuyAfter = 10 * time.Minute

// NewStore returns a Store over c.
func NewStore(c *Client, opts StoreOptions) *Store {
	return &Store{c: c, opts: opts, tickets: make(map[[32]byte]ticket)}
}

var _ blob.Store = (*Store)(nil)

// Client is the store's client.
func (s *Store) Client() *Client { return s.c }

// Put quotes, pays and uploads (blob.Store): every Put buys its own
// hosting period, even of content the server already holds for others —
// whose bytes are then not sent again (the upload asks for 100-continue
// and the server answers at once).
func (s *Store) Put(ctx context.Context, hash [32]byte, r io.Reader, size int64) error {
	_, err := s.c.Host(ctx, HostRequest{Hash: hash, Size: size, Public: s.opts.Public, Days: s.opts.Days, Body: r,
		Payer: s.opts.Payer, Owner: s.opts.Owner, Progress: s.opts.Progress})
	return err
}

// Get streams the whole blob, verified at its end (blob.Store).
func (s *Store) Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := s.withTicket(ctx, hash, func(t string) error {
		var err error
		rc, _, err = s.c.Download(ctx, hash, DownloadOptions{Ticket: t, Progress: s.opts.Progress})
		return err
	})
	return rc, err
}

// GetRange fetches a byte range (blob.Store).
func (s *Store) GetRange(ctx context.Context, hash [32]byte, off, n int64) ([]byte, error) {
	var out []byte
	err := s.withTicket(ctx, hash, func(t string) error {
		var err error
		out, err = s.c.DownloadRange(ctx, hash, off, n, DownloadOptions{Ticket: t})
		var e *Error
		if errors.As(err, &e) && e.Code == codeRange {
			return fmt.Errorf("%w: %v", blob.ErrRange, err)
		}
		return err
	})
	return out, err
}

// withTicket runs fn, buying a download ticket (with the Payer) and
// trying again if the server asks for payment.
func (s *Store) withTicket(ctx context.Context, hash [32]byte, fn func(ticket string) error) error {
	s.mu.Lock()
	t := s.tickets[hash]
	s.mu.Unlock()
	err := fn(t.id)
	if !errors.Is(err, ErrUnpaid) || s.opts.Payer == nil {
		return err
	}
	if t, err = s.buyTicket(ctx, hash, t); err != nil {
		return err
	}
	return fn(t.id)
}

// buyTicket buys a download ticket for hash to replace had, which the
// server refused — unless another read bought one meanwhile (then that
// one is tried), or had itself is too recent to be used up.
func (s *Store) buyTicket(ctx context.Context, hash [32]byte, had ticket) (ticket, error) {
	s.buy.Lock()
	defer s.buy.Unlock()
	s.mu.Lock()
	cur := s.tickets[hash]
	s.mu.Unlock()
	if cur.id != had.id {
		return cur, nil
	}
	if age := time.Since(cur.bought); cur.id != "" && age < ticketRebuyAfter {
		return ticket{}, fmt.Errorf("%w: %s refuses download ticket %s, paid %s ago: not paying it again for %x",
			ErrUnpaid, s.c.URL(), cur.id, age.Round(time.Second), hash[:8])
	}
	q, err := s.c.Quote(ctx, QuoteRequest{Kind: KindDownload, Hash: hash})
	if err != nil {
		return ticket{}, err
	}
	if q, err = s.c.Pay(ctx, q, s.opts.Payer); err != nil {
		return ticket{}, err
	}
	t := ticket{id: q.ID, bought: time.Now()}
	s.mu.Lock()
	s.tickets[hash] = t
	s.mu.Unlock()
	return t, nil
}

// Has reports whether the server hosts the blob (blob.Store).
func (s *Store) Has(ctx context.Context, hash [32]byte) (bool, error) {
	return s.c.Has(ctx, hash)
}

// Delete releases the blob with the Owner key (blob.Store); a blob the
// server does not host is already deleted.
func (s *Store) Delete(ctx context.Context, hash [32]byte) error {
	if s.opts.Owner == nil {
		return fmt.Errorf("image server %s: releasing %x needs the owner key", s.c.URL(), hash[:8])
	}
	_, err := s.c.Release(ctx, hash, s.opts.Owner)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
