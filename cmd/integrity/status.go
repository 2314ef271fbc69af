package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil/v2"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

// Status is what `integrity status` shows.
type Status struct {
	Agent  *AgentStatus         `json:"agent,omitempty"`
	Chain  system.ChainStatus   `json:"chain"`
	Tree   system.TreeStatus    `json:"tree"`
	Wallet system.BalanceResult `json:"wallet"`
	// Images: the earliest hosting end of the images this device knows
	// (from what the agent last learnt; no server is asked).
	Images *system.ImageHostingStatus `json:"images,omitempty"`
}

func (a *app) runStatus(ctx context.Context, asJSON bool) error {
	d, err := a.dir()
	if err != nil {
		return err
	}
	var st Status
	var c rpc.Caller
	if cl, err := rpc.Dial(d.Socket(), system.Codes()); err == nil {
		defer cl.Close()
		var as AgentStatus
		if err := cl.Call(ctx, "agent.status", nil, &as); err != nil {
			return err
		}
		st.Agent = &as
		c = cl
	} else {
		caller, done, err := a.caller(ctx)
		if err != nil {
			return err
		}
		defer done()
		c = caller
	}
	if err := c.Call(ctx, "chain.status", nil, &st.Chain); err != nil {
		return err
	}
	if err := c.Call(ctx, "fs.status", nil, &st.Tree); err != nil {
		return err
	}
	if err := c.Call(ctx, "wallet.balance", nil, &st.Wallet); err != nil {
		return err
	}
	var img system.ImageHostingStatus
	if err := c.Call(ctx, "image.hosting", nil, &img); err == nil && img.Mounted > 0 {
		st.Images = &img
	} // else an older agent, or no images: no line
	if asJSON {
		return json.NewEncoder(a.out).Encode(st)
	}
	switch {
	case st.Agent == nil:
		fmt.Fprintln(a.out, "agent:      not running (`integrity mount` starts it)")
	case st.Agent.MountPoint == "":
		fmt.Fprintf(a.out, "agent:      pid %d, not mounted\n", st.Agent.PID)
	default:
		mode := "read-write"
		if st.Agent.ReadOnly {
			mode = "read-only"
		}
		fmt.Fprintf(a.out, "agent:      pid %d\nmounted:    %s (%s)\n", st.Agent.PID, st.Agent.MountPoint, mode)
	}
	fmt.Fprintf(a.out, "chain:      %s %s (%s), tip %d, mempool %d\n", st.Chain.Backend, st.Chain.Network, st.Chain.Endpoint, st.Chain.Height, st.Chain.MempoolSize)
	if st.Tree.Open {
		fmt.Fprintf(a.out, "tree:       %d nodes, %d with changes not yet committed\n", st.Tree.Nodes, st.Tree.Pending)
		if !st.Tree.LastSync.IsZero() {
			fmt.Fprintf(a.out, "last sync:  %s ago\n", time.Since(st.Tree.LastSync).Round(time.Second))
		}
	}
	if im := st.Images; im != nil {
		if im.Until.IsZero() {
			fmt.Fprintf(a.out, "images:     %d mounted; hosting ends unknown (see `integrity image info PATH`)\n", im.Mounted)
		} else {
			when := "ends first on"
			if !im.Until.After(time.Now()) {
				when = "ENDED on"
			}
			fmt.Fprintf(a.out, "images:     %d mounted; hosting %s %s at %s (renew: integrity image renew %s)\n",
				im.Mounted, when, im.Until.Local().Format(time.DateOnly), im.Server, im.Path)
		}
	}
	fmt.Fprintf(a.out, "wallet:     %s spendable, %s immature\n", btcutil.Amount(st.Wallet.Confirmed+st.Wallet.Unconfirmed), btcutil.Amount(st.Wallet.Immature))
	if st.Tree.NoFunds != "" {
		fmt.Fprintf(a.out, "WARNING:    writes fail with ENOSPC: the wallet cannot pay for commits (%s); fund %s\n", st.Tree.NoFunds, "`integrity wallet address`")
	}
	return nil
}
