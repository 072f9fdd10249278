package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

var (
	starterOnce sync.Once
	starterBin  string
	starterErr  error
)

func buildStarter(t *testing.T) string {
	t.Helper()
	starterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rackflow-starter-bin-")
		if err != nil {
			starterErr = err
			return
		}
		starterBin = filepath.Join(dir, "starter")
		if out, err := exec.Command("go", "build", "-o", starterBin, "github.com/rackflow/rackflow/starter").CombinedOutput(); err != nil {
			starterErr = fmt.Errorf("go build starter: %v\n%s", err, out)
		}
	})
	if starterErr != nil {
		t.Fatal(starterErr)
	}
	return starterBin
}

// starter runs the built CLI against the stack's dev server.
func (s *stack) starter(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildStarter(t), append([]string{"--address", s.server.Addr()}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("starter %v: %v", args, err)
	}
	return out.String(), code
}

// TestStarterDeployWaitListStuckRetry is the on-call story with the real
// CLI binary: a deploy parks at chef, `list --stuck` shows it, the operator
// fixes chef and `retry`s, and the deploy publishes the VIP.
func TestStarterDeployWaitListStuckRetry(t *testing.T) {
	s := newStack(t, 32<<20)
	// The lab's NetScaler.
	ns := nitrofake.New(nitrofake.Options{Username: s.lab.NetScalerUser, Password: s.lab.NetScalerPassword})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ns, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	// chef fails until the operator "rotates the validator key".
	failFile := filepath.Join(s.lab.ChefDir, "fail")
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(t.TempDir(), "service.yaml")
	svc := fmt.Sprintf(`service: shop
hosts:
  - {host: %s, rack: r1, backend: "127.0.0.1:5432"}
publish:
  vip: 203.0.113.40
  port: 5432
  protocol: TCP
  netscaler: {url: "http://%s", credential: netscaler/lab, auth: header}
provision: {step_attempts: 1, attention_deadline: 30m, image_heartbeat: 5s}
`, s.lab.Options.Host, ln.Addr())
	if err := os.WriteFile(specPath, []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := s.starter(t, "validate", "-f", specPath); code != 0 {
		t.Fatalf("validate: %d %s", code, out)
	}

	type result struct {
		out  string
		code int
	}
	deployDone := make(chan result, 1)
	go func() {
		out, code := s.starter(t, "deploy", "-f", specPath, "--wait")
		deployDone <- result{out, code}
	}()

	// Wait until the host parks at chef, as `list --stuck` reports it.
	var stuck string
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		out, code := s.starter(t, "list", "--stuck")
		if code == 0 && strings.Contains(out, api.StateNeedsAttention) && strings.Contains(out, api.StepChef) {
			stuck = out
			break
		}
		time.Sleep(time.Second)
	}
	if stuck == "" {
		t.Fatal("the host never showed up in `starter list --stuck` at chef-bootstrap")
	}
	if !strings.Contains(stuck, s.lab.Options.Host) {
		t.Errorf("list --stuck:\n%s", stuck)
	}
	if out, code := s.starter(t, "status", s.lab.Options.Host); code != 0 || !strings.Contains(out, "ChefBootstrapFailed") {
		t.Errorf("status (%d):\n%s", code, out)
	}
	// A skip without a reason is refused; then the real fix and a retry.
	if _, code := s.starter(t, "skip", s.lab.Options.Host); code == 0 {
		t.Error("skip without --reason accepted")
	}
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	if out, code := s.starter(t, "retry", s.lab.Options.Host, "--reason", "rotated the validator key"); code != 0 {
		t.Fatalf("retry (%d): %s", code, out)
	}

	select {
	case r := <-deployDone:
		if r.code != 0 {
			t.Fatalf("deploy --wait exit %d:\n%s", r.code, r.out)
		}
		for _, want := range []string{"started deploy/shop", "provisioned", "published with 127.0.0.1:5432"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("deploy output lacks %q:\n%s", want, r.out)
			}
		}
	case <-time.After(4 * time.Minute):
		t.Fatal("deploy --wait did not return")
	}
	if n := len(ns.Bindings("servicegroup_servicegroupmember_binding", "rf_publish_203.0.113.40:5432_sg")); n != 1 {
		t.Errorf("VIP members = %d, want 1", n)
	}
	out, code := s.starter(t, "history", s.lab.Options.Host)
	if code != 0 || !strings.Contains(out, "operator retry   reason: rotated the validator key") || !strings.Contains(out, "Bootstrap      FAILED") {
		t.Errorf("history (%d):\n%s", code, out)
	}
}
