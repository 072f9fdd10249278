package bmc_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/redfishfake"
)

// These tests drive bmclib's Redfish provider, as the worker builds it,
// against testsuite/redfishfake: a strict Redfish service with its own
// certificate, which the input pins.

func fakeRedfish(t *testing.T, opts redfishfake.Options) (*redfishfake.Fake, *bmc.Activities, bmc.Input) {
	t.Helper()
	f := redfishfake.Start(t, opts)
	a := &bmc.Activities{
		Secrets:       secrets.Static{credRef: {Username: f.Username, Password: f.Password, Endpoints: []string{"127.0.0.1"}}},
		CallTimeout:   5 * time.Second,
		ConfirmDelay:  10 * time.Millisecond,
		PollInterval:  20 * time.Millisecond,
		SettleTimeout: 5 * time.Second,
	}
	in := bmc.Input{Host: "node01", BMC: api.BMC{Address: "127.0.0.1", Port: f.Port(), Provider: "redfish", Credential: credRef, PinSHA256: f.PinSHA256()}}
	return f, a, in
}

// writes lists the requests that change something (PATCH, actions), as
// "PATCH Boot=Pxe/Once/UEFI" or "POST Reset=On", with their status.
func writes(f *redfishfake.Fake) []string {
	var out []string
	for _, r := range f.Requests() {
		switch {
		case r.Method == "PATCH" && r.Path == redfishfake.SystemPath:
			var b struct{ Boot map[string]string }
			_ = json.Unmarshal([]byte(r.Body), &b)
			out = append(out, "PATCH Boot="+b.Boot["BootSourceOverrideTarget"]+"/"+b.Boot["BootSourceOverrideEnabled"]+"/"+b.Boot["BootSourceOverrideMode"]+" "+strconv.Itoa(r.Status))
		case r.Method == "POST" && r.Path == redfishfake.ResetPath:
			var b struct{ ResetType string }
			_ = json.Unmarshal([]byte(r.Body), &b)
			out = append(out, "POST Reset="+b.ResetType+" "+strconv.Itoa(r.Status))
		}
	}
	return out
}

func on(f *redfishfake.Fake) bool { return f.State().PowerState == "On" }

// events lists the machine's power changes as "on Pxe UEFI" or "off".
func events(f *redfishfake.Fake) []string {
	var out []string
	for _, e := range f.PowerEvents() {
		if e.On {
			out = append(out, "on "+e.BootTarget+" "+e.BootMode)
		} else {
			out = append(out, "off")
		}
	}
	return out
}

func logins(f *redfishfake.Fake) int {
	n := 0
	for _, r := range f.Requests() {
		if r.Method == "POST" && r.Path == redfishfake.SessionsURI {
			n++
		}
	}
	return n
}

func TestRedfishPowerOnPXE(t *testing.T) {
	tests := map[string]struct {
		on         bool
		wantAction string
		wantWrites []string
		wantHooks  []string
	}{
		"from off": {
			wantAction: "on",
			wantWrites: []string{"PATCH Boot=Pxe/Once/UEFI 200", "POST Reset=On 204"},
			wantHooks:  []string{"on Pxe UEFI"},
		},
		"cycles a host that is on": {
			on:         true,
			wantAction: "cycle",
			wantWrites: []string{"PATCH Boot=Pxe/Once/UEFI 200", "POST Reset=ForceRestart 204"},
			wantHooks:  []string{"on Pxe UEFI"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, a, in := fakeRedfish(t, redfishfake.Options{On: tc.on})
			env := newEnv(t)
			env.RegisterActivity(a)
			res, err := run[bmc.Result](t, env, a.PowerOnPXE, in)
			if err != nil {
				t.Fatalf("PowerOnPXE: %v", err)
			}
			if res.Action != tc.wantAction || res.State != "on" || !on(f) {
				t.Errorf("result %+v, fake power %v: want action %s and the host on", res, on(f), tc.wantAction)
			}
			if diff := cmp.Diff(tc.wantWrites, writes(f)); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantHooks, events(f)); diff != "" {
				t.Errorf("power changes (-want +got):\n%s", diff)
			}
			// The one-time override was used by that boot, and the
			// system's boot mode is what it was.
			if st := f.State(); st.BootSourceOverrideEnabled != "Disabled" || st.BootSourceOverrideTarget != "Pxe" || st.BootSourceOverrideMode != "UEFI" {
				en, tg, mode := st.BootSourceOverrideEnabled, st.BootSourceOverrideTarget, st.BootSourceOverrideMode
				t.Errorf("boot override after the boot: %s/%s/%s, want Disabled/Pxe/UEFI", en, tg, mode)
			}
			if n := logins(f); n != 1 {
				t.Errorf("%d logins, want 1", n)
			}
		})
	}
}

// TestRedfishKeepsLegacyBootMode: a system set to Legacy stays in Legacy.
func TestRedfishKeepsLegacyBootMode(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{BootModes: []string{"Legacy", "UEFI"}})
	env := newEnv(t)
	env.RegisterActivity(a)
	if _, err := run[bmc.Result](t, env, a.PowerOnPXE, in); err != nil {
		t.Fatalf("PowerOnPXE: %v", err)
	}
	if diff := cmp.Diff([]string{"PATCH Boot=Pxe/Once/Legacy 200", "POST Reset=On 204"}, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}

// TestRedfishKeepsUEFIModeAfterAnOSBoot: an OS's one-time boot left the
// override target at UefiTarget, which bmclib cannot read back; the mode
// is still the system's.
func TestRedfishKeepsUEFIModeAfterAnOSBoot(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{BootTargets: []string{"None", "Pxe", "Hdd", "UefiTarget"}, BootTarget: "UefiTarget"})
	env := newEnv(t)
	env.RegisterActivity(a)
	if _, err := run[bmc.Result](t, env, a.PowerOnPXE, in); err != nil {
		t.Fatalf("PowerOnPXE: %v", err)
	}
	if diff := cmp.Diff([]string{"PATCH Boot=Pxe/Once/UEFI 200", "POST Reset=On 204"}, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}

func TestRedfishBootFromDisk(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{On: true})
	env := newEnv(t)
	env.RegisterActivity(a)
	res, err := run[bmc.Result](t, env, a.BootFromDisk, in)
	if err != nil {
		t.Fatalf("BootFromDisk: %v", err)
	}
	if res.Action != "cycle" || !on(f) {
		t.Errorf("result %+v, power %v", res, on(f))
	}
	if diff := cmp.Diff([]string{"PATCH Boot=Hdd/Continuous/UEFI 200", "POST Reset=ForceRestart 204"}, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"on Hdd UEFI"}, events(f)); diff != "" {
		t.Errorf("power changes (-want +got):\n%s", diff)
	}
	if st := f.State(); st.BootSourceOverrideEnabled != "Continuous" || st.BootSourceOverrideTarget != "Hdd" {
		en, tg := st.BootSourceOverrideEnabled, st.BootSourceOverrideTarget
		t.Errorf("boot override %s/%s, want Continuous/Hdd to stay", en, tg)
	}
}

func TestRedfishPowerOffAndState(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{On: true})
	env := newEnv(t)
	env.RegisterActivity(a)
	st, err := run[string](t, env, a.PowerState, in)
	if err != nil || st != "on" {
		t.Fatalf("PowerState = %q, %v; want on", st, err)
	}
	for i, want := range []bmc.Result{{PriorState: "on", Action: "off", State: "off"}, {PriorState: "off", Action: "none", State: "off"}} {
		res, err := run[bmc.Result](t, env, a.PowerOff, in)
		if err != nil {
			t.Fatalf("PowerOff %d: %v", i, err)
		}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("PowerOff %d (-want +got):\n%s", i, diff)
		}
	}
	if diff := cmp.Diff([]string{"POST Reset=ForceOff 204"}, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if st, err := run[string](t, env, a.PowerState, in); err != nil || st != "off" {
		t.Errorf("PowerState = %q, %v; want off", st, err)
	}
	// Every session was logged out.
	var out int
	for _, r := range f.Requests() {
		if r.Method == "DELETE" && strings.HasPrefix(r.Path, redfishfake.SessionsURI+"/") && r.Status == 204 {
			out++
		}
	}
	if n := logins(f); n != 4 || out != 4 {
		t.Errorf("%d logins, %d logouts; want 4 of each", n, out)
	}
}

// TestRedfishBadCredentials: a rejected login is an error an operator has
// to fix, not one to retry: one login, nothing else sent.
func TestRedfishBadCredentials(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{})
	a.Secrets = secrets.Static{credRef: {Username: f.Username, Password: "not-the-password", Endpoints: []string{"127.0.0.1"}}}
	env := newEnv(t)
	env.RegisterActivity(a)
	_, err := run[bmc.Result](t, env, a.PowerOnPXE, in)
	typ, retryable := errKind(t, err)
	if typ != activities.ErrTypeInvalidCredential || retryable {
		t.Errorf("got %s retryable=%v, want non-retryable %s: %v", typ, retryable, activities.ErrTypeInvalidCredential, err)
	}
	if !strings.Contains(err.Error(), credRef) || strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("error %q should name the credential and not hold the password", err)
	}
	if n := logins(f); n != 1 || len(writes(f)) != 0 || on(f) {
		t.Errorf("%d logins, writes %q, power %v: want one refused login and nothing else", n, writes(f), on(f))
	}
}

// TestRedfishSessionExpiresMidRun: the BMC ends the session while the
// host switches on; the activity logs in again and carries on.
func TestRedfishSessionExpiresMidRun(t *testing.T) {
	// The session ends as the host powers on: the next read is refused.
	var f *redfishfake.Fake
	f, a, in := fakeRedfish(t, redfishfake.Options{OnPower: func(redfishfake.PowerEvent) { f.ExpireSessions() }})
	env := newEnv(t)
	env.RegisterActivity(a)
	res, err := run[bmc.Result](t, env, a.PowerOnPXE, in)
	if err != nil {
		t.Fatalf("PowerOnPXE: %v", err)
	}
	if res.State != "on" || logins(f) != 2 {
		t.Errorf("result %+v after %d logins: want on after a second login", res, logins(f))
	}
	if diff := cmp.Diff([]string{"PATCH Boot=Pxe/Once/UEFI 200", "POST Reset=On 204"}, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}

// TestRedfishStaleETag: the system changes between bmclib's read and its
// write; the BMC answers 412, and the activity reads it again and writes
// once more with the new ETag.
func TestRedfishStaleETag(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{})
	f.ChangeBeforeNextWrite()
	env := newEnv(t)
	env.RegisterActivity(a)
	if _, err := run[bmc.Result](t, env, a.PowerOnPXE, in); err != nil {
		t.Fatalf("PowerOnPXE: %v", err)
	}
	// bmclib itself tries a second, smaller body with the same ETag; then
	// the activity reads the system again and writes with the new one.
	want := []string{"PATCH Boot=Pxe/Once/UEFI 412", "PATCH Boot=Pxe/Once/ 412", "PATCH Boot=Pxe/Once/UEFI 200", "POST Reset=On 204"}
	if diff := cmp.Diff(want, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	for _, r := range f.Requests() {
		if (r.Method == "PATCH" || r.Method == "POST" && r.Path == redfishfake.ResetPath) && r.IfMatch == "" {
			t.Errorf("%s sent without If-Match", r)
		}
	}
	if !on(f) {
		t.Error("host is off")
	}
}

// TestRedfishAsyncReset: the BMC runs the reset as a task (202 Accepted,
// Location of the task); the activity follows the task to its end.
func TestRedfishAsyncReset(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{AsyncReset: true, On: true, TaskReads: 2})
	env := newEnv(t)
	env.RegisterActivity(a)
	res, err := run[bmc.Result](t, env, a.PowerOnPXE, in)
	if err != nil {
		t.Fatalf("PowerOnPXE: %v", err)
	}
	if res.Action != "cycle" || !on(f) {
		t.Errorf("result %+v, power %v", res, on(f))
	}
	if diff := cmp.Diff([]string{"PATCH Boot=Pxe/Once/UEFI 200", "POST Reset=ForceRestart 202"}, writes(f)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	var polls int
	for _, r := range f.Requests() {
		if r.Method == "GET" && strings.HasPrefix(r.Path, redfishfake.TasksURI+"/") {
			polls++
		}
	}
	if polls < 2 || !slices.Equal(events(f), []string{"on Pxe UEFI"}) {
		t.Errorf("task polled %d times, power changes %q: want the task followed to its end", polls, events(f))
	}
}

// TestRedfishResetTaskFails: the task ends in Exception; the activity
// fails with the BMC's message instead of waiting for a power state that
// will not come.
func TestRedfishResetTaskFails(t *testing.T) {
	f, a, in := fakeRedfish(t, redfishfake.Options{AsyncReset: true})
	f.FailNextReset("power supply 2 fault")
	env := newEnv(t)
	env.RegisterActivity(a)
	_, err := run[bmc.Result](t, env, a.PowerOnPXE, in)
	typ, retryable := errKind(t, err)
	if typ != bmc.ErrTypeTaskFailed || !retryable || !strings.Contains(err.Error(), "power supply 2 fault") {
		t.Errorf("got %s retryable=%v: %v; want retryable %s with the BMC's message", typ, retryable, err, bmc.ErrTypeTaskFailed)
	}
	if on(f) {
		t.Error("host is on")
	}
}
