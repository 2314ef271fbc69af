package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/internal/e2e"
)

// hostedLine is the date `image info` (or `image renew`) prints for a
// server: "<what>   URL until DATE".
func hostedLine(t *testing.T, out, what, url string) time.Time {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, what+":"); ok {
			if f := strings.Fields(rest); len(f) == 3 && f[0] == url && f[1] == "until" {
				d, err := time.ParseInLocation(time.DateOnly, f[2], time.Local)
				if err != nil {
					t.Fatalf("%s line %q: %v", what, l, err)
				}
				return d
			}
		}
	}
	t.Fatalf("no %q line for %s in:\n%s", what, url, out)
	return time.Time{}
}

// TestRenewEndToEnd: an image hosted for two days on two paid servers is
// renewed for 30 more through the CLI and the agent, without uploading
// it: `image info` shows the later end on both, the servers' own records
// agree, the wallet paid, and `integrity status` shows the earliest end.
// With one server down, the other is still renewed and the failure
// reported; with both down the command fails.
func TestRenewEndToEnd(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	s1 := e2e.StartImageServer(t, node.URL, "--policy", "price=10,max-size=64MiB", "--forward", "--forward-local")
	s2 := e2e.StartImageServer(t, node.URL, "--policy", "price=10,max-size=64MiB")
	alice := e2e.NewDevice(t, node.URL)
	newSystem(t, alice, ss, "alice@example.com", "--no-os")
	// Mounted: the commands go through the agent.
	mountAt(t, alice, filepath.Join(t.TempDir(), "alice"))
	photos := photoFolder(t)

	out := alice.OK("image", "create", photos, "/backups/photos", "--server", s1.URL, "--server", s2.URL, "--days", "2")
	h := hash32(t, field(out, "hash"))
	ctx := context.Background()
	c1, _ := imageserver.NewClient(s1.URL, nil)
	c2, _ := imageserver.NewClient(s2.URL, nil)
	before := map[string]time.Time{}
	for _, c := range []*imageserver.Client{c1, c2} {
		st, err := c.Stat(ctx, h)
		if err != nil || st.HostedUntil.After(time.Now().Add(49*time.Hour)) {
			t.Fatalf("%s hosts the image until %v (%v), want two days", c.URL(), st.HostedUntil, err)
		}
		before[c.URL()] = st.HostedUntil
	}
	out = alice.OK("status")
	t.Logf("status:\n%s", out)
	if !strings.Contains(out, "images:     1 mounted; hosting ends first on "+before[s1.URL].Local().Format(time.DateOnly)) ||
		!strings.Contains(out, "(renew: integrity image renew /backups/photos)") {
		t.Fatalf("status does not show the images' hosting end:\n%s", out)
	}

	paid := balanceSat(t, alice)
	out = alice.OK("image", "renew", "/backups/photos", "--days", "30")
	paid -= balanceSat(t, alice)
	t.Logf("image renew (paid %d sat):\n%s", paid, out)
	if !strings.Contains(out, "renewed /backups/photos on 2 of 2 servers, 30 days each") {
		t.Fatalf("image renew:\n%s", out)
	}
	// Two payments of at least the dust limit (a 1 MiB image, 30 days at
	// 10 sat per MiB-day, is 300 sat: quotes ask 546).
	if paid < 2*imageserver.DustLimit {
		t.Fatalf("the wallet paid %d sat for two renewals", paid)
	}
	info := alice.OK("image", "info", "/backups/photos")
	for _, c := range []*imageserver.Client{c1, c2} {
		st, err := c.Stat(ctx, h)
		want := before[c.URL()].Add(30 * 24 * time.Hour)
		if d := st.HostedUntil.Sub(want); err != nil || d < -time.Minute || d > time.Minute {
			t.Fatalf("%s hosts the image until %v (%v), want %v", c.URL(), st.HostedUntil, err, want)
		}
		if st.Owners != 1 {
			t.Fatalf("%s: %d owners after the renewal, want the folder's key alone", c.URL(), st.Owners)
		}
		day := want.Local().Format(time.DateOnly)
		if got := hostedLine(t, info, "hosted", c.URL()).Format(time.DateOnly); got != day {
			t.Fatalf("image info shows %s until %s, want %s:\n%s", c.URL(), got, day, info)
		}
		if got := hostedLine(t, out, "renewed", c.URL()).Format(time.DateOnly); got != day {
			t.Fatalf("image renew shows %s until %s, want %s:\n%s", c.URL(), got, day, out)
		}
	}
	if out := alice.OK("status"); !strings.Contains(out, "hosting ends first on "+before[s1.URL].Add(30*24*time.Hour).Local().Format(time.DateOnly)) {
		t.Fatalf("status after the renewal:\n%s", out)
	}

	// One server down: reported, the other renewed.
	s2.Stop()
	r := alice.Run("", "image", "renew", "/backups/photos", "--days", "3")
	if r.Code != 0 || !strings.Contains(r.Stdout, "failed:    "+s2.URL+": ") || !strings.Contains(r.Stdout, "renewed /backups/photos on 1 of 2 servers") {
		t.Fatalf("renew with %s down: exit %d\nstdout: %s\nstderr: %s", s2.URL, r.Code, r.Stdout, r.Stderr)
	}
	want := before[s1.URL].Add(33 * 24 * time.Hour).Local().Format(time.DateOnly)
	if got := hostedLine(t, r.Stdout, "renewed", s1.URL).Format(time.DateOnly); got != want {
		t.Fatalf("renewed %s until %s, want %s:\n%s", s1.URL, got, want, r.Stdout)
	}
	t.Logf("image renew with %s down:\n%s", s2.URL, r.Stdout)
	// Both down: nothing renewed, the command fails.
	s1.Stop()
	r = alice.Run("", "image", "renew", "/backups/photos", "--days", "3")
	if r.Code == 0 || !strings.Contains(r.Stderr, "failed on every server") || strings.Count(r.Stdout, "failed:") != 2 {
		t.Fatalf("renew with both servers down: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
}
