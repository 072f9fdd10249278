// Package cli is the starter's command line: the service owners' and
// on-call engineers' way to start provisioning, deploy, publish and vmnet
// runs, see where a host is, and send the retry, skip and abort Updates to
// a parked run. It talks to Temporal only, with api's names and input
// types; it never touches a BMC, a host, the pxe service or the NetScaler
// itself, and links none of their clients.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/worker/temporalconn"
)

// Exit codes, so scripts can tell outcomes apart.
const (
	ExitOK        = 0
	ExitFailed    = 1 // the workflow failed, or the command did
	ExitUsage     = 2
	ExitRefused   = 3 // the server or the workflow refused the request
	ExitAttention = 4 // --wait: the run parked in needs-attention
	ExitPartial   = 5 // a deploy finished, but some members failed
)

// Config is the starter's global flags and the command they precede.
type Config struct {
	// Settings say how to reach Temporal: address, namespace, TLS, mTLS
	// and API key, with the worker's flags and environment variables.
	temporalconn.Settings
	// TaskQueue is the queue runs are started on.
	TaskQueue string
	// UIURL is the Temporal Web UI's base URL, for links to runs.
	UIURL string
	// JSON asks for machine-readable output.
	JSON bool
	// Command is the command ("provision", "status", ...), and Args its
	// arguments and flags.
	Command string
	Args    []string
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
  starter decommission HOST --confirm HOST [--drain 30s] [--leave-foreign-members] [--full-overwrite] [--wait]
                                                        take HOST out of its VIPs, erase its disk, power it off
                                                        (workflow decommission/HOST)
  starter status HOST|WORKFLOW-ID                       where a run is: step, try, error, image progress
  starter list [--stuck]                                running provisioning runs (stuck first with --stuck)
  starter retry|skip|abort HOST|WORKFLOW-ID --reason "..."
                                                        answer a run that needs attention (HOST: provision/HOST)
  starter validate --inventory FILE | -f SERVICE.yaml  check an inventory or a deploy spec; every error at once
  starter deploy -f SERVICE.yaml [--wait]               deploy a service (workflow deploy/SERVICE)
  starter publish|unpublish -f VIP.yaml [--wait]       publish a service on the NetScaler (workflow publish/VIP:PORT)
  starter vmnet -f VMNET.yaml [--wait]                  second NIC + routes for a CloudStack VM (workflow vmnet/VM/NETWORK)
  starter history HOST                                  every step and attempt of HOST's provisioning, with errors

Global flags (before the command): --address (TEMPORAL_ADDRESS), --namespace (TEMPORAL_NAMESPACE),
--task-queue (RACKFLOW_TASK_QUEUE), --ui (RACKFLOW_UI_URL), --json; for a secured frontend, as the
worker: --tls-cert/--tls-key (mTLS), --tls-ca, --tls-server-name, --api-key-file (or TEMPORAL_API_KEY).
`

// Parse reads the global flags (environment variables are their defaults)
// and splits off the command. A usage error has been explained on stderr
// when it returns.
func Parse(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("starter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	c.Settings.RegisterFlags(fs, envOr)
	fs.StringVar(&c.TaskQueue, "task-queue", envOr("RACKFLOW_TASK_QUEUE", api.DefaultTaskQueue), "task queue")
	fs.StringVar(&c.UIURL, "ui", envOr("RACKFLOW_UI_URL", "http://127.0.0.1:8233"), "Temporal Web UI base URL")
	fs.BoolVar(&c.JSON, "json", false, "JSON output for scripts")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return c, errors.New("no command")
	}
	if err := c.Settings.Load(os.Getenv); err != nil {
		fmt.Fprintln(stderr, "starter:", err)
		return c, err
	}
	c.Command, c.Args = fs.Arg(0), fs.Args()[1:]
	return c, nil
}

// globals is what every command needs: the configuration and where to
// write.
type globals struct {
	Config
	stdout, stderr io.Writer
}

// Run runs cfg's command and returns the process's exit code. Cancelling
// ctx (SIGINT) stops a --wait without touching the run.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) int {
	g := globals{Config: cfg, stdout: stdout, stderr: stderr}
	if cfg.Command == "validate" {
		return g.validate(cfg.Args)
	}
	// Connect only once a command's arguments are known to be right, so
	// usage errors never wait on a server.
	c := &conn{ctx: ctx, g: g}
	defer c.close()
	cargs := cfg.Args
	switch cfg.Command {
	case "provision":
		return g.provision(ctx, c, cargs)
	case "decommission":
		return g.decommission(ctx, c, cargs)
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
		return g.operator(ctx, c, cfg.Command, cargs)
	default:
		fmt.Fprintf(stderr, "starter: unknown command %q\n\n%s", cfg.Command, usage)
		return ExitUsage
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
		return ExitUsage
	}
	if *svc != "" {
		var d api.DeploySpec
		if err := api.DecodeFile(*svc, &d); err != nil {
			fmt.Fprintln(g.stderr, err)
			return ExitFailed
		}
		fmt.Fprintf(g.stdout, "%s: service %s with %d hosts and %d VMs, valid\n", *svc, d.Service, len(d.Hosts), len(d.VMs))
		return ExitOK
	}
	i, err := api.LoadInventory(*inv)
	if err != nil {
		fmt.Fprintln(g.stderr, err)
		return ExitFailed
	}
	fmt.Fprintf(g.stdout, "%s: %d hosts, all valid\n", *inv, len(i.Hosts))
	return ExitOK
}

func (g globals) link(id string) string {
	return fmt.Sprintf("%s/namespaces/%s/workflows/%s", strings.TrimRight(g.UIURL, "/"), url.PathEscape(g.Namespace), url.PathEscape(id))
}

func workflowID(arg string) string {
	if strings.Contains(arg, "/") {
		return arg
	}
	return api.ProvisionWorkflowID(arg)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
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
	opts, err := c.g.Settings.Options()
	if err != nil {
		fmt.Fprintf(c.g.stderr, "starter: %v\n", err)
		return nil, false
	}
	opts.Logger = quietLogger{}
	cl, err := client.DialContext(c.ctx, opts)
	if err != nil {
		fmt.Fprintf(c.g.stderr, "starter: connect to Temporal at %s: %v\n", c.g.Address, err)
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
		return ExitRefused
	}
	fmt.Fprintf(g.stderr, "starter: start %s: %v\n", id, err)
	return ExitFailed
}
