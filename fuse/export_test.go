package fuse

// KernelRW leaves the kernel mount writable under ReadOnly, so a test sees
// the adapter's own EROFS rather than the kernel's.
func KernelRW(o *Options) { o.kernelRW = true }
