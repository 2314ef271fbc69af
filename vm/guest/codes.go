// Package guest is the driver a WebAssembly program (GOOS=wasip1) uses to
// reach the System VM's virtual hardware: typed Go wrappers over the
// blockchain, filesystem, identity and network host modules
// (docs/VM-ABI.md). Plain files go through WASI (package os); this
// package adds what WASI lacks. It builds only for wasip1, except for the
// error codes, which the host's tests compare with its own.
package guest

import "fmt"

// Code is a host function's result: 0 is success.
type Code uint32

// Error implements error.
func (c Code) Error() string {
	if int(c) < len(CodeNames) {
		return CodeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint32(c))
}

// Host error codes, as numbered by the ABI.
const (
	OK Code = iota
	ErrFault
	ErrInvalid
	ErrTooBig
	ErrShortBuffer
	ErrNotFound
	ErrLocked
	ErrUnsupported
	ErrDenied
	ErrUnavailable
	ErrRejected
	ErrConflict
	ErrBadHandle
	ErrTimeout
	ErrRefused
	ErrEOF
	ErrLimit
	ErrBadSig
	ErrDecrypt
	ErrExists
	ErrInternal
	ErrCanceled
)

// CodeNames are the codes' names, indexed by Code.
var CodeNames = []string{
	"ok", "fault", "invalid", "too_big", "short_buffer", "not_found", "locked", "not_supported",
	"denied", "unavailable", "rejected", "conflict", "bad_handle", "timeout", "refused", "eof",
	"limit", "bad_signature", "decrypt", "exists", "internal", "canceled",
}

// Key pairs of the identity module.
const (
	PrimaryPair    = 0
	PrivilegedPair = 1
)
