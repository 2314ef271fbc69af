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
	fmt.Fprintf(a.out, "wallet:     %s spendable, %s immature\n", btcutil.Amount(st.Wallet.Confirmed+st.Wallet.Unconfirmed), btcutil.Amount(st.Wallet.Immature))
	if st.Tree.NoFunds != "" {
		fmt.Fprintf(a.out, "WARNING:    writes fail with ENOSPC: the wallet cannot pay for commits (%s); fund %s\n", st.Tree.NoFunds, "`integrity wallet address`")
	}
	return nil
}
