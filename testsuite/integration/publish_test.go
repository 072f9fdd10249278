package integration

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// TestPublishSurvivesWorkerKill publishes a service on the fake NetScaler
// through the worker process, kills the worker with SIGKILL in the middle
// and restarts it: the final configuration is complete, with no duplicate.
func TestPublishSurvivesWorkerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: real dev server and worker process")
	}
	dir := t.TempDir()
	ns := nitrofake.New(nitrofake.Options{Username: "nsroot", Password: "ns-Integration-1"})
	if err := ns.Seed("nsip", map[string]any{"ipaddress": "203.0.113.31", "netmask": "255.255.255.255", "type": "VIP"}); err != nil {
		t.Fatal(err)
	}
	// Each NITRO request takes a while, as on a busy appliance, so the
	// kill lands between two steps of the saga.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		ns.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)

	secretsPath := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secretsPath, []byte("secrets:\n  netscaler/lab: {username: nsroot, password: ns-Integration-1, endpoints: ["+slow.URL+"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, w := serverAndWorker(t, dir, secretsPath)

	in := api.PublishInput{
		Name: "db", VIP: "203.0.113.30", Port: 5432, Protocol: "TCP",
		Backends:  []api.Backend{{IP: "10.0.2.11", Port: 5432}, {IP: "10.0.2.12", Port: 5432}},
		RNAT:      &api.RNAT{Network: "10.0.2.0", Netmask: "255.255.255.0", NATIP: "203.0.113.31"},
		NetScaler: api.NetScaler{URL: slow.URL, Credential: "netscaler/lab", Auth: "header"},
	}
	id := api.PublishWorkflowID(in.VIP, in.Port)
	run, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: id, TaskQueue: api.DefaultTaskQueue},
		api.WorkflowPublishService, in)
	if err != nil {
		t.Fatal(err)
	}
	// Kill the worker as soon as the vserver step has started.
	deadline := time.Now().Add(time.Minute)
	for !activityStarted(t, c, id, "EnsureLBVServer") {
		if time.Now().After(deadline) {
			t.Fatal("EnsureLBVServer never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.kill()
	w.start()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var res api.PublishResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("publish: %v", err)
	}
	names := nitro.Names(id)
	if _, ok := ns.Objects("lbvserver")[names.VServer]; !ok {
		t.Error("no vserver")
	}
	if n := len(ns.Bindings("lbvserver_servicegroup_binding", names.VServer)); n != 1 {
		t.Errorf("vserver bindings = %d, want 1", n)
	}
	if n := len(ns.Bindings("servicegroup_servicegroupmember_binding", names.ServiceGroup)); n != 2 {
		t.Errorf("members = %d, want 2", n)
	}
	if n := len(ns.Objects("lbvserver")) + len(ns.Objects("servicegroup")) + len(ns.Objects("rnat")); n != 3 {
		t.Errorf("objects = %d, want exactly one vserver, one servicegroup, one rnat", n)
	}
	if saved, ok := ns.SavedConfig(); !ok || saved.Objects["rnat"][nitro.RNATName(in.RNAT.Network, in.RNAT.Netmask)] == nil {
		t.Error("configuration not saved")
	}
}

func activityStarted(t *testing.T, c client.Client, id, activity string) bool {
	t.Helper()
	desc, err := c.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		return false
	}
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetActivityType().GetName() == activity && pa.GetState() == enumspb.PENDING_ACTIVITY_STATE_STARTED {
			return true
		}
	}
	return false
}

// serverAndWorker starts a dev server and the worker process with only a
// secrets file (no inventory, no pxe): enough for the publishing and VM
// network workflows.
func serverAndWorker(t *testing.T, dir, secretsPath string) (client.Client, *workerProc) {
	t.Helper()
	srv := devserver.StartT(t, devserver.Options{LogFile: filepath.Join(dir, "temporal.log")})
	c, err := client.Dial(client.Options{HostPort: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w := &workerProc{t: t, log: filepath.Join(dir, "worker.log"), env: []string{
		"TEMPORAL_ADDRESS=" + srv.Addr(), "RACKFLOW_SECRETS=" + secretsPath,
		"RACKFLOW_PXE_TOKEN=unused", "RACKFLOW_METRICS_ADDR=", "RACKFLOW_LOG_LEVEL=debug",
	}}
	w.start()
	t.Cleanup(w.kill)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(w.log)
			t.Logf("worker log (tail):\n%s", tail(string(b), 40))
		}
	})
	return c, w
}
