package vm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
)

// Network is the machine's network card as the host provides it today:
// name resolution (DNS first, then the Domain System) and outbound TCP.
// Errors wrap ErrNoSuch (no such name), ErrOffline, or net errors.
type Network interface {
	Resolve(ctx context.Context, name string) ([]netip.Addr, error)
	// DialTCP connects to host (a name or an IP literal) and port.
	DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error)
}

// Features the network module reports (network.features).
const (
	NetResolve = 1 << 0
	NetTCP     = 1 << 1
	NetFrames  = 1 << 2 // the virtual NIC carrying Ethernet frames: not yet
)

// Limits of the network module.
const (
	maxHost       = 253
	maxConns      = 64
	maxIO         = 1 << 20
	defaultNetTTL = 30 * time.Second
	maxNetTTL     = 60 * time.Second
)

// conns are a machine's open TCP connections, by handle.
type conns struct {
	mu     sync.Mutex
	next   uint32
	open   map[uint32]net.Conn
	closed bool
}

func (c *conns) add(conn net.Conn) (uint32, Code) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return 0, ErrCanceled
	}
	if len(c.open) >= maxConns {
		conn.Close()
		return 0, ErrLimit
	}
	c.next++
	if c.next == 0 {
		c.next = 1
	}
	c.open[c.next] = conn
	return c.next, OK
}

func (c *conns) get(h uint32) (net.Conn, Code) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conn, ok := c.open[h]
	if !ok {
		return nil, ErrBadHandle
	}
	return conn, OK
}

func (c *conns) remove(h uint32) (net.Conn, Code) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conn, ok := c.open[h]
	if !ok {
		return nil, ErrBadHandle
	}
	delete(c.open, h)
	return conn, OK
}

// closeAll ends every connection (the machine stops); blocked calls return.
func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for h, conn := range c.open {
		conn.Close()
		delete(c.open, h)
	}
}

// ttl turns a guest's timeout in milliseconds into a duration: 0 is the
// default, and no call blocks the machine longer than maxNetTTL.
func ttl(ms uint32) time.Duration {
	if ms == 0 {
		return defaultNetTTL
	}
	d := time.Duration(ms) * time.Millisecond
	if d > maxNetTTL {
		d = maxNetTTL
	}
	return d
}

// validHost accepts DNS names and IP literals.
func validHost(h string) bool {
	if h == "" || len(h) > maxHost {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

func netCode(err error) Code {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return ErrEOF
	}
	return codeOf(err)
}

func networkModule(r wazero.Runtime, dev Network, cs *conns, log *slog.Logger) wazero.HostModuleBuilder {
	features := uint32(0)
	if dev != nil {
		features = NetResolve | NetTCP
	}
	host := func(g memory, p, n uint32) (string, Code) {
		h, c := g.str(p, n, maxHost)
		if c == OK && !validHost(h) {
			c = ErrInvalid
		}
		return h, c
	}
	return export(r.NewHostModuleBuilder("network"), "network", log, []hostFunc{
		// features(out_u32) → NetResolve | NetTCP | NetFrames bits.
		{"features", 1, func(_ context.Context, g memory, p []uint32) Code {
			return g.putU32(p[0], features)
		}},
		// resolve(name, name_len, out, out_cap, out_len) → records of
		// family u8 (4|6) ‖ address[16] (IPv4 as ::ffff:a.b.c.d).
		{"resolve", 5, func(ctx context.Context, g memory, p []uint32) Code {
			name, c := host(g, p[0], p[1])
			if c != OK {
				return c
			}
			if !g.writable(p[4], 4) || !g.writable(p[2], p[3]) {
				return ErrFault
			}
			if dev == nil {
				return ErrUnsupported
			}
			ctx, cancel := context.WithTimeout(ctx, maxNetTTL)
			defer cancel()
			addrs, err := dev.Resolve(ctx, name)
			if err != nil {
				return netCode(err)
			}
			out := make([]byte, 0, 17*len(addrs))
			for _, a := range addrs {
				fam := byte(6)
				if a.Unmap().Is4() {
					fam = 4
				}
				b := a.As16()
				out = append(append(out, fam), b[:]...)
			}
			return g.out(p[2], p[3], p[4], out)
		}},
		// tcp_connect(host, host_len, port, timeout_ms, out_handle).
		{"tcp_connect", 5, func(ctx context.Context, g memory, p []uint32) Code {
			h, c := host(g, p[0], p[1])
			if c != OK {
				return c
			}
			if p[2] == 0 || p[2] > 65535 {
				return ErrInvalid
			}
			if !g.writable(p[4], 4) {
				return ErrFault
			}
			if dev == nil {
				return ErrUnsupported
			}
			ctx, cancel := context.WithTimeout(ctx, ttl(p[3]))
			defer cancel()
			conn, err := dev.DialTCP(ctx, h, uint16(p[2]))
			if err != nil {
				return netCode(err)
			}
			handle, c := cs.add(conn)
			if c != OK {
				return c
			}
			return g.putU32(p[4], handle)
		}},
		// tcp_send(handle, data, len, timeout_ms, out_n).
		{"tcp_send", 5, func(_ context.Context, g memory, p []uint32) Code {
			conn, c := cs.get(p[0])
			if c != OK {
				return c
			}
			data, c := g.bytes(p[1], p[2], maxIO)
			if c != OK {
				return c
			}
			if !g.writable(p[4], 4) {
				return ErrFault
			}
			_ = conn.SetWriteDeadline(time.Now().Add(ttl(p[3])))
			n, err := conn.Write(data)
			_ = g.putU32(p[4], uint32(n))
			if err != nil {
				return netCode(err)
			}
			return OK
		}},
		// tcp_recv(handle, buf, cap, timeout_ms, out_n): ErrEOF once the
		// peer closed and everything was read.
		{"tcp_recv", 5, func(_ context.Context, g memory, p []uint32) Code {
			conn, c := cs.get(p[0])
			if c != OK {
				return c
			}
			if !g.writable(p[4], 4) || !g.writable(p[1], p[2]) {
				return ErrFault
			}
			buf := make([]byte, min(p[2], maxIO))
			_ = conn.SetReadDeadline(time.Now().Add(ttl(p[3])))
			n, err := conn.Read(buf)
			_ = g.putU32(p[4], uint32(n))
			if n > 0 {
				if c := g.put(p[1], buf[:n]); c != OK {
					return c
				}
				return OK
			}
			if err != nil {
				return netCode(err)
			}
			return OK
		}},
		// tcp_close(handle).
		{"tcp_close", 1, func(_ context.Context, _ memory, p []uint32) Code {
			conn, c := cs.remove(p[0])
			if c != OK {
				return c
			}
			conn.Close()
			return OK
		}},
		// frame_send(frame, len) and frame_recv(buf, cap, timeout_ms,
		// out_len): the virtual NIC's Ethernet frames (not yet).
		{"frame_send", 2, func(context.Context, memory, []uint32) Code { return ErrUnsupported }},
		{"frame_recv", 4, func(context.Context, memory, []uint32) Code { return ErrUnsupported }},
	})
}
