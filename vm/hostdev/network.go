package hostdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/time/rate"

	"github.com/integrity-sys/integrity/vm"
)

// DomainSystem resolves names of the paper's Domain System (trust anchors
// on chain). It does not exist yet (netdev/); Network answers "not found"
// after DNS while it is nil.
type DomainSystem interface {
	Lookup(ctx context.Context, name string) ([]netip.Addr, error)
}

// Network is the host side of the VM's network card: DNS first, then the
// Domain System, and outbound TCP through the host's stack.
//
// Outbound TCP goes where a NIC on this machine's network would, with two
// exceptions a guest must not reach through the agent: link-local
// addresses (cloud metadata services at 169.254.169.254 hand out
// credentials), unspecified, multicast and broadcast addresses, always;
// and loopback — the agent's own neighbours: btcd's RPC, secret and image
// servers — unless AllowLoopback. The address is checked at connect time,
// after DNS, so a name that resolves to a refused address is refused
// too. New connections are rate-limited per machine (DialRate).
type Network struct {
	Resolver      *net.Resolver // nil: net.DefaultResolver
	Domains       DomainSystem  // nil: none yet
	Dialer        *net.Dialer   // nil: a zero Dialer (the call's context bounds it)
	AllowLoopback bool

	// DialRate and DialBurst bound new connections (per second, and at
	// once); zero: DefaultDialRate and DefaultDialBurst.
	DialRate  float64
	DialBurst int

	once    sync.Once
	limiter *rate.Limiter
}

// Defaults of the connection rate: enough for a browser-like burst, too
// few for a port scan of the LAN.
const (
	DefaultDialRate  = 10
	DefaultDialBurst = 20
)

// ErrDestination: the guest may not connect there.
var ErrDestination = fmt.Errorf("%w: destination refused by the VM's network policy", vm.ErrForbidden)

// allowed reports whether the guest may connect to a.
func (n *Network) allowed(a netip.Addr) bool {
	a = a.Unmap()
	switch {
	case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(),
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return false
	case a.Is4() && a.As4()[0] == 0:
		return false // 0.0.0.0/8: Linux connects 0.x to this host
	case a.IsLoopback():
		return n.AllowLoopback
	}
	return true
}

var _ vm.Network = (*Network)(nil)

// Resolve implements vm.Network: traditional DNS first; the Domain System
// only when DNS has no answer (the paper's backwards compatibility rule).
func (n *Network) Resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a}, nil
	}
	r := n.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", name)
	if err == nil && len(addrs) > 0 {
		return addrs, nil
	}
	var de *net.DNSError
	notFound := err == nil || (errors.As(err, &de) && de.IsNotFound)
	if n.Domains != nil {
		ds, derr := n.Domains.Lookup(ctx, name)
		if derr == nil && len(ds) > 0 {
			return ds, nil
		}
		if derr != nil && !errors.Is(derr, vm.ErrNoSuch) {
			return nil, fmt.Errorf("resolve %s: DNS: %v; Domain System: %w", name, err, derr)
		}
	}
	if notFound {
		return nil, fmt.Errorf("resolve %s: not in DNS nor the Domain System: %w", name, vm.ErrNoSuch)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("resolve %s: %w (%v)", name, vm.ErrOffline, err)
}

// DialTCP implements vm.Network, trying each address of host in turn.
func (n *Network) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	addrs, err := n.Resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	n.once.Do(func() {
		r, b := n.DialRate, n.DialBurst
		if r <= 0 {
			r = DefaultDialRate
		}
		if b <= 0 {
			b = DefaultDialBurst
		}
		n.limiter = rate.NewLimiter(rate.Limit(r), b)
	})
	if !n.limiter.Allow() {
		return nil, fmt.Errorf("connect %s:%d: %w: more than %v new connections a second", host, port, vm.ErrForbidden, n.limiter.Limit())
	}
	var d net.Dialer
	if n.Dialer != nil {
		d = *n.Dialer
	}
	// Checked on the address actually dialled (no DNS rebinding).
	d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !n.allowed(ap.Addr()) {
			return ErrDestination
		}
		return nil
	}
	var last error
	for _, a := range addrs {
		if !n.allowed(a) {
			last = ErrDestination
			continue
		}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(a.Unmap().String(), strconv.Itoa(int(port))))
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("connect %s:%d: %w", host, port, last)
}
