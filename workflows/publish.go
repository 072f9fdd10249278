package workflows

import (
	"fmt"
	"sort"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/api"
)

var nitroA *nitro.Activities

// ErrWrongWorkflowID is returned when a publication is started under another
// ID than publish/<vip>:<port>: the ID is what keeps two runs on one VIP from
// racing, and it is the ownership marker on the device.
const ErrWrongWorkflowID = "WrongWorkflowID"

func nitroCtx(ctx workflow.Context, summary string) workflow.Context {
	return nitroCtxWait(ctx, summary, 0)
}

// nitroCtxWait is nitroCtx for a step that waits on purpose (draining
// members, waiting for UP): its StartToClose grows by that wait.
func nitroCtxWait(ctx workflow.Context, summary string, wait time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2*time.Minute + wait,
		// The activities heartbeat every 3s while the device works: a
		// dead worker's step is retried within 15s.
		HeartbeatTimeout: 15 * time.Second,
		Summary:          summary,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    2 * time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			// NitroBusy (293, save in progress) and unreachable devices are
			// retried; bad input, conflicts and auth failures are not.
			MaximumAttempts:        10,
			NonRetryableErrorTypes: nitro.NonRetryable,
		},
	})
}

func nitroTarget(n api.NetScaler) nitro.Target {
	return nitro.Target{URL: n.URL, Credential: n.Credential, CA: n.CA, Insecure: n.Insecure, Auth: n.Auth,
		ServerName: n.ServerName, PinSHA256: n.PinSHA256, Partition: n.Partition}
}

// Built-in NetScaler monitors publish binds when the input names none.
const (
	monitorTCP  = "tcp"
	monitorHTTP = "http"
	monitorDNS  = "dns"
	monitorPing = "ping"
)

// defaultMonitors are all the monitors defaultMonitor picks from, in the
// order UnpublishService unbinds them (saved histories depend on it).
var defaultMonitors = []string{monitorTCP, monitorHTTP, monitorDNS, monitorPing}

// defaultMonitor picks a built-in NetScaler monitor for a protocol.
func defaultMonitor(protocol string) string {
	switch protocol {
	case "HTTP":
		return monitorHTTP
	case "TCP", "SSL", "SSL_BRIDGE", "SSL_TCP":
		return monitorTCP
	case "DNS":
		return monitorDNS
	default:
		return monitorPing
	}
}

// removedPrefix marks, in PublishResult.Created (what a run changed), the
// objects UnpublishService removed.
const removedPrefix = "removed "

func members(bs []api.Backend) []nitro.Member {
	out := make([]nitro.Member, len(bs))
	for i, b := range bs {
		out[i] = nitro.Member{IP: b.IP, Port: b.Port, Weight: b.Weight}
	}
	return out
}

func backends(ms []nitro.Member) []api.Backend {
	out := make([]api.Backend, len(ms))
	for i, m := range ms {
		out[i] = api.Backend{IP: m.IP, Port: m.Port, Weight: m.Weight}
	}
	sort.Slice(out, func(i, j int) bool {
		return fmt.Sprintf("%s:%05d", out[i].IP, out[i].Port) < fmt.Sprintf("%s:%05d", out[j].IP, out[j].Port)
	})
	return out
}

func checkOwnerID(ctx workflow.Context, vip string, port int) (string, error) {
	owner := api.PublishWorkflowID(vip, port)
	if id := workflow.GetInfo(ctx).WorkflowExecution.ID; id != owner {
		return "", temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("start this workflow with workflow ID %q, not %q: one ID per VIP keeps runs from racing", owner, id),
			ErrWrongWorkflowID, nil)
	}
	return owner, nil
}

// publication is what every publishing workflow derives from its input and
// workflow ID: the owner marker, the object names and the device. Its
// methods build the NITRO calls the workflows share.
type publication struct {
	owner  string
	names  nitro.ObjectNames
	target nitro.Target
	// drain is how long removed members are drained (seconds).
	drain int
}

// prepare validates a publishing input and derives, from the workflow ID
// the run must have, the publication it works on.
func prepare(ctx workflow.Context, in interface{ Validate() error }, vip string, port int, ns api.NetScaler, drain int) (publication, error) {
	if err := in.Validate(); err != nil {
		return publication{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrInvalidInput, err)
	}
	owner, err := checkOwnerID(ctx, vip, port)
	if err != nil {
		return publication{}, err
	}
	return publication{owner: owner, names: nitro.Names(owner), target: nitroTarget(ns), drain: drain}, nil
}

// result is the PublishResult skeleton of p.
func (p publication) result() api.PublishResult {
	return api.PublishResult{WorkflowID: p.owner, ServiceGroup: p.names.ServiceGroup, VServer: p.names.VServer}
}

func (p publication) del(name string) nitro.DeleteInput {
	return nitro.DeleteInput{Target: p.target, Owner: p.owner, Name: name}
}

func (p publication) monitorBinding(monitor string) nitro.MonitorBindingInput {
	return nitro.MonitorBindingInput{Target: p.target, Owner: p.owner, ServiceGroup: p.names.ServiceGroup, Monitor: monitor}
}

func (p publication) vserverBinding() nitro.VServerBindingInput {
	return nitro.VServerBindingInput{Target: p.target, Owner: p.owner, VServer: p.names.VServer, ServiceGroup: p.names.ServiceGroup}
}

func (p publication) listMembers() nitroCall {
	return nitroCall{"read members of " + p.names.ServiceGroup, nitroA.ListMembers,
		nitro.ListMembersInput{Target: p.target, Owner: p.owner, ServiceGroup: p.names.ServiceGroup}}
}

// setMembers binds want and unbinds those of previous not in want.
func (p publication) setMembers(summary string, want, previous []nitro.Member) waitingCall {
	return waitingCall{nitroCall{summary, nitroA.EnsureMembers,
		nitro.MembersInput{Target: p.target, Owner: p.owner, ServiceGroup: p.names.ServiceGroup, Members: want, Previous: previous, DrainSeconds: p.drain}},
		time.Duration(p.drain) * time.Second}
}

// undoMembers registers the compensation that turns a member change back:
// added are unbound again, removed bound again.
func (p publication) undoMembers(undo *saga, added, removed []nitro.Member) {
	restore := p.setMembers("undo: restore members", removed, added)
	undo.add("restore members", func(ctx workflow.Context) error { return restore.run(ctx, nil) })
}

func (p publication) save() nitroCall {
	return nitroCall{"save configuration", nitroA.SaveConfig, nitro.SaveInput{Target: p.target}}
}

// nitroCall is one NITRO activity call: the summary the UI shows for it,
// the activity and its input.
type nitroCall struct {
	summary string
	fn      any
	in      any
}

// run executes the call and decodes its result into out (nil: discard it).
func (c nitroCall) run(ctx workflow.Context, out any) error {
	return workflow.ExecuteActivity(nitroCtx(ctx, c.summary), c.fn, c.in).Get(ctx, out)
}

// waitingCall is a nitroCall whose activity waits on purpose (draining
// members, waiting for UP) for up to wait.
type waitingCall struct {
	nitroCall
	wait time.Duration
}

func (c waitingCall) run(ctx workflow.Context, out any) error {
	return workflow.ExecuteActivity(nitroCtxWait(ctx, c.summary, c.wait), c.fn, c.in).Get(ctx, out)
}

// ensureStep is one object of a publication: the call that creates or
// accepts it, and the call that removes it again if this run created it.
// The undo's summary names the compensation.
type ensureStep struct {
	ensure nitroCall
	undo   nitroCall
}

// PublishService publishes a service on a NetScaler: servicegroup, members,
// monitor binding, lbvserver, binding, INAT/RNAT, then saves the
// configuration. Every step is idempotent and refuses to adopt an object
// that is not rackflow's; if a step fails, whatever this run created is
// removed again, newest first, and nothing is saved.
func PublishService(ctx workflow.Context, in api.PublishInput) (api.PublishResult, error) {
	p, err := prepare(ctx, in, in.VIP, in.Port, in.NetScaler, in.DrainSeconds)
	if err != nil {
		return api.PublishResult{}, err
	}
	names := p.names
	monitor := in.Monitor
	if monitor == "" {
		monitor = defaultMonitor(in.Protocol)
	}
	res := p.result()
	res.Backends = backends(members(in.Backends))

	// The objects in the order they are made. The members come between the
	// servicegroup and the rest (see convergeMembers): how they converge
	// depends on whether this run created the servicegroup.
	servicegroup := ensureStep{
		ensure: nitroCall{"servicegroup " + names.ServiceGroup, nitroA.EnsureServiceGroup,
			nitro.ServiceGroupInput{Target: p.target, Owner: p.owner, Name: names.ServiceGroup, ServiceType: in.Protocol}},
		undo: nitroCall{"delete servicegroup " + names.ServiceGroup, nitroA.DeleteServiceGroup, p.del(names.ServiceGroup)},
	}
	steps := []ensureStep{
		{
			ensure: nitroCall{"bind monitor " + monitor, nitroA.EnsureMonitorBinding, p.monitorBinding(monitor)},
			undo:   nitroCall{"unbind monitor " + monitor, nitroA.DeleteMonitorBinding, p.monitorBinding(monitor)},
		},
		{
			ensure: nitroCall{fmt.Sprintf("lbvserver %s on %s:%d", names.VServer, in.VIP, in.Port), nitroA.EnsureLBVServer,
				nitro.LBVServerInput{Target: p.target, Owner: p.owner, Name: names.VServer, ServiceType: in.Protocol, VIP: in.VIP, Port: in.Port, LBMethod: in.LBMethod}},
			undo: nitroCall{"delete lbvserver " + names.VServer, nitroA.DeleteLBVServer, p.del(names.VServer)},
		},
		{
			ensure: nitroCall{"bind " + names.ServiceGroup + " to " + names.VServer, nitroA.EnsureVServerBinding, p.vserverBinding()},
			undo:   nitroCall{"unbind servicegroup", nitroA.DeleteVServerBinding, p.vserverBinding()},
		},
	}
	if n := in.INAT; n != nil {
		res.INAT = names.INAT
		steps = append(steps, ensureStep{
			ensure: nitroCall{fmt.Sprintf("INAT %s <-> %s", n.PublicIP, n.PrivateIP), nitroA.EnsureINAT,
				nitro.INATInput{Target: p.target, Owner: p.owner, Name: names.INAT, PublicIP: n.PublicIP, PrivateIP: n.PrivateIP}},
			undo: nitroCall{"delete INAT", nitroA.DeleteINAT, p.del(names.INAT)},
		})
	}
	if n := in.RNAT; n != nil {
		// One rule per subnet, shared by the publications on it.
		res.RNAT = nitro.RNATName(n.Network, n.Netmask)
		steps = append(steps, ensureStep{
			ensure: nitroCall{fmt.Sprintf("RNAT %s/%s via %s", n.Network, n.Netmask, n.NATIP), nitroA.EnsureRNAT,
				nitro.RNATInput{Target: p.target, Owner: p.owner, Name: names.RNAT, Network: n.Network, Netmask: n.Netmask, NATIP: n.NATIP}},
			undo: nitroCall{"delete RNAT", nitroA.DeleteRNAT, p.del(names.RNAT)},
		})
	}

	var undo saga
	// ensure runs one step and, if it created the object, registers its
	// undo at once, so a failure in any later step removes it again.
	ensure := func(s ensureStep) (nitro.Result, error) {
		var r nitro.Result
		if err := s.ensure.run(ctx, &r); err != nil {
			return r, err
		}
		if r.Changed {
			res.Created = append(res.Created, r.Object)
			u := s.undo
			undo.add(u.summary, func(ctx workflow.Context) error {
				return nitroCall{"undo: " + u.summary, u.fn, u.in}.run(ctx, nil)
			})
		}
		return r, nil
	}
	err = func() error {
		sg, err := ensure(servicegroup)
		if err != nil {
			return err
		}
		if err := convergeMembers(ctx, p, &undo, members(in.Backends), sg.Changed); err != nil {
			return err
		}
		for _, s := range steps {
			if _, err := ensure(s); err != nil {
				return err
			}
		}
		return p.save().run(ctx, nil)
	}()
	if err != nil {
		workflow.GetLogger(ctx).Warn("publish failed, rolling back", "vip", in.VIP, "port", in.Port, "error", err)
		if cerr := undo.compensate(ctx); cerr != nil {
			return res, failWith(fmt.Sprintf("publish %s failed and the rollback failed too (%v)", p.owner, cerr), err)
		}
		return res, failWith(fmt.Sprintf("publish %s failed and was rolled back", p.owner), err)
	}
	// Saved is not serving: report a vserver that does not come UP.
	// Runs recorded before this check did not read the state.
	if workflow.GetVersion(ctx, "publish-reports-vserver-state", workflow.DefaultVersion, 1) == 1 {
		wait := in.UpWaitSeconds
		if wait == 0 {
			wait = defaultUpWaitSeconds
		}
		state := waitingCall{nitroCall{"state of " + names.VServer, nitroA.VServerState,
			nitro.VServerStateInput{Target: p.target, Owner: p.owner, Name: names.VServer, WaitSeconds: wait}}, time.Duration(wait) * time.Second}
		if err := state.run(ctx, &res.State); err != nil {
			return res, err
		}
		if res.State != nitroclientStateUp {
			return res, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("published %s and saved, but lbvserver %s is %s after %ds: no backend passes monitor %q; fix the backends (UpdateBackends) or unpublish",
					p.owner, names.VServer, res.State, wait, monitor), ErrVServerNotUp, nil, res)
		}
	}
	workflow.GetLogger(ctx).Info("service published", "vip", in.VIP, "port", in.Port, "backends", len(in.Backends))
	return res, nil
}

// ErrVServerNotUp: the publication is configured and saved, but its
// lbvserver did not come UP; the error's details hold the PublishResult.
const ErrVServerNotUp = "VServerNotUp"

// defaultUpWaitSeconds is PublishInput.UpWaitSeconds when zero: a few
// monitor intervals (5s by default) for the first member to count.
const defaultUpWaitSeconds = 30

// nitroclientStateUp is the curstate of a serving vserver.
const nitroclientStateUp = "UP"

// convergeMembers binds want to the servicegroup. A servicegroup this run
// created needs no member undo: deleting it removes them. One that existed
// means a re-publish: members bound before and no longer wanted are unbound
// (after the new ones are bound), and the undo puts the old set back. Runs
// recorded before re-publishing converged did not read the old members.
func convergeMembers(ctx workflow.Context, p publication, undo *saga, want []nitro.Member, sgCreated bool) error {
	var previous []nitro.Member
	if !sgCreated && workflow.GetVersion(ctx, "publish-converges-members", workflow.DefaultVersion, 1) == 1 {
		if err := p.listMembers().run(ctx, &previous); err != nil {
			return err
		}
	}
	var mr nitro.MembersResult
	if err := p.setMembers(fmt.Sprintf("bind %d members to %s", len(want), p.names.ServiceGroup), want, previous).run(ctx, &mr); err != nil {
		return err
	}
	if (len(mr.Added) > 0 || len(mr.Removed) > 0) && !sgCreated {
		p.undoMembers(undo, mr.Added, mr.Removed)
	}
	return nil
}

// UnpublishService removes, newest first, every object of a publication
// that carries rackflow's ownership marker, then saves. Objects that are
// already gone count as removed; objects someone else owns are left alone.
func UnpublishService(ctx workflow.Context, in api.UnpublishInput) (api.PublishResult, error) {
	p, err := prepare(ctx, in, in.VIP, in.Port, in.NetScaler, 0)
	if err != nil {
		return api.PublishResult{}, err
	}
	res := p.result()
	steps := []nitroCall{
		{"delete RNAT", nitroA.DeleteRNAT, p.del(p.names.RNAT)},
		{"delete INAT", nitroA.DeleteINAT, p.del(p.names.INAT)},
		{"unbind servicegroup", nitroA.DeleteVServerBinding, p.vserverBinding()},
		{"delete lbvserver", nitroA.DeleteLBVServer, p.del(p.names.VServer)},
	}
	// The monitor is one of the built-ins publish may have bound.
	for _, m := range defaultMonitors {
		steps = append(steps, nitroCall{"unbind monitor " + m, nitroA.DeleteMonitorBinding, p.monitorBinding(m)})
	}
	steps = append(steps, nitroCall{"delete servicegroup", nitroA.DeleteServiceGroup, p.del(p.names.ServiceGroup)})
	for _, s := range steps {
		var r nitro.Result
		if err := s.run(ctx, &r); err != nil {
			return res, failWith(fmt.Sprintf("unpublish %s at %q", p.owner, s.summary), err)
		}
		if r.Changed {
			res.Created = append(res.Created, removedPrefix+r.Object)
		}
	}
	if err := p.save().run(ctx, nil); err != nil {
		return res, err
	}
	return res, nil
}

// UpdateBackends replaces the members of a published service: new members
// are bound before old ones are unbound, so the VIP keeps serving. The
// lbvserver is never touched.
func UpdateBackends(ctx workflow.Context, in api.UpdateBackendsInput) (api.PublishResult, error) {
	p, err := prepare(ctx, in, in.VIP, in.Port, in.NetScaler, in.DrainSeconds)
	if err != nil {
		return api.PublishResult{}, err
	}
	var current []nitro.Member
	if err := p.listMembers().run(ctx, &current); err != nil {
		return api.PublishResult{}, err
	}
	want := members(in.Backends)
	if err := p.setMembers(fmt.Sprintf("set %d members of %s", len(want), p.names.ServiceGroup), want, current).run(ctx, nil); err != nil {
		// Put the old set back, whatever part of the change was made;
		// bind-before-unbind keeps the VIP serving.
		var undo saga
		p.undoMembers(&undo, want, current)
		if rerr := undo.compensate(ctx); rerr != nil {
			return api.PublishResult{}, failWith(fmt.Sprintf("update backends of %s failed and restoring the old members failed too (%v)", p.owner, rerr), err)
		}
		return api.PublishResult{}, failWith(fmt.Sprintf("update backends of %s failed, old members restored", p.owner), err)
	}
	if err := p.save().run(ctx, nil); err != nil {
		return api.PublishResult{}, err
	}
	res := p.result()
	res.Backends = backends(want)
	return res, nil
}
