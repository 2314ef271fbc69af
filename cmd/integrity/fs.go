package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

func newFSCmds(a *app) []*cobra.Command {
	var long, asJSON bool
	ls := &cobra.Command{
		Use:   "ls [PATH]",
		Short: "List a folder of your System (no mount needed)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 1 {
				p = args[0]
			}
			var out []system.FileInfo
			if err := a.call(cmd.Context(), "fs.ls", system.PathArgs{Path: p}, &out); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.out).Encode(out)
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 1, ' ', 0)
			for _, f := range out {
				name := f.Name
				if f.Kind == "dir" {
					name += "/"
				}
				if long {
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", kindChar(f.Kind)+fs.FileMode(f.Mode).Perm().String()[1:], f.Kind, f.Size, f.Mtime.Local().Format("2006-01-02 15:04"), name)
				} else {
					fmt.Fprintln(w, name)
				}
			}
			return w.Flush()
		},
	}
	ls.Flags().BoolVarP(&long, "long", "l", false, "mode, kind, size and modification time")
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var rev int
	cat := &cobra.Command{
		Use:   "cat PATH",
		Short: "Print a file (or, with --rev, one of its earlier revisions)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.CatResult
			if err := a.call(cmd.Context(), "fs.cat", system.PathArgs{Path: args[0], Rev: rev}, &res); err != nil {
				return err
			}
			_, err := a.out.Write(res.Data)
			return err
		},
	}
	cat.Flags().IntVar(&rev, "rev", 0, "revision number (see `integrity log`)")

	var putRec bool
	put := &cobra.Command{
		Use:   "put LOCALFILE PATH",
		Short: "Store a local file (or, with -r, a folder) in your System, committed before the command returns",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			local, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			var fi system.FileInfo
			if err := a.call(cmd.Context(), "fs.put", system.PathArgs{Path: args[1], Local: local, Recursive: putRec}, &fi); err != nil {
				return err
			}
			fmt.Fprintf(a.errOut, "stored %s (%d bytes)\n", args[1], fi.Size)
			return nil
		},
	}
	put.Flags().BoolVarP(&putRec, "recursive", "r", false, "copy a local folder, keeping modes, times and symlinks")
	var getRev int
	var getRec bool
	get := &cobra.Command{
		Use:   "get PATH LOCALFILE",
		Short: "Copy a file of your System to a local file",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			local, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			return a.call(cmd.Context(), "fs.get", system.PathArgs{Path: args[0], Local: local, Rev: getRev, Recursive: getRec}, nil)
		},
	}
	get.Flags().IntVar(&getRev, "rev", 0, "revision number")
	get.Flags().BoolVarP(&getRec, "recursive", "r", false, "copy a folder to a local directory")

	var parents bool
	mkdir := &cobra.Command{
		Use:   "mkdir PATH",
		Short: "Create a folder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "fs.mkdir", system.PathArgs{Path: args[0], Parents: parents}, nil)
		},
	}
	mkdir.Flags().BoolVarP(&parents, "parents", "p", false, "create missing parents, no error if it exists")

	var recursive bool
	rm := &cobra.Command{
		Use:   "rm PATH",
		Short: "Remove a file or folder (its history stays on chain)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "fs.rm", system.PathArgs{Path: args[0], Recursive: recursive}, nil)
		},
	}
	rm.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove folders and their contents")

	mv := &cobra.Command{
		Use:   "mv SRC DST",
		Short: "Move or rename (content and history move with it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "fs.mv", system.PathArgs{Path: args[0], To: args[1]}, nil)
		},
	}

	var logJSON bool
	logCmd := &cobra.Command{
		Use:   "log PATH",
		Short: "List every revision of a file or folder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var revs []system.LogEntry
			if err := a.call(cmd.Context(), "fs.log", system.PathArgs{Path: args[0]}, &revs); err != nil {
				return err
			}
			if logJSON {
				return json.NewEncoder(a.out).Encode(revs)
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			for _, r := range revs {
				h := "pending"
				if r.Height >= 0 {
					h = fmt.Sprintf("block %d", r.Height)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d bytes\t%s\t%s\n", r.Rev, r.Time.Local().Format(time.DateTime), h, r.Size, r.TxID[:16], r.Summary)
			}
			return w.Flush()
		},
	}
	logCmd.Flags().BoolVar(&logJSON, "json", false, "print JSON")

	var restoreRev int
	restore := &cobra.Command{
		Use:   "restore PATH --rev N",
		Short: "Make revision N current again (as a new revision: history only grows)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if restoreRev < 1 {
				return fmt.Errorf("restore needs --rev N (see `integrity log %s`)", args[0])
			}
			return a.call(cmd.Context(), "fs.restore", system.PathArgs{Path: args[0], Rev: restoreRev}, nil)
		},
	}
	restore.Flags().IntVar(&restoreRev, "rev", 0, "revision number")
	return []*cobra.Command{ls, cat, put, get, mkdir, rm, mv, logCmd, restore}
}

func kindChar(kind string) string {
	switch kind {
	case "dir":
		return "d"
	case "symlink":
		return "l"
	}
	return "-"
}
