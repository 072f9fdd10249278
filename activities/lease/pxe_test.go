package lease_test

import (
	"context"
	"net"
	"testing"

	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/client"
)

// testMAC is the host the tests register: node07 at 127.0.0.7.
const testMAC = "52:54:00:00:07:07"

// pxeRig is the real pxe service on loopback with node07's live lease
// registered through the activities under test.
type pxeRig struct {
	base string // the service's URL
	act  *testsuite.TestActivityEnvironment
	reg  lease.RegisterResult
}

// startPXE serves pxe on loopback, points a's PXE client at it and
// registers node07 (boot ID b1) through a.RegisterLease.
func startPXE(t *testing.T, a *lease.Activities) *pxeRig {
	t.Helper()
	store, err := pxe.OpenStore(pxe.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &pxeRig{base: "http://" + ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go (&pxe.APIServer{Listener: ln, Token: "t0ken", Store: store, PublicURL: r.base}).Serve(ctx)
	if a.PXE, err = client.New(r.base, "t0ken", client.Options{}); err != nil {
		t.Fatal(err)
	}
	var env testsuite.WorkflowTestSuite
	r.act = env.NewTestActivityEnvironment()
	r.act.RegisterActivity(a)
	v, err := r.act.ExecuteActivity(a.RegisterLease, lease.RegisterInput{Host: "node07", MAC: testMAC, Profile: "live", BootID: "b1",
		Network: api.Network{IP: "127.0.0.7", Netmask: "255.0.0.0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Get(&r.reg); err != nil {
		t.Fatal(err)
	}
	return r
}
