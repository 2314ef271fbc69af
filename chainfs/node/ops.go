// Package node is the on-chain format of the tree: what a node commit says
// (a list of operations, encrypted with the node's read key), how the keys
// of a node and its children are derived (BIP32, hardened only), and how a
// node's state is replayed from its commits. It does no I/O; the chainfs
// package drives it. docs/PROTOCOL.md, "Nodes", is its specification.
package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Kind says what a node is.
type Kind uint8

// Node kinds.
const (
	KindDir     Kind = 1
	KindFile    Kind = 2
	KindSymlink Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindDir:
		return "dir"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

func (k Kind) valid() bool { return k >= KindDir && k <= KindSymlink }

// Op codes.
const (
	OpKind      byte = 0x01 // kind u8
	OpAttr      byte = 0x02 // mode uvarint, mtime ns svarint
	OpData      byte = 0x03 // the whole content, inline
	OpBlob      byte = 0x04 // the whole content, in a blob (blob.Ref, binary)
	OpPatch     byte = 0x05 // a chainfs/delta delta against the current content
	OpTruncate  byte = 0x06 // size uvarint
	OpSymlink   byte = 0x07 // target
	OpXattrSet  byte = 0x08 // name (uvarint length ‖ bytes) ‖ value
	OpXattrDel  byte = 0x09 // name
	OpDelete    byte = 0x0a // (empty) the node is deleted
	OpBoot      byte = 0x0b // the bootloader (root only): a blob.Ref of a WebAssembly module
	OpImage     byte = 0x0c // the folder's mountable image: next uvarint ‖ mount (opaque here; empty: unmounted)
	OpHide      byte = 0x0d // an entry of the folder's image is not shown: index uvarint
	OpEntryNew  byte = 0x10 // a new child: name, kind, index, address
	OpEntryLink byte = 0x11 // an existing child under a name: name, kind, address, genesis, key source
	OpEntryDel  byte = 0x12 // name
	OpEntryOver byte = 0x13 // an image entry's overlay node: name, kind, index, address (funded like OpEntryNew)
)

// BodyVersion is the version byte of a commit body.
const BodyVersion = 1

// Limits that bound what a hostile commit can make a reader do.
const (
	MaxName  = 255
	MaxOps   = 100_000
	MaxXattr = 64 << 10
	// MaxImageMount bounds an OpImage's mount description (a reference
	// and up to 16 server URLs).
	MaxImageMount = 40 << 10
	maxSealed     = 256
	keySrcIdx     = 0
	keySrcExpl    = 1
)

// OutPoint names a transaction output.
type OutPoint struct {
	TxID  [32]byte
	Index uint32
}

// IsZero reports an unset outpoint.
func (o OutPoint) IsZero() bool { return o == OutPoint{} }

// Entry is one child of a directory.
type Entry struct {
	Name string
	Kind Kind
	Addr [20]byte // the child's write address
	// Genesis is the output the child's first commit must spend.
	Genesis OutPoint
	// Native children derive their keys from the directory's keys at
	// Index; others (moved in) carry their keys.
	Native bool
	Index  uint32
	// ReadKey is the child's read tree extended key (key ‖ chain code),
	// for non-native children.
	ReadKey [64]byte
	// SealedWrite is the child's write extended key sealed for the
	// directory's writers (empty when the linker had no write key).
	SealedWrite []byte
	// Image marks an entry shown from the folder's mountable image and
	// not (yet) on chain: chainfs fills these in, no commit carries one.
	Image bool
}

// Op is one operation of a commit.
type Op struct {
	Code  byte
	Kind  Kind   // OpKind
	Mode  uint32 // OpAttr
	Mtime int64  // OpAttr, nanoseconds since the Unix epoch
	Size  int64  // OpTruncate
	Index uint32 // OpImage (the image's next index), OpHide
	Name  string // OpXattrSet, OpXattrDel, OpEntryDel
	Data  []byte // OpData, OpBlob, OpPatch, OpSymlink target, OpXattrSet value, OpImage mount
	Entry Entry  // OpEntryNew, OpEntryLink, OpEntryOver
}

// Body is a commit's plaintext: a version byte, then ops, each encoded as
// code (1 byte) ‖ length (uvarint) ‖ payload.
type Body struct {
	Ops []Op
}

// ErrCorrupt wraps every decoding failure.
var ErrCorrupt = errors.New("corrupt node commit")

// ValidName reports whether name can name a directory entry.
func ValidName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("invalid name %q", name)
	case len(name) > MaxName:
		return fmt.Errorf("name of %d bytes is longer than %d", len(name), MaxName)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

// Marshal encodes the body. Ops are trusted here (they come from this
// process); Unmarshal is where untrusted bytes are checked.
func (b Body) Marshal() []byte {
	out := []byte{BodyVersion}
	var p []byte
	for _, op := range b.Ops {
		p = p[:0]
		switch op.Code {
		case OpKind:
			p = append(p, byte(op.Kind))
		case OpAttr:
			p = binary.AppendUvarint(p, uint64(op.Mode))
			p = binary.AppendVarint(p, op.Mtime)
		case OpData, OpBlob, OpPatch, OpSymlink, OpBoot:
			p = append(p, op.Data...)
		case OpTruncate:
			p = binary.AppendUvarint(p, uint64(op.Size))
		case OpXattrSet:
			p = appendString(p, op.Name)
			p = append(p, op.Data...)
		case OpXattrDel, OpEntryDel:
			p = append(p, op.Name...)
		case OpDelete:
		case OpImage:
			p = binary.AppendUvarint(p, uint64(op.Index))
			p = append(p, op.Data...)
		case OpHide:
			p = binary.AppendUvarint(p, uint64(op.Index))
		case OpEntryNew, OpEntryOver:
			e := op.Entry
			p = appendString(p, e.Name)
			p = append(p, byte(e.Kind))
			p = binary.AppendUvarint(p, uint64(e.Index))
			p = append(p, e.Addr[:]...)
		case OpEntryLink:
			e := op.Entry
			p = appendString(p, e.Name)
			p = append(p, byte(e.Kind))
			p = append(p, e.Addr[:]...)
			p = append(p, e.Genesis.TxID[:]...)
			p = binary.LittleEndian.AppendUint32(p, e.Genesis.Index)
			if e.Native {
				p = append(p, keySrcIdx)
				p = binary.AppendUvarint(p, uint64(e.Index))
			} else {
				p = append(p, keySrcExpl)
				p = append(p, e.ReadKey[:]...)
				p = binary.AppendUvarint(p, uint64(len(e.SealedWrite)))
				p = append(p, e.SealedWrite...)
			}
		}
		out = append(out, op.Code)
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

func appendString(p []byte, s string) []byte {
	p = binary.AppendUvarint(p, uint64(len(s)))
	return append(p, s...)
}

// Unmarshal decodes a body from untrusted bytes. It never panics; every
// failure wraps ErrCorrupt.
func Unmarshal(data []byte) (Body, error) {
	if len(data) == 0 || data[0] != BodyVersion {
		return Body{}, fmt.Errorf("%w: unknown body version", ErrCorrupt)
	}
	r := reader{b: data[1:]}
	var b Body
	for !r.done() {
		if len(b.Ops) == MaxOps {
			return Body{}, fmt.Errorf("%w: more than %d operations", ErrCorrupt, MaxOps)
		}
		code, err := r.byte()
		if err != nil {
			return Body{}, err
		}
		n, err := r.uvarint()
		if err != nil {
			return Body{}, err
		}
		payload, err := r.take(n)
		if err != nil {
			return Body{}, err
		}
		op, err := decodeOp(code, payload)
		if err != nil {
			return Body{}, fmt.Errorf("%w: op %d (0x%02x): %v", ErrCorrupt, len(b.Ops), code, err)
		}
		b.Ops = append(b.Ops, op)
	}
	return b, nil
}

func decodeOp(code byte, payload []byte) (Op, error) {
	r := reader{b: payload}
	op := Op{Code: code}
	var err error
	switch code {
	case OpKind:
		var k byte
		if k, err = r.byte(); err == nil {
			op.Kind = Kind(k)
			if !op.Kind.valid() {
				err = fmt.Errorf("unknown kind %d", k)
			}
		}
	case OpAttr:
		var m uint64
		if m, err = r.uvarint(); err == nil {
			if m > 07777 {
				return op, fmt.Errorf("mode %o out of range", m)
			}
			op.Mode = uint32(m)
			op.Mtime, err = r.varint()
		}
	case OpData, OpBlob, OpPatch, OpBoot:
		op.Data = payload
		return op, nil
	case OpSymlink:
		if len(payload) == 0 || len(payload) > 4096 {
			return op, fmt.Errorf("symlink target of %d bytes", len(payload))
		}
		op.Data = payload
		return op, nil
	case OpTruncate:
		var s uint64
		if s, err = r.uvarint(); err == nil {
			if s > 1<<50 {
				return op, fmt.Errorf("size %d out of range", s)
			}
			op.Size = int64(s)
		}
	case OpXattrSet:
		if op.Name, err = r.name(); err == nil {
			op.Data = r.rest()
			if len(op.Data) > MaxXattr {
				return op, fmt.Errorf("xattr value of %d bytes", len(op.Data))
			}
		}
		return op, err
	case OpXattrDel, OpEntryDel:
		op.Name = string(payload)
		if err := ValidName(op.Name); err != nil && code == OpEntryDel {
			return op, err
		}
		if len(op.Name) == 0 || len(op.Name) > MaxName {
			return op, fmt.Errorf("name of %d bytes", len(op.Name))
		}
		return op, nil
	case OpDelete:
	case OpImage:
		if op.Index, err = r.index(); err != nil {
			return op, err
		}
		if op.Data = r.rest(); len(op.Data) > MaxImageMount {
			return op, fmt.Errorf("image mount of %d bytes", len(op.Data))
		}
		return op, nil
	case OpHide:
		op.Index, err = r.index()
	case OpEntryNew, OpEntryOver:
		op.Entry.Native = true
		if op.Entry.Name, err = r.name(); err != nil {
			return op, err
		}
		if err = ValidName(op.Entry.Name); err != nil {
			return op, err
		}
		if op.Entry.Kind, err = r.kind(); err != nil {
			return op, err
		}
		if op.Entry.Index, err = r.index(); err != nil {
			return op, err
		}
		err = r.fixed(op.Entry.Addr[:])
	case OpEntryLink:
		e := &op.Entry
		if e.Name, err = r.name(); err != nil {
			return op, err
		}
		if err = ValidName(e.Name); err != nil {
			return op, err
		}
		if e.Kind, err = r.kind(); err != nil {
			return op, err
		}
		if err = r.fixed(e.Addr[:]); err != nil {
			return op, err
		}
		if err = r.fixed(e.Genesis.TxID[:]); err != nil {
			return op, err
		}
		var idx [4]byte
		if err = r.fixed(idx[:]); err != nil {
			return op, err
		}
		e.Genesis.Index = binary.LittleEndian.Uint32(idx[:])
		var src byte
		if src, err = r.byte(); err != nil {
			return op, err
		}
		switch src {
		case keySrcIdx:
			e.Native = true
			e.Index, err = r.index()
		case keySrcExpl:
			if err = r.fixed(e.ReadKey[:]); err != nil {
				return op, err
			}
			var n uint64
			if n, err = r.uvarint(); err != nil {
				return op, err
			}
			if n > maxSealed {
				return op, fmt.Errorf("sealed write key of %d bytes", n)
			}
			var s []byte
			if s, err = r.take(n); err == nil {
				e.SealedWrite = s
			}
		default:
			err = fmt.Errorf("unknown key source %d", src)
		}
	default:
		return op, fmt.Errorf("unknown operation")
	}
	if err != nil {
		return op, err
	}
	if !r.done() {
		return op, fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return op, nil
}

type reader struct{ b []byte }

func (r *reader) done() bool   { return len(r.b) == 0 }
func (r *reader) rest() []byte { b := r.b; r.b = nil; return b }

func (r *reader) byte() (byte, error) {
	if len(r.b) == 0 {
		return 0, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *reader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) varint() (int64, error) {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) take(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: length %d past the end", ErrCorrupt, n)
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b, nil
}

func (r *reader) fixed(dst []byte) error {
	b, err := r.take(uint64(len(dst)))
	if err != nil {
		return err
	}
	copy(dst, b)
	return nil
}

func (r *reader) name() (string, error) {
	n, err := r.uvarint()
	if err != nil {
		return "", err
	}
	if n == 0 || n > MaxName {
		return "", fmt.Errorf("name of %d bytes", n)
	}
	b, err := r.take(n)
	if err != nil {
		return "", err
	}
	if strings.IndexByte(string(b), 0) >= 0 {
		return "", errors.New("name contains NUL")
	}
	return string(b), nil
}

func (r *reader) kind() (Kind, error) {
	k, err := r.byte()
	if err != nil {
		return 0, err
	}
	if !Kind(k).valid() {
		return 0, fmt.Errorf("unknown kind %d", k)
	}
	return Kind(k), nil
}

func (r *reader) index() (uint32, error) {
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v >= 1<<31 {
		return 0, fmt.Errorf("child index %d out of range", v)
	}
	return uint32(v), nil
}
