// Package devserver runs a real Temporal dev server (the `temporal` CLI's
// `server start-dev`, built into the project's bin/) for integration tests and
// `make run`. It registers rackflow's search attributes at start and can kill
// and restart the server on the same database file, so tests can prove a run
// survives a server crash. It never downloads anything.
//
// With RACKFLOW_TEMPORAL_CLUSTER=1, StartT hands the test a production-shaped
// cluster instead (testsuite/cluster: the Temporal server on PostgreSQL as
// two processes), so the same tests run on both; there Kill and Restart act
// on the history node, and the frontend stays up.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/cluster"
)

// Options configure a dev server. The zero value runs headless on free
// loopback ports with a database in a temporary directory.
type Options struct {
	// DBFile is the SQLite file; empty means a file in a temp dir.
	DBFile string
	// Port of the gRPC frontend; 0 picks a free one.
	Port int
	// UIPort of the Web UI; 0 with UI set means Port+1000.
	UIPort int
	// UI enables the Web UI.
	UI bool
	// LogFile receives the server's output; empty discards it.
	LogFile string
	// Cluster makes Start run a production-shaped cluster (testsuite/cluster:
	// two temporal-server processes on their own PostgreSQL) in ClusterDir
	// instead of the dev server; DBFile, Port, UI and LogFile are then unused.
	Cluster bool
	// ClusterDir holds the cluster's config, logs and database; the postgres
	// user must be able to enter it (mode 0755 up the path).
	ClusterDir string
}

// Server is a running dev server.
type Server struct {
	opts Options
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
	// cluster replaces the dev server when the test asked for one.
	cluster *cluster.Cluster
}

// ClusterEnv names the environment variable that makes StartT start a
// cluster (testsuite/cluster) instead of the dev server.
const ClusterEnv = "RACKFLOW_TEMPORAL_CLUSTER"

// ClusterMode reports whether StartT starts a cluster.
func ClusterMode() bool {
	v := os.Getenv(ClusterEnv)
	return v != "" && v != "0"
}

// Binary finds the temporal CLI: $RACKFLOW_TEMPORAL_BIN, or bin/temporal in
// this directory or a parent (the project root when run from a package).
func Binary() (string, error) {
	if p := os.Getenv("RACKFLOW_TEMPORAL_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "bin", "temporal")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("temporal CLI not found in bin/: run `make bin/temporal` (go install github.com/temporalio/cli/cmd/temporal@v1.5.1)")
		}
		dir = parent
	}
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

// Start runs a dev server, or a cluster when opts.Cluster is set, and waits
// until its frontend answers.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Cluster {
		if opts.ClusterDir == "" {
			return nil, errors.New("devserver: Options.Cluster needs ClusterDir")
		}
		c, err := cluster.Start(ctx, cluster.Options{Dir: opts.ClusterDir})
		if err != nil {
			return nil, err
		}
		return &Server{opts: opts, cluster: c}, nil
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if opts.Port == 0 {
		if opts.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if opts.UI && opts.UIPort == 0 {
		opts.UIPort = opts.Port + 1000
	}
	if opts.DBFile == "" {
		dir, err := os.MkdirTemp("", "rackflow-devserver-")
		if err != nil {
			return nil, err
		}
		opts.DBFile = filepath.Join(dir, "temporal.db")
	}
	s := &Server{opts: opts, bin: bin}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) args() []string {
	args := []string{"server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(s.opts.Port),
		"--db-filename", s.opts.DBFile,
		"--log-level", "warn",
	}
	if s.opts.UI {
		args = append(args, "--ui-port", strconv.Itoa(s.opts.UIPort))
	} else {
		args = append(args, "--headless")
	}
	keys := make([]string, 0, len(api.SearchAttributes))
	for k := range api.SearchAttributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--search-attribute", k+"="+api.SearchAttributes[k])
	}
	return args
}

func (s *Server) start(ctx context.Context) error {
	cmd := exec.Command(s.bin, s.args()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.opts.LogFile != "" {
		f, err := os.OpenFile(s.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close()
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start temporal dev server: %w", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	return s.waitReady(ctx)
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("temporal dev server exited during start-up (log: %s)", s.opts.LogFile)
		default:
		}
		c, err := client.DialContext(ctx, client.Options{HostPort: s.Addr(), Logger: nopLogger{}})
		if err == nil {
			_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
			c.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal dev server at %s not ready: %w", s.Addr(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Addr is the frontend's host:port.
func (s *Server) Addr() string {
	if s.cluster != nil {
		return s.cluster.Addr()
	}
	return fmt.Sprintf("127.0.0.1:%d", s.opts.Port)
}

// KillAddr is the gRPC address of the process Kill stops: the dev server's
// frontend, or a cluster's history node. Nothing answers there between
// Kill and Restart.
func (s *Server) KillAddr() string {
	if s.cluster != nil {
		return s.cluster.History.Addr
	}
	return s.Addr()
}

// UIAddr is the Web UI's host:port, empty when headless.
func (s *Server) UIAddr() string {
	if !s.opts.UI || s.cluster != nil {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", s.opts.UIPort)
}

// Pid is the server process's id, 0 when it is not running; for a
// cluster, the frontend node's.
func (s *Server) Pid() int {
	if s.cluster != nil {
		return s.cluster.Frontend.Pid()
	}
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Cluster is the cluster the server stands for, nil for the dev server.
func (s *Server) Cluster() *cluster.Cluster { return s.cluster }

// DBFile is the server's database; empty for a cluster (PostgreSQL).
func (s *Server) DBFile() string {
	if s.cluster != nil {
		return ""
	}
	return s.opts.DBFile
}

// Kill stops the server with SIGKILL, as a crash would; for a cluster, the
// history node.
func (s *Server) Kill() {
	if s.cluster != nil {
		s.cluster.Kill()
		return
	}
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Stop stops the server gracefully; for a cluster, both nodes and
// PostgreSQL.
func (s *Server) Stop() {
	if s.cluster != nil {
		s.cluster.Stop()
		return
	}
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
}

// Restart starts the server again on the same port and database file; for
// a cluster, the history node (the frontend node keeps running).
func (s *Server) Restart(ctx context.Context) error {
	if s.cluster != nil {
		return s.cluster.Restart(ctx)
	}
	s.Stop()
	return s.start(ctx)
}

// StartT starts a dev server for a test and stops it at cleanup. A missing
// CLI fails the test: CI installs it (make bin/temporal). Under -short (the
// fast path) it skips the test.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the temporal dev server: skipped with -short")
	}
	if ClusterMode() {
		return startClusterT(t)
	}
	if opts.LogFile == "" {
		opts.LogFile = filepath.Join(t.TempDir(), "temporal.log")
	}
	if opts.DBFile == "" {
		opts.DBFile = filepath.Join(t.TempDir(), "temporal.db")
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("dev server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...interface{}) {}
func (nopLogger) Info(string, ...interface{})  {}
func (nopLogger) Warn(string, ...interface{})  {}
func (nopLogger) Error(string, ...interface{}) {}

// startClusterT starts a fresh cluster with its own PostgreSQL for one
// test. Its directory is not the test's TempDir: the postgres user must be
// able to enter it. The nodes' logs are shown when the test fails.
func startClusterT(t testing.TB) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "rackflow-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), Options{Cluster: true, ClusterDir: dir})
	logs := func() {
		for _, f := range []string{"frontend.log", "history.log", "pg/postgres.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			t.Logf("--- cluster %s (tail):\n%s", f, tail(string(b), 40))
		}
	}
	if err != nil {
		logs()
		t.Fatalf("temporal cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs()
		}
		s.Stop()
	})
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
