package bmc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/ipmisim"
)

func TestPowerOnPXEFromOff(t *testing.T) {
	sim := startSim(t, ipmisim.Options{Power: false})
	a := simActivities(sim)
	env := newEnv(t)
	env.RegisterActivity(a)

	got, err := run[bmc.Result](t, env, a.PowerOnPXE, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "off", Action: "on", State: "on"}, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if !sim.Power() || sim.BootDevice() != "pxe" {
		t.Errorf("machine: power=%v boot=%q; want on, pxe", sim.Power(), sim.BootDevice())
	}
	if diff := cmp.Diff([]string{"set boot pxe", "set power 1"}, sets(sim)); diff != "" {
		t.Errorf("BMC commands (-want +got):\n%s", diff)
	}
}

func TestPowerOnPXECyclesAHostThatIsOn(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sim := startSim(t, ipmisim.Options{Power: true, BootDevice: "default", OnPower: hook})
	a := simActivities(sim)
	env := newEnv(t)
	env.RegisterActivity(a)

	got, err := run[bmc.Result](t, env, a.PowerOnPXE, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "on", Action: "cycle", State: "on"}, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	// ipmi_sim cycles as off, then on about a second later; the activity
	// returned only once it read on again.
	if diff := cmp.Diff([]string{"set boot pxe", "set power 0", "set power 1"}, sets(sim)); diff != "" {
		t.Errorf("BMC commands (-want +got):\n%s", diff)
	}
	if !sim.Power() {
		t.Error("machine is off")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(sim.Hooks()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if diff := cmp.Diff([]string{"off pxe", "on pxe"}, sim.Hooks()); diff != "" {
		t.Errorf("machine saw (-want +got):\n%s", diff)
	}
}

func TestBootFromDisk(t *testing.T) {
	sim := startSim(t, ipmisim.Options{Power: true, BootDevice: "pxe"})
	a := simActivities(sim)
	env := newEnv(t)
	env.RegisterActivity(a)

	got, err := run[bmc.Result](t, env, a.BootFromDisk, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "on", Action: "cycle", State: "on"}, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	// ipmi_sim hands ipmitool's "disk" to chassis_control as "default".
	if diff := cmp.Diff([]string{"set boot default", "set power 0", "set power 1"}, sets(sim)); diff != "" {
		t.Errorf("BMC commands (-want +got):\n%s", diff)
	}

	// From off it powers on instead.
	if err := sim.SetPower(false); err != nil {
		t.Fatal(err)
	}
	got, err = run[bmc.Result](t, env, a.BootFromDisk, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "off", Action: "on", State: "on"}, got); diff != "" {
		t.Errorf("result from off (-want +got):\n%s", diff)
	}
}

func TestPowerOffIsIdempotent(t *testing.T) {
	sim := startSim(t, ipmisim.Options{Power: true})
	a := simActivities(sim)
	env := newEnv(t)
	env.RegisterActivity(a)

	got, err := run[bmc.Result](t, env, a.PowerOff, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "on", Action: "off", State: "off"}, got); diff != "" {
		t.Errorf("first power off (-want +got):\n%s", diff)
	}
	got, err = run[bmc.Result](t, env, a.PowerOff, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "off", Action: "none", State: "off"}, got); diff != "" {
		t.Errorf("second power off (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"set power 0"}, sets(sim)); diff != "" {
		t.Errorf("BMC commands (-want +got):\n%s", diff)
	}
	state, err := run[string](t, env, a.PowerState, simInput(sim))
	if err != nil || state != "off" {
		t.Errorf("PowerState = %q, %v; want off", state, err)
	}
}

// A retry after a power command that went through (the heartbeat says so)
// must not cycle the host a second time.
func TestRetryDoesNotRepeatAcceptedPowerCommand(t *testing.T) {
	sim := startSim(t, ipmisim.Options{Power: true})
	a := simActivities(sim)
	env := newEnv(t)
	env.RegisterActivity(a)
	env.SetHeartbeatDetails(bmc.Progress{Step: "wait for power on", PriorState: "on", Action: "cycle"})

	got, err := run[bmc.Result](t, env, a.PowerOnPXE, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "on", Action: "cycle", State: "on"}, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if s := sets(sim); len(s) != 0 {
		t.Errorf("retry sent BMC commands %q", s)
	}
}

func closedUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

func TestFailures(t *testing.T) {
	const password = "sim-secret-pw"
	sim := startSim(t, ipmisim.Options{Password: password})
	deadPort := closedUDPPort(t)
	tests := map[string]struct {
		cred      secrets.Secret
		ref       string
		port      int
		provider  string
		wantType  string
		retryable bool
		wantMsg   string
	}{
		"wrong password": {
			cred: secrets.Secret{Username: sim.Username, Password: "not-" + password},
			// ipmitool prints the same line for a rejected password and for
			// no answer, so it cannot be BMCAuthFailed.
			wantType: bmc.ErrTypeNoSession, retryable: true,
			wantMsg: fmt.Sprintf("bmc 127.0.0.1:%d unreachable or credentials rejected: connect:", sim.Port()),
		},
		"wrong user": {
			cred:     secrets.Secret{Username: "nobody", Password: password},
			wantType: bmc.ErrTypeNoSession, retryable: true,
			wantMsg: "unreachable or credentials rejected",
		},
		"credential reference unknown": {
			ref:      "bmc/typo",
			wantType: activities.ErrTypeCredentialNotFound, retryable: false,
			wantMsg: `bmc credential: secret not found: "bmc/typo"`,
		},
		"nothing listening": {
			cred: secrets.Secret{Username: sim.Username, Password: password}, port: deadPort,
			wantType: bmc.ErrTypeUnreachable, retryable: true,
			wantMsg: fmt.Sprintf("bmc 127.0.0.1:%d unreachable: connect: no answer within 1s", deadPort),
		},
		// The input names the BMC and the credential together: a
		// credential the secrets file binds to another BMC is not sent
		// to this one, though it is the right password for it.
		"credential bound to another BMC": {
			cred:     secrets.Secret{Username: sim.Username, Password: password, Endpoints: []string{"10.20.0.7"}},
			wantType: activities.ErrTypeCredentialNotAllowed, retryable: false,
			wantMsg: fmt.Sprintf(`bmc credential: secret "bmc/node01" to 127.0.0.1:%d: secret not allowed for this endpoint: the secrets file binds it to 10.20.0.7`, sim.Port()),
		},
		"credential bound to nothing": {
			cred:     secrets.Secret{Username: sim.Username, Password: password, Endpoints: []string{}},
			wantType: activities.ErrTypeCredentialNotAllowed, retryable: false,
			wantMsg: "secret bound to no endpoint",
		},
		"unknown provider": {
			cred: secrets.Secret{Username: sim.Username, Password: password}, provider: "snmp",
			wantType: activities.ErrTypeInvalidInput, retryable: false,
			wantMsg: `bmc.provider: must be "ipmi" or "redfish"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a := simActivities(sim)
			a.CallTimeout = time.Second
			cred := tc.cred
			if cred.Endpoints == nil {
				cred.Endpoints = []string{"127.0.0.1"}
			}
			a.Secrets = secrets.Static{credRef: cred}
			in := simInput(sim)
			if tc.ref != "" {
				in.BMC.Credential = tc.ref
			}
			if tc.port != 0 {
				in.BMC.Port = tc.port
			}
			if tc.provider != "" {
				in.BMC.Provider = tc.provider
			}
			env := newEnv(t)
			env.RegisterActivity(a)
			_, err := run[bmc.Result](t, env, a.PowerOnPXE, in)
			if err == nil {
				t.Fatal("no error")
			}
			typ, retryable := errKind(t, err)
			if typ != tc.wantType || retryable != tc.retryable {
				t.Errorf("error type %s retryable=%v; want %s retryable=%v (%v)", typ, retryable, tc.wantType, tc.retryable, err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
	if s := sets(sim); len(s) != 0 || sim.Power() {
		t.Errorf("failed attempts changed the machine: %q, power=%v", s, sim.Power())
	}
}

// A BMC that stops answering fails the attempt as unreachable, without
// touching the host; the retry after it answers again powers the host on.
func TestUnresponsiveBMCThenRetry(t *testing.T) {
	sim := startSim(t, ipmisim.Options{Power: false})
	a := simActivities(sim)
	a.CallTimeout = time.Second
	env := newEnv(t)
	env.RegisterActivity(a)

	if err := sim.Pause(); err != nil {
		t.Fatal(err)
	}
	_, err := run[bmc.Result](t, env, a.PowerOnPXE, simInput(sim))
	if err == nil {
		t.Fatal("activity succeeded against a paused BMC")
	}
	if typ, retryable := errKind(t, err); typ != bmc.ErrTypeUnreachable || !retryable {
		t.Fatalf("error %s retryable=%v; want %s retryable (%v)", typ, retryable, bmc.ErrTypeUnreachable, err)
	}
	if err := sim.Resume(); err != nil {
		t.Fatal(err)
	}
	// The retry runs with the default per-call timeout: the one-second
	// limit above was for the stall, and on a loaded machine a lanplus
	// session set-up alone can take longer than that.
	a.CallTimeout = simActivities(sim).CallTimeout
	got, err := run[bmc.Result](t, env, a.PowerOnPXE, simInput(sim))
	if err != nil {
		t.Fatalf("retry after resume: %v", err)
	}
	if diff := cmp.Diff(bmc.Result{PriorState: "off", Action: "on", State: "on"}, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if !sim.Power() || sim.BootDevice() != "pxe" {
		t.Errorf("machine: power=%v boot=%q", sim.Power(), sim.BootDevice())
	}
}

// A pause shorter than CallTimeout is waited out: ipmitool's request sits in
// the paused simulator's socket and is answered on resume.
func TestShortBMCStallIsWaitedOut(t *testing.T) {
	sim := startSim(t, ipmisim.Options{Power: false})
	a := simActivities(sim)
	a.CallTimeout = 10 * time.Second
	env := newEnv(t)
	env.RegisterActivity(a)

	if err := sim.SetUnresponsive(1500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := run[bmc.Result](t, env, a.PowerOnPXE, simInput(sim))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("took %v; the stall was not in the way", took)
	}
	if got.State != "on" || !sim.Power() {
		t.Errorf("result %+v, power=%v", got, sim.Power())
	}
}

// Two reads that disagree, or a read that fails, must not lead to a power
// command: a glitch must never power-cycle a healthy host.
func TestPowerChangeNeedsTwoAgreeingReads(t *testing.T) {
	tests := map[string]struct {
		reads []string
		errs  map[int]error
	}{
		"on then off":          {reads: []string{"Chassis Power is on", "Chassis Power is off"}},
		"off then on":          {reads: []string{"Chassis Power is off", "Chassis Power is on"}},
		"second read fails":    {reads: []string{"Chassis Power is on"}, errs: map[int]error{1: errors.New("provider: ipmitool: timeout")}},
		"state neither on/off": {reads: []string{"PoweringOn", "PoweringOn"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := &fakeBMC{reads: tc.reads, errs: tc.errs}
			a := fakeActivities(map[string]*fakeBMC{"10.0.0.1": f}, nil)
			env := newEnv(t)
			env.RegisterActivity(a)
			_, err := run[bmc.Result](t, env, a.PowerOnPXE, fakeInput("10.0.0.1"))
			if err == nil {
				t.Fatal("no error")
			}
			if _, retryable := errKind(t, err); !retryable {
				t.Errorf("error not retryable: %v", err)
			}
			if p := f.powerCalls(); len(p) != 0 {
				t.Errorf("power commands sent: %q", p)
			}
		})
	}
}

func TestPerBMCConcurrencyLimit(t *testing.T) {
	tests := map[string]struct {
		perBMC  int
		addrs   []string
		wantMax map[string]int
	}{
		"one at a time per BMC": {perBMC: 1, addrs: []string{"10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.1"},
			wantMax: map[string]int{"10.0.0.1": 1, "all": 1}},
		"two at a time per BMC": {perBMC: 2, addrs: []string{"10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.1"},
			wantMax: map[string]int{"10.0.0.1": 2, "all": 2}},
		"BMCs do not block each other": {perBMC: 1, addrs: []string{"10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"},
			wantMax: map[string]int{"10.0.0.1": 1, "10.0.0.2": 1, "all": 2}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gauges := map[string]*gauge{"all": {}}
			for _, addr := range tc.addrs {
				gauges[addr] = &gauge{}
			}
			a := fakeActivities(nil, bmc.NewLimiter(tc.perBMC))
			// Each activity gets its own fake BMC session, counted from Open
			// to Close on its BMC's gauge and on the all-BMC gauge.
			a.NewClient = func(_ context.Context, c bmc.Conn) (bmc.Client, error) {
				return &countedSession{
					fakeBMC: &fakeBMC{reads: []string{"Chassis Power is off"}, delay: 30 * time.Millisecond},
					gauges:  []*gauge{gauges[c.Host], gauges["all"]},
				}, nil
			}
			envs := make([]*testsuite.TestActivityEnvironment, len(tc.addrs))
			for i := range envs {
				envs[i] = newEnv(t)
				envs[i].RegisterActivity(a)
			}
			var wg sync.WaitGroup
			errs := make([]error, len(tc.addrs))
			for i, addr := range tc.addrs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = envs[i].ExecuteActivity(a.PowerOnPXE, fakeInput(addr))
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("activity %d: %v", i, err)
				}
			}
			got := map[string]int{}
			for k, g := range gauges {
				got[k] = g.Max()
			}
			if diff := cmp.Diff(tc.wantMax, got); diff != "" {
				t.Errorf("max concurrent sessions (-want +got):\n%s", diff)
			}
		})
	}
}

// countedSession is a fake Client whose session, Open to Close, is counted.
type countedSession struct {
	*fakeBMC
	gauges []*gauge
	leave  []func()
}

func (c *countedSession) Open(ctx context.Context) error {
	for _, g := range c.gauges {
		c.leave = append(c.leave, g.enter())
	}
	return c.fakeBMC.Open(ctx)
}

func (c *countedSession) Close(context.Context) error {
	for _, l := range c.leave {
		l()
	}
	c.leave = nil
	return nil
}

// A waiting activity heartbeats, and gives up when its context ends.
func TestWaitForSlotHeartbeatsAndRespectsContext(t *testing.T) {
	lim := bmc.NewLimiter(1)
	release, err := lim.Acquire(context.Background(), "10.0.0.1:623")
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	f := &fakeBMC{reads: []string{"Chassis Power is off"}}
	a := fakeActivities(map[string]*fakeBMC{"10.0.0.1": f}, lim)
	env := newEnv(t)
	env.RegisterActivity(a)
	hb := &heartbeats{}
	ctx, cancel := context.WithCancel(context.Background())
	env.SetWorkerOptions(worker.Options{BackgroundActivityContext: ctx, Interceptors: []interceptor.WorkerInterceptor{hb}})
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err = env.ExecuteActivity(a.PowerOnPXE, fakeInput("10.0.0.1"))
	if err == nil {
		t.Fatal("activity ran although the BMC's only slot was taken")
	}
	// HeartbeatInterval is 20ms: a 300ms wait makes about 15.
	if n := hb.count("wait for a slot on bmc 10.0.0.1:623"); n < 5 {
		t.Errorf("%d heartbeats while waiting; want several", n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opened {
		t.Error("BMC contacted without a slot")
	}
	if lim.InUse("10.0.0.1:623") != 1 {
		t.Errorf("slots in use = %d; want 1 (the test's own)", lim.InUse("10.0.0.1:623"))
	}
}

func TestLimiterAcquireRespectsContext(t *testing.T) {
	lim := bmc.NewLimiter(1)
	release, err := lim.Acquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := lim.Acquire(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Acquire: %v; want deadline exceeded", err)
	}
	rel2, err := lim.Acquire(context.Background(), "b")
	if err != nil {
		t.Fatalf("another key blocked: %v", err)
	}
	rel2()
	release()
	release() // twice is harmless
	rel3, err := lim.Acquire(ctx2s(t), "a")
	if err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	rel3()
	if lim.InUse("a") != 0 {
		t.Errorf("InUse = %d after all releases", lim.InUse("a"))
	}
}

func ctx2s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// heartbeats records every RecordHeartbeat call's Progress.Step, before the
// SDK's throttling.
type heartbeats struct {
	interceptor.WorkerInterceptorBase
	mu    sync.Mutex
	steps []string
}

func (h *heartbeats) count(step string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.steps {
		if s == step {
			n++
		}
	}
	return n
}

func (h *heartbeats) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &hbInbound{root: h}
	i.Next = next
	return i
}

type hbInbound struct {
	interceptor.ActivityInboundInterceptorBase
	root *heartbeats
}

func (i *hbInbound) Init(outbound interceptor.ActivityOutboundInterceptor) error {
	o := &hbOutbound{root: i.root}
	o.Next = outbound
	return i.Next.Init(o)
}

type hbOutbound struct {
	interceptor.ActivityOutboundInterceptorBase
	root *heartbeats
}

func (o *hbOutbound) RecordHeartbeat(ctx context.Context, details ...any) {
	if len(details) == 1 {
		if p, ok := details[0].(bmc.Progress); ok {
			o.root.mu.Lock()
			o.root.steps = append(o.root.steps, p.Step)
			o.root.mu.Unlock()
		}
	}
	o.Next.RecordHeartbeat(ctx, details...)
}
