// Package guestnet configures, inside a VM over SSH, the second NIC that
// CloudStack attached for rackflow's multi-NIC setup: it finds the interface
// by MAC (never by name), brings it up with the address CloudStack assigned,
// routes the given destination CIDRs through that network's gateway
// (optionally in a policy routing table), makes this persistent the way the
// guest's distribution does (netplan, NetworkManager or ifupdown), verifies
// that a TCP connection to the other area leaves through the NIC, and undoes
// all of it. Every step reads the current state first, so a re-run changes
// nothing.
//
// It never gives the guest a default route through the new NIC. It is IPv4
// only, and it is not a general network manager: it touches only the routes,
// rules, address and files it owns for that one MAC. It needs iproute2 with
// JSON output (`ip -j`, iproute2 >= 4.18) in the guest.
package guestnet

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// Error types of this package's activities. A bad MAC, CIDR, gateway,
// address or table is the shared activities.ErrTypeInvalidInput.
const (
	// ErrTypeInterfaceNotFound: no interface in the guest has the MAC (yet).
	// Retryable: a hot-plugged NIC can take a moment to show up.
	ErrTypeInterfaceNotFound = "GuestInterfaceNotFound"
	// ErrTypePersistUnsupported: Persist was asked, but the guest has no
	// netplan, NetworkManager or ifupdown configuration rackflow can write
	// to (or ifupdown's interfaces file does not include interfaces.d).
	// Not retryable.
	ErrTypePersistUnsupported = "GuestPersistUnsupported"
	// ErrTypePathNotThroughNic: the guest routes the destination out of
	// another interface (or not at all). Not retryable.
	ErrTypePathNotThroughNic = "GuestPathNotThroughNic"
	// ErrTypeDestinationUnreachable: the route is right but the TCP
	// connection failed (firewall, service down). Retryable.
	ErrTypeDestinationUnreachable = "GuestDestinationUnreachable"
	// ErrTypeCommandFailed: a command in the guest failed. Retryable.
	ErrTypeCommandFailed = "GuestCommandFailed"
	// ErrTypePrimaryInterface: the interface with the MAC carries the
	// VM's primary IP, or the address the SSH session came in on; rackflow
	// never changes routes or addresses there. Not retryable.
	ErrTypePrimaryInterface = "GuestPrimaryInterface"
	// ErrTypeRouteCapture: the SSH session's peer (the worker, or the jump
	// host it comes through) lies inside a CIDR that would be routed
	// through the new NIC, so the routes would cut the session and the
	// worker's way back in. Not retryable: change the CIDRs or reach the
	// guest another way.
	ErrTypeRouteCapture = "GuestRouteCapture"
	// ErrTypeSudoRefused: the login is not root and may not run commands
	// as root through `sudo -n` (no sudoers rule, a rule that asks for a
	// password, or no sudo). Checked before any change. Not retryable: a
	// sudoers rule, or another user, is needed.
	ErrTypeSudoRefused = "GuestSudoRefused"
	// ErrTypeRendererConflict: another configuration of the guest's
	// renderer claims the NIC (a catch-all netplan/networkd file that
	// sorts first, another ifupdown stanza for the interface). Not
	// retryable: that file has to change.
	ErrTypeRendererConflict = "GuestRendererConflict"
)

// NonRetryable lists this package's non-retryable error types and the shared
// ones (bad input, credentials, host keys), for
// RetryPolicy.NonRetryableErrorTypes.
var NonRetryable = slices.Concat(activities.NonRetryableTypes, []string{
	ErrTypePersistUnsupported, ErrTypePathNotThroughNic, ErrTypePrimaryInterface, ErrTypeRouteCapture, ErrTypeSudoRefused,
	ErrTypeRendererConflict,
})

// DefaultRulePriority is the `ip rule` priority when the input gives none:
// ahead of the main table's 32766.
const DefaultRulePriority = 1000

// ConfigureInput says how to set up the NIC with MAC in the guest.
type ConfigureInput struct {
	Target remote.Target `json:"target"`
	// MAC of the NIC, as CloudStack reports it.
	MAC string `json:"mac"`
	// Address is the NIC's IPv4 address with prefix length,
	// "10.51.0.10/24" (CloudStack's NIC IP and netmask).
	Address string `json:"address"`
	// SecondaryIPs are more IPv4 addresses of the NIC (CloudStack's
	// secondary IPs, addIpToNic), on Address's network and with its prefix
	// length. They are added, persisted and removed with Address, and with
	// PolicyRouting traffic from them uses the table too.
	SecondaryIPs []string `json:"secondary_ips,omitempty"`
	// Gateway on the NIC's network through which CIDRs are reached.
	Gateway string `json:"gateway"`
	// CIDRs are the destinations routed through Gateway. 0.0.0.0/0 is
	// refused: the default route stays on the primary NIC.
	CIDRs []string `json:"cidrs"`
	// PolicyRouting puts the routes into table Table instead of main, with
	// `ip rule`s sending traffic to CIDRs and from Address to that table.
	PolicyRouting bool `json:"policy_routing,omitempty"`
	// Table is the routing table (1-252 or above 255) for PolicyRouting.
	Table int `json:"table,omitempty"`
	// RulePriority of the rules; DefaultRulePriority when zero.
	RulePriority int `json:"rule_priority,omitempty"`
	// Persist writes the configuration so it survives a reboot.
	Persist bool `json:"persist,omitempty"`
	// PrimaryMAC and PrimaryIP are the VM's default NIC as CloudStack
	// reports it. The interface carrying either is never configured or
	// unconfigured, whatever MAC is asked for. Optional; the interface the
	// SSH session arrived on is protected the same way in any case.
	PrimaryMAC string `json:"primary_mac,omitempty"`
	PrimaryIP  string `json:"primary_ip,omitempty"`
}

// ConfigureResult says what ConfigureRoutes found and did.
type ConfigureResult struct {
	// Interface is the guest's name for the NIC, e.g. "eth1" or "ens4".
	Interface string `json:"interface"`
	// Changed is false when everything was already in place.
	Changed bool `json:"changed"`
	// Persisted is "<mechanism>:<path>" of the persistent configuration,
	// e.g. "netplan:/etc/netplan/90-rackflow-525400510010.yaml"; empty
	// without Persist.
	Persisted string `json:"persisted,omitempty"`
	// Actions lists what was changed, in order, for the history.
	Actions []string `json:"actions,omitempty"`
}

// VerifyInput asks whether Dest is reached through the NIC with MAC.
type VerifyInput struct {
	Target remote.Target `json:"target"`
	// Dest is "ip:port" in the other area, e.g. "10.52.0.20:5432".
	Dest string `json:"dest"`
	MAC  string `json:"mac"`
}

// VerifyResult is how the connection went out.
type VerifyResult struct {
	Interface string `json:"interface"`
	// Source is the local address the connection used.
	Source string `json:"source"`
}

// plan is a validated ConfigureInput.
type plan struct {
	mac      string         // lower case
	addr     netip.Prefix   // 10.51.0.10/24
	extra    []netip.Prefix // secondary addresses, with addr's prefix length
	gw       netip.Addr
	cidrs    []netip.Prefix // masked, deduplicated
	policy   bool
	table    string // "main" or the number
	priority int
	persist  bool
	// primaryMAC ("" when not given) and primaryIP (invalid when not
	// given) of the VM's default NIC.
	primaryMAC string
	primaryIP  netip.Addr
}

func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", activities.InvalidInputf("mac %q is not an Ethernet MAC address", s)
	}
	return hw.String(), nil
}

// userRe is a login name sudo and sshd accept (POSIX portable, as
// useradd's default NAME_REGEX).
var userRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

func validUser(u string) error {
	if u != "" && !userRe.MatchString(u) {
		return activities.InvalidInputf("user %q is not a login name (lower case letters, digits, _ and -)", u)
	}
	return nil
}

func (in ConfigureInput) plan() (plan, error) {
	var p plan
	if in.Target.Addr == "" {
		return p, activities.InvalidInputf("target has no address")
	}
	if err := validUser(in.Target.User); err != nil {
		return p, err
	}
	mac, err := parseMAC(in.MAC)
	if err != nil {
		return p, err
	}
	p.mac = mac
	p.addr, err = netip.ParsePrefix(in.Address)
	if err != nil || !p.addr.Addr().Is4() || p.addr.Bits() < 1 || p.addr.Bits() > 30 {
		return p, activities.InvalidInputf("address %q is not an IPv4 address with a prefix length of 1-30 (e.g. 10.51.0.10/24)", in.Address)
	}
	for _, s := range in.SecondaryIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() || !p.addr.Masked().Contains(a) || a == p.addr.Addr() {
			return p, activities.InvalidInputf("secondary IP %q is not another IPv4 address on the NIC's network %s", s, p.addr.Masked())
		}
		x := netip.PrefixFrom(a, p.addr.Bits())
		if slices.Contains(p.extra, x) {
			return p, activities.InvalidInputf("secondary IP %s given twice", a)
		}
		p.extra = append(p.extra, x)
	}
	p.gw, err = netip.ParseAddr(in.Gateway)
	if err != nil || !p.gw.Is4() {
		return p, activities.InvalidInputf("gateway %q is not an IPv4 address", in.Gateway)
	}
	if !p.addr.Masked().Contains(p.gw) || p.gw == p.addr.Addr() || slices.Contains(p.extra, netip.PrefixFrom(p.gw, p.addr.Bits())) {
		return p, activities.InvalidInputf("gateway %s is not another address on the NIC's network %s", p.gw, p.addr.Masked())
	}
	if len(in.CIDRs) == 0 {
		return p, activities.InvalidInputf("no destination CIDRs given")
	}
	seen := map[netip.Prefix]bool{}
	for _, c := range in.CIDRs {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil || !pfx.Addr().Is4() {
			return p, activities.InvalidInputf("cidr %q is not an IPv4 CIDR", c)
		}
		if pfx.Bits() == 0 {
			return p, activities.InvalidInputf("cidr %q would be a default route through the new NIC; the default route stays on the primary NIC", c)
		}
		pfx = pfx.Masked()
		if !seen[pfx] {
			seen[pfx] = true
			p.cidrs = append(p.cidrs, pfx)
		}
	}
	p.table = "main"
	if in.PolicyRouting {
		if in.Table < 1 || in.Table == 253 || in.Table == 254 || in.Table == 255 {
			return p, activities.InvalidInputf("table %d: policy routing needs a table of 1-252 or above 255 (253-255 are default, main, local)", in.Table)
		}
		p.policy = true
		p.table = fmt.Sprint(in.Table)
	}
	p.priority = in.RulePriority
	if p.priority == 0 {
		p.priority = DefaultRulePriority
	}
	if p.priority < 1 || p.priority > 32765 {
		return p, activities.InvalidInputf("rule priority %d: want 1-32765", in.RulePriority)
	}
	p.persist = in.Persist
	if in.PrimaryMAC != "" {
		if p.primaryMAC, err = parseMAC(in.PrimaryMAC); err != nil {
			return p, err
		}
		if p.primaryMAC == p.mac {
			return p, activities.NonRetryable(fmt.Sprintf("mac %s is the VM's primary NIC: rackflow configures only a second NIC", p.mac), ErrTypePrimaryInterface, nil)
		}
	}
	if in.PrimaryIP != "" {
		if p.primaryIP, err = netip.ParseAddr(in.PrimaryIP); err != nil || !p.primaryIP.Is4() {
			return p, activities.InvalidInputf("primary_ip %q is not an IPv4 address", in.PrimaryIP)
		}
		if p.primaryIP == p.addr.Addr() || slices.Contains(p.extra, netip.PrefixFrom(p.primaryIP, p.addr.Bits())) {
			return p, activities.NonRetryable(fmt.Sprintf("address %s is the VM's primary IP: rackflow configures only a second NIC", p.addr.Addr()), ErrTypePrimaryInterface, nil)
		}
	}
	return p, nil
}

// addrs are the NIC's address and its secondary ones.
func (p plan) addrs() []netip.Prefix { return append([]netip.Prefix{p.addr}, p.extra...) }

// id is the MAC without colons, used in file and connection names.
func (p plan) id() string { return strings.ReplaceAll(p.mac, ":", "") }

func validEtc(dir string) error {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || strings.ContainsAny(dir, "'\"\\$`\n") {
		return fmt.Errorf("guestnet: EtcDir %q must be a clean absolute path", dir)
	}
	return nil
}
