package imageserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"

	"github.com/integrity-sys/integrity/chainfs/chain"
	"github.com/integrity-sys/integrity/internal/addrsafe"
)

// Chain is what the server needs of a chain to check payments: a subset
// of chain.Backend (the agent's backend, an embedded chain, a btcd node).
type Chain interface {
	Params() *chaincfg.Params
	// AddressTxs lists the confirmed and unconfirmed transactions paying
	// to or spending from addr.
	AddressTxs(ctx context.Context, addr address.Address) ([]chain.Tx, error)
	// Tip is the best block, for counting confirmations.
	Tip(ctx context.Context) (chain.Tip, error)
}

var _ Chain = chain.Backend(nil)

// payee derives a fresh payment address for every quote from an extended
// key (BIP32, non-hardened children of its public key — as merchants'
// invoice servers do), so a payment names the quote it pays: nobody can
// claim someone else's payment, and the server needs no private key to
// check one.
type payee struct {
	pub    *hdkeychain.ExtendedKey
	params *chaincfg.Params
}

const paymentKeyFile = "payment.key"

// loadPayee parses the configured key, or loads or creates the server's
// own in the data directory (mode 0600: with a private key in it, the
// operator can sweep the payments). The caller holds the data
// directory (the state database's lock), so no other server is creating
// one at the same time; even so, an existing key file is never
// overwritten.
func loadPayee(configured, dataDir string, params *chaincfg.Params, log *slog.Logger) (*payee, error) {
	text := strings.TrimSpace(configured)
	if text == "" {
		var err error
		if text, err = loadOrCreateKey(filepath.Join(dataDir, paymentKeyFile), params, log); err != nil {
			return nil, err
		}
	}
	k, err := hdkeychain.NewKeyFromString(text)
	if err != nil {
		return nil, fmt.Errorf("payment key: not a BIP32 extended key: %w", err)
	}
	if !k.IsForNet(params) {
		return nil, fmt.Errorf("payment key is not for network %s", params.Name)
	}
	pub, err := k.Neuter()
	if err != nil {
		return nil, fmt.Errorf("payment key: %w", err)
	}
	return &payee{pub: pub, params: params}, nil
}

// keyTempPrefix names the temporary files a new payment key is written
// to before it is linked into place.
const keyTempPrefix = "." + paymentKeyFile + ".tmp-"

// loadOrCreateKey reads the key file at path, or generates a key and
// creates the file: written to a temporary file in the same directory,
// synced, then hard-linked to path — which fails rather than replace a
// file that appeared meanwhile (that one is read instead) — and the
// directory synced, so the key is durable before any quote names one of
// its addresses.
func loadOrCreateKey(path string, params *chaincfg.Params, log *slog.Logger) (string, error) {
	if text, err := readKeyFile(path); !errors.Is(err, fs.ErrNotExist) {
		return text, err
	}
	dir := filepath.Dir(path)
	// A crash before the link left an unused key behind.
	if old, _ := filepath.Glob(filepath.Join(dir, keyTempPrefix+"*")); len(old) > 0 {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	seed := make([]byte, hdkeychain.RecommendedSeedLen)
	if _, err := rand.Read(seed); err != nil {
		return "", fmt.Errorf("payment key: %w", err)
	}
	master, err := hdkeychain.NewMaster(seed, params)
	clear(seed)
	if err != nil {
		return "", fmt.Errorf("payment key: %w", err)
	}
	text := master.String()
	if err := createFileOnce(path, []byte(text+"\n"), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(path)
		}
		return "", fmt.Errorf("writing payment key: %w", err)
	}
	log.Warn("generated a payment key; back it up — payments to this server are spendable only with it", "path", path)
	return text, nil
}

// readKeyFile reads a key file; a missing one is fs.ErrNotExist.
func readKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("reading payment key: %w", err)
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return "", fmt.Errorf("payment key %s is empty (restore it from your backup)", path)
	}
	return text, nil
}

// createFileOnce atomically creates path with data and mode, durably
// (file and directory synced), failing with fs.ErrExist if path exists.
func createFileOnce(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, keyTempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// link, unlike rename, never replaces an existing file.
	if err = os.Link(tmp, path); err != nil {
		return err
	}
	_ = os.Remove(tmp)
	return syncDir(dir)
}

// syncDir makes the entries created or removed in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// maxSkips bounds the consecutive child indexes skipped for one address;
// each is skipped with probability about 1 in 2,400.
const maxSkips = 64

// next derives the first usable payment address from the indexes take
// returns: it skips an invalid BIP32 child (p < 2^-127) and an address
// btcd cannot look up (internal/addrsafe), whose payment the server
// could never confirm. It returns the index used.
func (p *payee) next(take func() (uint64, error)) (uint32, string, error) {
	for range maxSkips {
		i, err := take()
		if err != nil {
			return 0, "", err
		}
		if i >= hdkeychain.HardenedKeyStart {
			return 0, "", errors.New("payment address indexes exhausted: configure a new payment key")
		}
		if a, ok := p.address(uint32(i)); ok {
			return uint32(i), a, nil
		}
	}
	return 0, "", errors.New("cannot derive a usable payment address")
}

// address is the P2PKH address of child i (non-hardened), if it is
// usable: a valid child whose address btcd can look up.
func (p *payee) address(i uint32) (string, bool) {
	c, err := p.pub.Derive(i)
	if err != nil {
		return "", false
	}
	a, err := c.Address(p.params)
	if err != nil || !addrsafe.Queryable(a.Hash160()[:]) {
		return "", false
	}
	return a.EncodeAddress(), true
}

// outpoint names a payment output.
type outpoint struct {
	TxID  string `json:"txid"`
	Index uint32 `json:"index"`
}

func (o outpoint) key() []byte { return []byte(fmt.Sprintf("o/%s:%d", o.TxID, o.Index)) }

// payment is an output paying a quote's address.
type payment struct {
	outpoint
	value int64
	// confirmed: it has the confirmations the server requires.
	confirmed bool
}

// payments lists the outputs paying addr, confirmed or not; confirmed
// marks those with at least minConf confirmations (0: the mempool
// counts).
func payments(ctx context.Context, c Chain, addr string, minConf int) ([]payment, error) {
	a, err := address.DecodeAddress(addr, c.Params())
	if err != nil {
		return nil, fmt.Errorf("decoding quote address: %w", err)
	}
	script, err := txscript.PayToAddrScript(a)
	if err != nil {
		return nil, err
	}
	txs, err := c.AddressTxs(ctx, a)
	if err != nil {
		return nil, err
	}
	var tipHeight int32
	if minConf > 0 {
		tip, err := c.Tip(ctx)
		if err != nil {
			return nil, err
		}
		tipHeight = tip.Height
	}
	var out []payment
	for _, tx := range txs {
		ok := minConf <= 0
		if !ok && tx.Confirmed() {
			ok = int(tipHeight-tx.Height)+1 >= minConf
		}
		id := tx.Hash().String()
		for i, o := range tx.MsgTx.TxOut {
			if bytes.Equal(o.PkScript, script) && o.Value > 0 {
				out = append(out, payment{outpoint: outpoint{TxID: id, Index: uint32(i)}, value: o.Value, confirmed: ok})
			}
		}
	}
	return out, nil
}
