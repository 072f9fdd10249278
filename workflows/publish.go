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
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
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
	return nitro.Target{URL: n.URL, Credential: n.Credential, CA: n.CA, Insecure: n.Insecure, Auth: n.Auth}
}

// defaultMonitor picks a built-in NetScaler monitor for a protocol.
func defaultMonitor(protocol string) string {
	switch protocol {
	case "HTTP":
		return "http"
	case "TCP", "SSL", "SSL_BRIDGE", "SSL_TCP":
		return "tcp"
	case "DNS":
		return "dns"
	default:
		return "ping"
	}
}

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

// prepare validates a publishing input and derives, from the workflow ID
// the run must have, the owner marker, object names and device.
func prepare(ctx workflow.Context, in interface{ Validate() error }, vip string, port int, ns api.NetScaler) (string, nitro.ObjectNames, nitro.Target, error) {
	if err := in.Validate(); err != nil {
		return "", nitro.ObjectNames{}, nitro.Target{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrInvalidInput, err)
	}
	owner, err := checkOwnerID(ctx, vip, port)
	if err != nil {
		return "", nitro.ObjectNames{}, nitro.Target{}, err
	}
	return owner, nitro.Names(owner), nitroTarget(ns), nil
}

// PublishService publishes a service on a NetScaler: servicegroup, members,
// monitor binding, lbvserver, binding, INAT/RNAT, then saves the
// configuration. Every step is idempotent and refuses to adopt an object
// that is not rackflow's; if a step fails, whatever this run created is
// removed again, newest first, and nothing is saved.
func PublishService(ctx workflow.Context, in api.PublishInput) (api.PublishResult, error) {
	owner, names, target, err := prepare(ctx, in, in.VIP, in.Port, in.NetScaler)
	if err != nil {
		return api.PublishResult{}, err
	}
	monitor := in.Monitor
	if monitor == "" {
		monitor = defaultMonitor(in.Protocol)
	}
	res := api.PublishResult{WorkflowID: owner, ServiceGroup: names.ServiceGroup, VServer: names.VServer, Backends: backends(members(in.Backends))}
	var undo saga
	created := func(r nitro.Result) { res.Created = append(res.Created, r.Object) }

	err = func() error {
		var r nitro.Result
		if err := workflow.ExecuteActivity(nitroCtx(ctx, "servicegroup "+names.ServiceGroup), nitroA.EnsureServiceGroup,
			nitro.ServiceGroupInput{Target: target, Owner: owner, Name: names.ServiceGroup, ServiceType: in.Protocol}).Get(ctx, &r); err != nil {
			return err
		}
		sgCreated := r.Changed
		if r.Changed {
			created(r)
			undo.add("delete servicegroup", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(nitroCtx(ctx, "undo: delete servicegroup "+names.ServiceGroup), nitroA.DeleteServiceGroup,
					nitro.DeleteInput{Target: target, Owner: owner, Name: names.ServiceGroup}).Get(ctx, nil)
			})
		}

		// A re-publish converges the members: those bound before and no
		// longer asked for are unbound (after the new ones are bound).
		// Runs recorded before this existed did not read them.
		var previous []nitro.Member
		if !sgCreated && workflow.GetVersion(ctx, "publish-converges-members", workflow.DefaultVersion, 1) == 1 {
			if err := workflow.ExecuteActivity(nitroCtx(ctx, "read members of "+names.ServiceGroup), nitroA.ListMembers,
				nitro.ListMembersInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup}).Get(ctx, &previous); err != nil {
				return err
			}
		}
		var mr nitro.MembersResult
		if err := workflow.ExecuteActivity(nitroCtx(ctx, fmt.Sprintf("bind %d members to %s", len(in.Backends), names.ServiceGroup)), nitroA.EnsureMembers,
			nitro.MembersInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Members: members(in.Backends), Previous: previous}).Get(ctx, &mr); err != nil {
			return err
		}
		if (len(mr.Added) > 0 || len(mr.Removed) > 0) && !sgCreated {
			// The servicegroup existed: put its members back as they were.
			added, removed := mr.Added, mr.Removed
			undo.add("restore members", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(nitroCtx(ctx, "undo: restore members"), nitroA.EnsureMembers,
					nitro.MembersInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Members: removed, Previous: added}).Get(ctx, nil)
			})
		}

		if err := workflow.ExecuteActivity(nitroCtx(ctx, "bind monitor "+monitor), nitroA.EnsureMonitorBinding,
			nitro.MonitorBindingInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Monitor: monitor}).Get(ctx, &r); err != nil {
			return err
		}
		if r.Changed {
			created(r)
			undo.add("unbind monitor", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(nitroCtx(ctx, "undo: unbind monitor "+monitor), nitroA.DeleteMonitorBinding,
					nitro.MonitorBindingInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Monitor: monitor}).Get(ctx, nil)
			})
		}

		if err := workflow.ExecuteActivity(nitroCtx(ctx, fmt.Sprintf("lbvserver %s on %s:%d", names.VServer, in.VIP, in.Port)), nitroA.EnsureLBVServer,
			nitro.LBVServerInput{Target: target, Owner: owner, Name: names.VServer, ServiceType: in.Protocol, VIP: in.VIP, Port: in.Port, LBMethod: in.LBMethod}).Get(ctx, &r); err != nil {
			return err
		}
		if r.Changed {
			created(r)
			undo.add("delete lbvserver", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(nitroCtx(ctx, "undo: delete lbvserver "+names.VServer), nitroA.DeleteLBVServer,
					nitro.DeleteInput{Target: target, Owner: owner, Name: names.VServer}).Get(ctx, nil)
			})
		}

		if err := workflow.ExecuteActivity(nitroCtx(ctx, "bind "+names.ServiceGroup+" to "+names.VServer), nitroA.EnsureVServerBinding,
			nitro.VServerBindingInput{Target: target, Owner: owner, VServer: names.VServer, ServiceGroup: names.ServiceGroup}).Get(ctx, &r); err != nil {
			return err
		}
		if r.Changed {
			created(r)
			undo.add("unbind servicegroup", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(nitroCtx(ctx, "undo: unbind servicegroup"), nitroA.DeleteVServerBinding,
					nitro.VServerBindingInput{Target: target, Owner: owner, VServer: names.VServer, ServiceGroup: names.ServiceGroup}).Get(ctx, nil)
			})
		}

		if n := in.INAT; n != nil {
			res.INAT = names.INAT
			if err := workflow.ExecuteActivity(nitroCtx(ctx, fmt.Sprintf("INAT %s <-> %s", n.PublicIP, n.PrivateIP)), nitroA.EnsureINAT,
				nitro.INATInput{Target: target, Owner: owner, Name: names.INAT, PublicIP: n.PublicIP, PrivateIP: n.PrivateIP}).Get(ctx, &r); err != nil {
				return err
			}
			if r.Changed {
				created(r)
				undo.add("delete inat", func(ctx workflow.Context) error {
					return workflow.ExecuteActivity(nitroCtx(ctx, "undo: delete INAT"), nitroA.DeleteINAT,
						nitro.DeleteInput{Target: target, Owner: owner, Name: names.INAT}).Get(ctx, nil)
				})
			}
		}
		if n := in.RNAT; n != nil {
			res.RNAT = names.RNAT
			if err := workflow.ExecuteActivity(nitroCtx(ctx, fmt.Sprintf("RNAT %s/%s via %s", n.Network, n.Netmask, n.NATIP)), nitroA.EnsureRNAT,
				nitro.RNATInput{Target: target, Owner: owner, Name: names.RNAT, Network: n.Network, Netmask: n.Netmask, NATIP: n.NATIP}).Get(ctx, &r); err != nil {
				return err
			}
			if r.Changed {
				created(r)
				undo.add("delete rnat", func(ctx workflow.Context) error {
					return workflow.ExecuteActivity(nitroCtx(ctx, "undo: delete RNAT"), nitroA.DeleteRNAT,
						nitro.DeleteInput{Target: target, Owner: owner, Name: names.RNAT}).Get(ctx, nil)
				})
			}
		}
		return workflow.ExecuteActivity(nitroCtx(ctx, "save configuration"), nitroA.SaveConfig, nitro.SaveInput{Target: target}).Get(ctx, nil)
	}()
	if err != nil {
		workflow.GetLogger(ctx).Warn("publish failed, rolling back", "vip", in.VIP, "port", in.Port, "error", err)
		if cerr := undo.compensate(ctx); cerr != nil {
			return res, failWith(fmt.Sprintf("publish %s failed and the rollback failed too (%v)", owner, cerr), err)
		}
		return res, failWith(fmt.Sprintf("publish %s failed and was rolled back", owner), err)
	}
	workflow.GetLogger(ctx).Info("service published", "vip", in.VIP, "port", in.Port, "backends", len(in.Backends))
	return res, nil
}

// UnpublishService removes, newest first, every object of a publication
// that carries rackflow's ownership marker, then saves. Objects that are
// already gone count as removed; objects someone else owns are left alone.
func UnpublishService(ctx workflow.Context, in api.UnpublishInput) (api.PublishResult, error) {
	owner, names, target, err := prepare(ctx, in, in.VIP, in.Port, in.NetScaler)
	if err != nil {
		return api.PublishResult{}, err
	}
	res := api.PublishResult{WorkflowID: owner, ServiceGroup: names.ServiceGroup, VServer: names.VServer}
	var r nitro.Result
	run := func(summary string, fn any, arg any) error {
		if err := workflow.ExecuteActivity(nitroCtx(ctx, summary), fn, arg).Get(ctx, &r); err != nil {
			return err
		}
		if r.Changed {
			res.Created = append(res.Created, "removed "+r.Object) // what this run changed
		}
		return nil
	}
	del := func(name string) nitro.DeleteInput {
		return nitro.DeleteInput{Target: target, Owner: owner, Name: name}
	}
	steps := []struct {
		summary string
		fn      any
		arg     any
	}{
		{"delete RNAT", nitroA.DeleteRNAT, del(names.RNAT)},
		{"delete INAT", nitroA.DeleteINAT, del(names.INAT)},
		{"unbind servicegroup", nitroA.DeleteVServerBinding, nitro.VServerBindingInput{Target: target, Owner: owner, VServer: names.VServer, ServiceGroup: names.ServiceGroup}},
		{"delete lbvserver", nitroA.DeleteLBVServer, del(names.VServer)},
	}
	// The monitor is one of the built-ins publish may have bound.
	for _, m := range []string{"tcp", "http", "dns", "ping"} {
		steps = append(steps, struct {
			summary string
			fn      any
			arg     any
		}{"unbind monitor " + m, nitroA.DeleteMonitorBinding, nitro.MonitorBindingInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Monitor: m}})
	}
	steps = append(steps, struct {
		summary string
		fn      any
		arg     any
	}{"delete servicegroup", nitroA.DeleteServiceGroup, del(names.ServiceGroup)})
	for _, s := range steps {
		if err := run(s.summary, s.fn, s.arg); err != nil {
			return res, failWith(fmt.Sprintf("unpublish %s at %q", owner, s.summary), err)
		}
	}
	if err := workflow.ExecuteActivity(nitroCtx(ctx, "save configuration"), nitroA.SaveConfig, nitro.SaveInput{Target: target}).Get(ctx, nil); err != nil {
		return res, err
	}
	return res, nil
}

// UpdateBackends replaces the members of a published service: new members
// are bound before old ones are unbound, so the VIP keeps serving. The
// lbvserver is never touched.
func UpdateBackends(ctx workflow.Context, in api.UpdateBackendsInput) (api.PublishResult, error) {
	owner, names, target, err := prepare(ctx, in, in.VIP, in.Port, in.NetScaler)
	if err != nil {
		return api.PublishResult{}, err
	}
	var current []nitro.Member
	if err := workflow.ExecuteActivity(nitroCtx(ctx, "read members of "+names.ServiceGroup), nitroA.ListMembers,
		nitro.ListMembersInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup}).Get(ctx, &current); err != nil {
		return api.PublishResult{}, err
	}
	var mr nitro.MembersResult
	err = workflow.ExecuteActivity(nitroCtx(ctx, fmt.Sprintf("set %d members of %s", len(in.Backends), names.ServiceGroup)), nitroA.EnsureMembers,
		nitro.MembersInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Members: members(in.Backends), Previous: current}).Get(ctx, &mr)
	if err != nil {
		// Put the old set back; bind-before-unbind keeps the VIP serving.
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		if rerr := workflow.ExecuteActivity(nitroCtx(dctx, "undo: restore members"), nitroA.EnsureMembers,
			nitro.MembersInput{Target: target, Owner: owner, ServiceGroup: names.ServiceGroup, Members: current, Previous: members(in.Backends)}).Get(dctx, nil); rerr != nil {
			return api.PublishResult{}, failWith(fmt.Sprintf("update backends of %s failed and restoring the old members failed too (%v)", owner, rerr), err)
		}
		return api.PublishResult{}, failWith(fmt.Sprintf("update backends of %s failed, old members restored", owner), err)
	}
	if err := workflow.ExecuteActivity(nitroCtx(ctx, "save configuration"), nitroA.SaveConfig, nitro.SaveInput{Target: target}).Get(ctx, nil); err != nil {
		return api.PublishResult{}, err
	}
	return api.PublishResult{WorkflowID: owner, ServiceGroup: names.ServiceGroup, VServer: names.VServer, Backends: backends(members(in.Backends))}, nil
}
