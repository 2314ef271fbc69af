package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

func newShareCmds(a *app) []*cobra.Command {
	var write bool
	shareCmd := &cobra.Command{
		Use:   "share PATH RECIPIENT",
		Short: "Share a folder with another user (read-only, or --write)",
		Long: `Share a folder (or file) of your System with another user: its keys are
encrypted under an ECDH secret between your primary key pair and theirs and
sent to their inbox on chain. Their agent shows it at
~/integrity/shared/<you>/<name>. RECIPIENT is a contact name
(` + "`integrity contacts add`" + `) or their primary public key (` + "`integrity whoami`" + `).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ShareInfo
			if err := a.call(cmd.Context(), "share.share", system.ShareArgs{Path: args[0], To: args[1], Write: write}, &res); err != nil {
				return err
			}
			mode := "read-only"
			if res.Write {
				mode = "read-write"
			}
			fmt.Fprintf(a.out, "shared %s with %s (%s)\n", res.Path, res.With, mode)
			return nil
		},
	}
	shareCmd.Flags().BoolVar(&write, "write", false, "let them change it too")

	unshare := &cobra.Command{
		Use:   "unshare PATH RECIPIENT",
		Short: "Revoke a share: the folder moves onto fresh keys; the others get the new keys",
		Long: `Revoke RECIPIENT's access to PATH. The folder is re-created on fresh keys
(every file re-committed), the remaining recipients are sent the new keys,
and RECIPIENT a notice. What they could read before stays readable to them;
nothing written afterwards is.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Kept int `json:"kept"`
			}
			if err := a.call(cmd.Context(), "share.unshare", system.ShareArgs{Path: args[0], To: args[1]}, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "revoked; %s is on new keys, shared again with %d other(s)\n", args[0], res.Kept)
			return nil
		},
	}
	var pubWrite bool
	publish := &cobra.Command{
		Use:   "publish PATH",
		Short: "Publish a folder: its keys in the clear at its address, for anyone to open",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Address string `json:"address"`
			}
			if err := a.call(cmd.Context(), "share.publish", system.ShareArgs{Path: args[0], Write: pubWrite}, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "published %s: anyone can `integrity open %s`\n", args[0], res.Address)
			return nil
		},
	}
	publish.Flags().BoolVar(&pubWrite, "write", false, "publish the write key too: anyone may change it")
	open := &cobra.Command{
		Use:   "open ADDRESS",
		Short: "Open a published folder: it appears at ~/integrity/public/<address>",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Path string `json:"path"`
			}
			if err := a.call(cmd.Context(), "share.open", system.ShareArgs{Address: args[0]}, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "opened at %s\n", res.Path)
			return nil
		},
	}
	var asJSON bool
	shares := &cobra.Command{
		Use:   "shares",
		Short: "What you shared, with whom and how; what was shared with you",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var l system.ShareList
			if err := a.call(cmd.Context(), "share.list", nil, &l); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.out).Encode(l)
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			mode := func(write bool) string {
				if write {
					return "read-write"
				}
				return "read-only"
			}
			fmt.Fprintln(w, "SHARED BY YOU\t\t\t")
			for _, s := range l.Shared {
				fmt.Fprintf(w, "  %s\twith %s\t%s\t%s\n", s.Path, s.With, mode(s.Write), s.Sent.Local().Format(time.DateTime))
			}
			for _, s := range l.Published {
				fmt.Fprintf(w, "  %s\tpublished\t%s\t%s\n", s.Path, mode(s.Write), s.Sent.Local().Format(time.DateTime))
			}
			fmt.Fprintln(w, "SHARED WITH YOU\t\t\t")
			for _, s := range l.Received {
				fmt.Fprintf(w, "  %s\tfrom %s\t%s\t%s\n", s.Path, s.With, mode(s.Write), s.Sent.Local().Format(time.DateTime))
			}
			for _, p := range l.Opened {
				fmt.Fprintf(w, "  /public/%s\tpublished\t\t\n", p)
			}
			return w.Flush()
		},
	}
	shares.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	contacts := &cobra.Command{Use: "contacts", Short: "Names for other users' public keys"}
	contacts.AddCommand(&cobra.Command{
		Use:   "add NAME PUBKEY",
		Short: "Name a public key (theirs from `integrity whoami`)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "contacts.add", system.ShareArgs{Name: args[0], PubKey: args[1]}, nil)
		},
	}, &cobra.Command{
		Use:   "ls",
		Short: "List contacts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cs []system.Contact
			if err := a.call(cmd.Context(), "contacts.ls", nil, &cs); err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			for _, c := range cs {
				fmt.Fprintf(w, "%s\t%s\n", c.Name, c.PubKey)
			}
			return w.Flush()
		},
	})
	return []*cobra.Command{shareCmd, unshare, publish, open, shares, contacts}
}
