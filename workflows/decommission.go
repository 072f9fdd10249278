package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

// DecommissionHost retires a bare-metal host: it boots the live system as
// ProvisionHost does (with the same check that the host itself took its
// one-time host key), erases the disk the inventory names (resolving
// root-device hints on the host, as the image write does), proves the
// erase by reading it back, powers the host off and removes its lease.
// The erase report is in the result. Steps park in needs-attention like
// ProvisionHost's, for the same retry, skip (unpublish, power-off) and
// abort Updates; an abort powers the host off and removes its lease.
//
// Unpublishing comes first, before the host is touched: every NetScaler of
// the worker's inventory is asked which servicegroups have a member at the
// host's address. Members of rackflow's servicegroups are drained and
// unbound as UpdateBackends does, and the configuration saved; members of
// servicegroups rackflow does not own stop the run in needs-attention
// unless the input says to leave them. Runs recorded before this step did
// anything only note that it had nothing to do.
func DecommissionHost(ctx workflow.Context, in api.DecommissionInput) (api.DecommissionResult, error) {
	p := &provision{in: api.ProvisionInput{Host: in.Host, Spec: in.Spec, Options: in.Options}, what: "decommissioning"}
	p.status = api.ProvisionStatus{Host: in.Host, State: api.StateRunning}
	for _, s := range api.DecommissionSteps {
		p.status.Steps = append(p.status.Steps, api.StepRecord{Name: s, State: "pending"})
	}
	started := workflow.Now(ctx)
	if err := p.registerHandlers(ctx); err != nil {
		return api.DecommissionResult{}, err
	}
	opts, err := resolveOptions(in.Options)
	if err != nil {
		return api.DecommissionResult{}, activities.InvalidInput(err)
	}
	p.opts = opts

	var leaseRes lease.RegisterResult
	var live remote.WaitResult
	var report api.EraseReport
	var notes []string
	un := &unpublishing{saved: map[string]bool{}}
	steps := []struct {
		name string
		run  func(ctx workflow.Context) error
	}{
		{api.StepValidate, func(ctx workflow.Context) error {
			if err := in.Validate(); err != nil {
				return activities.InvalidInput(err)
			}
			actx := p.activityCtx(ctx, "resolve host "+in.Host, time.Minute, 0, 3)
			if err := workflow.ExecuteActivity(actx, invA.ResolveHost, inventory.ResolveInput{Host: in.Host, Spec: in.Spec}).Get(ctx, &p.host); err != nil {
				return err
			}
			p.status.Host = p.host.Name
			if p.host.Pod != "" {
				// As in ProvisionHost: the rest runs on the pod's worker,
				// which holds the host's credentials and checks them now.
				p.status.Pod, p.status.PodQueue = p.host.Pod, api.PodQueue(workflow.GetInfo(ctx).TaskQueueName, p.host.Pod)
				pctx := p.activityCtx(ctx, "check host "+in.Host+" on pod "+p.host.Pod, time.Minute, 0, 3)
				return workflow.ExecuteActivity(pctx, invA.ResolveHost, inventory.ResolveInput{Host: in.Host, Spec: in.Spec}).Get(ctx, &p.host)
			}
			return nil
		}},
		{api.StepUnpublish, func(ctx workflow.Context) error {
			if workflow.GetVersion(ctx, "decommission-unpublishes", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
				notes = append(notes, "unpublish: the inventory links no VIP to "+p.host.Name+"; nothing was unpublished")
				un.skip = "no VIP linked to the host in the inventory"
				return nil
			}
			return un.run(ctx, p.host, in)
		}},
		{api.StepLease, func(ctx workflow.Context) error {
			return p.registerLease(ctx, "live", &leaseRes)
		}},
		{api.StepPowerPXE, p.powerOnPXE},
		{api.StepWaitLive, func(ctx workflow.Context) error {
			return p.waitLive(ctx, leaseRes.HostKey, &live)
		}},
		{api.StepEraseDisk, func(ctx workflow.Context) error {
			what := "erase " + p.host.Name + ":" + p.host.Target()
			if in.FullOverwrite {
				what += " (full overwrite)"
			}
			actx := p.activityCtx(ctx, what, 24*time.Hour, p.opts.imageHeartbeat, 0)
			return workflow.ExecuteActivity(actx, imageA.EraseDisk, image.EraseInput{
				Host:       p.host.Name,
				Target:     p.liveTarget(leaseRes.HostKey),
				Disk:       p.host.Disk,
				RootDevice: p.host.RootDevice,
				Full:       in.FullOverwrite,
			}).Get(ctx, &report)
		}},
		{api.StepPowerOff, func(ctx workflow.Context) error {
			actx := p.activityCtx(ctx, "power off "+p.host.Name, 5*time.Minute, 30*time.Second, 0)
			return workflow.ExecuteActivity(actx, bmcA.PowerOff, p.bmcInput()).Get(ctx, nil)
		}},
		{api.StepRemove, func(ctx workflow.Context) error {
			actx := p.activityCtx(ctx, "remove lease "+p.host.MAC, 30*time.Second, 0, 0)
			return workflow.ExecuteActivity(actx, leaseA.RemoveLease, lease.RemoveInput{Host: p.host.Name, MAC: p.host.MAC}).Get(ctx, nil)
		}},
	}
	for i, s := range steps {
		if err := p.runStep(ctx, i, s.name, s.run); err != nil {
			return api.DecommissionResult{}, err
		}
		if s.name == api.StepUnpublish && p.status.Steps[i].State == "done" && un.skip != "" {
			p.status.Steps[i].State, p.status.Steps[i].Reason = "skipped", un.skip
		}
	}
	notes = append(notes, un.notes()...)

	p.status.State = api.StateSucceeded
	p.status.Step = api.StepRetired
	p.upsert(ctx)
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s decommissioned**: %s erased (%s, %d bytes read back as zeroes)", p.host.Name, report.Disk, report.Method, report.VerifiedBytes))
	workflow.GetLogger(ctx).Info("host decommissioned", "host", p.host.Name, "disk", report.Disk, "method", report.Method, "verified_bytes", report.VerifiedBytes)
	return api.DecommissionResult{
		Host:        p.host.Name,
		Unpublished: un.removed,
		LeftForeign: un.foreign,
		Erase:       report,
		Steps:       p.status.Steps,
		Notes:       notes,
		Duration:    workflow.Now(ctx).Sub(started).Round(time.Second).String(),
	}, nil
}

// unpublishing is the unpublish step's state, kept across its tries so
// that the result lists what every try removed.
type unpublishing struct {
	removed, foreign []api.VIPMember
	// pending were asked to be removed, not yet seen gone.
	pending []api.VIPMember
	// saved: NetScalers where a try removed a member, whose configuration
	// every later try saves again (a try that failed before its save left
	// the removal unsaved, and the next one finds nothing to remove).
	saved map[string]bool
	// skip is the step's reason when it had nothing to ask, note the
	// result's line saying so.
	skip, note string
}

// run takes host out of every servicegroup of the inventory's NetScalers:
// rackflow's members are drained and unbound (EnsureMembers, as
// UpdateBackends removes backends) and the configuration saved; other
// members fail the step unless in.LeaveForeignMembers. Each try reads the
// appliances afresh, so a retry after a crash or an operator's fix removes
// only what is still there.
func (u *unpublishing) run(ctx workflow.Context, host api.Host, in api.DecommissionInput) error {
	ictx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// The shared worker's inventory: NetScalers are not a pod's.
		StartToCloseTimeout: time.Minute,
		Summary:             "NetScalers of the inventory",
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3, NonRetryableErrorTypes: activities.NonRetryableTypes},
	})
	var nss []api.NetScalerEntry
	if err := workflow.ExecuteActivity(ictx, invA.NetScalers).Get(ctx, &nss); err != nil {
		return err
	}
	if len(nss) == 0 {
		u.skip = "no NetScaler in the worker's inventory"
		u.note = "unpublish: no NetScaler in the worker's inventory (netscalers:); nothing was unpublished"
		return nil
	}
	u.foreign = nil
	for _, ns := range nss {
		t := nitroTarget(ns.NetScaler)
		var found []api.VIPMember
		find := nitroCall{"servicegroups of " + host.Name + " on " + ns.Name, nitroA.FindHostMembers,
			nitro.HostMembersInput{Target: t, Addresses: []string{host.Network.IP}}}
		if err := find.run(ctx, &found); err != nil {
			return err
		}
		// What an earlier try asked to remove and is gone now was removed
		// by it, even if the answer was lost (a worker killed mid-call).
		for i := range found {
			found[i].NetScaler = ns.Name
		}
		u.settle(ns.Name, func(v api.VIPMember) bool { return slices.Contains(found, v) })
		var groups []string
		ours := map[string][]api.VIPMember{}
		for _, m := range found {
			if m.Owner == "" {
				u.foreign = append(u.foreign, m)
				continue
			}
			if ours[m.ServiceGroup] == nil {
				groups = append(groups, m.ServiceGroup)
			}
			ours[m.ServiceGroup] = append(ours[m.ServiceGroup], m)
		}
		for _, sg := range groups {
			ms := ours[sg]
			previous := make([]nitro.Member, len(ms))
			for i, m := range ms {
				previous[i] = nitro.Member{IP: m.IP, Port: m.Port}
				if !slices.Contains(u.pending, m) {
					u.pending = append(u.pending, m)
				}
			}
			u.saved[ns.Name] = true
			remove := waitingCall{nitroCall{fmt.Sprintf("drain and unbind %s from %s on %s", host.Name, sg, ns.Name), nitroA.EnsureMembers,
				nitro.MembersInput{Target: t, Owner: ms[0].Owner, ServiceGroup: sg, Previous: previous, DrainSeconds: in.DrainSeconds}},
				time.Duration(in.DrainSeconds) * time.Second}
			if err := remove.run(ctx, nil); err != nil {
				return err
			}
			// Success means none of previous is bound any more.
			u.settle(ns.Name, func(v api.VIPMember) bool { return v.ServiceGroup != sg })
		}
		if u.saved[ns.Name] {
			save := nitroCall{"save configuration of " + ns.Name, nitroA.SaveConfig, nitro.SaveInput{Target: t}}
			if err := save.run(ctx, nil); err != nil {
				return err
			}
		}
	}
	if len(u.foreign) > 0 && !in.LeaveForeignMembers {
		list := make([]string, len(u.foreign))
		for i, m := range u.foreign {
			list[i] = fmt.Sprintf("%s (server %s, comment %q)", m, m.Server, m.Comment)
		}
		return activities.NonRetryable(fmt.Sprintf("%s is still a member of servicegroups rackflow does not own: %s; "+
			"remove it there and retry, or skip this step to leave them (or start with leave_foreign_members)",
			host.Name, strings.Join(list, "; ")), ErrTypeHostInForeignServiceGroups, nil, u.foreign)
	}
	return nil
}

// settle moves netscaler's pending members that are not present any more
// to removed, in the order they were asked for.
func (u *unpublishing) settle(netscaler string, present func(api.VIPMember) bool) {
	u.pending = slices.DeleteFunc(u.pending, func(v api.VIPMember) bool {
		if v.NetScaler != netscaler || present(v) {
			return false
		}
		u.removed = append(u.removed, v)
		return true
	})
}

// notes are the result's lines for what the step did.
func (u *unpublishing) notes() []string {
	var out []string
	if u.note != "" {
		out = append(out, u.note)
	}
	for _, m := range u.removed {
		out = append(out, fmt.Sprintf("unpublish: removed %s (publication %s)", m, m.Owner))
	}
	for _, m := range u.foreign {
		out = append(out, fmt.Sprintf("unpublish: left %s alone: not rackflow's (comment %q)", m, m.Comment))
	}
	return out
}
