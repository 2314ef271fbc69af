package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/internal/e2e"
)

// hostedAbout fails unless h is hosted until want, give or take a minute.
func hostedAbout(ctx context.Context, c *imageserver.Client, h [32]byte, want time.Time) error {
	st, err := c.Stat(ctx, h)
	if err != nil {
		return err
	}
	if d := st.HostedUntil.Sub(want); d < -time.Minute || d > time.Minute {
		return fmt.Errorf("%x hosted until %v, want %v", h[:8], st.HostedUntil, want)
	}
	return nil
}

// serverBlob finds the one large file's blob a server hosts.
func serverBlob(ctx context.Context, s *e2e.ImageServer, c *imageserver.Client) ([32]byte, error) {
	files, _ := filepath.Glob(filepath.Join(s.DataDir, "blobs", "*", "*"))
	for _, f := range files {
		b, err := hex.DecodeString(filepath.Base(f))
		if err != nil || len(b) != 32 {
			continue
		}
		if st, err := c.Stat(ctx, [32]byte(b)); err == nil && st.Content == imageserver.ContentBlob {
			return [32]byte(b), nil
		}
	}
	return [32]byte{}, errors.New("no blob hosted yet")
}

// TestAutoRenewEndToEnd: on a btcd chain with a paid image server, a
// 3 MiB file put through the agent is hosted as a blob for the System's
// term (2 days); `image renew --blobs --days 20` extends it without
// uploading. The agent's renewal (run every second here) leaves an image
// made with --days 2 alone while `image settings --auto-renew=false`;
// once it is on again it extends both the image and the blob (ending
// within 30 days) by the System's term, and then asks no server again
// about what it knows ends later.
func TestAutoRenewEndToEnd(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	srv := e2e.StartImageServer(t, node.URL, "--policy", "price=10,max-size=64MiB")
	alice := e2e.NewDevice(t, node.URL)
	newSystem(t, alice, ss, "autorenew@example.com", "--no-os")
	alice.OK("image", "servers", srv.URL)
	if out := alice.OK("image", "settings", "--days", "2", "--auto-renew=false"); !strings.Contains(out, "auto-renew: false") {
		t.Fatalf("image settings:\n%s", out)
	}
	alice.StartAgent("--auto-renew-every", "1s", "--log-level", "info")
	ctx := context.Background()
	c, _ := imageserver.NewClient(srv.URL, nil)

	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 13)
	}
	local := filepath.Join(t.TempDir(), "big.bin")
	must(t, os.WriteFile(local, big, 0o644))
	alice.OK("put", local, "/big.bin")
	var blobHash [32]byte
	eventually(t, 60*time.Second, "the large file's blob is uploaded", func() error {
		var err error
		blobHash, err = serverBlob(ctx, srv, c)
		return err
	})
	st, err := c.Stat(ctx, blobHash)
	if err != nil || st.HostedUntil.Before(time.Now().Add(47*time.Hour)) || st.HostedUntil.After(time.Now().Add(49*time.Hour)) {
		t.Fatalf("blob hosted until %v (%v), want the System's 2 days", st.HostedUntil, err)
	}

	out := alice.OK("image", "renew", "--blobs", "--days", "20")
	t.Logf("image renew --blobs:\n%s", out)
	if !strings.Contains(out, "renewed 1 of 1 blobs on "+srv.URL+", 20 days each") {
		t.Fatalf("image renew --blobs:\n%s", out)
	}
	blobUntil := st.HostedUntil.Add(20 * 24 * time.Hour)
	must(t, hostedAbout(ctx, c, blobHash, blobUntil))

	// Off: an image ending in two days is left as it is.
	out = alice.OK("image", "create", photoFolder(t), "/photos", "--days", "2")
	imgHash := hash32(t, field(out, "hash"))
	ist, err := c.Stat(ctx, imgHash)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	must(t, hostedAbout(ctx, c, imgHash, ist.HostedUntil))

	// On, with a 30-day term: both end within the window and are renewed.
	if out := alice.OK("image", "settings", "--days", "30", "--auto-renew=true"); !strings.Contains(out, "auto-renew: true") {
		t.Fatalf("image settings:\n%s", out)
	}
	eventually(t, 60*time.Second, "the agent renews the image", func() error {
		return hostedAbout(ctx, c, imgHash, ist.HostedUntil.Add(30*24*time.Hour))
	})
	eventually(t, 60*time.Second, "the agent renews the blob", func() error {
		return hostedAbout(ctx, c, blobHash, blobUntil.Add(30*24*time.Hour))
	})
	// Known to end after the window now: later runs ask no server.
	logPath := filepath.Join(alice.Home, "agent.log")
	eventually(t, 30*time.Second, "a run that skips everything", func() error {
		b, _ := os.ReadFile(logPath)
		if !strings.Contains(string(b), "msg=auto-renewal items=2 asked=0 renewed=0 failed=0 skipped=2") {
			return errors.New("no such run logged yet")
		}
		return nil
	})
	// And once renewed, nothing more was paid for.
	time.Sleep(2 * time.Second)
	must(t, hostedAbout(ctx, c, imgHash, ist.HostedUntil.Add(30*24*time.Hour)))
	must(t, hostedAbout(ctx, c, blobHash, blobUntil.Add(30*24*time.Hour)))
	if out := alice.OK("status"); !strings.Contains(out, ist.HostedUntil.Add(30*24*time.Hour).Local().Format(time.DateOnly)) {
		t.Fatalf("status does not show the renewed end:\n%s", out)
	}
	b, _ := os.ReadFile(logPath)
	if n := strings.Count(string(b), "auto-renewal: renewed"); n != 2 || strings.Contains(string(b), "not paying it again") {
		t.Fatalf("%d renewals logged, want 2:\n%s", n, b)
	}
}
