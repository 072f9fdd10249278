package nitro

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
)

// An RNAT rule covers a subnet, and NetScaler holds one rule per subnet
// (774 for a second): publications whose backends share a subnet share its
// rule. The rule is named after the subnet (RNATName), and who uses it is
// kept beside it, since an rnat has no comment: a policy patset of the same
// name holds one pattern per user, that user's Marker. The last user to
// leave removes rule and patset; nobody removes a rule another still uses.

// rnatPrefix starts the name of every shared RNAT rule (and its patset).
const rnatPrefix = "rf_rnat_"

// RNATName is the name of the shared rule for network/netmask, e.g.
// rf_rnat_10.0.1.0_24. It is deterministic (workflow code may call it).
func RNATName(network, netmask string) string {
	bits := 0
	if m, err := netip.ParseAddr(netmask); err == nil && m.Is4() {
		b := m.As4()
		for _, x := range b {
			for ; x != 0; x <<= 1 {
				bits += int(x >> 7)
			}
		}
	}
	return fmt.Sprintf("%s%s_%d", rnatPrefix, network, bits)
}

// rnatUsers is the patset that counts a shared rule's users.
type rnatUsers struct {
	Name    string `json:"name"`
	Comment string `json:"comment,omitempty"`
}

func (rnatUsers) ResourceType() string { return "policypatset" }

// rnatUser is one user of a shared rule: String is its Marker.
type rnatUser struct {
	Name   string `json:"name"`
	String string `json:"String,omitempty"`
}

func (rnatUser) ResourceType() string { return "policypatset_pattern_binding" }

// RNATMinRelease is the first release with named RNAT rules and
// rnat_nsip_binding.
const RNATMinMajor, RNATMinMinor = 12, 1

func requireNamedRNAT(ctx context.Context, c API) (bool, string, error) {
	ok, rel, err := releaseAtLeast(ctx, c, RNATMinMajor, RNATMinMinor)
	if err != nil {
		return false, rel, classifyKeep(op(opRead, "nsversion"), err)
	}
	return ok, rel, nil
}

// EnsureRNAT makes owner a user of the shared RNAT rule for
// Network/Netmask: it records the use, creates the rule if it is missing
// and binds NATIP if the rule has no NAT IP yet. A rule for the subnet
// that sends through another NAT IP, or one not made by rackflow, is a
// conflict. Before 12.1 (no named RNAT) it refuses. in.Name is ignored:
// the rule is named after the subnet (RNATName).
func (a *Activities) EnsureRNAT(ctx context.Context, in RNATInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner),
		checkIP("network", in.Network, true), checkNetmask("netmask", in.Netmask), checkIP("nat_ip", in.NATIP, false)); err != nil {
		return Result{}, err
	}
	name := RNATName(in.Network, in.Netmask)
	res := Result{Object: "rnat/" + name}
	err := a.with(ctx, in.Target, func(c API) error {
		ok, rel, err := requireNamedRNAT(ctx, c)
		if err != nil {
			return err
		}
		if !ok {
			return temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("this NetScaler runs %s: named RNAT rules (and rnat_nsip_binding) exist from %d.%d; upgrade it or publish without rnat", rel, RNATMinMajor, RNATMinMinor),
				ErrTypeUnsupported, nil)
		}
		if err := requireNSIP(ctx, c, "nat_ip", in.NATIP); err != nil {
			return err
		}
		// A rule for the subnet that sends elsewhere is refused before
		// this owner is recorded as a user of it.
		if err := checkNATIPs(ctx, c, name, in.NATIP); err != nil {
			return err
		}
		// The use first: a rule is never without the user that made it,
		// so a concurrent last user leaving cannot remove it under us.
		ures, err := ensureIn(ctx, c, in.Target, rnatUsers{Name: name, Comment: "rackflow: users of rnat " + name}, func(rnatUsers) []string { return nil })
		if err != nil {
			return err
		}
		mres, err := bindOnce(ctx, c, rnatUser{Name: name, String: Marker(in.Owner)},
			func(r rnatUser) bool { return r.String == Marker(in.Owner) }, name+"/"+Marker(in.Owner))
		if err != nil {
			return err
		}
		want := nitroclient.RNAT{Name: name, Network: in.Network, Netmask: in.Netmask}
		rres, err := ensureIn(ctx, c, in.Target, want, func(have nitroclient.RNAT) []string {
			return diff(field("network", normIP(have.Network), normIP(want.Network)),
				field("netmask", normIP(have.Netmask), normIP(want.Netmask)))
		})
		if err != nil {
			return err
		}
		ips, err := nitroclient.Bindings[nitroclient.RNATNSIPBinding](ctx, c, name)
		if err != nil {
			return classify(op(opRead, "rnat_nsip_binding/"+name), err)
		}
		var have []string
		for _, b := range ips {
			have = append(have, normIP(b.NATIP))
		}
		bound := false
		switch {
		case len(have) == 0:
			progress(ctx, opBind, "rnat_nsip_binding/"+name+"/"+in.NATIP)
			if err := c.Bind(ctx, nitroclient.RNATNSIPBinding{Name: name, NATIP: in.NATIP}); err != nil && !nitroclient.IsExists(err) {
				return classify(op(opBind, "rnat_nsip_binding/"+name), err)
			}
			bound = true
		case len(have) != 1 || have[0] != normIP(in.NATIP):
			return conflict(res.Object, []string{fmt.Sprintf("the subnet's shared rule sends through %s; this publication asks for %s", strings.Join(have, ", "), in.NATIP)})
		}
		res.Changed = ures.Changed || mres.Changed || rres.Changed || bound
		return nil
	})
	return res, err
}

// DeleteRNAT ends owner's use of the shared RNAT rule it uses, and removes
// the rule (and its NAT IP bindings) when no other publication uses it.
// A publication without RNAT changes nothing, and before 12.1 there is no
// named rule to look for. in.Name, the owner's own name of old (a rule
// per publication), is still removed if such a rule exists.
func (a *Activities) DeleteRNAT(ctx context.Context, in DeleteInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkOwnedName("name", in.Name, in.Owner)); err != nil {
		return Result{}, err
	}
	res := Result{Object: "rnat/" + in.Name}
	err := a.with(ctx, in.Target, func(c API) error {
		ok, rel, err := requireNamedRNAT(ctx, c)
		if err != nil {
			return err
		}
		if !ok {
			res.Skipped = "no named RNAT before 12.1 (this NetScaler runs " + rel + ")"
			return nil
		}
		// A rule of this owner's own (made before rules were shared).
		if _, err := nitroclient.Get[nitroclient.RNAT](ctx, c, in.Name); err == nil {
			progress(ctx, opDelete, res.Object)
			if err := c.Delete(ctx, "rnat", in.Name); err != nil && !nitroclient.IsNotFound(err) {
				return classify(op(opDelete, res.Object), err)
			}
			res.Changed = true
		} else if !nitroclient.IsNotFound(err) {
			return classify(op(opRead, res.Object), err)
		}
		var sets []rnatUsers
		if err := c.List(ctx, rnatUsers{}.ResourceType(), &sets); err != nil {
			return classify(op(opRead, "policypatset"), err)
		}
		for _, set := range sets {
			if !strings.HasPrefix(set.Name, rnatPrefix) {
				continue
			}
			changed, err := leaveRNAT(ctx, c, set.Name, in.Owner)
			if err != nil {
				return err
			}
			if changed {
				res.Object, res.Changed = "rnat/"+set.Name, true
			}
		}
		return nil
	})
	return res, err
}

// leaveRNAT removes owner from the users of the shared rule name and, if
// none is left, the rule and the patset.
func leaveRNAT(ctx context.Context, c API, name, owner string) (bool, error) {
	users, err := nitroclient.Bindings[rnatUser](ctx, c, name)
	if nitroclient.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, classify(op(opRead, "users of rnat/"+name), err)
	}
	mine, others := false, 0
	for _, u := range users {
		if u.String == Marker(owner) {
			mine = true
		} else {
			others++
		}
	}
	if !mine {
		return false, nil
	}
	obj := "policypatset_pattern_binding/" + name + "/" + Marker(owner)
	progress(ctx, opUnbind, obj)
	if err := c.Delete(ctx, rnatUser{}.ResourceType(), name, nitroclient.Arg{Key: "String", Value: Marker(owner)}); err != nil && !nitroclient.IsNotFound(err) {
		return false, classify(op(opUnbind, obj), err)
	}
	if others > 0 {
		activity.GetLogger(ctx).Info("nitro rnat kept: other publications use it", "rnat", name, "users", others)
		return true, nil
	}
	progress(ctx, opDelete, "rnat/"+name)
	if err := c.Delete(ctx, "rnat", name); err != nil && !nitroclient.IsNotFound(err) {
		return true, classify(op(opDelete, "rnat/"+name), err)
	}
	progress(ctx, opDelete, "policypatset/"+name)
	if err := c.Delete(ctx, rnatUsers{}.ResourceType(), name); err != nil && !nitroclient.IsNotFound(err) {
		return true, classify(op(opDelete, "policypatset/"+name), err)
	}
	activity.GetLogger(ctx).Info("nitro rnat removed: its last user left", "rnat", name)
	return true, nil
}

// checkNATIPs refuses when the rule exists and sends through another NAT IP
// than natip.
func checkNATIPs(ctx context.Context, c API, name, natip string) error {
	ips, err := nitroclient.Bindings[nitroclient.RNATNSIPBinding](ctx, c, name)
	if nitroclient.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return classify(op(opRead, "rnat_nsip_binding/"+name), err)
	}
	var have []string
	for _, b := range ips {
		have = append(have, normIP(b.NATIP))
	}
	if len(have) == 0 || (len(have) == 1 && have[0] == normIP(natip)) {
		return nil
	}
	return conflict("rnat/"+name, []string{fmt.Sprintf("the subnet's shared rule sends through %s; this publication asks for %s", strings.Join(have, ", "), natip)})
}
