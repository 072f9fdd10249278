package nitro_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// Contract tests of issue #11: each runs against the fake where it answers
// as the appliance does, and fails on code that behaves as the fake used to
// let it.

// TestUnbindOnlyWhatIsBound: unpublish unbinds the built-in monitors it may
// have bound; NITRO refuses to unbind one that is not bound (2170), so only
// the bound one may be asked for.
func TestUnbindOnlyWhatIsBound(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	f.publish(t)
	f.s.ResetCalls()
	for round := 0; round < 2; round++ {
		for _, m := range []string{"tcp", "http", "dns", "ping"} {
			var r nitro.Result
			if err := f.run(t, f.a.DeleteMonitorBinding, nitro.MonitorBindingInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup, Monitor: m}, &r); err != nil {
				t.Fatalf("round %d unbind %s: %v", round, m, err)
			}
			if r.Changed != (round == 0 && m == "tcp") {
				t.Errorf("round %d unbind %s: changed=%v", round, m, r.Changed)
			}
		}
		var r nitro.Result
		if err := f.run(t, f.a.DeleteVServerBinding, nitro.VServerBindingInput{Target: f.t, Owner: owner, VServer: f.n.VServer, ServiceGroup: f.n.ServiceGroup}, &r); err != nil {
			t.Fatalf("round %d unbind servicegroup: %v", round, err)
		}
	}
	var deletes []string
	for _, c := range f.s.Calls() {
		if c.Method == "DELETE" {
			deletes = append(deletes, c.String())
		}
	}
	want := []string{
		"DELETE /nitro/v1/config/servicegroup_lbmonitor_binding/" + f.n.ServiceGroup + "?args=monitor_name:tcp&warning=yes -> 200/0",
		"DELETE /nitro/v1/config/lbvserver_servicegroup_binding/" + f.n.VServer + "?args=servicegroupname:" + strings.ReplaceAll(f.n.ServiceGroup, ":", "%3A") + "&warning=yes -> 200/0",
	}
	if d := cmp.Diff(want, deletes); d != "" {
		t.Errorf("unbinds sent (-want +got):\n%s", d)
	}
}

// TestHAPair: nothing is changed on a secondary, and the error names the
// primary; a change the peer did not take is a non-retryable failure.
func TestHAPair(t *testing.T) {
	tests := map[string]struct {
		ha       nitrofake.HA
		wantType string
		wantText string
	}{
		"secondary":       {nitrofake.HA{PeerIP: "192.0.2.7", Secondary: true}, nitro.ErrTypeNotPrimary, "192.0.2.7"},
		"peer not synced": {nitrofake.HA{PeerIP: "192.0.2.7", NotPropagated: true}, nitro.ErrTypeNotPropagated, "1028"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nitrofake.Options{HA: tc.ha})
			f.s.ResetCalls()
			err := f.run(t, f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if typ, retry := errKind(t, err); typ != tc.wantType || retry {
				t.Errorf("got %s retryable=%v, want non-retryable %s (%v)", typ, retry, tc.wantType, err)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not say %q", err, tc.wantText)
			}
			if tc.ha.Secondary {
				for _, c := range f.s.Calls() {
					if c.Mutating() {
						t.Errorf("changed a secondary: %v", c)
					}
				}
			}
			if n := f.s.Sessions(); n != 0 {
				t.Errorf("%d sessions left open", n)
			}
		})
	}
}

// TestNATAddresses: an INAT public IP or RNAT NAT IP must be the
// appliance's own; named RNAT needs 12.1, and below it unpublish does not
// look for one.
func TestNATAddresses(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	err := f.run(t, f.a.EnsureINAT, nitro.INATInput{Target: f.t, Owner: owner, Name: f.n.INAT, PublicIP: "198.51.100.99", PrivateIP: "10.0.0.1"}, nil)
	if typ, retry := errKind(t, err); typ != nitro.ErrTypeNotOwnedIP || retry || !strings.Contains(err.Error(), "add ns ip 198.51.100.99") {
		t.Errorf("INAT on a foreign IP: %s retryable=%v: %v", typ, retry, err)
	}
	err = f.run(t, f.a.EnsureRNAT, nitro.RNATInput{Target: f.t, Owner: owner, Network: "10.1.2.0", Netmask: "255.255.255.0", NATIP: "198.51.100.99"}, nil)
	if typ, _ := errKind(t, err); typ != nitro.ErrTypeNotOwnedIP {
		t.Errorf("RNAT via a foreign IP: %s: %v", typ, err)
	}

	old := newFixture(t, nitrofake.Options{Version: "12.0"})
	err = old.run(t, old.a.EnsureRNAT, nitro.RNATInput{Target: old.t, Owner: owner, Network: "10.1.2.0", Netmask: "255.255.255.0", NATIP: "203.0.113.10"}, nil)
	if typ, retry := errKind(t, err); typ != nitro.ErrTypeUnsupported || retry || !strings.Contains(err.Error(), "12.1") {
		t.Errorf("RNAT on 12.0: %s retryable=%v: %v", typ, retry, err)
	}
	old.s.ResetCalls()
	var r nitro.Result
	if err := old.run(t, old.a.DeleteRNAT, nitro.DeleteInput{Target: old.t, Owner: owner, Name: old.n.RNAT}, &r); err != nil {
		t.Fatal(err)
	}
	for _, c := range old.s.Calls() {
		if strings.Contains(c.Path, "rnat") {
			t.Errorf("looked for a named RNAT on 12.0: %v", c)
		}
	}
}

// TestRNATIsSharedPerSubnet: two publications on one subnet share its one
// rule; the first to leave keeps it, the last removes it.
func TestRNATIsSharedPerSubnet(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	const other = "publish/203.0.113.11:80"
	rule := nitro.RNATName("10.1.2.0", "255.255.255.0")
	for _, o := range []string{owner, other} {
		var r nitro.Result
		if err := f.run(t, f.a.EnsureRNAT, nitro.RNATInput{Target: f.t, Owner: o, Network: "10.1.2.0", Netmask: "255.255.255.0", NATIP: "203.0.113.10"}, &r); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		if !r.Changed {
			t.Errorf("%s: not recorded as a user", o)
		}
	}
	if n := len(f.s.Objects("rnat")); n != 1 {
		t.Fatalf("%d rnat rules, want 1 shared", n)
	}
	// Another NAT IP for the same subnet cannot be had.
	err := f.run(t, f.a.EnsureRNAT, nitro.RNATInput{Target: f.t, Owner: "publish/203.0.113.12:80", Network: "10.1.2.0", Netmask: "255.255.255.0", NATIP: "198.51.100.10"}, nil)
	if typ, _ := errKind(t, err); typ != nitro.ErrTypeConflict {
		t.Errorf("second NAT IP: %s: %v", typ, err)
	}
	var r nitro.Result
	if err := f.run(t, f.a.DeleteRNAT, nitro.DeleteInput{Target: f.t, Owner: owner, Name: nitro.Names(owner).RNAT}, &r); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.s.Objects("rnat")[rule]; !ok {
		t.Fatal("the first to leave removed a rule the other publication uses")
	}
	if err := f.run(t, f.a.DeleteRNAT, nitro.DeleteInput{Target: f.t, Owner: other, Name: nitro.Names(other).RNAT}, &r); err != nil {
		t.Fatal(err)
	}
	if n := len(f.s.Objects("rnat")) + len(f.s.Objects("policypatset")); n != 0 {
		t.Errorf("the last to leave left %d objects", n)
	}
	if n := len(f.s.Bindings("rnat_nsip_binding", "")); n != 0 {
		t.Errorf("%d NAT IP bindings left", n)
	}
}

// TestTLSTerminatingTypesRefused: an SSL vserver stays DOWN without a
// certificate, which rackflow does not bind.
func TestTLSTerminatingTypesRefused(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	for _, st := range []string{"SSL", "SSL_TCP"} {
		err := f.run(t, f.a.EnsureLBVServer, nitro.LBVServerInput{Target: f.t, Owner: owner, Name: f.n.VServer, ServiceType: st, VIP: "203.0.113.10", Port: 443}, nil)
		if typ, _ := errKind(t, err); typ != activities.ErrInvalidInput {
			t.Errorf("%s: %s: %v", st, typ, err)
		}
	}
}

// TestVServerState reads UP for a vserver with a live member and DOWN when
// every member's monitor fails.
func TestVServerState(t *testing.T) {
	f := newFixture(t, nitrofake.Options{})
	f.publish(t)
	in := nitro.VServerStateInput{Target: f.t, Owner: owner, Name: f.n.VServer}
	for _, tc := range []struct {
		down bool
		want string
	}{{false, "UP"}, {true, "DOWN"}} {
		f.s.SetBackendDown("10.1.2.11", tc.down)
		f.s.SetBackendDown("10.1.2.12", tc.down)
		var got string
		if err := f.run(t, f.a.VServerState, in, &got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("down=%v: state %q, want %q", tc.down, got, tc.want)
		}
	}
}

// TestOperatorExpectations: members leave gracefully, the servers NetScaler
// made for ours go with them (not those of others), the LB feature is
// checked, and a partition is honoured.
func TestOperatorExpectations(t *testing.T) {
	t.Run("drain then unbind, servers cleaned", func(t *testing.T) {
		f := newFixture(t, nitrofake.Options{})
		f.publish(t)
		if err := f.s.Seed("server", map[string]any{"name": "ops-db", "ipaddress": "10.1.2.50"}); err != nil {
			t.Fatal(err)
		}
		if err := f.s.Seed("servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": f.n.ServiceGroup, "ip": "10.1.2.50", "port": 8443}); err != nil {
			t.Fatal(err)
		}
		f.s.ResetCalls()
		var mr nitro.MembersResult
		err := f.run(t, f.a.EnsureMembers, nitro.MembersInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup, DrainSeconds: 1,
			Members:  []nitro.Member{{IP: "10.1.2.11", Port: 8443}},
			Previous: []nitro.Member{{IP: "10.1.2.11", Port: 8443}, {IP: "10.1.2.12", Port: 8443, Weight: 2}, {IP: "10.1.2.50", Port: 8443}}}, &mr)
		if err != nil {
			t.Fatal(err)
		}
		want := []nitrofake.Disable{
			{ServiceGroup: f.n.ServiceGroup, ServerName: "10.1.2.12", Port: 8443, Delay: 1, Graceful: "YES"},
			{ServiceGroup: f.n.ServiceGroup, ServerName: "ops-db", Port: 8443, Delay: 1, Graceful: "YES"},
		}
		if d := cmp.Diff(want, f.s.Disabled()); d != "" {
			t.Errorf("disables (-want +got):\n%s", d)
		}
		var order []string
		for _, c := range f.s.Calls() {
			if c.Mutating() {
				order = append(order, c.Method+" "+strings.TrimPrefix(c.Path, "/nitro/v1/config/"))
			}
		}
		if len(order) == 0 || !strings.HasPrefix(order[0], "POST servicegroup") {
			t.Errorf("members unbound before they were disabled: %v", order)
		}
		servers := f.s.Objects("server")
		if _, ok := servers["10.1.2.12"]; ok {
			t.Error("the server NetScaler made for our removed member is left")
		}
		if _, ok := servers["ops-db"]; !ok {
			t.Error("someone else's server was removed")
		}
	})
	t.Run("LB feature disabled", func(t *testing.T) {
		f := newFixture(t, nitrofake.Options{LBDisabled: true})
		err := f.run(t, f.a.EnsureLBVServer, nitro.LBVServerInput{Target: f.t, Owner: owner, Name: f.n.VServer, ServiceType: "TCP", VIP: "203.0.113.10", Port: 443}, nil)
		if typ, retry := errKind(t, err); typ != nitro.ErrTypeUnsupported || retry || !strings.Contains(err.Error(), "enable ns feature LB") {
			t.Errorf("%s retryable=%v: %v", typ, retry, err)
		}
		if n := len(f.s.Objects("lbvserver")); n != 0 {
			t.Errorf("%d vservers made with LB disabled", n)
		}
	})
	t.Run("partition", func(t *testing.T) {
		f := newFixture(t, nitrofake.Options{Partitions: []string{"tenant7"}})
		tgt := f.t
		tgt.Partition = "tenant7"
		var r nitro.Result
		if err := f.run(t, f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: tgt, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}, &r); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.s.Partition("tenant7").Objects["servicegroup"][f.n.ServiceGroup]; !ok {
			t.Error("not made in the partition")
		}
		if n := len(f.s.Objects("servicegroup")); n != 0 {
			t.Error("made in the default partition")
		}
		if n := f.s.Sessions(); n != 0 {
			t.Errorf("%d sessions left open", n)
		}
	})
	t.Run("not permitted", func(t *testing.T) {
		f := newFixture(t, nitrofake.Options{})
		f.s.FailNext("POST", "/nitro/v1/config/servicegroup", 2138)
		err := f.run(t, f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}, nil)
		if typ, retry := errKind(t, err); typ != nitro.ErrTypeNotPermitted || retry {
			t.Errorf("%s retryable=%v: %v", typ, retry, err)
		}
		if n := f.s.Sessions(); n != 0 {
			t.Errorf("%d sessions left open after a failure", n)
		}
	})
}
