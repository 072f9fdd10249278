package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rackflow/rackflow/api"
)

const decommissionUsage = `usage: starter decommission HOST --confirm HOST [--drain 30s] [--leave-foreign-members] [--full-overwrite] [--inventory FILE] [--wait]`

// decommissionInput reads decommission's flags into the workflow input,
// checked as the workflow will check it, so a typo never reaches a server.
func decommissionInput(args []string, stderr io.Writer) (api.DecommissionInput, string, bool, bool) {
	fs := flag.NewFlagSet("decommission", flag.ContinueOnError)
	fs.SetOutput(stderr)
	confirm := fs.String("confirm", "", "the host's name again: decommissioning erases its disk")
	drain := fs.Duration("drain", 30*time.Second, "drain the host's members in rackflow's servicegroups this long before unbinding them (0: at once)")
	leave := fs.Bool("leave-foreign-members", false, "go on when the host is a member of servicegroups rackflow does not own (they are listed, not touched)")
	full := fs.Bool("full-overwrite", false, "zero the whole disk and read it all back (hours on a large disk)")
	inv := fs.String("inventory", "", "check the host's entry in this inventory file before starting (the worker uses its own)")
	wait := fs.Bool("wait", false, "wait for the run to finish, showing progress")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 {
		fmt.Fprintln(stderr, decommissionUsage)
		return api.DecommissionInput{}, "", false, false
	}
	in := api.DecommissionInput{Host: pos[0], Confirm: *confirm, FullOverwrite: *full, LeaveForeignMembers: *leave}
	if *drain < 0 || *drain%time.Second != 0 {
		fmt.Fprintf(stderr, "starter: --drain %s: must be whole seconds, 0 or more\n", *drain)
		return in, "", false, false
	}
	in.DrainSeconds = int(*drain / time.Second)
	if err := in.Validate(); err != nil {
		fmt.Fprintf(stderr, "starter: %v\n%s\n", err, decommissionUsage)
		return in, "", false, false
	}
	return in, *inv, *wait, true
}

func (g globals) decommission(ctx context.Context, conn *conn, args []string) int {
	in, inv, wait, ok := decommissionInput(args, g.stderr)
	if !ok {
		return ExitUsage
	}
	if inv != "" {
		i, err := api.LoadInventory(inv)
		if err == nil {
			_, err = i.Lookup(in.Host)
		}
		if err != nil {
			fmt.Fprintf(g.stderr, "starter: %v\n", err)
			return ExitFailed
		}
	}
	c, ok := conn.get()
	if !ok {
		return ExitFailed
	}
	id := api.DecommissionWorkflowID(in.Host)
	run, err := g.startHostRun(ctx, c, id, in.Host, api.WorkflowDecommissionHost, in, "decommission "+in.Host,
		fmt.Sprintf("Decommissioning of **%s**: out of its VIPs, disk erased, powered off. On-call: `starter status %s`, `starter retry|skip|abort %s --reason ...`",
			in.Host, id, id))
	if err != nil {
		return g.startFailed(err, id, "decommissioning of "+in.Host)
	}
	if g.JSON {
		_ = json.NewEncoder(g.stdout).Encode(map[string]string{"workflow_id": id, "run_id": run.GetRunID(), "url": g.link(id)})
	} else {
		fmt.Fprintf(g.stdout, "started %s (run %s)\n  %s\n  follow: starter status %s; answer a parked step: starter retry|skip|abort %s --reason \"...\"\n",
			id, run.GetRunID(), g.link(id), id, id)
	}
	if !wait {
		return ExitOK
	}
	var res api.DecommissionResult
	return g.waitFor(ctx, c, id, run, id, &res, func() string { return decommissionSummary(res) })
}

// decommissionSummary is the line --wait prints for a finished run.
func decommissionSummary(res api.DecommissionResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s decommissioned in %s: %s erased (%s, %d bytes read back as zeroes)", res.Host, res.Duration, res.Erase.Disk, res.Erase.Method, res.Erase.VerifiedBytes)
	for _, m := range res.Unpublished {
		fmt.Fprintf(&b, "\n  removed from %s (%s)", m, m.Owner)
	}
	for _, m := range res.LeftForeign {
		fmt.Fprintf(&b, "\n  left in %s: not rackflow's (comment %q)", m, m.Comment)
	}
	return b.String()
}
