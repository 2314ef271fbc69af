package blob

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/integrity-sys/integrity/keyring"
)

const (
	// Version is the blob format version, the header's last byte and the
	// first byte of a Ref's encoding.
	Version = 1
	// ChunkSize is how much plaintext each sealed chunk holds (the last
	// chunk may hold less).
	ChunkSize = 64 << 10
	// TagSize is the AES-GCM tag each chunk carries.
	TagSize = 16
	// HeaderSize is the length of the header that starts every blob.
	HeaderSize = 4
	// MaxPlainSize bounds the plaintext of one blob (1 TiB); it keeps every
	// size computation far from overflow.
	MaxPlainSize = 1 << 40
	// MaxRefSize is the longest Ref encoding.
	MaxRefSize = 1 + 32 + 32 + 6

	sealedChunkSize = ChunkSize + TagSize
	nonceSize       = 12
)

// header returns the 4 bytes that start every version-1 blob; they are also
// each chunk's additional data.
func header() [HeaderSize]byte { return [HeaderSize]byte{'I', 'G', 'B', Version} }

var (
	// ErrNotFound: the store does not hold the blob.
	ErrNotFound = errors.New("blob: not found")
	// ErrHashMismatch: bytes offered or read are not the blob their hash
	// names (wrong content or wrong length).
	ErrHashMismatch = errors.New("blob: content does not match its hash")
	// ErrDecrypt: a chunk failed authentication — the key is wrong or the
	// chunk was altered, moved, dropped or truncated. It wraps
	// keyring.ErrDecrypt so callers can treat all decryption failures alike.
	ErrDecrypt = fmt.Errorf("blob: %w", keyring.ErrDecrypt)
	// ErrFormat: a malformed Ref encoding or blob header, or an unsupported
	// version.
	ErrFormat = errors.New("blob: malformed")
	// ErrRange: an offset or length outside the blob.
	ErrRange = errors.New("blob: range out of bounds")
)

// Ref names a blob and holds what is needed to read it. It travels inside
// encrypted commits (MarshalBinary); Key must never appear anywhere else.
type Ref struct {
	Hash      [32]byte    // SHA-256 of the encrypted blob: its content address
	Size      int64       // encrypted size, EncryptedSize(PlainSize)
	PlainSize int64       // plaintext size
	Key       keyring.Key // per-blob AES-256 key (prints as redacted)
}

// EncryptedSize is E(L), the size of the blob holding plainSize bytes, or
// -1 if plainSize is outside [0, MaxPlainSize].
func EncryptedSize(plainSize int64) int64 {
	if plainSize < 0 || plainSize > MaxPlainSize {
		return -1
	}
	return HeaderSize + plainSize + TagSize*numChunks(plainSize)
}

// numChunks is n: the chunk count for plainSize bytes (at least one).
func numChunks(plainSize int64) int64 {
	if plainSize == 0 {
		return 1
	}
	return (plainSize + ChunkSize - 1) / ChunkSize
}

// chunkPlainLen is len(P_i).
func chunkPlainLen(plainSize, i int64) int64 {
	return min(ChunkSize, plainSize-i*ChunkSize)
}

// chunkOffset is where sealed chunk i starts in the blob.
func chunkOffset(i int64) int64 { return HeaderSize + i*sealedChunkSize }

// setNonce writes nonce_i into nb (12 bytes) and returns it. Callers reuse
// one buffer: a nonce passed to the AEAD interface escapes to the heap.
func setNonce(nb []byte, i int64, last bool) []byte {
	nb = nb[:nonceSize]
	clear(nb[:3])
	binary.BigEndian.PutUint64(nb[3:11], uint64(i))
	nb[11] = 0
	if last {
		nb[11] = 1
	}
	return nb
}

func newAEAD(key *keyring.Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("blob: aes: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("blob: gcm: %w", err)
	}
	return gcm, nil
}

// Validate checks that the sizes are consistent: PlainSize in range and
// Size equal to EncryptedSize(PlainSize).
func (r Ref) Validate() error {
	want := EncryptedSize(r.PlainSize)
	if want < 0 {
		return fmt.Errorf("%w: ref plaintext size %d outside [0, %d]", ErrFormat, r.PlainSize, int64(MaxPlainSize))
	}
	if r.Size != want {
		return fmt.Errorf("%w: ref encrypted size %d, want %d for %d plaintext bytes", ErrFormat, r.Size, want, r.PlainSize)
	}
	return nil
}

// String names the blob without its key.
func (r Ref) String() string {
	return fmt.Sprintf("blob:%s(%d bytes, %d encrypted)", hex.EncodeToString(r.Hash[:]), r.PlainSize, r.Size)
}

// AppendBinary appends the Ref's encoding (see the package doc) to b.
func (r Ref) AppendBinary(b []byte) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return b, err
	}
	b = append(b, Version)
	b = append(b, r.Hash[:]...)
	b = append(b, r.Key[:]...)
	return binary.AppendUvarint(b, uint64(r.PlainSize)), nil
}

// MarshalBinary encodes the Ref (see the package doc). The result holds
// the key: seal it before it leaves the process.
func (r Ref) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, MaxRefSize))
}

// UnmarshalBinary decodes a Ref, accepting only the canonical encoding
// that MarshalBinary produces, so each Ref has exactly one encoding.
func (r *Ref) UnmarshalBinary(b []byte) error {
	if len(b) < 1+32+32+1 {
		return fmt.Errorf("%w: ref of %d bytes is too short", ErrFormat, len(b))
	}
	if b[0] != Version {
		return fmt.Errorf("%w: ref version %d, want %d", ErrFormat, b[0], Version)
	}
	rest := b[1+32+32:]
	l, n := binary.Uvarint(rest)
	switch {
	case n <= 0:
		return fmt.Errorf("%w: ref plaintext size is not a valid varint", ErrFormat)
	case n != len(rest):
		return fmt.Errorf("%w: %d trailing bytes after ref", ErrFormat, len(rest)-n)
	case n != len(binary.AppendUvarint(nil, l)):
		return fmt.Errorf("%w: ref plaintext size is not minimally encoded", ErrFormat)
	case l > MaxPlainSize:
		return fmt.Errorf("%w: ref plaintext size %d exceeds %d", ErrFormat, l, int64(MaxPlainSize))
	}
	var out Ref
	copy(out.Hash[:], b[1:33])
	copy(out.Key[:], b[33:65])
	out.PlainSize = int64(l)
	out.Size = EncryptedSize(out.PlainSize)
	*r = out
	return nil
}
