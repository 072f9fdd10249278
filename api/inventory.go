package api

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Inventory is the file that describes the hosts rackflow may provision.
type Inventory struct {
	Hosts []Host `yaml:"hosts" json:"hosts"`
	// NetScalers are the appliances whose servicegroups may hold the
	// hosts as members: DecommissionHost asks each which servicegroups
	// have a member at the host's address before it erases anything.
	NetScalers []NetScalerEntry `yaml:"netscalers,omitempty" json:"netscalers,omitempty"`
}

// NetScalerEntry is one NetScaler of the inventory: a name for reports
// and how to reach it (its credential a reference, as in publish inputs).
type NetScalerEntry struct {
	Name      string `yaml:"name" json:"name"`
	NetScaler `yaml:",inline"`
}

// Host describes one bare-metal host. It holds references to credentials,
// never their values, because it travels through workflow history.
type Host struct {
	// Name is the host's short name; it forms the workflow ID.
	Name string `yaml:"name" json:"name"`
	// BMC is the host's out-of-band controller, the only port of the host
	// on the management network.
	BMC BMC `yaml:"bmc" json:"bmc"`
	// MAC is the address of the NIC that PXE-boots.
	MAC     string  `yaml:"mac" json:"mac"`
	Network Network `yaml:"network" json:"network"`
	// Disk is the target block device, such as /dev/sda. Give it or
	// RootDevice, not both.
	Disk string `yaml:"disk,omitempty" json:"disk,omitempty"`
	// RootDevice names the target disk by serial, WWN, model, by-path
	// link or size range instead: the live system resolves it right
	// before the write, which needs exactly one disk to match.
	RootDevice *RootDevice `yaml:"root_device,omitempty" json:"root_device,omitempty"`
	Image      Image       `yaml:"image" json:"image"`
	SSH        SSH         `yaml:"ssh" json:"ssh"`
	Chef       *Chef       `yaml:"chef,omitempty" json:"chef,omitempty"`
	// Pod names the boot network (provisioning network) the host sits on,
	// a DNS label. DHCP does not cross it, so each pod has its own
	// rackflow-pxe and worker: the host's activities after the inventory
	// lookup run on that worker's queue (PodQueue). Empty: the shared
	// queue, one boot network for the site.
	Pod string `yaml:"pod,omitempty" json:"pod,omitempty"`
}

// BMC locates an IPMI/Redfish controller.
type BMC struct {
	Address string `yaml:"address" json:"address"`
	// Port is the BMC's port: 623 for IPMI, 443 for Redfish when zero.
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// Provider is "ipmi" or "redfish".
	Provider string `yaml:"provider" json:"provider"`
	// Credential names a secret with username and password.
	Credential string `yaml:"credential" json:"credential"`
	// CAFile is a PEM bundle on the worker that a Redfish BMC's
	// certificate must chain to (its name checked too); empty: the
	// system roots. Redfish only.
	CAFile string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`
	// PinSHA256 is the SHA-256 of a Redfish BMC's certificate (hex, colons
	// allowed, as `openssl x509 -noout -fingerprint -sha256` prints it).
	// It is how a BMC's stock self-signed certificate is trusted: that
	// certificate and no other. Redfish only.
	PinSHA256 string `yaml:"pin_sha256,omitempty" json:"pin_sha256,omitempty"`
}

// CredentialDest is where the BMC's credential goes, as secrets.Use.Dest
// takes it: https://address:port for Redfish, address:port for IPMI.
// Call it after Defaults.
func (b BMC) CredentialDest() string {
	hp := net.JoinHostPort(b.Address, strconv.Itoa(b.Port))
	if b.Provider == "redfish" {
		return "https://" + hp
	}
	return hp
}

// NormalizePin returns a certificate pin as 64 lower-case hex digits,
// without colons, or "" when it is not a SHA-256.
func NormalizePin(s string) string {
	p := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if !sha256RE.MatchString(p) {
		return ""
	}
	return p
}

// Network is the host's static address on its provisioning network.
type Network struct {
	IP      string   `yaml:"ip" json:"ip"`
	Netmask string   `yaml:"netmask" json:"netmask"`
	Gateway string   `yaml:"gateway,omitempty" json:"gateway,omitempty"`
	DNS     []string `yaml:"dns,omitempty" json:"dns,omitempty"`
}

// Image is the raw OS image written to the disk.
type Image struct {
	// URL is http(s)://, file:// or an absolute path readable by the worker.
	URL string `yaml:"url" json:"url"`
	// Size is the size in bytes of the raw (uncompressed) image.
	Size int64 `yaml:"size" json:"size"`
	// SHA256 is the hex digest of the raw image. Give it or SHA512.
	SHA256 string `yaml:"sha256,omitempty" json:"sha256,omitempty"`
	// SHA512 is the raw image's sha512, for images published with one.
	SHA512 string `yaml:"sha512,omitempty" json:"sha512,omitempty"`
	// Mode is "push" (default: the worker streams the image over SSH) or
	// "pull" (the live system fetches an http(s) image itself; the worker
	// stays out of the data path).
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty"`
}

// Target describes the host's target disk for messages: its path, or its
// root-device hints.
func (h Host) Target() string {
	if h.RootDevice != nil {
		return "disk with " + h.RootDevice.String()
	}
	return h.Disk
}

// Digest returns the image's checksum algorithm ("sha256" or "sha512")
// and its expected hex digest, lower case.
func (im Image) Digest() (algo, hexDigest string) {
	if im.SHA512 != "" {
		return "sha512", strings.ToLower(im.SHA512)
	}
	return "sha256", strings.ToLower(im.SHA256)
}

// SSH says how rackflow reaches the live system and the installed OS.
type SSH struct {
	User string `yaml:"user,omitempty" json:"user,omitempty"`
	// Port of the installed OS's sshd (22 when zero).
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// LivePort of the live system's sshd (22 when zero).
	LivePort int `yaml:"live_port,omitempty" json:"live_port,omitempty"`
	// Credential names a secret holding the private key rackflow logs in with.
	Credential string `yaml:"credential" json:"credential"`
	// HostKey pins the installed OS's host key (authorized_keys format).
	// Empty: recorded on first contact and reported in the result.
	HostKey string `yaml:"host_key,omitempty" json:"host_key,omitempty"`
	// Jump, when set, is an SSH server on the host's network that rackflow
	// connects through (like ssh -J), for workers that are not on the
	// provisioning network (bare-metal hosts never are on the management
	// network). Both the live system and the installed OS are reached
	// through it.
	Jump *SSHJump `yaml:"jump,omitempty" json:"jump,omitempty"`
}

// SSHJump is a jump host. Its host key is always pinned.
type SSHJump struct {
	// Address is host:port.
	Address    string `yaml:"address" json:"address"`
	User       string `yaml:"user,omitempty" json:"user,omitempty"`
	Credential string `yaml:"credential" json:"credential"`
	HostKey    string `yaml:"host_key" json:"host_key"`
}

// Chef holds the settings of the chef bootstrap.
type Chef struct {
	ServerURL   string   `yaml:"server_url" json:"server_url"`
	RunList     []string `yaml:"run_list" json:"run_list"`
	Environment string   `yaml:"environment,omitempty" json:"environment,omitempty"`
	NodeName    string   `yaml:"node_name,omitempty" json:"node_name,omitempty"`
	// ValidatorName is the validation client's name on the chef server.
	ValidatorName string `yaml:"validator_name,omitempty" json:"validator_name,omitempty"`
	// ValidatorCredential names a secret holding the validator's private key.
	ValidatorCredential string `yaml:"validator_credential" json:"validator_credential"`
	// Command is run on the host after the files are written.
	// Default: "chef-client -j /etc/chef/first-boot.json".
	Command string `yaml:"command,omitempty" json:"command,omitempty"`
}

// Defaults fills zero fields with their documented defaults.
func (h *Host) Defaults() {
	if h.BMC.Provider == "" {
		h.BMC.Provider = "ipmi"
	}
	if h.BMC.Port == 0 {
		if h.BMC.Provider == "redfish" {
			h.BMC.Port = 443
		} else {
			h.BMC.Port = 623
		}
	}
	if h.SSH.User == "" {
		h.SSH.User = "root"
	}
	if h.SSH.Port == 0 {
		h.SSH.Port = 22
	}
	if h.SSH.LivePort == 0 {
		h.SSH.LivePort = 22
	}
	if h.Chef != nil {
		if h.Chef.NodeName == "" {
			h.Chef.NodeName = h.Name
		}
		if h.Chef.ValidatorName == "" {
			h.Chef.ValidatorName = "chef-validator"
		}
		if h.Chef.Command == "" {
			h.Chef.Command = "chef-client -j /etc/chef/first-boot.json"
		}
	}
	if mac, err := net.ParseMAC(h.MAC); err == nil {
		h.MAC = mac.String()
	}
}

// FieldError says which field of an input is wrong and why.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s: %s (got %s)", e.Field, e.Reason, quoteShort(e.Value))
}

// FieldErrors collects every problem of one input, so a user fixes them all
// at once instead of one per attempt.
type FieldErrors []FieldError

func (es FieldErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// ErrUnknownHost is returned when a host is not in the inventory.
var ErrUnknownHost = errors.New("host not in inventory")

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	refRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$`)
	diskRE   = regexp.MustCompile(`^/[A-Za-z0-9_./-]+$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	sha512RE = regexp.MustCompile(`^[0-9a-f]{128}$`)
)

// ValidName reports whether s is a valid host name (DNS label).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidRef reports whether s is a syntactically valid secret reference.
func ValidRef(s string) bool { return refRE.MatchString(s) && !strings.Contains(s, "..") }

// Validate checks a host, after Defaults, and returns FieldErrors naming
// every bad field, or nil.
func (h Host) Validate() error {
	var errs FieldErrors
	add := func(field, value, reason string) {
		errs = append(errs, FieldError{Field: field, Value: value, Reason: reason})
	}
	if !ValidName(h.Name) {
		add("name", h.Name, "must be a DNS label: lower-case letters, digits and '-', at most 63 characters")
	}
	if h.Pod != "" && !ValidName(h.Pod) {
		add("pod", h.Pod, "must be a DNS label: lower-case letters, digits and '-', at most 63 characters")
	}
	if h.BMC.Address == "" {
		add("bmc.address", "", "required")
	} else if _, err := netip.ParseAddr(h.BMC.Address); err != nil && !ValidHostname(h.BMC.Address) {
		add("bmc.address", h.BMC.Address, "not an IP address or host name")
	}
	if h.BMC.Port < 0 || h.BMC.Port > 65535 {
		add("bmc.port", fmt.Sprint(h.BMC.Port), "must be 1-65535")
	}
	switch h.BMC.Provider {
	case "ipmi", "redfish":
	default:
		add("bmc.provider", h.BMC.Provider, `must be "ipmi" or "redfish"`)
	}
	if !ValidRef(h.BMC.Credential) {
		add("bmc.credential", h.BMC.Credential, "must name a secret (letters, digits, _ . / -)")
	}
	if h.BMC.CAFile != "" && (!strings.HasPrefix(h.BMC.CAFile, "/") || strings.Contains(h.BMC.CAFile, "..")) {
		add("bmc.ca_file", h.BMC.CAFile, "must be an absolute path on the worker")
	}
	if h.BMC.PinSHA256 != "" && NormalizePin(h.BMC.PinSHA256) == "" {
		add("bmc.pin_sha256", h.BMC.PinSHA256, "must be the certificate's SHA-256: 64 hex digits, colons allowed")
	}
	if (h.BMC.CAFile != "" || h.BMC.PinSHA256 != "") && h.BMC.Provider != "redfish" {
		add("bmc.provider", h.BMC.Provider, "ca_file and pin_sha256 are for redfish; IPMI has no TLS")
	}
	if mac, err := net.ParseMAC(h.MAC); err != nil || len(mac) != 6 {
		add("mac", h.MAC, "not a 48-bit MAC address like 52:54:00:12:34:56")
	} else if mac[0]&1 == 1 {
		add("mac", h.MAC, "is a multicast address")
	} else if bytes.Equal(mac, make(net.HardwareAddr, 6)) {
		add("mac", h.MAC, "is the all-zero address, which no NIC has")
	}
	ip, ipErr := netip.ParseAddr(h.Network.IP)
	if ipErr != nil || !ip.Is4() {
		add("network.ip", h.Network.IP, "not an IPv4 address")
	}
	prefix := -1
	if m := net.ParseIP(h.Network.Netmask).To4(); m == nil || strings.Contains(h.Network.Netmask, ":") {
		add("network.netmask", h.Network.Netmask, "not an IPv4 netmask")
	} else if ones, bits := net.IPMask(m).Size(); bits == 0 || ones == 0 {
		add("network.netmask", h.Network.Netmask, "not a contiguous netmask")
	} else {
		prefix = ones
	}
	if h.Network.Gateway != "" {
		gw, err := netip.ParseAddr(h.Network.Gateway)
		switch {
		case err != nil || !gw.Is4():
			add("network.gateway", h.Network.Gateway, "not an IPv4 address")
		case ipErr == nil && ip.Is4() && prefix > 0 && !netip.PrefixFrom(ip, prefix).Masked().Contains(gw):
			add("network.gateway", h.Network.Gateway, fmt.Sprintf("not in the host's subnet %s", netip.PrefixFrom(ip, prefix).Masked()))
		}
	}
	for i, d := range h.Network.DNS {
		if !ValidDNSServer(d) {
			add(fmt.Sprintf("network.dns[%d]", i), d, "not an IP address (IPv6 zones are refused)")
		}
	}
	switch {
	case h.RootDevice != nil && h.Disk != "":
		add("root_device", h.RootDevice.String(), "give disk or root_device, not both")
	case h.RootDevice != nil:
		errs = append(errs, h.RootDevice.validate("root_device")...)
	case !diskRE.MatchString(h.Disk) || strings.Contains(h.Disk, ".."):
		add("disk", h.Disk, "must be an absolute device path such as /dev/sda (or give root_device hints)")
	}
	errs = append(errs, h.Image.validate("image")...)
	if h.SSH.Port < 1 || h.SSH.Port > 65535 {
		add("ssh.port", fmt.Sprint(h.SSH.Port), "must be 1-65535")
	}
	if h.SSH.LivePort < 1 || h.SSH.LivePort > 65535 {
		add("ssh.live_port", fmt.Sprint(h.SSH.LivePort), "must be 1-65535")
	}
	if !ValidName(h.SSH.User) && h.SSH.User != "root" {
		add("ssh.user", h.SSH.User, "not a valid user name")
	}
	if !ValidRef(h.SSH.Credential) {
		add("ssh.credential", h.SSH.Credential, "must name a secret holding a private key")
	}
	if h.SSH.HostKey != "" && !looksLikeAuthorizedKey(h.SSH.HostKey) {
		add("ssh.host_key", h.SSH.HostKey, `must be "TYPE BASE64" as in known_hosts`)
	}
	if j := h.SSH.Jump; j != nil {
		if host, port, err := net.SplitHostPort(j.Address); err != nil || host == "" || !validPortString(port) {
			add("ssh.jump.address", j.Address, "must be host:port")
		}
		if j.User != "" && !ValidName(j.User) && j.User != "root" {
			add("ssh.jump.user", j.User, "not a valid user name")
		}
		if !ValidRef(j.Credential) {
			add("ssh.jump.credential", j.Credential, "must name a secret holding a private key")
		}
		if !looksLikeAuthorizedKey(j.HostKey) {
			add("ssh.jump.host_key", j.HostKey, `required: the jump host's key, "TYPE BASE64" as in known_hosts`)
		}
	}
	if c := h.Chef; c != nil {
		if u, err := url.Parse(c.ServerURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add("chef.server_url", c.ServerURL, "must be an http(s) URL")
		}
		if len(c.RunList) == 0 {
			add("chef.run_list", "", "must name at least one recipe or role")
		}
		for i, r := range c.RunList {
			if !runListRE.MatchString(r) {
				add(fmt.Sprintf("chef.run_list[%d]", i), r, `must look like "recipe[name]" or "role[name]"`)
			}
		}
		if !ValidRef(c.ValidatorCredential) {
			add("chef.validator_credential", c.ValidatorCredential, "must name a secret holding the validator key")
		}
		if c.NodeName != "" && !ValidName(c.NodeName) && !ValidHostname(c.NodeName) {
			add("chef.node_name", c.NodeName, "not a valid node name")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

var runListRE = regexp.MustCompile(`^(recipe|role)\[[A-Za-z0-9_.:@-]+\]$`)

func (im Image) validate(prefix string) FieldErrors {
	var errs FieldErrors
	add := func(field, value, reason string) {
		errs = append(errs, FieldError{Field: prefix + "." + field, Value: value, Reason: reason})
	}
	if im.URL == "" {
		add("url", "", "required")
	} else if strings.HasPrefix(im.URL, "/") {
		// a path on the worker
	} else if u, err := url.Parse(im.URL); err != nil {
		add("url", im.URL, "not a URL")
	} else {
		switch u.Scheme {
		case "http", "https":
			if u.Host == "" {
				add("url", im.URL, "has no host")
			}
		case "file":
			if u.Path == "" {
				add("url", im.URL, "has no path")
			}
		default:
			add("url", im.URL, "must be http://, https://, file:// or an absolute path")
		}
	}
	switch im.Mode {
	case "", "push":
	case "pull":
		if !strings.HasPrefix(im.URL, "http://") && !strings.HasPrefix(im.URL, "https://") {
			add("mode", im.Mode, "pull needs an http(s) image URL the host can reach")
		}
	default:
		add("mode", im.Mode, `must be "push" or "pull"`)
	}
	if im.Size <= 0 {
		add("size", fmt.Sprint(im.Size), "must be the raw image's size in bytes")
	}
	switch {
	case im.SHA256 == "" && im.SHA512 == "":
		add("sha256", "", "required: the raw image's sha256 (64 hex digits), or sha512 (128)")
	case im.SHA256 != "" && im.SHA512 != "":
		add("sha512", im.SHA512, "give sha256 or sha512, not both")
	case im.SHA512 != "":
		if !sha512RE.MatchString(im.SHA512) {
			add("sha512", im.SHA512, "must be 128 lower-case hex digits")
		}
	case !sha256RE.MatchString(im.SHA256):
		add("sha256", im.SHA256, "must be 64 lower-case hex digits")
	}
	return errs
}

// ValidHostname reports whether s is a DNS name.
func ValidHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !nameRE.MatchString(strings.ToLower(l)) {
			return false
		}
	}
	return true
}

// looksLikeAuthorizedKey reports whether s is one public key in
// authorized_keys form ("TYPE BASE64 [comment]") that parses as a key.
func looksLikeAuthorizedKey(s string) bool {
	if strings.ContainsAny(s, "\r\n") {
		return false
	}
	f := strings.Fields(s)
	if len(f) < 2 || !(strings.HasPrefix(f[0], "ssh-") || strings.HasPrefix(f[0], "ecdsa-")) {
		return false
	}
	_, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	return err == nil && len(rest) == 0
}

// ValidDNSServer reports whether s is a plain IP address: no IPv6 zone,
// whose free text ("fe80::1%x\nchain http://…") would otherwise reach a
// kernel command line or an iPXE script.
func ValidDNSServer(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}

// Defaults fills in every host's defaults; DecodeFile calls it before
// Validate.
func (inv *Inventory) Defaults() {
	for i := range inv.Hosts {
		inv.Hosts[i].Defaults()
	}
}

// Validate checks every host, and that no two share a name or a MAC. Field
// names are paths into the file ("hosts[2].bmc.address").
func (inv Inventory) Validate() error {
	if len(inv.Hosts) == 0 {
		return FieldErrors{{Field: "hosts", Reason: "no hosts: an inventory needs a hosts: list"}}
	}
	var errs FieldErrors
	seen := map[string]int{}
	macs := map[string]string{}
	for i, h := range inv.Hosts {
		if err := h.Validate(); err != nil {
			var fe FieldErrors
			if errors.As(err, &fe) {
				for _, e := range fe {
					e.Field = fmt.Sprintf("hosts[%d].%s", i, e.Field)
					e.Reason = fmt.Sprintf("host %s: %s", h.Name, e.Reason)
					errs = append(errs, e)
				}
			}
		}
		if j, dup := seen[h.Name]; dup {
			errs = append(errs, FieldError{Field: fmt.Sprintf("hosts[%d].name", i), Value: h.Name, Reason: fmt.Sprintf("duplicates hosts[%d]", j)})
		}
		seen[h.Name] = i
		if other, dup := macs[h.MAC]; dup && h.MAC != "" {
			errs = append(errs, FieldError{Field: fmt.Sprintf("hosts[%d].mac", i), Value: h.MAC, Reason: "already used by host " + other})
		}
		macs[h.MAC] = h.Name
	}
	names := map[string]int{}
	for i, n := range inv.NetScalers {
		f := fmt.Sprintf("netscalers[%d]", i)
		if !ValidName(n.Name) {
			errs = append(errs, FieldError{Field: f + ".name", Value: n.Name, Reason: "must be a short name (letters, digits, '-')"})
		} else if j, dup := names[n.Name]; dup {
			errs = append(errs, FieldError{Field: f + ".name", Value: n.Name, Reason: fmt.Sprintf("duplicates netscalers[%d]", j)})
		}
		names[n.Name] = i
		var fe FieldErrors
		n.NetScaler.validate(&fe)
		for _, e := range fe {
			e.Field = f + "." + strings.TrimPrefix(e.Field, "netscaler.")
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// LoadInventory reads an inventory file with DecodeFile. It is the shape
// the worker's inventory activities load it with, on every run.
func LoadInventory(path string) (*Inventory, error) {
	var inv Inventory
	if err := DecodeFile(path, &inv); err != nil {
		return nil, err
	}
	return &inv, nil
}

// Lookup returns the named host.
func (inv *Inventory) Lookup(name string) (Host, error) {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return Host{}, fmt.Errorf("%w: %q", ErrUnknownHost, name)
}

// Durations are plain strings in inputs ("20m") so they can be typed by hand
// into `temporal workflow start --input`.
func ParseDuration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, FieldErrors{{Field: field, Value: s, Reason: `must be a positive duration like "20m"`}}
	}
	return d, nil
}

func validPortString(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && validPort(n)
}
