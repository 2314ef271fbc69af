package vm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Code is what every host function returns (docs/VM-ABI.md, "Error
// codes"). Zero is success.
type Code uint32

// The error codes of the ABI. Numbers are part of the ABI: never renumber.
const (
	OK             Code = 0
	ErrFault       Code = 1  // a pointer or length lies outside guest memory
	ErrInvalid     Code = 2  // malformed argument (address, key, path, flags)
	ErrTooBig      Code = 3  // an input exceeds the call's limit
	ErrShortBuffer Code = 4  // the output buffer is too small; *out_len holds the size needed
	ErrNotFound    Code = 5  // no such address, transaction, path or name
	ErrLocked      Code = 6  // the privileged key is locked and the user did not unlock it
	ErrUnsupported Code = 7  // the backing feature does not exist (yet)
	ErrDenied      Code = 8  // not permitted (read-only share, policy)
	ErrUnavailable Code = 9  // the chain or the network cannot be reached
	ErrRejected    Code = 10 // the chain refused the transaction
	ErrConflict    Code = 11 // the transaction spends an output already spent
	ErrBadHandle   Code = 12 // no such open connection
	ErrTimeout     Code = 13 // the operation timed out
	ErrRefused     Code = 14 // the peer refused the connection
	ErrEOF         Code = 15 // the peer closed the connection; no more data
	ErrLimit       Code = 16 // too many open handles
	ErrBadSig      Code = 17 // the signature does not verify
	ErrDecrypt     Code = 18 // wrong key or tampered ciphertext
	ErrExists      Code = 19 // already exists
	ErrInternal    Code = 20 // a host fault (logged); the call had no effect the guest can rely on
	ErrCanceled    Code = 21 // the machine is shutting down
)

var codeNames = map[Code]string{
	OK: "ok", ErrFault: "fault", ErrInvalid: "invalid", ErrTooBig: "too_big", ErrShortBuffer: "short_buffer",
	ErrNotFound: "not_found", ErrLocked: "locked", ErrUnsupported: "not_supported", ErrDenied: "denied",
	ErrUnavailable: "unavailable", ErrRejected: "rejected", ErrConflict: "conflict", ErrBadHandle: "bad_handle",
	ErrTimeout: "timeout", ErrRefused: "refused", ErrEOF: "eof", ErrLimit: "limit", ErrBadSig: "bad_signature",
	ErrDecrypt: "decrypt", ErrExists: "exists", ErrInternal: "internal", ErrCanceled: "canceled",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code(%d)", uint32(c))
}

// Sentinel errors device implementations return (wrapped) so the host
// function can answer with the right code.
var (
	ErrNotSupported = errors.New("not supported yet")
	ErrPrivLocked   = errors.New("the privileged key is locked")
	ErrNotApproved  = errors.New("the user did not approve the operation")
	ErrNoSuch       = errors.New("not found")
	ErrBadInput     = errors.New("invalid argument")
	ErrRefusedTx    = errors.New("transaction rejected")
	ErrDoubleSpend  = errors.New("conflicting spend")
	ErrOffline      = errors.New("unavailable")
	ErrForbidden    = errors.New("not permitted")
	ErrAlready      = errors.New("already exists")
	ErrBadCipher    = errors.New("decryption failed")
)

// codeOf maps a device error to an ABI code.
func codeOf(err error) Code {
	var ne net.Error
	var errno syscall.Errno
	switch {
	case err == nil:
		return OK
	case errors.Is(err, ErrNotSupported):
		return ErrUnsupported
	case errors.Is(err, ErrPrivLocked):
		return ErrLocked
	case errors.Is(err, ErrNotApproved):
		return ErrDenied
	case errors.Is(err, ErrNoSuch):
		return ErrNotFound
	case errors.Is(err, ErrBadInput):
		return ErrInvalid
	case errors.Is(err, ErrRefusedTx):
		return ErrRejected
	case errors.Is(err, ErrDoubleSpend):
		return ErrConflict
	case errors.Is(err, ErrOffline):
		return ErrUnavailable
	case errors.Is(err, ErrForbidden):
		return ErrDenied
	case errors.Is(err, ErrAlready):
		return ErrExists
	case errors.Is(err, ErrBadCipher):
		return ErrDecrypt
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ErrTimeout
	case errors.Is(err, context.Canceled):
		return ErrCanceled
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrRefused
	case errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case errors.As(err, &errno):
		switch errno {
		case syscall.ENOENT:
			return ErrNotFound
		case syscall.EROFS, syscall.EACCES, syscall.EPERM:
			return ErrDenied
		case syscall.EEXIST:
			return ErrExists
		case syscall.EINVAL, syscall.ENOTDIR, syscall.EISDIR, syscall.ENAMETOOLONG:
			return ErrInvalid
		}
	}
	return ErrInternal
}

// memory is the calling guest's memory for one host call. Every access is
// bounds-checked by wazero (offset+length computed in 64 bits); data read
// is copied so later guest writes cannot change what the host works on.
type memory struct{ m api.Memory }

func memOf(mod api.Module) memory { return memory{m: mod.Memory()} }

// bytes copies n bytes at ptr, refusing more than max before touching
// memory: a huge length costs nothing.
func (g memory) bytes(ptr, n, max uint32) ([]byte, Code) {
	if n > max {
		return nil, ErrTooBig
	}
	if g.m == nil {
		return nil, ErrFault
	}
	b, ok := g.m.Read(ptr, n)
	if !ok {
		return nil, ErrFault
	}
	return append([]byte(nil), b...), OK
}

// fixed copies exactly n bytes at ptr.
func (g memory) fixed(ptr, n uint32) ([]byte, Code) { return g.bytes(ptr, n, n) }

// str copies a UTF-8 string without NUL bytes.
func (g memory) str(ptr, n, max uint32) (string, Code) {
	b, c := g.bytes(ptr, n, max)
	if c != OK {
		return "", c
	}
	if !utf8.Valid(b) {
		return "", ErrInvalid
	}
	for _, x := range b {
		if x == 0 {
			return "", ErrInvalid
		}
	}
	return string(b), OK
}

func (g memory) put(ptr uint32, b []byte) Code {
	if g.m == nil || !g.m.Write(ptr, b) {
		return ErrFault
	}
	return OK
}

func (g memory) putU32(ptr, v uint32) Code {
	if g.m == nil || !g.m.WriteUint32Le(ptr, v) {
		return ErrFault
	}
	return OK
}

func (g memory) putU64(ptr uint32, v uint64) Code {
	if g.m == nil || !g.m.WriteUint64Le(ptr, v) {
		return ErrFault
	}
	return OK
}

// writable reports whether [ptr, ptr+n) lies inside guest memory.
func (g memory) writable(ptr, n uint32) bool {
	if g.m == nil {
		return false
	}
	_, ok := g.m.Read(ptr, n)
	return ok
}

// out is the ABI's output convention: the result's length goes to
// *lenPtr (u32); the result itself to [ptr, ptr+cap) if it fits, else
// ErrShortBuffer so the guest can retry with a buffer of *lenPtr bytes.
// Both regions are checked before anything is written.
func (g memory) out(ptr, capacity, lenPtr uint32, b []byte) Code {
	if !g.writable(lenPtr, 4) || !g.writable(ptr, capacity) {
		return ErrFault
	}
	if uint64(len(b)) > uint64(^uint32(0)) {
		return ErrTooBig
	}
	_ = g.putU32(lenPtr, uint32(len(b)))
	if uint32(len(b)) > capacity {
		return ErrShortBuffer
	}
	return g.put(ptr, b)
}

// le32 and le64 build little-endian records.
func le32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
func le64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

// hostFunc is one exported host function: every parameter is an i32, the
// single result is a Code.
type hostFunc struct {
	name   string
	params int
	fn     func(ctx context.Context, g memory, p []uint32) Code
}

// export adds fns to a host module. A panic inside a function (a bug) is
// recovered, logged and answered with ErrInternal: the guest never takes
// the host down.
func export(b wazero.HostModuleBuilder, module string, log *slog.Logger, fns []hostFunc) wazero.HostModuleBuilder {
	for _, f := range fns {
		f := f
		params := make([]api.ValueType, f.params)
		for i := range params {
			params[i] = api.ValueTypeI32
		}
		b = b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			p := make([]uint32, f.params)
			for i := range p {
				p[i] = api.DecodeU32(stack[i])
			}
			code := ErrInternal
			func() {
				defer func() {
					if r := recover(); r != nil {
						log.Error("vm: host function fault", "func", module+"."+f.name, "panic", fmt.Sprint(r))
						code = ErrInternal
					}
				}()
				code = f.fn(ctx, memOf(mod), p)
			}()
			stack[0] = api.EncodeU32(uint32(code))
		}), params, []api.ValueType{api.ValueTypeI32}).Export(f.name)
	}
	return b
}
