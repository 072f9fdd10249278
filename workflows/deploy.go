package workflows

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
)

var runsA *runs.Activities

// QueryDeployStatus is the deploy's status query.
const QueryDeployStatus = "status"

// DeployService deploys a service as the seed draws it: bare-metal hosts
// provisioned (ProvisionHost children, in parallel, capped per rack), VMs
// given their second NIC (SetupVMNetwork children), then the VIP published
// (PublishService child) with the members that came up healthy. Hosts that
// already carry the wanted image are not provisioned again, so a re-run
// converges. A failed member is reported and left out of the VIP, unless
// the spec requires all.
func DeployService(ctx workflow.Context, d api.DeploySpec) (api.DeployResult, error) {
	if err := d.Validate(); err != nil {
		return api.DeployResult{}, activities.InvalidInput(err)
	}
	status := api.DeployStatus{Service: d.Service, Phase: "members"}
	res := api.DeployResult{Service: d.Service}
	if err := workflow.SetQueryHandler(ctx, QueryDeployStatus, func() (api.DeployStatus, error) { return status, nil }); err != nil {
		return res, err
	}
	perRack := d.PerRack
	if perRack == 0 {
		perRack = 2
	}
	racks := map[string]workflow.Semaphore{}
	members := make([]api.MemberResult, len(d.Hosts)+len(d.VMs))
	status.Members = members
	wg := workflow.NewWaitGroup(ctx)

	for i, h := range d.Hosts {
		i, h := i, h
		members[i] = api.MemberResult{Name: h.Host, Kind: "host", WorkflowID: api.ProvisionWorkflowID(h.Host), Backend: h.Backend, State: "pending"}
		rack := h.Rack
		if rack == "" {
			rack = "default"
		}
		if racks[rack] == nil {
			racks[rack] = workflow.NewSemaphore(ctx, int64(perRack))
		}
		sem := racks[rack]
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			m := &members[i]
			if err := sem.Acquire(ctx, 1); err != nil {
				m.State, m.Error = api.MemberFailed, err.Error()
				return
			}
			defer sem.Release(1)
			deployHost(ctx, d, h, m)
		})
	}
	for j, vm := range d.VMs {
		i, vm := len(d.Hosts)+j, vm
		members[i] = api.MemberResult{Name: vm.VM, Kind: "vm", WorkflowID: api.VMNetWorkflowID(vm.VM, vm.Network), Backend: vm.Backend, State: "pending"}
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			m := &members[i]
			m.State = "running"
			cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
				WorkflowID:            m.WorkflowID,
				StaticSummary:         fmt.Sprintf("%s: second NIC for %s on %s", d.Service, vm.VM, vm.Network),
				WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
			})
			var r api.VMNetResult
			if err := workflow.ExecuteChildWorkflow(cctx, api.WorkflowSetupVMNetwork, vm.VMNetInput).Get(ctx, &r); err != nil {
				m.State = api.MemberFailed
				m.Error, m.ErrorType = describe(err)
				return
			}
			m.State = api.MemberConfigured
		})
	}
	wg.Wait(ctx)
	res.Members = members

	var failed []string
	var backendsUp []api.Backend
	for _, m := range members {
		if m.State == api.MemberFailed {
			failed = append(failed, m.Name)
			continue
		}
		if m.Backend != "" {
			ap := netip.MustParseAddrPort(m.Backend)
			backendsUp = append(backendsUp, api.Backend{IP: ap.Addr().String(), Port: int(ap.Port())})
		}
	}
	res.Partial = len(failed) > 0
	sort.Slice(backendsUp, func(i, j int) bool { return backendsUp[i].IP < backendsUp[j].IP })
	res.Backends = backendsUp
	if len(failed) > 0 && d.RequireAll {
		status.Phase = "failed"
		return res, activities.NonRetryable(
			fmt.Sprintf("deploy %s: %d members failed (%v) and the spec requires all; nothing was published", d.Service, len(failed), failed),
			ErrTypeDeployIncomplete, nil)
	}
	if d.Publish != nil {
		status.Phase = "publish"
		if len(backendsUp) == 0 {
			status.Phase = "failed"
			return res, activities.NonRetryable(
				fmt.Sprintf("deploy %s: no healthy backend to publish (failed: %v)", d.Service, failed), ErrTypeDeployIncomplete, nil)
		}
		in := d.Publish.Input(d.Service, backendsUp)
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID:            api.PublishWorkflowID(in.VIP, in.Port),
			StaticSummary:         fmt.Sprintf("%s: publish %s:%d with %d backends", d.Service, in.VIP, in.Port, len(backendsUp)),
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		})
		var pr api.PublishResult
		if err := workflow.ExecuteChildWorkflow(cctx, api.WorkflowPublishService, in).Get(ctx, &pr); err != nil {
			status.Phase = "failed"
			return res, failWith("deploy "+d.Service+": publish", err)
		}
		res.Publish = &pr
	}
	status.Phase = "done"
	workflow.GetLogger(ctx).Info("deploy done", "service", d.Service, "failed", len(failed), "backends", len(backendsUp))
	return res, nil
}

// deployHost provisions one host unless it already carries the image.
func deployHost(ctx workflow.Context, d api.DeploySpec, h api.DeployHost, m *api.MemberResult) {
	m.State = "checking"
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 5, NonRetryableErrorTypes: activities.NonRetryableTypes},
	})
	var host api.Host
	if err := workflow.ExecuteActivity(withSummary(actx, "resolve "+h.Host), invA.ResolveHost, inventory.ResolveInput{Host: h.Host}).Get(ctx, &host); err != nil {
		m.State = api.MemberFailed
		m.Error, m.ErrorType = describe(err)
		return
	}
	var last runs.LastProvisionResult
	if err := workflow.ExecuteActivity(withSummary(actx, "last provisioning of "+h.Host), runsA.LastProvision, h.Host).Get(ctx, &last); err != nil {
		m.State = api.MemberFailed
		m.Error, m.ErrorType = describe(err)
		return
	}
	if _, want := host.Image.Digest(); last.Status == runs.StatusCompleted && last.ImageDigest == want {
		m.State, m.Steps = api.MemberConverged, last.Steps
		return
	}
	m.State = "provisioning"
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            m.WorkflowID,
		StaticSummary:         fmt.Sprintf("%s: provision %s", d.Service, h.Host),
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// A parked host keeps its run when the deploy is cancelled: on-call
		// may still finish it.
		ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			hostKey.ValueSet(h.Host), stepKey.ValueSet(api.StepValidate), stateKey.ValueSet(api.StateRunning)),
	})
	var pr api.ProvisionResult
	if err := workflow.ExecuteChildWorkflow(cctx, api.WorkflowProvisionHost, api.ProvisionInput{Host: h.Host, Options: d.Provision,
		// A deploy spec names the image a host must run: reprovisioning a
		// host that carries another one is what the deploy is for.
		Reprovision: true}).Get(ctx, &pr); err != nil {
		m.State = api.MemberFailed
		m.Error, m.ErrorType = describe(err)
		return
	}
	m.State, m.Steps = api.MemberProvisioned, pr.Steps
}

func withSummary(ctx workflow.Context, s string) workflow.Context {
	o := workflow.GetActivityOptions(ctx)
	o.Summary = s
	return workflow.WithActivityOptions(ctx, o)
}
