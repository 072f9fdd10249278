package workflows

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
)

const wantDigest = "abababababababababababababababababababababababababababababababab"

type deployFixture struct {
	env *testsuite.TestWorkflowEnvironment

	mu          sync.Mutex
	provisioned []string
	published   []api.PublishInput
	running     int
	maxRunning  int
}

// newDeployFixture mocks the children: ProvisionHost fails for the hosts in
// fail, takes an hour of workflow time otherwise; hosts in converged were
// provisioned before with the wanted image.
func newDeployFixture(t *testing.T, fail, converged map[string]bool) *deployFixture {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetTestTimeout(time.Minute)
	Register(env)
	env.RegisterActivity(&inventory.Activities{})
	env.RegisterActivity(&runs.Activities{})
	f := &deployFixture{env: env}
	env.OnActivity(invA.ResolveHost, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in inventory.ResolveInput) (api.Host, error) {
			h := testHost()
			h.Name = in.Host
			h.Image.SHA256 = wantDigest
			return h, nil
		})
	env.OnActivity(runsA.LastProvision, mock.Anything, mock.Anything).Return(
		func(_ context.Context, host string) (runs.LastProvisionResult, error) {
			if converged[host] {
				return runs.LastProvisionResult{Found: true, Status: "Completed", ImageDigest: wantDigest}, nil
			}
			return runs.LastProvisionResult{}, nil
		})
	env.OnWorkflow(api.WorkflowProvisionHost, mock.Anything, mock.Anything).Return(
		func(ctx workflow.Context, in api.ProvisionInput) (api.ProvisionResult, error) {
			f.mu.Lock()
			f.provisioned = append(f.provisioned, in.Host)
			f.running++
			if f.running > f.maxRunning {
				f.maxRunning = f.running
			}
			f.mu.Unlock()
			_ = workflow.Sleep(ctx, time.Hour)
			f.mu.Lock()
			f.running--
			f.mu.Unlock()
			if fail[in.Host] {
				return api.ProvisionResult{}, temporal.NewNonRetryableApplicationError(in.Host+" needed attention at write-image and nobody answered", ErrTypeAttentionDeadlineExceeded, nil)
			}
			return api.ProvisionResult{Host: in.Host, ImageDigest: wantDigest}, nil
		})
	env.OnWorkflow(api.WorkflowPublishService, mock.Anything, mock.Anything).Return(
		func(_ workflow.Context, in api.PublishInput) (api.PublishResult, error) {
			f.mu.Lock()
			f.published = append(f.published, in)
			f.mu.Unlock()
			return api.PublishResult{WorkflowID: api.PublishWorkflowID(in.VIP, in.Port), Backends: in.Backends}, nil
		})
	return f
}

func deploySpec(hosts ...string) api.DeploySpec {
	d := api.DeploySpec{Service: "shop", Publish: &api.DeployPublish{VIP: "203.0.113.40", Port: 5432, Protocol: "TCP",
		NetScaler: api.NetScaler{URL: "https://ns.test", Credential: "netscaler/main"}}}
	for i, h := range hosts {
		d.Hosts = append(d.Hosts, api.DeployHost{Host: h, Rack: "r1", Backend: "10.0.3." + string(rune('1'+i)) + ":5432"})
	}
	return d
}

func (f *deployFixture) result(t *testing.T) (api.DeployResult, error) {
	t.Helper()
	if !f.env.IsWorkflowCompleted() {
		t.Fatal("deploy did not complete")
	}
	var r api.DeployResult
	err := f.env.GetWorkflowError()
	if err == nil {
		_ = f.env.GetWorkflowResult(&r)
	}
	return r, err
}

func TestDeployLeavesAFailedHostOutOfTheVIP(t *testing.T) {
	f := newDeployFixture(t, map[string]bool{"db02": true}, nil)
	f.env.ExecuteWorkflow(DeployService, deploySpec("db01", "db02", "db03"))
	res, err := f.result(t)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if !res.Partial {
		t.Error("result not marked partial")
	}
	states := map[string]string{}
	for _, m := range res.Members {
		states[m.Name] = m.State
	}
	if d := cmp.Diff(map[string]string{"db01": api.MemberProvisioned, "db02": api.MemberFailed, "db03": api.MemberProvisioned}, states); d != "" {
		t.Errorf("member states (-want +got):\n%s", d)
	}
	if len(f.published) != 1 {
		t.Fatalf("published %d times", len(f.published))
	}
	want := []api.Backend{{IP: "10.0.3.1", Port: 5432}, {IP: "10.0.3.3", Port: 5432}}
	if d := cmp.Diff(want, f.published[0].Backends); d != "" {
		t.Errorf("VIP backends (-want +got):\n%s", d)
	}
}

func TestDeployRerunConvergesWithoutReprovisioning(t *testing.T) {
	f := newDeployFixture(t, nil, map[string]bool{"db01": true, "db02": true})
	f.env.ExecuteWorkflow(DeployService, deploySpec("db01", "db02", "db03"))
	res, err := f.result(t)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"db03"}, f.provisioned); d != "" {
		t.Errorf("provisioned (-want +got):\n%s", d)
	}
	if res.Members[0].State != api.MemberConverged || len(f.published[0].Backends) != 3 {
		t.Errorf("members = %+v, backends = %v", res.Members, f.published[0].Backends)
	}
}

func TestDeployRequireAllPublishesNothing(t *testing.T) {
	f := newDeployFixture(t, map[string]bool{"db01": true}, nil)
	d := deploySpec("db01", "db02")
	d.RequireAll = true
	f.env.ExecuteWorkflow(DeployService, d)
	_, err := f.result(t)
	if !activities.IsType(err, ErrTypeDeployIncomplete) {
		t.Fatalf("err = %v, want %s", err, ErrTypeDeployIncomplete)
	}
	if len(f.published) != 0 {
		t.Error("published despite require_all")
	}
}

func TestDeployCapsConcurrencyPerRack(t *testing.T) {
	f := newDeployFixture(t, nil, nil)
	d := deploySpec("db01", "db02", "db03", "db04", "db05")
	d.PerRack = 2
	f.env.ExecuteWorkflow(DeployService, d)
	if _, err := f.result(t); err != nil {
		t.Fatal(err)
	}
	if f.maxRunning != 2 || len(f.provisioned) != 5 {
		t.Errorf("max concurrent = %d (want 2), provisioned %d (want 5)", f.maxRunning, len(f.provisioned))
	}
}

func TestDeploySpecFileReportsEveryErrorWithItsLine(t *testing.T) {
	path := t.TempDir() + "/service.yaml"
	yaml := `service: shop
hosts:
  - host: db01
    backend: 10.0.3.1:5432
  - host: DB_02
    backend: 10.0.3.2:99999
publish:
  vip: 203.0.113.400
  port: 5432
  protocol: TCP
  netscaler: {url: https://ns.test, credential: netscaler/main}
`
	if err := writeFile(path, yaml); err != nil {
		t.Fatal(err)
	}
	var d api.DeploySpec
	err := api.DecodeFile(path, &d)
	var se api.SpecErrors
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want SpecErrors", err)
	}
	got := map[string]int{}
	for _, e := range se {
		got[e.Field] = e.Line
		if e.File != path {
			t.Errorf("file = %q", e.File)
		}
	}
	want := map[string]int{"hosts[1].host": 5, "hosts[1].backend": 6, "publish.vip": 8}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("errors by field and line (-want +got):\n%s\n%v", d, err)
	}
	if !strings.Contains(err.Error(), path+":8: publish.vip") {
		t.Errorf("message = %v", err)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
