package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/internal/e2e"
)

// photoFolder writes the walk-through's folder of this machine: 30 photos.
func photoFolder(t *testing.T) string {
	dir := t.TempDir()
	for i := 1; i <= 30; i++ {
		data := bytes.Repeat([]byte(fmt.Sprintf("photo %02d pixels ", i)), 1500+i)
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("photo%02d.jpg", i)), data, 0o644))
	}
	return dir
}

func field(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.Fields(v)[0]
		}
	}
	return ""
}

func hash32(t *testing.T, s string) [32]byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("hash %q", s)
	}
	return [32]byte(b)
}

// TestImagesEndToEnd is the paper's backups/photos walk-through through
// the CLI, the agent and the mount, with two paid image servers on a btcd
// chain: create (hosted on one, forwarded to the other), mount, delete the
// 23rd photo, another device sees it, re-image (patched on both servers,
// old version released); a public image mounted by another user; refusals
// (wrong key, over the size limit) and a server serving tampered bytes.
func TestImagesEndToEnd(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	s1 := e2e.StartImageServer(t, node.URL, "--policy", "price=10,public-price=0,max-size=64MiB", "--forward", "--forward-local")
	s2 := e2e.StartImageServer(t, node.URL, "--policy", "price=10,public-price=0,max-size=64MiB")
	alice := e2e.NewDevice(t, node.URL)
	pw := newSystem(t, alice, ss, "alice@example.com", "--no-os")
	photos := photoFolder(t)

	out := alice.OK("image", "create", photos, "/backups/photos", "--server", s1.URL, "--server", s2.URL)
	oldHash := hash32(t, field(out, "hash"))
	c1, _ := imageserver.NewClient(s1.URL, nil)
	c2, _ := imageserver.NewClient(s2.URL, nil)
	ctx := context.Background()
	for _, c := range []*imageserver.Client{c1, c2} {
		if ok, err := c.Has(ctx, oldHash); !ok || err != nil {
			t.Fatalf("%s does not host the image: %v", c.URL(), err)
		}
		// Hosting is bought for the default term, not a server's minimum.
		st, err := c.Stat(ctx, oldHash)
		if err != nil || st.HostedUntil.Before(time.Now().Add(364*24*time.Hour)) {
			t.Fatalf("%s hosts the image until %v (%v), want a year", c.URL(), st.HostedUntil, err)
		}
	}
	out = alice.OK("image", "info", "/backups/photos")
	year := time.Now().AddDate(1, 0, 0).Format(time.DateOnly)[:4]
	for _, u := range []string{s1.URL, s2.URL} {
		if !strings.Contains(out, "hosted:    "+u+" until "+year) {
			t.Fatalf("image info does not show the hosting term on %s:\n%s", u, out)
		}
	}

	ma := filepath.Join(t.TempDir(), "alice")
	mountAt(t, alice, ma)
	dir := filepath.Join(ma, "backups", "photos")
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 30 {
		t.Fatalf("mounted image: %d entries, %v", len(ents), err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "photo07.jpg"))
	want, _ := os.ReadFile(filepath.Join(photos, "photo07.jpg"))
	if !bytes.Equal(got, want) {
		t.Fatal("photo07 reads wrong through the mount")
	}
	// Delete the 23rd photo: an OpHide of its index (22) in a commit of
	// the folder /backups/photos; the photo's own node gets no commit
	// (docs/PROTOCOL.md, "Images in the tree").
	must(t, os.Remove(filepath.Join(dir, "photo23.jpg")))
	must(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("trip notes"), 0o644))
	if out := alice.OK("image", "info", "/backups/photos"); !strings.Contains(out, "changes:   2") {
		t.Fatalf("image info:\n%s", out)
	}

	// Another device of Alice's rebuilds it from the chain and the servers.
	alice2 := e2e.NewDevice(t, node.URL)
	alice2.OK("login", "--user", "alice@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	eventually(t, 20*time.Second, "the second device sees the deletion", func() error {
		ls := alice2.OK("ls", "/backups/photos")
		if strings.Contains(ls, "photo23.jpg") || !strings.Contains(ls, "photo24.jpg") || !strings.Contains(ls, "notes.txt") {
			return fmt.Errorf("second device:\n%s", ls)
		}
		return nil
	})

	// Files over 1 MiB go to blobs, uploaded to the System's image
	// servers: another device reads them from there.
	alice.OK("image", "servers", s1.URL, s2.URL)
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(i * 7)
	}
	must(t, os.WriteFile(filepath.Join(ma, "big.bin"), big, 0o644))
	eventually(t, 60*time.Second, "another device reads a large file", func() error {
		r := alice2.Run("", "cat", "/big.bin")
		if r.Code != 0 || r.Stdout != string(big) {
			return fmt.Errorf("exit %d, %d bytes: %s", r.Code, len(r.Stdout), r.Stderr)
		}
		return nil
	})
	// Its blob is hosted for the System's term under an owner key (which
	// may extend or release it), not anonymously for a server's minimum.
	for _, s := range []*e2e.ImageServer{s1, s2} {
		blobs := 0
		files, _ := filepath.Glob(filepath.Join(s.DataDir, "blobs", "*", "*"))
		c, _ := imageserver.NewClient(s.URL, nil)
		for _, f := range files {
			b, err := hex.DecodeString(filepath.Base(f))
			if err != nil || len(b) != 32 {
				continue
			}
			st, err := c.Stat(ctx, [32]byte(b))
			if err != nil || st.Content != imageserver.ContentBlob {
				continue
			}
			blobs++
			if st.Owners != 1 || st.HostedUntil.Before(time.Now().Add(364*24*time.Hour)) {
				t.Fatalf("%s hosts a large file's blob for %d owners until %v", s.URL, st.Owners, st.HostedUntil)
			}
		}
		if blobs == 0 {
			t.Fatalf("%s hosts no blob", s.URL)
		}
	}

	// Re-image: both servers patch their copy; the old version goes.
	out = alice.OK("image", "update", "/backups/photos")
	newHash := hash32(t, field(out, "hash"))
	if newHash == oldHash || !strings.Contains(out, "released:") || strings.Contains(out, "uploaded:") {
		t.Fatalf("image update:\n%s", out)
	}
	for _, c := range []*imageserver.Client{c1, c2} {
		if ok, _ := c.Has(ctx, newHash); !ok {
			t.Fatalf("%s does not host the new version", c.URL())
		}
		// Made by the patch, not a silent upload of the whole image.
		if st, err := c.Stat(ctx, newHash); err != nil || st.Parent != oldHash {
			t.Fatalf("%s: the new version's parent is %x (%v), want the old version %x", c.URL(), st.Parent, err, oldHash)
		}
		if ok, _ := c.Has(ctx, oldHash); ok {
			t.Fatalf("%s still hosts the released version", c.URL())
		}
	}
	if out := alice.OK("image", "info", "/backups/photos"); !strings.Contains(out, "changes:   0") {
		t.Fatalf("after update:\n%s", out)
	}
	eventually(t, 20*time.Second, "the mount shows the updated image", func() error {
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 30 {
			return fmt.Errorf("%d entries, %v", len(ents), err)
		}
		if _, err := os.Stat(filepath.Join(dir, "photo23.jpg")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("photo23: %v", err)
		}
		return nil
	})

	// A patch signed by a key other than the folder's is refused.
	stranger, _ := btcec.NewPrivateKey()
	if _, err := c1.Patch(ctx, imageserver.PatchRequest{Base: newHash, New: oldHash, Delta: []byte{1}, Owner: imageserver.KeySigner(stranger)}); !errors.Is(err, imageserver.ErrNotOwner) {
		t.Fatalf("patch signed by a stranger: %v", err)
	}

	// A public image another user mounts without any of Alice's keys: by
	// reference, by hash, and by the address of the folder she publishes.
	pub := t.TempDir()
	must(t, os.WriteFile(filepath.Join(pub, "readme.txt"), []byte("free for all"), 0o644))
	out = alice.OK("image", "create", pub, "/pub", "--public", "--server", s1.URL, "--server", s2.URL)
	ref, hash := field(out, "reference"), field(out, "hash")
	pubAddr := publishedAt(t, alice.OK("publish", "/pub"))
	bob := e2e.NewDevice(t, node.URL)
	newSystem(t, bob, ss, "bob@example.com", "--no-os")
	bob.OK("image", "mount", ref, "/from-alice", "--server", s1.URL)
	if got := bob.OK("cat", "/from-alice/readme.txt"); got != "free for all" {
		t.Fatalf("bob reads %q", got)
	}
	bob.OK("image", "mount", hash, "/by-hash", "--server", s1.URL)
	if got := bob.OK("cat", "/by-hash/readme.txt"); got != "free for all" {
		t.Fatalf("bob reads by hash %q", got)
	}
	out = bob.OK("image", "mount", pubAddr, "/by-address")
	if got := bob.OK("cat", "/by-address/readme.txt"); got != "free for all" || !strings.Contains(out, s1.URL+", "+s2.URL) {
		t.Fatalf("bob reads by address %q; mount said:\n%s", got, out)
	}
	// The private image does not open with Bob's keys.
	bob.Fail("keys", "image", "mount", hex.EncodeToString(newHash[:]), "/stolen", "--server", s1.URL)

	// Over a server's size limit.
	small := e2e.StartImageServer(t, node.URL, "--policy", "price=10,max-size=16KiB")
	alice.Fail("too large", "image", "create", photos, "/big", "--server", small.URL)

	// A server serving tampered bytes is skipped and reported.
	tamper(t, s1, newHash)
	tamper(t, s1, hash32(t, hash))
	alice3 := e2e.NewDevice(t, node.URL)
	alice3.OK("login", "--user", "alice@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	alice3.StartAgent()
	for i := 1; i <= 30; i++ {
		if i == 23 {
			continue
		}
		name := fmt.Sprintf("/backups/photos/photo%02d.jpg", i)
		want, _ := os.ReadFile(filepath.Join(photos, filepath.Base(name)))
		if got := alice3.OK("cat", name); got != string(want) {
			t.Fatalf("%s differs when one server tampers", name)
		}
	}
	if out := alice3.OK("image", "info", "/backups/photos"); !strings.Contains(out, "skipped:   "+s1.URL) {
		t.Fatalf("the tampering server is not reported:\n%s", out)
	}
	// Mounting by hash downloads the image whole: the tampered copy is
	// abandoned for the next server's, and reported.
	out = bob.OK("image", "mount", hash, "/by-hash-again", "--server", s1.URL, "--server", s2.URL)
	if !strings.Contains(out, "skipped:   "+s1.URL) {
		t.Fatalf("mount by hash past a tampering server:\n%s", out)
	}
	if got := bob.OK("cat", "/by-hash-again/readme.txt"); got != "free for all" {
		t.Fatalf("bob reads past a tampering server %q", got)
	}

	// A hostile public image: its server asks 200,000 sat per download,
	// over the default cap of 100,000 sat. Mounting it by address (the
	// publisher chose the server) fails before anything is paid.
	pricey := e2e.StartImageServer(t, node.URL, "--policy", "public-price=0,download-price=200000")
	alice.OK("image", "create", pub, "/pricey", "--public", "--server", pricey.URL, "--max-price", "300000")
	priceyAddr := publishedAt(t, alice.OK("publish", "/pricey"))
	bob.OK("mkdir", "/pricey")
	before := balanceSat(t, bob)
	// (Run, not Fail: the skipped server is also logged.)
	r := bob.Run("", "image", "mount", priceyAddr, "/pricey")
	if r.Code == 0 || !strings.Contains(r.Stderr, "integrity: ") || !strings.Contains(r.Stderr, "asks 200000 sat") ||
		!strings.Contains(r.Stderr, "over the limit of 100000 sat per payment") || !strings.Contains(r.Stderr, "--max-price") {
		t.Fatalf("mounting an image priced over the cap: exit %d; the error must name the price, the limit and how to allow it:\n%s", r.Code, r.Stderr)
	}
	if after := balanceSat(t, bob); after != before {
		t.Fatalf("the refused mount cost %d sat", before-after)
	}
	if got, err := os.ReadFile(filepath.Join(ma, "pricey", "readme.txt")); err != nil || string(got) != "free for all" {
		t.Fatalf("alice, who allowed the price, reads %q: %v", got, err)
	}
	// Consent: a higher cap for this System's payments, and it is paid.
	if out := bob.OK("image", "settings", "--max-price", "300000"); !strings.Contains(out, "max-price: 300000 sat") || !strings.Contains(out, "days:      365") {
		t.Fatalf("image settings:\n%s", out)
	}
	bob.OK("image", "mount", priceyAddr, "/pricey")
	if got := bob.OK("cat", "/pricey/readme.txt"); got != "free for all" {
		t.Fatalf("bob reads the paid image %q", got)
	}
	if paid := before - balanceSat(t, bob); paid < 200_000 {
		t.Fatalf("bob paid %d sat for a 200,000 sat download", paid)
	}

	// A change larger than a server's free patch slack (1 MiB; and s1's
	// base copy is the tampered one): the servers refuse the patch and get
	// the new version whole — for the System's term, not a server's
	// one-day minimum.
	video := make([]byte, 2<<20)
	for i := range video {
		video[i] = byte(i*13 + i>>11)
	}
	must(t, os.WriteFile(filepath.Join(dir, "video.bin"), video, 0o644))
	out = alice.OK("image", "update", "/backups/photos")
	if !strings.Contains(out, "uploaded:  the new version whole to "+s1.URL+", "+s2.URL) || !strings.Contains(out, "for 365 days") {
		t.Fatalf("image update past refused patches:\n%s", out)
	}
	thirdHash := hash32(t, field(out, "hash"))
	for _, c := range []*imageserver.Client{c1, c2} {
		st, err := c.Stat(ctx, thirdHash)
		if err != nil || st.HostedUntil.Before(time.Now().Add(364*24*time.Hour)) {
			t.Fatalf("%s hosts the re-uploaded version until %v (%v), want a year", c.URL(), st.HostedUntil, err)
		}
	}
}

// tamper flips bytes in the middle of an image server's stored copy of h.
func tamper(t *testing.T, s *e2e.ImageServer, h [32]byte) {
	t.Helper()
	x := hex.EncodeToString(h[:])
	stored := filepath.Join(s.DataDir, "blobs", x[:2], x)
	b, err := os.ReadFile(stored)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 4; i < len(b)*3/4; i += 512 {
		b[i] ^= 0xff
	}
	must(t, os.WriteFile(stored, b, 0o600))
}

// publishedAt is the address `integrity publish` printed.
func publishedAt(t *testing.T, out string) string {
	t.Helper()
	f := strings.Fields(out)
	if len(f) == 0 || !strings.Contains(out, "integrity open") {
		t.Fatalf("publish: %q", out)
	}
	return strings.Trim(f[len(f)-1], "`")
}

// balanceSat is a device's whole wallet balance (confirmed, unconfirmed
// and immature), in satoshis.
func balanceSat(t *testing.T, d *e2e.Device) int64 {
	t.Helper()
	out := d.OK("wallet", "balance")
	var total int64
	for _, name := range []string{"confirmed", "unconfirmed", "immature"} {
		v, err := strconv.ParseFloat(field(out, name), 64)
		if err != nil {
			t.Fatalf("wallet balance %s: %v\n%s", name, err, out)
		}
		total += int64(math.Round(v * 1e8))
	}
	return total
}

// TestBootImages: the OS turns a folder into an image on the System's
// image server (image_create), unmounts and mounts it again by reference
// through the VM's filesystem device; the tree shows the same files.
func TestBootImages(t *testing.T) {
	osWasm := buildOS(t)
	ss := e2e.StartSecretServer(t)
	srv := e2e.StartImageServer(t, "", "--policy", "price=0")
	d := e2e.NewDevice(t, "")
	pw := newSystem(t, d, ss, "vmimages@example.com", "--no-os")
	d.OK("image", "servers", srv.URL)
	// The OS pays from the wallet to create an image: approved up front,
	// with the password.
	r := d.Run("mkdir /album\nwrite /album/a.txt hello from an image\nimage create /album\nexit\n", "boot", "--os", osWasm, "--allow", "image", "--password-file", pw)
	if r.Code != 0 || !strings.Contains(r.Stdout, "/album is now an image: ") {
		t.Fatalf("image create in the VM: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	ref := strings.TrimSpace(strings.SplitN(r.Stdout, "/album is now an image: ", 2)[1])
	ref = strings.Fields(ref)[0]
	if out := d.OK("image", "info", "/album"); !strings.Contains(out, ref) {
		t.Fatalf("image info:\n%s\nwant reference %s", out, ref)
	}
	// A private image opens only at the folder it was packed for.
	r = d.Run(fmt.Sprintf("image unmount /album\nimage mount %s /elsewhere\nimage mount %s /album\ncat /album/a.txt\nexit\n", ref, ref), "boot", "--os", osWasm, "--allow", "image", "--password-file", pw)
	if r.Code != 0 || !strings.Contains(r.Stdout, "unmounted /album") || !strings.Contains(r.Stdout, "mounted at /album") ||
		!strings.Contains(r.Stdout, "hello from an image") || !strings.Contains(r.Stdout+r.Stderr, "image: denied") {
		t.Fatalf("unmount and mount in the VM: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := d.OK("cat", "/album/a.txt"); got != "hello from an image\n" {
		t.Fatalf("cat: %q", got)
	}
}
