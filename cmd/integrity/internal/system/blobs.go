package system

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"golang.org/x/crypto/hkdf"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
)

// tieredBlobs is where the tree keeps large files' blobs: the data
// directory first, the System's image servers behind it. A blob written
// here is uploaded to the servers in the background (each upload buys
// the System's hosting term, under its spending cap, registered to an
// owner key derived from the System's primary key and the blob's hash),
// so another device of the System can read it; a blob this device does
// not have is read from the servers.
type tieredBlobs struct {
	s     *System
	local *blob.Dir

	mu      sync.Mutex
	servers []string // the System's default image servers, as last read
	pending int      // uploads queued or running
	queue   chan [32]byte
	stop    chan struct{}
	done    sync.WaitGroup
}

func newTieredBlobs(s *System, local *blob.Dir, servers []string) *tieredBlobs {
	b := &tieredBlobs{s: s, local: local, servers: servers, queue: make(chan [32]byte, 4096), stop: make(chan struct{})}
	b.done.Add(1)
	go b.uploader()
	return b
}

var _ blob.Store = (*tieredBlobs)(nil)

func (b *tieredBlobs) setServers(servers []string) (changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed = !slices.Equal(b.servers, servers)
	b.servers = slices.Clone(servers)
	return changed
}

func (b *tieredBlobs) remote(ctx context.Context) (blob.Store, error) {
	b.mu.Lock()
	servers := b.servers
	b.mu.Unlock()
	if len(servers) == 0 {
		return nil, fmt.Errorf("%w: not on this device, and the System has no image servers", blob.ErrNotFound)
	}
	return b.s.images.Store(ctx, servers)
}

func (b *tieredBlobs) enqueue(h [32]byte) {
	b.mu.Lock()
	if len(b.servers) == 0 {
		b.mu.Unlock()
		return // nowhere to upload to
	}
	b.pending++
	b.mu.Unlock()
	select {
	case b.queue <- h:
	default:
		b.mu.Lock()
		b.pending--
		b.mu.Unlock()
		b.s.log.Warn("blob upload queue full; a large file stays on this device only until it is written again")
	}
}

// Put implements blob.Store.
func (b *tieredBlobs) Put(ctx context.Context, hash [32]byte, r io.Reader, size int64) error {
	if err := b.local.Put(ctx, hash, r, size); err != nil {
		return err
	}
	b.enqueue(hash)
	return nil
}

// PutEncrypted encrypts into the data directory (chainfs's fast path)
// and queues the upload.
func (b *tieredBlobs) PutEncrypted(ctx context.Context, r io.Reader) (blob.Ref, error) {
	ref, err := b.local.PutEncrypted(ctx, r)
	if err == nil {
		b.enqueue(ref.Hash)
	}
	return ref, err
}

// Get implements blob.Store.
func (b *tieredBlobs) Get(ctx context.Context, hash [32]byte) (io.ReadCloser, error) {
	rc, err := b.local.Get(ctx, hash)
	if !errors.Is(err, blob.ErrNotFound) {
		return rc, err
	}
	r, err := b.remote(ctx)
	if err != nil {
		return nil, err
	}
	return r.Get(ctx, hash)
}

// GetRange implements blob.Store.
func (b *tieredBlobs) GetRange(ctx context.Context, hash [32]byte, off, n int64) ([]byte, error) {
	p, err := b.local.GetRange(ctx, hash, off, n)
	if !errors.Is(err, blob.ErrNotFound) {
		return p, err
	}
	r, err := b.remote(ctx)
	if err != nil {
		return nil, err
	}
	return r.GetRange(ctx, hash, off, n)
}

// Has implements blob.Store.
func (b *tieredBlobs) Has(ctx context.Context, hash [32]byte) (bool, error) {
	if ok, err := b.local.Has(ctx, hash); ok || err != nil {
		return ok, err
	}
	r, err := b.remote(ctx)
	if err != nil {
		return false, nil
	}
	return r.Has(ctx, hash)
}

// Delete implements blob.Store (this device's copy).
func (b *tieredBlobs) Delete(ctx context.Context, hash [32]byte) error {
	return b.local.Delete(ctx, hash)
}

// uploader copies queued blobs to every server of the System, a few
// tries each.
func (b *tieredBlobs) uploader() {
	defer b.done.Done()
	for {
		var h [32]byte
		select {
		case <-b.stop:
			return
		case h = <-b.queue:
		}
		for try := 0; try < 5; try++ {
			err := b.upload(h)
			if err == nil {
				break
			}
			b.s.log.Warn("uploading a large file's blob to the image servers failed", "try", try+1, "err", err)
			select {
			case <-b.stop:
				return
			case <-time.After(time.Duration(try+1) * 2 * time.Second):
			}
		}
		b.mu.Lock()
		b.pending--
		b.mu.Unlock()
	}
}

func (b *tieredBlobs) upload(h [32]byte) error {
	b.mu.Lock()
	servers := b.servers
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, u := range servers {
		c, err := b.s.images.client(u)
		if err != nil {
			return err
		}
		if ok, err := c.Has(ctx, h); err == nil && ok {
			continue
		}
		rc, err := b.local.Get(ctx, h)
		if err != nil {
			return err
		}
		size, err := b.local.Size(h)
		if err != nil {
			rc.Close()
			return err
		}
		owner, err := b.s.blobOwner(h)
		if err != nil {
			rc.Close()
			return err
		}
		_, err = c.Host(ctx, imageserver.HostRequest{Hash: h, Size: size, Days: termAt(ctx, c, b.s.hostingDays(0), false), Body: rc,
			Payer: b.s.payer(), Owner: owner})
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", u, err)
		}
	}
	return nil
}

// blobOwner is the key that registers (and may later extend or release)
// a large file's blob at the image servers. The uploader knows only the
// blob's hash, not the file's node, so the key is derived from the
// System's primary key and the hash: every device of the System can sign
// with it again, and a server cannot link one System's blobs by owner.
func (s *System) blobOwner(h [32]byte) (imageserver.Signer, error) {
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	if id == nil {
		return nil, ErrNotLoggedIn
	}
	r := hkdf.New(sha256.New, id.Primary[:], h[:], []byte("integrity blob owner key v1"))
	var k [32]byte
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return nil, err
	}
	priv, _ := btcec.PrivKeyFromBytes(k[:])
	return imageserver.KeySigner(priv), nil
}

// learnServers takes the System's image servers and image settings from
// its tree (another device may have set them) for the blob store, and
// remembers the servers on this device for the next start; content that
// could not be read without them is read again.
func (s *System) learnServers(t *chainfs.Tree) error {
	s.learnImageSettings(t)
	servers := s.defaultServers(t)
	if !s.blobs.setServers(servers) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.RetryUnavailable(ctx)
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Settings.ImageServers = servers
	return s.opts.Dir.Save(s.opts.Settings)
}

// close lets queued uploads finish (a minute at most: a command that
// wrote a large file should leave it where other devices find it).
func (b *tieredBlobs) close() {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b.mu.Lock()
		n := b.pending
		b.mu.Unlock()
		if n == 0 {
			break
		}
	}
	close(b.stop)
	b.done.Wait()
}
