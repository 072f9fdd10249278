package workflows

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/api"
)

var decommission = api.DecommissionInput{Host: "node07", Confirm: "node07",
	Options: api.ProvisionOptions{StepAttempts: 2, RetryInterval: "1s", AttentionDeadline: "1h"}}

// TestDecommissionHappyPath: the live system boots as for provisioning
// (and the boot is verified as the host's own) before the disk the
// inventory names is erased through the pinned live host key; then the
// host is powered off and its lease removed. The result carries the
// erase report, and the unpublish step says it had nothing to do.
func TestDecommissionHappyPath(t *testing.T) {
	f := newFixture(t)
	f.env.ExecuteWorkflow(DecommissionHost, decommission)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var res api.DecommissionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	want := []string{"ResolveHost", "RegisterLease:live", "PowerOnPXE", "WaitForSSH:live", "VerifyBoot", "EraseDisk", "PowerOff", "RemoveLease"}
	if got := f.rec.list(); !slices.Equal(got, want) {
		t.Errorf("calls %v\nwant  %v", got, want)
	}
	if len(f.eraseInputs) != 1 || f.eraseInputs[0].Disk != "/dev/sda" || f.eraseInputs[0].Target.HostKey != "ssh-ed25519 AAAAlive" || f.eraseInputs[0].Full {
		t.Errorf("EraseDisk inputs %+v: want /dev/sda through the lease's live host key, not a full overwrite", f.eraseInputs)
	}
	if res.Erase.Method != api.EraseRegions || res.Erase.VerifiedBytes != 4<<20 || res.Host != "node07" {
		t.Errorf("result %+v: want the erase report", res)
	}
	if un := res.Steps[1]; un.Name != api.StepUnpublish || un.State != "skipped" || !strings.Contains(un.Reason, "no VIP") {
		t.Errorf("unpublish step %+v: want skipped, saying no VIP is linked", un)
	}
	if len(res.Notes) == 0 || !strings.Contains(res.Notes[0], "nothing was unpublished") {
		t.Errorf("notes %q", res.Notes)
	}
}

// TestDecommissionNeedsConfirmation: an input whose confirm does not
// repeat the host is refused before anything is looked up or touched.
func TestDecommissionNeedsConfirmation(t *testing.T) {
	for name, in := range map[string]api.DecommissionInput{
		"no confirm":    {Host: "node07"},
		"another host":  {Host: "node07", Confirm: "node08"},
		"bad host name": {Host: "Node07!", Confirm: "Node07!"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.env.ExecuteWorkflow(DecommissionHost, in)
			if err := f.env.GetWorkflowError(); !activities.IsType(err, activities.ErrTypeInvalidInput) {
				t.Fatalf("workflow error %v, want %s", err, activities.ErrTypeInvalidInput)
			}
			if calls := f.rec.list(); len(calls) != 0 {
				t.Errorf("calls %v: nothing may run", calls)
			}
		})
	}
}

// TestDecommissionErasesNothingOnAStolenBoot: when pxe says someone else
// took the live host key, the disk is not erased (the erase would go to
// whoever holds the key); an abort powers off and removes the lease.
func TestDecommissionErasesNothingOnAStolenBoot(t *testing.T) {
	f := newFixture(t)
	f.fail["VerifyBoot"] = failure{times: -1, err: activities.NonRetryable(
		"boot of node07 is not trusted: the live system's host key was asked for a second time", lease.ErrTypeBootUntrusted, nil)}
	var parked api.ProvisionStatus
	f.env.RegisterDelayedCallback(func() {
		parked = f.status(t)
		f.update(api.UpdateAbort, "boot network under investigation")
	}, 10*time.Minute)
	f.env.ExecuteWorkflow(DecommissionHost, decommission)
	err := f.env.GetWorkflowError()
	if !activities.IsType(err, ErrTypeProvisionAborted) || !strings.Contains(err.Error(), "decommissioning of node07 aborted") {
		t.Fatalf("workflow error = %v", err)
	}
	if parked.State != api.StateNeedsAttention || parked.Step != api.StepWaitLive || parked.LastErrorType != lease.ErrTypeBootUntrusted {
		t.Errorf("parked %s at %s (%s)", parked.State, parked.Step, parked.LastErrorType)
	}
	if f.rec.count("EraseDisk") != 0 {
		t.Errorf("calls %v: the disk must not be erased through an untrusted boot", f.rec.list())
	}
	if f.rec.count("PowerOff") != 1 || f.rec.count("RemoveLease") != 1 {
		t.Errorf("calls %v: the abort must power off and remove the lease", f.rec.list())
	}
}

// TestDecommissionEraseRetryAndFullOverwrite: a failed erase parks the
// run; the operator's retry runs it again (asked for a full overwrite),
// and power-off cannot be skipped before the erase is done.
func TestDecommissionEraseRetryAndFullOverwrite(t *testing.T) {
	f := newFixture(t)
	f.fail["EraseDisk"] = failure{times: 2, err: temporal.NewApplicationError("erase disk /dev/sda: writer exited 3: Input/output error", "")}
	in := decommission
	in.FullOverwrite = true
	var skip, retry *updateResult
	f.env.RegisterDelayedCallback(func() {
		skip = f.update(api.UpdateSkip, "the erase is flaky, skip it")
		retry = f.update(api.UpdateRetry, "reseated the disk cable")
	}, 10*time.Minute)
	f.env.ExecuteWorkflow(DecommissionHost, in)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if skip.Err() == nil || !strings.Contains(skip.Err().Error(), "cannot be skipped") {
		t.Errorf("skip of erase-disk: %v, want refused", skip.Err())
	}
	if retry.Err() != nil {
		t.Errorf("retry: %v", retry.Err())
	}
	if n := f.rec.count("EraseDisk"); n != 3 || !f.eraseInputs[2].Full {
		t.Errorf("EraseDisk ran %d times (%+v): want 2 failed attempts, then the retry's, a full overwrite", n, f.eraseInputs)
	}
}
