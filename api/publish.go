package api

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Workflow names of L4 publishing.
const (
	WorkflowPublishService   = "PublishService"
	WorkflowUnpublishService = "UnpublishService"
	WorkflowUpdateBackends   = "UpdateBackends"
)

// PublishWorkflowID is the one workflow ID of every operation on a VIP and
// port (publish, update, unpublish), so two of them never race.
func PublishWorkflowID(vip string, port int) string { return fmt.Sprintf("publish/%s:%d", vip, port) }

// NetScaler names the device to configure. Credential is a reference.
type NetScaler struct {
	URL        string `json:"url" yaml:"url"`
	Credential string `json:"credential" yaml:"credential"`
	// CA is a PEM CA bundle (public) that signs the device's certificate.
	CA string `json:"ca,omitempty" yaml:"ca,omitempty"`
	// Insecure skips TLS verification: labs only.
	Insecure bool `json:"insecure,omitempty" yaml:"insecure,omitempty"`
	// Auth is "session" (default) or "header".
	Auth string `json:"auth,omitempty" yaml:"auth,omitempty"`
	// ServerName is the name the device's certificate is issued for, when
	// it is not the URL's host (the stock certificate does not name the IP).
	ServerName string `json:"server_name,omitempty" yaml:"server_name,omitempty"`
	// PinSHA256 is the hex SHA-256 of the device's certificate: trusts a
	// self-signed certificate without turning verification off.
	PinSHA256 string `json:"pin_sha256,omitempty" yaml:"pin_sha256,omitempty"`
	// Partition is the admin partition to configure (session auth only).
	Partition string `json:"partition,omitempty" yaml:"partition,omitempty"`
}

// MaxDrainSeconds bounds drain_seconds.
const MaxDrainSeconds = 3600

// Backend is one server behind the VIP.
type Backend struct {
	IP     string `json:"ip" yaml:"ip"`
	Port   int    `json:"port" yaml:"port"`
	Weight int    `json:"weight,omitempty" yaml:"weight,omitempty"`
}

// INAT maps a public IP to one private host (both ways).
type INAT struct {
	PublicIP  string `json:"public_ip" yaml:"public_ip"`
	PrivateIP string `json:"private_ip" yaml:"private_ip"`
}

// RNAT sends a private subnet out through a NAT IP.
type RNAT struct {
	Network string `json:"network" yaml:"network"`
	Netmask string `json:"netmask" yaml:"netmask"`
	NATIP   string `json:"nat_ip" yaml:"nat_ip"`
}

// PublishInput starts PublishService. Typed by hand:
//
//	{"name":"web","vip":"203.0.113.10","port":443,"protocol":"SSL_BRIDGE",
//	 "backends":[{"ip":"10.0.1.11","port":443},{"ip":"10.0.1.12","port":443}],
//	 "netscaler":{"url":"https://ns.mgmt","credential":"netscaler/main"}}
type PublishInput struct {
	Name      string    `json:"name" yaml:"name"`
	VIP       string    `json:"vip" yaml:"vip"`
	Port      int       `json:"port" yaml:"port"`
	Protocol  string    `json:"protocol" yaml:"protocol"`
	LBMethod  string    `json:"lb_method,omitempty" yaml:"lb_method,omitempty"`
	Backends  []Backend `json:"backends" yaml:"backends"`
	Monitor   string    `json:"monitor,omitempty" yaml:"monitor,omitempty"`
	INAT      *INAT     `json:"inat,omitempty" yaml:"inat,omitempty"`
	RNAT      *RNAT     `json:"rnat,omitempty" yaml:"rnat,omitempty"`
	NetScaler NetScaler `json:"netscaler" yaml:"netscaler"`
	// DrainSeconds removes backends gracefully on a re-publish: each is
	// disabled with this delay before it is unbound. 0: at once.
	DrainSeconds int `json:"drain_seconds,omitempty" yaml:"drain_seconds,omitempty"`
	// UpWaitSeconds is how long, after saving, to wait for the vserver to
	// come UP before the run reports it DOWN; 30 when 0.
	UpWaitSeconds int `json:"up_wait_seconds,omitempty" yaml:"up_wait_seconds,omitempty"`
}

// PublishResult says what a publication looks like on the device.
type PublishResult struct {
	WorkflowID   string    `json:"workflow_id"`
	ServiceGroup string    `json:"service_group"`
	VServer      string    `json:"vserver"`
	INAT         string    `json:"inat,omitempty"`
	RNAT         string    `json:"rnat,omitempty"`
	Backends     []Backend `json:"backends"`
	// Created lists the objects this run created (the rest existed).
	Created []string `json:"created,omitempty"`
	// State is the vserver's curstate after publishing: UP, DOWN or OUT OF
	// SERVICE (empty for runs that did not read it).
	State string `json:"state,omitempty"`
}

// UnpublishInput starts UnpublishService.
type UnpublishInput struct {
	VIP       string    `json:"vip"`
	Port      int       `json:"port"`
	NetScaler NetScaler `json:"netscaler"`
}

// UpdateBackendsInput starts UpdateBackends: the full new backend list.
type UpdateBackendsInput struct {
	VIP       string    `json:"vip"`
	Port      int       `json:"port"`
	Backends  []Backend `json:"backends"`
	NetScaler NetScaler `json:"netscaler"`
	// DrainSeconds removes old backends gracefully (see PublishInput).
	DrainSeconds int `json:"drain_seconds,omitempty"`
}

// Protocols NetScaler load-balances that rackflow publishes. SSL and
// SSL_TCP are not among them: they terminate TLS on the vserver, which
// stays DOWN until a certificate is bound, and rackflow binds none;
// SSL_BRIDGE passes TLS through to the backends.
var Protocols = map[string]bool{"TCP": true, "UDP": true, "HTTP": true, "SSL_BRIDGE": true, "ANY": true, "DNS": true}

// LBMethods are the values NITRO accepts for an lbvserver's lbmethod, in the
// order of the NITRO reference (lbvserver, "Possible values"). It is the
// one list: PublishInput.Validate (in the starter and the workflows) and the
// nitro activities both check against it, and a test holds it equal to the
// fake NetScaler's. An empty PublishInput.LBMethod means the NetScaler
// default, LEASTCONNECTION.
var LBMethods = []string{"ROUNDROBIN", "LEASTCONNECTION", "LEASTRESPONSETIME", "URLHASH", "DOMAINHASH",
	"DESTINATIONIPHASH", "SOURCEIPHASH", "SRCIPDESTIPHASH", "LEASTBANDWIDTH", "LEASTPACKETS", "TOKEN",
	"SRCIPSRCPORTHASH", "LRTM", "CALLIDHASH", "CUSTOMLOAD", "LEASTREQUEST", "AUDITLOGHASH",
	"STATICPROXIMITY", "USER_TOKEN"}

var serviceNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

func validIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

func (n NetScaler) validate(errs *FieldErrors) {
	add := func(f, v, r string) { *errs = append(*errs, FieldError{Field: "netscaler." + f, Value: v, Reason: r}) }
	if !strings.HasPrefix(n.URL, "https://") && !strings.HasPrefix(n.URL, "http://") {
		add("url", n.URL, "must be the device's http(s) management URL")
	}
	if !ValidRef(n.Credential) {
		add("credential", n.Credential, "must name a secret")
	}
	if n.Auth != "" && n.Auth != "session" && n.Auth != "header" {
		add("auth", n.Auth, `must be "session" or "header"`)
	}
	if n.Partition != "" && n.Auth == "header" {
		add("partition", n.Partition, "needs session auth: a partition switch belongs to a session")
	}
}

func validateBackends(backends []Backend, errs *FieldErrors) {
	if len(backends) == 0 {
		*errs = append(*errs, FieldError{Field: "backends", Reason: "at least one backend is required"})
	}
	seen := map[string]bool{}
	for i, b := range backends {
		f := fmt.Sprintf("backends[%d]", i)
		if !validIPv4(b.IP) {
			*errs = append(*errs, FieldError{Field: f + ".ip", Value: b.IP, Reason: "not an IPv4 address"})
		}
		if !validPort(b.Port) {
			*errs = append(*errs, FieldError{Field: f + ".port", Value: fmt.Sprint(b.Port), Reason: "must be 1-65535"})
		}
		if b.Weight < 0 || b.Weight > 100 {
			*errs = append(*errs, FieldError{Field: f + ".weight", Value: fmt.Sprint(b.Weight), Reason: "must be 1-100 (0: default)"})
		}
		key := fmt.Sprintf("%s:%d", b.IP, b.Port)
		if seen[key] {
			*errs = append(*errs, FieldError{Field: f, Value: key, Reason: "listed twice"})
		}
		seen[key] = true
	}
}

// Validate checks a publication before anything is called. It is
// deterministic, so workflows call it directly.
func (in PublishInput) Validate() error {
	var errs FieldErrors
	add := func(f, v, r string) { errs = append(errs, FieldError{Field: f, Value: v, Reason: r}) }
	if !serviceNameRE.MatchString(in.Name) {
		add("name", in.Name, "must be 1-31 lower-case letters, digits or '-', starting with a letter")
	}
	if !validIPv4(in.VIP) {
		add("vip", in.VIP, "not an IPv4 address")
	}
	if !validPort(in.Port) {
		add("port", fmt.Sprint(in.Port), "must be 1-65535")
	}
	if !Protocols[in.Protocol] {
		add("protocol", in.Protocol, "must be one of TCP, UDP, HTTP, SSL_BRIDGE, ANY, DNS (SSL needs a certificate rackflow does not bind; use SSL_BRIDGE)")
	}
	if in.LBMethod != "" && !slices.Contains(LBMethods, in.LBMethod) {
		add("lb_method", in.LBMethod, "must be one of "+strings.Join(LBMethods, ", "))
	}
	validateBackends(in.Backends, &errs)
	if in.Monitor != "" && !regexp.MustCompile(`^[A-Za-z0-9_.-]{1,127}$`).MatchString(in.Monitor) {
		add("monitor", in.Monitor, "not a monitor name")
	}
	if n := in.INAT; n != nil {
		if !validIPv4(n.PublicIP) {
			add("inat.public_ip", n.PublicIP, "not an IPv4 address")
		}
		if !validIPv4(n.PrivateIP) {
			add("inat.private_ip", n.PrivateIP, "not an IPv4 address")
		}
		if n.PublicIP == in.VIP {
			add("inat.public_ip", n.PublicIP, "must differ from the vip: an INAT on the VIP would take its traffic away from the vserver")
		}
	}
	if r := in.RNAT; r != nil {
		if !validIPv4(r.Network) {
			add("rnat.network", r.Network, "not an IPv4 network address")
		}
		if m, err := netip.ParseAddr(r.Netmask); err != nil || !m.Is4() {
			add("rnat.netmask", r.Netmask, "not an IPv4 netmask")
		}
		if !validIPv4(r.NATIP) {
			add("rnat.nat_ip", r.NATIP, "not an IPv4 address")
		}
	}
	if in.DrainSeconds < 0 || in.DrainSeconds > MaxDrainSeconds {
		add("drain_seconds", fmt.Sprint(in.DrainSeconds), fmt.Sprintf("must be 0-%d", MaxDrainSeconds))
	}
	if in.UpWaitSeconds < 0 || in.UpWaitSeconds > 600 {
		add("up_wait_seconds", fmt.Sprint(in.UpWaitSeconds), "must be 0-600")
	}
	in.NetScaler.validate(&errs)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Validate checks an unpublish request.
func (in UnpublishInput) Validate() error {
	var errs FieldErrors
	if !validIPv4(in.VIP) {
		errs = append(errs, FieldError{Field: "vip", Value: in.VIP, Reason: "not an IPv4 address"})
	}
	if !validPort(in.Port) {
		errs = append(errs, FieldError{Field: "port", Value: fmt.Sprint(in.Port), Reason: "must be 1-65535"})
	}
	in.NetScaler.validate(&errs)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Validate checks a backend update.
func (in UpdateBackendsInput) Validate() error {
	var errs FieldErrors
	if err := (UnpublishInput{VIP: in.VIP, Port: in.Port, NetScaler: in.NetScaler}).Validate(); err != nil {
		errs = append(errs, err.(FieldErrors)...)
	}
	validateBackends(in.Backends, &errs)
	if in.DrainSeconds < 0 || in.DrainSeconds > MaxDrainSeconds {
		errs = append(errs, FieldError{Field: "drain_seconds", Value: fmt.Sprint(in.DrainSeconds), Reason: fmt.Sprintf("must be 0-%d", MaxDrainSeconds)})
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
