package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/rackflow/rackflow/api"
)

func (g globals) deploy(ctx context.Context, conn *conn, args []string) int {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	file := fs.String("f", "", "deploy spec (YAML)")
	wait := fs.Bool("wait", false, "wait for the deploy, showing each member's progress")
	if _, err := parseInterleaved(fs, args); err != nil || *file == "" {
		fmt.Fprintln(g.stderr, "usage: starter deploy -f SERVICE.yaml [--wait]")
		return ExitUsage
	}
	var d api.DeploySpec
	if err := api.DecodeFile(*file, &d); err != nil {
		fmt.Fprintln(g.stderr, err)
		return ExitFailed
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	id := api.DeployWorkflowID(d.Service)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                g.TaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            fmt.Sprintf("deploy %s: %d hosts, %d VMs", d.Service, len(d.Hosts), len(d.VMs)),
		StaticDetails:                            "Started by `starter deploy -f " + *file + "`",
	}, api.WorkflowDeployService, d)
	if err != nil {
		return g.startFailed(err, id, "a deploy of "+d.Service)
	}
	if g.JSON {
		_ = json.NewEncoder(g.stdout).Encode(map[string]string{"workflow_id": id, "run_id": run.GetRunID(), "url": g.link(id)})
	} else {
		fmt.Fprintf(g.stdout, "started %s (run %s)\n  %s\n", id, run.GetRunID(), g.link(id))
	}
	if !*wait {
		return ExitOK
	}
	done := make(chan error, 1)
	var res api.DeployResult
	go func() { done <- run.Get(ctx, &res) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := map[string]string{}
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
				printDeploy(g, res)
			}
			if res.Partial {
				return ExitPartial
			}
			return ExitOK
		case <-tick.C:
			if g.JSON {
				continue
			}
			v, err := c.QueryWorkflow(ctx, id, "", "status")
			if err != nil {
				continue
			}
			var st api.DeployStatus
			if v.Get(&st) != nil {
				continue
			}
			for _, m := range st.Members {
				line := fmt.Sprintf("%-4s %-12s %s", m.Kind, m.Name, m.State)
				if m.Kind == "host" && m.State == "provisioning" {
					if ps, pend, err := fetchStatus(ctx, c, m.WorkflowID); err == nil {
						line = "     " + progressLine(ps, pend)
					}
				}
				if last[m.Name] != line {
					fmt.Fprintln(g.stdout, line)
					last[m.Name] = line
				}
			}
		case <-ctx.Done():
			return ExitFailed
		}
	}
}

func printDeploy(g globals, r api.DeployResult) {
	fmt.Fprintf(g.stdout, "deploy of %s finished", r.Service)
	if r.Partial {
		fmt.Fprint(g.stdout, " with failed members (left out of the VIP)")
	}
	fmt.Fprintln(g.stdout)
	for _, m := range r.Members {
		fmt.Fprintf(g.stdout, "  %-4s %-12s %-12s %s", m.Kind, m.Name, m.State, m.WorkflowID)
		if m.Error != "" {
			fmt.Fprintf(g.stdout, "  [%s] %s", m.ErrorType, truncate(m.Error, 100))
		}
		fmt.Fprintln(g.stdout)
	}
	if r.Publish != nil {
		var bs []string
		for _, b := range r.Backends {
			bs = append(bs, fmt.Sprintf("%s:%d", b.IP, b.Port))
		}
		fmt.Fprintf(g.stdout, "  VIP %s published with %s\n", r.Publish.WorkflowID, strings.Join(bs, ", "))
	}
}

// history prints every step and activity attempt of a host's latest
// provisioning run, oldest first.
func (g globals) history(ctx context.Context, conn *conn, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(g.stderr, "usage: starter history HOST|WORKFLOW-ID")
		return ExitUsage
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	id := workflowID(args[0])
	it := c.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	type act struct {
		name, summary string
	}
	scheduled := map[int64]act{}
	dc := converter.GetDefaultDataConverter()
	var lines []string
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			var nf *serviceerror.NotFound
			if errors.As(err, &nf) {
				fmt.Fprintf(g.stderr, "starter: no run %s\n", id)
			} else {
				fmt.Fprintf(g.stderr, "starter: history of %s: %v\n", id, err)
			}
			return ExitFailed
		}
		at := ev.GetEventTime().AsTime().Local().Format("15:04:05")
		switch {
		case ev.GetActivityTaskScheduledEventAttributes() != nil:
			a := ev.GetActivityTaskScheduledEventAttributes()
			summary := ""
			if p := ev.GetUserMetadata().GetSummary(); p != nil {
				_ = dc.FromPayload(p, &summary)
			}
			scheduled[ev.GetEventId()] = act{a.GetActivityType().GetName(), summary}
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			a := ev.GetActivityTaskStartedEventAttributes()
			s := scheduled[a.GetScheduledEventId()]
			line := fmt.Sprintf("%s  %-14s attempt %d  %s", at, s.name, a.GetAttempt(), s.summary)
			if f := a.GetLastFailure(); f != nil {
				line += "\n            previous attempt failed: " + f.GetMessage()
			}
			lines = append(lines, line)
		case ev.GetActivityTaskCompletedEventAttributes() != nil:
			s := scheduled[ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]
			lines = append(lines, fmt.Sprintf("%s  %-14s done", at, s.name))
		case ev.GetActivityTaskFailedEventAttributes() != nil:
			a := ev.GetActivityTaskFailedEventAttributes()
			s := scheduled[a.GetScheduledEventId()]
			lines = append(lines, fmt.Sprintf("%s  %-14s FAILED: %s", at, s.name, a.GetFailure().GetMessage()))
		case ev.GetActivityTaskTimedOutEventAttributes() != nil:
			a := ev.GetActivityTaskTimedOutEventAttributes()
			s := scheduled[a.GetScheduledEventId()]
			lines = append(lines, fmt.Sprintf("%s  %-14s TIMED OUT: %s", at, s.name, a.GetFailure().GetMessage()))
		case ev.GetWorkflowExecutionUpdateAcceptedEventAttributes() != nil:
			a := ev.GetWorkflowExecutionUpdateAcceptedEventAttributes()
			var req api.OperatorRequest
			if in := a.GetAcceptedRequest().GetInput().GetArgs(); in != nil && len(in.GetPayloads()) > 0 {
				_ = dc.FromPayload(in.GetPayloads()[0], &req)
			}
			lines = append(lines, fmt.Sprintf("%s  operator %-7s reason: %s", at, a.GetAcceptedRequest().GetInput().GetName(), req.Reason))
		case ev.GetWorkflowExecutionCompletedEventAttributes() != nil:
			lines = append(lines, at+"  run completed")
		case ev.GetWorkflowExecutionFailedEventAttributes() != nil:
			lines = append(lines, at+"  run FAILED: "+ev.GetWorkflowExecutionFailedEventAttributes().GetFailure().GetMessage())
		}
	}
	if g.JSON {
		_ = json.NewEncoder(g.stdout).Encode(lines)
		return ExitOK
	}
	fmt.Fprintf(g.stdout, "%s\n", id)
	for _, l := range lines {
		fmt.Fprintln(g.stdout, "  "+l)
	}
	return ExitOK
}
