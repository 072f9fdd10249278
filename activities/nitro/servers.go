package nitro

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
)

// Binding a member by IP makes NetScaler create a "server" object named
// after the IP (unless a server with that address exists). rackflow marks
// the servers it caused with the owner's Marker and removes them once no
// servicegroup uses them; a server someone else made is never touched.

// server is a NetScaler "server" object.
type server struct {
	Name      string `json:"name"`
	IPAddress string `json:"ipaddress,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

func (server) ResourceType() string { return "server" }

// serverUse is a row of server_servicegroup_binding: a servicegroup the
// server is a member of.
type serverUse struct {
	Name         string `json:"name"`
	ServiceGroup string `json:"servicegroupname"`
}

func (serverUse) ResourceType() string { return "server_servicegroup_binding" }

// memberDisable is the body of servicegroup?action=disable for one member.
type memberDisable struct {
	ServiceGroup string          `json:"servicegroupname"`
	ServerName   string          `json:"servername"`
	Port         nitroclient.Int `json:"port"`
	Delay        nitroclient.Int `json:"delay,omitempty"`
	Graceful     string          `json:"graceful,omitempty"`
}

func (memberDisable) ResourceType() string { return "servicegroup" }

// bindMember binds m and, when the binding made the server, marks it ours.
func bindMember(ctx context.Context, c API, sg, owner string, m Member) error {
	k := memberKey(m.IP, nitroclient.Int(m.Port))
	obj := "servicegroup_servicegroupmember_binding/" + sg + "/" + k
	_, err := nitroclient.Get[server](ctx, c, m.IP)
	existed := err == nil
	if err != nil && !nitroclient.IsNotFound(err) {
		return classify(op(opRead, "server/"+m.IP), err)
	}
	progress(ctx, opBind, obj)
	err = c.Bind(ctx, nitroclient.ServiceGroupMember{ServiceGroup: sg, IP: m.IP, Port: nitroclient.Int(m.Port), Weight: nitroclient.Int(m.Weight)})
	if err != nil && !nitroclient.IsExists(err) {
		return classify(op(opBind, obj), err)
	}
	if existed {
		return nil
	}
	// NetScaler named the new server after the IP, or used one of another
	// name with that address (then there is nothing of ours to mark).
	if err := c.Update(ctx, server{Name: m.IP, Comment: Marker(owner)}); err != nil && !nitroclient.IsNotFound(err) {
		return classify("mark server/"+m.IP, err)
	}
	return nil
}

// drain disables the members with delay seconds of grace, waits it out
// (heartbeating) and returns; the caller unbinds them then.
func drain(ctx context.Context, c API, sg string, ms []nitroclient.ServiceGroupMember, delay int) error {
	if delay <= 0 || len(ms) == 0 {
		return nil
	}
	for _, m := range ms {
		obj := fmt.Sprintf("servicegroup/%s/%s", sg, memberKey(m.IP, m.Port))
		progress(ctx, "disable", obj)
		err := c.Action(ctx, "disable", memberDisable{ServiceGroup: sg, ServerName: m.ServerName, Port: m.Port, Delay: nitroclient.Int(delay), Graceful: "YES"})
		if err != nil && !nitroclient.IsNotFound(err) {
			return classify(op("disable", obj), err)
		}
	}
	activity.GetLogger(ctx).Info("nitro members draining", "servicegroup", sg, "members", len(ms), "seconds", delay)
	t := time.NewTimer(time.Duration(delay) * time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// removeServerIfOurs removes the server if owner marked it and no
// servicegroup uses it any more.
func removeServerIfOurs(ctx context.Context, c API, name, owner string) error {
	if name == "" {
		return nil
	}
	s, err := nitroclient.Get[server](ctx, c, name)
	if nitroclient.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return classify(op(opRead, "server/"+name), err)
	}
	if s.Comment != Marker(owner) {
		return nil
	}
	uses, err := nitroclient.Bindings[serverUse](ctx, c, name)
	if err != nil && !nitroclient.IsNotFound(err) {
		return classify(op(opRead, "server_servicegroup_binding/"+name), err)
	}
	if len(uses) > 0 {
		return nil
	}
	progress(ctx, opDelete, "server/"+name)
	if err := c.Delete(ctx, "server", name); err != nil && !nitroclient.IsNotFound(err) {
		return classify(op(opDelete, "server/"+name), err)
	}
	activity.GetLogger(ctx).Info("nitro server removed", "server", name)
	return nil
}

// removeOurServers removes every server owner marked that no servicegroup
// uses any more.
func removeOurServers(ctx context.Context, c API, owner string) error {
	var all []server
	if err := c.List(ctx, server{}.ResourceType(), &all); err != nil {
		return classify(op(opRead, "server"), err)
	}
	for _, s := range all {
		if s.Comment == Marker(owner) {
			if err := removeServerIfOurs(ctx, c, s.Name, owner); err != nil {
				return err
			}
		}
	}
	return nil
}
