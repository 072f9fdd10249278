package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/ipmisim"
	"github.com/rackflow/rackflow/testsuite/lab"
	"github.com/rackflow/rackflow/testsuite/netns"
)

// Every pod's boot network has the same address plan, as two sites built
// from one template would: rackflow-pxe at pxeAddr, the lab machine at
// bootAddr, its BMC on port bmcPort, its live system's sshd on livePort,
// its installed OS's on osPort. A step run by the wrong pod's worker would
// reach the wrong machine, with credentials that worker does not have.
const (
	pxeAddr  = "10.60.0.1"
	pxeCIDR  = pxeAddr + "/24"
	bootAddr = "10.60.0.10"
	bootCIDR = bootAddr + "/24"
	bmcPort  = 623
	livePort = 2222
	osPort   = 22
	// mgmtAddr is the dev server's address for the pods, on a bridge of the
	// test's in the host namespace; each pod reaches it over a veth of its
	// own.
	mgmtAddr = "10.200.0.1"
)

// TestPodsInNetworkNamespaces runs a site with two boot networks (pods "a"
// and "b"), one host each, provisioned at once on the dev server. Each pod
// is a network namespace holding its rackflow-pxe, its worker (--pod),
// which alone holds its hosts' secrets and images, and a bridge, its boot
// network, linking its lab machine (ipmi_sim and sshd, in a namespace of
// its own). Both pods use the same addresses and ports. The dev server
// and a shared worker (--shared-only, no pxe service, no secrets) run in
// the host namespace; a pod's worker reaches the server over the pod's
// veth (10.200.N.0/30, to a relay on 10.200.0.1) and sees nothing of the
// other pod.
//
// Pod a's worker is SIGKILLed mid-stream: pod b's run must finish
// untouched, pod a's must wait, its image step scheduled and picked up by
// no other worker, and finish once its worker is back. About 50s; needs
// root (skipped otherwise) and the dev server.
func TestPodsInNetworkNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: real dev server, ipmi_sim and sshd in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("pods in network namespaces need root")
	}
	if devserver.ClusterMode() {
		t.Skip("the cluster (RACKFLOW_TEMPORAL_CLUSTER) listens on loopback only: pod workers in network namespaces cannot reach it")
	}
	netns.Require(t, map[string]string{ipmisim.Binary: "openipmi", "curl": "curl"})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()

	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	tag := "rf" + hex.EncodeToString(rnd[:])
	netns.HostBridge(t, tag+"-m", mgmtAddr+"/32")
	server := devserver.StartT(t, devserver.Options{LogFile: filepath.Join(dir, "temporal.log")})
	c, err := client.Dial(client.Options{HostPort: server.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// start-dev's --ip moves only the frontend: its other services still
	// dial each other on 127.0.0.1, so it stays on loopback and the
	// management side relays mgmtAddr to it.
	_, port, _ := net.SplitHostPort(server.Addr())
	mgmt, err := net.Listen("tcp", net.JoinHostPort(mgmtAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	go relay(ctx, mgmt, server.Addr())

	pods := map[string]*stack{}
	nss := map[string]*netns.NS{}
	var inventory strings.Builder
	inventory.WriteString("hosts:\n")
	for i, pod := range []string{"a", "b"} {
		ns := netns.New(t, "pod"+pod)
		nss[pod] = ns
		hostEnd, podEnd := fmt.Sprintf("10.200.%d.1", i+1), fmt.Sprintf("10.200.%d.2", i+1)
		netns.HostVeth(t, tag+"-"+pod, hostEnd+"/30", ns, "mgmt0")
		ns.AddAddr("mgmt0", podEnd+"/30")
		// Only the dev server's address is routed out: no default route.
		ns.Run("ip", "route", "add", mgmtAddr+"/32", "via", hostEnd)
		// The boot network: a bridge in the pod's namespace with the pxe
		// service's address, and the lab machine in a namespace of its
		// own on a port of it.
		machine := netns.New(t, "host"+pod)
		netns.Veth(t, ns, "port0", machine, "eth0")
		ns.Bridge("boot0", "port0")
		ns.AddAddr("boot0", pxeCIDR)
		machine.AddAddr("eth0", bootCIDR)

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
		// rackflow-pxe in the pod's namespace: its worker calls the lease
		// API on loopback (plain http goes nowhere else), its machines
		// boot from its boot-network address.
		var ln net.Listener
		if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", "0.0.0.0:0"); return err }); err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		s.pxeURL = "http://" + net.JoinHostPort("127.0.0.1", port)
		bootURL := "http://" + net.JoinHostPort(pxeAddr, port)
		token := "pod-" + pod + "-pxe-token"
		srv := &pxe.APIServer{Listener: ln, Token: token, Store: store, PublicURL: bootURL}
		go func() { _ = srv.Serve(ctx) }()

		l, err := lab.Prepare(lab.Options{Dir: filepath.Join(podDir, "lab"), Host: "pod" + pod + "01",
			MAC: "52:54:00:00:0a:0" + string(rune('1'+i)), PXEURL: bootURL, ImageSize: 64 << 20, Pod: pod,
			Addr: bootAddr, BMCPort: bmcPort, LivePort: livePort, OSPort: osPort})
		if err != nil {
			t.Fatal(err)
		}
		s.lab = l
		t.Cleanup(l.StopMachine)
		s.sim = ipmisim.Start(t, ipmisim.Options{Username: l.BMCUser, Password: l.BMCPassword, OnPower: l.HookPath,
			Addr: bootAddr, Port: bmcPort, NetNS: machine.Name})
		b, err := os.ReadFile(l.InventoryPath)
		if err != nil {
			t.Fatal(err)
		}
		_, entry, ok := strings.Cut(string(b), "hosts:\n")
		if !ok {
			t.Fatalf("lab inventory without hosts:\n%s", b)
		}
		inventory.WriteString(entry)

		s.worker = &workerProc{t: t, log: filepath.Join(podDir, "worker.log"), netns: ns.Name, env: []string{
			"TEMPORAL_ADDRESS=" + mgmt.Addr().String(),
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
	p := waitImageProgress(t, c, runA.GetID(), 3*time.Minute)
	a.worker.kill()
	t.Logf("pod a's worker killed with its stream at %d of %d bytes", p.Offset, p.Total)

	// The killed attempt times out on its heartbeat and the retry waits
	// on pod a's queue, which no live worker polls.
	attempt := waitImageScheduled(t, c, runA)

	b.checkOutcome(t, runB)

	// Pod a's run waits for its own worker: nobody else ran its steps
	// while pod b's run went all the way.
	desc, err := c.DescribeWorkflowExecution(ctx, runA.GetID(), runA.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("pod a's run is %s while its worker is down, want running", st)
	}
	if pa := pendingWriteImage(desc.GetPendingActivities()); pa == nil || pa.GetState() != enumspb.PENDING_ACTIVITY_STATE_SCHEDULED || pa.GetAttempt() != attempt {
		t.Errorf("pod a's WriteImage after pod b's run finished: %v; want still scheduled, attempt %d, picked up by nobody", pa, attempt)
	}
	var st api.ProvisionStatus
	if v, err := c.QueryWorkflow(ctx, runA.GetID(), runA.GetRunID(), api.QueryStatus); err != nil || v.Get(&st) != nil {
		t.Fatalf("status query: %v", err)
	}
	if st.Pod != "a" || st.PodQueue != api.PodQueue(api.DefaultTaskQueue, "a") || st.Step != api.StepWriteImage {
		t.Errorf("status of pod a's run: pod %q queue %q step %q; want a, %s, %s", st.Pod, st.PodQueue, st.Step,
			api.PodQueue(api.DefaultTaskQueue, "a"), api.StepWriteImage)
	}
	if digest, err := a.lab.DiskDigest(); err != nil || digest == a.lab.ImageSHA256 {
		t.Errorf("pod a's disk holds the whole image (%v) while its worker is down", err)
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

	// The same address is a different machine in each pod: each pod's
	// namespace reaches its own installed OS at bootAddr.
	for pod, s := range pods {
		key, err := sshHostKey(nss[pod], net.JoinHostPort(bootAddr, strconv.Itoa(osPort)))
		if err != nil {
			t.Errorf("pod %s: %v", pod, err)
			continue
		}
		if !bytes.Equal(key.Marshal(), s.lab.OSHostKey.Marshal()) {
			t.Errorf("pod %s's namespace reaches an OS at %s:%d that is not its own host's", pod, bootAddr, osPort)
		}
	}
	if bytes.Equal(a.lab.OSHostKey.Marshal(), b.lab.OSHostKey.Marshal()) {
		t.Error("both pods' hosts have one OS host key: the check above proves nothing")
	}

	// Each pod's pxe service saw only its own host; each worker's log
	// mentions only its own; each run's activities after the inventory
	// lookup went to its pod's queue.
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

// relay accepts on ln until ctx ends and pipes each connection to addr.
func relay(ctx context.Context, ln net.Listener, addr string) {
	go func() { <-ctx.Done(); _ = ln.Close() }()
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			out, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer out.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
			go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
			<-done // either side gone (a killed worker): close both
		}()
	}
}

func pendingWriteImage(pas []*workflowpb.PendingActivityInfo) *workflowpb.PendingActivityInfo {
	for _, pa := range pas {
		if pa.GetActivityType().GetName() == "WriteImage" {
			return pa
		}
	}
	return nil
}

// waitImageScheduled waits until run's WriteImage is pending again,
// scheduled and not started (its worker is gone), and returns the attempt
// waiting to be picked up.
func waitImageScheduled(t *testing.T, c client.Client, run client.WorkflowRun) int32 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last *workflowpb.PendingActivityInfo
	for time.Now().Before(deadline) {
		desc, err := c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
		if err != nil {
			t.Fatal(err)
		}
		if last = pendingWriteImage(desc.GetPendingActivities()); last != nil && last.GetState() == enumspb.PENDING_ACTIVITY_STATE_SCHEDULED && last.GetAttempt() > 1 {
			return last.GetAttempt()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("WriteImage never went back to scheduled after its worker was killed; last: %v", last)
	return 0
}

// sshHostKey dials addr from inside ns and returns the host key its SSH
// server presents (the handshake stops there: no login is tried).
func sshHostKey(ns *netns.NS, addr string) (ssh.PublicKey, error) {
	var conn net.Conn
	if err := ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, ns.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var key ssh.PublicKey
	_, _, _, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: "root",
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			key = k
			return nil
		},
	})
	if key == nil {
		return nil, fmt.Errorf("ssh handshake with %s in %s: %v", addr, ns.Name, err)
	}
	return key, nil
}
