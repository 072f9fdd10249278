// Package lease is the pxe service's lease: the record the worker PUTs for a
// PXE-booting NIC, its validation and normal form, the boot profiles, and
// the errors the lease API answers with. It is what pxe, pxe/client and the
// worker's lease activities share.
//
// It is deliberately small and holds no server: importing it links neither
// the DHCP nor the TFTP server, so the worker stays free of them.
package lease

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/api"
)

var (
	// ErrNotFound is returned for a MAC without a lease (or with an expired
	// one) and for an unknown host key token.
	ErrNotFound = errors.New("lease not found")
	// ErrConflict is returned when a PUT would give one IP to two MACs.
	ErrConflict = errors.New("ip already leased to another mac")
)

// Profile says what a host does when it PXE-boots.
type Profile string

const (
	// ProfileLive boots the live system over HTTP, with SSH host key and
	// authorized keys set up for rackflow.
	ProfileLive Profile = "live"
	// ProfileDisk boots the first local disk.
	ProfileDisk Profile = "disk"
	// ProfileNone makes iPXE exit, so the firmware tries its next boot device.
	ProfileNone Profile = "none"
)

// Lease is what the service knows of one PXE-booting NIC.
type Lease struct {
	// MAC is the booting NIC, normalised to lower-case colon form.
	MAC     string   `json:"mac"`
	IP      string   `json:"ip"`
	Netmask string   `json:"netmask"`
	Gateway string   `json:"gateway,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	// Hostname is given to the host by DHCP and the kernel command line.
	Hostname string  `json:"hostname,omitempty"`
	Profile  Profile `json:"profile"`
	// ExpiresAt is when the lease stops being served; zero means never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// BootID is chosen by the worker for each boot; a new BootID gets a new
	// per-boot SSH host key.
	BootID string `json:"boot_id,omitempty"`
	// SSHAuthorizedKeys are the public keys the live system accepts.
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`

	// HostKey is output only: the public half of the live system's per-boot
	// host key, in authorized_keys format, for the worker to pin.
	HostKey string `json:"host_key,omitempty"`
	// UpdatedAt is output only: when the lease last changed.
	UpdatedAt time.Time `json:"updated_at,omitzero"`

	// HostKeyFetchedFrom and HostKeyFetchedAt are output only: which address
	// took this boot's private host key, and when. The worker trusts the
	// key only if that is the lease's own IP.
	HostKeyFetchedFrom string    `json:"host_key_fetched_from,omitempty"`
	HostKeyFetchedAt   time.Time `json:"host_key_fetched_at,omitzero"`
	// Refusals is output only: boot requests for this boot that were
	// refused (from another address, a second key fetch), newest last, at
	// most MaxRefusals (see BootTrusted for what each means).
	Refusals []Refusal `json:"refusals,omitempty"`
}

// Refusal is one refused boot request.
type Refusal struct {
	Route  string    `json:"route"`
	From   string    `json:"from"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// MaxRefusals bounds Lease.Refusals; older ones are dropped.
const MaxRefusals = 16

// Refusal reasons.
const (
	// RefusedOtherIP: a boot route was asked for from another address. It
	// got nothing, so it alone does not make the boot untrusted, but it is
	// recorded: someone on the boot network is reaching for this host.
	RefusedOtherIP = "not the lease's IP"
	// RefusedSecondFetch: the one-time host key was asked for again, from
	// the lease's IP. Either the live system retried or someone with the
	// host's MAC and IP took the key first: the boot cannot be trusted.
	RefusedSecondFetch = "fetched a second time"
)

// BootTrusted says whether this boot's live system can be trusted: its
// host key was fetched from the lease's own IP, exactly once. It returns
// the reason when not.
func (l Lease) BootTrusted() (bool, string) {
	for _, r := range l.Refusals {
		if r.Reason == RefusedSecondFetch {
			return false, fmt.Sprintf("the live system's host key of %s was asked for a second time (from %s at %s): someone else may hold it",
				l.MAC, r.From, r.At.Format(time.RFC3339))
		}
	}
	if l.HostKeyFetchedFrom == "" {
		return false, "the live system's host key was not fetched"
	}
	if l.HostKeyFetchedFrom != l.IP {
		return false, fmt.Sprintf("the live system's host key was fetched from %s, not from the lease's IP %s", l.HostKeyFetchedFrom, l.IP)
	}
	return true, ""
}

// bootIDRE keeps BootID safe to put on a kernel command line unquoted.
var bootIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// NormalizeMAC parses a 48-bit unicast MAC in any form net.ParseMAC accepts
// and returns it in lower-case colon form.
func NormalizeMAC(s string) (string, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return "", fmt.Errorf("not a 48-bit MAC address like 52:54:00:12:34:56")
	}
	if mac[0]&1 == 1 {
		return "", fmt.Errorf("is a multicast address")
	}
	if mac.String() == "00:00:00:00:00:00" {
		return "", fmt.Errorf("is the all-zero address, which no NIC has")
	}
	return mac.String(), nil
}

// Validate checks a lease as received from a PUT and returns api.FieldErrors
// naming every bad field (by its JSON name), or nil. Output-only fields are
// not checked. now is used to refuse an expiry in the past.
func (l Lease) Validate(now time.Time) error {
	var errs api.FieldErrors
	add := func(field, value, reason string) {
		errs = append(errs, api.FieldError{Field: field, Value: value, Reason: reason})
	}
	if l.MAC == "" {
		add("mac", "", "required")
	} else if _, err := NormalizeMAC(l.MAC); err != nil {
		add("mac", l.MAC, err.Error())
	}
	ip, ipErr := netip.ParseAddr(l.IP)
	if l.IP == "" {
		add("ip", "", "required")
	} else if ipErr != nil || !ip.Is4() {
		add("ip", l.IP, "not an IPv4 address")
	}
	prefix := -1
	if l.Netmask == "" {
		add("netmask", "", "required")
	} else if m := net.ParseIP(l.Netmask).To4(); m == nil || strings.Contains(l.Netmask, ":") {
		add("netmask", l.Netmask, "not an IPv4 netmask like 255.255.255.0")
	} else if ones, bits := net.IPMask(m).Size(); bits == 0 || ones == 0 {
		add("netmask", l.Netmask, "not a contiguous netmask")
	} else {
		prefix = ones
	}
	if l.Gateway != "" {
		gw, err := netip.ParseAddr(l.Gateway)
		switch {
		case err != nil || !gw.Is4():
			add("gateway", l.Gateway, "not an IPv4 address")
		case ipErr == nil && ip.Is4() && prefix > 0 && !netip.PrefixFrom(ip, prefix).Masked().Contains(gw):
			add("gateway", l.Gateway, fmt.Sprintf("not in the lease's subnet %s", netip.PrefixFrom(ip, prefix).Masked()))
		}
	}
	for i, d := range l.DNS {
		if !api.ValidDNSServer(d) {
			add(fmt.Sprintf("dns[%d]", i), d, "not an IP address (IPv6 zones are refused)")
		}
	}
	if l.Hostname != "" && !api.ValidHostname(l.Hostname) {
		add("hostname", l.Hostname, "not a DNS name")
	}
	switch l.Profile {
	case ProfileLive, ProfileDisk, ProfileNone:
	case "":
		add("profile", "", `required: "live", "disk" or "none"`)
	default:
		add("profile", string(l.Profile), `must be "live", "disk" or "none"`)
	}
	if !l.ExpiresAt.IsZero() && !l.ExpiresAt.After(now) {
		add("expires_at", l.ExpiresAt.Format(time.RFC3339), "is in the past (leave it out for a lease that never expires)")
	}
	if l.BootID != "" && !bootIDRE.MatchString(l.BootID) {
		add("boot_id", l.BootID, "must be 1-128 characters of letters, digits and . _ : -")
	}
	for i, k := range l.SSHAuthorizedKeys {
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(strings.TrimSpace(string(rest))) > 0 {
			add(fmt.Sprintf("ssh_authorized_keys[%d]", i), truncate(k, 40), "not one public key in authorized_keys format")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Normalized returns the lease as stored: MAC in canonical form, output-only
// fields cleared, empty lists dropped.
func (l Lease) Normalized() Lease {
	if mac, err := NormalizeMAC(l.MAC); err == nil {
		l.MAC = mac
	}
	l.IP = canonIP(l.IP)
	l.Netmask = canonIP(l.Netmask)
	l.Gateway = canonIP(l.Gateway)
	l.HostKey = ""
	l.UpdatedAt = time.Time{}
	l.HostKeyFetchedFrom, l.HostKeyFetchedAt, l.Refusals = "", time.Time{}, nil
	if len(l.DNS) == 0 {
		l.DNS = nil
	} else {
		dns := make([]string, len(l.DNS))
		for i, d := range l.DNS {
			dns[i] = canonIP(d)
		}
		l.DNS = dns
	}
	if len(l.SSHAuthorizedKeys) == 0 {
		l.SSHAuthorizedKeys = nil
	} else {
		keys := make([]string, len(l.SSHAuthorizedKeys))
		for i, k := range l.SSHAuthorizedKeys {
			keys[i] = strings.TrimSpace(k)
		}
		l.SSHAuthorizedKeys = keys
	}
	if !l.ExpiresAt.IsZero() {
		l.ExpiresAt = l.ExpiresAt.UTC()
	}
	return l
}

// Expired reports whether the lease must no longer be served at now.
func (l Lease) Expired(now time.Time) bool {
	return !l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt)
}

// canonIP returns the canonical text form of an address, or s unchanged.
func canonIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

// List is the body of GET /v1/leases.
type List struct {
	Leases []Lease `json:"leases"`
}
