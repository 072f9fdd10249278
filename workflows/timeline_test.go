package workflows

import (
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

// TestProvisionStuckLiveBootSaysWhereItStopped: the live system never
// answers SSH. While wait-live-ssh runs, the status query shows pxe's
// boot timeline as it grows; when the wait gives up, the step's error
// and the parked run's status say where the boot stopped (DHCP answered,
// script fetched, no kernel fetch since), which is what `starter status`
// prints.
func TestProvisionStuckLiveBootSaysWhereItStopped(t *testing.T) {
	f := newFixture(t)
	f.fail["WaitForSSH:live"] = failure{times: -1, err: temporal.NewApplicationError("no SSH on 127.0.0.1:22 within 20m0s", remote.ErrTypeSSHTimeout)}
	f.waitSSH.After(5 * time.Minute)
	t0 := time.Date(2026, 12, 5, 10, 2, 0, 0, time.UTC)
	f.timeline = func(n int) api.BootTimeline {
		tl := api.BootTimeline{MAC: "52:54:00:ab:cd:07", BootID: "b", At: t0.Add(time.Duration(n) * time.Minute),
			Events: []api.BootEvent{{At: t0, Kind: api.BootDHCPAck, From: "127.0.0.1"}}}
		if n >= 2 {
			tl.Events = append(tl.Events, api.BootEvent{At: t0.Add(10 * time.Second), Kind: api.BootScript, From: "127.0.0.1", Bytes: 483, Status: "200"})
		}
		return tl
	}
	var during api.ProvisionStatus
	f.env.RegisterDelayedCallback(func() { during = f.status(t) }, 3*time.Minute+30*time.Second)
	var parked api.ProvisionStatus
	f.env.RegisterDelayedCallback(func() {
		parked = f.status(t)
		f.update(api.UpdateAbort, "the NIC is dead, replacing it")
	}, 30*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)

	if during.Step != api.StepWaitLive || during.BootTimeline == nil || len(during.BootTimeline.Events) != 2 ||
		!strings.Contains(during.BootSummary, "ipxe script fetched (483 bytes) 10:02:10") {
		t.Errorf("status during the wait: step %s, timeline %+v, summary %q; want the script fetch", during.Step, during.BootTimeline, during.BootSummary)
	}
	if parked.State != api.StateNeedsAttention || parked.Step != api.StepWaitLive {
		t.Fatalf("parked: %s at %s", parked.State, parked.Step)
	}
	for _, want := range []string{"no SSH on 127.0.0.1:22", "boot so far: DHCP answered 127.0.0.1 10:02:00, ipxe script fetched (483 bytes) 10:02:10; nothing since 10:02:10", "no kernel fetch"} {
		if !strings.Contains(parked.LastError, want) {
			t.Errorf("parked LastError %q lacks %q", parked.LastError, want)
		}
	}
	if parked.LastErrorType != remote.ErrTypeSSHTimeout {
		t.Errorf("LastErrorType %q, want %s kept", parked.LastErrorType, remote.ErrTypeSSHTimeout)
	}
	if parked.BootTimeline == nil || !strings.Contains(parked.BootSummary, "no kernel fetch") {
		t.Errorf("parked status timeline %+v summary %q", parked.BootTimeline, parked.BootSummary)
	}
}

// TestProvisionReportsTheResolvedDisk: a host whose inventory names its
// disk by hints has them passed to WriteImage (not a path), and the disk
// they resolved to is in the status query and the result.
func TestProvisionReportsTheResolvedDisk(t *testing.T) {
	f := newFixture(t)
	f.host.Disk, f.host.RootDevice = "", &api.RootDevice{Serial: "S3Z9NB0K"}
	var during api.ProvisionStatus
	f.env.RegisterDelayedCallback(func() { during = f.status(t) }, 10*time.Minute)
	f.fail["BootFromDisk"] = failure{times: 2, err: temporal.NewApplicationError("bmc busy", "")}
	f.env.RegisterDelayedCallback(func() { f.update(api.UpdateRetry, "BMC reset") }, 20*time.Minute)
	f.env.ExecuteWorkflow(ProvisionHost, input)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var res api.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Disk == nil || res.Disk.Path != "/dev/sdc" || res.Disk.Serial != "S3Z9NB0K" {
		t.Errorf("result disk %+v: want /dev/sdc, serial S3Z9NB0K", res.Disk)
	}
	if during.Step != api.StepBootDisk || during.TargetDisk == nil || during.TargetDisk.Path != "/dev/sdc" || !strings.Contains(during.TargetDisk.Hints, "S3Z9NB0K") {
		t.Errorf("status at %s: target disk %+v; want /dev/sdc from the serial hint", during.Step, during.TargetDisk)
	}
}

// TestProvisionStuckOSBootShowsTheConsole: the image is written but the
// installed OS never answers SSH. Its boot happens on its disk, where pxe
// sees nothing; the console log (the pod worker's --console-dir) does, and
// its last line ends the step's error; the status carries its lines for
// `starter status`. A run without a console log keeps the error as it was.
func TestProvisionStuckOSBootShowsTheConsole(t *testing.T) {
	written := time.Date(2026, 12, 6, 10, 2, 55, 0, time.UTC)
	for name, console := range map[string][]string{
		"with a console log": {"GRUB loading.", "Welcome to GRUB!", "error: no such device: 5e1f4f52-2a3c-4c53-9d0e-6a2f4ad0b7a1.", "grub rescue>"},
		"without":            nil,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.fail["WaitForSSH:os"] = failure{times: -1, err: temporal.NewApplicationError("no SSH on 127.0.0.1:22 within 20m0s", remote.ErrTypeSSHTimeout)}
			f.timeline = func(int) api.BootTimeline {
				return api.BootTimeline{MAC: "52:54:00:ab:cd:07", Events: []api.BootEvent{}, Console: console, ConsoleAt: written}
			}
			var parked api.ProvisionStatus
			f.env.RegisterDelayedCallback(func() {
				parked = f.status(t)
				f.update(api.UpdateAbort, "disk replaced, will reprovision")
			}, 30*time.Minute)
			f.env.ExecuteWorkflow(ProvisionHost, input)
			if parked.State != api.StateNeedsAttention || parked.Step != api.StepWaitOS {
				t.Fatalf("parked: %s at %s", parked.State, parked.Step)
			}
			if parked.LastErrorType != remote.ErrTypeSSHTimeout || !strings.HasPrefix(parked.LastError, "no SSH on 127.0.0.1:22 within 20m0s") {
				t.Errorf("last error [%s] %q: want the wait's, type kept", parked.LastErrorType, parked.LastError)
			}
			if console == nil {
				if strings.Contains(parked.LastError, "console") || parked.BootTimeline != nil && len(parked.BootTimeline.Console) > 0 {
					t.Errorf("no console log, yet last error %q, timeline %+v", parked.LastError, parked.BootTimeline)
				}
				return
			}
			if !strings.HasSuffix(parked.LastError, "; console 10:02:55: grub rescue>") {
				t.Errorf("last error %q: want the console's last line at its end", parked.LastError)
			}
			if parked.BootTimeline == nil || len(parked.BootTimeline.Console) != len(console) {
				t.Errorf("status timeline %+v: want the %d console lines", parked.BootTimeline, len(console))
			}
		})
	}
}
