package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/testsuite/qemu"
)

// TestQEMUStuckBootShowsTheConsole: the BMC turns the machine on into PXE,
// but the machine boots its empty disk instead (PXE switched off on its
// NIC, the commonest reason a new host never reaches the boot network).
// rackflow-pxe sees nothing of it; the machine's serial console, kept by a
// console logger in the worker's --console-dir, says why. The run parks at
// wait-live-ssh with both in its status and error, and when nobody answers
// it gives up, powers the machine off and removes its lease.
func TestQEMUStuckBootShowsTheConsole(t *testing.T) {
	ctx := qemu.RequireLab(t)
	r := newProvisionRig(t, ctx, rigOptions{})
	// The machine ignores the BMC's boot device and boots its disk only:
	// strict=on keeps SeaBIOS from falling back to the NIC, which has no
	// boot index (network boot off in the firmware's setup).
	name, args, err := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC, Disk: filepath.Join(r.l.Dir, "vda.raw"), BootDisk: true}.Command(r.vmDir)
	if err != nil {
		t.Fatal(err)
	}
	args = append(args, "-boot", "strict=on")
	writeBootScript(t, filepath.Join(r.vmDir, "boot-pxe"), name, args)

	env := r.env(t)
	start := time.Now()
	host := r.host
	env.ExecuteWorkflow(api.WorkflowProvisionHost, api.ProvisionInput{Host: host.Name, Spec: &host, Reprovision: true, Options: api.ProvisionOptions{
		LiveSSHDeadline: "20s", StepAttempts: 1, RetryInterval: "1s", AttentionDeadline: "10m",
	}})
	if !env.IsWorkflowCompleted() {
		t.Fatal("ProvisionHost did not complete")
	}
	err = env.GetWorkflowError()
	t.Logf("run ended after %s wall time: %v", time.Since(start).Round(time.Second), err)
	if err == nil {
		t.Fatal("ProvisionHost succeeded on a machine that never boots the network")
	}
	// The serial console as the console logger kept it.
	raw, _ := os.ReadFile(r.consoleLog())
	if !strings.Contains(string(raw), "not a bootable disk") {
		t.Fatalf("the machine's console does not show the disk boot failing:\n%s", tail(string(raw), 20))
	}

	v, qerr := env.QueryWorkflow(api.QueryStatus)
	if qerr != nil {
		t.Fatal(qerr)
	}
	var st api.ProvisionStatus
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	tl := st.BootTimeline
	if st.Step != api.StepWaitLive || tl == nil {
		t.Fatalf("status: step %s, timeline %+v: want the wait for the live system, with a timeline", st.Step, tl)
	}
	if len(tl.Events) != 0 || !strings.Contains(st.BootSummary, "saw nothing of "+qemu.LabVMMAC) {
		t.Errorf("pxe's side: %d events, summary %q: want nothing seen", len(tl.Events), st.BootSummary)
	}
	console := strings.Join(tl.Console, "\n")
	t.Logf("status: last error [%s]: %s\nconsole (written %s):\n%s", st.LastErrorType, st.LastError, tl.ConsoleAt.UTC().Format(time.RFC3339), console)
	// SeaBIOS starts with escapes (reset, clear screen): its banner must
	// start a line as it does on a terminal.
	if !strings.Contains(console, "Boot failed: not a bootable disk") || strings.ContainsAny(console, "\x1b\r") ||
		!strings.Contains("\n"+console, "\nSeaBIOS (version ") {
		t.Errorf("console in the status:\n%s\nwant the firmware's disk boot failure, cleaned", console)
	}
	if tl.ConsoleAt.IsZero() || tl.ConsoleAt.Before(start) {
		t.Errorf("console written at %s, want during the run (from %s)", tl.ConsoleAt, start)
	}
	// What the operator reads first: the step's error says both.
	for _, want := range []string{"boot so far: rackflow-pxe saw nothing of " + qemu.LabVMMAC, "; console "} {
		if !strings.Contains(st.LastError, want) || !strings.Contains(err.Error(), want) {
			t.Errorf("last error %q / run error %q: want %q", st.LastError, err, want)
		}
	}
	if last := tl.Console[len(tl.Console)-1]; !strings.HasSuffix(st.LastError, last) {
		t.Errorf("last error %q does not end with the console's last line %q", st.LastError, last)
	}

	// Given up: powered off (ipmi_sim runs the power hook on its own
	// time), lease gone.
	pidFile := filepath.Join(r.vmDir, "qemu.pid")
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(pidFile)
		if len(b) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the machine still runs (qemu pid %s) after the run gave up", strings.TrimSpace(string(b)))
			break
		}
	}
	var apiErr *client.APIError
	if _, err := r.l.API.Get(ctx, qemu.LabVMMAC); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("lease after the run gave up: %v, want 404", err)
	}
}
