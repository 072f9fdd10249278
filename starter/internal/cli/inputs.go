package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"gopkg.in/yaml.v3"

	"github.com/rackflow/rackflow/api"
)

// validator is an input that checks itself.
type validator interface{ Validate() error }

// loadInput decodes a YAML (or JSON) input file strictly and validates it,
// naming the file, line and field of each problem.
func loadInput(path string, into validator) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := into.Validate(); err != nil {
		var root yaml.Node
		_ = yaml.Unmarshal(data, &root)
		var fe api.FieldErrors
		if !errors.As(err, &fe) {
			return fmt.Errorf("%s: %w", path, err)
		}
		var out api.SpecErrors
		for _, e := range fe {
			out = append(out, api.SpecError{File: path, Line: api.LineOf(&root, e.Field), Field: e.Field, Msg: e.Reason})
		}
		return out
	}
	return nil
}

// startFromFile starts workflow typ with the input in a file under the ID
// the input implies, and prints where to watch it.
func (g globals) startFromFile(ctx context.Context, conn *conn, name string, args []string,
	in validator, typ string, id func() string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	file := fs.String("f", "", "input file (YAML or JSON)")
	wait := fs.Bool("wait", false, "wait for the result")
	if _, err := parseInterleaved(fs, args); err != nil || *file == "" {
		fmt.Fprintf(g.stderr, "usage: starter %s -f FILE [--wait]\n", name)
		return exitUsage
	}
	if err := loadInput(*file, in); err != nil {
		fmt.Fprintln(g.stderr, err)
		return exitFailed
	}
	c, ok := conn.get()
	if !ok {
		return exitFailed
	}
	wid := id()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: g.taskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            fmt.Sprintf("%s %s", typ, wid),
	}, typ, in)
	if err != nil {
		return g.startFailed(err, wid, wid)
	}
	fmt.Fprintf(g.stdout, "started %s (run %s)\n  %s\n", wid, run.GetRunID(), g.link(wid))
	if !*wait {
		return exitOK
	}
	var res any
	if err := run.Get(ctx, &res); err != nil {
		fmt.Fprintf(g.stderr, "%s failed: %v\n", wid, err)
		return exitFailed
	}
	out, _ := yaml.Marshal(res)
	fmt.Fprintf(g.stdout, "%s done:\n%s", wid, out)
	return exitOK
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
