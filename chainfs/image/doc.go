// Package image is the mountable image format: a directory tree packed
// into one blob that image servers host by content address and readers
// fetch by range — one file without downloading the rest.
//
// A private image is packed for a mount node (the paper's m/34/0/0): its
// entries are allocated child nodes of that node in a fixed order (step
// 3.a) and each entry's record — kind, name, attributes, where its
// content is — is sealed with a key derived from its own node's read key
// (3.b); the records and contents are concatenated into the image (3.c).
// A public image is the same structure with nothing sealed. Pack writes
// an image from any Source (LocalDir, the chainfs tree, an Image,
// Overlay); Open reads one from a blob.Store (image servers, a Multi over
// them) or OpenReaderAt from a local file. Re-imaging (paper 4.a–e) is
// Pack of Overlay(old.Source(), changes...): every unchanged file's
// content is copied as stored, so chainfs/delta between the two versions
// is about the size of the change.
//
// # Image format, version 1
//
// Integers are Go varints — uvarint (LEB128, at most 10 bytes, minimal:
// a multi-byte varint may not end in 0x00) and svarint (zigzag) — except
// where a width is given, which is big-endian.
//
//	image    = header ‖ body ‖ root ‖ trailer
//	header   = "IGI" 0x01                                   (4 bytes)
//	body     = content regions and blocks (below), in the order written
//	root     = the root record as stored (rootLen bytes)
//	trailer  = flags (1) ‖ 00 00 00 ‖ rootLen (u32) ‖ "IGI" 0x01  (12 bytes)
//	flags    = 0x01 public, 0x00 private (no other bits)
//
// The image hash is SHA-256 of all these bytes — the encrypted blob for
// a private image, the plain blob for a public one. A Ref (what a mount
// commit carries) adds the size, the public flag and root digest
// Root = SHA-256(root), which anchors everything read by range:
//
//	ref      = 0x01 ‖ flags (1) ‖ hash (32) ‖ Root (32) ‖ uvarint(size)
//
// Every entry — the root folder, each file, folder, symlink and nested
// image — has one record. Plain, a record is
//
//	record   = kind (1) ‖ uvarint(len) ‖ name ‖ uvarint(mode) ‖ svarint(mtime)
//	           ‖ addr (20) ‖ body
//	kind     = 1 folder, 2 file, 3 symlink, 4 nested image
//	name     = 1–255 bytes of UTF-8 without '/' or NUL, not "." or ".."
//	           (empty for the root, which is a folder)
//	mode     = permission bits, ≤ 07777
//	mtime    = nanoseconds since 1970 (0: unknown)
//	addr     = HASH160 address of the entry's node, when a private image
//	           was packed with write keys; zeros otherwise
//
//	folder   = uvarint(next) ‖ uvarint(count) ‖ uvarint(blockOff)
//	           ‖ uvarint(blockLen) ‖ blockHash (32)
//	file     = uvarint(size) ‖ uvarint(contentOff) ‖ private: blobHash (32) ‖ key (32)
//	                                                 public:  tableHash (32)
//	symlink  = uvarint(len) ‖ target (1–4096 bytes, no NUL)
//	image    = uvarint(len) ‖ ref ‖ uvarint(n ≤ 16) ‖ n × (uvarint(len) ‖ server URL)
//
// A folder's children are its block, count frames in strictly increasing
// index order:
//
//	block    = frame_0 ‖ … ‖ frame_{count-1};  blockHash = SHA-256(block)
//	frame    = uvarint(index) ‖ uvarint(len) ‖ record as stored
//
// index is the entry's child number under the folder's node: index < next
// ≤ 2³¹, and next is never lowered, so a deleted entry's node is never
// given to another. An empty folder has count, blockOff and blockLen 0
// and a zero blockHash. Names are unique in a folder.
//
// In a private image a record is stored sealed:
//
//	sealed   = nonce (12, random) ‖ AES-256-GCM(K, nonce, record, AAD = "IGI" 0x01 "record") ‖ tag (16)
//	K        = HKDF-SHA256(read private key of the entry's node, salt ∅,
//	           info "integrity image record key v1")
//
// The root record's node is the mount node M; the entry at index i of a
// folder whose node is F has node F/i (hardened BIP32 child i of both
// trees, node.Keys.Child): the entries of the root are M/0, M/1, …, the
// entries of a subfolder at M/4 are M/4/0, M/4/1, … as the paper's
// m/34/0/0/{0…n}. K differs from the node's commit key, so image records
// and the node's overlay commits never share a key.
//
// A file's content region starts at contentOff:
//
//	private  = a chainfs/blob blob (version 1) of the content under a
//	           fresh random key: "IGB" 0x01 ‖ 64 KiB chunks sealed with
//	           AES-256-GCM — length E(size), SHA-256 = blobHash, key in the
//	           sealed record
//	public   = data (size) ‖ L1 ‖ L2
//	L1       = SHA-256 of each 64 KiB chunk of data (n = max(1, ⌈size/64 KiB⌉) hashes)
//	L2       = SHA-256 of each 64 KiB block of L1 (2,048 hashes, the
//	           last block shorter); tableHash = SHA-256(L2)
//
// Layout rules, which make every walk terminate: a record's block and
// content regions lie after the header and end at or before the start of
// the block (for the root record: the root) that holds the record. A
// writer puts a folder's file contents and subfolders first, then its
// block; the root record last, then the trailer. A verified image (Verify)
// is tiled exactly by header, content regions, blocks, root and trailer:
// nothing overlaps, nothing is shared, nothing is left over.
//
// # Reading by range
//
// Open fetches the last 64 KiB (trailer, root record and, for small
// images, much more), checks SHA-256(root) = Ref.Root, and opens the root
// record with the mount node's keys. Listing a folder fetches its block
// and checks blockHash; reading a file fetches only the 4 MiB windows of
// chunks it needs: private chunks are authenticated by their GCM tags
// under the file's key (fresh per version, from the checked record);
// public chunks against L1, L1 blocks against L2, L2 against tableHash.
// So a server serving a stale or tampered range is caught before its
// bytes are used, and with a blob.Multi the next server is tried.
//
// # Limits
//
// A reader refuses, with ErrFormat and a message saying why: bad magic,
// version or flags; a root record over 64 KiB; any record over 64 KiB,
// block over 64 MiB, folder of more than 262,144 entries, folder depth
// over 255, walk of more than 2²⁴ entries, file over 1 TiB, symlink
// target over 4,096 bytes, more than 16 servers or a URL over 2,048
// bytes; a name that is empty, "." or "..", holds '/' or NUL, is not
// UTF-8 or repeats in its folder; a non-minimal varint, unknown kind,
// trailing bytes in a record or block; a region outside the image or not
// before its record; a block listed twice. ErrMismatch: bytes that do not
// match their hash. ErrKeys: a private record that does not open.
package image
