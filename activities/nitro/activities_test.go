package nitro_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

const (
	owner   = "publish/203.0.113.10:443"
	credRef = "netscaler/ns1"
)

type fixture struct {
	s   *nitrofake.Server
	a   *nitro.Activities
	env *testsuite.TestActivityEnvironment
	t   nitro.Target
	n   nitro.ObjectNames
}

func newFixture(t *testing.T, opts nitrofake.Options) *fixture {
	t.Helper()
	s := nitrofake.Start(t, opts)
	// The addresses the publication NATs to are the appliance's own.
	for _, ip := range []string{"198.51.100.10", "203.0.113.10"} {
		if err := s.Seed("nsip", map[string]any{"ipaddress": ip, "netmask": "255.255.255.255", "type": "VIP"}); err != nil {
			t.Fatal(err)
		}
	}
	a := &nitro.Activities{Secrets: secrets.Static{credRef: {Username: s.Username(), Password: s.Password(), Endpoints: []string{s.URL()}}}}
	env := newEnvFor(t, a)
	return &fixture{s: s, a: a, env: env, t: nitro.Target{URL: s.URL(), Credential: credRef, CA: string(s.CAPEM())}, n: nitro.Names(owner)}
}

func newEnvFor(t *testing.T, a *nitro.Activities) *testsuite.TestActivityEnvironment {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	return env
}

// run executes one activity and decodes its result into out (may be nil).
func (f *fixture) run(t *testing.T, fn any, in any, out any) error {
	t.Helper()
	v, err := f.env.ExecuteActivity(fn, in)
	if err == nil && out != nil {
		if derr := v.Get(out); derr != nil {
			t.Fatalf("decode result: %v", derr)
		}
	}
	return err
}

// errKind returns an activity error's type and whether it is retryable.
func errKind(t *testing.T, err error) (string, bool) {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("not an ApplicationError: %T %v", err, err)
	}
	return ae.Type(), !ae.NonRetryable()
}

// publish runs the whole publication, one object per activity, as the
// PublishService saga will.
func (f *fixture) publish(t *testing.T) []nitro.Result {
	t.Helper()
	var out []nitro.Result
	steps := []struct {
		fn any
		in any
	}{
		{f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}},
		{f.a.EnsureMonitorBinding, nitro.MonitorBindingInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup, Monitor: "tcp"}},
		{f.a.EnsureLBVServer, nitro.LBVServerInput{Target: f.t, Owner: owner, Name: f.n.VServer, ServiceType: "TCP", VIP: "203.0.113.10", Port: 443, LBMethod: "ROUNDROBIN"}},
		{f.a.EnsureVServerBinding, nitro.VServerBindingInput{Target: f.t, Owner: owner, VServer: f.n.VServer, ServiceGroup: f.n.ServiceGroup}},
		{f.a.EnsureINAT, nitro.INATInput{Target: f.t, Owner: owner, Name: f.n.INAT, PublicIP: "198.51.100.10", PrivateIP: "203.0.113.10"}},
		{f.a.EnsureRNAT, nitro.RNATInput{Target: f.t, Owner: owner, Name: f.n.RNAT, Network: "10.1.2.0", Netmask: "255.255.255.0", NATIP: "203.0.113.10"}},
	}
	for i, st := range steps {
		var r nitro.Result
		if err := f.run(t, st.fn, st.in, &r); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		out = append(out, r)
	}
	var mr nitro.MembersResult
	if err := f.run(t, f.a.EnsureMembers, nitro.MembersInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup,
		Members: []nitro.Member{{IP: "10.1.2.11", Port: 8443}, {IP: "10.1.2.12", Port: 8443, Weight: 2}}}, &mr); err != nil {
		t.Fatalf("members: %v", err)
	}
	if err := f.run(t, f.a.SaveConfig, nitro.SaveInput{Target: f.t}, nil); err != nil {
		t.Fatalf("save: %v", err)
	}
	return out
}

func TestPublishFromNothingAndRerun(t *testing.T) {
	f := newFixture(t, nitrofake.Options{TLS: true})
	first := f.publish(t)
	for _, r := range first {
		if !r.Changed {
			t.Errorf("first run: %s not changed", r.Object)
		}
	}
	saved, ok := f.s.SavedConfig()
	if !ok {
		t.Fatal("nothing saved")
	}
	wantVS := map[string]any{"name": f.n.VServer, "servicetype": "TCP", "ipv46": "203.0.113.10", "port": float64(443),
		"lbmethod": "ROUNDROBIN", "comment": "rackflow:" + owner}
	if diff := cmp.Diff(wantVS, numbersToFloat(saved.Objects["lbvserver"][f.n.VServer])); diff != "" {
		t.Errorf("saved vserver (-want +got):\n%s", diff)
	}
	if c := saved.Objects["servicegroup"][f.n.ServiceGroup]["comment"]; c != "rackflow:"+owner {
		t.Errorf("servicegroup comment %v", c)
	}
	checks := map[string]int{
		"servicegroup_servicegroupmember_binding": 2, "servicegroup_lbmonitor_binding": 1,
		"lbvserver_servicegroup_binding": 1, "rnat_nsip_binding": 1,
	}
	for typ, n := range checks {
		if got := len(saved.Bindings[typ]); got != n {
			t.Errorf("%s: %d rows saved, want %d: %v", typ, got, n, saved.Bindings[typ])
		}
	}
	if in := saved.Objects["inat"][f.n.INAT]; in["publicip"] != "198.51.100.10" || in["privateip"] != "203.0.113.10" {
		t.Errorf("inat = %v", in)
	}

	// A second run changes nothing and asks for no change.
	f.s.ResetCalls()
	for _, r := range f.publish(t) {
		if r.Changed {
			t.Errorf("re-run: %s changed", r.Object)
		}
	}
	for _, c := range f.s.Calls() {
		if c.Mutating() {
			t.Errorf("re-run made a configuration call: %v", c)
		}
	}
	if n := f.s.Sessions(); n != 0 {
		t.Errorf("%d sessions left open", n)
	}
}

func numbersToFloat(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if n, ok := v.(interface{ Float64() (float64, error) }); ok {
			v, _ = n.Float64()
		}
		out[k] = v
	}
	return out
}

func TestConflictWithForeignObjects(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	foreignSG := map[string]any{"servicegroupname": f.n.ServiceGroup, "servicetype": "TCP", "comment": "ops: do not touch"}
	if err := f.s.Seed("servicegroup", foreignSG); err != nil {
		t.Fatal(err)
	}
	otherVS := map[string]any{"name": f.n.VServer, "servicetype": "TCP", "ipv46": "203.0.113.10", "port": 443, "comment": "rackflow:publish/203.0.113.99:443"}
	if err := f.s.Seed("lbvserver", otherVS); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Seed("inat", map[string]any{"name": f.n.INAT, "publicip": "198.51.100.10", "privateip": "203.0.113.77"}); err != nil {
		t.Fatal(err)
	}
	before := f.s.Running()
	f.s.ResetCalls()
	tests := map[string]struct {
		fn       any
		in       any
		wantText []string
	}{
		"servicegroup not ours": {f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"},
			[]string{"servicegroup/" + f.n.ServiceGroup, "not created by rackflow", "ops: do not touch"}},
		"servicegroup differs too": {f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "UDP"},
			[]string{"servicetype", `have "TCP", want "UDP"`}},
		"vserver of another workflow": {f.a.EnsureLBVServer, nitro.LBVServerInput{Target: f.t, Owner: owner, Name: f.n.VServer, ServiceType: "TCP", VIP: "203.0.113.10", Port: 443, LBMethod: "ROUNDROBIN"},
			[]string{"lbvserver/" + f.n.VServer, "another rackflow workflow", `lbmethod: have "LEASTCONNECTION", want "ROUNDROBIN"`}},
		"inat differs": {f.a.EnsureINAT, nitro.INATInput{Target: f.t, Owner: owner, Name: f.n.INAT, PublicIP: "198.51.100.10", PrivateIP: "203.0.113.10"},
			[]string{"inat/" + f.n.INAT, "privateip", "203.0.113.77"}},
		"members into a foreign servicegroup": {f.a.EnsureMembers, nitro.MembersInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup, Members: []nitro.Member{{IP: "10.0.0.1", Port: 80}}},
			[]string{"servicegroup/" + f.n.ServiceGroup}},
		"bind a foreign vserver": {f.a.EnsureVServerBinding, nitro.VServerBindingInput{Target: f.t, Owner: owner, VServer: f.n.VServer, ServiceGroup: f.n.ServiceGroup},
			[]string{"lbvserver/" + f.n.VServer}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := f.run(t, tc.fn, tc.in, nil)
			if err == nil {
				t.Fatal("accepted a foreign object")
			}
			typ, retry := errKind(t, err)
			if typ != nitro.ErrTypeConflict || retry {
				t.Errorf("error %s retryable=%v, want non-retryable %s", typ, retry, nitro.ErrTypeConflict)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if diff := cmp.Diff(before, f.s.Running()); diff != "" {
		t.Errorf("foreign objects changed (-before +after):\n%s", diff)
	}
	for _, c := range f.s.Calls() {
		if c.Mutating() {
			t.Errorf("conflict path made a configuration call: %v", c)
		}
	}
}

func TestDeleteLeavesForeignObjectsAlone(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	f.publish(t)
	// Someone else's objects beside ours, and a member they added to our group.
	foreign := []struct {
		typ string
		obj map[string]any
	}{
		{"servicegroup", map[string]any{"servicegroupname": "ops-sg", "servicetype": "TCP", "comment": "ops"}},
		{"lbvserver", map[string]any{"name": "ops-vs", "servicetype": "TCP", "ipv46": "203.0.113.20", "port": 80}},
		{"lbvserver_servicegroup_binding", map[string]any{"name": "ops-vs", "servicegroupname": "ops-sg"}},
		{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": f.n.ServiceGroup, "ip": "10.9.9.9", "port": 8443}},
	}
	for _, o := range foreign {
		if err := f.s.Seed(o.typ, o.obj); err != nil {
			t.Fatal(err)
		}
	}
	// Members: drop one of ours; the operator's stays and is reported.
	var mr nitro.MembersResult
	if err := f.run(t, f.a.EnsureMembers, nitro.MembersInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup,
		Members:  []nitro.Member{{IP: "10.1.2.11", Port: 8443}},
		Previous: []nitro.Member{{IP: "10.1.2.11", Port: 8443}, {IP: "10.1.2.12", Port: 8443, Weight: 2}}}, &mr); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nitro.MembersResult{Removed: []nitro.Member{{IP: "10.1.2.12", Port: 8443, Weight: 2}}, Unchanged: 1,
		Foreign: []nitro.Member{{IP: "10.9.9.9", Port: 8443, Weight: 1}}}, mr); diff != "" {
		t.Errorf("members result (-want +got):\n%s", diff)
	}

	// Unpublish in saga-reverse order, twice: the second run finds nothing to do.
	for round := 0; round < 2; round++ {
		steps := []struct {
			fn any
			in any
		}{
			{f.a.DeleteRNAT, nitro.DeleteInput{Target: f.t, Owner: owner, Name: f.n.RNAT}},
			{f.a.DeleteINAT, nitro.DeleteInput{Target: f.t, Owner: owner, Name: f.n.INAT}},
			{f.a.DeleteVServerBinding, nitro.VServerBindingInput{Target: f.t, Owner: owner, VServer: f.n.VServer, ServiceGroup: f.n.ServiceGroup}},
			{f.a.DeleteLBVServer, nitro.DeleteInput{Target: f.t, Owner: owner, Name: f.n.VServer}},
			{f.a.DeleteMonitorBinding, nitro.MonitorBindingInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup, Monitor: "tcp"}},
			{f.a.DeleteServiceGroup, nitro.DeleteInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup}},
		}
		for i, st := range steps {
			var r nitro.Result
			if err := f.run(t, st.fn, st.in, &r); err != nil {
				t.Fatalf("round %d step %d: %v", round, i, err)
			}
			if r.Changed != (round == 0) {
				t.Errorf("round %d: %s changed=%v", round, r.Object, r.Changed)
			}
		}
	}
	// A delete aimed at someone else's object skips it.
	var r nitro.Result
	if err := f.run(t, f.a.DeleteServiceGroup, nitro.DeleteInput{Target: f.t, Owner: owner, Name: "ops-sg"}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Changed || !strings.HasPrefix(r.Skipped, nitro.SkippedNotOurs) {
		t.Errorf("foreign delete result = %+v", r)
	}
	if err := f.run(t, f.a.DeleteVServerBinding, nitro.VServerBindingInput{Target: f.t, Owner: owner, VServer: "ops-vs", ServiceGroup: "ops-sg"}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Changed || !strings.HasPrefix(r.Skipped, nitro.SkippedNotOurs) {
		t.Errorf("foreign unbind result = %+v", r)
	}

	run := f.s.Running()
	for typ, names := range map[string][]string{"servicegroup": {"ops-sg"}, "lbvserver": {"ops-vs"}, "inat": nil, "rnat": nil} {
		got := make([]string, 0)
		for n := range run.Objects[typ] {
			got = append(got, n)
		}
		if names == nil {
			names = []string{}
		}
		if diff := cmp.Diff(names, got); diff != "" {
			t.Errorf("%s left (-want +got):\n%s", typ, diff)
		}
	}
	if got := f.s.Bindings("lbvserver_servicegroup_binding", "ops-vs"); len(got) != 1 {
		t.Errorf("foreign vserver binding = %v", got)
	}
}

func TestSaveBusyThenSuccess(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	f.s.SaveInProgress(1)
	err := f.run(t, f.a.SaveConfig, nitro.SaveInput{Target: f.t}, nil)
	if err == nil {
		t.Fatal("busy save succeeded")
	}
	if typ, retry := errKind(t, err); typ != nitro.ErrTypeBusy || !retry {
		t.Errorf("busy save: %s retryable=%v, want retryable %s", typ, retry, nitro.ErrTypeBusy)
	}
	if err := f.run(t, f.a.SaveConfig, nitro.SaveInput{Target: f.t}, nil); err != nil {
		t.Fatalf("second save: %v", err)
	}
	if _, ok := f.s.SavedConfig(); !ok {
		t.Error("nothing saved")
	}
}

func TestSessionExpiredMidRun(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	in := nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}
	// The session dies between the activity's read and its add.
	f.s.FailNext("POST", "/nitro/v1/config/servicegroup", 444)
	var r nitro.Result
	if err := f.run(t, f.a.EnsureServiceGroup, in, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Changed {
		t.Error("not created")
	}
	if n := f.s.Logins(); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
	if _, ok := f.s.Objects("servicegroup")[f.n.ServiceGroup]; !ok {
		t.Error("servicegroup missing")
	}
}

func TestErrorTypes(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	// A device that takes requests and never answers.
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })
	sgIn := nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}
	tests := map[string]struct {
		prep      func(a *nitro.Activities, tgt *nitro.Target)
		fn        any
		in        func(tgt nitro.Target) any
		wantType  string
		wantRetry bool
	}{
		"wrong password": {
			prep: func(a *nitro.Activities, _ *nitro.Target) {
				a.Secrets = secrets.Static{credRef: {Username: "nsroot", Password: "nope", Endpoints: []string{f.s.URL()}}}
			},
			fn:       f.a.EnsureServiceGroup,
			wantType: nitro.ErrTypeAuthFailed,
		},
		"unknown credential": {
			prep:     func(_ *nitro.Activities, tgt *nitro.Target) { tgt.Credential = "netscaler/unknown" },
			fn:       f.a.EnsureServiceGroup,
			wantType: activities.ErrCredentialNotFound,
		},
		"invalid argument from NITRO": {
			prep:     func(*nitro.Activities, *nitro.Target) { f.s.FailNext("POST", "/nitro/v1/config/servicegroup", 278) },
			fn:       f.a.EnsureServiceGroup,
			wantType: nitro.ErrTypeInvalidArgument,
		},
		"busy on add": {
			prep:      func(*nitro.Activities, *nitro.Target) { f.s.FailNext("POST", "/nitro/v1/config/servicegroup", 293) },
			fn:        f.a.EnsureServiceGroup,
			wantType:  nitro.ErrTypeBusy,
			wantRetry: true,
		},
		"unreachable": {
			prep: func(a *nitro.Activities, tgt *nitro.Target) {
				tgt.URL = "http://127.0.0.1:1"
				a.Secrets = secrets.Static{credRef: {Username: "nsroot", Password: "x", Endpoints: []string{tgt.URL}}}
			},
			fn:        f.a.EnsureServiceGroup,
			wantType:  nitro.ErrTypeUnreachable,
			wantRetry: true,
		},
		"no answer in time": {
			prep: func(a *nitro.Activities, tgt *nitro.Target) {
				tgt.URL = hung.URL
				a.Secrets = secrets.Static{credRef: {Username: "nsroot", Password: "x", Endpoints: []string{hung.URL}}}
				a.NewClient = func(_ context.Context, t nitro.Target, cred secrets.Secret) (nitro.API, error) {
					return nitroclient.New(nitroclient.Config{URL: t.URL, Username: cred.Username, Password: cred.Password, RequestTimeout: 50 * time.Millisecond})
				}
			},
			fn:        f.a.EnsureServiceGroup,
			wantType:  nitro.ErrTypeUnreachable,
			wantRetry: true,
		},
		"rnat network already has another rule": {
			prep: func(*nitro.Activities, *nitro.Target) { f.s.FailNext("POST", "/nitro/v1/config/rnat", 774) },
			fn:   f.a.EnsureRNAT,
			in: func(tgt nitro.Target) any {
				return nitro.RNATInput{Target: tgt, Owner: owner, Name: f.n.RNAT, Network: "10.1.2.0", Netmask: "255.255.255.0", NATIP: "203.0.113.10"}
			},
			wantType: nitro.ErrTypeConflict,
		},
		"binding to a missing servicegroup": {
			fn: f.a.EnsureMonitorBinding,
			in: func(tgt nitro.Target) any {
				return nitro.MonitorBindingInput{Target: tgt, Owner: owner, ServiceGroup: "nope", Monitor: "tcp"}
			},
			wantType: nitro.ErrTypeNotFound,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			saved := *f.a
			defer func() { *f.a = saved }()
			tgt := f.t
			if tc.prep != nil {
				tc.prep(f.a, &tgt)
			}
			var in any
			if tc.in != nil {
				in = tc.in(tgt)
			} else {
				sgIn.Target = tgt
				in = sgIn
			}
			err := f.run(t, tc.fn, in, nil)
			if err == nil {
				t.Fatal("no error")
			}
			typ, retry := errKind(t, err)
			if typ != tc.wantType || retry != tc.wantRetry {
				t.Errorf("got %s retryable=%v, want %s retryable=%v (%v)", typ, retry, tc.wantType, tc.wantRetry, err)
			}
			if strings.Contains(err.Error(), f.s.Password()) {
				t.Errorf("error leaks a password: %v", err)
			}
		})
	}
}

func TestInvalidInputTouchesNothing(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	tg := f.t
	tests := map[string]struct {
		fn   any
		in   any
		want string
	}{
		"bad vip": {f.a.EnsureLBVServer, nitro.LBVServerInput{Target: tg, Owner: owner, Name: "vs", ServiceType: "TCP", VIP: "203.0.113.300", Port: 443}, "vip"},
		"port 0":  {f.a.EnsureLBVServer, nitro.LBVServerInput{Target: tg, Owner: owner, Name: "vs", ServiceType: "TCP", VIP: "203.0.113.3", Port: 0}, "port"},
		"unknown lb method": {f.a.EnsureLBVServer, nitro.LBVServerInput{Target: tg, Owner: owner, Name: "vs", ServiceType: "TCP", VIP: "203.0.113.3", Port: 443, LBMethod: "RANDOM"},
			"lb_method"},
		"unknown service type": {f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: tg, Owner: owner, Name: "sg", ServiceType: "tcp"}, "service_type"},
		"bad name":             {f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: tg, Owner: owner, Name: "web/sg", ServiceType: "TCP"}, "name"},
		"no owner":             {f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: tg, Name: "sg", ServiceType: "TCP"}, "owner"},
		"url with password": {f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: nitro.Target{URL: "https://u:p@ns1", Credential: credRef}, Owner: owner, Name: "sg", ServiceType: "TCP"},
			"user info"},
		"bad CA":                  {f.a.SaveConfig, nitro.SaveInput{Target: nitro.Target{URL: tg.URL, Credential: credRef, CA: "not pem"}}, "target.ca"},
		"inat name without owner": {f.a.EnsureINAT, nitro.INATInput{Target: tg, Owner: owner, Name: "inat1", PublicIP: "198.51.100.1", PrivateIP: "10.0.0.1"}, "must start with"},
		"rnat bad netmask": {f.a.EnsureRNAT, nitro.RNATInput{Target: tg, Owner: owner, Name: f.n.RNAT, Network: "10.0.0.0", Netmask: "255.0.255.0", NATIP: "203.0.113.1"},
			"netmask"},
		"member port 0": {f.a.EnsureMembers, nitro.MembersInput{Target: tg, Owner: owner, ServiceGroup: "sg", Members: []nitro.Member{{IP: "10.0.0.1", Port: 0}}}, "members[0].port"},
		"member twice": {f.a.EnsureMembers, nitro.MembersInput{Target: tg, Owner: owner, ServiceGroup: "sg", Members: []nitro.Member{{IP: "10.0.0.1", Port: 80}, {IP: "10.0.0.1", Port: 80}}},
			"twice"},
		"delete foreign-named inat": {f.a.DeleteINAT, nitro.DeleteInput{Target: tg, Owner: owner, Name: "ops-inat"}, "must start with"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f.s.ResetCalls()
			err := f.run(t, tc.fn, tc.in, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			typ, retry := errKind(t, err)
			if typ != activities.ErrInvalidInput || retry {
				t.Errorf("got %s retryable=%v, want non-retryable %s", typ, retry, activities.ErrInvalidInput)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if calls := f.s.Calls(); len(calls) != 0 {
				t.Errorf("invalid input reached the NetScaler: %v", calls)
			}
		})
	}
}

// TestCredentialGoesOnlyWhereTheSecretsFileSays runs the attack of issue #10:
// an input that names the worker's NetScaler credential together with the
// URL of another NITRO server on loopback. The credential is bound to the
// first fake only, so the activity refuses before connecting and the second
// server never sees the password, whatever the auth mode.
func TestCredentialGoesOnlyWhereTheSecretsFileSays(t *testing.T) {
	f := newFixture(t, nitrofake.Options{Password: "ns-Bound-Only-1"})
	thief := nitrofake.Start(t, nitrofake.Options{Password: "thief-side-pw"})
	tests := map[string]struct {
		secret secrets.Secret
		url    string
		want   string
	}{
		"bound elsewhere, session": {secrets.Secret{Username: "nsroot", Password: f.s.Password(), Endpoints: []string{f.s.URL()}}, thief.URL(), nitro.ErrTypeCredentialNotAllowed},
		"bound elsewhere, header":  {secrets.Secret{Username: "nsroot", Password: f.s.Password(), Endpoints: []string{f.s.URL()}}, thief.URL(), nitro.ErrTypeCredentialNotAllowed},
		"bound to nothing":         {secrets.Secret{Username: "nsroot", Password: f.s.Password()}, thief.URL(), nitro.ErrTypeCredentialNotAllowed},
		"plain http off loopback":  {secrets.Secret{Username: "nsroot", Password: f.s.Password(), Endpoints: []string{"http://192.0.2.1"}}, "http://192.0.2.1", nitro.ErrTypeCredentialNotAllowed},
		"same host, another port":  {secrets.Secret{Username: "nsroot", Password: f.s.Password(), Endpoints: []string{f.s.URL() + "/nitro"}}, thief.URL(), nitro.ErrTypeCredentialNotAllowed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a := &nitro.Activities{Secrets: secrets.Static{credRef: tc.secret}}
			env := newEnvFor(t, a)
			tgt := nitro.Target{URL: tc.url, Credential: credRef}
			if strings.HasSuffix(name, "header") {
				tgt.Auth = "header"
			}
			_, err := env.ExecuteActivity(a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: tgt, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"})
			if err == nil {
				t.Fatal("credential sent to an endpoint it is not bound to")
			}
			if typ, retry := errKind(t, err); typ != tc.want || retry {
				t.Errorf("got %s retryable=%v, want non-retryable %s (%v)", typ, retry, tc.want, err)
			}
			if strings.Contains(err.Error(), f.s.Password()) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
	if thief.SawPassword(f.s.Password()) || thief.LoginAttempts() != 0 {
		t.Errorf("the second server saw %d login attempts (password included: %v)", thief.LoginAttempts(), thief.SawPassword(f.s.Password()))
	}
	if n := len(thief.Calls()); n != 0 {
		t.Errorf("the second server got %d requests: %v", n, thief.Calls())
	}
	// The bound URL still works.
	var r nitro.Result
	if err := f.run(t, f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}, &r); err != nil || !r.Changed {
		t.Fatalf("bound endpoint: %v %+v", err, r)
	}
}
