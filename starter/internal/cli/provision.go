package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/api"
)

func (g globals) provision(ctx context.Context, conn *conn, args []string) int {
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	wait := fs.Bool("wait", false, "wait for the run to finish, showing progress")
	inv := fs.String("inventory", "", "check the host's entry in this inventory file before starting (the worker uses its own)")
	reprovision := fs.Bool("reprovision", false, "provision a host that was provisioned before (wipes its disk)")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 {
		fmt.Fprintln(g.stderr, "usage: starter provision HOST [--wait] [--inventory FILE] [--reprovision]")
		return ExitUsage
	}
	host := pos[0]
	if !api.ValidName(host) {
		fmt.Fprintf(g.stderr, "starter: %q is not a host name\n", host)
		return ExitUsage
	}
	in := api.ProvisionInput{Host: host, Reprovision: *reprovision}
	if *inv != "" {
		i, err := api.LoadInventory(*inv)
		if err != nil {
			fmt.Fprintf(g.stderr, "starter: %v\n", err)
			return ExitFailed
		}
		if _, err := i.Lookup(host); err != nil {
			fmt.Fprintf(g.stderr, "starter: %v\n", err)
			return ExitFailed
		}
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	id := api.ProvisionWorkflowID(host)
	run, err := g.startHostRun(ctx, c, id, host, api.WorkflowProvisionHost, in, "provision "+host,
		fmt.Sprintf("Bare-metal provisioning of **%s**. On-call: `starter status %s`, `starter retry|skip|abort %s --reason ...`", host, host, host))
	if err != nil {
		return g.startFailed(err, id, "provisioning of "+host)
	}
	if g.JSON {
		_ = json.NewEncoder(g.stdout).Encode(map[string]string{"workflow_id": id, "run_id": run.GetRunID(), "url": g.link(id)})
	} else {
		fmt.Fprintf(g.stdout, "started %s (run %s)\n  %s\n", id, run.GetRunID(), g.link(id))
	}
	if !*wait {
		return ExitOK
	}
	var res api.ProvisionResult
	return g.waitFor(ctx, c, id, run, host, &res, func() string {
		return fmt.Sprintf("%s provisioned in %s: image %s (%d bytes), OS host key %s", res.Host, res.Duration, res.ImageDigest, res.BytesWritten, res.OSHostKeyFP)
	})
}

// startHostRun starts a run on one host (ProvisionHost, DecommissionHost)
// under its one workflow ID, refused while another holds it, with the
// search attributes on-call filters by set from the start.
func (g globals) startHostRun(ctx context.Context, c client.Client, id, host, workflow string, in any, summary, details string) (client.WorkflowRun, error) {
	return c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                g.TaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            summary,
		StaticDetails:                            details,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(api.SearchAttrHost).ValueSet(host),
			temporal.NewSearchAttributeKeyKeyword(api.SearchAttrStep).ValueSet(api.StepValidate),
			temporal.NewSearchAttributeKeyKeyword(api.SearchAttrState).ValueSet(api.StateRunning),
		),
	}, workflow, in)
}

// waitFor follows a run of ProvisionHost or DecommissionHost (they share
// the status query) until it ends, printing each new step line. res
// receives the result, which summary describes; answerAs is what the
// operator commands name the run by.
func (g globals) waitFor(ctx context.Context, c client.Client, id string, run client.WorkflowRun, answerAs string, res any, summary func() string) int {
	done := make(chan error, 1)
	go func() { done <- run.Get(ctx, res) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := ""
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(g.stderr, "%s failed: %v\n", id, err)
				return ExitFailed
			}
			if g.JSON {
				_ = json.NewEncoder(g.stdout).Encode(res)
			} else {
				fmt.Fprintln(g.stdout, summary())
			}
			return ExitOK
		case <-tick.C:
			st, prog, err := fetchStatus(ctx, c, id)
			if err != nil {
				continue
			}
			line := progressLine(st, prog)
			if line != last && !g.JSON {
				fmt.Fprintln(g.stdout, line)
				last = line
			}
			if st.State == api.StateNeedsAttention {
				fmt.Fprintf(g.stderr, "%s needs attention at %s: %s\n  answer with: starter retry|skip|abort %s --reason \"...\"\n", st.Host, st.Step, st.LastError, answerAs)
				return ExitAttention
			}
		case <-ctx.Done():
			return ExitFailed
		}
	}
}

// imageProgress mirrors the image stream's heartbeat details (JSON).
type imageProgress struct {
	Offset int64   `json:"offset"`
	Total  int64   `json:"total"`
	MBps   float64 `json:"mbps"`
}

type pendingInfo struct {
	Activity    string
	Attempt     int32
	LastFailure string
	Progress    *imageProgress
}

func fetchStatus(ctx context.Context, c client.Client, id string) (api.ProvisionStatus, []pendingInfo, error) {
	var st api.ProvisionStatus
	v, err := c.QueryWorkflow(ctx, id, "", api.QueryStatus)
	if err != nil {
		return st, nil, err
	}
	if err := v.Get(&st); err != nil {
		return st, nil, err
	}
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return st, withQueryProgress(st, nil), nil
	}
	var out []pendingInfo
	for _, pa := range desc.GetPendingActivities() {
		pi := pendingInfo{Activity: pa.GetActivityType().GetName(), Attempt: pa.GetAttempt()}
		if f := pa.GetLastFailure(); f != nil {
			pi.LastFailure = f.GetMessage()
		}
		if hd := pa.GetHeartbeatDetails(); hd != nil && len(hd.GetPayloads()) > 0 {
			var p imageProgress
			if err := converter.GetDefaultDataConverter().FromPayload(hd.GetPayloads()[0], &p); err == nil && p.Total > 0 {
				pi.Progress = &p
			}
		}
		out = append(out, pi)
	}
	return st, withQueryProgress(st, out), nil
}

// withQueryProgress fills in the image progress the run's status query
// reports (the stream signals it every few seconds) where no heartbeat
// shows it: before the stream's first heartbeat reaches the server, or
// when describing the run was not allowed.
func withQueryProgress(st api.ProvisionStatus, pend []pendingInfo) []pendingInfo {
	if st.Step != api.StepWriteImage || st.BytesTotal <= 0 || st.BytesWritten >= st.BytesTotal {
		return pend
	}
	p := &imageProgress{Offset: st.BytesWritten, Total: st.BytesTotal, MBps: st.MBps}
	for i := range pend {
		if pend[i].Activity == "WriteImage" {
			if pend[i].Progress == nil || pend[i].Progress.Offset < p.Offset {
				pend[i].Progress = p
			}
			return pend
		}
	}
	return append(pend, pendingInfo{Activity: "WriteImage", Progress: p})
}

func progressLine(st api.ProvisionStatus, pend []pendingInfo) string {
	s := fmt.Sprintf("%-10s %-16s try %d  %s", st.Host, st.Step, st.Try, st.State)
	for _, p := range pend {
		if p.Attempt > 1 {
			s += fmt.Sprintf("  [%s attempt %d: %s]", p.Activity, p.Attempt, p.LastFailure)
		}
		if p.Progress != nil {
			s += "  " + bar(p.Progress)
		}
	}
	return s
}

func bar(p *imageProgress) string {
	const width = 24
	frac := float64(p.Offset) / float64(p.Total)
	n := int(frac * width)
	eta := ""
	if p.MBps > 0 {
		eta = (time.Duration(float64(p.Total-p.Offset)/(p.MBps*1e6)) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("[%s%s] %5.1f%% %s/%s %.0f MB/s ETA %s", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100,
		human(p.Offset), human(p.Total), p.MBps, eta)
}

// consoleBlock is the end of the host's serial console, as the worker's
// console directory held it when the boot timeline was last read, or "".
// The worker has cleaned it; control characters are dropped again here, so
// nothing in a run's history can drive the operator's terminal.
func consoleBlock(t *api.BootTimeline) string {
	if t == nil || len(t.Console) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  console (last %d lines", len(t.Console))
	if !t.ConsoleAt.IsZero() {
		fmt.Fprintf(&b, ", written %s", t.ConsoleAt.UTC().Format(time.RFC3339))
	}
	b.WriteString("):\n")
	for _, l := range t.Console {
		b.WriteString("    | " + strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return -1
			}
			return r
		}, l) + "\n")
	}
	return b.String()
}

func human(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func (g globals) status(ctx context.Context, conn *conn, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(g.stderr, "usage: starter status HOST|WORKFLOW-ID")
		return ExitUsage
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	id := workflowID(args[0])
	st, pend, err := fetchStatus(ctx, c, id)
	if err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			fmt.Fprintf(g.stderr, "starter: no run %s\n", id)
			return ExitFailed
		}
		fmt.Fprintf(g.stderr, "starter: status of %s: %v\n", id, err)
		return ExitFailed
	}
	if g.JSON {
		_ = json.NewEncoder(g.stdout).Encode(map[string]any{"status": st, "pending": pend})
		return ExitOK
	}
	fmt.Fprintf(g.stdout, "%s  %s  step %s (try %d)\n  %s\n", st.Host, st.State, st.Step, st.Try, g.link(id))
	if st.Pod != "" {
		fmt.Fprintf(g.stdout, "  pod %s: its steps run on the pod's worker (task queue %s)%s\n", st.Pod, st.PodQueue, g.pollers(ctx, c, st.PodQueue))
	}
	if st.LastError != "" {
		fmt.Fprintf(g.stdout, "  last error [%s]: %s\n", st.LastErrorType, st.LastError)
	}
	if st.BootSummary != "" {
		fmt.Fprintf(g.stdout, "  boot (rackflow-pxe): %s\n", st.BootSummary)
	}
	fmt.Fprint(g.stdout, consoleBlock(st.BootTimeline))
	if st.TargetDisk != nil {
		fmt.Fprintf(g.stdout, "  target disk: %s, from hints %s\n", st.TargetDisk, st.TargetDisk.Hints)
	}
	if st.State == api.StateNeedsAttention {
		fmt.Fprintf(g.stdout, "  needs attention since %s (gives up %s); skippable: %v\n", st.AttentionSince.Format(time.RFC3339), st.AttentionDeadline.Format(time.RFC3339), st.Skippable)
	}
	for _, p := range pend {
		fmt.Fprintf(g.stdout, "  running %s attempt %d", p.Activity, p.Attempt)
		if p.LastFailure != "" {
			fmt.Fprintf(g.stdout, " (last failure: %s)", p.LastFailure)
		}
		if p.Progress != nil {
			fmt.Fprintf(g.stdout, "  %s", bar(p.Progress))
		}
		fmt.Fprintln(g.stdout)
	}
	tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tSTATE\tTRIES\tTOOK\tNOTE")
	for _, s := range st.Steps {
		took := ""
		if !s.Finished.IsZero() && !s.Started.IsZero() {
			took = s.Finished.Sub(s.Started).Round(time.Second).String()
		}
		note := s.Error
		if s.Reason != "" {
			note = "skipped: " + s.Reason
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", s.Name, s.State, s.Tries, took, note)
	}
	_ = tw.Flush()
	for _, a := range st.Actions {
		fmt.Fprintf(g.stdout, "  %s %s at %s: %s\n", a.At.Format(time.RFC3339), a.Action, a.Step, a.Reason)
	}
	return ExitOK
}

func (g globals) list(ctx context.Context, conn *conn, args []string) int {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	stuck := fs.Bool("stuck", false, "only runs that need attention or sit in one step, longest first")
	if _, err := parseInterleaved(fs, args); err != nil {
		return ExitUsage
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	q := fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", api.WorkflowProvisionHost)
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: g.Namespace, Query: q})
	if err != nil {
		fmt.Fprintf(g.stderr, "starter: list: %v\n", err)
		return ExitFailed
	}
	type row struct {
		st   api.ProvisionStatus
		id   string
		wait time.Duration
	}
	var rows []row
	now := time.Now()
	for _, e := range resp.GetExecutions() {
		id := e.GetExecution().GetWorkflowId()
		v, err := c.QueryWorkflow(ctx, id, "", api.QueryStatus)
		var st api.ProvisionStatus
		if err == nil {
			_ = v.Get(&st)
		}
		since := st.StepStarted
		if !st.AttentionSince.IsZero() {
			since = st.AttentionSince
		}
		r := row{st: st, id: id}
		if !since.IsZero() {
			r.wait = now.Sub(since)
		}
		if *stuck && st.State != api.StateNeedsAttention && r.wait < 10*time.Minute {
			continue
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		ai, aj := rows[i].st.State == api.StateNeedsAttention, rows[j].st.State == api.StateNeedsAttention
		if ai != aj {
			return ai
		}
		return rows[i].wait > rows[j].wait
	})
	if g.JSON {
		out := make([]api.ProvisionStatus, len(rows))
		for i, r := range rows {
			out[i] = r.st
		}
		_ = json.NewEncoder(g.stdout).Encode(out)
		return ExitOK
	}
	tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tSTEP\tTRY\tFOR\tLAST ERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.st.Host, r.st.State, r.st.Step, r.st.Try, r.wait.Round(time.Second), truncate(r.st.LastError, 80))
	}
	_ = tw.Flush()
	return ExitOK
}

func (g globals) operator(ctx context.Context, conn *conn, action string, args []string) int {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	reason := fs.String("reason", "", "why (recorded in the run's history)")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 || *reason == "" {
		fmt.Fprintf(g.stderr, "usage: starter %s HOST --reason \"...\"\n", action)
		return ExitUsage
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	id := workflowID(pos[0])
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   id,
		UpdateName:   action,
		Args:         []any{api.OperatorRequest{Reason: *reason}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	var msg string
	if err == nil {
		err = h.Get(ctx, &msg)
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "starter: %s %s refused: %v\n", action, id, err)
		return ExitRefused
	}
	fmt.Fprintf(g.stdout, "%s: %s\n", id, msg)
	return ExitOK
}

// pollers says when a worker last polled queue for activities: a pod's
// worker that is down shows as a poll minutes old (the server forgets a
// poller after about five minutes of silence), or none at all.
func (g globals) pollers(ctx context.Context, c client.Client, queue string) string {
	resp, err := c.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
	if err != nil {
		return ""
	}
	var last time.Time
	for _, p := range resp.GetPollers() {
		if t := p.GetLastAccessTime().AsTime(); t.After(last) {
			last = t
		}
	}
	if last.IsZero() {
		return "; no worker polls it: is the pod's worker running?"
	}
	return fmt.Sprintf("; last polled %s ago by %d worker(s)", time.Since(last).Round(time.Second), len(resp.GetPollers()))
}
