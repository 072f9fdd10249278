package workflows

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/activities/guestnet"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/csfake"
	"github.com/rackflow/rackflow/testsuite/guestlab"
)

// These tests run SetupVMNetwork and TeardownVMNetwork with the real
// activities: the real cloudstack-go client against the strict fake
// CloudStack, and real `ip` commands over real SSH in a guest network
// namespace whose second interface has the MAC the fake reports. The
// verification connects to a "database" namespace behind a router.

const csCred = "cloudstack/rackflow"

type vmnetWorld struct {
	cs     *csfake.Server
	lab    *guestlab.Lab
	vmID   string
	secnet string
	dmz    string
	in     api.VMNetInput
	ts     testsuite.WorkflowTestSuite
}

func newVMNetWorld(t *testing.T) *vmnetWorld { return newVMNetWorldIn(t, false) }

// newVMNetWorldIn builds the world; with project, the VM and the secnet
// network belong to a CloudStack project, which the input names.
func newVMNetWorldIn(t *testing.T, project bool) *vmnetWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test: network namespaces and sshd")
	}
	guestlab.Require(t)
	lab := guestlab.Start(t, guestlab.Options{Flavour: guestlab.FlavourNetplan})
	cs := csfake.Start(t, csfake.Options{JobPolls: 3})
	zone := cs.AddZone(csfake.Zone{Name: "zone1", NetworkType: "Advanced"})
	var proj string
	if project {
		proj = cs.AddProject(csfake.Project{Name: "shop"})
	}
	dmz := cs.AddNetwork(csfake.Network{Name: "dmz", ZoneID: zone, CIDR: "10.50.0.0/24", Gateway: guestlab.DMZGateway, Type: "Isolated", ProjectID: proj})
	secnet := cs.AddNetwork(csfake.Network{Name: "secnet", ZoneID: zone, CIDR: "10.51.0.0/24", Gateway: guestlab.SecGateway, Type: "Isolated", ProjectID: proj})
	vm := cs.AddVM(csfake.VM{Name: "web01", ZoneID: zone, ProjectID: proj, Nics: []csfake.Nic{{NetworkID: dmz, MAC: guestlab.Eth0MAC, IP: "10.50.0.10", IsDefault: true}}})
	cs.PlanNic(vm, secnet, csfake.NicPlan{MAC: guestlab.Eth1MAC, IP: "10.51.0.10"})
	return &vmnetWorld{cs: cs, lab: lab, vmID: vm, secnet: secnet, dmz: dmz, in: api.VMNetInput{
		VM: "web01", Network: "secnet", CIDRs: []string{guestlab.DBNet}, Verify: guestlab.DBAddr,
		Guest:      api.GuestSSH{Address: lab.Target.Addr, User: lab.Target.User, Credential: lab.Target.Credential, HostKey: lab.Target.HostKey},
		CloudStack: api.CloudStack{URL: cs.URL(), Credential: csCred}, Project: proj,
	}}
}

func (w *vmnetWorld) run(t *testing.T, wf any, in api.VMNetInput) (api.VMNetResult, error) {
	t.Helper()
	env := w.ts.NewTestWorkflowEnvironment()
	env.SetTestTimeout(3 * time.Minute)
	Register(env)
	env.RegisterActivity(&cloudstack.Activities{
		Secrets:      secrets.Static{csCred: {Username: w.cs.APIKey(), Password: w.cs.SecretKey(), Endpoints: []string{w.cs.URL()}}},
		PollInterval: 10 * time.Millisecond,
	})
	env.RegisterActivity(&guestnet.Activities{Dialer: &remote.Dialer{Secrets: w.lab.Secrets}})
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: api.VMNetWorkflowID(in.VM, in.Network)})
	env.ExecuteWorkflow(wf, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res api.VMNetResult
	err := env.GetWorkflowError()
	if err == nil {
		if gerr := env.GetWorkflowResult(&res); gerr != nil {
			t.Fatal(gerr)
		}
	}
	return res, err
}

func (w *vmnetWorld) nics(t *testing.T) int {
	t.Helper()
	vm, ok := w.cs.VM(w.vmID)
	if !ok {
		t.Fatal("VM gone")
	}
	return len(vm.Nics)
}

func (w *vmnetWorld) guest(t *testing.T) string {
	t.Helper()
	s, err := w.lab.GuestState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSetupVMNetworkFirstRunThenRerunThenTeardown(t *testing.T) {
	w := newVMNetWorld(t)
	res, err := w.run(t, SetupVMNetwork, w.in)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	if !res.NicAdded || res.Interface != "eth1" || !res.RoutesChanged || !strings.HasPrefix(res.Persisted, "netplan:") {
		t.Errorf("result = %+v", res)
	}
	if res.VerifiedSource != "10.51.0.10" {
		t.Errorf("verified source = %q, want the new NIC's 10.51.0.10", res.VerifiedSource)
	}
	if st := w.guest(t); !strings.Contains(st, "10.52.0.0/24 via 10.51.0.1 dev eth1") {
		t.Errorf("guest routes:\n%s", st)
	}
	if n := w.nics(t); n != 2 {
		t.Errorf("VM has %d NICs, want 2", n)
	}
	// The database saw the connection come from the new NIC's address.
	var fromNewNic bool
	for _, p := range w.lab.DBPeers() {
		fromNewNic = fromNewNic || p == "10.51.0.10" || strings.HasPrefix(p, "10.51.0.10:")
	}
	if !fromNewNic {
		t.Errorf("db peers = %v", w.lab.DBPeers())
	}

	adds := w.cs.Calls("addNicToVirtualMachine")
	before := w.guest(t)
	res2, err := w.run(t, SetupVMNetwork, w.in)
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	if res2.NicAdded || res2.RoutesChanged {
		t.Errorf("re-run changed something: %+v", res2)
	}
	if w.cs.Calls("addNicToVirtualMachine") != adds || w.nics(t) != 2 {
		t.Error("re-run added a NIC")
	}
	if after := w.guest(t); after != before {
		t.Errorf("re-run changed the guest:\n--- before\n%s\n--- after\n%s", before, after)
	}

	if _, err := w.run(t, TeardownVMNetwork, w.in); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if n := w.nics(t); n != 1 {
		t.Errorf("after teardown VM has %d NICs, want 1", n)
	}
	if st := w.guest(t); strings.Contains(st, "10.52.0.0/24") {
		t.Errorf("route left after teardown:\n%s", st)
	}
}

func TestSetupVMNetworkFailureAfterNicRollsBack(t *testing.T) {
	w := newVMNetWorld(t)
	in := w.in
	in.Verify = "10.52.0.20:5999" // nothing listens: verification fails
	_, err := w.run(t, SetupVMNetwork, in)
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("err = %v, want a rolled-back failure", err)
	}
	if n := w.nics(t); n != 1 {
		t.Errorf("VM has %d NICs after rollback, want 1", n)
	}
	if st := w.guest(t); strings.Contains(st, "10.52.0.0/24") {
		t.Errorf("route left after rollback:\n%s", st)
	}
}

func TestSetupVMNetworkKeepsAPreexistingNicOnRollback(t *testing.T) {
	w := newVMNetWorld(t)
	w.cs.AttachNic(w.vmID, csfake.Nic{NetworkID: w.secnet, MAC: guestlab.Eth1MAC, IP: "10.51.0.10"})
	in := w.in
	in.Verify = "10.52.0.20:5999"
	if _, err := w.run(t, SetupVMNetwork, in); err == nil {
		t.Fatal("setup succeeded though verification cannot")
	}
	if n := w.nics(t); n != 2 {
		t.Errorf("VM has %d NICs, want the pre-existing one kept (2)", n)
	}
	if w.cs.Calls("removeNicFromVirtualMachine") != 0 || w.cs.Calls("addNicToVirtualMachine") != 0 {
		t.Error("the pre-existing NIC was touched")
	}
}

func TestSetupVMNetworkRejectsBadInputBeforeChangingAnything(t *testing.T) {
	w := newVMNetWorld(t)
	in := w.in
	in.CIDRs = []string{"10.52.0.0/33"}
	_, err := w.run(t, SetupVMNetwork, in)
	if !activities.IsType(err, activities.ErrTypeInvalidInput) || !strings.Contains(err.Error(), "cidrs[0]") {
		t.Fatalf("bad CIDR: err = %v", err)
	}
	in = w.in
	in.CIDRs = []string{"0.0.0.0/0"}
	if _, err := w.run(t, SetupVMNetwork, in); err == nil || !strings.Contains(err.Error(), "default route") {
		t.Errorf("default route: err = %v", err)
	}
	in = w.in
	in.VM = "web99"
	_, err = w.run(t, SetupVMNetwork, in)
	if !activities.IsType(err, cloudstack.ErrTypeNotFound) {
		t.Errorf("unknown VM: err = %v", err)
	}
	if w.cs.Calls("addNicToVirtualMachine") != 0 || w.nics(t) != 1 {
		t.Error("a NIC was added for bad input")
	}
}

// TestSetupVMNetworkRefusesTheDefaultNetwork: asked for the network of the
// VM's primary NIC, setup refuses before touching anything, teardown too:
// the guest keeps its default route and primary address, CloudStack its
// default NIC.
func TestSetupVMNetworkRefusesTheDefaultNetwork(t *testing.T) {
	w := newVMNetWorld(t)
	in := w.in
	in.Network = "dmz"
	in.Verify = ""
	before := w.guest(t)
	for name, wf := range map[string]any{"setup": SetupVMNetwork, "teardown": TeardownVMNetwork} {
		_, err := w.run(t, wf, in)
		if !activities.IsType(err, cloudstack.ErrTypeDefaultNetwork) || !strings.Contains(err.Error(), "default network") {
			t.Errorf("%s: err = %v, want %s", name, err, cloudstack.ErrTypeDefaultNetwork)
		}
	}
	if after := w.guest(t); after != before {
		t.Errorf("the guest changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if w.nics(t) != 1 || w.cs.Calls("addNicToVirtualMachine") != 0 || w.cs.Calls("removeNicFromVirtualMachine") != 0 {
		t.Error("CloudStack was asked to change the VM")
	}
}

// TestSetupVMNetworkProjectAndSecondaryIPs: the VM and network live in a
// CloudStack project, which the input names (without it CloudStack lists
// neither); the input asks for a secondary IP, which CloudStack gives the
// new NIC through addIpToNic and the guest carries on eth1. When a later
// step fails, the rollback removes the secondary IP (removeIpFromNic) and
// the NIC.
func TestSetupVMNetworkProjectAndSecondaryIPs(t *testing.T) {
	w := newVMNetWorldIn(t, true)
	in := w.in
	in.SecondaryIPs = []string{"10.51.0.11"}

	noProject := in
	noProject.Project = ""
	if _, err := w.run(t, SetupVMNetwork, noProject); !activities.IsType(err, cloudstack.ErrTypeNotFound) {
		t.Fatalf("without the project: %v, want %s", err, cloudstack.ErrTypeNotFound)
	}

	res, err := w.run(t, SetupVMNetwork, in)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	vm, _ := w.cs.VM(w.vmID)
	if len(vm.Nics) != 2 || len(vm.Nics[1].Secondary) != 1 || vm.Nics[1].Secondary[0].IP != "10.51.0.11" {
		t.Errorf("CloudStack NICs: %+v", vm.Nics)
	}
	if got := w.lab.GuestRun("ip", "-4", "-o", "addr", "show", "dev", "eth1"); !strings.Contains(got, "10.51.0.11/24") || res.VerifiedSource != "10.51.0.10" {
		t.Errorf("guest eth1: %s (verified from %s)", got, res.VerifiedSource)
	}
	if _, err := w.run(t, TeardownVMNetwork, in); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if st := w.guest(t); strings.Contains(st, "10.51.0.11") {
		t.Errorf("secondary address left in the guest:\n%s", st)
	}

	in.Verify = "10.52.0.20:5999" // nothing listens: verification fails
	if _, err := w.run(t, SetupVMNetwork, in); err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("err = %v, want a rolled-back failure", err)
	}
	if w.cs.Calls("removeIpFromNic") != 1 {
		t.Errorf("removeIpFromNic calls = %d, want 1 (the rollback)", w.cs.Calls("removeIpFromNic"))
	}
	if n := w.nics(t); n != 1 {
		t.Errorf("VM has %d NICs after rollback, want 1", n)
	}
	if st := w.guest(t); strings.Contains(st, "10.51.0.1") {
		t.Errorf("guest addresses left after rollback:\n%s", st)
	}
}
