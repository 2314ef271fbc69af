package node

import (
	"errors"
	"fmt"
	"maps"
	"sort"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/delta"
	"github.com/integrity-sys/integrity/internal/envelope"
	"github.com/integrity-sys/integrity/keyring"
)

// Default permission bits of a node whose commits never set them.
const (
	DefaultDirMode  = 0o755
	DefaultFileMode = 0o644
	// MaxFileSize bounds what replaying a commit may materialise in memory.
	MaxFileSize = 1 << 30
)

// State is a node as its commits describe it.
type State struct {
	Kind    Kind
	Mode    uint32
	Mtime   int64 // ns
	Content []byte
	// Blob is the blob the content was last stored in, if any (content
	// changed since by patches keeps it as the patches' base reference).
	Blob    *blob.Ref
	Target  string
	Xattrs  map[string][]byte
	Entries map[string]Entry
	// NextIndex is one past the highest native child index ever
	// allocated: indexes are never reused, so a deleted child's history
	// never mixes with a new one's.
	NextIndex uint32
	Deleted   bool
	// Boot is the bootloader's blob reference (the "/" node only).
	Boot []byte
	// Image is the folder's mountable image (OpImage; chainfs decodes
	// it), nil when none is mounted. ImageNext is one past the image's
	// highest index at this folder — for the mount folder from OpImage,
	// for a folder inside an image from its record — and Hidden the
	// image's entries not shown here (deleted, or renamed: see OpHide).
	Image     []byte
	ImageNext uint32
	Hidden    map[uint32]bool
}

// Content is read-only: see Clone.

// NewState is the state of a node that has no commits yet: an empty node
// of the kind its parent's entry says.
func NewState(kind Kind) *State {
	s := &State{Kind: kind, Xattrs: map[string][]byte{}}
	switch kind {
	case KindDir:
		s.Mode = DefaultDirMode
		s.Entries = map[string]Entry{}
	default:
		s.Mode = DefaultFileMode
	}
	return s
}

// Clone copies the state. Content is shared: it is never modified in
// place (every op that changes it builds a new slice), so holders of a
// State treat Content as read-only and copy before writing.
func (s *State) Clone() *State {
	c := *s
	c.Xattrs = maps.Clone(s.Xattrs)
	c.Entries = maps.Clone(s.Entries)
	c.Hidden = maps.Clone(s.Hidden)
	if s.Blob != nil {
		b := *s.Blob
		c.Blob = &b
	}
	return &c
}

// BlobLoader fetches and decrypts a blob's content.
type BlobLoader func(ref blob.Ref) ([]byte, error)

// ErrInvalid wraps an operation that is well-formed but not applicable
// (a patch against the wrong base, a file op on a directory...). The
// commit carrying it is skipped whole.
var ErrInvalid = errors.New("invalid node operation")

// Apply applies one commit's body. commitTx names the transaction, for the
// genesis outputs of new children (output 2+j for the j-th OpEntryNew).
// On error the state is unchanged.
func (s *State) Apply(b Body, commitTx [32]byte, load BlobLoader) error {
	next := s.Clone()
	nNew := uint32(0)
	for i, op := range b.Ops {
		if err := next.apply(op, commitTx, &nNew, load); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
	}
	*s = *next
	return nil
}

func (s *State) apply(op Op, commitTx [32]byte, nNew *uint32, load BlobLoader) error {
	fileOnly := func() error {
		if s.Kind != KindFile {
			return fmt.Errorf("%w: content op on a %s", ErrInvalid, s.Kind)
		}
		return nil
	}
	dirOnly := func() error {
		if s.Kind != KindDir {
			return fmt.Errorf("%w: entry op on a %s", ErrInvalid, s.Kind)
		}
		return nil
	}
	switch op.Code {
	case OpKind:
		if op.Kind != s.Kind {
			return fmt.Errorf("%w: kind %s on a %s", ErrInvalid, op.Kind, s.Kind)
		}
	case OpAttr:
		s.Mode, s.Mtime = op.Mode, op.Mtime
	case OpData:
		if err := fileOnly(); err != nil {
			return err
		}
		s.Content, s.Blob = append([]byte(nil), op.Data...), nil
	case OpBlob:
		if err := fileOnly(); err != nil {
			return err
		}
		var ref blob.Ref
		if err := ref.UnmarshalBinary(op.Data); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if load == nil {
			return fmt.Errorf("%w: no blob store", ErrInvalid)
		}
		c, err := load(ref)
		if err != nil {
			return fmt.Errorf("blob %x: %w", ref.Hash[:8], err)
		}
		s.Content, s.Blob = c, &ref
	case OpPatch:
		if err := fileOnly(); err != nil {
			return err
		}
		c, err := delta.Apply(s.Content, op.Data, MaxFileSize)
		if err != nil {
			return fmt.Errorf("%w: patch: %v", ErrInvalid, err)
		}
		s.Content = c
	case OpTruncate:
		if err := fileOnly(); err != nil {
			return err
		}
		if op.Size > MaxFileSize {
			return fmt.Errorf("%w: size %d", ErrInvalid, op.Size)
		}
		if op.Size <= int64(len(s.Content)) {
			s.Content = s.Content[:op.Size:op.Size]
		} else {
			grown := make([]byte, op.Size)
			copy(grown, s.Content)
			s.Content = grown
		}
	case OpSymlink:
		if s.Kind != KindSymlink {
			return fmt.Errorf("%w: symlink target on a %s", ErrInvalid, s.Kind)
		}
		s.Target = string(op.Data)
	case OpXattrSet:
		s.Xattrs[op.Name] = append([]byte(nil), op.Data...)
	case OpXattrDel:
		delete(s.Xattrs, op.Name)
	case OpDelete:
		s.Deleted = true
	case OpBoot:
		if s.Kind != KindDir {
			return fmt.Errorf("%w: bootloader on a %s", ErrInvalid, s.Kind)
		}
		var ref blob.Ref
		if err := ref.UnmarshalBinary(op.Data); err != nil {
			return fmt.Errorf("%w: bootloader: %v", ErrInvalid, err)
		}
		s.Boot = append([]byte(nil), op.Data...)
	case OpImage:
		if err := dirOnly(); err != nil {
			return err
		}
		// A new image replaces the folder's view: what was overlaid on
		// the old one was folded into it (re-imaging) or goes with it.
		s.Image, s.ImageNext, s.Hidden = nil, 0, nil
		s.Entries = map[string]Entry{}
		if len(op.Data) > 0 {
			s.Image, s.ImageNext = append([]byte(nil), op.Data...), op.Index
			s.NextIndex = max(s.NextIndex, op.Index)
		}
	case OpHide:
		if err := dirOnly(); err != nil {
			return err
		}
		if op.Index >= s.ImageNext {
			return fmt.Errorf("%w: hide of index %d beyond the image's %d", ErrInvalid, op.Index, s.ImageNext)
		}
		if s.Hidden == nil {
			s.Hidden = map[uint32]bool{}
		}
		s.Hidden[op.Index] = true
		s.dropIndex(op.Index, true)
	case OpEntryOver:
		if err := dirOnly(); err != nil {
			return err
		}
		e := op.Entry
		if e.Index >= s.ImageNext {
			return fmt.Errorf("%w: overlay of index %d beyond the image's %d", ErrInvalid, e.Index, s.ImageNext)
		}
		e.Native = true
		e.Genesis = OutPoint{TxID: commitTx, Index: 2 + *nNew}
		*nNew++
		s.dropIndex(e.Index, false)
		s.Entries[e.Name] = e
	case OpEntryNew:
		if err := dirOnly(); err != nil {
			return err
		}
		e := op.Entry
		if e.Index < s.NextIndex {
			return fmt.Errorf("%w: child index %d reused (next is %d)", ErrInvalid, e.Index, s.NextIndex)
		}
		e.Native = true
		e.Genesis = OutPoint{TxID: commitTx, Index: 2 + *nNew}
		*nNew++
		s.NextIndex = e.Index + 1
		s.Entries[e.Name] = e
	case OpEntryLink:
		if err := dirOnly(); err != nil {
			return err
		}
		if op.Entry.Native && op.Entry.Index >= s.NextIndex {
			return fmt.Errorf("%w: link to unallocated child index %d", ErrInvalid, op.Entry.Index)
		}
		s.Entries[op.Entry.Name] = op.Entry
	case OpEntryDel:
		if err := dirOnly(); err != nil {
			return err
		}
		delete(s.Entries, op.Name)
	default:
		return fmt.Errorf("%w: unknown op 0x%02x", ErrInvalid, op.Code)
	}
	return nil
}

// dropIndex removes the entries of native child index i: only those
// shown from the image when imageOnly.
func (s *State) dropIndex(i uint32, imageOnly bool) {
	for name, e := range s.Entries {
		if e.Native && e.Index == i && (e.Image || !imageOnly) {
			delete(s.Entries, name)
		}
	}
}

// Names returns the entry names in order.
func (s *State) Names() []string {
	names := make([]string, 0, len(s.Entries))
	for n := range s.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SealBody encrypts a body for a node (docs/PROTOCOL.md, "Encryption").
func SealBody(k Keys, b Body) ([]byte, error) {
	ck := k.ContentKey()
	defer ck.Wipe()
	return keyring.Seal(ck, b.Marshal(), envelope.AAD(envelope.TypeNodeCommit, k.Addr[:]))
}

// OpenBody decrypts and decodes a commit's sealed field.
func OpenBody(k Keys, sealed []byte) (Body, error) {
	ck := k.ContentKey()
	defer ck.Wipe()
	plain, err := keyring.Open(ck, sealed, envelope.AAD(envelope.TypeNodeCommit, k.Addr[:]))
	if err != nil {
		return Body{}, err
	}
	return Unmarshal(plain)
}
