package blob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
)

var benchSizes = []int{1 << 20, 100 << 20}

func sizeName(n int) string { return fmt.Sprintf("%dMiB", n>>20) }

// BenchmarkEncrypt: in-memory Encrypt (AES-GCM + SHA-256 of the blob).
func BenchmarkEncrypt(b *testing.B) {
	for _, n := range benchSizes {
		plain := randBytes(n, 1)
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, _, err := Encrypt(plain); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncryptReader: streaming encryption to io.Discard.
func BenchmarkEncryptReader(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		plain := randBytes(n, 1)
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := EncryptReader(ctx, bytes.NewReader(plain), io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecrypt: in-memory Decrypt (SHA-256 check + AES-GCM).
func BenchmarkDecrypt(b *testing.B) {
	for _, n := range benchSizes {
		enc, ref, err := Encrypt(randBytes(n, 1))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := Decrypt(enc, ref); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecryptStream: streaming decryption to io.Discard.
func BenchmarkDecryptStream(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		enc, ref, err := Encrypt(randBytes(n, 1))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if err := DecryptStream(ctx, io.Discard, bytes.NewReader(enc), ref); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDirPutEncrypted: encrypt 100 MiB into a Dir (write + fsync).
func BenchmarkDirPutEncrypted(b *testing.B) {
	ctx := context.Background()
	plain := randBytes(100<<20, 1)
	d := newDir(b)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		ref, err := d.PutEncrypted(ctx, bytes.NewReader(plain))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = d.Delete(ctx, ref.Hash)
		b.StartTimer()
	}
}

// BenchmarkDecryptRange4KiB: latency of a 4 KiB read at a random-ish
// offset of a 100 MiB blob in a Dir (page cache warm), through a kept
// Reader and through one-shot DecryptRange.
func BenchmarkDecryptRange4KiB(b *testing.B) {
	ctx := context.Background()
	const size = 100 << 20
	d := newDir(b)
	ref, err := d.PutEncrypted(ctx, newGenReader(size, 3))
	if err != nil {
		b.Fatal(err)
	}
	offsets := make([]int64, 1024)
	for i := range offsets {
		offsets[i] = (int64(i) * 7919 * 4096) % (size - 4096)
	}
	b.Run("Reader", func(b *testing.B) {
		r, err := NewReader(d, ref)
		if err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			if _, err := r.ReadRange(ctx, offsets[i%len(offsets)], 4096); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("DecryptRange", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := DecryptRange(ctx, d, ref, offsets[i%len(offsets)], 4096); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
