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
