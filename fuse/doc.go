// Package fuse mounts an integrity tree as a Linux filesystem (FUSE, through
// go-fuse v2). It is an adapter and nothing else: the tree is anything that
// implements the small, inode-number based FS interface (chainfs in the
// product, memfs in tests); this package turns kernel requests into calls on
// it, maps errors to errno values, serves the read-only history view at
// <mount>/.history, and mounts, unmounts and clears stale mounts.
//
// The mount shows every node as owned by the user that mounted it, asks the
// kernel to check permissions (default_permissions), and leaves file locks to
// the kernel (they are local to this machine, which is all a single mount
// needs). Hard links, device nodes, FIFOs, sockets and O_TMPFILE are not
// supported because a node of the tree has exactly one parent and is a file,
// a directory or a symlink.
package fuse
