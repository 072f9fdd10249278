package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
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
// Unpublishing: the inventory does not link hosts to the VIPs they serve
// yet, so that step records that it had nothing to do; take the host out
// of its services (UpdateBackends) first.
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
			notes = append(notes, "unpublish: the inventory links no VIP to "+p.host.Name+"; nothing was unpublished")
			return nil
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
		if s.name == api.StepUnpublish && p.status.Steps[i].State == "done" {
			p.status.Steps[i].State, p.status.Steps[i].Reason = "skipped", "no VIP linked to the host in the inventory"
		}
	}

	p.status.State = api.StateSucceeded
	p.status.Step = api.StepRetired
	p.upsert(ctx)
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s decommissioned**: %s erased (%s, %d bytes read back as zeroes)", p.host.Name, report.Disk, report.Method, report.VerifiedBytes))
	workflow.GetLogger(ctx).Info("host decommissioned", "host", p.host.Name, "disk", report.Disk, "method", report.Method, "verified_bytes", report.VerifiedBytes)
	return api.DecommissionResult{
		Host:     p.host.Name,
		Erase:    report,
		Steps:    p.status.Steps,
		Notes:    notes,
		Duration: workflow.Now(ctx).Sub(started).Round(time.Second).String(),
	}, nil
}
