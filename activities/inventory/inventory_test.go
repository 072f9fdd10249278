package inventory_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// node07 is the worker's inventory entry.
func node07() api.Host {
	return api.Host{
		Name:    "node07",
		BMC:     api.BMC{Address: "10.20.0.7", Provider: "ipmi", Credential: "bmc/node07"},
		MAC:     "52:54:00:ab:cd:07",
		Network: api.Network{IP: "10.30.0.17", Netmask: "255.255.255.0"},
		Disk:    "/dev/sda",
		Image:   api.Image{URL: "https://images.internal/debian.raw", Size: 1 << 30, SHA256: strings.Repeat("ab", 32)},
		SSH:     api.SSH{Credential: "ssh/provision"},
		Chef:    &api.Chef{ServerURL: "https://chef.internal/organizations/infra", RunList: []string{"role[db]"}, ValidatorCredential: "chef/validator"},
	}
}

func resolve(t *testing.T, a *inventory.Activities, in inventory.ResolveInput) (api.Host, error) {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	v, err := env.ExecuteActivity(a.ResolveHost, in)
	if err != nil {
		return api.Host{}, err
	}
	var h api.Host
	if err := v.Get(&h); err != nil {
		t.Fatal(err)
	}
	return h, nil
}

// errType is an activity error's type, "" for none; it fails the test for
// a retryable one.
func errType(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("not an application error: %v", err)
	}
	if !ae.NonRetryable() {
		t.Errorf("retryable: %v", err)
	}
	return ae.Type()
}

// TestInlineSpecs: whoever starts ProvisionHost may name a host; only a
// worker that allows it takes the host's spec from the input, and then
// the secrets file still decides where its credentials may go.
func TestInlineSpecs(t *testing.T) {
	key := sshd.TestKey(t)
	res := secrets.Static{
		"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7"}},
		"ssh/provision":  {PrivateKey: key.PEM},
		"chef/validator": {PrivateKey: key.PEM, Endpoints: []string{"https://chef.internal"}},
	}
	inv := &api.Inventory{Hosts: []api.Host{node07()}}
	// The attack: the inventory's host, its BMC redirected to a machine
	// of the starter's choosing, which would receive the BMC password.
	redirected := node07()
	redirected.BMC.Address = "192.0.2.66"
	same := node07()

	tests := map[string]struct {
		allow    bool
		in       inventory.ResolveInput
		wantType string
		wantBMC  string
	}{
		"by name":                        {in: inventory.ResolveInput{Host: "node07"}, wantBMC: "10.20.0.7"},
		"inline refused":                 {in: inventory.ResolveInput{Host: "node07", Spec: &redirected}, wantType: activities.ErrTypeInvalidInput},
		"inline refused though the same": {in: inventory.ResolveInput{Host: "node07", Spec: &same}, wantType: activities.ErrTypeInvalidInput},
		"inline allowed":                 {allow: true, in: inventory.ResolveInput{Host: "node07", Spec: &same}, wantBMC: "10.20.0.7"},
		"inline allowed, still bound":    {allow: true, in: inventory.ResolveInput{Host: "node07", Spec: &redirected}, wantType: activities.ErrTypeCredentialNotAllowed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a := &inventory.Activities{Load: func() (*api.Inventory, error) { return inv, nil }, Secrets: res, AllowInlineSpecs: tc.allow}
			h, err := resolve(t, a, tc.in)
			if diff := cmp.Diff(tc.wantType, errType(t, err)); diff != "" {
				t.Fatalf("error type (-want +got):\n%s\n%v", diff, err)
			}
			if diff := cmp.Diff(tc.wantBMC, h.BMC.Address); diff != "" {
				t.Errorf("bmc address (-want +got):\n%s", diff)
			}
			if tc.wantType == activities.ErrTypeInvalidInput && !strings.Contains(err.Error(), "--allow-inline-specs") {
				t.Errorf("error %q does not say how to allow inline specs", err)
			}
		})
	}
}

// TestCredentialBinding: the up-front check refuses an inventory entry that
// would send a credential where the secrets file does not bind it, so a run
// fails at validate, before any power-on.
func TestCredentialBinding(t *testing.T) {
	key := sshd.TestKey(t)
	tests := map[string]struct {
		secrets secrets.Static
		edit    func(*api.Host)
		want    string // the error type
		fields  string // in the message
	}{
		"all bound": {
			secrets: secrets.Static{
				"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7"}},
				"ssh/provision":  {PrivateKey: key.PEM, Endpoints: []string{"10.30.0.0/24"}},
				"ssh/jump":       {PrivateKey: key.PEM, Endpoints: []string{"10.30.0.5:22"}},
				"chef/validator": {PrivateKey: key.PEM, Endpoints: []string{"https://chef.internal/organizations/infra"}},
			},
			edit: func(h *api.Host) {
				h.SSH.Jump = &api.SSHJump{Address: "10.30.0.5:22", Credential: "ssh/jump", HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
			},
		},
		"ssh keys need no binding": {
			secrets: secrets.Static{
				"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7:623"}},
				"ssh/provision":  {PrivateKey: key.PEM},
				"chef/validator": {PrivateKey: key.PEM, Endpoints: []string{"https://chef.internal"}},
			},
		},
		"bmc bound elsewhere, chef unbound": {
			secrets: secrets.Static{
				"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.8"}},
				"ssh/provision":  {PrivateKey: key.PEM},
				"chef/validator": {PrivateKey: key.PEM},
			},
			want: activities.ErrTypeCredentialNotAllowed, fields: "bmc.credential: may not go to 10.20.0.7:623",
		},
		"redfish bound to the ipmi port": {
			secrets: secrets.Static{
				"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7:623"}},
				"ssh/provision":  {PrivateKey: key.PEM},
				"chef/validator": {PrivateKey: key.PEM, Endpoints: []string{"https://chef.internal"}},
			},
			edit: func(h *api.Host) { h.BMC.Provider = "redfish" },
			want: activities.ErrTypeCredentialNotAllowed, fields: "bmc.credential: may not go to https://10.20.0.7:443",
		},
		"ssh key bound to the live system only": {
			secrets: secrets.Static{
				"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7"}},
				"ssh/provision":  {PrivateKey: key.PEM, Endpoints: []string{"10.30.0.17:2222"}},
				"chef/validator": {PrivateKey: key.PEM, Endpoints: []string{"https://chef.internal"}},
			},
			edit: func(h *api.Host) { h.SSH.LivePort = 2222 },
			want: activities.ErrTypeCredentialNotAllowed, fields: "ssh.credential: may not go to 10.30.0.17:22",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := node07()
			if tc.edit != nil {
				tc.edit(&h)
			}
			inv := &api.Inventory{Hosts: []api.Host{h}}
			a := &inventory.Activities{Load: func() (*api.Inventory, error) { return inv, nil }, Secrets: tc.secrets}
			_, err := resolve(t, a, inventory.ResolveInput{Host: "node07"})
			if diff := cmp.Diff(tc.want, errType(t, err)); diff != "" {
				t.Fatalf("error type (-want +got):\n%s\n%v", diff, err)
			}
			if tc.fields != "" && !strings.Contains(err.Error(), tc.fields) {
				t.Errorf("error %q lacks %q", err, tc.fields)
			}
		})
	}
}

// TestPods: a pod's worker resolves only its pod's hosts and checks their
// credentials (it holds them); the shared worker leaves a podded host's
// credentials to the pod, and a shared-only worker refuses a host that
// names no pod, since no worker would ever run its boot steps.
func TestPods(t *testing.T) {
	key := sshd.TestKey(t)
	full := secrets.Static{
		"bmc/node07":     {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7"}},
		"ssh/provision":  {PrivateKey: key.PEM},
		"chef/validator": {PrivateKey: key.PEM, Endpoints: []string{"https://chef.internal"}},
	}
	inPodA, noPod := node07(), node07()
	inPodA.Pod = "rack-a"
	badPod := node07()
	badPod.Pod = "Rack A"
	tests := map[string]struct {
		host       api.Host
		pod        string
		sharedOnly bool
		secrets    secrets.Static
		wantType   string
	}{
		"pod worker, its host":                  {host: inPodA, pod: "rack-a", secrets: full},
		"pod worker, its host, secret missing":  {host: inPodA, pod: "rack-a", secrets: secrets.Static{}, wantType: activities.ErrTypeCredentialNotFound},
		"pod worker, another pod's host":        {host: inPodA, pod: "rack-b", secrets: full, wantType: inventory.ErrTypeWrongPod},
		"pod worker, a host with no pod":        {host: noPod, pod: "rack-a", secrets: full, wantType: inventory.ErrTypeWrongPod},
		"shared worker, podded host, no secret": {host: inPodA, secrets: secrets.Static{}},
		"shared-only worker, podded host":       {host: inPodA, sharedOnly: true, secrets: secrets.Static{}},
		"shared-only worker, host with no pod":  {host: noPod, sharedOnly: true, secrets: full, wantType: inventory.ErrTypeWrongPod},
		"pod not a DNS label":                   {host: badPod, secrets: full, wantType: activities.ErrTypeInvalidInput},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			inv := &api.Inventory{Hosts: []api.Host{tc.host}}
			a := &inventory.Activities{Load: func() (*api.Inventory, error) { return inv, nil }, Secrets: tc.secrets, Pod: tc.pod, SharedOnly: tc.sharedOnly}
			h, err := resolve(t, a, inventory.ResolveInput{Host: "node07"})
			if diff := cmp.Diff(tc.wantType, errType(t, err)); diff != "" {
				t.Fatalf("error type (-want +got):\n%s\n%v", diff, err)
			}
			if err == nil && h.Pod != tc.host.Pod {
				t.Errorf("resolved pod %q, want %q", h.Pod, tc.host.Pod)
			}
		})
	}
}

// TestNetScalers: the inventory's NetScalers come back as written
// (references, no secret); none is an empty list; an invalid entry (the
// file edited since the worker started) is InvalidInput; a worker without
// an inventory says so.
func TestNetScalers(t *testing.T) {
	h := node07()
	h.Defaults()
	ns := api.NetScalerEntry{Name: "dc1", NetScaler: api.NetScaler{URL: "https://ns1.mgmt", Credential: "netscaler/dc1"}}
	tests := map[string]struct {
		inv      *api.Inventory
		want     []api.NetScalerEntry
		wantType string
	}{
		"listed":       {inv: &api.Inventory{Hosts: []api.Host{h}, NetScalers: []api.NetScalerEntry{ns}}, want: []api.NetScalerEntry{ns}},
		"none":         {inv: &api.Inventory{Hosts: []api.Host{h}}},
		"bad entry":    {inv: &api.Inventory{Hosts: []api.Host{h}, NetScalers: []api.NetScalerEntry{{Name: "dc1", NetScaler: api.NetScaler{URL: "ns1"}}}}, wantType: activities.ErrTypeInvalidInput},
		"no inventory": {wantType: activities.ErrTypeUnknownHost},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a := &inventory.Activities{}
			if tc.inv != nil {
				a.Load = func() (*api.Inventory, error) { return tc.inv, nil }
			}
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestActivityEnvironment()
			env.RegisterActivity(a)
			v, err := env.ExecuteActivity(a.NetScalers)
			if d := cmp.Diff(tc.wantType, errType(t, err)); d != "" {
				t.Fatalf("error type (-want +got):\n%s\n%v", d, err)
			}
			if err != nil {
				return
			}
			var got []api.NetScalerEntry
			if err := v.Get(&got); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("netscalers (-want +got):\n%s", d)
			}
		})
	}
}
