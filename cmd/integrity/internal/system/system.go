// Package system is the paper's Client inside one process: it opens the
// chain backend a data directory is bound to, the wallet, and (as later
// parts land) the user's keys and tree, and exposes every operation the CLI
// offers as an rpc.Handlers table. The agent serves that table on its
// socket; commands run it in-process when no agent is running.
package system

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/chainfs/chain/btcdrpc"
	"github.com/integrity-sys/integrity/chainfs/chain/embedded"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/chainfs/wallet"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/config"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/internal/addrsafe"
	"github.com/integrity-sys/integrity/keyring"
	"github.com/integrity-sys/integrity/keyring/secretserver"
)

// Options open a System.
type Options struct {
	Dir      config.Dir
	Settings config.Settings
	Logger   *slog.Logger
	// Agent is true in the long-running agent: the embedded chain then
	// mines pending transactions on its timer.
	Agent bool
	// Progress, if set, hears how a full sync of the tree advances.
	Progress func(done, found int)
	// Renew is when the agent renews the hosting of the System's images
	// and large files (zero: twice a day, what ends within 30 days).
	Renew RenewSchedule
}

// System is an open data directory.
type System struct {
	opts    Options
	log     *slog.Logger
	backend chain.Backend
	wallet  *wallet.Wallet

	mu    sync.Mutex
	id    *keyring.Identity // nil until init/login
	flows map[string]*flow  // account operations waiting for codes
	tree  *chainfs.Tree     // opened on first use
	// treeMu serialises opening the tree; stopWatch ends the inbox
	// watcher.
	treeMu    sync.Mutex
	stopWatch context.CancelFunc
	vm        *vmService // set by Handlers
	images    *imageClients
	imageOps  imageOps
	blobs     *tieredBlobs // opened with the tree
}

// Open opens the chain backend and wallet of a data directory.
func Open(ctx context.Context, opts Options) (*System, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.Dir.Ensure(); err != nil {
		return nil, err
	}
	seed, err := loadOrCreateSeed(opts.Dir.SeedFile())
	if err != nil {
		return nil, err
	}
	id, err := loadIdentity(opts.Dir)
	if err != nil {
		return nil, err
	}
	s := &System{opts: opts, log: opts.Logger, id: id, flows: map[string]*flow{}}
	s.images = &imageClients{s: s, c: map[string]*imageserver.Client{}, bad: map[string]string{}}
	s.imageOps.ops = map[string]*ImageProgress{}
	backend, err := openBackend(ctx, opts, seed)
	if err != nil {
		return nil, err
	}
	s.backend = backend
	s.wallet, err = wallet.New(seed, backend, wallet.Options{FeeRate: opts.Settings.FeeRate})
	if err != nil {
		backend.Close()
		return nil, err
	}
	return s, nil
}

func openBackend(ctx context.Context, opts Options, seed []byte) (chain.Backend, error) {
	switch {
	case opts.Settings.Chain == config.ChainEmbedded:
		// Blocks pay the wallet, so fees come back to the user on their
		// own chain; what is pending when the process ends is mined
		// then (the mempool does not outlive the process).
		k, err := wallet.DeriveKey(seed, &chaincfg.RegressionNetParams)
		if err != nil {
			return nil, err
		}
		cfg := embedded.Config{Dir: opts.Dir.ChainDir(), Logger: opts.Logger, MineTo: k.Address()}
		if opts.Agent {
			cfg.MineInterval = time.Duration(opts.Settings.MineInterval)
		}
		return embedded.Open(cfg)
	case strings.HasPrefix(opts.Settings.Chain, "btcd://"):
		return btcdrpc.Dial(ctx, opts.Settings.Chain, opts.Logger)
	default:
		return nil, fmt.Errorf("unknown chain %q: use \"embedded\" or a btcd://user:pass@host:port?net=simnet URL", config.Redact(opts.Settings.Chain))
	}
}

// loadOrCreateSeed reads the device wallet's seed, creating it on first use.
func loadOrCreateSeed(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("wallet seed %s is corrupt (%d bytes)", path, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read wallet seed: %w", err)
	}
	seed := make([]byte, 32)
	for {
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("wallet seed: %w", err)
		}
		// A wallet whose address btcd could not look up would never see
		// its coins (internal/addrsafe).
		k, err := wallet.DeriveKey(seed, &chaincfg.MainNetParams)
		if err == nil && addrsafe.Queryable(k.Address().ScriptAddress()) {
			break
		}
	}
	if err := config.WriteFileAtomic(path, seed, 0o600); err != nil {
		return nil, err
	}
	return seed, nil
}

// Backend is the open chain backend.
func (s *System) Backend() chain.Backend { return s.backend }

// Wallet is the open wallet.
func (s *System) Wallet() *wallet.Wallet { return s.wallet }

// Close commits what is pending, releases everything and wipes the keys
// held in memory.
func (s *System) Close() error {
	var err error
	s.mu.Lock()
	v := s.vm
	s.mu.Unlock()
	if v != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = v.close(ctx)
		cancel()
	}
	s.mu.Lock()
	t := s.tree
	s.tree = nil
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.mu.Unlock()
	if t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if terr := t.Close(ctx); err == nil {
			err = terr
		}
		cancel()
	}
	s.mu.Lock()
	if s.id != nil {
		s.id.Wipe()
	}
	for k, f := range s.flows {
		f.wipe()
		delete(s.flows, k)
	}
	s.mu.Unlock()
	s.mu.Lock()
	b := s.blobs
	s.mu.Unlock()
	if b != nil {
		b.close()
	}
	if cerr := s.backend.Close(); err == nil {
		err = cerr
	}
	return err
}

// Codes are the error classes that cross the agent socket.
func Codes() *rpc.Codes {
	c := rpc.NewCodes()
	c.Register("conflict", chain.ErrConflict)
	c.Register("rejected", chain.ErrRejected)
	c.Register("not_found", chain.ErrNotFound)
	c.Register("unavailable", chain.ErrUnavailable)
	c.Register("unsupported", chain.ErrUnsupported)
	c.Register("insufficient_funds", wallet.ErrInsufficientFunds)
	c.Register("not_logged_in", ErrNotLoggedIn)
	c.Register("logged_in", ErrLoggedIn)
	c.Register("no_funds", ErrNoFunds)
	c.Register("unknown_recipient", ErrUnknownRecipient)
	c.Register("no_system", keyring.ErrNoSystem)
	c.Register("wrong_factors", keyring.ErrWrongFactors)
	c.Register("backup_replaced", keyring.ErrBackupReplaced)
	c.Register("bootstrap_broken", keyring.ErrBootstrapBroken)
	c.Register("locked", keyring.ErrLocked)
	c.Register("unknown_user", secretserver.ErrUnknownUser)
	c.Register("bad_code", secretserver.ErrBadCode)
	c.Register("locked_out", secretserver.ErrLockedOut)
	c.Register("rate_limited", secretserver.ErrRateLimited)
	c.Register("exists", secretserver.ErrExists)
	c.Register("server_unavailable", secretserver.ErrUnavailable)
	return c
}

// Handlers is the table of operations.
func (s *System) Handlers() rpc.Handlers {
	h := rpc.Handlers{
		"chain.status":   s.chainStatus,
		"chain.mine":     s.chainMine,
		"wallet.address": s.walletAddress,
		"wallet.balance": s.walletBalance,
		"wallet.send":    s.walletSend,
	}
	for k, v := range s.authHandlers() {
		h[k] = v
	}
	for k, v := range s.fsHandlers() {
		h[k] = v
	}
	for k, v := range s.shareHandlers() {
		h[k] = v
	}
	for k, v := range s.vmHandlers() {
		h[k] = v
	}
	for k, v := range s.imageHandlers() {
		h[k] = v
	}
	return h
}

// ChainStatus answers chain.status.
type ChainStatus struct {
	Backend     string    `json:"backend"`
	Network     string    `json:"network"`
	Endpoint    string    `json:"endpoint"`
	Height      int32     `json:"height"`
	TipHash     string    `json:"tip_hash"`
	TipTime     time.Time `json:"tip_time"`
	MempoolSize int       `json:"mempool_size"`
}

func (s *System) chainStatus(ctx context.Context, _ json.RawMessage) (any, error) {
	st, err := s.backend.Status(ctx)
	if err != nil {
		return nil, err
	}
	return ChainStatus{
		Backend: st.Backend, Network: st.Network, Endpoint: st.Endpoint,
		Height: st.Tip.Height, TipHash: st.Tip.Hash.String(), TipTime: st.Tip.Time,
		MempoolSize: st.MempoolSize,
	}, nil
}

// MineArgs are chain.mine's arguments.
type MineArgs struct {
	Blocks int `json:"blocks"`
}

// MineResult answers chain.mine.
type MineResult struct {
	Hashes []string `json:"hashes"`
	Height int32    `json:"height"`
}

func (s *System) chainMine(ctx context.Context, raw json.RawMessage) (any, error) {
	var a MineArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("chain.mine: %w", err)
	}
	if a.Blocks < 1 || a.Blocks > 10_000 {
		return nil, fmt.Errorf("chain mine: block count %d out of range 1..10000", a.Blocks)
	}
	hashes, err := s.backend.Mine(ctx, a.Blocks, s.wallet.Address())
	res := MineResult{}
	for _, h := range hashes {
		res.Hashes = append(res.Hashes, h.String())
	}
	if err != nil {
		return nil, fmt.Errorf("mined %d of %d blocks: %w", len(hashes), a.Blocks, err)
	}
	s.wallet.Invalidate()
	tip, err := s.backend.Tip(ctx)
	if err != nil {
		return nil, err
	}
	res.Height = tip.Height
	return res, nil
}

// AddressResult answers wallet.address.
type AddressResult struct {
	Address string `json:"address"`
	Network string `json:"network"`
}

func (s *System) walletAddress(context.Context, json.RawMessage) (any, error) {
	return AddressResult{Address: s.wallet.Address().EncodeAddress(), Network: s.backend.Params().Name}, nil
}

// BalanceResult answers wallet.balance, in satoshis.
type BalanceResult struct {
	Confirmed   int64 `json:"confirmed"`
	Unconfirmed int64 `json:"unconfirmed"`
	Immature    int64 `json:"immature"`
}

func (s *System) walletBalance(ctx context.Context, _ json.RawMessage) (any, error) {
	b, err := s.wallet.Balance(ctx)
	if err != nil {
		return nil, err
	}
	return BalanceResult{Confirmed: b.Confirmed, Unconfirmed: b.Unconfirmed, Immature: b.Immature}, nil
}

// SendArgs are wallet.send's arguments.
type SendArgs struct {
	Address string `json:"address"`
	Amount  int64  `json:"amount"` // satoshis
}

// SendResult answers wallet.send.
type SendResult struct {
	TxID string `json:"txid"`
}

func (s *System) walletSend(ctx context.Context, raw json.RawMessage) (any, error) {
	var a SendArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("wallet.send: %w", err)
	}
	to, err := address.DecodeAddress(a.Address, s.backend.Params())
	if err != nil {
		return nil, fmt.Errorf("invalid address %q: %w", a.Address, err)
	}
	if !to.IsForNet(s.backend.Params()) {
		return nil, fmt.Errorf("invalid address %q: not an address of network %s", a.Address, s.backend.Params().Name)
	}
	h, err := s.wallet.Send(ctx, to, a.Amount)
	if err != nil {
		return nil, err
	}
	return SendResult{TxID: h.String()}, nil
}
