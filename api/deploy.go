package api

import (
	"errors"
	"fmt"
	"net/netip"
)

// WorkflowDeployService is the workflow type of a service deploy.
const WorkflowDeployService = "DeployService"

// DeployWorkflowID is the one workflow ID of a service's deploy.
func DeployWorkflowID(service string) string { return "deploy/" + service }

// DeploySpec describes a service as the seed draws it: databases on bare
// metal in the security area, a web tier of VMs in the DMZ with a second NIC
// into the security area, and a public VIP on the NetScaler.
type DeploySpec struct {
	// Service names the deploy (workflow ID deploy/<service>).
	Service string `json:"service" yaml:"service"`
	// Hosts are bare-metal hosts from the worker's inventory.
	Hosts []DeployHost `json:"hosts,omitempty" yaml:"hosts,omitempty"`
	// VMs get a second NIC on another area's network.
	VMs []DeployVM `json:"vms,omitempty" yaml:"vms,omitempty"`
	// Publish is the VIP; its backends are the healthy hosts and VMs that
	// name a backend.
	Publish *DeployPublish `json:"publish,omitempty" yaml:"publish,omitempty"`
	// PerRack caps concurrent provisioning per rack (default 2): a rack's
	// BMC network and power feed are shared.
	PerRack int `json:"per_rack,omitempty" yaml:"per_rack,omitempty"`
	// RequireAll fails the deploy, before publishing, if any host or VM
	// failed. Otherwise failed members are left out of the VIP.
	RequireAll bool `json:"require_all,omitempty" yaml:"require_all,omitempty"`
	// Provision tunes every ProvisionHost child (e.g. a short attention
	// deadline so a deploy does not wait days for on-call).
	Provision ProvisionOptions `json:"provision,omitempty" yaml:"provision,omitempty"`
}

// DeployHost is a bare-metal member.
type DeployHost struct {
	Host string `json:"host" yaml:"host"`
	// Rack groups hosts for the concurrency cap ("default" when empty).
	Rack string `json:"rack,omitempty" yaml:"rack,omitempty"`
	// Backend is "ip:port" if the host serves behind the VIP.
	Backend string `json:"backend,omitempty" yaml:"backend,omitempty"`
}

// DeployVM is a VM member with its second NIC.
type DeployVM struct {
	VMNetInput `json:",inline" yaml:",inline"`
	Backend    string `json:"backend,omitempty" yaml:"backend,omitempty"`
}

// DeployPublish is the VIP part of a deploy; backends come from members.
type DeployPublish struct {
	VIP       string    `json:"vip" yaml:"vip"`
	Port      int       `json:"port" yaml:"port"`
	Protocol  string    `json:"protocol" yaml:"protocol"`
	LBMethod  string    `json:"lb_method,omitempty" yaml:"lb_method,omitempty"`
	Monitor   string    `json:"monitor,omitempty" yaml:"monitor,omitempty"`
	INAT      *INAT     `json:"inat,omitempty" yaml:"inat,omitempty"`
	RNAT      *RNAT     `json:"rnat,omitempty" yaml:"rnat,omitempty"`
	NetScaler NetScaler `json:"netscaler" yaml:"netscaler"`
}

// Member outcomes in a deploy result.
const (
	MemberProvisioned = "provisioned"
	MemberConverged   = "converged" // already provisioned with this image
	MemberConfigured  = "configured"
	MemberFailed      = "failed"
)

// MemberResult is one host's or VM's outcome.
type MemberResult struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // host or vm
	State      string `json:"state"`
	WorkflowID string `json:"workflow_id"`
	Backend    string `json:"backend,omitempty"`
	Error      string `json:"error,omitempty"`
	ErrorType  string `json:"error_type,omitempty"`
	// Steps of a host's provisioning, as its run reported them.
	Steps []StepRecord `json:"steps,omitempty"`
}

// DeployResult summarises a deploy per member and per step.
type DeployResult struct {
	Service  string         `json:"service"`
	Members  []MemberResult `json:"members"`
	Backends []Backend      `json:"backends,omitempty"`
	Publish  *PublishResult `json:"publish,omitempty"`
	// Partial is true when some member failed and was left out.
	Partial bool `json:"partial"`
}

// DeployStatus answers a deploy's status query.
type DeployStatus struct {
	Service string         `json:"service"`
	Phase   string         `json:"phase"` // members, publish, done, failed
	Members []MemberResult `json:"members"`
}

// Validate checks a deploy spec; field names are as in the YAML.
func (d DeploySpec) Validate() error {
	var errs FieldErrors
	add := func(f, v, r string) { errs = append(errs, FieldError{Field: f, Value: v, Reason: r}) }
	if !serviceNameRE.MatchString(d.Service) {
		add("service", d.Service, "must be 1-31 lower-case letters, digits or '-', starting with a letter")
	}
	if len(d.Hosts) == 0 && len(d.VMs) == 0 {
		add("hosts", "", "a deploy needs at least one host or VM")
	}
	if d.PerRack < 0 || d.PerRack > 64 {
		add("per_rack", fmt.Sprint(d.PerRack), "must be 1-64 (0: default 2)")
	}
	seen := map[string]bool{}
	backends := map[string]string{}
	checkBackend := func(field, b, who string) {
		if b == "" {
			return
		}
		ap, err := netip.ParseAddrPort(b)
		if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
			add(field, b, "must be IPv4:port")
			return
		}
		if other, dup := backends[b]; dup {
			add(field, b, "also the backend of "+other)
		}
		backends[b] = who
	}
	for i, h := range d.Hosts {
		f := fmt.Sprintf("hosts[%d]", i)
		if !ValidName(h.Host) {
			add(f+".host", h.Host, "not a host name")
		}
		if seen["host/"+h.Host] {
			add(f+".host", h.Host, "listed twice")
		}
		seen["host/"+h.Host] = true
		if h.Rack != "" && !ValidName(h.Rack) {
			add(f+".rack", h.Rack, "not a rack name")
		}
		checkBackend(f+".backend", h.Backend, h.Host)
	}
	for i, vm := range d.VMs {
		f := fmt.Sprintf("vms[%d]", i)
		if err := vm.VMNetInput.Validate(); err != nil {
			var fe FieldErrors
			if errors.As(err, &fe) {
				for _, e := range fe {
					add(f+"."+e.Field, e.Value, e.Reason)
				}
			}
		}
		if seen["vm/"+vm.VM] {
			add(f+".vm", vm.VM, "listed twice")
		}
		seen["vm/"+vm.VM] = true
		checkBackend(f+".backend", vm.Backend, vm.VM)
	}
	if p := d.Publish; p != nil {
		in := p.Input(d.Service, []Backend{{IP: "192.0.2.1", Port: 1}})
		if err := in.Validate(); err != nil {
			var fe FieldErrors
			if errors.As(err, &fe) {
				for _, e := range fe {
					add("publish."+e.Field, e.Value, e.Reason)
				}
			}
		}
		if len(backends) == 0 {
			add("publish", "", "no host or VM names a backend")
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Input makes the PublishService input for the given backends.
func (p DeployPublish) Input(service string, backends []Backend) PublishInput {
	return PublishInput{Name: service, VIP: p.VIP, Port: p.Port, Protocol: p.Protocol, LBMethod: p.LBMethod,
		Monitor: p.Monitor, INAT: p.INAT, RNAT: p.RNAT, Backends: backends, NetScaler: p.NetScaler}
}
