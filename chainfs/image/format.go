package image

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/node"
	"github.com/integrity-sys/integrity/keyring"
)

// Format constants (see the package doc for the byte layout).
const (
	// Version is the image format version: the last byte of the header,
	// of the trailer and the first byte of a Ref's encoding.
	Version = 1
	// HeaderSize is the length of the header that starts every image.
	HeaderSize = 4
	// TrailerSize is the length of the trailer that ends every image.
	TrailerSize = 12

	// FlagPublic marks a public (unencrypted) image in the trailer and in
	// a Ref's encoding.
	FlagPublic = 0x01
)

// Limits a reader enforces, so that a hostile image cannot make it loop,
// allocate without bound or read outside the image. The packer refuses
// to write anything a reader would refuse.
const (
	// MaxImageSize is the largest image: what a blob store accepts.
	MaxImageSize = blob.HeaderSize + blob.MaxPlainSize + blob.TagSize*(blob.MaxPlainSize/blob.ChunkSize)
	// MaxFileSize is the largest file in an image.
	MaxFileSize = blob.MaxPlainSize
	// MaxName is the longest entry name (bytes).
	MaxName = node.MaxName
	// MaxTarget is the longest symlink target (bytes).
	MaxTarget = 4096
	// MaxServers is the most image servers a nested reference names.
	MaxServers = 16
	// MaxServerURL is the longest server URL.
	MaxServerURL = 2048
	// MaxRecord bounds one record as stored (sealed or plain).
	MaxRecord = 64 << 10
	// MaxDirEntries bounds the entries of one folder.
	MaxDirEntries = 1 << 18
	// MaxBlock bounds a folder's block of child records.
	MaxBlock = 64 << 20
	// MaxDepth bounds folder nesting inside one image.
	MaxDepth = 255
	// MaxEntries bounds the entries Walk and Verify visit in one image.
	MaxEntries = 1 << 24
	// MaxNesting bounds how many nested images a path may cross.
	MaxNesting = 8
	// MaxIndex is the first child index that cannot be allocated
	// (hardened BIP32 children are 0 … 2³¹-1).
	MaxIndex = 1 << 31
)

// Errors, for errors.Is. Every failure to read an image wraps one of them.
var (
	// ErrFormat: the image (or a Ref) is malformed or hostile: bad magic
	// or version, a region outside the image or out of order, a bad
	// name, a count past a limit, trailing bytes, a non-minimal varint…
	ErrFormat = errors.New("image: malformed")
	// ErrMismatch: bytes read do not match the hash that names them (the
	// image hash, the root digest, a block hash, a chunk hash): a wrong
	// or tampered copy.
	ErrMismatch = errors.New("image: content does not match its hash")
	// ErrKeys: a private image record does not open — the mount node's
	// keys are missing or wrong (or the record was forged). It wraps
	// keyring.ErrDecrypt.
	ErrKeys = fmt.Errorf("image: wrong or missing keys: %w", keyring.ErrDecrypt)
	// ErrNotFound: no entry at that path. It wraps fs.ErrNotExist.
	ErrNotFound = fmt.Errorf("image: %w", fs.ErrNotExist)
	// ErrNotDir: a path goes through something that is not a folder.
	ErrNotDir = errors.New("image: not a folder")
	// ErrIsDir: a file operation on a folder.
	ErrIsDir = errors.New("image: is a folder")
	// ErrNested: a path crosses a nested image and no Resolver was given,
	// or nesting is deeper than MaxNesting.
	ErrNested = errors.New("image: path crosses a nested image")
	// ErrTooLarge: something exceeds a limit of this package or the
	// caller's.
	ErrTooLarge = errors.New("image: too large")
)

// Kind is what an entry is.
type Kind uint8

// Entry kinds (the record's first byte).
const (
	KindDir     Kind = 1
	KindFile    Kind = 2
	KindSymlink Kind = 3
	// KindImage is a nested image mounted at this point.
	KindImage Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindDir:
		return "dir"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	case KindImage:
		return "image"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// Ref names an image and says how to check it: what a mount node's image
// commit carries on chain. Hash is the content address the image servers
// know; Root lets a reader check the records it fetches by range without
// downloading the whole image.
type Ref struct {
	// Hash is SHA-256 of the image blob: of the encrypted blob for a
	// private image, of the plain blob for a public one (there is no
	// other).
	Hash [32]byte
	// Size of the blob in bytes.
	Size int64
	// Root is SHA-256 of the root record as stored (sealed, for a private
	// image).
	Root [32]byte
	// Public images are not encrypted; anyone may read them.
	Public bool
}

// MinRefSize and MaxRefSize bound a Ref's encoding.
const (
	MinRefSize = 1 + 1 + 32 + 32 + 1
	MaxRefSize = 1 + 1 + 32 + 32 + binary.MaxVarintLen64
)

// minImageSize is header + the smallest root record + trailer.
const minImageSize = HeaderSize + 1 + TrailerSize

func (r Ref) String() string {
	v := "private"
	if r.Public {
		v = "public"
	}
	return fmt.Sprintf("image:%s(%s, %d bytes)", hex.EncodeToString(r.Hash[:]), v, r.Size)
}

// Validate checks the size.
func (r Ref) Validate() error {
	if r.Size < minImageSize || r.Size > MaxImageSize {
		return fmt.Errorf("%w: image size %d outside [%d, %d]", ErrFormat, r.Size, minImageSize, int64(MaxImageSize))
	}
	return nil
}

// AppendBinary appends the Ref's encoding:
// 0x01 ‖ flags ‖ hash (32) ‖ root (32) ‖ uvarint(size).
func (r Ref) AppendBinary(b []byte) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return b, err
	}
	var flags byte
	if r.Public {
		flags = FlagPublic
	}
	b = append(b, Version, flags)
	b = append(b, r.Hash[:]...)
	b = append(b, r.Root[:]...)
	return binary.AppendUvarint(b, uint64(r.Size)), nil
}

// MarshalBinary encodes the Ref. It holds no key: it is the same for
// everyone and may be published.
func (r Ref) MarshalBinary() ([]byte, error) { return r.AppendBinary(make([]byte, 0, MaxRefSize)) }

// UnmarshalBinary decodes the canonical encoding only.
func (r *Ref) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "image ref"}
	var out Ref
	if v := d.byte(); d.err == nil && v != Version {
		return fmt.Errorf("%w: image ref version %d, this build reads %d", ErrFormat, v, Version)
	}
	switch f := d.byte(); {
	case d.err != nil:
	case f == FlagPublic:
		out.Public = true
	case f != 0:
		d.fail("unknown flags %#x", f)
	}
	d.bytes(out.Hash[:])
	d.bytes(out.Root[:])
	out.Size = d.size(MaxImageSize, "size")
	d.end()
	if d.err != nil {
		return d.err
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*r = out
	return nil
}

// Nested is a reference to another image mounted inside this one: its Ref
// and the servers that host it. A private nested image is read with the
// keys of the node its entry is allocated (it was packed for that node);
// a public one needs none.
type Nested struct {
	Ref     Ref
	Servers []string
}

// validate checks a nested reference's server list.
func (n Nested) validate() error {
	if err := n.Ref.Validate(); err != nil {
		return err
	}
	if len(n.Servers) > MaxServers {
		return fmt.Errorf("%w: %d servers for a nested image, at most %d", ErrFormat, len(n.Servers), MaxServers)
	}
	for _, s := range n.Servers {
		if err := ValidServerURL(s); err != nil {
			return err
		}
	}
	return nil
}

// ValidServerURL checks an image server URL as images record it: http or
// https, a host, no credentials, query or fragment, printable ASCII.
func ValidServerURL(s string) error {
	if s == "" || len(s) > MaxServerURL {
		return fmt.Errorf("%w: server URL of %d bytes (1 to %d)", ErrFormat, len(s), MaxServerURL)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("%w: server URL %q has a control, space or non-ASCII byte", ErrFormat, s)
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#") {
		return fmt.Errorf("%w: server URL %q is not http(s)://host[:port][/path]", ErrFormat, s)
	}
	return nil
}

// ValidName checks an entry name: 1–255 bytes, no '/' or NUL, not "." or
// "..", valid UTF-8 (an image is meant to be mounted anywhere, and names
// that are not text cannot be shown or typed consistently).
func ValidName(name string) error {
	if err := node.ValidName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: name %q is not valid UTF-8", ErrFormat, name)
	}
	return nil
}

// record is an entry as stored. Locations are absolute offsets in the
// image.
type record struct {
	kind  Kind
	name  string
	mode  uint32
	mtime int64
	addr  [20]byte

	// dir
	next      uint32
	count     int64
	blockOff  int64
	blockLen  int64
	blockHash [32]byte

	// file
	size       int64
	contentOff int64
	blobHash   [32]byte    // private: SHA-256 of the embedded blob
	blobKey    keyring.Key // private: its key
	tableHash  [32]byte    // public: SHA-256 of the chunk table

	// symlink
	target string

	// image
	nested Nested
}

// contentLen is the length of a file's content region.
func contentLen(public bool, size int64) int64 {
	if public {
		n := numChunks(size)
		return size + sha256.Size*(n+(n+l1Block-1)/l1Block)
	}
	return blob.EncryptedSize(size)
}

// numChunks is the chunk count of size bytes (at least one), as in blobs.
func numChunks(size int64) int64 {
	if size == 0 {
		return 1
	}
	return (size + blob.ChunkSize - 1) / blob.ChunkSize
}

// encode appends the record's plaintext encoding.
func (r *record) encode(b []byte, public bool) ([]byte, error) {
	b = append(b, byte(r.kind))
	b = binary.AppendUvarint(b, uint64(len(r.name)))
	b = append(b, r.name...)
	b = binary.AppendUvarint(b, uint64(r.mode))
	b = binary.AppendVarint(b, r.mtime)
	b = append(b, r.addr[:]...)
	switch r.kind {
	case KindDir:
		b = binary.AppendUvarint(b, uint64(r.next))
		b = binary.AppendUvarint(b, uint64(r.count))
		b = binary.AppendUvarint(b, uint64(r.blockOff))
		b = binary.AppendUvarint(b, uint64(r.blockLen))
		b = append(b, r.blockHash[:]...)
	case KindFile:
		b = binary.AppendUvarint(b, uint64(r.size))
		b = binary.AppendUvarint(b, uint64(r.contentOff))
		if public {
			b = append(b, r.tableHash[:]...)
		} else {
			b = append(b, r.blobHash[:]...)
			b = append(b, r.blobKey[:]...)
		}
	case KindSymlink:
		b = binary.AppendUvarint(b, uint64(len(r.target)))
		b = append(b, r.target...)
	case KindImage:
		ref, err := r.nested.Ref.MarshalBinary()
		if err != nil {
			return nil, err
		}
		b = binary.AppendUvarint(b, uint64(len(ref)))
		b = append(b, ref...)
		b = binary.AppendUvarint(b, uint64(len(r.nested.Servers)))
		for _, s := range r.nested.Servers {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	default:
		return nil, fmt.Errorf("image: cannot encode kind %d", r.kind)
	}
	if len(b) > MaxRecord-keyring.Overhead {
		return nil, fmt.Errorf("%w: record of %q is %d bytes, limit %d", ErrTooLarge, r.name, len(b), MaxRecord-keyring.Overhead)
	}
	return b, nil
}

// decodeRecord parses a record's plaintext. It checks everything that
// does not depend on where the record sits (names, limits, sizes); the
// caller checks locations against the image layout.
func decodeRecord(b []byte, public, root bool) (*record, error) {
	if len(b) > MaxRecord {
		return nil, fmt.Errorf("%w: record of %d bytes exceeds %d", ErrFormat, len(b), MaxRecord)
	}
	d := decoder{b: b, what: "record"}
	r := &record{kind: Kind(d.byte())}
	nameLen := d.length(MaxName, "name")
	r.name = string(d.take(nameLen))
	if mode := d.uvarint("mode"); mode > 0o7777 {
		d.fail("mode %#o has bits beyond 07777", mode)
	} else {
		r.mode = uint32(mode)
	}
	r.mtime = d.varint("mtime")
	d.bytes(r.addr[:])
	if d.err == nil && public && r.addr != [20]byte{} {
		d.fail("a public entry names a node address")
	}
	if d.err != nil {
		return nil, d.err
	}
	if root {
		if r.name != "" {
			return nil, fmt.Errorf("%w: the root record has a name (%q)", ErrFormat, r.name)
		}
		if r.kind != KindDir {
			return nil, fmt.Errorf("%w: the root record is a %s, not a folder", ErrFormat, r.kind)
		}
	} else if err := ValidName(r.name); err != nil {
		return nil, err
	}
	switch r.kind {
	case KindDir:
		next := d.uvarint("next index")
		if next > MaxIndex {
			d.fail("next index %d beyond %d", next, uint64(MaxIndex))
		}
		r.next = uint32(next)
		r.count = d.size(MaxDirEntries, "entry count")
		r.blockOff = d.size(MaxImageSize, "block offset")
		r.blockLen = d.size(MaxBlock, "block length")
		d.bytes(r.blockHash[:])
		if d.err == nil && (r.count == 0) != (r.blockLen == 0) {
			d.fail("%d entries in a block of %d bytes", r.count, r.blockLen)
		}
		if d.err == nil && r.count == 0 && (r.blockOff != 0 || r.blockHash != [32]byte{}) {
			d.fail("an empty folder names a block")
		}
		if d.err == nil && r.count > int64(r.next) {
			d.fail("%d entries but next index %d", r.count, r.next)
		}
	case KindFile:
		r.size = d.size(MaxFileSize, "file size")
		r.contentOff = d.size(MaxImageSize, "content offset")
		if public {
			d.bytes(r.tableHash[:])
		} else {
			d.bytes(r.blobHash[:])
			d.bytes(r.blobKey[:])
		}
	case KindSymlink:
		n := d.length(MaxTarget, "symlink target")
		r.target = string(d.take(n))
		if d.err == nil && (n == 0 || strings.IndexByte(r.target, 0) >= 0) {
			d.fail("symlink target is empty or holds NUL")
		}
	case KindImage:
		n := d.length(MaxRefSize, "nested image ref")
		if rb := d.take(n); d.err == nil {
			if err := r.nested.Ref.UnmarshalBinary(rb); err != nil {
				return nil, fmt.Errorf("nested image %q: %w", r.name, err)
			}
		}
		ns := d.length(MaxServers, "server count")
		for i := 0; i < ns && d.err == nil; i++ {
			s := string(d.take(d.length(MaxServerURL, "server URL")))
			if d.err == nil {
				if err := ValidServerURL(s); err != nil {
					return nil, err
				}
				r.nested.Servers = append(r.nested.Servers, s)
			}
		}
	default:
		return nil, fmt.Errorf("%w: unknown entry kind %d", ErrFormat, uint8(r.kind))
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// decoder reads varints and bytes, remembering the first error. Varints
// must be minimal, so every value has one encoding.
type decoder struct {
	b    []byte
	off  int
	err  error
	what string
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrFormat, d.what, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("truncated at byte %d", d.off)
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) bytes(dst []byte) {
	copy(dst, d.take(len(dst)))
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.fail("%d bytes wanted at byte %d, %d left", n, d.off, len(d.b)-d.off)
		return nil
	}
	d.off += n
	return d.b[d.off-n : d.off]
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("truncated before %s", field)
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("%s is not a valid varint", field)
		return 0
	}
	if n > 1 && d.b[d.off+n-1] == 0 {
		d.fail("%s is not minimally encoded", field)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(field string) int64 {
	u := d.uvarint(field)
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// size reads a uvarint that must be at most limit.
func (d *decoder) size(limit int64, field string) int64 {
	v := d.uvarint(field)
	if d.err == nil && v > uint64(limit) {
		d.fail("%s %d exceeds %d", field, v, limit)
		return 0
	}
	return int64(v)
}

func (d *decoder) length(limit int, field string) int {
	return int(d.size(int64(limit), field+" length"))
}

func (d *decoder) end() {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
}
