package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/internal/e2e"
)

// TestNestedImagesEndToEnd is the paper's footnote 2 through the CLI, the
// agent and the mount, on a btcd chain with two paid image servers: Alice
// publishes a "song" image on S1 (whose downloads are paid: the song's
// publisher sets the terms), mounts it inside /movie, adds a scene and
// images /movie in place on S2. The movie incorporates the song by
// reference: S2 never holds the song, and Bob, with none of Alice's keys,
// mounts the movie and reads the song from S1. A private album with a
// private image nested in it opens on Alice's second device. One image
// per folder; a public image cannot incorporate a private one; an image
// mounted on a new folder inside the movie is folded in by image update.
func TestNestedImagesEndToEnd(t *testing.T) {
	node := e2e.StartBtcd(t)
	ss := e2e.StartSecretServer(t)
	s1 := e2e.StartImageServer(t, node.URL, "--policy", "price=10,public-price=0,download-price=1,max-size=64MiB", "--log-level", "info")
	s2 := e2e.StartImageServer(t, node.URL, "--policy", "price=10,public-price=0,max-size=64MiB", "--log-level", "info")
	c1, _ := imageserver.NewClient(s1.URL, nil)
	c2, _ := imageserver.NewClient(s2.URL, nil)
	ctx := context.Background()
	alice := e2e.NewDevice(t, node.URL)
	pw := newSystem(t, alice, ss, "alice@example.com", "--no-os")

	songDir := t.TempDir()
	song := make([]byte, 300<<10)
	for i := range song {
		song[i] = byte(i*31 + i>>9)
	}
	must(t, os.WriteFile(filepath.Join(songDir, "song.ogg"), song, 0o644))
	must(t, os.WriteFile(filepath.Join(songDir, "lyrics.txt"), []byte("la la la"), 0o644))
	out := alice.OK("image", "create", songDir, "/song", "--public", "--server", s1.URL)
	songRef, songHash := field(out, "reference"), field(out, "hash")

	// One image per folder: a second one is refused, not swapped in.
	alice.Fail("one image per folder", "image", "mount", songRef, "/song", "--server", s1.URL)

	alice.OK("image", "mount", songRef, "/movie/song", "--server", s1.URL)
	ma := filepath.Join(t.TempDir(), "alice")
	mountAt(t, alice, ma)
	must(t, os.WriteFile(filepath.Join(ma, "movie", "scene.txt"), []byte("INT. STUDIO - NIGHT"), 0o644))
	if got, err := os.ReadFile(filepath.Join(ma, "movie", "song", "song.ogg")); err != nil || string(got) != string(song) {
		t.Fatalf("the song through the mount: %d bytes, %v", len(got), err)
	}

	// Image /movie in place: the song is nested by reference.
	out = alice.OK("image", "create", "--folder", "/movie", "--public", "--server", s2.URL)
	movieRef, movieHash := field(out, "reference"), field(out, "hash")
	nested := "nested:    /movie/song: public image " + songRef + " on " + s1.URL
	if !strings.Contains(out, nested) {
		t.Fatalf("image create --folder does not show the nested song:\n%s", out)
	}
	if out := alice.OK("image", "info", "/movie"); !strings.Contains(out, nested) || !strings.Contains(out, "changes:   0") {
		t.Fatalf("image info /movie:\n%s", out)
	}
	if ls := alice.OK("ls", "/movie"); !strings.Contains(ls, "song/") || !strings.Contains(ls, "scene.txt") {
		t.Fatalf("ls /movie:\n%s", ls)
	}
	st, err := c2.Stat(ctx, hash32(t, movieHash))
	if err != nil || st.Size >= int64(len(song)) {
		t.Fatalf("S2 hosts the movie as %d bytes (%v): the song's %d bytes must not be in it", st.Size, err, len(song))
	}
	if ok, _ := c2.Has(ctx, hash32(t, songHash)); ok {
		t.Fatal("S2 hosts the song: the movie copied it instead of nesting it")
	}
	if ok, _ := c1.Has(ctx, hash32(t, songHash)); !ok {
		t.Fatal("S1 does not host the song")
	}
	eventually(t, 20*time.Second, "the mount shows the movie image", func() error {
		got, err := os.ReadFile(filepath.Join(ma, "movie", "song", "lyrics.txt"))
		if err != nil || string(got) != "la la la" {
			return fmt.Errorf("lyrics through the mount: %q, %v", got, err)
		}
		return nil
	})
	// The nested entry has its image: no second one there either.
	alice.Fail("one image per folder", "image", "mount", songRef, "/movie/song", "--server", s1.URL)

	// Bob mounts the public movie by its reference and reads the song
	// from S1, paying S1's download price.
	bob := e2e.NewDevice(t, node.URL)
	newSystem(t, bob, ss, "bob@example.com", "--no-os")
	songTickets := func(s *e2e.ImageServer) int {
		return strings.Count(s.Log(), "kind=download hash="+songHash[:16])
	}
	before := songTickets(s1)
	out = bob.OK("image", "mount", movieRef, "/films/movie", "--server", s2.URL)
	if !strings.Contains(out, "nested:    /films/movie/song: public image "+songRef+" on "+s1.URL) {
		t.Fatalf("bob's mount does not show the nested song:\n%s", out)
	}
	if got := bob.OK("cat", "/films/movie/scene.txt"); got != "INT. STUDIO - NIGHT" {
		t.Fatalf("bob reads the scene %q", got)
	}
	if got := bob.OK("cat", "/films/movie/song/song.ogg"); got != string(song) {
		t.Fatalf("bob reads %d bytes of the song, want %d", len(got), len(song))
	}
	if songTickets(s1) <= before || songTickets(s2) != 0 {
		t.Fatalf("download tickets for the song: S1 %d (was %d), S2 %d: bob's copy must come from S1", songTickets(s1), before, songTickets(s2))
	}

	// A private album incorporating the public song and a private diary
	// (sealed for /album/diary's keys, which the album gives its entry).
	diaryDir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(diaryDir, "diary.txt"), []byte("dear diary"), 0o644))
	alice.OK("image", "create", diaryDir, "/album/diary", "--server", s1.URL)
	alice.OK("image", "mount", songRef, "/album/song", "--server", s1.URL)
	must(t, os.WriteFile(filepath.Join(ma, "album", "cover.txt"), []byte("cover art"), 0o644))
	alice.Fail("a public image can only incorporate public ones", "image", "create", "--folder", "/album", "--public", "--server", s2.URL)
	out = alice.OK("image", "create", "--folder", "/album", "--server", s2.URL)
	albumHash := field(out, "hash")
	if !strings.Contains(out, "nested:    /album/diary: private image") || !strings.Contains(out, "nested:    /album/song: public image "+songRef) {
		t.Fatalf("the private album's nested images:\n%s", out)
	}
	alice2 := e2e.NewDevice(t, node.URL)
	alice2.OK("login", "--user", "alice@example.com", "--secret-server", ss.URL, "--code-file", ss.CodeFile, "--password-file", pw)
	// Its own wallet pays S1's download tickets for the song.
	alice.OK("wallet", "send", strings.TrimSpace(alice2.OK("wallet", "address")), "300000sat")
	eventually(t, 30*time.Second, "the second device reads the private album", func() error {
		for p, want := range map[string]string{"/album/cover.txt": "cover art", "/album/diary/diary.txt": "dear diary", "/album/song/lyrics.txt": "la la la"} {
			r := alice2.Run("", "cat", p)
			if r.Code != 0 || r.Stdout != want {
				return fmt.Errorf("%s: exit %d %q %s", p, r.Code, r.Stdout, r.Stderr)
			}
		}
		if out := alice2.OK("image", "info", "/album"); !strings.Contains(out, "nested:    /album/diary: private image") {
			return fmt.Errorf("image info on the second device:\n%s", out)
		}
		return nil
	})
	bob.Fail("keys", "image", "mount", albumHash, "/stolen", "--server", s2.URL)

	// An image mounted on a new folder inside the movie is a change on
	// top of it; image update folds it in as a nested image.
	alice.OK("image", "mount", songRef, "/movie/reprise", "--server", s1.URL)
	if out := alice.OK("image", "info", "/movie"); !strings.Contains(out, "changes:   1") {
		t.Fatalf("image info with a mount inside:\n%s", out)
	}
	out = alice.OK("image", "update", "/movie")
	if !strings.Contains(out, "nested:    /movie/reprise: public image "+songRef) || !strings.Contains(out, nested) {
		t.Fatalf("image update did not nest the new mount:\n%s", out)
	}
	if ok, _ := c2.Has(ctx, hash32(t, songHash)); ok {
		t.Fatal("S2 hosts the song after the update")
	}
	eventually(t, 30*time.Second, "the second device reads the updated movie", func() error {
		r := alice2.Run("", "cat", "/movie/reprise/lyrics.txt")
		if r.Code != 0 || r.Stdout != "la la la" {
			return fmt.Errorf("exit %d %q %s", r.Code, r.Stdout, r.Stderr)
		}
		return nil
	})
}
