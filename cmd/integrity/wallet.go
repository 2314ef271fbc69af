package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/btcsuite/btcd/btcutil/v2"
	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

func newWalletCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wallet",
		Short: "The wallet that pays for this System's transactions",
	}
	addr := &cobra.Command{
		Use:   "address",
		Short: "Print the wallet's receiving address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res system.AddressResult
			if err := a.call(cmd.Context(), "wallet.address", nil, &res); err != nil {
				return err
			}
			fmt.Fprintln(a.out, res.Address)
			return nil
		},
	}
	balance := &cobra.Command{
		Use:   "balance",
		Short: "Print the wallet's balance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var b system.BalanceResult
			if err := a.call(cmd.Context(), "wallet.balance", nil, &b); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "confirmed:   %s\nunconfirmed: %s\nimmature:    %s\n",
				btcutil.Amount(b.Confirmed), btcutil.Amount(b.Unconfirmed), btcutil.Amount(b.Immature))
			return nil
		},
	}
	send := &cobra.Command{
		Use:   "send ADDRESS AMOUNT",
		Short: "Send AMOUNT (in BTC, or in satoshis with a 'sat' suffix) to ADDRESS",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			amt, err := parseAmount(args[1])
			if err != nil {
				return err
			}
			var res system.SendResult
			if err := a.call(cmd.Context(), "wallet.send", system.SendArgs{Address: args[0], Amount: amt}, &res); err != nil {
				return err
			}
			fmt.Fprintln(a.out, res.TxID)
			return nil
		},
	}
	cmd.AddCommand(addr, balance, send)
	return cmd
}

// parseAmount reads "0.5" (BTC) or "50000sat".
func parseAmount(s string) (int64, error) {
	if n, ok := strings.CutSuffix(s, "sat"); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v <= 0 {
			return 0, fmt.Errorf("invalid amount %q: want a positive whole number of satoshis", s)
		}
		return v, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || f > 21e6 {
		return 0, fmt.Errorf("invalid amount %q: want BTC such as 0.001, or satoshis such as 1000sat", s)
	}
	amt, err := btcutil.NewAmount(f)
	if err != nil {
		return 0, fmt.Errorf("invalid amount %q: %w", s, err)
	}
	return int64(amt), nil
}
