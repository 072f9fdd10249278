// Command rackflow-cluster runs a production-shaped Temporal cluster on this
// machine for `make cluster`: PostgreSQL and two temporal-server processes
// on loopback (testsuite/cluster). It prints the frontend's address and
// runs until interrupted, then stops everything it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rackflow/rackflow/testsuite/cluster"
	"github.com/rackflow/rackflow/testsuite/procmem"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rackflow-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	var opts cluster.Options
	flag.StringVar(&opts.Dir, "dir", ".run/cluster", "state: PostgreSQL, generated config, server logs")
	flag.IntVar(&opts.Port, "port", 7233, "frontend gRPC port on 127.0.0.1 (0: a free one)")
	flag.IntVar(&opts.NumHistoryShards, "shards", 4, "history shards (fixed when the database is created)")
	flag.BoolVar(&opts.Keep, "keep", false, "keep the databases of the last run (schemas are upgraded in place)")
	flag.StringVar(&opts.LogLevel, "log-level", "warn", "server log level")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	began := time.Now()
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Stop()
	took := time.Since(began)
	pg := c.Postgres()
	fmt.Printf(`Temporal cluster ready in %.1fs
  frontend:   %s   (namespace %s; TEMPORAL_ADDRESS=%s)
  node 1:     pid %d  frontend+matching+worker  log %s
  node 2:     pid %d  history at %s  log %s
  PostgreSQL: pid %d  %s  databases %s, %s  (user %s, password in %s/pg/password)
Ctrl-C stops everything.
`, took.Seconds(), c.Addr(), cluster.Namespace, c.Addr(),
		c.Frontend.Pid(), c.Frontend.Log(), c.History.Pid(), c.History.Addr, c.History.Log(),
		pg.Pid(), pg.Addr(), cluster.DBTemporal, cluster.DBVisibility, cluster.User, opts.Dir)

	// Resident memory once the nodes have settled, for the README's table.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(15 * time.Second):
	}
	fmt.Printf("RSS after 15s idle: node 1 %s, node 2 %s, PostgreSQL (PSS of all its processes) %s\n",
		mib(procmem.RSS(c.Frontend.Pid())), mib(procmem.RSS(c.History.Pid())), mib(procmem.TreePSS(pg.Pid())))
	<-ctx.Done()
	fmt.Println("stopping...")
	return nil
}

// mib rounds to whole MiB, as the README's table shows them.
func mib(n int64) string {
	if n <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}
