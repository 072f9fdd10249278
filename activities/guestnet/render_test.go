package guestnet

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities/remote"
)

// The NetworkManager keyfile is checked here only: the lab has no running
// NetworkManager to load it.
func TestRenderNetworkManager(t *testing.T) {
	p, err := ConfigureInput{
		Target: remote.Target{Addr: "192.0.2.1:22"}, MAC: "52:54:00:51:00:0a", Address: "10.51.0.10/24", Gateway: "10.51.0.1",
		CIDRs: []string{"10.52.0.0/24", "10.53.0.7/32"}, PolicyRouting: true, Table: 100,
	}.plan()
	if err != nil {
		t.Fatal(err)
	}
	files := render(MechNetworkManager, "/etc", "eth1", p)
	got := files[0]
	head := "# Written by rackflow for the NIC with MAC 52:54:00:51:00:0a: routes to the security area.\n# No gateway and no default route here: the default route stays on the primary NIC.\n# rackflow owns this file: configuration management must leave it alone.\n"
	want := head + `[connection]
id=rackflow-52540051000a
uuid=` + got.content[len(head+"[connection]\nid=rackflow-52540051000a\nuuid="):][:36] + `
type=ethernet
autoconnect=true
autoconnect-priority=100

[ethernet]
mac-address=52:54:00:51:00:0A

[ipv4]
method=manual
address1=10.51.0.10/24
never-default=true
ignore-auto-routes=true
route1=10.52.0.0/24,10.51.0.1
route1_options=table=100
route2=10.53.0.7/32,10.51.0.1
route2_options=table=100
routing-rule1=priority 1000 from 10.51.0.10/32 table 100
routing-rule2=priority 1000 to 10.52.0.0/24 table 100
routing-rule3=priority 1000 to 10.53.0.7/32 table 100

[ipv6]
method=ignore
`
	if diff := cmp.Diff(want, got.content); diff != "" {
		t.Errorf("keyfile (-want +got):\n%s", diff)
	}
	if got.path != "/etc/NetworkManager/system-connections/rackflow-52540051000a.nmconnection" || got.mode != "600" {
		t.Errorf("path %s mode %s", got.path, got.mode)
	}
	if len(files) != 2 || files[1].path != "/etc/sysctl.d/90-rackflow-52540051000a.conf" || files[1].content != head+"net/ipv4/conf/eth1/rp_filter = 2\n" {
		t.Errorf("sysctl.d file: %+v", files[1:])
	}
	// The UUID is stable per MAC, so a re-run writes the same file.
	if again := render(MechNetworkManager, "/etc", "eth1", p); again[0].content != got.content {
		t.Error("keyfile differs between two renders")
	}
}
