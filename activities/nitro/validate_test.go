package nitro_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// TestLBMethodsAgreeWithNITRO holds rackflow's one list of LB methods
// (api.LBMethods) to NITRO's lbvserver reference as the fake encodes it:
// the lists are equal, every method rackflow accepts ends up on the device,
// and a near miss is refused by rackflow before any call and by the device.
func TestLBMethodsAgreeWithNITRO(t *testing.T) {
	if diff := cmp.Diff(sorted(nitrofake.Values("lbvserver", "lbmethod")), sorted(api.LBMethods)); diff != "" {
		t.Errorf("api.LBMethods differs from NITRO's lbvserver lbmethod values (-NITRO +rackflow):\n%s", diff)
	}

	f := newFixture(t, nitrofake.Options{})
	for i, m := range api.LBMethods {
		t.Run(m, func(t *testing.T) {
			in := nitro.LBVServerInput{Target: f.t, Owner: owner, Name: "vs_" + strings.ToLower(m), ServiceType: "TCP",
				VIP: "203.0.113.10", Port: 1000 + i, LBMethod: m}
			if err := f.run(t, f.a.EnsureLBVServer, in, nil); err != nil {
				t.Fatalf("EnsureLBVServer: %v", err)
			}
			if got := f.s.Objects("lbvserver")[in.Name]["lbmethod"]; got != m {
				t.Errorf("device holds lbmethod %v, want %s", got, m)
			}
		})
	}

	raw, err := nitroclient.New(nitroclient.Config{URL: f.s.URL(), Username: f.s.Username(), Password: f.s.Password(), Auth: nitroclient.AuthHeader})
	if err != nil {
		t.Fatal(err)
	}
	nearMisses := map[string]string{
		"underscored":        "ROUND_ROBIN",
		"lower case":         "leastconnection",
		"GSLB-only method":   "RTT",
		"not a NITRO method": "FASTEST",
		"surrounding spaces": " ROUNDROBIN ",
		"plural":             "LEASTCONNECTIONS",
	}
	for name, m := range nearMisses {
		t.Run(name, func(t *testing.T) {
			pub := api.PublishInput{Name: "web", VIP: "203.0.113.10", Port: 443, Protocol: "TCP", LBMethod: m,
				Backends: []api.Backend{{IP: "10.0.0.1", Port: 80}}, NetScaler: api.NetScaler{URL: f.t.URL, Credential: credRef}}
			if err := pub.Validate(); err == nil || !strings.Contains(err.Error(), "lb_method") {
				t.Errorf("PublishInput.Validate: %v, want an lb_method error", err)
			}

			f.s.ResetCalls()
			in := nitro.LBVServerInput{Target: f.t, Owner: owner, Name: "vs_miss", ServiceType: "TCP", VIP: "203.0.113.11", Port: 443, LBMethod: m}
			err := f.run(t, f.a.EnsureLBVServer, in, nil)
			if typ, _ := errKind(t, err); typ != activities.ErrInvalidInput || !strings.Contains(err.Error(), "lb_method") {
				t.Errorf("EnsureLBVServer: %v, want %s naming lb_method", err, activities.ErrInvalidInput)
			}
			if calls := f.s.Calls(); len(calls) != 0 {
				t.Errorf("refused input reached the device: %v", calls)
			}

			err = raw.Add(context.Background(), nitroclient.LBVServer{Name: "vs_miss", ServiceType: "TCP", IPv46: "203.0.113.11", Port: 443, LBMethod: m})
			if !errors.Is(err, nitroclient.ErrInvalidArgument) {
				t.Errorf("the device accepted lbmethod %q: %v", m, err)
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
