package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/lab"
)

// TestPodsRouteToTheirOwnWorker runs a site with two boot networks (pods
// "a" and "b"): each has its own rackflow-pxe and its own worker (--pod),
// which alone holds its hosts' secrets and images; a shared worker
// (--shared-only, no pxe service, no secrets) runs the workflows. One host
// per pod is provisioned at once, on the dev server.
//
// A lab machine boots only from its own pod's pxe service, so a host whose
// activities ran on the other pod's worker would never come up. Pod a's
// worker is SIGKILLed mid-stream: pod b's run must finish untouched, pod
// a's must wait (nothing else may pick its activities up) and finish once
// its worker is back.
func TestPodsRouteToTheirOwnWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: real dev server, ipmi_sim and sshd")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	server := devserver.StartT(t, devserver.Options{LogFile: filepath.Join(dir, "temporal.log")})
	c, err := client.Dial(client.Options{HostPort: server.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	pods := map[string]*stack{}
	var inventory strings.Builder
	inventory.WriteString("hosts:\n")
	for i, pod := range []string{"a", "b"} {
		s := &stack{server: server, client: c}
		podDir := filepath.Join(dir, pod)
		if err := os.MkdirAll(filepath.Join(podDir, "lab"), 0o755); err != nil {
			t.Fatal(err)
		}
		store, err := pxe.OpenStore(pxe.StoreConfig{Path: filepath.Join(podDir, "leases.json")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.Close() })
		s.store = store
		ln := freeListener(t)
		s.pxeURL = "http://" + ln.Addr().String()
		token := "pod-" + pod + "-pxe-token"
		srv := &pxe.APIServer{Listener: ln, Token: token, Store: store, PublicURL: s.pxeURL}
		go func() { _ = srv.Serve(ctx) }()

		l, err := lab.Prepare(lab.Options{Dir: filepath.Join(podDir, "lab"), Host: "pod" + pod + "01",
			MAC: "52:54:00:00:0a:0" + string(rune('1'+i)), PXEURL: s.pxeURL, ImageSize: 64 << 20, Pod: pod})
		if err != nil {
			t.Fatal(err)
		}
		s.lab = l
		t.Cleanup(l.StopMachine)
		s.sim = startBMC(t, l)
		b, err := os.ReadFile(l.InventoryPath)
		if err != nil {
			t.Fatal(err)
		}
		_, entry, ok := strings.Cut(string(b), "hosts:\n")
		if !ok {
			t.Fatalf("lab inventory without hosts:\n%s", b)
		}
		inventory.WriteString(entry)

		s.worker = &workerProc{t: t, log: filepath.Join(podDir, "worker.log"), env: []string{
			"TEMPORAL_ADDRESS=" + server.Addr(),
			"RACKFLOW_POD=" + pod,
			"RACKFLOW_SECRETS=" + l.SecretsPath,
			"RACKFLOW_IMAGE_DIR=" + l.ImageDir,
			"RACKFLOW_PXE_URL=" + s.pxeURL,
			"RACKFLOW_PXE_TOKEN=" + token,
			"RACKFLOW_CHEF_DIR=" + l.ChefDir,
			"RACKFLOW_METRICS_ADDR=",
			"RACKFLOW_IMAGE_SEGMENT_MIB=8",
			"RACKFLOW_IMAGE_MAX_MBPS=16", // the kill must land mid-stream
			"RACKFLOW_IMAGE_REPORT_EVERY=300ms",
			"RACKFLOW_LOG_LEVEL=debug",
		}}
		pods[pod] = s
	}
	invPath := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(invPath, []byte(inventory.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	shared := &workerProc{t: t, log: filepath.Join(dir, "shared-worker.log"), env: []string{
		"TEMPORAL_ADDRESS=" + server.Addr(),
		"RACKFLOW_SHARED_ONLY=true",
		"RACKFLOW_INVENTORY=" + invPath,
		"RACKFLOW_SECRETS=",
		"RACKFLOW_PXE_TOKEN=",
		"RACKFLOW_METRICS_ADDR=",
	}}
	shared.start()
	t.Cleanup(shared.kill)
	for pod, s := range pods {
		s.worker.env = append(s.worker.env, "RACKFLOW_INVENTORY="+invPath)
		s.worker.start()
		t.Cleanup(s.worker.kill)
		t.Cleanup(func() {
			if t.Failed() {
				for _, f := range []string{s.worker.log, s.lab.MachineLog, shared.log} {
					b, _ := os.ReadFile(f)
					t.Logf("--- pod %s: %s (tail):\n%s", pod, f, tail(string(b), 40))
				}
			}
		})
	}

	a, b := pods["a"], pods["b"]
	runA, runB := a.start(t), b.start(t)
	waitImageProgress(t, c, runA.GetID(), 3*time.Minute)
	a.worker.kill()

	b.checkOutcome(t, runB)

	// Pod a's run waits for its own worker: nobody else ran its steps.
	desc, err := c.DescribeWorkflowExecution(ctx, runA.GetID(), runA.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("pod a's run is %s while its worker is down, want running", st)
	}
	var st api.ProvisionStatus
	if v, err := c.QueryWorkflow(ctx, runA.GetID(), runA.GetRunID(), api.QueryStatus); err != nil || v.Get(&st) != nil {
		t.Fatalf("status query: %v", err)
	}
	if st.Pod != "a" || st.PodQueue != api.PodQueue(api.DefaultTaskQueue, "a") || st.Step != api.StepWriteImage {
		t.Errorf("status of pod a's run: pod %q queue %q step %q; want a, %s, %s", st.Pod, st.PodQueue, st.Step,
			api.PodQueue(api.DefaultTaskQueue, "a"), api.StepWriteImage)
	}

	// What on-call sees: where the host's steps run, and when its
	// worker last asked for work.
	out, code := a.starter(t, "status", a.lab.Options.Host)
	if code != 0 || !strings.Contains(out, "pod a: its steps run on the pod's worker (task queue "+api.PodQueue(api.DefaultTaskQueue, "a")+")") ||
		!(strings.Contains(out, "last polled") || strings.Contains(out, "no worker polls it")) {
		t.Errorf("starter status (exit %d) does not show the pod, its queue and its last poll:\n%s", code, out)
	}

	a.worker.start()
	a.checkOutcome(t, runA)

	// Each pod's pxe service saw only its own host; each run's activities
	// after the inventory lookup went to its pod's queue.
	for pod, s := range pods {
		for other, o := range pods {
			if other == pod {
				continue
			}
			if _, ok, _ := s.store.Lookup(ctx, o.lab.MAC); ok {
				t.Errorf("pod %s's pxe service holds a lease for pod %s's host", pod, other)
			}
			if b, _ := os.ReadFile(s.worker.log); strings.Contains(string(b), o.lab.Options.Host) {
				t.Errorf("pod %s's worker log mentions pod %s's host %s", pod, other, o.lab.Options.Host)
			}
		}
	}
	for pod, run := range map[string]client.WorkflowRun{"a": runA, "b": runB} {
		h := pods[pod].history(t, run.GetID(), run.GetRunID())
		queues := map[string]int{}
		var first string
		for _, ev := range h.Events {
			if at := ev.GetActivityTaskScheduledEventAttributes(); at != nil {
				q := at.GetTaskQueue().GetName()
				if first == "" {
					first = at.GetActivityType().GetName() + "@" + q
				}
				queues[q]++
			}
		}
		want := api.PodQueue(api.DefaultTaskQueue, pod)
		if first != "ResolveHost@"+api.DefaultTaskQueue || queues[api.DefaultTaskQueue] != 1 || queues[want] < 8 || len(queues) != 2 {
			t.Errorf("pod %s's run scheduled activities on %v (first %s); want the inventory lookup on %s and every other on %s",
				pod, queues, first, api.DefaultTaskQueue, want)
		}
	}
}
