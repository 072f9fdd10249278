package cluster

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/api"
)

// needCluster skips unless the cluster was asked for: these tests are
// make test-cluster's, not make test's.
func needCluster(t *testing.T) {
	t.Helper()
	if testing.Short() || os.Getenv("RACKFLOW_TEMPORAL_CLUSTER") == "" {
		t.Skip("starts PostgreSQL and the Temporal server: set RACKFLOW_TEMPORAL_CLUSTER=1 (make test-cluster)")
	}
}

func timerWorkflow(ctx workflow.Context, d time.Duration) (string, error) {
	if err := workflow.Sleep(ctx, d); err != nil {
		return "", err
	}
	return "done", nil
}

// TestClusterSurvivesHistoryNodeKill starts a cluster, checks what it
// registered, and runs a workflow across a SIGKILL and restart of the
// history node: the frontend node stays up, and the run completes.
func TestClusterSurvivesHistoryNodeKill(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := Start(ctx, Options{Dir: tempDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	t.Logf("cluster ready in %s at %s", time.Since(began).Round(100*time.Millisecond), c.Addr())

	cl, err := client.Dial(client.Options{HostPort: c.Addr(), Namespace: Namespace, Logger: nopLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sas, err := cl.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: Namespace})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range api.SearchAttributes {
		if got, want := sas.GetCustomAttributes()[k], enumspb.IndexedValueType(enumspb.IndexedValueType_shorthandValue[v]); got != want {
			t.Errorf("search attribute %s: %v, want %v", k, got, want)
		}
	}

	w := worker.New(cl, "cluster-test", worker.Options{})
	w.RegisterWorkflow(timerWorkflow)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: "cluster-test"}, timerWorkflow, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill()
	if conn, err := net.DialTimeout("tcp", c.History.Addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("the history node still accepts connections after SIGKILL")
	}
	if conn, err := net.DialTimeout("tcp", c.Addr(), time.Second); err != nil {
		t.Fatalf("the frontend went down with the history node: %v", err)
	} else {
		conn.Close()
	}
	began = time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("history node back in %s", time.Since(began).Round(100*time.Millisecond))
	var out string
	if err := run.Get(ctx, &out); err != nil || out != "done" {
		t.Fatalf("run across the restart: %q, %v", out, err)
	}
}
