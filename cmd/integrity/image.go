package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/integrity-sys/integrity/cmd/integrity/internal/rpc"
	"github.com/integrity-sys/integrity/cmd/integrity/internal/system"
)

func newImageCmds(a *app) *cobra.Command {
	img := &cobra.Command{
		Use:   "image",
		Short: "Mountable images: folders packed into one blob, hosted by image servers",
		Long: `A mountable image is a folder tree packed into one blob — encrypted with
the keys of the folder it is mounted at, or public — that image servers
host for a fee. The chain only holds its hash and servers. A folder with an
image shows it like any folder; changes made inside it are committed on top
(the image itself stays as it is) until ` + "`integrity image update`" + ` folds them
into a new version. docs/IMAGE-SERVER.md, docs/PROTOCOL.md.`,
	}
	var servers []string
	var public bool
	var days int
	create := &cobra.Command{
		Use:   "create LOCALDIR [PATH]",
		Short: "Pack a folder of this machine, host it on image servers and mount it at PATH",
		Long: `Pack LOCALDIR into an image for the folder PATH of your System (default
/<name of LOCALDIR>; created if needed, and empty), pay the image servers
to host it, upload it (to the first server; the others get it forwarded
when they can) and mount it at PATH. Prints the image's reference, which
` + "`integrity image mount`" + ` takes. --public leaves it unencrypted: anyone
may mount it.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			local, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			p := "/" + filepath.Base(local)
			if len(args) == 2 {
				p = args[1]
			}
			var res system.ImageResult
			err = a.imageCall(cmd.Context(), "image.create", system.ImageArgs{Local: local, Path: p, Servers: servers, Public: public, Days: days}, &res)
			if err != nil {
				return err
			}
			printImage(a, "created and mounted", res)
			return nil
		},
	}
	create.Flags().StringSliceVar(&servers, "server", nil, "image server URL (repeat for several; default: `integrity image servers`)")
	create.Flags().BoolVar(&public, "public", false, "leave the image unencrypted: anyone may mount it")
	create.Flags().IntVar(&days, "days", 0, "days of hosting to buy (default: each server's minimum)")

	var mservers []string
	mount := &cobra.Command{
		Use:   "mount IMAGE PATH",
		Short: "Mount an image at PATH: by reference, hash, or the address of a published folder with one",
		Long: `Mount an image at the folder PATH (created if needed, and empty). IMAGE is
the reference ` + "`integrity image create`" + ` printed, a bare SHA-256 hash of a
public image (downloaded whole and checked, to read its root), or the
address of someone's published folder whose (public) image to mount. The
download checks every byte; a server that fails or serves wrong bytes is
skipped and reported.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ImageResult
			if err := a.imageCall(cmd.Context(), "image.mount", system.ImageArgs{Image: args[0], Path: args[1], Servers: mservers}, &res); err != nil {
				return err
			}
			printImage(a, "mounted", res)
			return nil
		},
	}
	mount.Flags().StringSliceVar(&mservers, "server", nil, "image server URL (repeat for several; default: `integrity image servers`)")

	unmount := &cobra.Command{
		Use:   "unmount PATH",
		Short: "Unmount the image at PATH (the folder is empty again; the image stays on its servers)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ImageResult
			if err := a.call(cmd.Context(), "image.unmount", system.ImageArgs{Path: args[0]}, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "unmounted %s from %s\n", res.Hash, res.Path)
			return nil
		},
	}
	var keep bool
	update := &cobra.Command{
		Use:   "update PATH",
		Short: "Re-image PATH: fold the changes made inside it into a new version on its servers",
		Long: `Re-image the folder PATH (paper 4.a–e): pack what it shows — the image
with your changes on top — into a new version that keeps every file at its
node, send each server a diff signed with the folder's key, check the new
hash they return, put it on chain, and tell the servers they may stop
hosting the old version (unless --keep-old).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ImageResult
			if err := a.imageCall(cmd.Context(), "image.update", system.ImageArgs{Path: args[0], Keep: keep}, &res); err != nil {
				return err
			}
			printImage(a, "updated", res)
			if len(res.Released) > 0 {
				fmt.Fprintf(a.out, "released:  the old version on %s\n", strings.Join(res.Released, ", "))
			}
			return nil
		},
	}
	update.Flags().BoolVar(&keep, "keep-old", false, "keep paying for the old version on the servers")

	info := &cobra.Command{
		Use:   "info PATH",
		Short: "Show the image mounted at PATH: reference, servers, changes not yet folded in",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ImageResult
			if err := a.call(cmd.Context(), "image.info", system.ImageArgs{Path: args[0]}, &res); err != nil {
				return err
			}
			printImage(a, "mounted", res)
			fmt.Fprintf(a.out, "changes:   %d not yet in the image\n", res.Overlay)
			for u, why := range res.Skipped {
				fmt.Fprintf(a.out, "skipped:   %s (%s)\n", u, why)
			}
			return nil
		},
	}
	var clearServers bool
	srv := &cobra.Command{
		Use:   "servers [URL...]",
		Short: "Show or set your System's default image servers (they also hold files over 1 MiB)",
		Long: `Without arguments, show your System's default image servers; with URLs,
set them (--clear removes them). They are kept in your System (an extended
attribute of "/"), so every device of yours uses them: new images are
hosted there, and files over 1 MiB are uploaded there and read from there
on devices that do not have them.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Servers []string `json:"servers"`
			}
			set := len(args) > 0 || clearServers
			if err := a.call(cmd.Context(), "image.servers", system.ImageArgs{Servers: args, Set: set}, &res); err != nil {
				return err
			}
			if len(res.Servers) == 0 {
				fmt.Fprintln(a.out, "no image servers")
			}
			for _, u := range res.Servers {
				fmt.Fprintln(a.out, u)
			}
			return nil
		},
	}
	srv.Flags().BoolVar(&clearServers, "clear", false, "remove the default image servers")
	img.AddCommand(create, mount, unmount, update, info, srv)
	return img
}

func printImage(a *app, what string, r system.ImageResult) {
	vis := "private"
	if r.Public {
		vis = "public"
	}
	fmt.Fprintf(a.out, "%s %s at %s\nreference: %s\nhash:      %s (%d bytes, %s)\nservers:   %s\n",
		what, vis+" image", r.Path, r.Ref, r.Hash, r.Size, vis, strings.Join(r.Servers, ", "))
}

// imageCall runs a long image operation, drawing its progress on a
// terminal from image.progress meanwhile.
func (a *app) imageCall(ctx context.Context, method string, args system.ImageArgs, res *system.ImageResult) error {
	c, done, err := a.caller(ctx)
	if err != nil {
		return err
	}
	defer done()
	var id [8]byte
	_, _ = rand.Read(id[:])
	args.Op = hex.EncodeToString(id[:])
	stop := make(chan struct{})
	drawn := make(chan struct{})
	go func() {
		defer close(drawn)
		a.drawImageProgress(ctx, c, args.Op, stop)
	}()
	err = c.Call(ctx, method, args, res)
	close(stop)
	<-drawn
	return err
}

func (a *app) drawImageProgress(ctx context.Context, c rpc.Caller, op string, stop <-chan struct{}) {
	f, ok := a.errOut.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		<-stop
		return
	}
	var bar *progressbar.ProgressBar
	phase := ""
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			if bar != nil {
				_ = bar.Finish()
			}
			return
		case <-tick.C:
		}
		var p system.ImageProgress
		if err := c.Call(ctx, "image.progress", system.ImageArgs{Op: op}, &p); err != nil || p.Phase == "waiting" {
			continue
		}
		if bar == nil || p.Phase != phase {
			if bar != nil {
				_ = bar.Finish()
			}
			phase = p.Phase
			total := p.Total
			if total <= 0 {
				total = -1
			}
			bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(phase),
				progressbar.OptionShowBytes(true), progressbar.OptionClearOnFinish())
		}
		_ = bar.Set64(p.Done)
	}
}
