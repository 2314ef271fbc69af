// Package delta computes and applies binary deltas between two versions of a
// file, so that a small edit to a large file costs a few bytes on chain
// instead of the whole file.
//
// Diff finds the parts of the new version that already exist in the old one
// (anywhere in it, so inserts that shift the rest of the file, deletions and
// block moves are cheap) and encodes the new version as COPY ops from the old
// version plus INSERT ops carrying the bytes it could not find. Apply rebuilds
// the new version; it treats every delta as hostile, because deltas are read
// from the chain. OutputSize reads the declared size without applying.
//
// # Format, version 1
//
// A delta is a header followed by zero or more ops, up to the end of the
// delta (there is no op count and no terminator):
//
//	offset  size     field
//	0       1        version = 0x01
//	1       uvarint  base length: length in bytes of the old version
//	.       8        base checksum: SHA-256(old)[0:8]
//	.       uvarint  output length: length in bytes of the new version
//	.       8        output checksum: SHA-256(new)[0:8]
//	.       ...      ops
//
// Each op starts with a uvarint h. Its length is n = h >> 1, and n must be at
// least 1. The low bit of h selects the op:
//
//	h & 1 == 0  INSERT  followed by n bytes, appended to the output as they are
//	h & 1 == 1  COPY    followed by an svarint d; appends old[o : o+n] with
//	                    o = c + d, where c is the end (o+n) of the previous
//	                    COPY, or 0 before the first COPY
//
// COPY offsets are relative to where the previous COPY ended because edits
// keep most copies on or near that line, which makes d fit in one byte.
//
// A uvarint is an unsigned integer in LEB128 (7 bits per byte, least
// significant group first, high bit set on every byte but the last), as Go's
// encoding/binary writes it. It is at most 10 bytes long, holds a value below
// 2^63, and is minimal: a varint of more than one byte whose last byte is
// 0x00 is rejected. An svarint is a signed integer v written as the uvarint
// of its zigzag encoding (v << 1) ^ (v >> 63), so 0, -1, 1, -2, ... become
// 0, 1, 2, 3, ....
//
// A reader rejects the delta, without applying anything, when: the version is
// not 1; the header or an op is truncated or holds a malformed varint; the
// base length differs from the length of the old version it is given, or the
// base checksum differs from SHA-256 of it (the delta was made against
// another version); the output length exceeds the caller's limit; an op has
// length 0; a COPY reaches outside the old version; the ops produce more or
// fewer bytes than the output length; or the output's SHA-256 does not start
// with the output checksum.
//
// The checksums guard against applying a delta to the wrong base and against
// a writer's bug; they are not an authenticator (a delta's author can write
// any output, and the envelope's AES-GCM already authenticates the bytes).
//
// Example: turning the 40 bytes "integrity: every change is a transaction"
// into the 47 bytes "integrity: every single change is a transaction" is
// this 31-byte delta (hex):
//
//	01                   version 1
//	28                   base length 40
//	70d859e3a33085ca     SHA-256(old)[0:8]
//	2f                   output length 47
//	abb541ee35e0cd58     SHA-256(new)[0:8]
//	23 00                COPY   n=17 d=0   old[0:17]   "integrity: every "
//	0c 73696e676c65      INSERT n=6        "single"
//	31 01                COPY   n=24 d=-1  old[16:40]  " change is a transaction"
package delta
