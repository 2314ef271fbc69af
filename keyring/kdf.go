package keyring

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// The password key (paper: "Password Key") is derived from the password and
// a random salt by a memory-hard KDF. The salt and the KDF's parameters are
// published on chain in the boot-salt message (envelope.TypeBootSalt), so
// another device can re-derive the key from the password alone, and so the
// parameters can be raised at the next password change without a protocol
// change.
//
// Serialised parameters (KDFParams.MarshalBinary), format version 1. All
// integers are little-endian, like the rest of docs/PROTOCOL.md; the
// derived key is always 32 bytes and is not encoded.
//
//	offset size field
//	0      1    format version = 0x01
//	1      1    algorithm: 0x01 Argon2id (RFC 9106, version 0x13)
//	                       0x02 PBKDF2-HMAC-SHA256 (RFC 8018)
//
//	Argon2id (algorithm 0x01):
//	2      4    t, passes (uint32)
//	6      4    m, memory in KiB (uint32)
//	10     1    p, lanes / parallelism (uint8)
//	11     1    salt length L (uint8)
//	12     L    salt
//
//	PBKDF2-HMAC-SHA256 (algorithm 0x02):
//	2      4    iterations (uint32)
//	6      1    salt length L (uint8)
//	7      L    salt
//
// The encoding is exact: trailing bytes, an unknown version or algorithm,
// and parameters outside the limits below are all refused. Argon2id is used
// without a secret key or associated data.
//
// Limits. Decoding enforces them as well as encoding, because a client
// derives with whatever parameters it reads: floors so that a client never
// produces (or accepts from a forged or buggy message) a cheaply
// brute-forced password key, ceilings so that a hostile message cannot make
// the client allocate gigabytes or spin for minutes.
//
//   - Argon2id: 1 ≤ t ≤ 16; 19 MiB ≤ m ≤ 4 GiB; 1 ≤ p ≤ 16; t·m ≥ 38 MiB
//     and t·m ≤ 16 GiB. The floor is OWASP's weakest recommended Argon2id
//     configuration (m = 19 MiB, t = 2, p = 1); t·m ≥ 38 MiB also admits
//     its m = 46 MiB, t = 1 alternative. Memory is the property that makes
//     GPU and ASIC attacks expensive, hence a hard floor on m alone.
//   - PBKDF2-HMAC-SHA256: 600,000 ≤ iterations ≤ 10,000,000. The floor is
//     OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256; the ceiling costs
//     about 1.4 s on the reference 2-core machine.
//   - Salt: 16 to 64 bytes (RFC 9106 recommends 16).
const (
	kdfFormatV1 byte = 0x01

	// MinSaltSize and MaxSaltSize bound the salt length.
	MinSaltSize = 16
	MaxSaltSize = 64
	// DefaultSaltSize is the salt length this code generates.
	DefaultSaltSize = 16

	// Argon2id limits (memory in KiB).
	MinArgon2Time        = 1
	MaxArgon2Time        = 16
	MinArgon2MemoryKiB   = 19 * 1024
	MaxArgon2MemoryKiB   = 4 * 1024 * 1024
	MinArgon2Threads     = 1
	MaxArgon2Threads     = 16
	MinArgon2TimeMemKiB  = 2 * MinArgon2MemoryKiB // t·m floor
	MaxArgon2TimeMemKiB  = 16 * 1024 * 1024       // t·m ceiling
	DefaultArgon2Time    = 3
	DefaultArgon2Memory  = 64 * 1024
	DefaultArgon2Threads = 4

	// PBKDF2-HMAC-SHA256 limits.
	MinPBKDF2Iterations     = 600_000
	MaxPBKDF2Iterations     = 10_000_000
	DefaultPBKDF2Iterations = 600_000
)

// KDFAlgorithm identifies a password KDF in the serialised parameters.
type KDFAlgorithm byte

// The KDF registry. Values are never reused.
const (
	KDFArgon2id         KDFAlgorithm = 0x01
	KDFPBKDF2HMACSHA256 KDFAlgorithm = 0x02
)

func (a KDFAlgorithm) String() string {
	switch a {
	case KDFArgon2id:
		return "argon2id"
	case KDFPBKDF2HMACSHA256:
		return "pbkdf2-hmac-sha256"
	}
	return fmt.Sprintf("kdf-0x%02x", byte(a))
}

// ErrKDFParams is wrapped by every error about invalid or unsupported KDF
// parameters, so callers can tell "this boot-salt message is unusable"
// from I/O errors.
var ErrKDFParams = errors.New("invalid password KDF parameters")

// KDFParams are the password KDF's algorithm, cost and salt. The zero value
// is invalid; get one from NewKDFParams, NewPBKDF2Params or ParseKDFParams.
type KDFParams struct {
	Algorithm KDFAlgorithm
	// Argon2id.
	Time      uint32 // passes over memory
	MemoryKiB uint32
	Threads   uint8
	// PBKDF2-HMAC-SHA256.
	Iterations uint32
	// Salt is random, generated afresh at every password change.
	Salt []byte
}

// NewKDFParams returns the default parameters, Argon2id with RFC 9106's
// second recommended option (t=3, m=64 MiB, p=4), with a fresh random salt.
// One derivation takes about 0.1 s on the reference 2-core machine
// (BenchmarkDeriveDefault).
func NewKDFParams() (KDFParams, error) {
	salt, err := newSalt()
	if err != nil {
		return KDFParams{}, err
	}
	return KDFParams{
		Algorithm: KDFArgon2id,
		Time:      DefaultArgon2Time,
		MemoryKiB: DefaultArgon2Memory,
		Threads:   DefaultArgon2Threads,
		Salt:      salt,
	}, nil
}

// NewPBKDF2Params returns PBKDF2-HMAC-SHA256 parameters (the paper's
// wording) with the given iteration count and a fresh random salt.
// iterations 0 means DefaultPBKDF2Iterations.
func NewPBKDF2Params(iterations uint32) (KDFParams, error) {
	if iterations == 0 {
		iterations = DefaultPBKDF2Iterations
	}
	salt, err := newSalt()
	if err != nil {
		return KDFParams{}, err
	}
	p := KDFParams{Algorithm: KDFPBKDF2HMACSHA256, Iterations: iterations, Salt: salt}
	if err := p.Validate(); err != nil {
		return KDFParams{}, err
	}
	return p, nil
}

// TestKDFParams returns the cheapest parameters the decoder accepts
// (Argon2id t=2, m=19 MiB, p=1, about 16 ms here) with a fresh random salt.
// They exist so that tests of the bootstrap and sign-on flows run fast
// through the very same validation as production; never use them for a
// real password.
func TestKDFParams() KDFParams {
	salt := make([]byte, DefaultSaltSize)
	if _, err := rand.Read(salt); err != nil {
		// crypto/rand.Read does not fail on supported platforms (it
		// crashes the program instead); keep a deterministic salt rather
		// than a signature that forces every test to check an error.
		copy(salt, "integrity-test-salt")
	}
	return KDFParams{
		Algorithm: KDFArgon2id,
		Time:      2,
		MemoryKiB: MinArgon2MemoryKiB,
		Threads:   1,
		Salt:      salt,
	}
}

func newSalt() ([]byte, error) {
	salt := make([]byte, DefaultSaltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("keyring: generating password salt: %w", err)
	}
	return salt, nil
}

// Validate checks the parameters against the floors and ceilings
// documented above.
func (p KDFParams) Validate() error {
	if n := len(p.Salt); n < MinSaltSize || n > MaxSaltSize {
		return fmt.Errorf("%w: salt of %d bytes (want %d..%d)", ErrKDFParams, n, MinSaltSize, MaxSaltSize)
	}
	switch p.Algorithm {
	case KDFArgon2id:
		if p.Iterations != 0 {
			return fmt.Errorf("%w: argon2id with a PBKDF2 iteration count", ErrKDFParams)
		}
		if p.Time < MinArgon2Time || p.Time > MaxArgon2Time {
			return fmt.Errorf("%w: argon2id t=%d (want %d..%d)", ErrKDFParams, p.Time, MinArgon2Time, MaxArgon2Time)
		}
		if p.MemoryKiB < MinArgon2MemoryKiB || p.MemoryKiB > MaxArgon2MemoryKiB {
			return fmt.Errorf("%w: argon2id m=%d KiB (want %d..%d KiB)", ErrKDFParams, p.MemoryKiB, MinArgon2MemoryKiB, MaxArgon2MemoryKiB)
		}
		if p.Threads < MinArgon2Threads || p.Threads > MaxArgon2Threads {
			return fmt.Errorf("%w: argon2id p=%d (want %d..%d)", ErrKDFParams, p.Threads, MinArgon2Threads, MaxArgon2Threads)
		}
		tm := uint64(p.Time) * uint64(p.MemoryKiB)
		if tm < MinArgon2TimeMemKiB {
			return fmt.Errorf("%w: argon2id t·m=%d KiB is below the floor of %d KiB (use t≥2 at m=19 MiB)", ErrKDFParams, tm, MinArgon2TimeMemKiB)
		}
		if tm > MaxArgon2TimeMemKiB {
			return fmt.Errorf("%w: argon2id t·m=%d KiB exceeds the ceiling of %d KiB", ErrKDFParams, tm, MaxArgon2TimeMemKiB)
		}
	case KDFPBKDF2HMACSHA256:
		if p.Time != 0 || p.MemoryKiB != 0 || p.Threads != 0 {
			return fmt.Errorf("%w: pbkdf2 with argon2 cost parameters", ErrKDFParams)
		}
		if p.Iterations < MinPBKDF2Iterations {
			return fmt.Errorf("%w: pbkdf2 with %d iterations is below the floor of %d", ErrKDFParams, p.Iterations, MinPBKDF2Iterations)
		}
		if p.Iterations > MaxPBKDF2Iterations {
			return fmt.Errorf("%w: pbkdf2 with %d iterations exceeds the ceiling of %d", ErrKDFParams, p.Iterations, MaxPBKDF2Iterations)
		}
	default:
		return fmt.Errorf("%w: unknown algorithm %v", ErrKDFParams, p.Algorithm)
	}
	return nil
}

// MarshalBinary encodes valid parameters in the format documented above.
func (p KDFParams) MarshalBinary() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var b []byte
	switch p.Algorithm {
	case KDFArgon2id:
		b = make([]byte, 0, 12+len(p.Salt))
		b = append(b, kdfFormatV1, byte(p.Algorithm))
		b = binary.LittleEndian.AppendUint32(b, p.Time)
		b = binary.LittleEndian.AppendUint32(b, p.MemoryKiB)
		b = append(b, p.Threads, byte(len(p.Salt)))
	case KDFPBKDF2HMACSHA256:
		b = make([]byte, 0, 7+len(p.Salt))
		b = append(b, kdfFormatV1, byte(p.Algorithm))
		b = binary.LittleEndian.AppendUint32(b, p.Iterations)
		b = append(b, byte(len(p.Salt)))
	}
	return append(b, p.Salt...), nil
}

// UnmarshalBinary decodes and validates parameters; see ParseKDFParams.
func (p *KDFParams) UnmarshalBinary(b []byte) error {
	q, err := ParseKDFParams(b)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParseKDFParams decodes parameters read from the chain and refuses any
// outside the floors and ceilings. It never panics. The returned salt does
// not alias b.
func ParseKDFParams(b []byte) (KDFParams, error) {
	if len(b) < 2 {
		return KDFParams{}, fmt.Errorf("%w: %d bytes is too short", ErrKDFParams, len(b))
	}
	if b[0] != kdfFormatV1 {
		return KDFParams{}, fmt.Errorf("%w: unknown format version %d", ErrKDFParams, b[0])
	}
	p := KDFParams{Algorithm: KDFAlgorithm(b[1])}
	var rest []byte
	switch p.Algorithm {
	case KDFArgon2id:
		if len(b) < 12 {
			return KDFParams{}, fmt.Errorf("%w: argon2id parameters of %d bytes are truncated", ErrKDFParams, len(b))
		}
		p.Time = binary.LittleEndian.Uint32(b[2:])
		p.MemoryKiB = binary.LittleEndian.Uint32(b[6:])
		p.Threads = b[10]
		rest = b[11:]
	case KDFPBKDF2HMACSHA256:
		if len(b) < 7 {
			return KDFParams{}, fmt.Errorf("%w: pbkdf2 parameters of %d bytes are truncated", ErrKDFParams, len(b))
		}
		p.Iterations = binary.LittleEndian.Uint32(b[2:])
		rest = b[6:]
	default:
		return KDFParams{}, fmt.Errorf("%w: unknown algorithm %v", ErrKDFParams, p.Algorithm)
	}
	n := int(rest[0])
	if len(rest)-1 != n {
		return KDFParams{}, fmt.Errorf("%w: salt length %d but %d bytes follow", ErrKDFParams, n, len(rest)-1)
	}
	p.Salt = append([]byte(nil), rest[1:]...)
	if err := p.Validate(); err != nil {
		return KDFParams{}, err
	}
	return p, nil
}

// DeriveKey derives the 32-byte password key. It validates the parameters
// first, so it cannot be made to run below the floors or above the
// ceilings. The password is used byte for byte (the CLI reads it as UTF-8);
// the caller should wipe it afterwards.
func DeriveKey(password []byte, p KDFParams) (Key, error) {
	if err := p.Validate(); err != nil {
		return Key{}, err
	}
	if len(password) == 0 {
		return Key{}, errors.New("keyring: empty password")
	}
	return deriveUnchecked(password, p)
}

// deriveUnchecked runs the KDF without the policy checks; the known-answer
// tests use it with the published (tiny) vector parameters.
func deriveUnchecked(password []byte, p KDFParams) (Key, error) {
	var k Key
	switch p.Algorithm {
	case KDFArgon2id:
		out := argon2.IDKey(password, p.Salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
		copy(k[:], out)
		Wipe(out)
	case KDFPBKDF2HMACSHA256:
		// crypto/pbkdf2 takes the password as a string, which cannot be
		// wiped; the copy lives until the garbage collector reuses it.
		out, err := pbkdf2.Key(sha256.New, string(password), p.Salt, int(p.Iterations), KeySize)
		if err != nil {
			return Key{}, fmt.Errorf("keyring: pbkdf2: %w", err)
		}
		copy(k[:], out)
		Wipe(out)
	default:
		return Key{}, fmt.Errorf("%w: unknown algorithm %v", ErrKDFParams, p.Algorithm)
	}
	return k, nil
}
