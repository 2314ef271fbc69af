package hostdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

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
type Network struct {
	Resolver *net.Resolver // nil: net.DefaultResolver
	Domains  DomainSystem  // nil: none yet
	Dialer   *net.Dialer   // nil: a zero Dialer (the call's context bounds it)
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
	d := n.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	var last error
	for _, a := range addrs {
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
