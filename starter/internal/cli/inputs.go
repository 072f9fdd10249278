package cli

import (
	"context"
	"flag"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"gopkg.in/yaml.v3"

	"github.com/rackflow/rackflow/api"
)

// startFromFile starts workflow typ with the input in a file under the ID
// the input implies, and prints where to watch it.
func (g globals) startFromFile(ctx context.Context, conn *conn, name string, args []string,
	in any, typ string, id func() string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	file := fs.String("f", "", "input file (YAML or JSON)")
	wait := fs.Bool("wait", false, "wait for the result")
	if _, err := parseInterleaved(fs, args); err != nil || *file == "" {
		fmt.Fprintf(g.stderr, "usage: starter %s -f FILE [--wait]\n", name)
		return ExitUsage
	}
	if err := api.DecodeFile(*file, in); err != nil {
		fmt.Fprintln(g.stderr, err)
		return ExitFailed
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	wid := id()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: g.TaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            fmt.Sprintf("%s %s", typ, wid),
	}, typ, in)
	if err != nil {
		return g.startFailed(err, wid, wid)
	}
	fmt.Fprintf(g.stdout, "started %s (run %s)\n  %s\n", wid, run.GetRunID(), g.link(wid))
	if !*wait {
		return ExitOK
	}
	var res any
	if err := run.Get(ctx, &res); err != nil {
		fmt.Fprintf(g.stderr, "%s failed: %v\n", wid, err)
		return ExitFailed
	}
	out, _ := yaml.Marshal(res)
	fmt.Fprintf(g.stdout, "%s done:\n%s", wid, out)
	return ExitOK
}

func (g globals) publish(ctx context.Context, c *conn, args []string) int {
	var in api.PublishInput
	return g.startFromFile(ctx, c, "publish", args, &in, api.WorkflowPublishService, func() string { return api.PublishWorkflowID(in.VIP, in.Port) })
}

func (g globals) unpublish(ctx context.Context, c *conn, args []string) int {
	var in api.UnpublishInput
	return g.startFromFile(ctx, c, "unpublish", args, &in, api.WorkflowUnpublishService, func() string { return api.PublishWorkflowID(in.VIP, in.Port) })
}

func (g globals) vmnet(ctx context.Context, c *conn, args []string) int {
	var in api.VMNetInput
	return g.startFromFile(ctx, c, "vmnet", args, &in, api.WorkflowSetupVMNetwork, func() string { return api.VMNetWorkflowID(in.VM, in.Network) })
}
