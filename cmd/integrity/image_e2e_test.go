package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// Delete the 23rd photo: a commit at its node (index 22) only.
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

	// Re-image: both servers patch their copy; the old version goes.
	out = alice.OK("image", "update", "/backups/photos")
	newHash := hash32(t, field(out, "hash"))
	if newHash == oldHash || !strings.Contains(out, "released:") {
		t.Fatalf("image update:\n%s", out)
	}
	for _, c := range []*imageserver.Client{c1, c2} {
		if ok, _ := c.Has(ctx, newHash); !ok {
			t.Fatalf("%s does not host the new version", c.URL())
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

	// A public image another user mounts without any of Alice's keys.
	pub := t.TempDir()
	must(t, os.WriteFile(filepath.Join(pub, "readme.txt"), []byte("free for all"), 0o644))
	out = alice.OK("image", "create", pub, "/pub", "--public", "--server", s1.URL)
	ref, hash := field(out, "reference"), field(out, "hash")
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
	// The private image does not open with Bob's keys.
	bob.Fail("keys", "image", "mount", hex.EncodeToString(newHash[:]), "/stolen", "--server", s1.URL)

	// Over a server's size limit.
	small := e2e.StartImageServer(t, node.URL, "--policy", "price=10,max-size=16KiB")
	alice.Fail("too large", "image", "create", photos, "/big", "--server", small.URL)

	// A server serving tampered bytes is skipped and reported.
	h := hex.EncodeToString(newHash[:])
	stored := filepath.Join(s1.DataDir, "blobs", h[:2], h)
	b, err := os.ReadFile(stored)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 4; i < len(b)*3/4; i += 512 {
		b[i] ^= 0xff
	}
	must(t, os.WriteFile(stored, b, 0o600))
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
}

// TestBootImages: the OS turns a folder into an image on the System's
// image server (image_create), unmounts and mounts it again by reference
// through the VM's filesystem device; the tree shows the same files.
func TestBootImages(t *testing.T) {
	osWasm := buildOS(t)
	ss := e2e.StartSecretServer(t)
	srv := e2e.StartImageServer(t, "", "--policy", "price=0")
	d := e2e.NewDevice(t, "")
	newSystem(t, d, ss, "vmimages@example.com", "--no-os")
	d.OK("image", "servers", srv.URL)
	r := d.Run("mkdir /album\nwrite /album/a.txt hello from an image\nimage create /album\nexit\n", "boot", "--os", osWasm)
	if r.Code != 0 || !strings.Contains(r.Stdout, "/album is now an image: ") {
		t.Fatalf("image create in the VM: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	ref := strings.TrimSpace(strings.SplitN(r.Stdout, "/album is now an image: ", 2)[1])
	ref = strings.Fields(ref)[0]
	if out := d.OK("image", "info", "/album"); !strings.Contains(out, ref) {
		t.Fatalf("image info:\n%s\nwant reference %s", out, ref)
	}
	// A private image opens only at the folder it was packed for.
	r = d.Run(fmt.Sprintf("image unmount /album\nimage mount %s /elsewhere\nimage mount %s /album\ncat /album/a.txt\nexit\n", ref, ref), "boot", "--os", osWasm)
	if r.Code != 0 || !strings.Contains(r.Stdout, "unmounted /album") || !strings.Contains(r.Stdout, "mounted at /album") ||
		!strings.Contains(r.Stdout, "hello from an image") || !strings.Contains(r.Stdout+r.Stderr, "image: denied") {
		t.Fatalf("unmount and mount in the VM: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := d.OK("cat", "/album/a.txt"); got != "hello from an image\n" {
		t.Fatalf("cat: %q", got)
	}
}
