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
	var maxPrice int64
	var folder string
	create := &cobra.Command{
		Use:   "create LOCALDIR [PATH] | --folder PATH",
		Short: "Pack a folder of this machine (or, with --folder, of your System), host it on image servers and mount it at PATH",
		Long: `Pack LOCALDIR into an image for the folder PATH of your System (default
/<name of LOCALDIR>; created if needed, and empty), pay the image servers
to host it, upload it (to the first server; the others get it forwarded
when they can) and mount it at PATH. Prints the image's reference, which
` + "`integrity image mount`" + ` takes. --public leaves it unencrypted: anyone
may mount it. Hosting is bought for --days (default: your System's term,
365 days unless ` + "`integrity image settings --days`" + `); a server asking
more than --max-price for one payment is refused before anything is paid.

With --folder PATH (and no LOCALDIR), image the folder PATH of your System
in place: its files become the image, at the same nodes. A folder below
PATH with an image mounted (` + "`integrity image mount REF PATH/song`" + `) is
incorporated by reference — the image names the nested image and its
servers, not its content — so whoever mounts the result downloads the
nested image from its own servers, on its own terms. Fold changes made
inside a nested image first (` + "`integrity image update PATH/song`" + `). A
public image can incorporate only public images; a private one, private
images mounted where they sit (they are sealed for that folder's keys).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if folder != "" {
				if len(args) != 0 {
					return fmt.Errorf("image create --folder %s takes no LOCALDIR", folder)
				}
				return nil
			}
			return cobra.RangeArgs(1, 2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if folder != "" {
				if !strings.HasPrefix(folder, "/") {
					return fmt.Errorf("--folder %s: give the folder's path in your System, from /", folder)
				}
				var res system.ImageResult
				err := a.imageCall(cmd.Context(), "image.create", system.ImageArgs{Path: folder, InPlace: true, Servers: servers, Public: public, Days: days, MaxPrice: maxPrice}, &res)
				if err != nil {
					return err
				}
				printImage(a, "created and mounted", res)
				return nil
			}
			local, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			p := "/" + filepath.Base(local)
			if len(args) == 2 {
				p = args[1]
			}
			var res system.ImageResult
			err = a.imageCall(cmd.Context(), "image.create", system.ImageArgs{Local: local, Path: p, Servers: servers, Public: public, Days: days, MaxPrice: maxPrice}, &res)
			if err != nil {
				return err
			}
			printImage(a, "created and mounted", res)
			return nil
		},
	}
	create.Flags().StringSliceVar(&servers, "server", nil, "image server URL (repeat for several; default: `integrity image servers`)")
	create.Flags().BoolVar(&public, "public", false, "leave the image unencrypted: anyone may mount it")
	create.Flags().IntVar(&days, "days", 0, "days of hosting to buy (default: your System's term, see `integrity image settings`)")
	create.Flags().Int64Var(&maxPrice, "max-price", 0, maxPriceUsage)
	create.Flags().StringVar(&folder, "folder", "", "image this folder of your System in place (instead of LOCALDIR), nesting the images mounted below it")

	var mservers []string
	var mmaxPrice int64
	mount := &cobra.Command{
		Use:   "mount IMAGE PATH",
		Short: "Mount an image at PATH: by reference, hash, or the address of a published folder with one",
		Long: `Mount an image at the folder PATH (created if needed, and empty). IMAGE is
the reference ` + "`integrity image create`" + ` printed, a bare SHA-256 hash of a
public image (downloaded whole and checked, to read its root), or the
address of someone's published folder whose (public) image to mount. The
download checks every byte; a server that fails or serves wrong bytes is
skipped and reported. Servers that charge for downloads are paid at most
--max-price per payment; afterwards, reads follow your System's cap.

One image per folder: a folder that holds one is refused (unmount it
first). PATH may be a new folder inside another image's folder: the mount
is a change on top of that image, which ` + "`integrity image update`" + ` of its
folder then packs as a nested image (by reference). To incorporate images
into a folder that is not an image yet, mount them below it and image it
with ` + "`integrity image create --folder`" + `.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ImageResult
			if err := a.imageCall(cmd.Context(), "image.mount", system.ImageArgs{Image: args[0], Path: args[1], Servers: mservers, MaxPrice: mmaxPrice}, &res); err != nil {
				return err
			}
			printImage(a, "mounted", res)
			return nil
		},
	}
	mount.Flags().StringSliceVar(&mservers, "server", nil, "image server URL (repeat for several; default: `integrity image servers`)")
	mount.Flags().Int64Var(&mmaxPrice, "max-price", 0, maxPriceUsage)

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
	var udays int
	var umaxPrice int64
	update := &cobra.Command{
		Use:   "update PATH",
		Short: "Re-image PATH: fold the changes made inside it into a new version on its servers",
		Long: `Re-image the folder PATH (paper 4.a–e): pack what it shows — the image
with your changes on top — into a new version that keeps every file at its
node, send each server a diff signed with the folder's key, check the new
hash they return, put it on chain, and tell the servers they may stop
hosting the old version (unless --keep-old). A server that cannot patch
gets the new version uploaded whole, for --days (default: your System's
term).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res system.ImageResult
			if err := a.imageCall(cmd.Context(), "image.update", system.ImageArgs{Path: args[0], Keep: keep, Days: udays, MaxPrice: umaxPrice}, &res); err != nil {
				return err
			}
			printImage(a, "updated", res)
			if len(res.Uploaded) > 0 {
				fmt.Fprintf(a.out, "uploaded:  the new version whole to %s (patch refused), for %d days\n", strings.Join(res.Uploaded, ", "), res.Days)
			}
			if len(res.Released) > 0 {
				fmt.Fprintf(a.out, "released:  the old version on %s\n", strings.Join(res.Released, ", "))
			}
			return nil
		},
	}
	update.Flags().BoolVar(&keep, "keep-old", false, "keep paying for the old version on the servers")
	update.Flags().IntVar(&udays, "days", 0, "days of hosting to buy where the new version is uploaded whole (default: your System's term)")
	update.Flags().Int64Var(&umaxPrice, "max-price", 0, maxPriceUsage)

	var rdays int
	var rmaxPrice int64
	var rblobs bool
	renew := &cobra.Command{
		Use:   "renew PATH | --blobs",
		Short: "Renew the hosting of the image at PATH on each of its servers, without uploading it again",
		Long: `Buy more hosting of the image mounted at the folder PATH from each of its
servers: per server a paid extension (quote, pay, extend) of the hold
registered to the folder's key, adding --days (default: your System's
term, fitted to the server's bounds) to its end — the image is not sent
again. Where that key holds nothing on a server (a public image someone
else uploaded), the payment extends the server's anonymous hold: anyone
may pay for hosting; only the owner may change or release the image. Prints each
server's new hosting end, or why it failed; one failure does not stop the
others, and the command fails only if no server renewed. A server asking
more than --max-price for one payment is refused before anything is
paid. Images nested in it have their own servers: renew them at their
folders. ` + "`integrity status`" + ` shows the earliest hosting end of your images.

With --blobs (and no PATH), renew instead the blobs of your files over
1 MiB on each of your System's image servers (` + "`integrity image servers`" + `),
each for its owner key; prints per server how many were renewed and names
the files that were not.

The agent renews both by itself: twice a day it extends, for your System's
term, whatever of your images and large files a server hosts for less than
30 more days (` + "`integrity image settings --auto-renew=false`" + ` turns that off).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if rblobs {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if rblobs {
				return a.renewBlobs(cmd.Context(), rdays, rmaxPrice)
			}
			var res system.ImageResult
			if err := a.imageCall(cmd.Context(), "image.renew", system.ImageArgs{Path: args[0], Days: rdays, MaxPrice: rmaxPrice}, &res); err != nil {
				return err
			}
			ok := 0
			for _, h := range res.Hosting {
				if h.Err != "" {
					fmt.Fprintf(a.out, "failed:    %s: %s\n", h.Server, h.Err)
					continue
				}
				ok++
				fmt.Fprintf(a.out, "renewed:   %s until %s\n", h.Server, h.Until.Local().Format(time.DateOnly))
			}
			if ok == 0 {
				return fmt.Errorf("renewing %s failed on every server (%d)", res.Path, len(res.Hosting))
			}
			fmt.Fprintf(a.out, "renewed %s on %d of %d servers, %d days each\n", res.Path, ok, len(res.Hosting), res.Days)
			return nil
		},
	}
	renew.Flags().IntVar(&rdays, "days", 0, "days of hosting to add (default: your System's term, see `integrity image settings`)")
	renew.Flags().Int64Var(&rmaxPrice, "max-price", 0, maxPriceUsage)
	renew.Flags().BoolVar(&rblobs, "blobs", false, "renew your large files' blobs on your System's image servers instead of an image")

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
	var setMaxPrice int64
	var setDays int
	var setAutoRenew bool
	settings := &cobra.Command{
		Use:   "settings [--max-price SATS] [--days DAYS] [--auto-renew=false]",
		Short: "Show or set your System's image spending cap and hosting term",
		Long: `Without flags, show your System's image settings; with flags, set them
(0 returns one to its default). They are kept in your System, like its
image servers, so every device follows them (from its next start).

--max-price caps every payment to an image server made without a command
asking for it — download tickets while you read a mounted image, uploads
of files over 1 MiB — and is the default --max-price of image create,
mount and update. Images name the servers they are read from (a public
image, one nested in it), so this is what stops a hostile server from
asking for your whole wallet. Default 100,000 sat.

--days is the hosting term bought by default: by image create, by image
update where a server gets the new version whole, and for files over
1 MiB. Default 365.

--auto-renew (default true) lets the agent renew, twice a day, the hosting
of your images and files over 1 MiB that ends within 30 days, for the
term above, each payment under the cap above.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var args system.ImageSettingsArgs
			if cmd.Flags().Changed("max-price") {
				args.MaxPrice = &setMaxPrice
			}
			if cmd.Flags().Changed("days") {
				args.Days = &setDays
			}
			if cmd.Flags().Changed("auto-renew") {
				args.AutoRenew = &setAutoRenew
			}
			var res system.ImageSettings
			if err := a.call(cmd.Context(), "image.settings", args, &res); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "max-price: %d sat per payment\ndays:      %d\nauto-renew: %t\n", res.MaxPrice, res.Days, res.AutoRenew)
			return nil
		},
	}
	settings.Flags().Int64Var(&setMaxPrice, "max-price", 0, "most to pay an image server per payment made in the background, in sat (0: the default, 100,000)")
	settings.Flags().IntVar(&setDays, "days", 0, "hosting term bought by default, in days (0: the default, 365)")
	settings.Flags().BoolVar(&setAutoRenew, "auto-renew", true, "let the agent renew hosting that ends within 30 days")
	img.AddCommand(create, mount, unmount, update, renew, info, srv, settings)
	return img
}

// renewBlobs is `image renew --blobs`: it fails only if nothing was
// renewed anywhere.
func (a *app) renewBlobs(ctx context.Context, days int, maxPrice int64) error {
	var res system.BlobRenewResult
	if err := a.imageCall(ctx, "image.renew_blobs", system.ImageArgs{Days: days, MaxPrice: maxPrice}, &res); err != nil {
		return err
	}
	if res.Blobs == 0 {
		fmt.Fprintln(a.out, "no files over 1 MiB: nothing to renew")
		return nil
	}
	ok := 0
	for _, s := range res.Servers {
		for _, f := range s.Failed {
			h := f.Hash
			if len(h) > 16 {
				h = h[:16]
			}
			fmt.Fprintf(a.out, "failed:    %s: %s (%s): %s\n", s.Server, f.Path, h, f.Err)
		}
		if s.Renewed > 0 {
			fmt.Fprintf(a.out, "renewed %d of %d blobs on %s, %d days each (earliest end %s)\n", s.Renewed, res.Blobs, s.Server, res.Days,
				s.Until.Local().Format(time.DateOnly))
		} else {
			fmt.Fprintf(a.out, "renewed 0 of %d blobs on %s\n", res.Blobs, s.Server)
		}
		ok += s.Renewed
	}
	if ok == 0 {
		return fmt.Errorf("renewing %d blobs failed on every server (%d)", res.Blobs, len(res.Servers))
	}
	return nil
}

// maxPriceUsage is the --max-price flag of the image commands.
const maxPriceUsage = "most to pay an image server for one payment, in sat (default: your System's cap, see `integrity image settings`)"

func printImage(a *app, what string, r system.ImageResult) {
	vis := "private"
	if r.Public {
		vis = "public"
	}
	fmt.Fprintf(a.out, "%s %s at %s\nreference: %s\nhash:      %s (%d bytes, %s)\nservers:   %s\n",
		what, vis+" image", r.Path, r.Ref, r.Hash, r.Size, vis, strings.Join(r.Servers, ", "))
	for _, h := range r.Hosting {
		if h.Err != "" {
			fmt.Fprintf(a.out, "hosted:    %s: unknown (%s)\n", h.Server, h.Err)
		} else {
			fmt.Fprintf(a.out, "hosted:    %s until %s\n", h.Server, h.Until.Local().Format(time.DateOnly))
		}
	}
	for _, u := range r.Servers {
		if why, ok := r.Skipped[u]; ok {
			fmt.Fprintf(a.out, "skipped:   %s (%s)\n", u, why)
		}
	}
	for _, n := range r.Nested {
		nv := "private"
		if n.Public {
			nv = "public"
		}
		fmt.Fprintf(a.out, "nested:    %s: %s image %s on %s\n", n.Path, nv, n.Ref, strings.Join(n.Servers, ", "))
	}
}

// imageCall runs a long image operation, drawing its progress on a
// terminal from image.progress meanwhile.
func (a *app) imageCall(ctx context.Context, method string, args system.ImageArgs, res any) error {
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
