package ipmisim_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/testsuite/ipmisim"
)

// ipmitool runs the real ipmitool against s, as an operator would.
func ipmitool(t *testing.T, s *ipmisim.Sim, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Fatal("ipmitool not installed (Debian package ipmitool)")
	}
	base := []string{"-I", "lanplus", "-C", "3", "-N", "1", "-R", "1", "-H", s.Addr(), "-p", strconv.Itoa(s.Port()), "-U", s.Username, "-E"}
	cmd := exec.Command("ipmitool", append(base, args...)...)
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + s.Password}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("ipmitool %s: %s in %v", strings.Join(args, " "), strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(string(out)), err
}

// hookScript writes a power hook that appends its arguments to a file.
func hookScript(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	path, log = filepath.Join(dir, "hook"), filepath.Join(dir, "hook.out")
	// Like the lab's machine, it leaves a process running: one that
	// inherits every descriptor the hook had.
	script := "#!/bin/sh\necho \"$1 $2\" >>" + log + "\nsleep 8 >/dev/null 2>&1 &\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d lines, have %q", path, n, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPowerAndBootThroughIpmitool(t *testing.T) {
	hook, hookLog := hookScript(t)
	s := ipmisim.Start(t, ipmisim.Options{OnPower: hook})

	if out, err := ipmitool(t, s, "chassis", "power", "status"); err != nil || out != "Chassis Power is off" {
		t.Fatalf("power status = %q, %v; want off", out, err)
	}
	if out, err := ipmitool(t, s, "chassis", "bootdev", "pxe"); err != nil || out != "Set Boot Device to pxe" {
		t.Fatalf("bootdev pxe = %q, %v", out, err)
	}
	if _, err := ipmitool(t, s, "chassis", "power", "on"); err != nil {
		t.Fatal(err)
	}
	if !s.Power() || s.BootDevice() != "pxe" {
		t.Fatalf("machine power=%v boot=%q; want on, pxe", s.Power(), s.BootDevice())
	}
	if diff := cmp.Diff([]string{"on pxe"}, waitLines(t, hookLog, 1)); diff != "" {
		t.Errorf("hook runs (-want +got):\n%s", diff)
	}

	if _, err := ipmitool(t, s, "chassis", "bootdev", "disk", "options=persistent"); err != nil {
		t.Fatal(err)
	}
	if _, err := ipmitool(t, s, "chassis", "power", "cycle"); err != nil {
		t.Fatal(err)
	}
	// ipmi_sim turns the power back on about a second after a cycle.
	if diff := cmp.Diff([]string{"on pxe", "off default", "on default"}, waitLines(t, hookLog, 3)); diff != "" {
		t.Errorf("hook runs after cycle (-want +got):\n%s", diff)
	}
	if !s.Power() {
		t.Error("machine off after cycle")
	}
	if _, err := ipmitool(t, s, "chassis", "power", "reset"); err != nil {
		t.Fatal(err)
	}
	waitLines(t, hookLog, 5)
	if _, err := ipmitool(t, s, "chassis", "power", "off"); err != nil {
		t.Fatal(err)
	}
	lines := waitLines(t, hookLog, 6)
	want := []string{"on pxe", "off default", "on default", "off default", "on default", "off default"}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("hook runs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, s.Hooks()); diff != "" {
		t.Errorf("Hooks() (-want +got):\n%s", diff)
	}

	var sets []string
	for _, c := range s.Calls() {
		if strings.HasPrefix(c, "set ") {
			sets = append(sets, c)
		}
	}
	wantSets := []string{"set boot pxe", "set power 1", "set boot default", "set power 0", "set power 1", "set reset 1", "set power 0"}
	if diff := cmp.Diff(wantSets, sets); diff != "" {
		t.Errorf("chassis_control set calls (-want +got):\n%s", diff)
	}
}

func TestWrongPasswordRejected(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{Password: "right-password"})
	s.Password = "wrong-password"
	out, err := ipmitool(t, s, "chassis", "power", "status")
	if err == nil {
		t.Fatalf("wrong password accepted: %q", out)
	}
	if len(s.Calls()) != 0 {
		t.Errorf("chassis_control called without a session: %q", s.Calls())
	}
}

func TestPauseResume(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{Power: true})
	ctx := context.Background()
	if err := ipmisim.Ping(ctx, s.Addr(), s.Port(), time.Second); err != nil {
		t.Fatalf("ping before pause: %v", err)
	}
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ipmisim.Ping(ctx, s.Addr(), s.Port(), 300*time.Millisecond); err == nil {
		t.Fatal("paused simulator answered a ping")
	}
	if _, err := ipmitool(t, s, "chassis", "power", "status"); err == nil {
		t.Fatal("paused simulator answered ipmitool")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if out, err := ipmitool(t, s, "chassis", "power", "status"); err != nil || out != "Chassis Power is on" {
		t.Fatalf("after resume: %q, %v", out, err)
	}
}

func TestRunStopsWithContextAndFreesPort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ipmi_sim: skipped with -short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := ipmisim.Run(ctx, t.TempDir(), ipmisim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	cancel()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("simulator still running 10 s after its context was cancelled")
	}
	if ipmisim.Ping(context.Background(), "127.0.0.1", port, 200*time.Millisecond) == nil {
		t.Fatal("something still answers RMCP on the port after the simulator exited")
	}
	// The same directory and port serve a new simulator: state is reset.
	s2, err := ipmisim.Run(context.Background(), s.Dir(), ipmisim.Options{Port: port, Power: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !s2.Power() || len(s2.Calls()) != 0 {
		t.Errorf("restarted sim: power=%v calls=%q", s2.Power(), s2.Calls())
	}
}

func TestRejectsLongPassword(t *testing.T) {
	_, err := ipmisim.Run(context.Background(), t.TempDir(), ipmisim.Options{Password: strings.Repeat("x", 17)})
	if err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Fatalf("err = %v; want a password length error", err)
	}
}
