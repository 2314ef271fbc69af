package keyring

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// The Backup Key (paper: "shown to the User in a human-readable form") is
// 16 bytes of entropy followed by a 4-byte checksum, the first 4 bytes of
// SHA-256(entropy): 160 bits, written as 32 Crockford base32 characters in
// 8 groups of 4, e.g. "7K3M-Q9XD-...". 128 bits of entropy is beyond brute
// force; the 32-bit checksum catches a mistyped character with probability
// 1 - 2^-32 before the user waits for a chain scan that would fail anyway.
//
// The 32-byte key used for XOR wrapping is HKDF-SHA256(ikm = entropy,
// salt = none, info = "integrity backup key v1"), so the key that touches
// ciphertexts is never the string the user writes down.
const (
	BackupEntropySize  = 16
	backupChecksumSize = 4
	backupChars        = 32 // (16+4)·8 / 5
	backupGroup        = 4
	backupKeyInfo      = "integrity backup key v1"
	// maxBackupInput bounds the input the parser looks at, so a pasted
	// file does not cost more than a short scan.
	maxBackupInput = 256
)

// crockford is Crockford's base32 alphabet: digits and letters without
// I, L, O and U, so that the commonly confused letters need not be told
// apart by the user.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Errors from ParseBackupKey; all wrap ErrInvalidBackupKey.
var (
	ErrInvalidBackupKey  = errors.New("invalid backup key")
	ErrBackupKeyChecksum = fmt.Errorf("%w: checksum mismatch, a character is mistyped", ErrInvalidBackupKey)
)

// BackupKey is the user's backup key. The zero value is invalid.
type BackupKey struct {
	entropy [BackupEntropySize]byte
}

// NewBackupKey generates a backup key from crypto/rand.
func NewBackupKey() (BackupKey, error) {
	var b BackupKey
	if _, err := rand.Read(b.entropy[:]); err != nil {
		return BackupKey{}, fmt.Errorf("keyring: generating backup key: %w", err)
	}
	return b, nil
}

// Text returns the form shown to the user: 8 groups of 4 Crockford base32
// characters separated by dashes.
func (b *BackupKey) Text() string {
	var raw [BackupEntropySize + backupChecksumSize]byte
	copy(raw[:], b.entropy[:])
	sum := sha256.Sum256(b.entropy[:])
	copy(raw[BackupEntropySize:], sum[:backupChecksumSize])
	chars := encodeCrockford(raw[:])
	Wipe(raw[:])
	var sb strings.Builder
	sb.Grow(backupChars + backupChars/backupGroup - 1)
	for i := 0; i < backupChars; i += backupGroup {
		if i > 0 {
			sb.WriteByte('-')
		}
		sb.Write(chars[i : i+backupGroup])
	}
	Wipe(chars)
	return sb.String()
}

// Key returns the 32-byte key used in the XOR wrappers.
func (b *BackupKey) Key() Key {
	out, err := hkdf.Key(sha256.New, b.entropy[:], nil, backupKeyInfo, KeySize)
	if err != nil {
		// hkdf.Key fails only for lengths above 255·32 bytes.
		panic("keyring: hkdf of 32 bytes failed: " + err.Error())
	}
	var k Key
	copy(k[:], out)
	Wipe(out)
	return k
}

// Wipe clears the backup key. Best effort: see the package doc.
func (b *BackupKey) Wipe() {
	clear(b.entropy[:])
}

// Format implements fmt.Formatter so that logging a BackupKey by mistake
// does not print it; use Text to show it to the user.
func (b BackupKey) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte("keyring.BackupKey(redacted)"))
}

// ParseBackupKey reads a backup key typed by the user. It is tolerant of
// case, spaces, missing or extra dashes, and Crockford's confusables
// (O→0, I and L→1), and explains what is wrong otherwise: the wrong number
// of characters, an invalid character and its position (counted in the
// input as typed, from 1), or a checksum mismatch, pointing at the likely
// character when exactly one single-character correction fits.
func ParseBackupKey(s string) (BackupKey, error) {
	if len(s) > maxBackupInput {
		return BackupKey{}, fmt.Errorf("%w: %d characters is far too long (want %d, in 8 groups of 4)", ErrInvalidBackupKey, len(s), backupChars)
	}
	vals := make([]byte, 0, backupChars)
	pos := make([]int, 0, backupChars) // input position of each value
	n := 0
	for _, r := range s {
		n++
		switch {
		case r == '-' || r == ' ' || r == '\t' || r == '\n' || r == '\r':
			continue
		}
		v, ok := crockfordValue(r)
		if !ok {
			return BackupKey{}, fmt.Errorf("%w: invalid character %q at position %d (backup keys use 0-9 and A-Z without U)", ErrInvalidBackupKey, r, n)
		}
		vals = append(vals, v)
		pos = append(pos, n)
	}
	defer Wipe(vals)
	if len(vals) != backupChars {
		return BackupKey{}, fmt.Errorf("%w: %d characters, want %d (8 groups of 4)", ErrInvalidBackupKey, len(vals), backupChars)
	}
	if b, ok := backupFromValues(vals); ok {
		return b, nil
	}
	// Look for the single character whose correction makes the checksum
	// match: 32·31 checks, microseconds. Only the position is reported;
	// the user re-reads it from their copy.
	found := -1
	for i := range vals {
		orig := vals[i]
		for v := byte(0); v < 32; v++ {
			if v == orig {
				continue
			}
			vals[i] = v
			if b, ok := backupFromValues(vals); ok {
				b.Wipe()
				if found >= 0 && found != i {
					found = -2 // ambiguous: say nothing specific
				} else if found == -1 {
					found = i
				}
			}
		}
		vals[i] = orig
	}
	if found >= 0 {
		return BackupKey{}, fmt.Errorf("%w (probably character %d of group %d, position %d as typed)", ErrBackupKeyChecksum, found%backupGroup+1, found/backupGroup+1, pos[found])
	}
	return BackupKey{}, ErrBackupKeyChecksum
}

// backupFromValues decodes 32 five-bit values and checks the checksum.
func backupFromValues(vals []byte) (BackupKey, bool) {
	var raw [BackupEntropySize + backupChecksumSize]byte
	defer Wipe(raw[:])
	var acc uint64
	bits, j := 0, 0
	for _, v := range vals {
		acc = acc<<5 | uint64(v)
		bits += 5
		for bits >= 8 {
			bits -= 8
			raw[j] = byte(acc >> bits)
			j++
		}
	}
	var b BackupKey
	copy(b.entropy[:], raw[:BackupEntropySize])
	sum := sha256.Sum256(b.entropy[:])
	if subtle.ConstantTimeCompare(sum[:backupChecksumSize], raw[BackupEntropySize:]) != 1 {
		b.Wipe()
		return BackupKey{}, false
	}
	return b, true
}

// encodeCrockford encodes 20 bytes as 32 characters (160 bits, no padding).
func encodeCrockford(raw []byte) []byte {
	out := make([]byte, 0, backupChars)
	var acc uint64
	bits := 0
	for _, c := range raw {
		acc = acc<<8 | uint64(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out = append(out, crockford[(acc>>bits)&31])
		}
	}
	return out
}

func crockfordValue(r rune) (byte, bool) {
	if r >= 'a' && r <= 'z' {
		r -= 'a' - 'A'
	}
	switch r {
	case 'O':
		r = '0'
	case 'I', 'L':
		r = '1'
	}
	if r > 0x7f {
		return 0, false
	}
	i := strings.IndexByte(crockford, byte(r))
	if i < 0 {
		return 0, false
	}
	return byte(i), true
}
