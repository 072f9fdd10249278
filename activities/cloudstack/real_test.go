package cloudstack_test

import (
	"os"
	"testing"
	"time"

	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/secrets"
)

// TestRealCloudStack runs the NIC round trip against a real CloudStack:
//
//	CLOUDSTACK_API_URL      e.g. https://cloud.example.org/client/api
//	CLOUDSTACK_API_KEY      API key of a user who owns the VM
//	CLOUDSTACK_SECRET_KEY   its secret key
//	CLOUDSTACK_TEST_VM      name or id of a throw-away VM (Advanced zone)
//	CLOUDSTACK_TEST_NETWORK name or id of a network in its zone it has no NIC on
//	CLOUDSTACK_VERIFY_SSL   "false" for a self-signed certificate
//
// It adds a NIC on the network (or finds one), checks that a second run
// adds nothing, and removes the NIC again if it added it. Skipped unless
// the first five are set: it is the check that csfake still behaves like
// the real thing.
func TestRealCloudStack(t *testing.T) {
	env := map[string]string{}
	for _, k := range []string{"CLOUDSTACK_API_URL", "CLOUDSTACK_API_KEY", "CLOUDSTACK_SECRET_KEY", "CLOUDSTACK_TEST_VM", "CLOUDSTACK_TEST_NETWORK"} {
		env[k] = os.Getenv(k)
		if env[k] == "" {
			t.Skipf("real CloudStack test: set %s (and the other CLOUDSTACK_* variables in this test's comment) to run it", k)
		}
	}
	w := &world{}
	w.acts = &cloudstack.Activities{
		Secrets: secrets.Static{"cloudstack/real": {
			Username: env["CLOUDSTACK_API_KEY"], Password: env["CLOUDSTACK_SECRET_KEY"], Endpoints: []string{env["CLOUDSTACK_API_URL"]},
		}},
		PollInterval: 2 * time.Second,
	}
	target := cloudstack.Target{URL: env["CLOUDSTACK_API_URL"], Credential: "cloudstack/real", Insecure: os.Getenv("CLOUDSTACK_VERIFY_SSL") == "false"}

	vm, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: target, VM: env["CLOUDSTACK_TEST_VM"]})
	if err != nil {
		t.Fatal(err)
	}
	net, err := run[cloudstack.NetworkInfo](t, w.env(nil), w.acts.LookupNetwork, cloudstack.LookupNetworkInput{Target: target, Network: env["CLOUDSTACK_TEST_NETWORK"]})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("VM %s (%s) in zone %s (%s); network %s %s", vm.Name, vm.ID, vm.ZoneID, vm.ZoneNetworkType, net.Name, net.CIDR)
	in := cloudstack.EnsureNicInput{Target: target, VMID: vm.ID, NetworkID: net.ID}
	first, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, in)
	if err != nil {
		t.Fatal(err)
	}
	if first.Added {
		t.Cleanup(func() {
			if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveNic, cloudstack.RemoveNicInput{Target: target, VMID: vm.ID, NicID: first.Nic.ID}); err != nil {
				t.Errorf("remove NIC %s: %v", first.Nic.ID, err)
			}
		})
	}
	if first.Nic.MAC == "" || first.Nic.IP == "" || first.Nic.NetworkID != net.ID {
		t.Errorf("NIC read back incomplete: %+v", first.Nic)
	}
	second, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, in)
	if err != nil {
		t.Fatal(err)
	}
	if second.Added || second.Nic.ID != first.Nic.ID {
		t.Errorf("second run: %+v, want the same NIC %s, not added", second, first.Nic.ID)
	}
}
