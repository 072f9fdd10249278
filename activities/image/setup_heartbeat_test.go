package image_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// slowLink forwards connections to addr, each only after delay: a slow boot
// network or a live system too busy to answer its SSH handshake at once.
func slowLink(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				select {
				case <-time.After(delay):
				case <-done:
					return
				}
				u, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	}()
	return l.Addr().String()
}

// TestWriteImageHeartbeatsThroughSlowSetup runs WriteImage with a short
// heartbeat timeout against a host whose SSH connection takes longer than
// that timeout to come up. The attempt must go on heartbeating while it
// dials, checks the disk and installs the helper: a live attempt taken for
// a dead one is timed out and its successor starts again (seen under load
// as a graceful-stop resume that needed a third attempt).
func TestWriteImageHeartbeatsThroughSlowSetup(t *testing.T) {
	f := newFixture(t, 2*mib, 3*mib)
	fake := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{f.key.Public()}})
	// The SDK sends the latest heartbeat every 80% of the timeout (3.2s
	// here), which leaves the test server's check a margin of 0.8s.
	const heartbeatTimeout = 4 * time.Second
	const setup = 10 * time.Second
	addr := slowLink(t, fake.Addr(), setup)

	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.SetTestTimeout(time.Minute)
	env.RegisterActivity(f.acts)
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in image.WriteInput) (image.WriteResult, error) {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			HeartbeatTimeout:    heartbeatTimeout,
			RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		})
		var r image.WriteResult
		err := workflow.ExecuteActivity(ctx, "WriteImage", in).Get(ctx, &r)
		return r, err
	}, workflow.RegisterOptions{Name: "write"})
	env.ExecuteWorkflow("write", f.input(addr, fake.HostKeyLine()))
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("WriteImage through a connection that takes %s to come up, heartbeat timeout %s: %v", setup, heartbeatTimeout, err)
	}
	var res image.WriteResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Bytes != f.img.Size {
		t.Errorf("wrote %d bytes, want %d", res.Bytes, f.img.Size)
	}
	f.checkDisk(t)
}
