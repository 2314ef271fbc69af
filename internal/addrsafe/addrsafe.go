// Package addrsafe says whether an address can be looked up on every btcd
// network. btcd v0.26 decodes an address string whose only '1' follows a
// bech32 prefix ("Sb1…" on simnet) as bech32 and fails, so such a P2PKH
// address can never be queried over RPC. integrity generates and allocates
// keys so that their addresses avoid it (about 1 key in 2,400 is skipped).
package addrsafe

import (
	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
)

// Queryable reports whether the P2PKH address with HASH160 h decodes back
// on every network.
func Queryable(h []byte) bool {
	for _, p := range []*chaincfg.Params{&chaincfg.MainNetParams, &chaincfg.TestNet3Params, &chaincfg.RegressionNetParams, &chaincfg.SimNetParams} {
		a, err := address.NewAddressPubKeyHash(h, p)
		if err != nil {
			return false
		}
		if _, err := address.DecodeAddress(a.EncodeAddress(), p); err != nil {
			return false
		}
	}
	return true
}
