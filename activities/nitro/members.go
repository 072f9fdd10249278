package nitro

import (
	"context"
	"time"

	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
)

// ListMembersInput names one of our servicegroups.
type ListMembersInput struct {
	Target       Target `json:"target"`
	Owner        string `json:"owner"`
	ServiceGroup string `json:"service_group"`
}

// ListMembers returns the members bound to one of our servicegroups, so a
// backend update knows what to replace. A servicegroup that is not ours is
// refused with NitroConflict.
func (a *Activities) ListMembers(ctx context.Context, in ListMembersInput) ([]Member, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("service_group", in.ServiceGroup)); err != nil {
		return nil, err
	}
	var out []Member
	err := a.with(ctx, in.Target, func(c API) error {
		rows, err := readMembers(ctx, c, in.ServiceGroup, in.Owner)
		if err != nil {
			return err
		}
		for _, r := range rows {
			out = append(out, Member{IP: r.IP, Port: int(r.Port), Weight: int(r.Weight)})
		}
		return nil
	})
	return out, err
}

// VServerStateInput names one of our lbvservers.
type VServerStateInput struct {
	Target Target `json:"target"`
	Owner  string `json:"owner"`
	Name   string `json:"name"`
	// WaitSeconds is how long to wait for UP: a monitor needs a few
	// probes before the first member counts. 0 reads once.
	WaitSeconds int `json:"wait_seconds,omitempty"`
}

// VServerState returns the lbvserver's curstate (UP, DOWN, OUT OF SERVICE),
// reading it until it is UP or WaitSeconds have passed, so a publication
// whose backends do not answer is reported as such and not as a success.
func (a *Activities) VServerState(ctx context.Context, in VServerStateInput) (string, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("name", in.Name)); err != nil {
		return "", err
	}
	deadline := time.Now().Add(time.Duration(in.WaitSeconds) * time.Second)
	var state string
	err := a.with(ctx, in.Target, func(c API) error {
		for {
			vs, err := nitroclient.Get[nitroclient.LBVServer](ctx, c, in.Name)
			if err != nil {
				return classify(op(opRead, "lbvserver/"+in.Name), err)
			}
			if d := diff(owned(vs.Comment, in.Owner)); len(d) > 0 {
				return conflict("lbvserver/"+in.Name, d)
			}
			state = vs.CurState
			if state == nitroclient.CurStateUp || !time.Now().Before(deadline) {
				return nil
			}
			t := time.NewTimer(min(2*time.Second, time.Until(deadline)))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	})
	return state, err
}
