package chainfs

import (
	"slices"
	"strings"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/node"
)

// What the System's own tree keeps on image servers: the blobs of its
// large files and the images mounted at its folders. Both are hosted for
// a term, so whoever keeps them alive (`integrity image renew`, the
// agent's renewal) needs the list.

// BlobUse is a blob the committed tree refers to.
type BlobUse struct {
	// Path is the file's path ("/docs/big.bin"); "/" for the bootloader.
	Path string
	// Size is the content's plaintext size (Ref.Size is the blob's).
	Size int64
	Ref  blob.Ref
	// Boot: the bootloader of "/", not a file.
	Boot bool
}

// ImageUse is an image mounted at a folder of the System's own tree.
type ImageUse struct {
	Path  string
	Mount ImageMount
	// Keys are the folder's: its write key holds the image at its servers.
	Keys node.Keys
}

// BlobRefs lists the blobs of the committed content of every node of the
// System's own tree that this tree can write, in path order, each blob
// once (the first path that uses it). Other people's roots (shared/,
// public/) and the entries of mounted images are not listed: their
// hosting is their owners', and an image is renewed as an image
// (ImageMounts). Content not yet committed is not listed either: its blob
// is uploaded, for a fresh term, when it is.
func (t *Tree) BlobRefs() []BlobUse {
	var out []BlobUse
	seen := map[[32]byte]bool{}
	t.walkOwn(func(p string, n *Node) {
		s := n.committed
		if n == t.root && len(s.Boot) > 0 {
			var ref blob.Ref
			if err := ref.UnmarshalBinary(s.Boot); err == nil && !seen[ref.Hash] {
				seen[ref.Hash] = true
				out = append(out, BlobUse{Path: "/", Size: ref.PlainSize, Ref: ref, Boot: true})
			}
		}
		// A file changed by patches since keeps its blob as their base:
		// it is still needed.
		if s.Kind == node.KindFile && s.Blob != nil && !seen[s.Blob.Hash] {
			seen[s.Blob.Hash] = true
			out = append(out, BlobUse{Path: p, Size: int64(len(s.Content)), Ref: *s.Blob})
		}
	})
	slices.SortStableFunc(out, func(a, b BlobUse) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// ImageMounts lists the images mounted (committed) at folders of the
// System's own tree that this tree can write, in path order. Images
// nested in them are not listed: they have their own folders and owners.
func (t *Tree) ImageMounts() []ImageUse {
	var out []ImageUse
	t.walkOwn(func(p string, n *Node) {
		s := n.committed
		if s.Kind != node.KindDir || len(s.Image) == 0 {
			return
		}
		var m ImageMount
		if err := m.UnmarshalBinary(s.Image); err != nil {
			t.log.Warn("chainfs: unreadable image mount", "dir", p, "err", err)
			return
		}
		out = append(out, ImageUse{Path: p, Mount: m, Keys: n.keys})
	})
	slices.SortFunc(out, func(a, b ImageUse) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// walkOwn calls f, under t.mu, for each writable node reachable from "/"
// through committed entries that are not image entries, with its
// committed path.
func (t *Tree) walkOwn(f func(p string, n *Node)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	visited := map[*Node]bool{}
	var walk func(p string, n *Node)
	walk = func(p string, n *Node) {
		if visited[n] || n.virtual || !n.keys.HasWrite || n.committed == nil {
			return
		}
		visited[n] = true
		f(p, n)
		if n.committed.Kind != node.KindDir {
			return
		}
		for _, e := range n.committed.Entries {
			if e.Image {
				continue // shown from the folder's image: hosted with it
			}
			// Looked up by address, not parent: a rename not yet
			// committed moves the node but not the committed entry.
			c, ok := t.byAddr[e.Addr]
			if !ok {
				continue
			}
			walk(strings.TrimSuffix(p, "/")+"/"+e.Name, c)
		}
	}
	walk("/", t.root)
}
