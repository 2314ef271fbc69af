package vm

import (
	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// reservedMemory backs a guest's linear memory with one address-space
// reservation of its maximum size, made readable and writable as the
// guest grows it. Growing never copies and never moves the memory, so
// the host holds only the pages the guest touched. wazero's default, a
// Go slice re-allocated and copied at each growth, left the old copies
// to the garbage collector: a guest capped at 64 MiB took ~156 MiB of
// the host at its peak (TestMemoryCap), which across the agent's sessions
// would be a way for guests to harm it.
type reservedMemory struct {
	buf       []byte // the whole reservation (PROT_NONE past committed)
	committed uint64
}

// allocateMemory is the runtime's experimental.MemoryAllocator. Where the
// reservation cannot be made it falls back to a Go slice.
func allocateMemory(capacity, maxBytes uint64) experimental.LinearMemory {
	if maxBytes > 0 && maxBytes <= 1<<32 {
		b, err := unix.Mmap(-1, 0, int(maxBytes), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
		if err == nil {
			return &reservedMemory{buf: b}
		}
	}
	return &sliceMemory{buf: make([]byte, 0, capacity), max: maxBytes}
}

func (m *reservedMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil // past the cap: memory.grow fails in the guest
	}
	if size > m.committed {
		// Wasm pages (64 KiB) are whole OS pages: both ends are aligned.
		if err := unix.Mprotect(m.buf[m.committed:size], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil
		}
		m.committed = size
	}
	return m.buf[:size]
}

func (m *reservedMemory) Free() {
	if m.buf != nil {
		_ = unix.Munmap(m.buf)
		m.buf, m.committed = nil, 0
	}
}

// sliceMemory is the fallback: a Go slice, copied when it grows.
type sliceMemory struct {
	buf []byte
	max uint64
}

func (m *sliceMemory) Reallocate(size uint64) []byte {
	if m.max > 0 && size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	nb := make([]byte, size)
	copy(nb, m.buf)
	m.buf = nb
	return m.buf
}

func (m *sliceMemory) Free() { m.buf = nil }
