// Package workflows holds rackflow's Temporal workflows: deterministic code
// that orders activities, records progress for operators, parks a run that
// needs a human and compensates what it did when the run is abandoned. It
// does no I/O of its own; everything that touches a machine is an activity.
package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
)

// Activity struct pointers: the workflow names activities through their
// methods, and the worker registers the real structs.
var (
	invA   *inventory.Activities
	leaseA *lease.Activities
	bmcA   *bmc.Activities
	sshA   *remote.Activities
	imageA *image.Activities
	chefA  *chef.Activities
)

var (
	hostKey  = temporal.NewSearchAttributeKeyKeyword(api.SearchAttrHost)
	stepKey  = temporal.NewSearchAttributeKeyKeyword(api.SearchAttrStep)
	stateKey = temporal.NewSearchAttributeKeyKeyword(api.SearchAttrState)
)

// errSkipped tells the step loop an operator skipped the step.
var errSkipped = errors.New("skipped by operator")

type decision struct {
	action string
	reason string
}

// provision is one run's state; its fields are what the status query shows.
type provision struct {
	in     api.ProvisionInput
	host   api.Host
	status api.ProvisionStatus
	opts   resolvedOptions

	pending     *decision
	stepCancel  workflow.CancelFunc
	abortReason string
	// undo runs in reverse when the run is aborted or gives up.
	undo saga
	// what the run does, for messages: "provisioning" when empty.
	what string
}

type compensation struct {
	name string
	fn   func(ctx workflow.Context) error
}

type resolvedOptions struct {
	liveSSH, osSSH, attention, imageHeartbeat, retryInterval time.Duration
	attempts                                                 int32
}

func resolveOptions(o api.ProvisionOptions) (resolvedOptions, error) {
	var r resolvedOptions
	var errs api.FieldErrors
	parse := func(field, s string, def time.Duration) time.Duration {
		d, err := api.ParseDuration(field, s, def)
		var fe api.FieldErrors
		if errors.As(err, &fe) {
			errs = append(errs, fe...)
		}
		return d
	}
	r.liveSSH = parse("options.live_ssh_deadline", o.LiveSSHDeadline, 20*time.Minute)
	r.osSSH = parse("options.os_ssh_deadline", o.OSSSHDeadline, 20*time.Minute)
	r.attention = parse("options.attention_deadline", o.AttentionDeadline, 72*time.Hour)
	r.imageHeartbeat = parse("options.image_heartbeat", o.ImageHeartbeat, time.Minute)
	r.retryInterval = parse("options.retry_interval", o.RetryInterval, 5*time.Second)
	r.attempts = 5
	if o.StepAttempts < 0 || o.StepAttempts > 100 {
		errs = append(errs, api.FieldError{Field: "options.step_attempts", Value: fmt.Sprint(o.StepAttempts), Reason: "must be 0-100"})
	} else if o.StepAttempts > 0 {
		r.attempts = int32(o.StepAttempts)
	}
	if len(errs) > 0 {
		return r, errs
	}
	return r, nil
}

// ProvisionHost provisions one bare-metal host: PXE lease, power on into the
// live system, stream the image, boot the disk, chef bootstrap. A step that
// exhausts its retries parks the run in needs-attention until an operator
// sends the retry, skip or abort Update, or the attention deadline passes.
func ProvisionHost(ctx workflow.Context, in api.ProvisionInput) (api.ProvisionResult, error) {
	info := workflow.GetInfo(ctx)
	p := &provision{in: in}
	p.status = api.ProvisionStatus{Host: in.Host, State: api.StateRunning}
	for _, s := range api.ProvisionSteps {
		p.status.Steps = append(p.status.Steps, api.StepRecord{Name: s, State: "pending"})
	}
	started := workflow.Now(ctx)
	if err := p.registerHandlers(ctx); err != nil {
		return api.ProvisionResult{}, err
	}
	opts, err := resolveOptions(in.Options)
	if err != nil {
		return api.ProvisionResult{}, activities.InvalidInput(err)
	}
	p.opts = opts

	var res api.ProvisionResult
	var live remote.WaitResult
	var written image.WriteResult
	var osKey remote.WaitResult
	var leaseRes lease.RegisterResult

	steps := []struct {
		name string
		run  func(ctx workflow.Context) error
	}{
		{api.StepValidate, func(ctx workflow.Context) error {
			// The shared queue reads the inventory; a host's pod is
			// known only once it has.
			p.host = api.Host{}
			actx := p.activityCtx(ctx, "resolve host "+in.Host, time.Minute, 0, 3)
			if err := workflow.ExecuteActivity(actx, invA.ResolveHost, inventory.ResolveInput{Host: in.Host, Spec: in.Spec}).Get(ctx, &p.host); err != nil {
				return err
			}
			p.status.Host = p.host.Name
			if p.host.Pod != "" {
				// From here on every activity runs on the pod's worker,
				// which holds the host's credentials and checks them now.
				workflow.GetVersion(ctx, "pod-queues", workflow.DefaultVersion, 1)
				p.status.Pod, p.status.PodQueue = p.host.Pod, api.PodQueue(workflow.GetInfo(ctx).TaskQueueName, p.host.Pod)
				pctx := p.activityCtx(ctx, "check host "+in.Host+" on pod "+p.host.Pod, time.Minute, 0, 3)
				if err := workflow.ExecuteActivity(pctx, invA.ResolveHost, inventory.ResolveInput{Host: in.Host, Spec: in.Spec}).Get(ctx, &p.host); err != nil {
					return err
				}
			}
			if err := p.refuseWipe(ctx, in); err != nil {
				return err
			}
			ictx := p.activityCtx(ctx, "check image "+p.host.Image.URL, time.Minute, 0, 3)
			return workflow.ExecuteActivity(ictx, imageA.CheckImage, p.host.Image).Get(ctx, nil)
		}},
		{api.StepLease, func(ctx workflow.Context) error {
			return p.registerLease(ctx, "live", &leaseRes)
		}},
		{api.StepPowerPXE, p.powerOnPXE},
		{api.StepWaitLive, func(ctx workflow.Context) error {
			return p.waitLive(ctx, leaseRes.HostKey, &live)
		}},
		{api.StepWriteImage, func(ctx workflow.Context) error {
			actx := p.activityCtx(ctx, fmt.Sprintf("stream image to %s:%s (%d bytes)", p.host.Name, p.host.Target(), p.host.Image.Size), 12*time.Hour, p.opts.imageHeartbeat, 0)
			err := workflow.ExecuteActivity(actx, imageA.WriteImage, image.WriteInput{
				Host:       p.host.Name,
				Target:     p.liveTarget(leaseRes.HostKey),
				Image:      p.host.Image,
				Disk:       p.host.Disk,
				RootDevice: p.host.RootDevice,
				Mode:       p.host.Image.Mode,
			}).Get(ctx, &written)
			if written.Disk != nil {
				p.status.TargetDisk = written.Disk
			}
			if err == nil {
				p.status.BytesWritten, p.status.BytesTotal, p.status.MBps = p.host.Image.Size, p.host.Image.Size, written.MBps
				p.status.ETASeconds, p.status.ImagePhase = 0, "done"
			}
			return err
		}},
		{api.StepBootDisk, func(ctx workflow.Context) error {
			if err := p.registerLease(ctx, "disk", nil); err != nil {
				return err
			}
			actx := p.activityCtx(ctx, "boot "+p.host.Name+" from disk", 5*time.Minute, 30*time.Second, 0)
			return workflow.ExecuteActivity(actx, bmcA.BootFromDisk, p.bmcInput()).Get(ctx, nil)
		}},
		{api.StepWaitOS, func(ctx workflow.Context) error {
			actx := p.activityCtx(ctx, "wait for installed OS SSH on "+p.host.Name, p.opts.osSSH+2*time.Minute, time.Minute, 2)
			err := workflow.ExecuteActivity(actx, sshA.WaitForSSH, remote.WaitInput{
				Host:          p.host.Name,
				Target:        p.osTarget(p.host.SSH.HostKey),
				AllowFirstUse: p.host.SSH.HostKey == "",
				Deadline:      p.opts.osSSH.String(),
			}).Get(ctx, &osKey)
			var canceled *temporal.CanceledError
			if err != nil && ctx.Err() == nil && !errors.As(err, &canceled) &&
				workflow.GetVersion(ctx, "os-boot-console", workflow.DefaultVersion, 1) >= 1 {
				return p.withConsole(ctx, err)
			}
			return err
		}},
		{api.StepChef, func(ctx workflow.Context) error {
			if p.host.Chef == nil {
				return nil
			}
			actx := p.activityCtx(ctx, "chef bootstrap "+p.host.Name, 30*time.Minute, 0, 3)
			return workflow.ExecuteActivity(actx, chefA.Bootstrap, chef.BootstrapInput{
				Host:   p.host.Name,
				Target: p.osTarget(osKey.HostKey),
				Chef:   *p.host.Chef,
			}).Get(ctx, nil)
		}},
	}

	for i, s := range steps {
		if err := p.runStep(ctx, i, s.name, s.run); err != nil {
			return api.ProvisionResult{}, err
		}
	}

	p.status.State = api.StateSucceeded
	p.status.Step = api.StepProvisioned
	p.upsert(ctx)
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s provisioned** with image digest `%s`", p.host.Name, written.Digest))
	res = api.ProvisionResult{
		Host:         p.host.Name,
		ImageDigest:  written.Digest,
		BytesWritten: p.host.Image.Size,
		LiveHostKey:  live.Fingerprint,
		OSHostKey:    osKey.HostKey,
		OSHostKeyFP:  osKey.Fingerprint,
		Steps:        p.status.Steps,
		Duration:     workflow.Now(ctx).Sub(started).Round(time.Second).String(),
		Disk:         written.Disk,
	}
	workflow.GetLogger(ctx).Info("host provisioned", "host", p.host.Name, "digest", written.Digest, "run", info.WorkflowExecution.RunID)
	return res, nil
}

// bootTimelineEvery is how often wait-live-ssh reads the boot timeline.
const bootTimelineEvery = time.Minute

// readBootTimeline puts pxe's boot timeline of the host in the status.
// It is for operators only: a failure to read it is logged, never fatal,
// and reported as false.
func (p *provision) readBootTimeline(ctx workflow.Context) bool {
	actx := p.activityCtx(ctx, "read the boot timeline of "+p.host.Name, 30*time.Second, 0, 1)
	var t api.BootTimeline
	if err := workflow.ExecuteActivity(actx, leaseA.BootTimeline, lease.TimelineInput{Host: p.host.Name, MAC: p.host.MAC}).Get(ctx, &t); err != nil {
		if ctx.Err() == nil {
			workflow.GetLogger(ctx).Warn("could not read the boot timeline", "host", p.host.Name, "error", err)
		}
		return false
	}
	p.status.BootTimeline, p.status.BootSummary = &t, t.Summary()
	return true
}

// withConsole reads the host's console log (through the boot timeline)
// after the installed OS did not answer SSH, puts it in the status and
// ends the step's error with its last line: the installed system boots
// from its disk, where pxe sees little or nothing, so the console is what
// tells a GRUB prompt from a kernel panic from an fsck waiting for root.
// Without a console log the error is left as it is.
func (p *provision) withConsole(ctx workflow.Context, err error) error {
	actx := p.activityCtx(ctx, "read the console of "+p.host.Name, 30*time.Second, 0, 1)
	var t api.BootTimeline
	if e := workflow.ExecuteActivity(actx, leaseA.BootTimeline, lease.TimelineInput{Host: p.host.Name, MAC: p.host.MAC}).Get(ctx, &t); e != nil {
		workflow.GetLogger(ctx).Warn("could not read the console", "host", p.host.Name, "error", e)
		return err
	}
	if len(t.Console) == 0 {
		return err
	}
	p.status.BootTimeline = &t
	return annotate(err, t.ConsoleSummary())
}

// waitLive waits for the live system's SSH (reading pxe's boot timeline
// meanwhile) and checks that the host itself, and nobody else, took its
// one-time host key, before anything is sent to it.
func (p *provision) waitLive(ctx workflow.Context, hostKey string, live *remote.WaitResult) error {
	// While the wait runs, read pxe's boot timeline every minute,
	// so the status query shows where a slow boot stands.
	watch := workflow.GetVersion(ctx, "boot-timeline", workflow.DefaultVersion, 1) >= 1
	var stopWatch workflow.CancelFunc = func() {}
	if watch {
		p.status.BootTimeline, p.status.BootSummary = nil, ""
		var wctx workflow.Context
		wctx, stopWatch = workflow.WithCancel(ctx)
		workflow.Go(wctx, func(ctx workflow.Context) {
			for workflow.Sleep(ctx, bootTimelineEvery) == nil {
				p.readBootTimeline(ctx)
			}
		})
	}
	actx := p.activityCtx(ctx, "wait for live system SSH on "+p.host.Name, p.opts.liveSSH+2*time.Minute, time.Minute, 2)
	err := workflow.ExecuteActivity(actx, sshA.WaitForSSH, remote.WaitInput{
		Host:     p.host.Name,
		Target:   p.liveTarget(hostKey),
		Deadline: p.opts.liveSSH.String(),
	}).Get(ctx, live)
	stopWatch()
	if err != nil {
		if watch && p.readBootTimeline(ctx) {
			// Say in the step's error where the boot stopped.
			return annotate(err, "boot so far: "+p.status.BootSummary)
		}
		return err
	}
	// Before the live system gets anything (the image, later the
	// chef key): did its host key reach the host and nobody else?
	if workflow.GetVersion(ctx, "verify-boot-key", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	vctx := p.activityCtx(ctx, "check that only "+p.host.Name+" took its live host key", time.Minute, 0, 3)
	return workflow.ExecuteActivity(vctx, leaseA.VerifyBoot, lease.VerifyInput{
		Host: p.host.Name, MAC: p.host.MAC, HostKey: hostKey,
	}).Get(ctx, nil)
}

// powerOnPXE powers the host on into a network boot; compensation powers
// it off.
func (p *provision) powerOnPXE(ctx workflow.Context) error {
	actx := p.activityCtx(ctx, "power on "+p.host.Name+" into PXE", 5*time.Minute, 30*time.Second, 0)
	if err := workflow.ExecuteActivity(actx, bmcA.PowerOnPXE, p.bmcInput()).Get(ctx, nil); err != nil {
		return err
	}
	p.addCompensation("power off", func(ctx workflow.Context) error {
		actx := p.activityCtx(ctx, "power off "+p.host.Name, 5*time.Minute, 30*time.Second, 5)
		return workflow.ExecuteActivity(actx, bmcA.PowerOff, p.bmcInput()).Get(ctx, nil)
	})
	return nil
}

func (p *provision) bmcInput() bmc.Input { return bmc.Input{Host: p.host.Name, BMC: p.host.BMC} }

func (p *provision) liveTarget(hostKey string) remote.Target {
	return remote.Target{
		Addr:       fmt.Sprintf("%s:%d", p.host.Network.IP, p.host.SSH.LivePort),
		User:       "root",
		Credential: p.host.SSH.Credential,
		HostKey:    hostKey,
		Jump:       p.jump(),
	}
}

func (p *provision) osTarget(hostKey string) remote.Target {
	return remote.Target{
		Addr:       fmt.Sprintf("%s:%d", p.host.Network.IP, p.host.SSH.Port),
		User:       p.host.SSH.User,
		Credential: p.host.SSH.Credential,
		HostKey:    hostKey,
		Jump:       p.jump(),
	}
}

// jump is the host's SSH jump host, if it has one. (Nil adds nothing to
// an activity's input, so runs without one replay unchanged.)
func (p *provision) jump() *remote.Jump {
	j := p.host.SSH.Jump
	if j == nil {
		return nil
	}
	return &remote.Jump{Addr: j.Address, User: j.User, Credential: j.Credential, HostKey: j.HostKey}
}

func (p *provision) registerLease(ctx workflow.Context, profile string, out *lease.RegisterResult) error {
	// A boot ID per run, step and try: a retried boot gets a fresh one-time
	// host key, a retried activity of the same try gets the same one.
	info := workflow.GetInfo(ctx)
	bootID := fmt.Sprintf("%s.%s.%d", info.WorkflowExecution.RunID, p.status.Step, p.status.Try)
	actx := p.activityCtx(ctx, fmt.Sprintf("register lease %s -> %s (%s)", p.host.MAC, p.host.Network.IP, profile), 30*time.Second, 0, 0)
	var r lease.RegisterResult
	err := workflow.ExecuteActivity(actx, leaseA.RegisterLease, lease.RegisterInput{
		Host:          p.host.Name,
		MAC:           p.host.MAC,
		Network:       p.host.Network,
		Profile:       profile,
		BootID:        bootID,
		SSHCredential: p.host.SSH.Credential,
	}).Get(ctx, &r)
	if err != nil {
		return err
	}
	if out != nil {
		*out = r
	}
	p.addCompensation("remove lease", func(ctx workflow.Context) error {
		actx := p.activityCtx(ctx, "remove lease "+p.host.MAC, 30*time.Second, 0, 5)
		return workflow.ExecuteActivity(actx, leaseA.RemoveLease, lease.RemoveInput{Host: p.host.Name, MAC: p.host.MAC}).Get(ctx, nil)
	})
	return nil
}

// addCompensation registers an undo once; registering the same name twice
// (a retried step) keeps one.
func (p *provision) addCompensation(name string, fn func(ctx workflow.Context) error) {
	p.undo.addOnce(name, fn)
}

// activityCtx sets a step's timeouts and retry policy. attempts 0 takes the
// run's configured StepAttempts.
func (p *provision) activityCtx(ctx workflow.Context, summary string, startToClose, heartbeat time.Duration, attempts int32) workflow.Context {
	if attempts == 0 {
		attempts = p.opts.attempts
	}
	interval := p.opts.retryInterval
	if interval == 0 {
		interval = 5 * time.Second
	}
	var queue string
	if p.host.Pod != "" {
		queue = api.PodQueue(workflow.GetInfo(ctx).TaskQueueName, p.host.Pod)
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           queue,
		StartToCloseTimeout: startToClose,
		HeartbeatTimeout:    heartbeat,
		Summary:             summary,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        interval,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        attempts,
			NonRetryableErrorTypes: activities.NonRetryableTypes,
		},
	})
}

// runStep runs one step until it succeeds, is skipped, or the run ends.
// refuseWipe stops a run that would wipe a host a completed run provisioned,
// unless the input says reprovision: true. The check lives here, not in the
// starter, so every way of starting the workflow is held to it.
func (p *provision) refuseWipe(ctx workflow.Context, in api.ProvisionInput) error {
	if in.Reprovision || workflow.GetVersion(ctx, "wipe-guard", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	actx := p.activityCtx(ctx, "was "+p.host.Name+" provisioned before?", time.Minute, 0, 3)
	var last runs.CompletedProvision
	if err := workflow.ExecuteActivity(actx, runsA.LastCompletedProvision, p.host.Name).Get(ctx, &last); err != nil {
		return err
	}
	if !last.Found {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"%s was provisioned by run %s (completed %s); provisioning it again wipes its disk: start with \"reprovision\": true (starter provision --reprovision)",
		p.host.Name, last.RunID, last.ClosedAt.Format(time.RFC3339)), ErrTypeWouldWipeProvisionedHost, nil)
}

func (p *provision) runStep(ctx workflow.Context, idx int, name string, run func(ctx workflow.Context) error) error {
	rec := &p.status.Steps[idx]
	p.status.Step = name
	p.status.Try = 0
	p.status.Skippable = api.SkippableSteps[name]
	for {
		p.status.Try++
		p.status.State = api.StateRunning
		p.status.StepStarted = workflow.Now(ctx)
		rec.State, rec.Started, rec.Tries = "running", p.status.StepStarted, p.status.Try
		p.upsert(ctx)
		workflow.SetCurrentDetails(ctx, fmt.Sprintf("%s: **%s** (try %d)", p.status.Host, name, p.status.Try))

		sctx, cancel := workflow.WithCancel(ctx)
		p.stepCancel = cancel
		err := run(sctx)
		cancel()
		p.stepCancel = nil

		if p.abortReason != "" {
			return p.abort(ctx, name)
		}
		if err == nil {
			rec.State, rec.Finished, rec.Error, rec.ErrorType = "done", workflow.Now(ctx), "", ""
			p.status.LastError, p.status.LastErrorType = "", ""
			return nil
		}
		msg, typ := describe(err)
		rec.Error, rec.ErrorType = msg, typ
		p.status.LastError, p.status.LastErrorType = msg, typ
		workflow.GetLogger(ctx).Warn("step failed", "host", p.status.Host, "step", name, "try", p.status.Try, "error", msg, "type", typ)
		if name == api.StepValidate && (activities.IsInputError(typ) || typ == ErrTypeWouldWipeProvisionedHost) {
			// Bad input: nothing was touched, nothing to wait for.
			rec.State = "failed"
			p.status.State = api.StateFailed
			p.upsert(ctx)
			return err
		}
		d, err := p.park(ctx, rec)
		if err != nil {
			return err
		}
		switch d.action {
		case api.UpdateRetry:
			continue
		case api.UpdateSkip:
			rec.State, rec.Finished, rec.Reason = "skipped", workflow.Now(ctx), d.reason
			return nil
		default: // abort
			return p.abort(ctx, name)
		}
	}
}

// park waits in needs-attention for an operator's decision.
func (p *provision) park(ctx workflow.Context, rec *api.StepRecord) (decision, error) {
	now := workflow.Now(ctx)
	rec.State = "failed"
	p.status.State = api.StateNeedsAttention
	p.status.AttentionSince = now
	p.status.AttentionDeadline = now.Add(p.opts.attention)
	p.pending = nil
	p.upsert(ctx)
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("%s **needs attention** at %s: %s\n\n`starter retry|skip|abort %s --reason ...`", p.status.Host, rec.Name, p.status.LastError, p.status.Host))
	ok, err := workflow.AwaitWithTimeout(ctx, p.opts.attention, func() bool { return p.pending != nil || p.abortReason != "" })
	if err != nil {
		return decision{}, err
	}
	p.status.AttentionSince, p.status.AttentionDeadline = time.Time{}, time.Time{}
	if !ok {
		p.abortReason = "attention deadline of " + p.opts.attention.String() + " passed"
		if cerr := p.compensate(ctx); cerr != nil {
			return decision{}, cerr
		}
		p.status.State = api.StateFailed
		p.upsert(ctx)
		return decision{}, activities.NonRetryable(
			fmt.Sprintf("%s needed attention at step %s for %s and nobody answered; last error: %s", p.status.Host, rec.Name, p.opts.attention, p.status.LastError),
			ErrTypeAttentionDeadlineExceeded, nil)
	}
	if p.abortReason != "" {
		return decision{action: api.UpdateAbort, reason: p.abortReason}, nil
	}
	d := *p.pending
	p.pending = nil
	return d, nil
}

func (p *provision) abort(ctx workflow.Context, step string) error {
	if err := p.compensate(ctx); err != nil {
		return err
	}
	p.status.State = api.StateAborted
	p.upsert(ctx)
	what := p.what
	if what == "" {
		what = "provisioning"
	}
	return activities.NonRetryable(
		fmt.Sprintf("%s of %s aborted at step %s: %s", what, p.status.Host, step, p.abortReason), ErrTypeProvisionAborted, nil)
}

// compensate undoes, newest first, what the run did. It runs on a
// disconnected context so it completes even when the run is being cancelled.
func (p *provision) compensate(ctx workflow.Context) error {
	p.status.State = api.StateCompensating
	p.upsert(ctx)
	return p.undo.compensate(ctx)
}

// annotate adds what an operator needs next to a step's error: its
// message gets "; more", its type (retryable or not, the runbook's key)
// and cause stay.
func annotate(err error, more string) error {
	msg, typ := describe(err)
	return temporal.NewApplicationErrorWithOptions(msg+"; "+more, typ, temporal.ApplicationErrorOptions{Cause: err})
}

func describe(err error) (msg, typ string) {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message(), appErr.Type()
	}
	var toErr *temporal.TimeoutError
	if errors.As(err, &toErr) {
		return err.Error(), ErrTypeTimeout
	}
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) {
		return err.Error(), ErrTypeCanceled
	}
	return err.Error(), ""
}

func (p *provision) upsert(ctx workflow.Context) {
	host := p.status.Host
	if host == "" {
		host = p.in.Host
	}
	err := workflow.UpsertTypedSearchAttributes(ctx,
		hostKey.ValueSet(host), stepKey.ValueSet(p.status.Step), stateKey.ValueSet(p.status.State))
	if err != nil {
		workflow.GetLogger(ctx).Warn("upsert search attributes", "error", err)
	}
}

func (p *provision) registerHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, api.QueryStatus, func() (api.ProvisionStatus, error) {
		return p.status, nil
	}); err != nil {
		return err
	}
	// The image stream reports its progress every few seconds; the status
	// query shows the latest while the write-image step runs. (Receiving
	// a signal issues no command, so older histories replay unchanged.)
	progress := workflow.GetSignalChannel(ctx, api.SignalImageProgress)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var ip api.ImageProgress
			progress.Receive(ctx, &ip)
			if p.status.Step != api.StepWriteImage || p.status.State != api.StateRunning || ip.Total != p.host.Image.Size {
				continue // late or stray: the step's own result wins
			}
			p.status.BytesWritten, p.status.BytesTotal = ip.Offset, ip.Total
			p.status.MBps, p.status.ETASeconds = ip.MBps, ip.ETASeconds
			p.status.ImagePhase, p.status.ImageProgressAt = ip.Phase, ip.At
			if ip.Disk != nil {
				p.status.TargetDisk = ip.Disk
			}
		}
	})
	needReason := func(r api.OperatorRequest) error { return r.Validate() }
	parked := func(action string) error {
		if p.status.State != api.StateNeedsAttention {
			return fmt.Errorf("%s refused: %s is %s at step %s, not needs-attention", action, p.status.Host, p.status.State, p.status.Step)
		}
		if p.pending != nil {
			return fmt.Errorf("%s refused: a %s is already pending", action, p.pending.action)
		}
		return nil
	}
	record := func(ctx workflow.Context, action string, r api.OperatorRequest) {
		r.Reason = strings.TrimSpace(r.Reason)
		p.status.AddAction(api.OperatorAction{Action: action, Step: p.status.Step, Reason: r.Reason, At: workflow.Now(ctx)})
		workflow.GetLogger(ctx).Info("operator action", "host", p.status.Host, "action", action, "step", p.status.Step, "reason", r.Reason)
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, api.UpdateRetry,
		func(ctx workflow.Context, r api.OperatorRequest) (string, error) {
			record(ctx, api.UpdateRetry, r)
			p.pending = &decision{action: api.UpdateRetry, reason: r.Reason}
			return "retrying " + p.status.Step, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(r api.OperatorRequest) error {
			if err := needReason(r); err != nil {
				return err
			}
			return parked(api.UpdateRetry)
		}}); err != nil {
		return err
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, api.UpdateSkip,
		func(ctx workflow.Context, r api.OperatorRequest) (string, error) {
			record(ctx, api.UpdateSkip, r)
			p.pending = &decision{action: api.UpdateSkip, reason: r.Reason}
			return "skipping " + p.status.Step, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(r api.OperatorRequest) error {
			if err := needReason(r); err != nil {
				return err
			}
			if err := parked(api.UpdateSkip); err != nil {
				return err
			}
			if !api.SkippableSteps[p.status.Step] {
				return fmt.Errorf("skip refused: step %s cannot be skipped (skippable: %s, %s)", p.status.Step, api.StepBootDisk, api.StepChef)
			}
			return nil
		}}); err != nil {
		return err
	}
	return workflow.SetUpdateHandlerWithOptions(ctx, api.UpdateAbort,
		func(ctx workflow.Context, r api.OperatorRequest) (string, error) {
			record(ctx, api.UpdateAbort, r)
			p.abortReason = r.Reason
			if p.stepCancel != nil {
				p.stepCancel()
			}
			return "aborting at " + p.status.Step + ": compensation runs (power off, lease removed)", nil
		},
		workflow.UpdateHandlerOptions{Validator: func(r api.OperatorRequest) error {
			if err := needReason(r); err != nil {
				return err
			}
			switch p.status.State {
			case api.StateRunning, api.StateNeedsAttention:
			default:
				return fmt.Errorf("abort refused: %s is %s", p.status.Host, p.status.State)
			}
			if p.abortReason != "" {
				return errors.New("abort refused: already aborting")
			}
			return nil
		}})
}
