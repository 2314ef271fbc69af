package vm

import (
	"context"
	"log/slog"
	"strings"

	"github.com/tetratelabs/wazero"
)

// TxRef names one transaction of an address.
type TxRef struct {
	// TxID in the usual display byte order (as block explorers print it).
	TxID   [32]byte
	Height int32 // -1 while unconfirmed
}

// Balance of an address, in satoshis.
type Balance struct {
	Confirmed   int64
	Unconfirmed int64
}

// Blockchain is the paper's Blockchain Data Interface as the guest sees it
// (vm/hostdev adapts chain.Backend). Addresses are in the chain's own text
// encoding; errors wrap ErrNoSuch, ErrBadInput, ErrRefusedTx,
// ErrDoubleSpend or ErrOffline.
type Blockchain interface {
	AddressTxs(ctx context.Context, addr string) ([]TxRef, error)
	Balance(ctx context.Context, addr string) (Balance, error)
	// TxAddresses lists the addresses a transaction pays or spends from.
	TxAddresses(ctx context.Context, txid [32]byte) ([]string, error)
	// GetTx returns a transaction in wire encoding.
	GetTx(ctx context.Context, txid [32]byte) ([]byte, error)
	// Broadcast submits a transaction in wire encoding.
	Broadcast(ctx context.Context, raw []byte) ([32]byte, error)
	// TipHeight is the height of the best block.
	TipHeight(ctx context.Context) (int32, error)
}

// Input limits of the blockchain module.
const (
	maxAddress = 128     // longer than any Bitcoin address encoding
	maxRawTx   = 1 << 20 // a standard transaction is at most 400 kB
)

func blockchainModule(r wazero.Runtime, dev Blockchain, log *slog.Logger) wazero.HostModuleBuilder {
	if dev == nil {
		dev = noBlockchain{}
	}
	addr := func(g memory, p, n uint32) (string, Code) {
		a, c := g.str(p, n, maxAddress)
		if c == OK && (a == "" || strings.ContainsAny(a, " \t\r\n")) {
			c = ErrInvalid
		}
		return a, c
	}
	return export(r.NewHostModuleBuilder("blockchain"), "blockchain", log, []hostFunc{
		// address_txs(addr, addr_len, out, out_cap, out_len) → records of
		// txid[32] ‖ height i32le.
		{"address_txs", 5, func(ctx context.Context, g memory, p []uint32) Code {
			a, c := addr(g, p[0], p[1])
			if c != OK {
				return c
			}
			if !g.writable(p[4], 4) || !g.writable(p[2], p[3]) {
				return ErrFault
			}
			txs, err := dev.AddressTxs(ctx, a)
			if err != nil {
				return codeOf(err)
			}
			out := make([]byte, 0, 36*len(txs))
			for _, t := range txs {
				out = append(out, t.TxID[:]...)
				out = le32(out, uint32(t.Height))
			}
			return g.out(p[2], p[3], p[4], out)
		}},
		// balance(addr, addr_len, out16) → confirmed i64le ‖ unconfirmed i64le.
		{"balance", 3, func(ctx context.Context, g memory, p []uint32) Code {
			a, c := addr(g, p[0], p[1])
			if c != OK {
				return c
			}
			if !g.writable(p[2], 16) {
				return ErrFault
			}
			b, err := dev.Balance(ctx, a)
			if err != nil {
				return codeOf(err)
			}
			return g.put(p[2], le64(le64(nil, uint64(b.Confirmed)), uint64(b.Unconfirmed)))
		}},
		// tx_addresses(txid32, out, out_cap, out_len) → addresses, one per line.
		{"tx_addresses", 4, func(ctx context.Context, g memory, p []uint32) Code {
			id, c := g.fixed(p[0], 32)
			if c != OK {
				return c
			}
			if !g.writable(p[3], 4) || !g.writable(p[1], p[2]) {
				return ErrFault
			}
			addrs, err := dev.TxAddresses(ctx, [32]byte(id))
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[1], p[2], p[3], []byte(strings.Join(addrs, "\n")))
		}},
		// get_tx(txid32, out, out_cap, out_len) → the transaction, wire encoded.
		{"get_tx", 4, func(ctx context.Context, g memory, p []uint32) Code {
			id, c := g.fixed(p[0], 32)
			if c != OK {
				return c
			}
			if !g.writable(p[3], 4) || !g.writable(p[1], p[2]) {
				return ErrFault
			}
			raw, err := dev.GetTx(ctx, [32]byte(id))
			if err != nil {
				return codeOf(err)
			}
			return g.out(p[1], p[2], p[3], raw)
		}},
		// broadcast(tx, tx_len, out_txid32).
		{"broadcast", 3, func(ctx context.Context, g memory, p []uint32) Code {
			raw, c := g.bytes(p[0], p[1], maxRawTx)
			if c != OK {
				return c
			}
			if !g.writable(p[2], 32) {
				return ErrFault
			}
			id, err := dev.Broadcast(ctx, raw)
			if err != nil {
				return codeOf(err)
			}
			return g.put(p[2], id[:])
		}},
		// tip_height(out_u32).
		{"tip_height", 1, func(ctx context.Context, g memory, p []uint32) Code {
			if !g.writable(p[0], 4) {
				return ErrFault
			}
			h, err := dev.TipHeight(ctx)
			if err != nil {
				return codeOf(err)
			}
			return g.putU32(p[0], uint32(h))
		}},
	})
}

// noBlockchain answers a machine booted without a chain.
type noBlockchain struct{}

func (noBlockchain) AddressTxs(context.Context, string) ([]TxRef, error) { return nil, ErrNotSupported }
func (noBlockchain) Balance(context.Context, string) (Balance, error) {
	return Balance{}, ErrNotSupported
}
func (noBlockchain) TxAddresses(context.Context, [32]byte) ([]string, error) {
	return nil, ErrNotSupported
}
func (noBlockchain) GetTx(context.Context, [32]byte) ([]byte, error) { return nil, ErrNotSupported }
func (noBlockchain) Broadcast(context.Context, []byte) ([32]byte, error) {
	return [32]byte{}, ErrNotSupported
}
func (noBlockchain) TipHeight(context.Context) (int32, error) { return 0, ErrNotSupported }
