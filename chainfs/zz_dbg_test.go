package chainfs

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/integrity-sys/integrity/chainfs/addrlog"
	"github.com/integrity-sys/integrity/chainfs/chain/embedded"
)

func TestDbg(t *testing.T) {
	c, err := embedded.Open(embedded.Config{Dir: os.Getenv("CHAIN")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, _ := chainhash.NewHashFromStr(os.Getenv("TX"))
	tx, err := c.GetTx(context.Background(), *h)
	if err != nil {
		t.Fatal(err)
	}
	hh, _ := addrlog.P2PKHHash(tx.MsgTx.TxOut[2].PkScript)
	fmt.Printf("ADDR %x\n", hh[:6])
	if s := os.Getenv("TX2"); s != "" {
		h2, _ := chainhash.NewHashFromStr(s)
		tx2, err := c.GetTx(context.Background(), *h2)
		fmt.Println("TX2", err)
		if err == nil {
			fmt.Println("TX2 height", tx2.Height, "in0", tx2.MsgTx.TxIn[0].PreviousOutPoint)
		}
	}
	tip, _ := c.Tip(context.Background())
	fmt.Println("tip", tip.Height)
}
