package workflows

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
)

func testHost() api.Host {
	h := api.Host{
		Name:    "node07",
		BMC:     api.BMC{Address: "127.0.0.1", Port: 6230, Provider: "ipmi", Credential: "bmc/node07"},
		MAC:     "52:54:00:ab:cd:07",
		Network: api.Network{IP: "127.0.0.1", Netmask: "255.0.0.0"},
		Disk:    "/dev/sda",
		Image:   api.Image{URL: "http://127.0.0.1:1/x.raw", Size: 1 << 20, SHA256: strings.Repeat("ab", 32)},
		SSH:     api.SSH{Credential: "ssh/provision", Port: 2222, LivePort: 2223},
		Chef:    &api.Chef{ServerURL: "https://chef.test", RunList: []string{"role[db]"}, ValidatorCredential: "chef/validator"},
	}
	h.Defaults()
	return h
}

// recorder keeps the order of activity calls, as the operator would read
// them in the history.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recorder) count(s string) int {
	n := 0
	for _, c := range r.list() {
		if c == s {
			n++
		}
	}
	return n
}

type fixture struct {
	env *testsuite.TestWorkflowEnvironment
	rec *recorder
	// failures by activity name: how many times it fails before succeeding
	// (-1: always), and with which error.
	fail map[string]failure
	// waitSSH is the WaitForSSH mock, to slow it down in a test.
	waitSSH *testsuite.MockCallWrapper
	// lastCompleted is what LastCompletedProvision finds.
	lastCompleted runs.CompletedProvision
	// timeline is what BootTimeline answers, given the call's number
	// (1, 2...); nil: an empty timeline.
	timeline      func(n int) api.BootTimeline
	timelineReads int
	// host is what ResolveHost answers (testHost unless a test edits it).
	host *api.Host
	// eraseInputs are EraseDisk's inputs, in order.
	eraseInputs []image.EraseInput
	// netscalers is what the NetScalers activity finds in the inventory;
	// nitro, the real NITRO activities (a test gives them Secrets).
	netscalers []api.NetScalerEntry
	nitro      *nitro.Activities
}

type failure struct {
	times int
	err   error
}

func (f *fixture) maybeFail(name string) error {
	f.rec.add(name)
	fl, ok := f.fail[name]
	if !ok {
		return nil
	}
	if fl.times == -1 || f.rec.count(name) <= fl.times {
		return fl.err
	}
	return nil
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetTestTimeout(30 * time.Second)
	Register(env)
	env.RegisterActivity(&inventory.Activities{})
	env.RegisterActivity(&lease.Activities{})
	env.RegisterActivity(&bmc.Activities{})
	env.RegisterActivity(&remote.Activities{})
	env.RegisterActivity(&image.Activities{})
	env.RegisterActivity(&chef.Activities{})
	env.RegisterActivity(&runs.Activities{})
	f := &fixture{env: env, rec: &recorder{}, fail: map[string]failure{}, nitro: &nitro.Activities{}}
	env.RegisterActivity(f.nitro)
	h := testHost()
	f.host = &h
	env.OnActivity(invA.NetScalers, mock.Anything).Return(
		func(context.Context) ([]api.NetScalerEntry, error) {
			return f.netscalers, f.maybeFail("NetScalers")
		})

	env.OnActivity(invA.ResolveHost, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in inventory.ResolveInput) (api.Host, error) {
			if err := f.maybeFail("ResolveHost"); err != nil {
				return api.Host{}, err
			}
			return *f.host, nil
		})
	env.OnActivity(imageA.CheckImage, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ api.Image) error { return f.maybeFail("CheckImage") })
	env.OnActivity(leaseA.RegisterLease, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in lease.RegisterInput) (lease.RegisterResult, error) {
			if err := f.maybeFail("RegisterLease:" + in.Profile); err != nil {
				return lease.RegisterResult{}, err
			}
			return lease.RegisterResult{HostKey: "ssh-ed25519 AAAAlive", Profile: in.Profile}, nil
		})
	env.OnActivity(leaseA.RemoveLease, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ lease.RemoveInput) error { return f.maybeFail("RemoveLease") })
	env.OnActivity(bmcA.PowerOnPXE, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ bmc.Input) (bmc.Result, error) {
			return bmc.Result{State: "on"}, f.maybeFail("PowerOnPXE")
		})
	env.OnActivity(bmcA.BootFromDisk, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ bmc.Input) (bmc.Result, error) {
			return bmc.Result{State: "on"}, f.maybeFail("BootFromDisk")
		})
	env.OnActivity(bmcA.PowerOff, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ bmc.Input) (bmc.Result, error) {
			return bmc.Result{State: "off"}, f.maybeFail("PowerOff")
		})
	f.waitSSH = env.OnActivity(sshA.WaitForSSH, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in remote.WaitInput) (remote.WaitResult, error) {
			name := "WaitForSSH:os"
			if in.Target.HostKey == "ssh-ed25519 AAAAlive" {
				name = "WaitForSSH:live"
			}
			if err := f.maybeFail(name); err != nil {
				return remote.WaitResult{}, err
			}
			if name == "WaitForSSH:live" {
				return remote.WaitResult{HostKey: in.Target.HostKey, Fingerprint: "SHA256:live"}, nil
			}
			return remote.WaitResult{HostKey: "ssh-ed25519 AAAAos", Fingerprint: "SHA256:os"}, nil
		})
	env.OnActivity(runsA.LastCompletedProvision, mock.Anything, mock.Anything).Return(
		func(_ context.Context, host string) (runs.CompletedProvision, error) {
			f.rec.add("LastCompletedProvision")
			return f.lastCompleted, nil
		})
	env.OnActivity(leaseA.VerifyBoot, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in lease.VerifyInput) (lease.VerifyResult, error) {
			if in.HostKey != "ssh-ed25519 AAAAlive" {
				return lease.VerifyResult{}, fmt.Errorf("VerifyBoot asked about host key %q, not the one registered", in.HostKey)
			}
			return lease.VerifyResult{FetchedFrom: h.Network.IP}, f.maybeFail("VerifyBoot")
		})
	env.OnActivity(imageA.WriteImage, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in image.WriteInput) (image.WriteResult, error) {
			if err := f.maybeFail("WriteImage"); err != nil {
				return image.WriteResult{}, err
			}
			res := image.WriteResult{Digest: in.Image.SHA256, Bytes: in.Image.Size}
			if in.RootDevice != nil {
				// As the activity does: resolved on the host, in the result.
				res.Disk = &api.ResolvedDisk{Path: "/dev/sdc", Serial: in.RootDevice.Serial, Size: 480e9, Hints: in.RootDevice.String()}
			}
			return res, nil
		})
	env.OnActivity(imageA.EraseDisk, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in image.EraseInput) (api.EraseReport, error) {
			f.eraseInputs = append(f.eraseInputs, in)
			if err := f.maybeFail("EraseDisk"); err != nil {
				return api.EraseReport{}, err
			}
			return api.EraseReport{Disk: in.Disk, Size: 8 << 30, Method: api.EraseRegions, VerifiedBytes: 4 << 20,
				Regions: []api.EraseRegion{{What: "disk start", Length: 1 << 20}}}, nil
		})
	env.OnActivity(leaseA.BootTimeline, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in lease.TimelineInput) (api.BootTimeline, error) {
			f.timelineReads++
			if f.timeline == nil {
				return api.BootTimeline{MAC: in.MAC, Events: []api.BootEvent{}}, nil
			}
			return f.timeline(f.timelineReads), nil
		})
	env.OnActivity(chefA.Bootstrap, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ chef.BootstrapInput) (chef.BootstrapResult, error) {
			return chef.BootstrapResult{}, f.maybeFail("Bootstrap")
		})
	return f
}

var input = api.ProvisionInput{Host: "node07", Options: api.ProvisionOptions{StepAttempts: 2, RetryInterval: "1s", AttentionDeadline: "1h"}}

func (f *fixture) status(t *testing.T) api.ProvisionStatus {
	t.Helper()
	v, err := f.env.QueryWorkflow(api.QueryStatus)
	if err != nil {
		t.Fatalf("query status: %v", err)
	}
	var st api.ProvisionStatus
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// updateResult is filled in when the workflow has handled an Update.
type updateResult struct {
	done bool
	err  error
}

// Err is the validator's or handler's error, once the run is over.
func (u *updateResult) Err() error {
	if !u.done {
		return errors.New("update neither rejected nor completed")
	}
	return u.err
}

// update sends an operator Update.
func (f *fixture) update(name, reason string) *updateResult {
	u := &updateResult{}
	f.env.UpdateWorkflow(name, "", &testsuite.TestUpdateCallback{
		OnReject:   func(err error) { u.err, u.done = err, true },
		OnAccept:   func() {},
		OnComplete: func(_ interface{}, err error) { u.err, u.done = err, true },
	}, api.OperatorRequest{Reason: reason})
	return u
}

func TestProvisionHappyPath(t *testing.T) {
	f := newFixture(t)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if !f.env.IsWorkflowCompleted() {
		t.Fatal("not completed")
	}
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var res api.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.ImageDigest != testHost().Image.SHA256 || res.OSHostKey != "ssh-ed25519 AAAAos" || res.LiveHostKey != "SHA256:live" {
		t.Errorf("result = %+v", res)
	}
	want := []string{"ResolveHost", "LastCompletedProvision", "CheckImage", "RegisterLease:live", "PowerOnPXE", "WaitForSSH:live", "VerifyBoot", "WriteImage",
		"RegisterLease:disk", "BootFromDisk", "WaitForSSH:os", "Bootstrap"}
	if d := cmp.Diff(want, f.rec.list()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	for _, s := range res.Steps {
		if s.State != "done" {
			t.Errorf("step %s = %s, want done", s.Name, s.State)
		}
	}
	st := f.status(t)
	if st.State != api.StateSucceeded || st.Step != api.StepProvisioned {
		t.Errorf("status = %s/%s", st.State, st.Step)
	}
}

func TestProvisionRetriesATransientFailure(t *testing.T) {
	f := newFixture(t)
	f.fail["PowerOnPXE"] = failure{times: 1, err: errors.New("bmc 127.0.0.1:6230 unreachable")}
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if n := f.rec.count("PowerOnPXE"); n != 2 {
		t.Errorf("PowerOnPXE calls = %d, want 2 (one retry by Temporal)", n)
	}
}

func TestProvisionParksThenOperatorRetrySucceeds(t *testing.T) {
	f := newFixture(t)
	f.fail["WaitForSSH:live"] = failure{times: 2, err: temporal.NewApplicationError("no SSH on 127.0.0.1:2223 after 20m", "SSHTimeout")}
	var parked api.ProvisionStatus
	var earlyRetry, retryErr *updateResult
	f.env.RegisterDelayedCallback(func() {
		earlyRetry = f.update(api.UpdateRetry, "too early") // still running
	}, 0)
	f.env.RegisterDelayedCallback(func() {
		parked = f.status(t)
		retryErr = f.update(api.UpdateRetry, "fixed the VLAN on the boot NIC")
	}, 10*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if err := earlyRetry.Err(); err == nil || !strings.Contains(err.Error(), "not needs-attention") {
		t.Errorf("retry while running = %v, want refused", earlyRetry.Err())
	}
	if parked.State != api.StateNeedsAttention || parked.Step != api.StepWaitLive || parked.LastErrorType != "SSHTimeout" || parked.Try != 1 {
		t.Errorf("parked status = %+v", parked)
	}
	if err := retryErr.Err(); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := f.rec.count("WaitForSSH:live"); n != 3 {
		t.Errorf("WaitForSSH:live calls = %d, want 3 (2 attempts, then the operator's retry)", n)
	}
	st := f.status(t)
	if st.State != api.StateSucceeded || len(st.Actions) != 1 || st.Actions[0].Reason != "fixed the VLAN on the boot NIC" {
		t.Errorf("final status = %+v", st)
	}
	if tries := st.Steps[3].Tries; tries != 2 {
		t.Errorf("wait-live-ssh tries = %d, want 2", tries)
	}
}

func TestProvisionSkipOnlyWhereAllowed(t *testing.T) {
	f := newFixture(t)
	f.fail["Bootstrap"] = failure{times: -1, err: temporal.NewApplicationError("chef-client exited 1: ERROR: 401 Unauthorized", "ChefBootstrapFailed")}
	var noReason, skipErr *updateResult
	bad := map[string]*updateResult{}
	f.env.RegisterDelayedCallback(func() {
		noReason = f.update(api.UpdateSkip, "")
		for _, r := range []string{"   \t  ", "ok\nINFO forged log line", strings.Repeat("x", 2000), "bell\a"} {
			bad[r] = f.update(api.UpdateSkip, r)
		}
		skipErr = f.update(api.UpdateSkip, "chef server down; node converges on its next run")
	}, 10*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if noReason.Err() == nil {
		t.Error("skip without reason accepted")
	}
	for r, u := range bad {
		if u.Err() == nil {
			t.Errorf("skip with reason %.40q accepted", r)
		}
	}
	if err := skipErr.Err(); err != nil {
		t.Fatalf("skip: %v", err)
	}
	var res api.ProvisionResult
	_ = f.env.GetWorkflowResult(&res)
	last := res.Steps[len(res.Steps)-1]
	if last.Name != api.StepChef || last.State != "skipped" || !strings.Contains(last.Reason, "chef server down") {
		t.Errorf("chef step = %+v", last)
	}

	g := newFixture(t)
	g.fail["WriteImage"] = failure{times: -1, err: errors.New("connection reset")}
	var refused *updateResult
	g.env.RegisterDelayedCallback(func() {
		refused = g.update(api.UpdateSkip, "I know better")
		_ = g.update(api.UpdateAbort, "giving up on this host")
	}, 10*time.Minute)
	g.env.ExecuteWorkflow(ProvisionHost, input)
	if err := refused.Err(); err == nil || !strings.Contains(err.Error(), "cannot be skipped") {
		t.Errorf("skip of write-image = %v, want refused", err)
	}
}

func TestProvisionAbortCompensatesInReverse(t *testing.T) {
	f := newFixture(t)
	f.fail["WriteImage"] = failure{times: -1, err: errors.New("dd: error writing '/dev/sda': Input/output error")}
	var abortErr *updateResult
	f.env.RegisterDelayedCallback(func() {
		abortErr = f.update(api.UpdateAbort, "disk is dying, RMA")
	}, 10*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if err := abortErr.Err(); err != nil {
		t.Fatalf("abort: %v", err)
	}
	err := f.env.GetWorkflowError()
	if !activities.IsType(err, ErrTypeProvisionAborted) || !strings.Contains(err.Error(), "disk is dying") {
		t.Fatalf("workflow error = %v, want %s with the reason", err, ErrTypeProvisionAborted)
	}
	calls := f.rec.list()
	tail := calls[len(calls)-2:]
	if d := cmp.Diff([]string{"PowerOff", "RemoveLease"}, tail); d != "" {
		t.Errorf("compensation (-want +got):\n%s\nall calls: %v", d, calls)
	}
	if f.status(t).State != api.StateAborted {
		t.Errorf("state = %s", f.status(t).State)
	}
}

func TestProvisionAbortWhileRunningCancelsTheStep(t *testing.T) {
	f := newFixture(t)
	// The live system never answers; each attempt takes the whole deadline.
	f.waitSSH.After(time.Hour)
	var abortErr *updateResult
	f.env.RegisterDelayedCallback(func() {
		abortErr = f.update(api.UpdateAbort, "wrong rack, stop now")
	}, 5*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if err := abortErr.Err(); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if !activities.IsType(f.env.GetWorkflowError(), ErrTypeProvisionAborted) {
		t.Fatalf("workflow error = %v", f.env.GetWorkflowError())
	}
	if f.rec.count("PowerOff") != 1 || f.rec.count("RemoveLease") != 1 {
		t.Errorf("compensation calls: %v", f.rec.list())
	}
}

// TestProvisionSendsNothingToAStolenBoot: when pxe says the live system's
// one-time host key went to someone else, the run stops before the image
// (and later the chef key) is sent to whoever answers SSH with that key.
// TestProvisionWillNotWipeAProvisionedHost: a plain `temporal workflow
// start` for a host a completed run provisioned ends at once, touching
// nothing; with reprovision: true it goes ahead.
func TestProvisionWillNotWipeAProvisionedHost(t *testing.T) {
	f := newFixture(t)
	f.lastCompleted = runs.CompletedProvision{Found: true, RunID: "run-1", ClosedAt: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	f.env.ExecuteWorkflow(ProvisionHost, input)
	err := f.env.GetWorkflowError()
	if !activities.IsType(err, ErrTypeWouldWipeProvisionedHost) || !strings.Contains(err.Error(), "run-1") || !strings.Contains(err.Error(), "reprovision") {
		t.Fatalf("workflow error = %v, want %s naming the run and the way out", err, ErrTypeWouldWipeProvisionedHost)
	}
	if d := cmp.Diff([]string{"ResolveHost", "LastCompletedProvision"}, f.rec.list()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}

	g := newFixture(t)
	g.lastCompleted = f.lastCompleted
	again := input
	again.Reprovision = true
	g.env.ExecuteWorkflow(ProvisionHost, again)
	if err := g.env.GetWorkflowError(); err != nil {
		t.Fatalf("with reprovision: %v", err)
	}
	if g.rec.count("LastCompletedProvision") != 0 || g.rec.count("WriteImage") != 1 {
		t.Errorf("with reprovision: calls %v", g.rec.list())
	}
}

func TestProvisionSendsNothingToAStolenBoot(t *testing.T) {
	f := newFixture(t)
	f.fail["VerifyBoot"] = failure{times: -1, err: activities.NonRetryable(
		"boot of node07 is not trusted: the live system's host key was asked for a second time", lease.ErrTypeBootUntrusted, nil)}
	var parked api.ProvisionStatus
	f.env.RegisterDelayedCallback(func() {
		parked = f.status(t)
		_ = f.update(api.UpdateAbort, "boot network under investigation")
	}, 10*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if !activities.IsType(f.env.GetWorkflowError(), ErrTypeProvisionAborted) {
		t.Fatalf("workflow error = %v", f.env.GetWorkflowError())
	}
	if parked.State != api.StateNeedsAttention || parked.Step != api.StepWaitLive || parked.LastErrorType != lease.ErrTypeBootUntrusted {
		t.Errorf("parked = %s at %s (%s), want needs-attention at %s (%s)", parked.State, parked.Step, parked.LastErrorType, api.StepWaitLive, lease.ErrTypeBootUntrusted)
	}
	if n := f.rec.count("VerifyBoot"); n != 1 {
		t.Errorf("VerifyBoot calls = %d, want 1 (non-retryable)", n)
	}
	if f.rec.count("WriteImage") != 0 || f.rec.count("Bootstrap") != 0 {
		t.Errorf("calls = %v: nothing may be sent to an untrusted live system", f.rec.list())
	}
}

func TestProvisionChecksumMismatchIsNotRetriedAndNeverProvisioned(t *testing.T) {
	f := newFixture(t)
	f.fail["WriteImage"] = failure{times: -1, err: temporal.NewNonRetryableApplicationError(
		"image digest mismatch: want abab…, got 0000…", activities.ErrTypeImageChecksumMismatch, nil)}
	var parked api.ProvisionStatus
	f.env.RegisterDelayedCallback(func() { parked = f.status(t) }, 10*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input) // nobody answers: attention deadline 1h
	err := f.env.GetWorkflowError()
	if !activities.IsType(err, ErrTypeAttentionDeadlineExceeded) {
		t.Fatalf("workflow error = %v, want %s", err, ErrTypeAttentionDeadlineExceeded)
	}
	if n := f.rec.count("WriteImage"); n != 1 {
		t.Errorf("WriteImage calls = %d, want 1 (non-retryable)", n)
	}
	if parked.State != api.StateNeedsAttention || parked.LastErrorType != activities.ErrTypeImageChecksumMismatch {
		t.Errorf("parked = %s %s", parked.State, parked.LastErrorType)
	}
	if f.rec.count("BootFromDisk") != 0 || f.rec.count("PowerOff") != 1 || f.rec.count("RemoveLease") != 1 {
		t.Errorf("calls = %v: want no disk boot and a full compensation", f.rec.list())
	}
	if st := f.status(t); st.State == api.StateSucceeded {
		t.Error("host marked provisioned after a checksum mismatch")
	}
}

// Bad input ends the run at once, also when an activity of an older worker
// reports it under a legacy type name.
func TestProvisionBadInputFailsBeforeAnythingIsTouched(t *testing.T) {
	tests := map[string]struct {
		typ, want string
	}{
		"invalid input":           {typ: activities.ErrTypeInvalidInput, want: activities.ErrTypeInvalidInput},
		"old worker's bad input":  {typ: "BadInput", want: activities.ErrTypeInvalidInput},
		"old worker's credential": {typ: "CredentialUnusable", want: activities.ErrTypeInvalidCredential},
		"credential not found":    {typ: activities.ErrTypeCredentialNotFound, want: activities.ErrTypeCredentialNotFound},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.fail["ResolveHost"] = failure{times: -1, err: temporal.NewNonRetryableApplicationError(
				"invalid input: mac: not a 48-bit MAC address (got \"52:54:zz\")", tc.typ, nil)}
			f.env.ExecuteWorkflow(ProvisionHost, input)
			err := f.env.GetWorkflowError()
			if !activities.IsType(err, tc.want) || !strings.Contains(err.Error(), "mac") {
				t.Fatalf("workflow error = %v, want %s with the bad field named", err, tc.want)
			}
			if d := cmp.Diff([]string{"ResolveHost"}, f.rec.list()); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
			if st := f.status(t); st.State != api.StateFailed {
				t.Errorf("state %s, want %s: bad input needs no operator", st.State, api.StateFailed)
			}
		})
	}
}

func TestProvisionRejectsBadOptions(t *testing.T) {
	f := newFixture(t)
	in := input
	in.Options.LiveSSHDeadline = "soon"
	f.env.ExecuteWorkflow(ProvisionHost, in)
	err := f.env.GetWorkflowError()
	if !activities.IsType(err, activities.ErrTypeInvalidInput) || !strings.Contains(err.Error(), "live_ssh_deadline") {
		t.Fatalf("workflow error = %v", err)
	}
	if len(f.rec.list()) != 0 {
		t.Errorf("activities ran: %v", f.rec.list())
	}
}
