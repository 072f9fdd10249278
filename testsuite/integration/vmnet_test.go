package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/csfake"
	"github.com/rackflow/rackflow/testsuite/guestlab"
)

// TestSetupVMNetworkSurvivesWorkerKillDuringAddNic kills the worker while
// CloudStack's addNicToVirtualMachine job is still pending. The restarted
// worker resumes polling the same job: the VM ends with one new NIC, not
// two, and the guest's routes work.
func TestSetupVMNetworkSurvivesWorkerKillDuringAddNic(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: dev server, worker process, namespaces")
	}
	guestlab.Require(t)
	dir := t.TempDir()
	lab := guestlab.Start(t, guestlab.Options{Flavour: guestlab.FlavourNetplan})
	cs := csfake.Start(t, csfake.Options{JobPolls: 6})
	zone := cs.AddZone(csfake.Zone{Name: "zone1", NetworkType: "Advanced"})
	dmz := cs.AddNetwork(csfake.Network{Name: "dmz", ZoneID: zone, CIDR: "10.50.0.0/24", Gateway: guestlab.DMZGateway, Type: "Isolated"})
	secnet := cs.AddNetwork(csfake.Network{Name: "secnet", ZoneID: zone, CIDR: "10.51.0.0/24", Gateway: guestlab.SecGateway})
	vm := cs.AddVM(csfake.VM{Name: "web01", ZoneID: zone, Nics: []csfake.Nic{{NetworkID: dmz, MAC: guestlab.Eth0MAC, IP: "10.50.0.10", IsDefault: true}}})
	cs.PlanNic(vm, secnet, csfake.NicPlan{MAC: guestlab.Eth1MAC, IP: "10.51.0.10"})

	key := lab.Secrets[guestlab.Credential].PrivateKey
	if err := os.WriteFile(filepath.Join(dir, "guest_key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	secretsPath := filepath.Join(dir, "secrets.yaml")
	sec := fmt.Sprintf("secrets:\n  %s: {private_key_file: guest_key}\n  cloudstack/lab: {username: %s, password: %s, endpoints: [%q]}\n",
		guestlab.Credential, cs.APIKey(), cs.SecretKey(), cs.URL())
	if err := os.WriteFile(secretsPath, []byte(sec), 0o600); err != nil {
		t.Fatal(err)
	}
	c, w := serverAndWorker(t, dir, secretsPath)

	in := api.VMNetInput{
		VM: "web01", Network: "secnet", CIDRs: []string{guestlab.DBNet}, Verify: guestlab.DBAddr,
		Guest:      api.GuestSSH{Address: lab.Target.Addr, User: "root", Credential: guestlab.Credential, HostKey: lab.Target.HostKey},
		CloudStack: api.CloudStack{URL: cs.URL(), Credential: "cloudstack/lab"},
	}
	id := api.VMNetWorkflowID(in.VM, in.Network)
	run, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: id, TaskQueue: api.DefaultTaskQueue},
		api.WorkflowSetupVMNetwork, in)
	if err != nil {
		t.Fatal(err)
	}
	// Kill the worker once the server has the job id in EnsureNic's heartbeat.
	deadline := time.Now().Add(time.Minute)
	for {
		if jobRecorded(c, id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("EnsureNic never heartbeated a job id")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := cs.Calls("addNicToVirtualMachine"); n != 1 {
		t.Fatalf("addNic calls before the kill = %d", n)
	}
	w.kill()
	w.start()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res api.VMNetResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("setup: %v", err)
	}
	if n := cs.Calls("addNicToVirtualMachine"); n != 1 {
		t.Errorf("addNicToVirtualMachine called %d times, want 1", n)
	}
	got, _ := cs.VM(vm)
	if len(got.Nics) != 2 {
		t.Errorf("VM has %d NICs, want 2", len(got.Nics))
	}
	if !res.NicAdded || res.VerifiedSource != "10.51.0.10" {
		t.Errorf("result = %+v", res)
	}
	if st, _ := lab.GuestState(context.Background()); !strings.Contains(st, "10.52.0.0/24 via 10.51.0.1 dev eth1") {
		t.Errorf("guest routes:\n%s", st)
	}
	dir2 := os.Getenv("RACKFLOW_SAVE_HISTORY_DIR")
	if dir2 != "" {
		saveHistory(t, (&stack{client: c}).history(t, id, run.GetRunID()), filepath.Join(dir2, "setup_vm_network_v1.json"))
	}

	// And back: TeardownVMNetwork leaves the VM and the guest as before.
	trun, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: id, TaskQueue: api.DefaultTaskQueue},
		api.WorkflowTeardownVMNetwork, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := trun.Get(ctx, nil); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if got, _ := cs.VM(vm); len(got.Nics) != 1 {
		t.Errorf("after teardown the VM has %d NICs, want 1", len(got.Nics))
	}
	if st, _ := lab.GuestState(context.Background()); strings.Contains(st, "10.52.0.0/24") {
		t.Errorf("route left after teardown:\n%s", st)
	}
	if dir2 != "" {
		saveHistory(t, (&stack{client: c}).history(t, id, trun.GetRunID()), filepath.Join(dir2, "teardown_vm_network_v1.json"))
	}
}

func jobRecorded(c client.Client, id string) bool {
	desc, err := c.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		return false
	}
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetActivityType().GetName() != "EnsureNic" || pa.GetHeartbeatDetails() == nil {
			continue
		}
		var p cloudstack.JobProgress
		if converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &p) == nil && p.JobID != "" {
			return true
		}
	}
	return false
}
