package nitro

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/api"
)

// HostMembersInput asks one NetScaler where a host's addresses are
// servicegroup members.
type HostMembersInput struct {
	Target    Target   `json:"target"`
	Addresses []string `json:"addresses"`
}

// FindHostMembers lists every servicegroup member whose server has one of
// the addresses, whatever the server is called: GET server?filter=
// ipaddress:<ip>, GET server_servicegroup_binding/<server>, then each
// servicegroup's comment (whose it is: Owner from rackflow's marker, or
// the Comment of anyone else's) and member rows (the ports). It changes
// nothing; a host that is no member anywhere is an empty list. The caller
// names the NetScaler in the rows.
func (a *Activities) FindHostMembers(ctx context.Context, in HostMembersInput) ([]api.VIPMember, error) {
	errs := []error{checkTarget(in.Target)}
	if len(in.Addresses) == 0 {
		errs = append(errs, fmt.Errorf("addresses: at least one is required"))
	}
	for i, ip := range in.Addresses {
		errs = append(errs, checkIP(fmt.Sprintf("addresses[%d]", i), ip, false))
	}
	if err := validate(errs...); err != nil {
		return nil, err
	}
	var out []api.VIPMember
	err := a.with(ctx, in.Target, func(c API) error {
		for _, ip := range in.Addresses {
			var servers []server
			if err := c.List(ctx, server{}.ResourceType(), &servers, nitroclient.Arg{Key: "ipaddress", Value: ip}); err != nil {
				return classify(op(opRead, "server?filter=ipaddress:"+ip), err)
			}
			for _, s := range servers {
				ms, err := serverMembers(ctx, c, s)
				if err != nil {
					return err
				}
				out = append(out, ms...)
			}
		}
		return nil
	})
	slices.SortFunc(out, func(x, y api.VIPMember) int {
		return strings.Compare(fmt.Sprintf("%s %s %05d", x.ServiceGroup, x.IP, x.Port), fmt.Sprintf("%s %s %05d", y.ServiceGroup, y.IP, y.Port))
	})
	return out, err
}

// serverMembers lists the servicegroup members that are server s.
func serverMembers(ctx context.Context, c API, s server) ([]api.VIPMember, error) {
	uses, err := nitroclient.Bindings[serverUse](ctx, c, s.Name)
	if nitroclient.IsNotFound(err) {
		return nil, nil // removed meanwhile
	}
	if err != nil {
		return nil, classify(op(opRead, "server_servicegroup_binding/"+s.Name), err)
	}
	var out []api.VIPMember
	seen := map[string]bool{}
	for _, u := range uses {
		if seen[u.ServiceGroup] {
			continue // one row per port
		}
		seen[u.ServiceGroup] = true
		sg, err := nitroclient.Get[nitroclient.ServiceGroup](ctx, c, u.ServiceGroup)
		if nitroclient.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, classify(op(opRead, "servicegroup/"+u.ServiceGroup), err)
		}
		rows, err := nitroclient.Bindings[nitroclient.ServiceGroupMember](ctx, c, u.ServiceGroup)
		if err != nil && !nitroclient.IsNotFound(err) {
			return nil, classify(op(opRead, "members of servicegroup/"+u.ServiceGroup), err)
		}
		owner, comment := "", sg.Comment
		if o, ours := strings.CutPrefix(sg.Comment, MarkerPrefix); ours {
			owner, comment = o, ""
		}
		for _, r := range rows {
			if r.ServerName != s.Name && normIP(r.IP) != normIP(s.IPAddress) {
				continue
			}
			out = append(out, api.VIPMember{ServiceGroup: u.ServiceGroup, Owner: owner, Comment: comment, Server: s.Name,
				IP: normIP(r.IP), Port: int(r.Port)})
		}
	}
	return out, nil
}
