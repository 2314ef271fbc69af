package main

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

func newChainCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chain",
		Short: "Inspect and drive the chain backend",
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the backend, network, tip height and mempool size",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st system.ChainStatus
			if err := a.call(cmd.Context(), "chain.status", nil, &st); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.out).Encode(st)
			}
			fmt.Fprintf(a.out, "backend:  %s (%s)\nnetwork:  %s\ntip:      %d %s (%s)\nmempool:  %d transactions\n",
				st.Backend, st.Endpoint, st.Network, st.Height, st.TipHash, st.TipTime.UTC().Format("2006-01-02 15:04:05Z"), st.MempoolSize)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	mine := &cobra.Command{
		Use:   "mine N",
		Short: "Mine N blocks paying this System's wallet (embedded, regtest and simnet chains only)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return fmt.Errorf("chain mine: %q is not a positive block count", args[0])
			}
			var res system.MineResult
			if err := a.call(cmd.Context(), "chain.mine", system.MineArgs{Blocks: n}, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "mined %d blocks, tip height %d\n", len(res.Hashes), res.Height)
			return nil
		},
	}
	cmd.AddCommand(status, mine)
	return cmd
}
