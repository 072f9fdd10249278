// Package ipmisim runs OpenIPMI's real BMC simulator, ipmi_sim, on a loopback
// UDP port, for tests and for the end-to-end lab. The "machine" behind the
// BMC is a few files in a directory, written by a generated chassis_control
// script, so a test can read the power state and boot device the BMC was
// told to set, and every call ipmi_sim made. After each power change the
// script can run a hook executable, which is how the lab boots a fake host.
// It is not a BMC emulator of its own and not for production use: it accepts
// one user, on 127.0.0.1 (or an address given, in a network namespace the
// test made).
//
// What ipmi_sim needs, as this package sets it up in a directory DIR:
//
//   - DIR/lan.conf (ipmi_lan(5)): a name, "set_working_mc 0x20", one LAN
//     channel ("startlan 1" ... "endlan") with "addr 127.0.0.1 PORT",
//     "priv_limit admin" and the allowed auth types, a chassis_control line
//     naming the script, and one admin user. Passwords longer than 16 bytes
//     are silently unusable (ipmitool refuses more than 20, ipmi_sim keeps 16),
//     so Run rejects them. Quotes and white space are not allowed in values.
//   - DIR/emu.cmd (ipmi_sim_cmd(5)), run at start: mc_setbmc 0x20, mc_add
//     0x20 ..., mc_enable 0x20. Without an enabled BMC nothing answers.
//   - DIR/state (-s): ipmi_sim's persistent store. Users saved there override
//     lan.conf, so Run empties it on every start.
//   - DIR/chassis_control: called as "chassis_control 0x20 get power boot",
//     "... set power 0|1", "... set boot pxe|default" (ipmitool's "disk"
//     arrives as "default"; whether a boot device is persistent is not passed
//     on), "... set reset 1". "get" must print "power:0|1" and "boot:DEV".
//     A power cycle arrives as "set power 0", then about a second later
//     "set power 1". ipmi_sim is single-threaded and waits until the script's
//     stdout closes, so the script runs the hook detached (setsid, its own
//     stdio) and returns at once.
//
// ipmi_sim does not answer "Get Channel Cipher Suites": ipmitool -I lanplus
// needs an explicit -C 3, or it retries for about 10 s per call. bmclib's
// ipmitool provider passes -C 3 first.
package ipmisim

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/rackflow/rackflow/testsuite/netns"
)

// Binary is the simulator's executable, from Debian package openipmi.
const Binary = "ipmi_sim"

// MaxPasswordLen is the longest password ipmi_sim keeps.
const MaxPasswordLen = 16

// ErrMissingTool is returned when ipmi_sim (or setsid, flock) is not installed.
var ErrMissingTool = errors.New("tool not installed")

// Options configures a simulator. The zero value is a powered-off machine
// with boot device "default", user "admin" and a random password, on a free
// port, without a hook.
type Options struct {
	// Username and Password of the single admin user. Empty Password: 16
	// random hex digits.
	Username, Password string
	// Port is the UDP port on Addr; 0 picks one free on 127.0.0.1.
	Port int
	// Addr is the address it listens on (default 127.0.0.1).
	Addr string
	// NetNS, when set, names the network namespace (`ip netns`) the
	// simulator, its chassis_control and the hook run in; Addr must exist
	// there. Start-up pings are sent from inside it.
	NetNS string
	// Power is the machine's initial power state.
	Power bool
	// BootDevice is the initial boot device ("default" when empty).
	BootDevice string
	// OnPower, when set, is an executable run after every power change as
	// "OnPower on|off BOOTDEV", detached (own session, stdin /dev/null,
	// output appended to DIR/hook.log). A power cycle or reset runs it with
	// "off" and then "on". Runs are serialised with a lock file (flock -o:
	// what the hook leaves running does not hold it), so a slow "off"
	// finishes before the next "on" starts. Processes the hook leaves
	// behind are its own business: Close does not stop them.
	OnPower string
}

// Sim is a running ipmi_sim.
type Sim struct {
	// Username and Password log in as admin.
	Username, Password string

	dir   string
	addr  string
	netns string
	port  int
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process has exited
	err   error         // Wait's result, set before done closes

	mu     sync.Mutex
	paused bool
	closed bool
	stop   context.CancelFunc
}

// Start runs a simulator in a temporary directory for a test and stops it
// at the end of the test. A missing ipmi_sim fails the test naming the
// Debian package. Under -short (the fast path, no root, no daemons) it
// skips the test.
func Start(t testing.TB, opts Options) *Sim {
	t.Helper()
	if testing.Short() {
		t.Skip("needs ipmi_sim: skipped with -short")
	}
	s, err := Run(context.Background(), t.TempDir(), opts)
	if err != nil {
		t.Fatalf("ipmisim: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("ipmisim: close: %v", err)
		}
		if t.Failed() {
			t.Logf("ipmisim calls: %q", s.Calls())
		}
	})
	return s
}

// portMu serialises picking a port and binding it, within this process.
var portMu sync.Mutex

// Run starts a simulator whose files live in dir (created if missing). It
// returns once the simulator answers an RMCP ping. The simulator stops when
// ctx is cancelled or Close is called.
func Run(ctx context.Context, dir string, opts Options) (*Sim, error) {
	for _, tool := range []string{Binary, "setsid", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{Binary: "openipmi"}[tool]
			if pkg == "" {
				pkg = "util-linux"
			}
			return nil, fmt.Errorf("%w: %s (Debian package %s)", ErrMissingTool, tool, pkg)
		}
	}
	if opts.Username == "" {
		opts.Username = "admin"
	}
	if opts.Password == "" {
		b := make([]byte, MaxPasswordLen/2)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		opts.Password = hex.EncodeToString(b)
	}
	if opts.BootDevice == "" {
		opts.BootDevice = "default"
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	if net.ParseIP(opts.Addr).To4() == nil {
		return nil, fmt.Errorf("address %q is no IPv4 address", opts.Addr)
	}
	if len(opts.Password) > MaxPasswordLen {
		return nil, fmt.Errorf("password is %d bytes, ipmi_sim keeps at most %d", len(opts.Password), MaxPasswordLen)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]string{"username": opts.Username, "password": opts.Password, "directory": dir, "boot device": opts.BootDevice, "hook": opts.OnPower} {
		if strings.ContainsAny(v, "\"' \t\n\\$`") {
			return nil, fmt.Errorf("%s must not contain quotes, white space, \\, $ or `", name)
		}
	}
	if opts.OnPower != "" {
		if opts.OnPower, err = filepath.Abs(opts.OnPower); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, "state")); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, err
	}
	s := &Sim{Username: opts.Username, Password: opts.Password, dir: dir, addr: opts.Addr, netns: opts.NetNS}
	power := "0"
	if opts.Power {
		power = "1"
	}
	for name, content := range map[string]string{"power": power + "\n", "boot": opts.BootDevice + "\n", "calls": "", "hooks": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	if err := s.writeScripts(opts.OnPower); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "emu.cmd"), []byte(emuCmd), 0o644); err != nil {
		return nil, err
	}

	portMu.Lock()
	defer portMu.Unlock()
	for attempt := 0; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = freeUDPPort(); err != nil {
				return nil, err
			}
		}
		err = s.start(ctx, port)
		if err == nil {
			return s, nil
		}
		// A free port may be taken between the probe and ipmi_sim's bind;
		// a fixed port may be held for a moment by another process's
		// short-lived client socket on the same ephemeral number.
		if !errors.Is(err, errPortShared) || attempt == 4 {
			return nil, err
		}
		if opts.Port != 0 {
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		}
	}
}

var errPortShared = errors.New("port taken by another socket")

func (s *Sim) start(ctx context.Context, port int) error {
	s.port = port
	var lan bytes.Buffer
	if err := lanTmpl.Execute(&lan, map[string]any{"Addr": s.addr, "Port": port, "Dir": s.dir, "User": s.Username, "Password": s.Password}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, "lan.conf"), lan.Bytes(), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "ipmi_sim.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{Binary, "-n",
		"-c", filepath.Join(s.dir, "lan.conf"),
		"-f", filepath.Join(s.dir, "emu.cmd"),
		"-s", filepath.Join(s.dir, "state")}
	if s.netns != "" {
		// ip execs ipmi_sim after entering the namespace: same pid.
		args = append([]string{"ip", "netns", "exec", s.netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group keeps a terminal's ^C away; Pdeathsig stops it
	// if this process dies without Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	s.closed = false
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		_ = s.Close()
		return err
	}
	// ipmi_sim binds with SO_REUSEADDR, so a second simulator on the same
	// port starts without complaint and the two answer at random.
	if n := udpBinders(cmd.Process.Pid, s.addr, port); n > 1 {
		_ = s.Close()
		return fmt.Errorf("%s:%d: %w (%d sockets)", s.addr, port, errPortShared, n)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-runCtx.Done():
		}
	}()
	return nil
}

func (s *Sim) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.done:
			out, _ := os.ReadFile(filepath.Join(s.dir, "ipmi_sim.log"))
			err := fmt.Errorf("%s exited at start (%v): %s", Binary, s.err, bytes.TrimSpace(out))
			if bytes.Contains(out, []byte("Address already in use")) {
				// Another process's socket (often a client's, such as
				// ipmitool's, on an ephemeral port) holds it.
				err = fmt.Errorf("%s:%d: %w: %w", s.addr, s.port, errPortShared, err)
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if err := s.ping(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s on %s:%d does not answer RMCP pings: %w", Binary, s.addr, s.port, err)
		}
	}
}

// Ping sends one RMCP/ASF presence ping to host:port and waits up to
// timeout for the pong. It shows a BMC answering without logging in, and
// without calling chassis_control.
func Ping(ctx context.Context, host string, port int, timeout time.Duration) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer c.Close()
	// RMCP header (version 6, seq 0xff: no ack, class ASF), then ASF:
	// IANA 4542, type 0x80 presence ping, tag, reserved, length 0.
	ping := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x01, 0x00, 0x00}
	if _, err := c.Write(ping); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if n >= 9 && buf[3] == 0x06 && buf[8] == 0x40 {
			return nil
		}
	}
}

// ping pings the simulator from where it runs.
func (s *Sim) ping(ctx context.Context) error {
	if s.netns == "" {
		return Ping(ctx, s.addr, s.port, 200*time.Millisecond)
	}
	return netns.Enter(s.netns, func() error { return Ping(ctx, s.addr, s.port, 200*time.Millisecond) })
}

// Addr is the simulator's host, 127.0.0.1 unless Options.Addr said otherwise.
func (s *Sim) Addr() string { return s.addr }

// Port is the simulator's UDP port.
func (s *Sim) Port() int { return s.port }

// Dir is the directory holding the simulator's configuration and the
// machine's state files.
func (s *Sim) Dir() string { return s.dir }

// Power reports whether the machine is on.
func (s *Sim) Power() bool { return s.read("power") == "1" }

// BootDevice is the last boot device the BMC set: "pxe" or "default"
// (ipmi_sim passes ipmitool's "disk" on as "default").
func (s *Sim) BootDevice() string { return s.read("boot") }

// Calls lists every chassis_control call, oldest first, without the MC
// address: "get power", "set boot pxe", "set power 1", "set reset 1".
func (s *Sim) Calls() []string { return s.lines("calls") }

// Hooks lists the hook runs, in the order they started: "off default",
// "on pxe".
func (s *Sim) Hooks() []string { return s.lines("hooks") }

// SetPower sets the machine's power state directly, as a test's starting
// point. It does not run the hook and is not recorded in Calls.
func (s *Sim) SetPower(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	tmp := filepath.Join(s.dir, "power.set")
	if err := os.WriteFile(tmp, []byte(v+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, "power"))
}

// Pause stops the simulator process (SIGSTOP): the BMC stops answering,
// requests queue in its socket, as with a hung BMC. Resume continues it.
func (s *Sim) Pause() error { return s.signal(syscall.SIGSTOP, true) }

// Resume continues a paused simulator (SIGCONT); it then answers whatever
// is still queued.
func (s *Sim) Resume() error { return s.signal(syscall.SIGCONT, false) }

// SetUnresponsive pauses the simulator for d, then resumes it, without
// blocking.
func (s *Sim) SetUnresponsive(d time.Duration) error {
	if err := s.Pause(); err != nil {
		return err
	}
	time.AfterFunc(d, func() { _ = s.Resume() })
	return nil
}

func (s *Sim) signal(sig syscall.Signal, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("ipmisim: closed")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("ipmisim: signal %v: %w", sig, err)
	}
	s.paused = paused
	return nil
}

// Done is closed once the simulator's process has exited.
func (s *Sim) Done() <-chan struct{} { return s.done }

// Close stops the simulator (SIGTERM, SIGKILL after 5 s). Closing twice is
// harmless. Hook processes keep running.
func (s *Sim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.stop != nil {
		s.stop()
	}
	p := s.cmd.Process
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = p.Kill()
		<-s.done
	}
	return nil
}

func (s *Sim) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, name))
	return strings.TrimSpace(string(b))
}

func (s *Sim) lines(name string) []string {
	v := s.read(name)
	if v == "" {
		return nil
	}
	return strings.Split(v, "\n")
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// udpBinders counts the IPv4 UDP sockets bound to addr:port or
// 0.0.0.0:port in the network namespace of process pid, from its
// /proc/PID/net/udp (-1 when unreadable).
func udpBinders(pid int, addr string, port int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid))
	if err != nil {
		return -1
	}
	ip := net.ParseIP(addr).To4()
	want := []string{fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port), fmt.Sprintf("00000000:%04X", port)}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == want[0] || f[1] == want[1]) {
			n++
		}
	}
	return n
}

func (s *Sim) writeScripts(hook string) error {
	for name, tmpl := range map[string]*template.Template{"chassis_control": controlTmpl, "runhook": runHookTmpl} {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, map[string]string{"Dir": s.dir, "Hook": hook}); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.dir, name), b.Bytes(), 0o755); err != nil {
			return err
		}
	}
	return nil
}

const emuCmd = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`

var lanTmpl = template.Must(template.New("lan.conf").Parse(`# written by rackflow's ipmisim
name "rackflow"
set_working_mc 0x20
  startlan 1
    addr {{.Addr}} {{.Port}}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{{.Dir}}/chassis_control 0x20"
  user 2 true "{{.User}}" "{{.Password}}" admin 10 none md2 md5 straight
`))

var controlTmpl = template.Must(template.New("chassis_control").Parse(`#!/bin/sh
# chassis_control for ipmi_sim, written by rackflow's ipmisim.
# Called as: chassis_control MC get PARAM... | MC set PARAM VALUE [PARAM VALUE]...
D='{{.Dir}}'
HOOK='{{.Hook}}'
shift
op=$1
shift
echo "$op $*" >>"$D/calls"
put() { printf '%s\n' "$2" >"$D/$1.tmp" && mv "$D/$1.tmp" "$D/$1"; }
hook() {
  [ -n "$HOOK" ] || return 0
  setsid flock -o "$D/hook.lock" "$D/runhook" "$(cat "$D/boot")" "$@" </dev/null >>"$D/hook.log" 2>&1 &
}
case $op in
get)
  for p in "$@"; do
    case $p in
    power) echo "power:$(cat "$D/power")" ;;
    boot) echo "boot:$(cat "$D/boot")" ;;
    esac
  done
  ;;
set)
  while [ $# -ge 2 ]; do
    case $1 in
    power)
      old=$(cat "$D/power")
      put power "$2"
      if [ "$old" != "$2" ]; then
        if [ "$2" = 1 ]; then hook on; else hook off; fi
      fi
      ;;
    boot) put boot "$2" ;;
    reset) if [ "$(cat "$D/power")" = 1 ]; then hook off on; fi ;;
    esac
    shift 2
  done
  ;;
esac
exit 0
`))

var runHookTmpl = template.Must(template.New("runhook").Parse(`#!/bin/sh
# Runs the power hook, under chassis_control's lock: runhook BOOTDEV STATE...
D='{{.Dir}}'
bd=$1
shift
for s in "$@"; do
  echo "$s $bd" >>"$D/hooks"
  '{{.Hook}}' "$s" "$bd"
done
`))
