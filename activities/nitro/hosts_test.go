package nitro_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// TestFindHostMembers: the host's address is found as a member of our
// servicegroup (two ports) and of someone else's, where its server has
// another name than the IP; another host's member is not listed; nothing
// changes on the appliance; a host that is no member anywhere is an empty
// list.
func TestFindHostMembers(t *testing.T) {
	f := newFixture(t, nitrofake.Options{TLS: true})
	const host, other = "10.0.5.7", "10.0.5.8"
	if err := f.run(t, f.a.EnsureServiceGroup, nitro.ServiceGroupInput{Target: f.t, Owner: owner, Name: f.n.ServiceGroup, ServiceType: "TCP"}, nil); err != nil {
		t.Fatal(err)
	}
	in := nitro.MembersInput{Target: f.t, Owner: owner, ServiceGroup: f.n.ServiceGroup,
		Members: []nitro.Member{{IP: host, Port: 443}, {IP: host, Port: 8443, Weight: 3}, {IP: other, Port: 443}}}
	if err := f.run(t, f.a.EnsureMembers, in, nil); err != nil {
		t.Fatal(err)
	}
	// Someone else's servicegroup, whose server for the host is "web07".
	for _, seed := range []struct {
		typ string
		obj map[string]any
	}{
		{"server", map[string]any{"name": "web07", "ipaddress": "10.0.5.9"}},
		{"servicegroup", map[string]any{"servicegroupname": "team_x_sg", "servicetype": "HTTP", "comment": "team-x"}},
		{"servicegroup_servicegroupmember_binding", map[string]any{"servicegroupname": "team_x_sg", "ip": "10.0.5.9", "port": 80}},
	} {
		if err := f.s.Seed(seed.typ, seed.obj); err != nil {
			t.Fatal(err)
		}
	}
	before := f.s.Running()
	var got []api.VIPMember
	if err := f.run(t, f.a.FindHostMembers, nitro.HostMembersInput{Target: f.t, Addresses: []string{host, "10.0.5.9"}}, &got); err != nil {
		t.Fatal(err)
	}
	want := []api.VIPMember{
		{ServiceGroup: f.n.ServiceGroup, Owner: owner, Server: host, IP: host, Port: 443},
		{ServiceGroup: f.n.ServiceGroup, Owner: owner, Server: host, IP: host, Port: 8443},
		{ServiceGroup: "team_x_sg", Comment: "team-x", Server: "web07", IP: "10.0.5.9", Port: 80},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("members (-want +got):\n%s", d)
	}
	if d := cmp.Diff(before, f.s.Running()); d != "" {
		t.Errorf("FindHostMembers changed the configuration:\n%s", d)
	}
	got = nil
	if err := f.run(t, f.a.FindHostMembers, nitro.HostMembersInput{Target: f.t, Addresses: []string{"10.9.9.9"}}, &got); err != nil || len(got) != 0 {
		t.Errorf("a host that is no member: %v, %v", got, err)
	}
	if err := f.run(t, f.a.FindHostMembers, nitro.HostMembersInput{Target: f.t}, nil); err == nil {
		t.Error("no addresses: want InvalidInput")
	}
}
