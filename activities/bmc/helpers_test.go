package bmc_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/ipmisim"
)

const credRef = "bmc/node01"

func newEnv(t *testing.T) *testsuite.TestActivityEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	return s.NewTestActivityEnvironment()
}

// startSim starts a real ipmi_sim; ipmitool must be installed too.
func startSim(t *testing.T, opts ipmisim.Options) *ipmisim.Sim {
	t.Helper()
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Fatal("ipmitool not installed (Debian package ipmitool)")
	}
	return ipmisim.Start(t, opts)
}

func simInput(s *ipmisim.Sim) bmc.Input {
	return bmc.Input{Host: "node01", BMC: api.BMC{Address: s.Addr(), Port: s.Port(), Provider: "ipmi", Credential: credRef}}
}

// simActivities talks to s through bmclib with the real ipmitool, with
// short pauses so tests run fast.
func simActivities(s *ipmisim.Sim) *bmc.Activities {
	return &bmc.Activities{
		Secrets:       secrets.Static{credRef: {Username: s.Username, Password: s.Password, Endpoints: []string{s.Addr()}}},
		CallTimeout:   5 * time.Second,
		ConfirmDelay:  100 * time.Millisecond,
		PollInterval:  200 * time.Millisecond,
		SettleTimeout: 10 * time.Second,
	}
}

// run executes one activity method in env and decodes its result.
func run[T any](t *testing.T, env *testsuite.TestActivityEnvironment, fn any, in bmc.Input) (T, error) {
	t.Helper()
	var out T
	start := time.Now()
	v, err := env.ExecuteActivity(fn, in)
	t.Logf("activity took %v (err: %v)", time.Since(start).Round(time.Millisecond), err)
	if err == nil {
		if derr := v.Get(&out); derr != nil {
			t.Fatalf("decode result: %v", derr)
		}
	}
	return out, err
}

// errKind returns an activity error's type and whether it is retryable.
func errKind(t *testing.T, err error) (string, bool) {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("not an ApplicationError: %T %v", err, err)
	}
	return ae.Type(), !ae.NonRetryable()
}

// sets lists the chassis_control calls that changed something.
func sets(s *ipmisim.Sim) []string {
	var out []string
	for _, c := range s.Calls() {
		if len(c) > 4 && c[:4] == "set " {
			out = append(out, c)
		}
	}
	return out
}

// fakeBMC is a hand-written Client for what ipmi_sim will not do on demand:
// contradicting power reads, and counting concurrent calls.
type fakeBMC struct {
	mu     sync.Mutex
	reads  []string // successive GetPowerState answers; the last repeats
	errs   map[int]error
	nread  int
	power  []string // SetPowerState calls
	boots  []string
	delay  time.Duration
	gauge  *gauge
	opened bool
}

// gauge counts calls in flight and remembers the maximum.
type gauge struct {
	mu       sync.Mutex
	cur, max int
}

func (g *gauge) enter() func() {
	if g == nil {
		return func() {}
	}
	g.mu.Lock()
	g.cur++
	if g.cur > g.max {
		g.max = g.cur
	}
	g.mu.Unlock()
	return func() { g.mu.Lock(); g.cur--; g.mu.Unlock() }
}

func (g *gauge) Max() int { g.mu.Lock(); defer g.mu.Unlock(); return g.max }

func (f *fakeBMC) wait(ctx context.Context) error {
	defer f.gauge.enter()()
	select {
	case <-time.After(f.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeBMC) Open(ctx context.Context) error {
	f.mu.Lock()
	f.opened = true
	f.mu.Unlock()
	return f.wait(ctx)
}

func (f *fakeBMC) Close(context.Context) error { return nil }

func (f *fakeBMC) GetPowerState(ctx context.Context) (string, error) {
	if err := f.wait(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.nread
	f.nread++
	if err := f.errs[i]; err != nil {
		return "", err
	}
	if len(f.power) > 0 {
		// After a command the fake machine follows it.
		if last := f.power[len(f.power)-1]; last == "off" {
			return "Chassis Power is off", nil
		}
		return "Chassis Power is on", nil
	}
	if i >= len(f.reads) {
		i = len(f.reads) - 1
	}
	return f.reads[i], nil
}

func (f *fakeBMC) SetPowerState(ctx context.Context, state string) (bool, error) {
	if err := f.wait(ctx); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.power = append(f.power, state)
	return true, nil
}

func (f *fakeBMC) SetBootDevice(ctx context.Context, dev string, persistent, efi bool) (bool, error) {
	if err := f.wait(ctx); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.boots = append(f.boots, dev)
	return true, nil
}

func (f *fakeBMC) powerCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.power...)
}

// fakeActivities serves every BMC address from fakes[address].
func fakeActivities(fakes map[string]*fakeBMC, lim *bmc.Limiter) *bmc.Activities {
	return &bmc.Activities{
		Secrets: secrets.Static{credRef: {Username: "admin", Password: "pw", Endpoints: []string{"10.0.0.0/24"}}},
		NewClient: func(_ context.Context, c bmc.Conn) (bmc.Client, error) {
			f, ok := fakes[c.Host]
			if !ok {
				return nil, errors.New("no fake for " + c.Host)
			}
			return f, nil
		},
		Limiter:           lim,
		ConfirmDelay:      10 * time.Millisecond,
		PollInterval:      10 * time.Millisecond,
		SettleTimeout:     time.Second,
		HeartbeatInterval: 20 * time.Millisecond,
	}
}

func fakeInput(addr string) bmc.Input {
	return bmc.Input{Host: "node01", BMC: api.BMC{Address: addr, Port: 623, Provider: "ipmi", Credential: credRef}}
}
