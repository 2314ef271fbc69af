package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/integrity-sys/integrity/chainfs/blob"
)

// windowTamper flips a byte of every range over 1 MiB it serves.
type windowTamper struct{ blob.Store }

func (s windowTamper) GetRange(ctx context.Context, h [32]byte, off, n int64) ([]byte, error) {
	b, err := s.Store.GetRange(ctx, h, off, n)
	if err == nil && n > 1<<20 {
		b[len(b)/2] ^= 0x40
	}
	return b, err
}

// TestSequentialReadAhead: reading a file front to back in 128 KiB reads
// (as through the mount) costs about one request per 4 MiB window, not
// one per read; the bytes are exact, tampering is still caught, and a
// lone read in the middle still fetches only what it needs.
func TestSequentialReadAhead(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public=%v", public), func(t *testing.T) {
			ctx := context.Background()
			src := t.TempDir()
			want := randBytes(13<<20+777, 5)
			writeTree(t, src, tree{"photo.jpg": string(want), "other.jpg": string(randBytes(9<<20, 6))})
			mount := testKeys(t, 4)
			ref, data := packDir(t, src, PackOptions{Keys: &mount, Public: public})
			cs := &countingStore{Store: newDirStore(t)}
			put(t, cs, ref, data)
			im, err := Open(ctx, cs, ref, Options{Keys: &mount})
			if err != nil {
				t.Fatal(err)
			}
			read := func(name string) ([]byte, int) {
				f, err := im.Open(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				cs.mu.Lock()
				before := cs.calls
				cs.mu.Unlock()
				var got []byte
				buf := make([]byte, 128<<10)
				for off := int64(0); ; off += int64(len(buf)) {
					n, err := f.ReadAtContext(ctx, buf, off)
					got = append(got, buf[:n]...)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				cs.mu.Lock()
				defer cs.mu.Unlock()
				return got, cs.calls - before
			}
			got, calls := read("photo.jpg")
			if !bytes.Equal(got, want) {
				t.Fatal("sequential read returned wrong bytes")
			}
			// 13 MiB: 4 windows, plus the first read and chunk tables.
			if reads := len(want) / (128 << 10); calls > 10 || calls >= reads/4 {
				t.Fatalf("%d requests for %d reads of 128 KiB", calls, reads)
			}
			t.Logf("%d bytes in %d reads: %d requests", len(want), len(want)/(128<<10)+1, calls)

			// A copy that lies only in large ranges — read-ahead windows —
			// is caught there too.
			bad, err := Open(ctx, windowTamper{cs}, ref, Options{Keys: &mount})
			if err != nil {
				t.Fatal(err)
			}
			f, err := bad.Open(ctx, "other.jpg")
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 128<<10)
			var rerr error
			for off := int64(0); off < 2<<20 && rerr == nil; off += int64(len(buf)) {
				_, rerr = f.ReadAtContext(ctx, buf, off)
			}
			if rerr == nil || !errors.Is(rerr, ErrMismatch) {
				t.Fatalf("tampered window: %v", rerr)
			}
		})
	}
}
