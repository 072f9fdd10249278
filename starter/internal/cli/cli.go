// Command starter is the CLI of rackflow's service owners and on-call
// engineers: it starts provisioning runs, shows where a host is, and sends
// the retry, skip and abort Updates to a parked run. It talks to Temporal
// only; it never touches a BMC, a host or the pxe service itself.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/api"
)

// Exit codes, so scripts can tell outcomes apart.
const (
	exitOK        = 0
	exitFailed    = 1 // the workflow failed, or the command did
	exitUsage     = 2
	exitRefused   = 3 // the server or the workflow refused the request
	exitAttention = 4 // --wait: the run parked in needs-attention
	exitPartial   = 5 // a deploy finished, but some members failed
)

type globals struct {
	address, namespace, taskQueue, uiURL string
	jsonOut                              bool
	stdout, stderr                       io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

const usage = `starter — rackflow's CLI

  starter provision HOST [--wait] [--inventory FILE] [--reprovision]
                                                        start provisioning HOST (workflow provision/HOST)
  starter status HOST|WORKFLOW-ID                       where a run is: step, try, error, image progress
  starter list [--stuck]                                running provisioning runs (stuck first with --stuck)
  starter retry|skip|abort HOST --reason "..."          answer a run that needs attention
  starter validate --inventory FILE | -f SERVICE.yaml  check an inventory or a deploy spec; every error at once
  starter deploy -f SERVICE.yaml [--wait]               deploy a service (workflow deploy/SERVICE)
  starter publish|unpublish -f VIP.yaml [--wait]       publish a service on the NetScaler (workflow publish/VIP:PORT)
  starter vmnet -f VMNET.yaml [--wait]                  second NIC + routes for a CloudStack VM (workflow vmnet/VM/NETWORK)
  starter history HOST                                  every step and attempt of HOST's provisioning, with errors

Global flags (before the command): --address (TEMPORAL_ADDRESS), --namespace (TEMPORAL_NAMESPACE),
--task-queue (RACKFLOW_TASK_QUEUE), --ui (RACKFLOW_UI_URL), --json.
`

func run(args []string, stdout, stderr io.Writer) int {
	g := globals{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("starter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.StringVar(&g.address, "address", envOr("TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	fs.StringVar(&g.namespace, "namespace", envOr("TEMPORAL_NAMESPACE", "default"), "namespace")
	fs.StringVar(&g.taskQueue, "task-queue", envOr("RACKFLOW_TASK_QUEUE", api.DefaultTaskQueue), "task queue")
	fs.StringVar(&g.uiURL, "ui", envOr("RACKFLOW_UI_URL", "http://127.0.0.1:8233"), "Temporal Web UI base URL")
	fs.BoolVar(&g.jsonOut, "json", false, "JSON output for scripts")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cmd, cargs := rest[0], rest[1:]
	if cmd == "validate" {
		return g.validate(cargs)
	}
	// Connect only once a command's arguments are known to be right, so
	// usage errors never wait on a server.
	c := &conn{ctx: ctx, g: g}
	defer c.close()
	switch cmd {
	case "provision":
		return g.provision(ctx, c, cargs)
	case "status":
		return g.status(ctx, c, cargs)
	case "list":
		return g.list(ctx, c, cargs)
	case "deploy":
		return g.deploy(ctx, c, cargs)
	case "history":
		return g.history(ctx, c, cargs)
	case "publish":
		return g.publish(ctx, c, cargs)
	case "unpublish":
		return g.unpublish(ctx, c, cargs)
	case "vmnet":
		return g.vmnet(ctx, c, cargs)
	case api.UpdateRetry, api.UpdateSkip, api.UpdateAbort:
		return g.operator(ctx, c, cmd, cargs)
	default:
		fmt.Fprintf(stderr, "starter: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

// parseInterleaved lets flags follow positional arguments
// ("starter retry node07 --reason x").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (g globals) validate(args []string) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	inv := fs.String("inventory", envOr("RACKFLOW_INVENTORY", ""), "inventory file")
	svc := fs.String("f", "", "deploy spec file")
	if _, err := parseInterleaved(fs, args); err != nil || (*inv == "" && *svc == "") {
		fmt.Fprintln(g.stderr, "usage: starter validate --inventory FILE | -f SERVICE.yaml")
		return exitUsage
	}
	if *svc != "" {
		d, err := api.LoadDeploySpec(*svc)
		if err != nil {
			fmt.Fprintln(g.stderr, err)
			return exitFailed
		}
		fmt.Fprintf(g.stdout, "%s: service %s with %d hosts and %d VMs, valid\n", *svc, d.Service, len(d.Hosts), len(d.VMs))
		return exitOK
	}
	i, err := api.LoadInventory(*inv)
	if err != nil {
		fmt.Fprintln(g.stderr, err)
		return exitFailed
	}
	fmt.Fprintf(g.stdout, "%s: %d hosts, all valid\n", *inv, len(i.Hosts))
	return exitOK
}

func (g globals) link(id string) string {
	return fmt.Sprintf("%s/namespaces/%s/workflows/%s", strings.TrimRight(g.uiURL, "/"), url.PathEscape(g.namespace), url.PathEscape(id))
}

func (g globals) provision(ctx context.Context, conn *conn, args []string) int {
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	wait := fs.Bool("wait", false, "wait for the run to finish, showing progress")
	inv := fs.String("inventory", "", "send the host's entry from this inventory instead of the worker's")
	reprovision := fs.Bool("reprovision", false, "provision a host that was provisioned before (wipes its disk)")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 {
		fmt.Fprintln(g.stderr, "usage: starter provision HOST [--wait] [--inventory FILE]")
		return exitUsage
	}
	host := pos[0]
	if !api.ValidName(host) {
		fmt.Fprintf(g.stderr, "starter: %q is not a host name\n", host)
		return exitUsage
	}
	in := api.ProvisionInput{Host: host}
	if *inv != "" {
		i, err := api.LoadInventory(*inv)
		if err != nil {
			fmt.Fprintf(g.stderr, "starter: %v\n", err)
			return exitFailed
		}
		h, err := i.Lookup(host)
		if err != nil {
			fmt.Fprintf(g.stderr, "starter: %v\n", err)
			return exitFailed
		}
		in.Spec = &h
	}
	c, ok := conn.get()
	if !ok {
		return exitFailed
	}
	id := api.ProvisionWorkflowID(host)
	if !*reprovision {
		desc, err := c.DescribeWorkflowExecution(ctx, id, "")
		if err == nil && desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			info := desc.GetWorkflowExecutionInfo()
			fmt.Fprintf(g.stderr, "starter: %s was provisioned at %s (run %s); provisioning again wipes its disk: add --reprovision\n",
				host, info.GetCloseTime().AsTime().Format(time.RFC3339), info.GetExecution().GetRunId())
			return exitRefused
		}
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                g.taskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            "provision " + host,
		StaticDetails:                            fmt.Sprintf("Bare-metal provisioning of **%s**. On-call: `starter status %s`, `starter retry|skip|abort %s --reason ...`", host, host, host),
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(api.SearchAttrHost).ValueSet(host),
			temporal.NewSearchAttributeKeyKeyword(api.SearchAttrStep).ValueSet(api.StepValidate),
			temporal.NewSearchAttributeKeyKeyword(api.SearchAttrState).ValueSet(api.StateRunning),
		),
	}, api.WorkflowProvisionHost, in)
	if err != nil {
		return g.startFailed(err, id, "provisioning of "+host)
	}
	if g.jsonOut {
		_ = json.NewEncoder(g.stdout).Encode(map[string]string{"workflow_id": id, "run_id": run.GetRunID(), "url": g.link(id)})
	} else {
		fmt.Fprintf(g.stdout, "started %s (run %s)\n  %s\n", id, run.GetRunID(), g.link(id))
	}
	if !*wait {
		return exitOK
	}
	return g.waitFor(ctx, c, id, run)
}

func (g globals) waitFor(ctx context.Context, c client.Client, id string, run client.WorkflowRun) int {
	done := make(chan error, 1)
	var res api.ProvisionResult
	go func() { done <- run.Get(ctx, &res) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := ""
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(g.stderr, "%s failed: %v\n", id, err)
				return exitFailed
			}
			if g.jsonOut {
				_ = json.NewEncoder(g.stdout).Encode(res)
			} else {
				fmt.Fprintf(g.stdout, "%s provisioned in %s: image %s (%d bytes), OS host key %s\n", res.Host, res.Duration, res.ImageDigest, res.BytesWritten, res.OSHostKeyFP)
			}
			return exitOK
		case <-tick.C:
			st, prog, err := fetchStatus(ctx, c, id)
			if err != nil {
				continue
			}
			line := progressLine(st, prog)
			if line != last && !g.jsonOut {
				fmt.Fprintln(g.stdout, line)
				last = line
			}
			if st.State == api.StateNeedsAttention {
				fmt.Fprintf(g.stderr, "%s needs attention at %s: %s\n  answer with: starter retry|skip|abort %s --reason \"...\"\n", st.Host, st.Step, st.LastError, st.Host)
				return exitAttention
			}
		case <-ctx.Done():
			return exitFailed
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

func workflowID(arg string) string {
	if strings.Contains(arg, "/") {
		return arg
	}
	return api.ProvisionWorkflowID(arg)
}

func (g globals) status(ctx context.Context, conn *conn, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(g.stderr, "usage: starter status HOST|WORKFLOW-ID")
		return exitUsage
	}
	c, ok := conn.get()
	if !ok {
		return exitFailed
	}
	id := workflowID(args[0])
	st, pend, err := fetchStatus(ctx, c, id)
	if err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			fmt.Fprintf(g.stderr, "starter: no run %s\n", id)
			return exitFailed
		}
		fmt.Fprintf(g.stderr, "starter: status of %s: %v\n", id, err)
		return exitFailed
	}
	if g.jsonOut {
		_ = json.NewEncoder(g.stdout).Encode(map[string]any{"status": st, "pending": pend})
		return exitOK
	}
	fmt.Fprintf(g.stdout, "%s  %s  step %s (try %d)\n  %s\n", st.Host, st.State, st.Step, st.Try, g.link(id))
	if st.LastError != "" {
		fmt.Fprintf(g.stdout, "  last error [%s]: %s\n", st.LastErrorType, st.LastError)
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
	return exitOK
}

func (g globals) list(ctx context.Context, conn *conn, args []string) int {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	stuck := fs.Bool("stuck", false, "only runs that need attention or sit in one step, longest first")
	if _, err := parseInterleaved(fs, args); err != nil {
		return exitUsage
	}
	c, ok := conn.get()
	if !ok {
		return exitFailed
	}
	q := fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", api.WorkflowProvisionHost)
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: g.namespace, Query: q})
	if err != nil {
		fmt.Fprintf(g.stderr, "starter: list: %v\n", err)
		return exitFailed
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
	if g.jsonOut {
		out := make([]api.ProvisionStatus, len(rows))
		for i, r := range rows {
			out[i] = r.st
		}
		_ = json.NewEncoder(g.stdout).Encode(out)
		return exitOK
	}
	tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tSTEP\tTRY\tFOR\tLAST ERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.st.Host, r.st.State, r.st.Step, r.st.Try, r.wait.Round(time.Second), truncate(r.st.LastError, 80))
	}
	_ = tw.Flush()
	return exitOK
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func (g globals) operator(ctx context.Context, conn *conn, action string, args []string) int {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	reason := fs.String("reason", "", "why (recorded in the run's history)")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 || *reason == "" {
		fmt.Fprintf(g.stderr, "usage: starter %s HOST --reason \"...\"\n", action)
		return exitUsage
	}
	c, ok := conn.get()
	if !ok {
		return exitFailed
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
		return exitRefused
	}
	fmt.Fprintf(g.stdout, "%s: %s\n", id, msg)
	return exitOK
}

type quietLogger struct{}

func (quietLogger) Debug(string, ...interface{}) {}
func (quietLogger) Info(string, ...interface{})  {}
func (quietLogger) Warn(string, ...interface{})  {}
func (quietLogger) Error(string, ...interface{}) {}

// conn dials Temporal on first use.
type conn struct {
	ctx context.Context
	g   globals
	c   client.Client
}

func (c *conn) get() (client.Client, bool) {
	if c.c != nil {
		return c.c, true
	}
	cl, err := client.DialContext(c.ctx, client.Options{HostPort: c.g.address, Namespace: c.g.namespace, Logger: quietLogger{}})
	if err != nil {
		fmt.Fprintf(c.g.stderr, "starter: connect to Temporal at %s: %v\n", c.g.address, err)
		return nil, false
	}
	c.c = cl
	return cl, true
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
	}
}

// startFailed explains a refused start: a run already holds the workflow ID
// (exit 3), or the server failed (exit 1).
func (g globals) startFailed(err error, id, what string) int {
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		fmt.Fprintf(g.stderr, "starter: %s is already running (workflow %s, run %s); see `starter status %s`\n", what, id, already.RunId, id)
		return exitRefused
	}
	fmt.Fprintf(g.stderr, "starter: start %s: %v\n", id, err)
	return exitFailed
}
