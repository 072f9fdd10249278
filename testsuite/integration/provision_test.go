// Package integration runs rackflow end to end on real peers: a real Temporal
// dev server, the worker as a separate process, the pxe lease API, ipmi_sim
// driven through bmclib/ipmitool, and real OpenSSH sshds standing in for the
// host's live system and installed OS (testsuite/lab). It kills the worker
// and the server in the middle of the image stream and checks the disk.
//
// Its TestQEMU tests do the same on a QEMU machine with real firmware that
// PXE-boots through rackflow-pxe (the lab of testsuite/qemu): WriteImage
// alone, ProvisionHost in the SDK's test environment, and ProvisionHost on
// the dev server with the worker killed mid-stream. They are slow and run
// only with RACKFLOW_QEMU=1 (make test-qemu). Everything here is skipped
// under -short.
package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/histories"
	"github.com/rackflow/rackflow/testsuite/ipmisim"
	"github.com/rackflow/rackflow/testsuite/lab"
	"github.com/rackflow/rackflow/workflows"
)

var (
	buildOnce sync.Once
	workerBin string
	buildErr  error
)

// buildWorker builds the worker binary once per test binary.
func buildWorker(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rackflow-worker-bin-")
		if err != nil {
			buildErr = err
			return
		}
		workerBin = filepath.Join(dir, "rackflow-worker")
		cmd := exec.Command("go", "build", "-o", workerBin, "github.com/rackflow/rackflow/worker")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build worker: %v\n%s", err, out)
			return
		}
		// Installed as in production: the disk helper beside the worker,
		// which finds and uploads it to the live system (the lab's and
		// QEMU's, both of the host's architecture on CI's amd64 hosts).
		_, buildErr = diskHelper(dir, runtime.GOARCH)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return workerBin
}

// diskHelper builds rackflow-diskhelper for linux/goarch into dir and
// returns its path.
func diskHelper(dir, goarch string) (string, error) {
	out := filepath.Join(dir, "rackflow-diskhelper")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "github.com/rackflow/rackflow/activities/image/cmd/rackflow-diskhelper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build diskhelper: %v\n%s", err, b)
	}
	return out, nil
}

// workerProc is the worker running as its own process.
type workerProc struct {
	t   *testing.T
	env []string
	log string
	// netns, when set, is the network namespace (`ip netns`) it runs in.
	netns string
	cmd   *exec.Cmd
}

func (w *workerProc) start() {
	w.t.Helper()
	cmd := exec.Command(buildWorker(w.t))
	if w.netns != "" {
		// ip execs the worker after entering the namespace: the pid,
		// and the process group kill and stop signal, are the worker's.
		cmd = exec.Command("ip", "netns", "exec", w.netns, buildWorker(w.t))
	}
	cmd.Env = append(os.Environ(), w.env...)
	f, err := os.OpenFile(w.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("start worker: %v", err)
	}
	w.cmd = cmd
}

// kill sends SIGKILL, as a crash or an OOM kill would.
func (w *workerProc) kill() {
	if w.cmd == nil {
		return
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	_ = w.cmd.Wait()
	w.cmd = nil
}

// stop sends SIGTERM, as a deploy of new worker code would, and waits.
func (w *workerProc) stop() {
	if w.cmd == nil {
		return
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGTERM)
	_ = w.cmd.Wait()
	w.cmd = nil
}

type stack struct {
	lab    *lab.Lab
	server *devserver.Server
	client client.Client
	worker *workerProc
	store  *pxe.Store
	sim    *ipmisim.Sim
	pxeURL string
}

func freeListener(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// newStack starts pxe, the lab host, ipmi_sim, a dev server and the worker.
func newStack(t *testing.T, imageSize int64) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: real dev server, ipmi_sim and sshd")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	s := &stack{}

	// pxe lease API, in process.
	store, err := pxe.OpenStore(pxe.StoreConfig{Path: filepath.Join(dir, "leases.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s.store = store
	ln := freeListener(t)
	s.pxeURL = "http://" + ln.Addr().String()
	const token = "integration-pxe-token"
	api := &pxe.APIServer{Listener: ln, Token: token, Store: store, PublicURL: s.pxeURL}
	go func() { _ = api.Serve(ctx) }()

	labDir := filepath.Join(dir, "lab")
	if err := os.MkdirAll(labDir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := lab.Prepare(lab.Options{Dir: labDir, PXEURL: s.pxeURL, ImageSize: imageSize})
	if err != nil {
		t.Fatal(err)
	}
	s.lab = l
	t.Cleanup(l.StopMachine)
	s.sim = startBMC(t, l)

	s.server = devserver.StartT(t, devserver.Options{LogFile: filepath.Join(dir, "temporal.log")})
	c, err := client.Dial(client.Options{HostPort: s.server.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s.client = c

	s.worker = &workerProc{t: t, log: filepath.Join(dir, "worker.log"), env: []string{
		"TEMPORAL_ADDRESS=" + s.server.Addr(),
		"RACKFLOW_INVENTORY=" + l.InventoryPath,
		"RACKFLOW_SECRETS=" + l.SecretsPath,
		"RACKFLOW_IMAGE_DIR=" + l.ImageDir,
		"RACKFLOW_PXE_URL=" + s.pxeURL,
		"RACKFLOW_PXE_TOKEN=" + token,
		"RACKFLOW_CHEF_DIR=" + l.ChefDir,
		"RACKFLOW_METRICS_ADDR=",
		"RACKFLOW_IMAGE_SEGMENT_MIB=16",
		// Paced so the stream outlasts the SDK's heartbeat throttling and
		// the kill lands mid-stream.
		"RACKFLOW_IMAGE_MAX_MBPS=40",
		"RACKFLOW_IMAGE_REPORT_EVERY=300ms",
		"RACKFLOW_LOG_LEVEL=debug",
	}}
	s.worker.start()
	t.Cleanup(s.worker.kill)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{s.worker.log, l.MachineLog} {
				b, _ := os.ReadFile(f)
				t.Logf("--- %s (tail):\n%s", f, tail(string(b), 60))
			}
		}
	})
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var testOptions = api.ProvisionOptions{
	LiveSSHDeadline:   "2m",
	OSSSHDeadline:     "2m",
	AttentionDeadline: "10m",
	ImageHeartbeat:    "3s",
	StepAttempts:      5,
	RetryInterval:     "1s",
}

func (s *stack) start(t *testing.T) client.WorkflowRun {
	t.Helper()
	run, err := s.client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID:                                       api.ProvisionWorkflowID(s.lab.Options.Host),
		TaskQueue:                                api.DefaultTaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, api.WorkflowProvisionHost, api.ProvisionInput{Host: s.lab.Options.Host, Options: testOptions})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return run
}

// waitImageProgress waits until the server has recorded a heartbeat of the
// image stream past offset 0 (and short of its end), for at most within.
func waitImageProgress(t *testing.T, c client.Client, id string, within time.Duration) image.Progress {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		desc, err := c.DescribeWorkflowExecution(context.Background(), id, "")
		if err == nil && desc.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			t.Fatalf("run ended (%s) before the image stream reported progress", desc.GetWorkflowExecutionInfo().GetStatus())
		}
		if err == nil {
			for _, pa := range desc.GetPendingActivities() {
				if pa.GetActivityType().GetName() != "WriteImage" || pa.GetHeartbeatDetails() == nil {
					continue
				}
				var p image.Progress
				if err := converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &p); err == nil && p.Offset > 0 {
					if p.Offset >= p.Total {
						t.Fatalf("first progress seen was the end of the stream (%d bytes): the kill would not land mid-stream", p.Offset)
					}
					return p
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the image stream never reported progress")
	return image.Progress{}
}

func (s *stack) history(t *testing.T, id, runID string) *historypb.History {
	t.Helper()
	h, err := histories.Fetch(context.Background(), s.client, id, runID)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// writeImageResult finds WriteImage's result and how many attempts it took.
func writeImageResult(t *testing.T, h *historypb.History) (image.WriteResult, int32) {
	t.Helper()
	r, attempt, err := histories.WriteImageResult(h)
	if err != nil {
		t.Fatal(err)
	}
	return r, attempt
}

func (s *stack) checkOutcome(t *testing.T, run client.WorkflowRun) api.ProvisionResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res api.ProvisionResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("provisioning failed: %v", err)
	}
	digest, err := s.lab.DiskDigest()
	if err != nil {
		t.Fatal(err)
	}
	if digest != s.lab.ImageSHA256 {
		t.Errorf("disk digest %s, want the image's %s", digest, s.lab.ImageSHA256)
	}
	if res.ImageDigest != s.lab.ImageSHA256 {
		t.Errorf("result digest %s, want %s", res.ImageDigest, s.lab.ImageSHA256)
	}
	wantKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.lab.OSHostKey)))
	if res.OSHostKey != wantKey {
		t.Errorf("recorded OS host key %q, want %q", res.OSHostKey, wantKey)
	}
	if _, err := os.Stat(filepath.Join(s.lab.ChefDir, "converged")); err != nil {
		t.Errorf("chef never converged: %v", err)
	}
	l, ok, err := s.store.Lookup(context.Background(), s.lab.MAC)
	if err != nil || !ok || l.Profile != lease.ProfileDisk {
		t.Errorf("lease after provisioning = %+v %v %v, want profile disk", l, ok, err)
	}
	if !s.sim.Power() {
		t.Error("host is powered off after provisioning")
	}
	return res
}

func (s *stack) checkNoSecrets(t *testing.T, h *historypb.History) {
	t.Helper()
	hist, err := histories.Text(h)
	if err != nil {
		t.Fatal(err)
	}
	if n := histories.PayloadCount(h); n < 10 {
		t.Fatalf("only %d payloads decoded from the history", n)
	}
	vals, err := s.lab.SecretValues()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		if strings.Contains(hist, v) {
			t.Errorf("history holds a secret value (%d chars, starts %q)", len(v), v[:4])
		}
	}
	for _, marker := range []string{"PRIVATE KEY", "password"} {
		if strings.Contains(hist, marker) {
			t.Errorf("history mentions %q", marker)
		}
	}
	// The references are there, which is how the worker found the values.
	if !strings.Contains(hist, "ssh/provision") {
		t.Error("history lacks the credential reference: is the check looking at the right history?")
	}
}

func TestProvisionSurvivesWorkerKill(t *testing.T) {
	s := newStack(t, 256<<20)
	run := s.start(t)

	// A second start for the same host is refused while the first runs.
	_, err := s.client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: api.ProvisionWorkflowID(s.lab.Options.Host), TaskQueue: api.DefaultTaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, api.WorkflowProvisionHost, api.ProvisionInput{Host: s.lab.Options.Host})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if !errors.As(err, &already) {
		t.Errorf("second start: err = %v, want WorkflowExecutionAlreadyStarted", err)
	}

	p := waitImageProgress(t, s.client, run.GetID(), 3*time.Minute)
	s.worker.kill()
	t.Logf("worker killed with the stream at %d of %d bytes", p.Offset, p.Total)
	s.worker.start()

	res := s.checkOutcome(t, run)
	h := s.history(t, run.GetID(), run.GetRunID())
	wr, attempt := writeImageResult(t, h)
	if attempt < 2 || wr.ResumedFrom == 0 || wr.ResumedFrom >= s.lab.ImageSize {
		t.Errorf("WriteImage finished on attempt %d resuming from %d: want a retry that resumed past 0", attempt, wr.ResumedFrom)
	}
	if !wr.Helper {
		t.Error("the worker did not use the rackflow-diskhelper installed beside it")
	}
	if wr.ResumedFrom > p.Offset+int64(16<<20) {
		t.Errorf("resumed from %d, beyond the last progress seen (%d) plus a segment", wr.ResumedFrom, p.Offset)
	}
	s.checkNoSecrets(t, h)
	if path := os.Getenv("RACKFLOW_SAVE_HISTORY"); path != "" {
		saveHistory(t, h, path)
	}
	t.Logf("provisioned %s in %s; WriteImage attempt %d resumed from %d", res.Host, res.Duration, attempt, wr.ResumedFrom)

	// The host is provisioned now: a plain start (as `temporal workflow
	// start` sends it) must not wipe it; the workflow itself refuses.
	again, err := s.client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: api.ProvisionWorkflowID(s.lab.Options.Host), TaskQueue: api.DefaultTaskQueue,
	}, api.WorkflowProvisionHost, api.ProvisionInput{Host: s.lab.Options.Host})
	if err != nil {
		t.Fatalf("start again: %v", err)
	}
	err = again.Get(context.Background(), nil)
	if !activities.IsType(err, workflows.ErrTypeWouldWipeProvisionedHost) || !strings.Contains(err.Error(), run.GetRunID()) {
		t.Errorf("second provisioning of a provisioned host: %v, want %s naming run %s", err, workflows.ErrTypeWouldWipeProvisionedHost, run.GetRunID())
	}
}

// TestProvisionResumesAfterGracefulStop stops the worker with SIGTERM in
// the middle of the stream: the stream ends at a committed segment with a
// WorkerStopping error, and the next worker resumes from there.
func TestProvisionResumesAfterGracefulStop(t *testing.T) {
	s := newStack(t, 256<<20)
	run := s.start(t)
	p := waitImageProgress(t, s.client, run.GetID(), 3*time.Minute)
	s.worker.stop()
	s.worker.start()
	s.checkOutcome(t, run)
	h := s.history(t, run.GetID(), run.GetRunID())
	wr, attempt := writeImageResult(t, h)
	if attempt != 2 || wr.ResumedFrom < p.Offset || wr.ResumedFrom >= s.lab.ImageSize {
		t.Errorf("WriteImage finished on attempt %d resuming from %d (progress seen before the stop: %d)", attempt, wr.ResumedFrom, p.Offset)
	}
	var stopped bool
	for _, ev := range h.Events {
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && a.GetLastFailure() != nil {
			stopped = stopped || a.GetLastFailure().GetApplicationFailureInfo().GetType() == "WorkerStopping"
		}
	}
	if !stopped {
		t.Error("the stopped attempt did not end with WorkerStopping: was the worker stop graceful?")
	}
}

// waitStatusProgress waits until the run's status query shows the image
// stream part-way, as an operator running `starter status` would see it.
func (s *stack) waitStatusProgress(t *testing.T, id string) api.ProvisionStatus {
	t.Helper()
	var st api.ProvisionStatus
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		v, err := s.client.QueryWorkflow(context.Background(), id, "", api.QueryStatus)
		if err == nil && v.Get(&st) == nil && st.Step == api.StepWriteImage && st.BytesWritten > 0 {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the status query never showed image progress; last: %+v", st)
	return st
}

func TestProvisionSurvivesServerRestart(t *testing.T) {
	s := newStack(t, 256<<20)
	run := s.start(t)
	waitImageProgress(t, s.client, run.GetID(), 3*time.Minute)
	// The status query shows the stream's bytes, rate and ETA live.
	st := s.waitStatusProgress(t, run.GetID())
	if st.BytesTotal != s.lab.ImageSize || st.BytesWritten >= st.BytesTotal || st.MBps <= 0 || st.ETASeconds <= 0 || st.ImagePhase != "write" {
		t.Errorf("status mid-stream: %d of %d bytes, %.1f MB/s, ETA %.1fs, phase %q: want part of the image, a rate and an ETA",
			st.BytesWritten, st.BytesTotal, st.MBps, st.ETASeconds, st.ImagePhase)
	}
	// The dev server, or a cluster's history node (RACKFLOW_TEMPORAL_CLUSTER).
	s.server.Kill() // returns once the process has exited (its Wait)
	// Down for real: nothing answers on the killed process's port until
	// the restart.
	if c, err := net.DialTimeout("tcp", s.server.KillAddr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after SIGKILL", s.server.KillAddr())
	}
	if err := s.server.Restart(context.Background()); err != nil {
		t.Fatalf("restart the server: %v", err)
	}
	s.checkOutcome(t, run)
}

func saveHistory(t *testing.T, h *historypb.History, path string) {
	t.Helper()
	raw, err := protojson.MarshalOptions{Indent: "  "}.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("history saved to %s", path)
}

// startBMC runs ipmi_sim as the lab host's BMC; its power control runs the
// lab machine's hook.
func startBMC(t *testing.T, l *lab.Lab) *ipmisim.Sim {
	t.Helper()
	sim := ipmisim.Start(t, ipmisim.Options{
		Username: l.BMCUser,
		Password: l.BMCPassword,
		OnPower:  l.HookPath,
	})
	if err := l.SetBMCPort(sim.Port()); err != nil {
		t.Fatal(err)
	}
	return sim
}
