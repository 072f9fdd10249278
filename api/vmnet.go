package api

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// Workflow names of multi-NIC VM setup.
const (
	WorkflowSetupVMNetwork    = "SetupVMNetwork"
	WorkflowTeardownVMNetwork = "TeardownVMNetwork"
)

// VMNetWorkflowID is the one workflow ID for a VM's NIC on a network.
func VMNetWorkflowID(vm, network string) string { return "vmnet/" + vm + "/" + network }

// CloudStack names the API endpoint; Credential is a reference to a secret
// whose username is the API key and password the secret key. The worker's
// secrets file decides whether that secret may be sent to URL.
type CloudStack struct {
	URL        string `json:"url" yaml:"url"`
	Credential string `json:"credential" yaml:"credential"`
	// VerifySSL checks the server's TLS certificate. Absent means true;
	// only an explicit false (labs with self-signed certificates) turns
	// the check off. Older inputs that set it keep their meaning.
	VerifySSL *bool `json:"verify_ssl,omitempty" yaml:"verify_ssl,omitempty"`
}

// Insecure reports whether the input turned TLS verification off.
func (c CloudStack) Insecure() bool { return c.VerifySSL != nil && !*c.VerifySSL }

// GuestSSH says how to reach the VM over SSH. HostKey pins its host key.
type GuestSSH struct {
	Address string `json:"address" yaml:"address"` // host:port
	// User logs in; root when empty. Another user (a cloud image's default
	// user, as root SSH is forbidden there) runs the changes through
	// `sudo -n`, so it needs a passwordless sudoers rule.
	User       string `json:"user,omitempty" yaml:"user,omitempty"`
	Credential string `json:"credential" yaml:"credential"`
	HostKey    string `json:"host_key" yaml:"host_key"`
}

// VMNetInput starts SetupVMNetwork (and TeardownVMNetwork). Typed by hand:
//
//	{"vm":"web01","network":"secnet","cidrs":["10.52.0.0/24"],"verify":"10.52.0.20:5432",
//	 "guest":{"address":"10.50.0.10:22","credential":"ssh/guests","host_key":"ssh-ed25519 AAAA..."},
//	 "cloudstack":{"url":"https://cloud.internal/client/api","credential":"cloudstack/rackflow"}}
type VMNetInput struct {
	// VM and Network are CloudStack ids or names.
	VM      string `json:"vm" yaml:"vm"`
	Network string `json:"network" yaml:"network"`
	// IP asks for a fixed address on the network (optional).
	IP string `json:"ip,omitempty" yaml:"ip,omitempty"`
	// SecondaryIPs are more addresses on the network for the new NIC
	// (CloudStack secondary IPs, addIpToNic), configured in the guest too.
	SecondaryIPs []string `json:"secondary_ips,omitempty" yaml:"secondary_ips,omitempty"`
	// Project is the CloudStack project (its id) the VM and network belong
	// to; CloudStack does not list a project's resources without it.
	Project string `json:"project,omitempty" yaml:"project,omitempty"`
	// CIDRs of the other area to route through the new NIC.
	CIDRs []string `json:"cidrs" yaml:"cidrs"`
	// Gateway on the new network; the network's when empty.
	Gateway string `json:"gateway,omitempty" yaml:"gateway,omitempty"`
	// PolicyRouting puts the routes in their own table with source rules.
	PolicyRouting bool `json:"policy_routing,omitempty" yaml:"policy_routing,omitempty"`
	Table         int  `json:"table,omitempty" yaml:"table,omitempty"`
	// Verify is an address:port in the other area the guest must reach
	// through the new NIC (optional but recommended).
	Verify     string     `json:"verify,omitempty" yaml:"verify,omitempty"`
	Guest      GuestSSH   `json:"guest" yaml:"guest"`
	CloudStack CloudStack `json:"cloudstack" yaml:"cloudstack"`
}

// VMNetResult describes the NIC and what the run did.
type VMNetResult struct {
	VMID      string `json:"vm_id"`
	NetworkID string `json:"network_id"`
	NicID     string `json:"nic_id"`
	MAC       string `json:"mac"`
	IP        string `json:"ip"`
	Interface string `json:"interface"`
	// NicAdded is true when this run added the NIC.
	NicAdded bool `json:"nic_added"`
	// RoutesChanged is false when the guest already was as asked.
	RoutesChanged bool   `json:"routes_changed"`
	Persisted     string `json:"persisted,omitempty"`
	// VerifiedSource is the source address the guest used to reach Verify.
	VerifiedSource string `json:"verified_source,omitempty"`
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var guestUserRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

var idOrNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

// Validate checks the input before any call.
func (in VMNetInput) Validate() error {
	var errs FieldErrors
	add := func(f, v, r string) { errs = append(errs, FieldError{Field: f, Value: v, Reason: r}) }
	if !idOrNameRE.MatchString(in.VM) {
		add("vm", in.VM, "must be a CloudStack id or name")
	}
	if !idOrNameRE.MatchString(in.Network) {
		add("network", in.Network, "must be a CloudStack id or name")
	}
	if in.IP != "" && !validIPv4(in.IP) {
		add("ip", in.IP, "not an IPv4 address")
	}
	seen := map[string]bool{in.IP: in.IP != ""}
	for i, ip := range in.SecondaryIPs {
		switch {
		case !validIPv4(ip):
			add(fmt.Sprintf("secondary_ips[%d]", i), ip, "not an IPv4 address")
		case seen[ip]:
			add(fmt.Sprintf("secondary_ips[%d]", i), ip, "given twice")
		}
		seen[ip] = true
	}
	if in.Project != "" && !uuidRE.MatchString(in.Project) {
		add("project", in.Project, "must be the CloudStack project's id (a UUID)")
	}
	if len(in.CIDRs) == 0 {
		add("cidrs", "", "at least one destination CIDR is required")
	}
	for i, c := range in.CIDRs {
		p, err := netip.ParsePrefix(c)
		switch {
		case err != nil || !p.Addr().Is4():
			add(fmt.Sprintf("cidrs[%d]", i), c, "not an IPv4 CIDR like 10.52.0.0/24")
		case p.Bits() == 0:
			add(fmt.Sprintf("cidrs[%d]", i), c, "a default route through the new NIC is never added")
		case p.Masked() != p:
			add(fmt.Sprintf("cidrs[%d]", i), c, "has host bits set (did you mean "+p.Masked().String()+"?)")
		}
	}
	if in.Gateway != "" && !validIPv4(in.Gateway) {
		add("gateway", in.Gateway, "not an IPv4 address")
	}
	if in.Table < 0 || in.Table > 252 {
		add("table", fmt.Sprint(in.Table), "must be 1-252")
	}
	if in.Verify != "" {
		if ap, err := netip.ParseAddrPort(in.Verify); err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
			add("verify", in.Verify, "must be IPv4:port")
		}
	}
	if _, _, err := net.SplitHostPort(in.Guest.Address); err != nil {
		add("guest.address", in.Guest.Address, "must be host:port")
	}
	if in.Guest.User != "" && !guestUserRE.MatchString(in.Guest.User) {
		add("guest.user", in.Guest.User, "must be a login name (lower case letters, digits, _ and -)")
	}
	if !ValidRef(in.Guest.Credential) {
		add("guest.credential", in.Guest.Credential, "must name a secret holding a private key")
	}
	if !looksLikeAuthorizedKey(in.Guest.HostKey) {
		add("guest.host_key", in.Guest.HostKey, `required: the guest's host key, "TYPE BASE64"`)
	}
	if !strings.HasPrefix(in.CloudStack.URL, "http://") && !strings.HasPrefix(in.CloudStack.URL, "https://") {
		add("cloudstack.url", in.CloudStack.URL, "must be the API URL, e.g. https://cloud/client/api")
	}
	if !ValidRef(in.CloudStack.Credential) {
		add("cloudstack.credential", in.CloudStack.Credential, "must name a secret")
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
