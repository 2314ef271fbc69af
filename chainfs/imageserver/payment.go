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
// operator can sweep the payments).
func loadPayee(configured, dataDir string, params *chaincfg.Params, log *slog.Logger) (*payee, error) {
	text := strings.TrimSpace(configured)
	if text == "" {
		path := filepath.Join(dataDir, paymentKeyFile)
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			text = strings.TrimSpace(string(b))
		case errors.Is(err, fs.ErrNotExist):
			seed := make([]byte, 32)
			if _, err := rand.Read(seed); err != nil {
				return nil, fmt.Errorf("payment key: %w", err)
			}
			master, err := hdkeychain.NewMaster(seed, params)
			clear(seed)
			if err != nil {
				return nil, fmt.Errorf("payment key: %w", err)
			}
			text = master.String()
			if err := os.WriteFile(path, []byte(text+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("writing payment key: %w", err)
			}
			log.Warn("generated a payment key; back it up — payments to this server are spendable only with it", "path", path)
		default:
			return nil, fmt.Errorf("reading payment key: %w", err)
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

// address is the P2PKH address of child i (non-hardened).
func (p *payee) address(i uint32) (string, error) {
	c, err := p.pub.Derive(i)
	if err != nil {
		return "", err
	}
	a, err := c.Address(p.params)
	if err != nil {
		return "", err
	}
	return a.EncodeAddress(), nil
}

// outpoint names a payment output.
type outpoint struct {
	TxID  string `json:"txid"`
	Index uint32 `json:"index"`
}

func (o outpoint) key() []byte { return []byte(fmt.Sprintf("o/%s:%d", o.TxID, o.Index)) }

// payments lists the outputs paying addr, with at least minConf
// confirmations (0: the mempool counts).
func payments(ctx context.Context, c Chain, addr string, minConf int) ([]outpoint, []int64, error) {
	a, err := address.DecodeAddress(addr, c.Params())
	if err != nil {
		return nil, nil, fmt.Errorf("decoding quote address: %w", err)
	}
	script, err := txscript.PayToAddrScript(a)
	if err != nil {
		return nil, nil, err
	}
	txs, err := c.AddressTxs(ctx, a)
	if err != nil {
		return nil, nil, err
	}
	var tipHeight int32
	if minConf > 0 {
		tip, err := c.Tip(ctx)
		if err != nil {
			return nil, nil, err
		}
		tipHeight = tip.Height
	}
	var outs []outpoint
	var values []int64
	for _, tx := range txs {
		conf := 0
		if tx.Confirmed() {
			conf = int(tipHeight-tx.Height) + 1
		}
		if minConf > 0 && conf < minConf {
			continue
		}
		id := tx.Hash().String()
		for i, o := range tx.MsgTx.TxOut {
			if bytes.Equal(o.PkScript, script) && o.Value > 0 {
				outs = append(outs, outpoint{TxID: id, Index: uint32(i)})
				values = append(values, o.Value)
			}
		}
	}
	return outs, values, nil
}
