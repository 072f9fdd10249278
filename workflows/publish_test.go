package workflows

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// These tests run the publishing workflows with the real NITRO activities
// against the strict fake NetScaler, and assert the device's final
// configuration rather than the calls made.

const nsCred = "netscaler/lab"

type nsFixture struct {
	ns *nitrofake.Server
	in api.PublishInput
	s  testsuite.WorkflowTestSuite
}

func newNSFixture(t *testing.T) *nsFixture {
	t.Helper()
	ns := nitrofake.Start(t, nitrofake.Options{Username: "nsroot", Password: "ns-Secret-1", TLS: true})
	for _, ip := range []string{"203.0.113.20", "203.0.113.21"} {
		if err := ns.Seed("nsip", map[string]any{"ipaddress": ip, "netmask": "255.255.255.255", "type": "VIP"}); err != nil {
			t.Fatal(err)
		}
	}
	return &nsFixture{ns: ns, in: api.PublishInput{
		Name: "web", VIP: "203.0.113.10", Port: 443, Protocol: "SSL_BRIDGE", LBMethod: "ROUNDROBIN",
		Backends:  []api.Backend{{IP: "10.0.1.11", Port: 443}, {IP: "10.0.1.12", Port: 443, Weight: 2}},
		INAT:      &api.INAT{PublicIP: "203.0.113.20", PrivateIP: "10.0.1.11"},
		RNAT:      &api.RNAT{Network: "10.0.1.0", Netmask: "255.255.255.0", NATIP: "203.0.113.21"},
		NetScaler: api.NetScaler{URL: ns.URL(), Credential: nsCred, CA: string(ns.CAPEM())},
	}}
}

// run executes wf under the right workflow ID with real activities.
func (f *nsFixture) run(t *testing.T, wf any, id string, in any) (api.PublishResult, error) {
	t.Helper()
	env := f.s.NewTestWorkflowEnvironment()
	Register(env)
	env.RegisterActivity(&nitro.Activities{Secrets: secrets.Static{nsCred: {Username: "nsroot", Password: "ns-Secret-1", Endpoints: []string{f.ns.URL()}}}})
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: id})
	env.ExecuteWorkflow(wf, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res api.PublishResult
	err := env.GetWorkflowError()
	if err == nil {
		if gerr := env.GetWorkflowResult(&res); gerr != nil {
			t.Fatal(gerr)
		}
	}
	return res, err
}

func (f *nsFixture) id() string { return api.PublishWorkflowID(f.in.VIP, f.in.Port) }

// ours lists the objects of every type that carry rackflow's names.
func (f *nsFixture) ours() []string {
	var out []string
	for _, typ := range []string{"servicegroup", "lbvserver", "inat", "rnat"} {
		for name := range f.ns.Objects(typ) {
			if strings.HasPrefix(name, "rf_") {
				out = append(out, typ+"/"+name)
			}
		}
	}
	sort.Strings(out)
	return out
}

func (f *nsFixture) members(t *testing.T, sg string) []string {
	t.Helper()
	var out []string
	for _, b := range f.ns.Bindings("servicegroup_servicegroupmember_binding", sg) {
		out = append(out, b["ip"].(string))
	}
	sort.Strings(out)
	return out
}

func mutating(calls []nitrofake.Call) []string {
	var out []string
	for _, c := range calls {
		if c.Mutating() {
			out = append(out, c.String())
		}
	}
	return out
}

func TestPublishFromNothingThenRepublishChangesNothing(t *testing.T) {
	f := newNSFixture(t)
	res, err := f.run(t, PublishService, f.id(), f.in)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	names := nitro.Names(f.id())
	want := []string{"inat/" + names.INAT, "lbvserver/" + names.VServer, "rnat/" + nitro.RNATName("10.0.1.0", "255.255.255.0"), "servicegroup/" + names.ServiceGroup}
	if d := cmp.Diff(want, f.ours()); d != "" {
		t.Errorf("objects (-want +got):\n%s", d)
	}
	vs := f.ns.Objects("lbvserver")[names.VServer]
	if vs["ipv46"] != "203.0.113.10" || vs["lbmethod"] != "ROUNDROBIN" || vs["comment"] != nitro.Marker(f.id()) {
		t.Errorf("lbvserver = %v", vs)
	}
	if d := cmp.Diff([]string{"10.0.1.11", "10.0.1.12"}, f.members(t, names.ServiceGroup)); d != "" {
		t.Errorf("members (-want +got):\n%s", d)
	}
	if got := f.ns.Bindings("lbvserver_servicegroup_binding", names.VServer); len(got) != 1 {
		t.Errorf("vserver bindings = %v", got)
	}
	saved, ok := f.ns.SavedConfig()
	if !ok || saved.Objects["lbvserver"][names.VServer] == nil {
		t.Error("configuration not saved with the vserver")
	}
	if len(res.Created) < 5 {
		t.Errorf("created = %v", res.Created)
	}

	before := f.ns.Running()
	f.ns.ResetCalls()
	res2, err := f.run(t, PublishService, f.id(), f.in)
	if err != nil {
		t.Fatalf("re-publish: %v", err)
	}
	if m := mutating(f.ns.Calls()); len(m) != 0 {
		t.Errorf("re-publish changed the device: %v", m)
	}
	if len(res2.Created) != 0 {
		t.Errorf("re-publish created %v", res2.Created)
	}
	if d := cmp.Diff(before, f.ns.Running()); d != "" {
		t.Errorf("running config changed (-before +after):\n%s", d)
	}
}

func TestPublishOverForeignObjectFailsAndTouchesNothingOfTheirs(t *testing.T) {
	f := newNSFixture(t)
	names := nitro.Names(f.id())
	// Someone made a vserver under our name by hand.
	foreign := map[string]any{"name": names.VServer, "servicetype": "TCP", "ipv46": "203.0.113.10", "port": float64(443), "comment": "hand-made by netops"}
	if err := f.ns.Seed("lbvserver", foreign); err != nil {
		t.Fatal(err)
	}
	_, err := f.run(t, PublishService, f.id(), f.in)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != nitro.ErrTypeConflict || !strings.Contains(err.Error(), names.VServer) {
		t.Fatalf("err = %v, want %s naming the vserver", err, nitro.ErrTypeConflict)
	}
	if got := f.ns.Objects("lbvserver")[names.VServer]["comment"]; got != "hand-made by netops" {
		t.Errorf("foreign vserver changed: comment = %v", got)
	}
	// What this run made before the conflict is gone again.
	if _, ok := f.ns.Objects("servicegroup")[names.ServiceGroup]; ok {
		t.Error("servicegroup created by the failed run was not rolled back")
	}
}

func TestPublishFailureAfterVServerRollsBackToNothing(t *testing.T) {
	f := newNSFixture(t)
	// The binding fails with a non-retryable invalid-argument error.
	f.ns.FailNext("PUT", "/nitro/v1/config/lbvserver_servicegroup_binding", 278)
	_, err := f.run(t, PublishService, f.id(), f.in)
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("err = %v, want a rolled-back failure", err)
	}
	if got := f.ours(); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
	if _, saved := f.ns.SavedConfig(); saved {
		t.Error("a failed publish saved the configuration")
	}
}

func TestPublishSurvivesBusySaveAndExpiredSession(t *testing.T) {
	f := newNSFixture(t)
	f.ns.SaveInProgress(2)
	f.ns.FailNext("PUT", "/nitro/v1/config/lbvserver_servicegroup_binding", 444) // session expired
	if _, err := f.run(t, PublishService, f.id(), f.in); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if _, ok := f.ns.SavedConfig(); !ok {
		t.Error("not saved after the device stopped being busy")
	}
	if n := len(f.ns.Bindings("lbvserver_servicegroup_binding", nitro.Names(f.id()).VServer)); n != 1 {
		t.Errorf("vserver bindings = %d, want 1 (no duplicate after re-login)", n)
	}
}

func TestUnpublishLeavesForeignObjectsAlone(t *testing.T) {
	f := newNSFixture(t)
	if _, err := f.run(t, PublishService, f.id(), f.in); err != nil {
		t.Fatal(err)
	}
	other := map[string]any{"name": "legacy_vs", "servicetype": "HTTP", "ipv46": "203.0.113.99", "port": float64(80), "comment": "netops"}
	if err := f.ns.Seed("lbvserver", other); err != nil {
		t.Fatal(err)
	}
	un := api.UnpublishInput{VIP: f.in.VIP, Port: f.in.Port, NetScaler: f.in.NetScaler}
	if _, err := f.run(t, UnpublishService, f.id(), un); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if got := f.ours(); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
	if _, ok := f.ns.Objects("lbvserver")["legacy_vs"]; !ok {
		t.Error("unpublish removed a foreign vserver")
	}
	// Unpublishing again is a no-op, not an error.
	if _, err := f.run(t, UnpublishService, f.id(), un); err != nil {
		t.Errorf("second unpublish: %v", err)
	}
}

func TestUpdateBackendsKeepsTheVServer(t *testing.T) {
	f := newNSFixture(t)
	if _, err := f.run(t, PublishService, f.id(), f.in); err != nil {
		t.Fatal(err)
	}
	names := nitro.Names(f.id())
	vsBefore := f.ns.Objects("lbvserver")[names.VServer]
	f.ns.ResetCalls()
	up := api.UpdateBackendsInput{VIP: f.in.VIP, Port: f.in.Port, NetScaler: f.in.NetScaler,
		Backends: []api.Backend{{IP: "10.0.1.12", Port: 443, Weight: 2}, {IP: "10.0.1.13", Port: 443}}}
	if _, err := f.run(t, UpdateBackends, f.id(), up); err != nil {
		t.Fatalf("update: %v", err)
	}
	if d := cmp.Diff([]string{"10.0.1.12", "10.0.1.13"}, f.members(t, names.ServiceGroup)); d != "" {
		t.Errorf("members (-want +got):\n%s", d)
	}
	if d := cmp.Diff(vsBefore, f.ns.Objects("lbvserver")[names.VServer]); d != "" {
		t.Errorf("vserver changed:\n%s", d)
	}
	// The new member was bound before the old one was unbound.
	var order []string
	for _, c := range f.ns.Calls() {
		if c.Mutating() {
			if strings.Contains(c.Path, "servicegroupmember") {
				order = append(order, c.Method)
			}
			if strings.Contains(c.Path, "lbvserver") && !strings.Contains(c.Path, "binding") {
				t.Errorf("vserver touched: %s", c)
			}
		}
	}
	if d := cmp.Diff([]string{"PUT", "DELETE"}, order); d != "" {
		t.Errorf("member changes (-want +got):\n%s", d)
	}
	// The server NetScaler made for the removed member went with it; the
	// new member's server is marked ours.
	servers := f.ns.Objects("server")
	if _, ok := servers["10.0.1.11"]; ok {
		t.Error("the removed member's server is left behind")
	}
	if c := servers["10.0.1.13"]["comment"]; c != nitro.Marker(f.id()) {
		t.Errorf("new member's server comment = %v", c)
	}
}

func TestPublishRejectsBadInputBeforeAnyCall(t *testing.T) {
	tests := map[string]struct {
		edit  func(in *api.PublishInput)
		field string
	}{
		"invalid ip":              {func(in *api.PublishInput) { in.Backends[0].IP = "10.0.1.300" }, "backends[0].ip"},
		"port 0":                  {func(in *api.PublishInput) { in.Port = 0 }, "port"},
		"unknown lb method":       {func(in *api.PublishInput) { in.LBMethod = "FASTEST" }, "lb_method"},
		"no backends":             {func(in *api.PublishInput) { in.Backends = nil }, "backends"},
		"SSL needs a certificate": {func(in *api.PublishInput) { in.Protocol = "SSL" }, "protocol"},
		"INAT on the VIP":         {func(in *api.PublishInput) { in.INAT.PublicIP = in.VIP }, "inat.public_ip"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newNSFixture(t)
			tc.edit(&f.in)
			id := api.PublishWorkflowID(f.in.VIP, f.in.Port)
			_, err := f.run(t, PublishService, id, f.in)
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || app.Type() != activities.ErrInvalidInput || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want InvalidInput naming %s", err, tc.field)
			}
			if calls := f.ns.Calls(); len(calls) != 0 {
				t.Errorf("calls made: %v", calls)
			}
		})
	}
	f := newNSFixture(t)
	_, err := f.run(t, PublishService, "my-own-id", f.in)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != ErrWrongWorkflowID {
		t.Errorf("wrong workflow ID: err = %v", err)
	}
}

func TestRepublishWithOtherBackendsConverges(t *testing.T) {
	f := newNSFixture(t)
	if _, err := f.run(t, PublishService, f.id(), f.in); err != nil {
		t.Fatal(err)
	}
	names := nitro.Names(f.id())
	vsBefore := f.ns.Objects("lbvserver")[names.VServer]
	f.in.Backends = []api.Backend{{IP: "10.0.1.12", Port: 443, Weight: 2}, {IP: "10.0.1.14", Port: 443}}
	if _, err := f.run(t, PublishService, f.id(), f.in); err != nil {
		t.Fatalf("re-publish: %v", err)
	}
	if d := cmp.Diff([]string{"10.0.1.12", "10.0.1.14"}, f.members(t, names.ServiceGroup)); d != "" {
		t.Errorf("members (-want +got):\n%s", d)
	}
	if d := cmp.Diff(vsBefore, f.ns.Objects("lbvserver")[names.VServer]); d != "" {
		t.Errorf("vserver changed:\n%s", d)
	}
}

func TestFailedRepublishPutsTheOldMembersBack(t *testing.T) {
	f := newNSFixture(t)
	if _, err := f.run(t, PublishService, f.id(), f.in); err != nil {
		t.Fatal(err)
	}
	names := nitro.Names(f.id())
	before := f.memberWeights(names.ServiceGroup)
	vsBefore := f.ns.Objects("lbvserver")[names.VServer]
	f.in.Backends = []api.Backend{{IP: "10.0.1.12", Port: 443, Weight: 2}, {IP: "10.0.1.14", Port: 443}}
	f.ns.FailNext("POST", "/nitro/v1/config/nsconfig", 278) // the save is refused, after the members changed
	_, err := f.run(t, PublishService, f.id(), f.in)
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("err = %v, want a rolled-back failure", err)
	}
	if d := cmp.Diff([]string{"10.0.1.11:443 weight 1", "10.0.1.12:443 weight 2"}, before); d != "" {
		t.Fatalf("members after the first publish (-want +got):\n%s", d)
	}
	if d := cmp.Diff(before, f.memberWeights(names.ServiceGroup)); d != "" {
		t.Errorf("members after the rollback (-before +after):\n%s", d)
	}
	if d := cmp.Diff(vsBefore, f.ns.Objects("lbvserver")[names.VServer]); d != "" {
		t.Errorf("vserver changed:\n%s", d)
	}
}

// memberWeights lists a servicegroup's members as "ip:port weight w"; a
// member bound without a weight has NetScaler's default, 1.
func (f *nsFixture) memberWeights(sg string) []string {
	var out []string
	for _, b := range f.ns.Bindings("servicegroup_servicegroupmember_binding", sg) {
		w, ok := b["weight"]
		if !ok {
			w = 1
		}
		out = append(out, fmt.Sprintf("%v:%v weight %v", b["ip"], b["port"], w))
	}
	sort.Strings(out)
	return out
}

// TestPublishCannotSendTheCredentialElsewhere: a starter names the worker's
// NetScaler credential with the URL of a NITRO server of their own (here a
// second fake on loopback). The secrets file binds the credential to the
// first fake only, so the run fails CredentialNotAllowed and the second
// server never sees a login.
func TestPublishCannotSendTheCredentialElsewhere(t *testing.T) {
	f := newNSFixture(t)
	thief := nitrofake.Start(t, nitrofake.Options{Username: "nsroot", Password: "ns-Secret-1"})
	f.in.NetScaler = api.NetScaler{URL: thief.URL(), Credential: nsCred, Auth: "header"}
	f.in.INAT, f.in.RNAT = nil, nil
	_, err := f.run(t, PublishService, f.id(), f.in)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != nitro.ErrTypeCredentialNotAllowed {
		t.Fatalf("err = %v, want %s", err, nitro.ErrTypeCredentialNotAllowed)
	}
	if thief.LoginAttempts() != 0 || thief.SawPassword("ns-Secret-1") || len(thief.Calls()) != 0 {
		t.Errorf("the second server saw the credential: %d attempts, calls %v", thief.LoginAttempts(), thief.Calls())
	}
}

// TestPublishReportsAVServerThatIsNotUp: configured and saved is not
// serving; a vserver whose backends all fail their monitor is reported.
func TestPublishReportsAVServerThatIsNotUp(t *testing.T) {
	f := newNSFixture(t)
	for _, b := range f.in.Backends {
		f.ns.SetBackendDown(b.IP, true)
	}
	f.in.UpWaitSeconds = 1
	_, err := f.run(t, PublishService, f.id(), f.in)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != ErrVServerNotUp || !strings.Contains(err.Error(), "DOWN") {
		t.Fatalf("err = %v, want %s naming DOWN", err, ErrVServerNotUp)
	}
	var res api.PublishResult
	if derr := app.Details(&res); derr != nil || res.State != "DOWN" {
		t.Errorf("details: %+v (%v)", res, derr)
	}
	if _, ok := f.ns.SavedConfig(); !ok {
		t.Error("the configuration was not saved: it is kept for the operator to fix the backends")
	}
}
