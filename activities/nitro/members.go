package nitro

import (
	"context"
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
