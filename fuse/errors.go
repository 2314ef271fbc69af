package fuse

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
)

// errno maps an FS error to what the kernel gets. Errno values (wrapped or
// not) pass through. A context error is EINTR only if the kernel really
// interrupted this request (ctx is its context): programs retry EINTR, and
// an FS that is shutting down must not make them retry forever. Anything
// else is a bug or an outage in the tree, so it is logged and the program
// sees EIO.
func errno(ctx context.Context, log *slog.Logger, op string, ino uint64, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == 0 {
			// A zero Errno wrapped in an error is a contradiction; do not
			// turn a failure into success.
			log.Error("fuse: FS returned a zero errno as an error", "op", op, "ino", ino, "err", err)
			return syscall.EIO
		}
		return e
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return syscall.EINTR
	}
	log.Error("fuse: FS operation failed", "op", op, "ino", ino, "err", err)
	return syscall.EIO
}
