package workflows

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

var decommission = api.DecommissionInput{Host: "node07", Confirm: "node07",
	Options: api.ProvisionOptions{StepAttempts: 2, RetryInterval: "1s", AttentionDeadline: "1h"}}

// decommissioned is the finished run's result; the test fails on a run
// that failed.
func (f *fixture) decommissioned(t *testing.T) api.DecommissionResult {
	t.Helper()
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var res api.DecommissionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestDecommissionHappyPath: the live system boots as for provisioning
// (and the boot is verified as the host's own) before the disk the
// inventory names is erased through the pinned live host key; then the
// host is powered off and its lease removed. The result carries the
// erase report, and the unpublish step says it had nothing to do: the
// worker's inventory names no NetScaler.
func TestDecommissionHappyPath(t *testing.T) {
	f := newFixture(t)
	f.env.ExecuteWorkflow(DecommissionHost, decommission)
	res := f.decommissioned(t)
	want := []string{"ResolveHost", "NetScalers", "RegisterLease:live", "PowerOnPXE", "WaitForSSH:live", "VerifyBoot", "EraseDisk", "PowerOff", "RemoveLease"}
	if got := f.rec.list(); !slices.Equal(got, want) {
		t.Errorf("calls %v\nwant  %v", got, want)
	}
	if len(f.eraseInputs) != 1 || f.eraseInputs[0].Disk != "/dev/sda" || f.eraseInputs[0].Target.HostKey != "ssh-ed25519 AAAAlive" || f.eraseInputs[0].Full {
		t.Errorf("EraseDisk inputs %+v: want /dev/sda through the lease's live host key, not a full overwrite", f.eraseInputs)
	}
	if res.Erase.Method != api.EraseRegions || res.Erase.VerifiedBytes != 4<<20 || res.Host != "node07" {
		t.Errorf("result %+v: want the erase report", res)
	}
	if un := res.Steps[1]; un.Name != api.StepUnpublish || un.State != "skipped" || !strings.Contains(un.Reason, "no NetScaler") {
		t.Errorf("unpublish step %+v: want skipped, saying the inventory has no NetScaler", un)
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

// vipFixture gives the decommission fixture a fake NetScaler in the
// worker's inventory. The host (127.0.0.1) is a member of two ports of
// one publication's servicegroup; another publication serves only other
// hosts; foreign adds a servicegroup rackflow does not own with the host
// in it.
type vipFixture struct {
	*fixture
	ns       *nitrofake.Server
	web, db  string // rackflow's servicegroups (web has the host)
	webOwner string
}

func newVIPFixture(t *testing.T, foreign bool) *vipFixture {
	t.Helper()
	f := newFixture(t)
	ns := nitrofake.Start(t, nitrofake.Options{Username: "nsroot", Password: "ns-Secret-1", TLS: true})
	f.nitro.Secrets = secrets.Static{nsCred: {Username: "nsroot", Password: "ns-Secret-1", Endpoints: []string{ns.URL()}}}
	f.netscalers = []api.NetScalerEntry{{Name: "ns1", NetScaler: api.NetScaler{URL: ns.URL(), Credential: nsCred, CA: string(ns.CAPEM())}}}
	v := &vipFixture{fixture: f, ns: ns, webOwner: api.PublishWorkflowID("203.0.113.10", 443)}
	v.web, v.db = nitro.Names(v.webOwner).ServiceGroup, nitro.Names(api.PublishWorkflowID("203.0.113.11", 5432)).ServiceGroup
	type seed struct {
		typ string
		obj map[string]any
	}
	seeds := []seed{
		{"servicegroup", map[string]any{"servicegroupname": v.web, "servicetype": "SSL_BRIDGE", "comment": nitro.Marker(v.webOwner)}},
		{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": v.web, "ip": "127.0.0.1", "port": 443}},
		{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": v.web, "ip": "127.0.0.1", "port": 8443}},
		{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": v.web, "ip": "10.0.1.12", "port": 443}},
		{"servicegroup", map[string]any{"servicegroupname": v.db, "servicetype": "TCP", "comment": nitro.Marker(api.PublishWorkflowID("203.0.113.11", 5432))}},
		{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": v.db, "ip": "10.0.1.13", "port": 5432}},
	}
	if foreign {
		seeds = append(seeds,
			seed{"servicegroup", map[string]any{"servicegroupname": "team_x_sg", "servicetype": "HTTP", "comment": "team-x, ticket 4711"}},
			seed{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": "team_x_sg", "ip": "127.0.0.1", "port": 80}})
	}
	for _, s := range seeds {
		if err := ns.Seed(s.typ, s.obj); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// members lists "ip:port" of a servicegroup's members, sorted.
func (v *vipFixture) members(sg string) []string {
	var out []string
	for _, r := range v.ns.Bindings("servicegroup_servicegroupmember_binding", sg) {
		out = append(out, fmt.Sprintf("%v:%v", r["ip"], r["port"]))
	}
	sort.Strings(out)
	return out
}

// TestDecommissionUnpublishesTheHost: before anything touches the host,
// its members in rackflow's servicegroups are drained (disabled with the
// input's delay, gracefully) and unbound, and the configuration saved;
// the other members of that servicegroup and the other publication stay.
// The result lists what was removed.
func TestDecommissionUnpublishesTheHost(t *testing.T) {
	v := newVIPFixture(t, false)
	in := decommission
	in.DrainSeconds = 1
	v.env.ExecuteWorkflow(DecommissionHost, in)
	res := v.decommissioned(t)
	if got := v.members(v.web); !slices.Equal(got, []string{"10.0.1.12:443"}) {
		t.Errorf("%s members %v: want only the other host", v.web, got)
	}
	if got := v.members(v.db); !slices.Equal(got, []string{"10.0.1.13:5432"}) {
		t.Errorf("%s members %v: another publication must stay", v.db, got)
	}
	saved, ok := v.ns.SavedConfig()
	if !ok || len(saved.Bindings["servicegroup_servicegroupmember_binding"]) != 2 {
		t.Errorf("saved configuration (%v): want the removal saved", ok)
	}
	want := []api.VIPMember{
		{NetScaler: "ns1", ServiceGroup: v.web, Owner: v.webOwner, Server: "127.0.0.1", IP: "127.0.0.1", Port: 443},
		{NetScaler: "ns1", ServiceGroup: v.web, Owner: v.webOwner, Server: "127.0.0.1", IP: "127.0.0.1", Port: 8443},
	}
	if d := cmp.Diff(want, res.Unpublished); d != "" {
		t.Errorf("result's unpublished (-want +got):\n%s", d)
	}
	if len(res.LeftForeign) != 0 || res.Steps[1].State != "done" {
		t.Errorf("left foreign %v, unpublish step %+v", res.LeftForeign, res.Steps[1])
	}
	var disabled []string
	for _, d := range v.ns.Disabled() {
		disabled = append(disabled, fmt.Sprintf("%s %s:%d delay %d graceful %s", d.ServiceGroup, d.ServerName, d.Port, d.Delay, d.Graceful))
	}
	if d := cmp.Diff([]string{v.web + " 127.0.0.1:443 delay 1 graceful YES", v.web + " 127.0.0.1:8443 delay 1 graceful YES"}, disabled); d != "" {
		t.Errorf("drain (-want +got):\n%s", d)
	}
	if calls := v.rec.list(); calls[1] != "NetScalers" || calls[2] != "RegisterLease:live" {
		t.Errorf("calls %v: the NetScalers are asked before the host is touched", calls)
	}
}

// TestDecommissionStopsAtForeignMembers: the host is also a member of a
// servicegroup rackflow does not own. rackflow's members are removed and
// saved, then the run parks at unpublish (HostInForeignServiceGroups,
// listing the foreign one) without touching the host. The operator
// removes that member by hand and retries: the retry finds nothing left of
// rackflow's (idempotent), and the result lists the first try's removals.
func TestDecommissionStopsAtForeignMembers(t *testing.T) {
	v := newVIPFixture(t, true)
	var parked api.ProvisionStatus
	var callsWhenParked []string
	var retry *updateResult
	v.env.RegisterDelayedCallback(func() {
		parked = v.status(t)
		callsWhenParked = v.rec.list()
		c, err := nitroclient.New(nitroclient.Config{URL: v.ns.URL(), Username: "nsroot", Password: "ns-Secret-1", CAPEM: v.ns.CAPEM()})
		if err != nil {
			t.Error(err)
			return
		}
		if err := c.Unbind(context.Background(), "servicegroup_servicegroupmember_binding", "team_x_sg",
			nitroclient.Arg{Key: "ip", Value: "127.0.0.1"}, nitroclient.Arg{Key: "port", Value: "80"}); err != nil {
			t.Errorf("unbind by hand: %v", err)
		}
		retry = v.update(api.UpdateRetry, "team-x took 127.0.0.1 out of team_x_sg")
	}, 10*time.Minute)
	v.env.ExecuteWorkflow(DecommissionHost, decommission)
	if parked.State != api.StateNeedsAttention || parked.Step != api.StepUnpublish || parked.LastErrorType != ErrTypeHostInForeignServiceGroups ||
		!strings.Contains(parked.LastError, "ns1:team_x_sg member 127.0.0.1:80") || !strings.Contains(parked.LastError, "team-x, ticket 4711") {
		t.Errorf("parked %s at %s (%s): %s", parked.State, parked.Step, parked.LastErrorType, parked.LastError)
	}
	if slices.Contains(callsWhenParked, "RegisterLease:live") {
		t.Errorf("calls %v before the decision: the host must not be touched", callsWhenParked)
	}
	if retry == nil || retry.Err() != nil {
		t.Fatalf("retry: %v", retry)
	}
	res := v.decommissioned(t)
	if len(res.Unpublished) != 2 || len(res.LeftForeign) != 0 {
		t.Errorf("unpublished %v, left foreign %v: want the first try's two removals, nothing left", res.Unpublished, res.LeftForeign)
	}
	if got := v.members(v.web); !slices.Equal(got, []string{"10.0.1.12:443"}) {
		t.Errorf("%s members %v", v.web, got)
	}
}

// TestDecommissionLeavesForeignMembersWhenAsked: with
// leave_foreign_members the run goes on, the foreign membership stays on
// the appliance and is listed in the result.
func TestDecommissionLeavesForeignMembersWhenAsked(t *testing.T) {
	v := newVIPFixture(t, true)
	in := decommission
	in.LeaveForeignMembers = true
	v.env.ExecuteWorkflow(DecommissionHost, in)
	res := v.decommissioned(t)
	want := []api.VIPMember{{NetScaler: "ns1", ServiceGroup: "team_x_sg", Comment: "team-x, ticket 4711", Server: "127.0.0.1", IP: "127.0.0.1", Port: 80}}
	if d := cmp.Diff(want, res.LeftForeign); d != "" {
		t.Errorf("left foreign (-want +got):\n%s", d)
	}
	if got := v.members("team_x_sg"); !slices.Equal(got, []string{"127.0.0.1:80"}) {
		t.Errorf("team_x_sg members %v: not rackflow's, must stay", got)
	}
	if len(res.Unpublished) != 2 {
		t.Errorf("unpublished %v", res.Unpublished)
	}
}

// TestDecommissionReportsRemovalsOfAFailedTry: the removal fails halfway
// (the first member unbound, then NITRO refuses a read with 257), the run
// parks; on retry the next try finds only the second member. The result
// still lists both: what an earlier try asked to remove and is gone counts
// as removed, as after a worker killed before it could answer.
func TestDecommissionReportsRemovalsOfAFailedTry(t *testing.T) {
	v := newVIPFixture(t, false)
	// After unbinding 127.0.0.1:443, EnsureMembers reads server/127.0.0.1
	// to see whether it may remove it.
	v.ns.FailNext("GET", "/nitro/v1/config/server/127.0.0.1", 257)
	var parked api.ProvisionStatus
	var membersWhenParked []string
	v.env.RegisterDelayedCallback(func() {
		parked = v.status(t)
		membersWhenParked = v.members(v.web)
		v.update(api.UpdateRetry, "gave the NetScaler user the read policy")
	}, 10*time.Minute)
	v.env.ExecuteWorkflow(DecommissionHost, decommission)
	if parked.Step != api.StepUnpublish || parked.LastErrorType != nitro.ErrTypeNotPermitted {
		t.Errorf("parked at %s (%s): %s", parked.Step, parked.LastErrorType, parked.LastError)
	}
	if !slices.Equal(membersWhenParked, []string{"10.0.1.12:443", "127.0.0.1:8443"}) {
		t.Errorf("members when parked %v: want the first try to have removed one", membersWhenParked)
	}
	res := v.decommissioned(t)
	var got []string
	for _, m := range res.Unpublished {
		got = append(got, m.String())
	}
	if d := cmp.Diff([]string{"ns1:" + v.web + " member 127.0.0.1:443", "ns1:" + v.web + " member 127.0.0.1:8443"}, got); d != "" {
		t.Errorf("unpublished (-want +got):\n%s", d)
	}
}
