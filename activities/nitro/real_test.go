package nitro_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/secrets"
)

// TestRealNetScaler publishes and unpublishes a service on a real NetScaler.
// It runs only when NITRO_URL, NITRO_USER and NITRO_PASS are set, e.g. a
// lab VPX. Optional: NITRO_CA (path to a PEM CA), NITRO_INSECURE=1 (skip TLS
// verification), NITRO_AUTH=header, NITRO_VIP (default 203.0.113.250, a
// documentation address: only configuration is written, no traffic is sent),
// NITRO_SAVE=1 to also save the configuration (off by default, so the test
// leaves nothing persisted). Every object it creates is removed at the end,
// also when the test fails.
func TestRealNetScaler(t *testing.T) {
	url, user, pass := os.Getenv("NITRO_URL"), os.Getenv("NITRO_USER"), os.Getenv("NITRO_PASS")
	if url == "" || user == "" || pass == "" {
		t.Skip("set NITRO_URL, NITRO_USER and NITRO_PASS to run against a real NetScaler")
	}
	tgt := nitro.Target{URL: url, Credential: "real", Insecure: os.Getenv("NITRO_INSECURE") == "1", Auth: os.Getenv("NITRO_AUTH")}
	if p := os.Getenv("NITRO_CA"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tgt.CA = string(b)
	}
	vip := os.Getenv("NITRO_VIP")
	if vip == "" {
		vip = "203.0.113.250"
	}
	owner := fmt.Sprintf("rackflow-test/%d", time.Now().Unix())
	n := nitro.Names(owner)
	a := &nitro.Activities{Secrets: secrets.Static{"real": {Username: user, Password: pass, Endpoints: []string{url}}}}
	direct, err := nitroclient.New(nitroclient.Config{URL: url, Username: user, Password: pass, CAPEM: []byte(tgt.CA),
		InsecureSkipVerifyDANGEROUS: tgt.Insecure, Auth: nitroclient.AuthMode(tgt.Auth)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Close(context.Background()) })
	// Binding a member makes NetScaler create a "server" object named after
	// the IP; remove those we caused, never one that existed before.
	backends := []string{"192.0.2.11", "192.0.2.12"}
	preexisting := map[string]bool{}
	for _, ip := range backends {
		var rows []map[string]any
		err := direct.Get(context.Background(), "server", ip, &rows)
		if err != nil && !nitroclient.IsNotFound(err) {
			t.Fatalf("read server %s: %v", ip, err)
		}
		preexisting[ip] = err == nil
	}
	env := newEnvFor(t, a)
	run := func(fn, in any) {
		t.Helper()
		if _, err := env.ExecuteActivity(fn, in); err != nil {
			t.Fatalf("%T: %v", in, err)
		}
	}
	t.Cleanup(func() {
		// Reverse order; every delete is idempotent and owner-checked.
		for _, st := range []struct{ fn, in any }{
			{a.DeleteVServerBinding, nitro.VServerBindingInput{Target: tgt, Owner: owner, VServer: n.VServer, ServiceGroup: n.ServiceGroup}},
			{a.DeleteLBVServer, nitro.DeleteInput{Target: tgt, Owner: owner, Name: n.VServer}},
			{a.DeleteMonitorBinding, nitro.MonitorBindingInput{Target: tgt, Owner: owner, ServiceGroup: n.ServiceGroup, Monitor: "tcp"}},
			{a.DeleteServiceGroup, nitro.DeleteInput{Target: tgt, Owner: owner, Name: n.ServiceGroup}},
		} {
			if _, err := env.ExecuteActivity(st.fn, st.in); err != nil {
				t.Errorf("cleanup %T: %v", st.in, err)
			}
		}
		ctx := context.Background()
		for _, ip := range backends {
			if !preexisting[ip] {
				if err := direct.Delete(ctx, "server", ip); err != nil && !nitroclient.IsNotFound(err) {
					t.Errorf("cleanup server %s: %v", ip, err)
				}
			}
		}
		if _, err := nitroclient.Get[nitroclient.LBVServer](ctx, direct, n.VServer); !nitroclient.IsNotFound(err) {
			t.Errorf("vserver %s still there after cleanup: %v", n.VServer, err)
		}
		if _, err := nitroclient.Get[nitroclient.ServiceGroup](ctx, direct, n.ServiceGroup); !nitroclient.IsNotFound(err) {
			t.Errorf("servicegroup %s still there after cleanup: %v", n.ServiceGroup, err)
		}
	})
	for round := 0; round < 2; round++ {
		run(a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: tgt, Owner: owner, Name: n.ServiceGroup, ServiceType: "TCP"})
		run(a.EnsureMembers, nitro.MembersInput{Target: tgt, Owner: owner, ServiceGroup: n.ServiceGroup,
			Members: []nitro.Member{{IP: backends[0], Port: 8443}, {IP: backends[1], Port: 8443}}})
		run(a.EnsureMonitorBinding, nitro.MonitorBindingInput{Target: tgt, Owner: owner, ServiceGroup: n.ServiceGroup, Monitor: "tcp"})
		run(a.EnsureLBVServer, nitro.LBVServerInput{Target: tgt, Owner: owner, Name: n.VServer, ServiceType: "TCP", VIP: vip, Port: 443})
		run(a.EnsureVServerBinding, nitro.VServerBindingInput{Target: tgt, Owner: owner, VServer: n.VServer, ServiceGroup: n.ServiceGroup})
	}
	if os.Getenv("NITRO_SAVE") == "1" {
		run(a.SaveConfig, nitro.SaveInput{Target: tgt})
	}
}
