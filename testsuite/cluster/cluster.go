// Package cluster runs Temporal the way production does, on this machine:
// the Temporal server (go.temporal.io/server at the version the temporal
// CLI embeds, built into bin/ by `make temporal-server`) on a private
// PostgreSQL, as two processes on loopback — one for the frontend,
// matching and worker services, one for history. It serves `make cluster`
// and the integration tests when RACKFLOW_TEMPORAL_CLUSTER=1; it is not a
// deployment tool, and it never downloads anything.
package cluster

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rackflow/rackflow/api"
)

// Databases the server uses, as Temporal's own configs name them.
const (
	DBTemporal   = "temporal"
	DBVisibility = "temporal_visibility"
	// Namespace is registered at start, as the dev server does.
	Namespace = "default"
)

// Options configure a cluster. The zero value needs only Dir.
type Options struct {
	// Dir holds the generated config, the server logs and, unless
	// Postgres is set, the PostgreSQL instance (Dir/pg).
	Dir string
	// Postgres, when set, is used instead of starting one in Dir; the
	// cluster then does not stop it.
	Postgres *Postgres
	// Port of the frontend's gRPC listener; 0 picks a free one.
	Port int
	// NumHistoryShards is fixed when the database is created; 0 means 4.
	NumHistoryShards int
	// LogLevel of the server processes; empty means "warn".
	LogLevel string
	// Keep reuses Dir's databases when they exist (their schema is
	// upgraded in place); otherwise they are dropped and created afresh.
	Keep bool
}

// Node is one server process.
type Node struct {
	Name     string
	Services []string
	// Addr is the gRPC address of the node's first service.
	Addr string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Pid is the node's process id, 0 when it is not running.
func (n *Node) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Log is the node's log file.
func (n *Node) Log() string { return n.log }

// Cluster is a running two-process Temporal server on PostgreSQL.
type Cluster struct {
	opts     Options
	pg       *Postgres
	ownPG    bool
	bins     binaries
	ports    ports
	confDir  string
	Frontend *Node // frontend, matching and worker services
	History  *Node // history service
}

type ports struct {
	frontend, frontendHTTP, frontendMember int
	history, historyMember                 int
	matching, matchingMember               int
	worker, workerMember                   int
}

type binaries struct{ server, sqlTool, schema string }

// Start runs PostgreSQL (unless given), sets up both databases with
// temporal-sql-tool, starts the two nodes, registers the default
// namespace and rackflow's search attributes, and returns once a
// workflow's history can be read through the frontend.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	if opts.NumHistoryShards == 0 {
		opts.NumHistoryShards = 4
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "warn"
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	c = &Cluster{opts: opts, bins: bins, pg: opts.Postgres, confDir: filepath.Join(opts.Dir, "config")}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.pg == nil {
		c.pg, err = StartPostgres(ctx, PostgresOptions{Dir: filepath.Join(opts.Dir, "pg")})
		if err != nil {
			return c, fmt.Errorf("start PostgreSQL: %w", err)
		}
		c.ownPG = true
	}
	if err := c.setupSchemas(ctx); err != nil {
		return c, err
	}
	if err := c.allocatePorts(); err != nil {
		return c, err
	}
	if err := c.writeConfig(); err != nil {
		return c, err
	}
	c.Frontend = &Node{Name: "frontend", Services: []string{"frontend", "matching", "worker"},
		Addr: fmt.Sprintf("127.0.0.1:%d", c.ports.frontend), log: filepath.Join(opts.Dir, "frontend.log")}
	c.History = &Node{Name: "history", Services: []string{"history"},
		Addr: fmt.Sprintf("127.0.0.1:%d", c.ports.history), log: filepath.Join(opts.Dir, "history.log")}
	// One node at a time: on a fresh database the first node to start
	// writes the cluster metadata, and two racing fail on its primary key.
	// The history node listens once that is done.
	if err := c.startNode(c.History); err != nil {
		return c, err
	}
	if err := waitListening(ctx, c.History, time.Minute); err != nil {
		return c, err
	}
	if err := c.startNode(c.Frontend); err != nil {
		return c, err
	}
	if err := c.waitReady(ctx, 2*time.Minute); err != nil {
		return c, err
	}
	if err := c.register(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// findBinaries looks for bin/temporal-server, bin/temporal-sql-tool and
// bin/temporal-schema in the working directory or a parent (the project
// root when run from a package), or under $RACKFLOW_TEMPORAL_SERVER_BIN.
func findBinaries() (binaries, error) {
	find := func(dir string) (binaries, bool) {
		b := binaries{
			server:  filepath.Join(dir, "temporal-server"),
			sqlTool: filepath.Join(dir, "temporal-sql-tool"),
			schema:  filepath.Join(dir, "temporal-schema"),
		}
		for _, p := range []string{b.server, b.sqlTool, b.schema} {
			if _, err := os.Stat(p); err != nil {
				return b, false
			}
		}
		return b, true
	}
	if d := os.Getenv("RACKFLOW_TEMPORAL_SERVER_BIN"); d != "" {
		if b, ok := find(d); ok {
			return b, nil
		}
		return binaries{}, fmt.Errorf("RACKFLOW_TEMPORAL_SERVER_BIN=%s lacks temporal-server, temporal-sql-tool or temporal-schema", d)
	}
	dir, err := os.Getwd()
	if err != nil {
		return binaries{}, err
	}
	for {
		if b, ok := find(filepath.Join(dir, "bin")); ok {
			return b, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return binaries{}, errors.New("temporal-server not found in bin/: run `make temporal-server` (scripts/build-temporal-server.sh)")
		}
		dir = parent
	}
}

// sqlTool runs temporal-sql-tool against one database.
func (c *Cluster) sqlTool(ctx context.Context, db string, args ...string) error {
	base := []string{"--plugin", "postgres12", "--endpoint", "127.0.0.1", "--port", strconv.Itoa(c.pg.Port()),
		"--user", User, "--database", db}
	cmd := exec.CommandContext(ctx, c.bins.sqlTool, append(base, args...)...)
	// The password goes through the environment, not the command line.
	cmd.Env = append(os.Environ(), "SQL_PASSWORD="+c.pg.Password())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("temporal-sql-tool --database %s %s: %w\n%s", db, strings.Join(args, " "), err, out)
	}
	return nil
}

// setupSchemas creates both databases (afresh unless Keep) and brings
// their schemas to the newest version shipped with the server.
func (c *Cluster) setupSchemas(ctx context.Context) error {
	marker := filepath.Join(c.opts.Dir, "schema-created")
	_, err := os.Stat(marker)
	fresh := err != nil || !c.opts.Keep
	for _, s := range []struct{ db, dir string }{
		{DBTemporal, "temporal"},
		{DBVisibility, "visibility"},
	} {
		if fresh {
			_ = c.sqlTool(ctx, s.db, "drop-database", "--force")
			if err := c.sqlTool(ctx, s.db, "create-database"); err != nil {
				return err
			}
			if err := c.sqlTool(ctx, s.db, "setup-schema", "--version", "0.0"); err != nil {
				return err
			}
		}
		dir := filepath.Join(c.bins.schema, "postgresql", "v12", s.dir, "versioned")
		if err := c.sqlTool(ctx, s.db, "update-schema", "--schema-dir", dir); err != nil {
			return err
		}
	}
	return os.WriteFile(marker, nil, 0o644)
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) allocatePorts() error {
	ps := []*int{&c.ports.frontendHTTP, &c.ports.frontendMember, &c.ports.history, &c.ports.historyMember,
		&c.ports.matching, &c.ports.matchingMember, &c.ports.worker, &c.ports.workerMember}
	c.ports.frontend = c.opts.Port
	if c.ports.frontend == 0 {
		ps = append(ps, &c.ports.frontend)
	}
	seen := map[int]bool{c.ports.frontend: true}
	for _, p := range ps {
		n, err := freeMembershipPort(seen)
		if err != nil {
			return err
		}
		seen[n] = true
		*p = n
	}
	return nil
}

// freeMembershipPort returns a free port below 32768. The PostgreSQL
// schema keeps a node's membership port in a smallint (rpc_port of
// cluster_membership), so the kernel's ephemeral ports (32768 and up)
// make the node die at start; every port of the cluster comes from here.
func freeMembershipPort(taken map[int]bool) (int, error) {
	for range 200 {
		n := 20000 + mrand.IntN(12000)
		if taken[n] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", n))
		if err != nil {
			continue
		}
		ln.Close()
		return n, nil
	}
	return 0, errors.New("no free port in 20000-31999 on 127.0.0.1")
}

// The server reads <config dir>/<env>.yaml; both nodes share it and pick
// their services with --service. Membership (ringpop) finds the other
// node through the cluster_membership table in PostgreSQL.
var configTemplate = template.Must(template.New("config").Parse(`# generated by rackflow's testsuite/cluster; edits are overwritten
log:
  stdout: true
  level: {{.LogLevel}}

persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: {{.Shards}}
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: {{.DB}}
        connectAddr: "{{.PGAddr}}"
        connectProtocol: tcp
        user: {{.User}}
        password: "{{.Password}}"
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: {{.VisDB}}
        connectAddr: "{{.PGAddr}}"
        connectProtocol: tcp
        user: {{.User}}
        password: "{{.Password}}"
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1

services:
  frontend:
    rpc:
      grpcPort: {{.P.frontend}}
      membershipPort: {{.P.frontendMember}}
      httpPort: {{.P.frontendHTTP}}
      bindOnIP: 127.0.0.1
  matching:
    rpc:
      grpcPort: {{.P.matching}}
      membershipPort: {{.P.matchingMember}}
      bindOnIP: 127.0.0.1
  history:
    rpc:
      grpcPort: {{.P.history}}
      membershipPort: {{.P.historyMember}}
      bindOnIP: 127.0.0.1
  worker:
    rpc:
      grpcPort: {{.P.worker}}
      membershipPort: {{.P.workerMember}}
      bindOnIP: 127.0.0.1

clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "127.0.0.1:{{.P.frontend}}"

dcRedirectionPolicy:
  policy: noop

dynamicConfigClient:
  filepath: "{{.DynConfig}}"
  pollInterval: 10s
`))

// Dynamic config: what the dev server sets for rackflow's needs. Search
// attributes become visible as soon as they are created, which costs a
// read of the cluster metadata per use: the persistence QPS limits are
// raised as the dev server does.
const dynamicConfig = `# generated by rackflow's testsuite/cluster
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
frontend.persistenceMaxQPS:
  - value: 10000
history.persistenceMaxQPS:
  - value: 45000
frontend.namespaceRPS.visibility:
  - value: 100
history.hostLevelCacheMaxSize:
  - value: 8192
`

func (c *Cluster) writeConfig() error {
	if err := os.MkdirAll(c.confDir, 0o700); err != nil {
		return err
	}
	dyn := filepath.Join(c.confDir, "dynamicconfig.yaml")
	if err := os.WriteFile(dyn, []byte(dynamicConfig), 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(c.confDir, "rackflow.yaml"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = configTemplate.Execute(f, map[string]any{
		"LogLevel": c.opts.LogLevel, "Shards": c.opts.NumHistoryShards,
		"DB": DBTemporal, "VisDB": DBVisibility, "PGAddr": c.pg.Addr(), "User": User, "Password": c.pg.Password(),
		"P": map[string]int{
			"frontend": c.ports.frontend, "frontendHTTP": c.ports.frontendHTTP, "frontendMember": c.ports.frontendMember,
			"history": c.ports.history, "historyMember": c.ports.historyMember,
			"matching": c.ports.matching, "matchingMember": c.ports.matchingMember,
			"worker": c.ports.worker, "workerMember": c.ports.workerMember,
		},
		"DynConfig": dyn,
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (c *Cluster) startNode(n *Node) error {
	args := []string{"--root", "/", "--config", c.confDir, "--env", "rackflow", "--allow-no-auth", "start"}
	for _, s := range n.Services {
		args = append(args, "--service", s)
	}
	cmd := exec.Command(c.bins.server, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start temporal-server (%s): %w", n.Name, err)
	}
	n.cmd = cmd
	n.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(n.done) }()
	return nil
}

// waitListening returns once the node accepts TCP connections on Addr.
func waitListening(ctx context.Context, n *Node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("temporal-server %s node exited during start-up (log: %s)", n.Name, n.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("temporal-server %s node not listening on %s after %s (log: %s)", n.Name, n.Addr, timeout, n.log)
		}
	}
}

// Addr is the frontend's host:port, what clients and workers dial.
func (c *Cluster) Addr() string { return c.Frontend.Addr }

// Postgres is the database instance.
func (c *Cluster) Postgres() *Postgres { return c.pg }

// waitReady returns once the frontend answers and the history service
// owns its shards: reading the history of workflows that do not exist
// gets NotFound, not Unavailable, for IDs spread over every shard. Until
// the default namespace exists the frontend answers NamespaceNotFound,
// which also proves it is up.
func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for _, n := range []*Node{c.Frontend, c.History} {
			select {
			case <-n.done:
				return fmt.Errorf("temporal-server %s node exited during start-up (log: %s)", n.Name, n.log)
			default:
			}
		}
		if last = c.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal cluster at %s not ready: %w", c.Addr(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *Cluster) probe(ctx context.Context) error {
	cl, err := client.DialContext(ctx, client.Options{HostPort: c.Addr(), Namespace: "temporal-system", Logger: nopLogger{}})
	if err != nil {
		return err
	}
	defer cl.Close()
	// temporal-system exists from the first start; its workflows' shards
	// are spread as any namespace's are.
	for i := 0; i < 4*c.opts.NumHistoryShards; i++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cl.WorkflowService().GetWorkflowExecutionHistory(pctx, &workflowservice.GetWorkflowExecutionHistoryRequest{
			Namespace: "temporal-system",
			Execution: &commonpb.WorkflowExecution{WorkflowId: "rackflow-readiness-probe-" + strconv.Itoa(i)},
		})
		cancel()
		var nf *serviceerror.NotFound
		if err != nil && !errors.As(err, &nf) {
			return err
		}
	}
	return nil
}

// register creates the default namespace and rackflow's search attributes
// (SQL visibility keeps them per namespace), then waits until the
// frontend knows both: a visibility query on them succeeds.
func (c *Cluster) register(ctx context.Context) error {
	cl, err := client.DialContext(ctx, client.Options{HostPort: c.Addr(), Namespace: Namespace, Logger: nopLogger{}})
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = cl.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace:                        Namespace,
		WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour),
	})
	var exists *serviceerror.NamespaceAlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("register namespace %s: %w", Namespace, err)
	}
	attrs := map[string]enumspb.IndexedValueType{}
	keys := make([]string, 0, len(api.SearchAttributes))
	for k, v := range api.SearchAttributes {
		t, ok := enumspb.IndexedValueType_shorthandValue[v]
		if !ok {
			return fmt.Errorf("search attribute %s: unknown type %q", k, v)
		}
		attrs[k] = enumspb.IndexedValueType(t)
		keys = append(keys, k)
	}
	sort.Strings(keys)
	deadline := time.Now().Add(time.Minute)
	for {
		_, err = cl.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
			Namespace: Namespace, SearchAttributes: attrs,
		})
		if err == nil || isAlreadyExists(err) {
			// The frontend answers a query on the attributes only once its
			// namespace cache has the namespace and the mapping.
			q := keys[0] + " = 'readiness-probe'"
			_, err = cl.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: Namespace, Query: q})
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("register search attributes %v in %s: %w", keys, Namespace, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func isAlreadyExists(err error) bool {
	var ae *serviceerror.AlreadyExists
	return errors.As(err, &ae)
}

// Kill stops the history node with SIGKILL, as a crash would, and returns
// once it has exited. The frontend node keeps running.
func (c *Cluster) Kill() { c.killNode(c.History, syscall.SIGKILL) }

func (c *Cluster) killNode(n *Node, sig syscall.Signal) {
	if n == nil || n.cmd == nil {
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, sig)
	if sig == syscall.SIGKILL {
		<-n.done
	} else {
		select {
		case <-n.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-n.done
		}
	}
	n.cmd = nil
}

// Restart stops the history node if it runs, starts it again with the same
// config, and waits until its shards serve.
func (c *Cluster) Restart(ctx context.Context) error {
	c.killNode(c.History, syscall.SIGTERM)
	if err := c.startNode(c.History); err != nil {
		return err
	}
	return c.waitReady(ctx, 2*time.Minute)
}

// Stop stops both nodes gracefully, then PostgreSQL if the cluster
// started it.
func (c *Cluster) Stop() {
	c.killNode(c.Frontend, syscall.SIGTERM)
	c.killNode(c.History, syscall.SIGTERM)
	if c.ownPG && c.pg != nil {
		_ = c.pg.Stop()
		c.ownPG = false
	}
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...interface{}) {}
func (nopLogger) Info(string, ...interface{})  {}
func (nopLogger) Warn(string, ...interface{})  {}
func (nopLogger) Error(string, ...interface{}) {}
