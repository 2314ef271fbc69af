package fuse

import (
	"context"
	"time"
)

// Kind of a node. The zero value is invalid so that a forgotten field is
// caught (the adapter answers EIO) rather than silently shown as a file.
type Kind uint8

const (
	KindFile Kind = iota + 1
	KindDir
	KindSymlink
)

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	}
	return "invalid"
}

// Attr is what the mount shows of a node. There is no owner: every node
// appears owned by the user who mounted the tree. There is no atime either:
// the mount shows Mtime in its place, so reading never causes a commit.
type Attr struct {
	// Ino is the node's number: nonzero, below 1<<63 (numbers above are the
	// adapter's own, for the .history view), stable for the node's life
	// (renames and moves keep it), and never reused for another node while a
	// mount is up.
	Ino   uint64
	Kind  Kind
	Mode  uint32 // permission bits only (07777)
	Size  int64  // content length for files, target length for symlinks
	Mtime time.Time
	Ctime time.Time
	// Nlink is 1 for a linked file or symlink, 2 plus the number of
	// subdirectories for a directory, and 0 once the node has been removed
	// (or replaced by a rename) while the kernel still holds it open.
	Nlink uint32
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Kind Kind
}

// SetAttrIn says which attributes to change; nil fields stay as they are.
type SetAttrIn struct {
	Mode  *uint32 // permission bits only
	Size  *int64  // truncate or extend (with zeros); files only
	Mtime *time.Time
}

// Revision is one committed version of a node, as listed in .history.
type Revision struct {
	Rev     int // 1, 2, ... in commit order
	Time    time.Time
	Size    int64 // must equal len(ReadRevision(rev))
	Summary string
}

// StatFS answers statfs(2) (df).
type StatFS struct {
	BlockSize   uint32 // bytes per block for the three counts below
	Blocks      uint64
	BlocksFree  uint64
	BlocksAvail uint64
	Files       uint64
	FilesFree   uint64
	NameLen     uint32 // 0 means MaxNameLen
}

// MaxNameLen is the longest name (in bytes) the mount accepts; longer names
// fail with ENAMETOOLONG before they reach the FS.
const MaxNameLen = 255

// FS is what the mount needs of the tree. It is inode-number based: the
// adapter keeps no paths, only numbers, so a node renamed or moved by another
// device stays the same open file here.
//
// Errors are (or wrap) syscall.Errno (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR,
// EISDIR, EROFS, ENOSPC, EINVAL, ENAMETOOLONG, ENODATA, EXDEV...); a context
// error becomes EINTR; anything else becomes EIO with a log line.
//
// Every method may be called concurrently. Byte slices passed in (Write,
// SetXattr) belong to the caller and are reused after the call returns: copy
// what you keep. Byte slices returned are not modified by the adapter.
//
// Which calls carry a commit:
//   - Create, Remove, Rename, SetAttr without Size, SetXattr and RemoveXattr
//     are whole changes: the FS schedules their commit itself. The Create of
//     a file is always followed by a Flush of the new node (at close of the
//     creating descriptor, or at once for mknod(2)), so the FS may hold the
//     creation back and commit it with the first content.
//   - Write and SetAttr with Size change content and may be staged: the
//     adapter follows them with Flush when a file handle that changed the node
//     is closed (close(2) of each descriptor, and release), or at once for a
//     truncate(2) with no file open; and with Fsync when the program asks.
//   - Flush schedules the commit and returns without waiting for it; Fsync
//     (fsync(2)/fdatasync(2) on a file or a directory) returns only once what
//     was written is durable and broadcast.
//
// Removed nodes: after Remove, or a Rename that replaces its target, the
// removed node's number must keep answering GetAttr (with Nlink 0), Read,
// Write, SetAttr, Flush and Fsync until Forget is called for it, because a
// program may still hold it open (POSIX unlink-while-open).
type FS interface {
	Root() uint64
	Lookup(ctx context.Context, dir uint64, name string) (Attr, error)
	GetAttr(ctx context.Context, ino uint64) (Attr, error)
	SetAttr(ctx context.Context, ino uint64, in SetAttrIn) (Attr, error)
	// ReadDir lists a directory, without "." and "..", in a stable order
	// (directory offsets are positions in this list).
	ReadDir(ctx context.Context, dir uint64) ([]DirEntry, error)
	// Create makes a file, directory or symlink (target is the symlink's
	// content; empty for the others). EEXIST if the name is taken.
	Create(ctx context.Context, dir uint64, name string, kind Kind, mode uint32, target string) (Attr, error)
	// Remove unlinks a name: isDir selects rmdir(2) (ENOTDIR, ENOTEMPTY) or
	// unlink(2) (EISDIR) semantics.
	Remove(ctx context.Context, dir uint64, name string, isDir bool) error
	// Rename follows rename(2): an existing target is replaced (a directory
	// only by a directory, and only if empty) unless noReplace is set, in
	// which case it fails with EEXIST. Moving a directory below itself is
	// EINVAL.
	Rename(ctx context.Context, oldDir uint64, oldName string, newDir uint64, newName string, noReplace bool) error
	ReadLink(ctx context.Context, ino uint64) (string, error)
	// Read fills dest from off and returns the count; fewer than len(dest)
	// only at the end of the file (0 at or past the end).
	Read(ctx context.Context, ino uint64, off int64, dest []byte) (int, error)
	// Write stores data at off (extending with zeros if off is past the end)
	// and returns len(data) unless it fails.
	Write(ctx context.Context, ino uint64, off int64, data []byte) (int, error)
	Flush(ctx context.Context, ino uint64) error // close(2): schedule the commit, do not wait
	Fsync(ctx context.Context, ino uint64) error // fsync(2): return once durable and broadcast
	// Extended attributes: the adapter passes only "user." names. GetXattr
	// and RemoveXattr of a missing name fail with ENODATA; SetXattr flags
	// are XATTR_CREATE (EEXIST if present) and XATTR_REPLACE (ENODATA if
	// absent).
	GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error)
	SetXattr(ctx context.Context, ino uint64, name string, value []byte, flags uint32) error
	ListXattr(ctx context.Context, ino uint64) ([]string, error)
	RemoveXattr(ctx context.Context, ino uint64, name string) error
	StatFS(ctx context.Context) (StatFS, error)
	// History lists the committed revisions of a file or symlink, oldest
	// first. ReadRevision returns one revision's whole content (a symlink's
	// target); ENOENT for an unknown revision.
	History(ctx context.Context, ino uint64) ([]Revision, error)
	ReadRevision(ctx context.Context, ino uint64, rev int) ([]byte, error)
	// Forget says the kernel no longer references ino: no open file, no
	// cached name. A removed node (Nlink 0) can be dropped now; a linked one
	// may be evicted from caches. Called from the kernel's FORGET, so it
	// must not block.
	Forget(ino uint64)
}
