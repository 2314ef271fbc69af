package fuse

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
)

// errno maps an FS error to what the kernel gets. Errno values (wrapped or
// not) pass through; a cancelled request is EINTR (the kernel interrupted it,
// or the mount is going away); anything else is a bug or an outage in the
// tree, so it is logged and the program sees EIO.
func errno(log *slog.Logger, op string, ino uint64, err error) syscall.Errno {
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
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return syscall.EINTR
	}
	log.Error("fuse: FS operation failed", "op", op, "ino", ino, "err", err)
	return syscall.EIO
}
