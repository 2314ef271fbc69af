// Package blob stores file content too large for the chain: encrypted,
// content-addressed blobs. A commit carries only a Ref (hash, size, key),
// inside its own encryption; the bytes live in a Store — a local directory
// (Dir) now, image servers later — and any store can check what it holds
// against the hash without knowing the key.
//
// # Blob format, version 1
//
// Content is cut into 64 KiB chunks, each sealed with AES-256-GCM under a
// key used for this blob only. All integers are big-endian.
//
//	blob     = header ‖ chunk_0 ‖ chunk_1 ‖ … ‖ chunk_{n-1}
//	header   = 0x49 0x47 0x42 0x01          ("IGB", format version 1; 4 bytes)
//	chunk_i  = AES-256-GCM-Seal(K, nonce_i, P_i, AAD = header)
//	         = ciphertext (len(P_i) bytes) ‖ tag (16 bytes)
//	nonce_i  = 0x00 0x00 0x00 ‖ uint64(i) ‖ last_i          (12 bytes)
//	last_i   = 0x01 if i = n-1, else 0x00
//
//	P        the plaintext, L bytes, 0 ≤ L ≤ 2^40 (MaxPlainSize)
//	C        65536 (ChunkSize)
//	n        ceil(L / C), or 1 if L = 0 (an empty blob is one empty chunk)
//	P_i      P[i·C : min((i+1)·C, L)]; every chunk is full but the last
//	K        32 bytes from crypto/rand, fresh for every blob, found only in
//	         the Ref (which travels inside an encrypted commit)
//
//	encrypted size  E(L) = 4 + L + 16·n
//	content address Hash = SHA-256(blob)
//
// Why this is safe (the STREAM construction of Hoang, Reyhanitabar, Rogaway
// and Vizár, with a per-blob key instead of a per-blob nonce prefix):
//   - Nonces never repeat under a key: K is fresh per blob and nonce_i
//     differs for every i. The package never accepts a caller's key for
//     encryption, so K cannot be reused by mistake.
//   - A chunk moved to another position fails authentication (its index is
//     in its nonce); so do swapped or dropped chunks.
//   - Truncation at a chunk boundary leaves a last chunk sealed with
//     last = 0, and appending after the real last chunk (sealed with
//     last = 1) puts it in a non-final position: both fail. A reader also
//     knows E(L) from the Ref, so any length change is caught up front.
//   - A chunk from another blob fails: other key. The header (format
//     version) is bound into every chunk as AAD, so no downgrade.
//   - Whole-blob reads also check SHA-256 against Ref.Hash before
//     decrypting; ranged reads, which cannot, rely on the per-chunk tags.
//
// Overhead: 4 + 16·n bytes — 260 bytes (0.025 %) for 1 MiB, 0.024 % for
// large files; 20 bytes for an empty file. Sealed chunk i starts at byte
// 4 + i·65552 whatever the blob, so a ranged read fetches exactly the
// sealed chunks covering the range (one request per 4 MiB) with no header
// round trip; it authenticates them with the header it expects, so the
// stored header need not be read.
//
// # Ref encoding, version 1
//
//	ref = 0x01 (format version) ‖ Hash (32) ‖ K (32) ‖ uvarint(L)
//
// 66 to 71 bytes. uvarint is Go's encoding/binary unsigned varint (LEB128);
// it must be minimal and nothing may follow it. The encrypted size is not
// stored: it is E(L). The encoding holds the key, so it belongs only inside
// encrypted commits.
//
// # Stores
//
// Store is the interface every holder of blobs implements: it verifies the
// hash on Put and on whole reads and serves byte ranges without reading the
// rest. Dir keeps blobs in a local directory, crash-safely. Multi reads from
// several stores in turn, skipping (and reporting) any that fail or serve
// wrong bytes — how a client tries image servers one by one. Copy, Load and
// Reader (ranged decryption) all skip bad copies when given a Multi.
package blob
