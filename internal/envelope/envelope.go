// Package envelope encodes and decodes integrity's on-chain messages: an
// OP_RETURN output script carrying the System prefix, a header push with the
// protocol version and message type, and the message's fields as further
// pushes. It is the one place that knows the byte layout of that script (see
// docs/PROTOCOL.md, "Envelope"). It is a leaf package so that keyring (which
// publishes bootstrap messages) and chainfs can share it without importing
// each other.
package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Prefix is the first push of every integrity message.
const Prefix = "INTG"

// Version is the protocol version this code writes. Decode accepts only it:
// a future version gets its own decoder rather than a guess.
const Version byte = 1

// Limits on what Decode accepts. They bound the work a hostile script can
// cause; honest messages stay well below them.
const (
	// MaxScriptSize is the largest OP_RETURN script accepted (bytes). It is
	// the 100 KB data-carrier limit of Bitcoin Core v30+ relay policy.
	MaxScriptSize = 100_000
	// MaxFields is the largest number of field pushes after the header.
	MaxFields = 64
)

const (
	opReturn    = 0x6a
	op0         = 0x00
	opPushData1 = 0x4c
	opPushData2 = 0x4d
	opPushData4 = 0x4e
	op1Negate   = 0x4f
	op1         = 0x51
	op16        = 0x60
)

// Type identifies a message. The registry of values lives in types.go and in
// docs/PROTOCOL.md.
type Type byte

// Message is a decoded envelope.
type Message struct {
	Type   Type
	Fields [][]byte
}

// Errors returned by Decode. ErrNotIntegrity means the script is some other
// OP_RETURN (or not one at all) and can be skipped silently; ErrMalformed
// means it claims to be ours but is broken and is worth a log line.
var (
	ErrNotIntegrity = errors.New("envelope: not an integrity message")
	ErrMalformed    = errors.New("envelope: malformed integrity message")
	ErrVersion      = errors.New("envelope: unsupported protocol version")
)

// Encode builds the OP_RETURN script for a message. It fails only when the
// result would exceed the limits Decode enforces, so everything Encode
// produces decodes.
func Encode(t Type, fields ...[]byte) ([]byte, error) {
	if len(fields) > MaxFields {
		return nil, fmt.Errorf("envelope: %d fields exceed the limit of %d", len(fields), MaxFields)
	}
	size := 1 + pushSize(len(Prefix)) + pushSize(2)
	for _, f := range fields {
		size += pushSize(len(f))
	}
	if size > MaxScriptSize {
		return nil, fmt.Errorf("envelope: script of %d bytes exceeds the limit of %d", size, MaxScriptSize)
	}
	s := make([]byte, 0, size)
	s = append(s, opReturn)
	s = appendPush(s, []byte(Prefix))
	s = appendPush(s, []byte{Version, byte(t)})
	for _, f := range fields {
		s = appendPush(s, f)
	}
	return s, nil
}

// EncodedSize returns the script length Encode would produce for fields of
// the given sizes, so callers can budget fees before building anything.
func EncodedSize(fieldSizes ...int) int {
	size := 1 + pushSize(len(Prefix)) + pushSize(2)
	for _, n := range fieldSizes {
		size += pushSize(n)
	}
	return size
}

// Decode parses an output script. It never panics; every failure is one of
// the package's errors (wrapped with detail).
func Decode(script []byte) (Message, error) {
	if len(script) == 0 || script[0] != opReturn {
		return Message{}, ErrNotIntegrity
	}
	if len(script) > MaxScriptSize {
		return Message{}, fmt.Errorf("%w: script of %d bytes exceeds %d", ErrMalformed, len(script), MaxScriptSize)
	}
	r := reader{s: script, off: 1}
	prefix, err := r.next()
	if err != nil || string(prefix) != Prefix {
		return Message{}, ErrNotIntegrity
	}
	hdr, err := r.next()
	if err != nil {
		return Message{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if len(hdr) != 2 {
		return Message{}, fmt.Errorf("%w: header of %d bytes, want 2", ErrMalformed, len(hdr))
	}
	if hdr[0] != Version {
		return Message{}, fmt.Errorf("%w: version %d", ErrVersion, hdr[0])
	}
	m := Message{Type: Type(hdr[1])}
	for !r.done() {
		if len(m.Fields) == MaxFields {
			return Message{}, fmt.Errorf("%w: more than %d fields", ErrMalformed, MaxFields)
		}
		f, err := r.next()
		if err != nil {
			return Message{}, fmt.Errorf("%w: field %d: %v", ErrMalformed, len(m.Fields), err)
		}
		m.Fields = append(m.Fields, f)
	}
	return m, nil
}

// pushSize is the encoded size of a push of n bytes.
func pushSize(n int) int {
	switch {
	case n <= 75:
		return 1 + n
	case n <= 0xff:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	default:
		return 5 + n
	}
}

// appendPush appends a data push. It always uses a length-prefixed form
// (never OP_1..OP_16 for one-byte data) so the bytes read back are the bytes
// written without special cases.
func appendPush(s, data []byte) []byte {
	n := len(data)
	switch {
	case n <= 75:
		s = append(s, byte(n))
	case n <= 0xff:
		s = append(s, opPushData1, byte(n))
	case n <= 0xffff:
		s = append(s, opPushData2, byte(n), byte(n>>8))
	default:
		s = append(s, opPushData4, byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	}
	return append(s, data...)
}

type reader struct {
	s   []byte
	off int
}

func (r *reader) done() bool { return r.off >= len(r.s) }

// next reads one push. Small-integer opcodes are accepted (other encoders
// use them for one-byte data) and mapped to the byte they push; any
// non-push opcode is an error.
func (r *reader) next() ([]byte, error) {
	if r.done() {
		return nil, errors.New("unexpected end of script")
	}
	op := r.s[r.off]
	r.off++
	var n int
	switch {
	case op == op0:
		return []byte{}, nil
	case op <= 75:
		n = int(op)
	case op == opPushData1:
		if len(r.s)-r.off < 1 {
			return nil, errors.New("truncated OP_PUSHDATA1 length")
		}
		n = int(r.s[r.off])
		r.off++
	case op == opPushData2:
		if len(r.s)-r.off < 2 {
			return nil, errors.New("truncated OP_PUSHDATA2 length")
		}
		n = int(binary.LittleEndian.Uint16(r.s[r.off:]))
		r.off += 2
	case op == opPushData4:
		if len(r.s)-r.off < 4 {
			return nil, errors.New("truncated OP_PUSHDATA4 length")
		}
		n64 := uint64(binary.LittleEndian.Uint32(r.s[r.off:]))
		r.off += 4
		if n64 > uint64(len(r.s)) {
			return nil, fmt.Errorf("push of %d bytes past end of script", n64)
		}
		n = int(n64)
	case op == op1Negate:
		return []byte{0x81}, nil
	case op >= op1 && op <= op16:
		return []byte{op - op1 + 1}, nil
	default:
		return nil, fmt.Errorf("non-push opcode 0x%02x", op)
	}
	if n > len(r.s)-r.off {
		return nil, fmt.Errorf("push of %d bytes past end of script", n)
	}
	d := r.s[r.off : r.off+n : r.off+n]
	r.off += n
	return d, nil
}

// AAD returns the additional authenticated data that binds a ciphertext to
// the protocol version, its message type and the address (HASH160 of the
// key) that publishes it, so a ciphertext cannot be replayed into another
// node or another message type.
func AAD(t Type, addrHash160 []byte) []byte {
	aad := make([]byte, 0, len(Prefix)+2+len(addrHash160))
	aad = append(aad, Prefix...)
	aad = append(aad, Version, byte(t))
	return append(aad, addrHash160...)
}
