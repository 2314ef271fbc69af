package chainfs

import (
	"crypto/rand"
	"testing"
)

func TestWorthDiff(t *testing.T) {
	big := make([]byte, 8<<20)
	_, _ = rand.Read(big)
	other := make([]byte, 8<<20)
	_, _ = rand.Read(other)
	edit := append([]byte(nil), big...)
	edit[3<<20] ^= 1
	insert := append(append(append([]byte(nil), big[:1<<20]...), 'x'), big[1<<20:]...)
	appended := append(append([]byte(nil), big...), make([]byte, 1000)...)
	for name, c := range map[string]struct {
		old, cur []byte
		want     bool
	}{
		"in-place edit": {big, edit, true},
		"insert":        {big, insert, true},
		"append":        {big, appended, true},
		"truncate":      {big, big[:5<<20], true},
		"unrelated":     {big, other, false},
		"from nothing":  {nil, big, false},
		"small":         {big[:100], other[:100], true},
	} {
		if got := worthDiff(c.old, c.cur); got != c.want {
			t.Errorf("%s: worthDiff %v, want %v", name, got, c.want)
		}
	}
}
