// Package netns builds throw-away network labs for tests: named network
// namespaces ("rf-<random>-<role>"), veth pairs whose both ends live in those
// namespaces, bridges and addresses, and processes run inside them, all torn
// down by t.Cleanup. Servers that open sockets as they go (a TFTP server opens
// one per transfer) run as a re-executed copy of the test binary inside the
// namespace (see Helper and Main); a few sockets can also be opened from the
// test process itself with Do.
//
// It is not for production and never touches the host's own interfaces or
// addresses; HostVeth and HostBridge add links of their own to the host
// namespace and delete them at cleanup. It needs root and iproute2's `ip`;
// tests using it should be named TestLab* and skipped under testing.Short().
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Require fails t unless the lab can run: root, and each named tool on PATH.
// tools maps a command to the Debian package providing it, e.g.
// {"udhcpc": "busybox"}; "ip" (iproute2) is always checked. Under
// testing.Short() it skips instead.
func Require(t testing.TB, tools map[string]string) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("lab test needs root (network namespaces); run as root or with -short")
	}
	need := map[string]string{"ip": "iproute2"}
	for k, v := range tools {
		need[k] = v
	}
	for cmd, pkg := range need {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("lab test needs %q: apt-get install -y --no-install-recommends %s", cmd, pkg)
		}
	}
}

// NS is one network namespace created for a test.
type NS struct {
	// Name is the namespace name as `ip netns` knows it.
	Name string
	t    testing.TB
}

// New creates a namespace named "rf-<8 hex>-<role>" with its loopback up,
// and registers its deletion (after killing any process left in it) with
// t.Cleanup.
func New(t testing.TB, role string) *NS {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := &NS{Name: "rf-" + hex.EncodeToString(b[:]) + "-" + role, t: t}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(n.destroy)
	n.Run("ip", "link", "set", "lo", "up")
	return n
}

func (n *NS) destroy() {
	// Anything still running in the namespace was started by this test.
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		n.t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Run is Exec that fails the test on error, with a 30s limit.
func (n *NS) Run(name string, args ...string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Veth creates a veth pair with end aIf in a and end bIf in b, both up.
// The pair is created inside a, so the host namespace never sees it.
func Veth(t testing.TB, a *NS, aIf string, b *NS, bIf string) {
	t.Helper()
	a.Run("ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	a.Run("ip", "link", "set", aIf, "up")
	b.Run("ip", "link", "set", bIf, "up")
}

// Bridge creates a bridge in n, enslaves ports to it and brings it up.
func (n *NS) Bridge(name string, ports ...string) {
	n.t.Helper()
	n.Run("ip", "link", "add", name, "type", "bridge")
	for _, p := range ports {
		n.Run("ip", "link", "set", p, "master", name)
	}
	n.Run("ip", "link", "set", name, "up")
}

// AddAddr assigns an address in CIDR form, e.g. "10.99.0.1/24".
func (n *NS) AddAddr(ifname, cidr string) {
	n.t.Helper()
	n.Run("ip", "addr", "add", cidr, "dev", ifname)
}

// HostVeth links n to the test's own (host) namespace: a veth pair with end
// hostIf, holding hostCIDR, in the host namespace and end nsIf in n, both
// up. Only the pair and its one address are created there; the pair is
// deleted at cleanup. Keep hostIf unique, e.g. "rf<hex>-<role>", at most
// 15 bytes.
func HostVeth(t testing.TB, hostIf, hostCIDR string, n *NS, nsIf string) {
	t.Helper()
	hostRun(t, "link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", n.Name)
	t.Cleanup(func() { hostDel(t, hostIf) })
	hostRun(t, "addr", "add", hostCIDR, "dev", hostIf)
	hostRun(t, "link", "set", hostIf, "up")
	n.Run("ip", "link", "set", nsIf, "up")
}

// HostBridge creates a bridge without ports named name in the host
// namespace holding cidr: an address servers in the host namespace listen
// on for namespaces linked with HostVeth (which route to it). A bridge,
// not a dummy link: kernels without the dummy module have bridges. It is
// deleted at cleanup.
func HostBridge(t testing.TB, name, cidr string) {
	t.Helper()
	hostRun(t, "link", "add", name, "type", "bridge")
	t.Cleanup(func() { hostDel(t, name) })
	hostRun(t, "addr", "add", cidr, "dev", name)
	hostRun(t, "link", "set", name, "up")
}

func hostRun(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// hostDel deletes a link the test made in the host namespace; a veth is
// gone already when its peer's namespace was deleted first.
func hostDel(t testing.TB, name string) {
	if _, err := net.InterfaceByName(name); err != nil {
		return
	}
	if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
		t.Errorf("ip link del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
}

// SetMAC sets an interface's MAC address (taking it down and up again).
func (n *NS) SetMAC(ifname, mac string) {
	n.t.Helper()
	n.Run("ip", "link", "set", ifname, "down")
	n.Run("ip", "link", "set", ifname, "address", mac)
	n.Run("ip", "link", "set", ifname, "up")
}

// Do runs fn on an OS thread switched into the namespace and switches the
// thread back afterwards. Sockets fn opens stay in the namespace for their
// whole life and may be used from any goroutine; but anything fn starts that
// opens sockets later, or looks interfaces up by name or index later, runs in
// the test's own namespace: use Helper for whole servers.
func (n *NS) Do(fn func() error) error { return Enter(n.Name, fn) }

// Enter is Do for a namespace known by its name only (`ip netns`), for
// packages that start processes in a namespace a test created.
func Enter(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine instead
			// of running other goroutines in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Process is a command running in a namespace; its output is kept for
// WaitFor and for the test log.
type Process struct {
	Cmd  *exec.Cmd
	name string
	t    testing.TB

	mu   sync.Mutex
	out  bytes.Buffer
	cond *sync.Cond
	done chan struct{}
	err  error
}

// Start starts a command inside the namespace. It is killed (SIGTERM, then
// SIGKILL after 3s) at cleanup, and its output is logged if the test failed.
func (n *NS) Start(name string, args ...string) *Process {
	n.t.Helper()
	return n.start(nil, name, args...)
}

func (n *NS) start(env []string, name string, args ...string) *Process {
	n.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	// Own process group, so Stop reaches children; killed if the test
	// binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{Cmd: cmd, name: name, t: n.t, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	cmd.Stdout = (*procWriter)(p)
	cmd.Stderr = (*procWriter)(p)
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start %s in %s: %v", name, n.Name, err)
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	n.t.Cleanup(func() {
		p.Stop()
		if n.t.Failed() {
			n.t.Logf("output of %s in %s:\n%s", name, n.Name, p.Output())
		}
	})
	return p
}

type procWriter Process

func (w *procWriter) Write(b []byte) (int, error) {
	p := (*Process)(w)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.Write(b)
	p.cond.Broadcast()
	return len(b), nil
}

// Output returns everything the process wrote so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitFor waits until the output contains s, the process exits, or timeout
// passes; it fails the test in the last two cases.
func (p *Process) WaitFor(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !strings.Contains(p.out.String(), s) {
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before writing %q; output:\n%s", p.name, p.err, s, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not write %q within %s; output:\n%s", p.name, s, timeout, p.out.String())
		}
		p.cond.Wait()
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit, at most timeout, and returns its exit
// error (nil for status 0).
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.name, timeout)
	}
}

// Stop ends the process group: SIGTERM, then SIGKILL after 3s.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// helperEnv names the helper a re-executed test binary must run.
const helperEnv = "RACKFLOW_NETNS_HELPER"

// Main runs the named helper when the test binary was re-executed by Helper,
// and exits; otherwise it returns at once. Call it first in TestMain:
//
//	func TestMain(m *testing.M) {
//		netns.Main(map[string]func() error{"dhcpd": runDHCPHelper})
//		os.Exit(m.Run())
//	}
//
// A helper prints "READY" on stdout once it serves, and runs until killed.
func Main(helpers map[string]func() error) {
	name := os.Getenv(helperEnv)
	if name == "" {
		return
	}
	fn, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "netns: no helper %q\n", name)
		os.Exit(2)
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "netns helper %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Helper re-executes the test binary inside the namespace to run the helper
// registered under name with Main, with extra environment env ("K=V"), and
// waits until it prints "READY".
func (n *NS) Helper(name string, env ...string) *Process {
	n.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		n.t.Fatalf("find test binary: %v", err)
	}
	p := n.start(append(env, helperEnv+"="+name), exe, "-test.run=^$")
	p.WaitFor("READY", 20*time.Second)
	return p
}

// Ready is what a helper prints once it serves.
func Ready() { fmt.Println("READY") }
