package pxe

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/rackflow/rackflow/pxe/dhcp"
	"github.com/rackflow/rackflow/pxe/lease"
)

// ErrBadLease is wrapped by DHCPBackend.Lookup when a stored lease holds an
// address that does not parse: the state file was edited by hand or is
// corrupt, since the API validates every lease it stores.
var ErrBadLease = errors.New("stored lease is not valid")

// LeaseGetter reads the lease of one MAC; *Store is one.
type LeaseGetter interface {
	Get(ctx context.Context, mac net.HardwareAddr) (lease.Lease, bool, error)
}

// DHCPBackend adapts the lease store to dhcp.Backend, so the DHCP server
// answers exactly the MACs the worker registered, with the addresses it
// registered. It keeps nothing of its own: a deleted or expired lease stops
// being answered at once.
type DHCPBackend struct {
	// Leases is read on every DHCP request. Nil knows no MAC.
	Leases LeaseGetter
}

var _ dhcp.Backend = DHCPBackend{}

// Lookup implements dhcp.Backend.
func (b DHCPBackend) Lookup(ctx context.Context, mac net.HardwareAddr) (dhcp.Lease, bool, error) {
	if b.Leases == nil {
		return dhcp.Lease{}, false, nil
	}
	l, found, err := b.Leases.Get(ctx, mac)
	if err != nil {
		return dhcp.Lease{}, false, fmt.Errorf("look up lease of %s: %w", mac, err)
	}
	if !found {
		return dhcp.Lease{}, false, nil
	}
	dl, err := toDHCPLease(l)
	if err != nil {
		return dhcp.Lease{}, false, fmt.Errorf("lease of %s: %w", mac, err)
	}
	return dl, true, nil
}

func toDHCPLease(l lease.Lease) (dhcp.Lease, error) {
	parse := func(field, s string, optional bool) (net.IP, error) {
		if s == "" && optional {
			return nil, nil
		}
		ip := net.ParseIP(s).To4()
		if ip == nil {
			return nil, fmt.Errorf("%w: %s %q is not an IPv4 address", ErrBadLease, field, s)
		}
		return ip, nil
	}
	ip, err := parse("ip", l.IP, false)
	if err != nil {
		return dhcp.Lease{}, err
	}
	mask, err := parse("netmask", l.Netmask, false)
	if err != nil {
		return dhcp.Lease{}, err
	}
	gw, err := parse("gateway", l.Gateway, true)
	if err != nil {
		return dhcp.Lease{}, err
	}
	var dns []net.IP
	for i, d := range l.DNS {
		// DHCPv4 option 6 carries IPv4 servers only; an IPv6 resolver the
		// worker listed is for the live system's own configuration.
		a := net.ParseIP(d)
		if a == nil {
			return dhcp.Lease{}, fmt.Errorf("%w: dns[%d] %q is not an IP address", ErrBadLease, i, d)
		}
		if a4 := a.To4(); a4 != nil {
			dns = append(dns, a4)
		}
	}
	return dhcp.Lease{
		IP:       ip,
		Netmask:  mask,
		Gateway:  gw,
		DNS:      dns,
		Hostname: l.Hostname,
		Profile:  string(l.Profile),
		Expires:  l.ExpiresAt,
	}, nil
}
