package blob

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/integrity-sys/integrity/keyring"
)

// Encrypt seals plain into a new blob under a fresh random key and returns
// the blob and its Ref. For large content use EncryptReader, which does
// not hold the whole blob in memory.
func Encrypt(plain []byte) ([]byte, Ref, error) {
	key, err := keyring.NewRandomKey()
	if err != nil {
		return nil, Ref{}, fmt.Errorf("blob: %w", err)
	}
	return encryptWithKey(plain, key)
}

// encryptWithKey is Encrypt with a given key. Unexported on purpose: a key
// reused for two different plaintexts would repeat nonces (see the package
// doc), so only fresh keys from Encrypt and EncryptReader (and tests) reach
// it.
func encryptWithKey(plain []byte, key keyring.Key) ([]byte, Ref, error) {
	plainSize := int64(len(plain))
	if plainSize > MaxPlainSize {
		return nil, Ref{}, fmt.Errorf("blob: %d bytes exceed the %d-byte blob limit", plainSize, int64(MaxPlainSize))
	}
	aead, err := newAEAD(&key)
	if err != nil {
		return nil, Ref{}, err
	}
	hdr := header()
	aad, nb := hdr[:], make([]byte, nonceSize)
	n := numChunks(plainSize)
	out := make([]byte, 0, EncryptedSize(plainSize))
	out = append(out, aad...)
	for i := range n {
		start := i * ChunkSize
		out = aead.Seal(out, setNonce(nb, i, i == n-1), plain[start:start+chunkPlainLen(plainSize, i)], aad)
	}
	return out, Ref{Hash: sha256.Sum256(out), Size: int64(len(out)), PlainSize: plainSize, Key: key}, nil
}

// EncryptReader reads plaintext from r until EOF and writes the blob to w
// as it goes, under a fresh random key. Memory use is two chunks whatever
// the size, so it suits files of any size; the size need not be known in
// advance. On error, w holds a partial blob that must be discarded.
func EncryptReader(ctx context.Context, r io.Reader, w io.Writer) (Ref, error) {
	key, err := keyring.NewRandomKey()
	if err != nil {
		return Ref{}, fmt.Errorf("blob: %w", err)
	}
	aead, err := newAEAD(&key)
	if err != nil {
		return Ref{}, err
	}
	h := sha256.New()
	var written int64
	write := func(b []byte) error {
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("blob: writing encrypted blob at offset %d: %w", written, err)
		}
		written += int64(len(b))
		return nil
	}
	hdr := header()
	aad, nb := hdr[:], make([]byte, nonceSize)
	if err := write(aad); err != nil {
		return Ref{}, err
	}
	// Whether a chunk is the last is only known once the next read hits
	// EOF, so one chunk is read ahead. Chunks are sealed in place.
	cur := make([]byte, sealedChunkSize)
	next := make([]byte, sealedChunkSize)
	nc, err := readChunk(r, cur[:ChunkSize])
	if err != nil {
		return Ref{}, err
	}
	var plainSize int64
	for i := int64(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return Ref{}, fmt.Errorf("blob: encrypting: %w", err)
		}
		last := nc < ChunkSize
		nn := 0
		if !last {
			if nn, err = readChunk(r, next[:ChunkSize]); err != nil {
				return Ref{}, err
			}
			last = nn == 0
		}
		plainSize += int64(nc)
		if plainSize > MaxPlainSize {
			return Ref{}, fmt.Errorf("blob: input exceeds the %d-byte blob limit", int64(MaxPlainSize))
		}
		if err := write(aead.Seal(cur[:0], setNonce(nb, i, last), cur[:nc], aad)); err != nil {
			return Ref{}, err
		}
		if last {
			break
		}
		cur, next, nc = next, cur, nn
	}
	ref := Ref{Size: written, PlainSize: plainSize, Key: key}
	h.Sum(ref.Hash[:0])
	return ref, nil
}

// readChunk fills buf from r; a short count means r reached EOF. Only
// io.EOF ends the input: any other error, io.ErrUnexpectedEOF included
// (a truncated source), is a failure.
func readChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("blob: reading plaintext: %w", err)
		}
	}
	return n, nil
}
