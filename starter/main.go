// Command starter is the CLI of rackflow's service owners and on-call
// engineers (starter/internal/cli): it starts runs, shows where a host is,
// and answers parked runs. It talks to Temporal only.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rackflow/rackflow/starter/internal/cli"
)

func main() {
	cfg, err := cli.Parse(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(cli.ExitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
