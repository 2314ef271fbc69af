package fuse

// NotApplicable lists the go-fuse posixtest cases (posixtest.All) that test
// features the tree does not have by design, each with the reason. A mount
// test runs every other case and skips these with the reason. It returns a
// fresh map each call, so no caller can change another's list.
func NotApplicable() map[string]string {
	const noLinks = "hard links are not supported: a node of the tree has exactly one parent, so link(2) fails with EPERM"
	return map[string]string{
		"Link":             noLinks,
		"LinkUnlinkRename": noLinks,
		"FcntlFlockLocksFile": "expects a second descriptor of the same process to be refused a lock the first holds (the OFD-lock behaviour of go-fuse's loopback); " +
			"fcntl(F_SETLK) locks belong to the process, so POSIX grants it: the kernel keeps this mount's locks and grants it, as ext4 and tmpfs do (the case fails on them too)",
		"Tmpfile": "O_TMPFILE is not supported: every node is created under a name in a directory, so open(O_TMPFILE) fails with EOPNOTSUPP",
	}
}
