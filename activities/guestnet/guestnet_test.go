package guestnet_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/guestnet"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/testsuite/guestlab"
)

func testLogger() log.Logger {
	return log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

type harness struct {
	lab  *guestlab.Lab
	acts *guestnet.Activities
}

func newHarness(t *testing.T, flavour string) harness {
	lab := guestlab.Start(t, guestlab.Options{Flavour: flavour})
	return harness{lab: lab, acts: &guestnet.Activities{Dialer: &remote.Dialer{Secrets: lab.Secrets}}}
}

func (h harness) env() *testsuite.TestActivityEnvironment {
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(testLogger())
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(h.acts)
	return env
}

func (h harness) configure(t *testing.T, in guestnet.ConfigureInput) (guestnet.ConfigureResult, error) {
	t.Helper()
	v, err := h.env().ExecuteActivity(h.acts.ConfigureRoutes, in)
	if err != nil {
		return guestnet.ConfigureResult{}, err
	}
	var res guestnet.ConfigureResult
	if err := v.Get(&res); err != nil {
		t.Fatal(err)
	}
	return res, nil
}

func (h harness) verify(t *testing.T) (guestnet.VerifyResult, error) {
	t.Helper()
	v, err := h.env().ExecuteActivity(h.acts.VerifyPath, guestnet.VerifyInput{Target: h.lab.Target, Dest: guestlab.DBAddr, MAC: guestlab.Eth1MAC})
	if err != nil {
		return guestnet.VerifyResult{}, err
	}
	var res guestnet.VerifyResult
	if err := v.Get(&res); err != nil {
		t.Fatal(err)
	}
	return res, nil
}

func (h harness) remove(t *testing.T, in guestnet.ConfigureInput) {
	t.Helper()
	if _, err := h.env().ExecuteActivity(h.acts.RemoveRoutes, in); err != nil {
		t.Fatalf("RemoveRoutes: %v", err)
	}
}

func (h harness) state(t *testing.T) string {
	t.Helper()
	s, err := h.lab.GuestState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// guestSSH runs a command in the guest through SSH, so it sees the guest's
// private /etc.
func (h harness) guestSSH(t *testing.T, cmd string) string {
	t.Helper()
	return h.guestSSHAs(t, h.lab.Target, cmd)
}

func (h harness) guestSSHAs(t *testing.T, tg remote.Target, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := (&remote.Dialer{Secrets: h.lab.Secrets}).Dial(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, errOut, code, err := remote.Run(ctx, c, cmd, nil)
	if err != nil || code != 0 {
		t.Fatalf("guest %q: exit %d %v: %s", cmd, code, err, errOut)
	}
	return string(out)
}

func appErr(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("want an ApplicationError, got %T: %v", err, err)
	}
	return ae
}

func baseInput(lab *guestlab.Lab) guestnet.ConfigureInput {
	return guestnet.ConfigureInput{
		Target: lab.Target, MAC: "52:54:00:51:00:0A", Address: guestlab.GuestSecnet,
		Gateway: guestlab.SecGateway, CIDRs: []string{guestlab.DBNet},
	}
}

const wantNetplan = `# Written by rackflow for the NIC with MAC 52:54:00:51:00:0a: routes to the security area.
# No gateway and no default route here: the default route stays on the primary NIC.
# rackflow owns this file: configuration management must leave it alone.
network:
  version: 2
  ethernets:
    00-rackflow-52540051000a:
      match:
        macaddress: "52:54:00:51:00:0a"
      dhcp4: false
      dhcp6: false
      accept-ra: false
      link-local: []
      addresses:
        - "10.51.0.10/24"
      routes:
        - to: "10.52.0.0/24"
          via: "10.51.0.1"
`

func TestLabNetplan(t *testing.T) {
	h := newHarness(t, guestlab.FlavourNetplan)
	if _, err := exec.LookPath("netplan"); err != nil {
		t.Fatal("netplan flavour needs netplan: apt-get install -y --no-install-recommends netplan.io")
	}
	initial := h.state(t)
	in := baseInput(h.lab)
	in.Persist = true

	// Before: the database is reached (if at all) through the DMZ.
	_, err := h.verify(t)
	if ae := appErr(t, err); ae.Type() != guestnet.ErrTypePathNotThroughNic || !ae.NonRetryable() || !strings.Contains(err.Error(), "goes out eth0 via 10.50.0.1, not eth1") {
		t.Fatalf("verify before configuring: %v", err)
	}

	res, err := h.configure(t, in)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := "/etc/netplan/90-rackflow-52540051000a.yaml"
	want := guestnet.ConfigureResult{
		Interface: "eth1", Changed: true, Persisted: "netplan:" + wantPath,
		Actions: []string{
			"write " + wantPath, "write /etc/systemd/network/10-rackflow-52540051000a.link",
			"write /etc/sysctl.d/90-rackflow-52540051000a.conf", "netplan generate",
			"link up", "address 10.51.0.10/24", "rp_filter 2", "route 10.52.0.0/24 via 10.51.0.1 table main",
		},
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("first run (-want +got):\n%s", diff)
	}
	hostPath := filepath.Join(h.lab.Etc, "netplan", "90-rackflow-52540051000a.yaml")
	got, err := os.ReadFile(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantNetplan, string(got)); diff != "" {
		t.Errorf("netplan file (-want +got):\n%s", diff)
	}
	if fi, _ := os.Stat(hostPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("netplan file mode %v, want 0600", fi.Mode().Perm())
	}
	checkNetplanGenerates(t, string(got))
	if link, err := os.ReadFile(filepath.Join(h.lab.Etc, "systemd", "network", "10-rackflow-52540051000a.link")); err != nil || string(link) != wantLink {
		t.Errorf(".link file pinning eth1 to the MAC: %v\n%s", err, link)
	}
	if _, err := os.Stat("/etc/netplan/90-rackflow-52540051000a.yaml"); err == nil {
		t.Fatal("the test host's own /etc/netplan was written")
	}

	// Re-run: nothing to do, the file is not rewritten.
	before, _ := os.Stat(hostPath)
	again, err := h.configure(t, in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(guestnet.ConfigureResult{Interface: "eth1", Persisted: "netplan:" + wantPath}, again); diff != "" {
		t.Errorf("re-run (-want +got):\n%s", diff)
	}
	if after, _ := os.Stat(hostPath); !after.ModTime().Equal(before.ModTime()) {
		t.Error("re-run rewrote the netplan file")
	}

	v, err := h.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(guestnet.VerifyResult{Interface: "eth1", Source: "10.51.0.10"}, v); diff != "" {
		t.Errorf("verify (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.51.0.10"}, h.lab.DBPeers()); diff != "" {
		t.Errorf("connections the database saw (-want +got):\n%s", diff)
	}
	if got := h.lab.GuestRun("ip", "-4", "route", "show", "default"); strings.TrimSpace(got) != "default via 10.50.0.1 dev eth0" {
		t.Errorf("default routes: %q", got)
	}

	h.remove(t, in)
	if diff := cmp.Diff(initial, h.state(t)); diff != "" {
		t.Errorf("guest state after RemoveRoutes (-initial +now):\n%s", diff)
	}
	if _, err := os.Stat(hostPath); !os.IsNotExist(err) {
		t.Errorf("netplan file still there: %v", err)
	}
	h.remove(t, in) // idempotent
	_, err = h.verify(t)
	if ae := appErr(t, err); ae.Type() != guestnet.ErrTypePathNotThroughNic {
		t.Errorf("verify after removal: %v", err)
	}
}

// checkNetplanGenerates renders the file with the real netplan into a
// scratch root and checks what systemd-networkd would be told.
func checkNetplanGenerates(t *testing.T, content string) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc", "netplan"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "netplan", "90-rackflow.yaml"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// A cloud image's catch-all: DHCP on every ethN but the primary. Its
	// file sorts before rackflow's, its id after "00-".
	catchAll := "network:\n  version: 2\n  ethernets:\n    all-eth:\n      match:\n        name: \"eth[1-9]*\"\n      dhcp4: true\n"
	if err := os.WriteFile(filepath.Join(root, "etc", "netplan", "50-cloud-init.yaml"), []byte(catchAll), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("netplan", "generate", "--root-dir", root).CombinedOutput(); err != nil {
		t.Fatalf("netplan generate rejects the file: %v: %s", err, out)
	}
	// networkd takes the first .network file by name that matches the
	// device: rackflow's must come before the catch-all's.
	files, _ := filepath.Glob(filepath.Join(root, "run", "systemd", "network", "*.network"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	if diff := cmp.Diff([]string{"10-netplan-00-rackflow-52540051000a.network", "10-netplan-all-eth.network"}, names); diff != "" {
		t.Fatalf("generated .network files in networkd's order (-want +got):\n%s", diff)
	}
	nw, _ := os.ReadFile(files[0])
	s := string(nw)
	for _, want := range []string{"MACAddress=52:54:00:51:00:0a", "Address=10.51.0.10/24", "Destination=10.52.0.0/24", "Gateway=10.51.0.1"} {
		if !strings.Contains(s, want) {
			t.Errorf("networkd config lacks %q:\n%s", want, s)
		}
	}
	network := strings.SplitN(strings.SplitN(s, "[Network]", 2)[1], "\n[", 2)[0]
	if strings.Contains(network, "Gateway=") || strings.Contains(s, "Destination=0.0.0.0/0") || strings.Contains(s, "DHCP=ipv4") {
		t.Errorf("networkd config would give a default route:\n%s", s)
	}
}

const wantIfupdown = `# Written by rackflow for the NIC with MAC 52:54:00:51:00:0a: routes to the security area.
# No gateway and no default route here: the default route stays on the primary NIC.
# rackflow owns this file: configuration management must leave it alone.
# The name eth1 is pinned to the MAC by /etc/systemd/network/10-rackflow-52540051000a.link.
allow-hotplug eth1
iface eth1 inet manual
    up ip link set dev eth1 up
    up ip addr replace 10.51.0.10/24 dev eth1
    up ip route replace 10.52.0.0/24 via 10.51.0.1 dev eth1 table 100
    up ip rule del from 10.51.0.10/32 lookup 100 pref 1000 2>/dev/null || true
    up ip rule add from 10.51.0.10/32 lookup 100 pref 1000
    up ip rule del to 10.52.0.0/24 lookup 100 pref 1000 2>/dev/null || true
    up ip rule add to 10.52.0.0/24 lookup 100 pref 1000
    down ip rule del from 10.51.0.10/32 lookup 100 pref 1000 2>/dev/null || true
    down ip rule del to 10.52.0.0/24 lookup 100 pref 1000 2>/dev/null || true
    down ip route del 10.52.0.0/24 via 10.51.0.1 dev eth1 table 100 2>/dev/null || true
    down ip addr del 10.51.0.10/24 dev eth1 2>/dev/null || true
`

const wantLink = `# Written by rackflow for the NIC with MAC 52:54:00:51:00:0a: routes to the security area.
# No gateway and no default route here: the default route stays on the primary NIC.
# rackflow owns this file: configuration management must leave it alone.
[Match]
MACAddress=52:54:00:51:00:0a

[Link]
Name=eth1
`

// TestLabIfupdownPolicyRouting: on an ifupdown guest the stanza, a .link
// file pinning the name to the MAC and a sysctl.d file are written, and
// ifup (the renderer) applies the stanza; a re-run changes nothing; the
// routes and rules survive ifupdown taking the interface down and up again
// (what a `systemctl restart networking` or a reboot does); RemoveRoutes
// takes it down through ifdown and leaves the guest as it was.
// header3 is the header every rackflow file starts with.
func header3() string { return strings.Join(strings.SplitAfter(wantLink, "\n")[:3], "") }

func TestLabIfupdownPolicyRouting(t *testing.T) {
	h := newHarness(t, guestlab.FlavourIfupdown)
	initial := h.state(t)
	in := baseInput(h.lab)
	in.Persist, in.PolicyRouting, in.Table = true, true, 100

	res, err := h.configure(t, in)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := "/etc/network/interfaces.d/rackflow-52540051000a"
	want := guestnet.ConfigureResult{
		Interface: "eth1", Changed: true, Persisted: "ifupdown:" + wantPath,
		Actions: []string{
			"write " + wantPath, "write /etc/systemd/network/10-rackflow-52540051000a.link",
			"write /etc/sysctl.d/90-rackflow-52540051000a.conf", "ifup eth1", "rp_filter 2",
		},
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("first run (-want +got):\n%s", diff)
	}
	got, err := os.ReadFile(filepath.Join(h.lab.Etc, "network", "interfaces.d", "rackflow-52540051000a"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantIfupdown, string(got)); diff != "" {
		t.Errorf("interfaces.d file (-want +got):\n%s", diff)
	}
	for name, want := range map[string]string{
		"systemd/network/10-rackflow-52540051000a.link": wantLink,
		"sysctl.d/90-rackflow-52540051000a.conf":        header3() + "net/ipv4/conf/eth1/rp_filter = 2\n",
	} {
		got, err := os.ReadFile(filepath.Join(h.lab.Etc, name))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, string(got)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	// ifupdown itself reads the stanza through the guest's interfaces
	// file, and has the interface up.
	if st := strings.TrimSpace(h.guestSSH(t, "ifquery --state eth1")); st != "eth1=eth1" {
		t.Errorf("ifquery --state eth1 = %q, want eth1=eth1", st)
	}
	q := h.guestSSH(t, "ifquery eth1")
	for _, want := range []string{"up: ip addr replace 10.51.0.10/24 dev eth1", "up: ip route replace 10.52.0.0/24 via 10.51.0.1 dev eth1 table 100"} {
		if !strings.Contains(q, want) {
			t.Errorf("ifquery eth1 lacks %q:\n%s", want, q)
		}
	}
	if strings.Contains(q, "gateway") {
		t.Errorf("ifquery eth1 shows a gateway:\n%s", q)
	}

	// The main table is untouched; table 100 and the rules carry the path.
	if got := h.lab.GuestRun("ip", "-4", "route", "show", "10.52.0.0/24"); strings.TrimSpace(got) != "" {
		t.Errorf("main table has a route to the database net: %q", got)
	}
	if got := h.lab.GuestRun("ip", "-4", "route", "show", "table", "100"); strings.TrimSpace(got) != "10.52.0.0/24 via 10.51.0.1 dev eth1" {
		t.Errorf("table 100: %q", got)
	}

	again, err := h.configure(t, in)
	if err != nil {
		t.Fatal(err)
	}
	if again.Changed || len(again.Actions) != 0 {
		t.Errorf("re-run changed something: %+v", again)
	}
	if n := strings.Count(h.lab.GuestRun("ip", "rule", "show"), "lookup 100"); n != 2 {
		t.Errorf("%d rules for table 100 after two runs, want 2", n)
	}

	// The renderer restarts: ifupdown takes eth1 down and brings it up
	// from the persisted stanza. Routes and rules come back as they were.
	configured := h.state(t)
	h.guestSSH(t, "ifdown eth1")
	if st := h.state(t); strings.Contains(st, "10.52.0.0/24") {
		t.Errorf("ifdown left the routes:\n%s", st)
	}
	h.guestSSH(t, "ifup eth1")
	if diff := cmp.Diff(configured, h.state(t)); diff != "" {
		t.Errorf("after ifdown/ifup (-configured +now):\n%s", diff)
	}

	v, err := h.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(guestnet.VerifyResult{Interface: "eth1", Source: "10.51.0.10"}, v); diff != "" {
		t.Errorf("verify (-want +got):\n%s", diff)
	}

	h.remove(t, in)
	if diff := cmp.Diff(initial, h.state(t)); diff != "" {
		t.Errorf("guest state after RemoveRoutes (-initial +now):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(h.lab.Etc, "network", "interfaces.d", "rackflow-52540051000a")); !os.IsNotExist(err) {
		t.Errorf("interfaces.d file still there: %v", err)
	}
}

// TestLabNoSecondDefaultRoute: a DHCP client gave the new NIC a default
// route before rackflow came; ConfigureRoutes takes it away.
func TestLabNoSecondDefaultRoute(t *testing.T) {
	h := newHarness(t, guestlab.FlavourNone)
	h.lab.GuestRun("ip", "link", "set", "eth1", "up")
	h.lab.GuestRun("ip", "addr", "add", guestlab.GuestSecnet, "dev", "eth1")
	h.lab.GuestRun("ip", "route", "add", "default", "via", guestlab.SecGateway, "dev", "eth1", "metric", "200")

	res, err := h.configure(t, baseInput(h.lab))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rp_filter 2", "remove default route via eth1", "route 10.52.0.0/24 via 10.51.0.1 table main"}
	if diff := cmp.Diff(want, res.Actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	if got := h.lab.GuestRun("ip", "-4", "route", "show", "default"); strings.TrimSpace(got) != "default via 10.50.0.1 dev eth0" {
		t.Errorf("default routes: %q", got)
	}

	// Nothing to persist to: a clear, non-retryable error.
	in := baseInput(h.lab)
	in.Persist = true
	_, err = h.configure(t, in)
	if ae := appErr(t, err); ae.Type() != guestnet.ErrTypePersistUnsupported || !ae.NonRetryable() {
		t.Errorf("persist without a mechanism: %v", err)
	}

	// A MAC the guest does not have (yet): retryable.
	in = baseInput(h.lab)
	in.MAC = "52:54:00:99:99:99"
	_, err = h.configure(t, in)
	if ae := appErr(t, err); ae.Type() != guestnet.ErrTypeInterfaceNotFound || ae.NonRetryable() {
		t.Errorf("unknown MAC: %v", err)
	}
}

func TestInputValidation(t *testing.T) {
	acts := &guestnet.Activities{Dialer: &remote.Dialer{}}
	good := guestnet.ConfigureInput{
		Target: remote.Target{Addr: "192.0.2.1:22"}, MAC: "52:54:00:51:00:0a", Address: "10.51.0.10/24",
		Gateway: "10.51.0.1", CIDRs: []string{"10.52.0.0/24"},
	}
	tests := map[string]func(in *guestnet.ConfigureInput){
		"default route":       func(in *guestnet.ConfigureInput) { in.CIDRs = []string{"10.52.0.0/24", "0.0.0.0/0"} },
		"bad cidr":            func(in *guestnet.ConfigureInput) { in.CIDRs = []string{"10.52.0.0/33"} },
		"ipv6 cidr":           func(in *guestnet.ConfigureInput) { in.CIDRs = []string{"2001:db8::/64"} },
		"no cidrs":            func(in *guestnet.ConfigureInput) { in.CIDRs = nil },
		"bad mac":             func(in *guestnet.ConfigureInput) { in.MAC = "52:54:00:51:00" },
		"mac with shell":      func(in *guestnet.ConfigureInput) { in.MAC = "52:54:00:51:00:0a;reboot" },
		"gateway off subnet":  func(in *guestnet.ConfigureInput) { in.Gateway = "10.52.0.1" },
		"gateway is address":  func(in *guestnet.ConfigureInput) { in.Gateway = "10.51.0.10" },
		"address sans prefix": func(in *guestnet.ConfigureInput) { in.Address = "10.51.0.10" },
		"main table":          func(in *guestnet.ConfigureInput) { in.PolicyRouting, in.Table = true, 254 },
		"no table":            func(in *guestnet.ConfigureInput) { in.PolicyRouting = true },
		"user with shell":     func(in *guestnet.ConfigureInput) { in.Target.User = "cloud;reboot" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			in := good
			in.CIDRs = append([]string(nil), good.CIDRs...)
			mutate(&in)
			var ts testsuite.WorkflowTestSuite
			ts.SetLogger(testLogger())
			env := ts.NewTestActivityEnvironment()
			env.RegisterActivity(acts)
			for _, fn := range []any{acts.ConfigureRoutes, acts.RemoveRoutes} {
				_, err := env.ExecuteActivity(fn, in)
				if ae := appErr(t, err); ae.Type() != activities.ErrTypeInvalidInput || !ae.NonRetryable() {
					t.Errorf("got %v, want non-retryable InvalidInput", err)
				}
			}
		})
	}
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(testLogger())
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	for _, dest := range []string{"10.52.0.20", "db:5432", "[2001:db8::1]:5432", "10.52.0.20:0"} {
		_, err := env.ExecuteActivity(acts.VerifyPath, guestnet.VerifyInput{Target: good.Target, Dest: dest, MAC: good.MAC})
		if ae := appErr(t, err); ae.Type() != activities.ErrTypeInvalidInput {
			t.Errorf("dest %q: %v", dest, err)
		}
	}
}

// TestLabNeverCutsTheGuestOff: the guest lab's SSH session comes from
// 10.50.0.1 to eth0's 10.50.0.10. Routing a CIDR holding the peer through
// the new NIC, or configuring the interface that carries the session or the
// primary IP, is refused before anything changes; and the new NIC gets
// loose reverse-path filtering.
func TestLabNeverCutsTheGuestOff(t *testing.T) {
	h := newHarness(t, guestlab.FlavourNone)
	initial := h.state(t)
	tests := map[string]struct {
		mutate  func(in *guestnet.ConfigureInput)
		errType string
		msg     string
	}{
		"CIDR holds the SSH peer": {
			mutate:  func(in *guestnet.ConfigureInput) { in.CIDRs = []string{guestlab.DBNet, "10.50.0.0/30"} },
			errType: guestnet.ErrTypeRouteCapture, msg: "the SSH session comes from " + guestlab.SSHPeer,
		},
		"CIDR holds the SSH peer (policy routing)": {
			mutate: func(in *guestnet.ConfigureInput) {
				in.CIDRs, in.PolicyRouting, in.Table = []string{"10.50.0.0/16"}, true, 100
			},
			errType: guestnet.ErrTypeRouteCapture, msg: "inside 10.50.0.0/16",
		},
		"MAC of the session's interface": {
			mutate: func(in *guestnet.ConfigureInput) {
				in.MAC, in.Address, in.Gateway = guestlab.Eth0MAC, "10.50.0.10/24", guestlab.DMZGateway
			},
			errType: guestnet.ErrTypePrimaryInterface, msg: "the address this SSH session arrived on",
		},
		"primary MAC asked for": {
			mutate:  func(in *guestnet.ConfigureInput) { in.PrimaryMAC = in.MAC },
			errType: guestnet.ErrTypePrimaryInterface, msg: "primary NIC",
		},
		"interface carries the primary IP": {
			mutate: func(in *guestnet.ConfigureInput) {
				h.lab.GuestRun("ip", "addr", "add", "10.51.0.99/24", "dev", "eth1")
				in.PrimaryIP = "10.51.0.99"
			},
			errType: guestnet.ErrTypePrimaryInterface, msg: "primary IP 10.51.0.99",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := baseInput(h.lab)
			tc.mutate(&in)
			before := h.state(t)
			fns := []any{h.acts.ConfigureRoutes, h.acts.RemoveRoutes}
			if tc.errType == guestnet.ErrTypeRouteCapture {
				fns = fns[:1] // removing routes cannot capture anything
			}
			for _, fn := range fns {
				_, err := h.env().ExecuteActivity(fn, in)
				if ae := appErr(t, err); ae.Type() != tc.errType || !ae.NonRetryable() || !strings.Contains(ae.Error(), tc.msg) {
					t.Errorf("got %v, want non-retryable %s saying %q", err, tc.errType, tc.msg)
				}
			}
			if after := h.state(t); after != before {
				t.Errorf("the guest changed:\n--- before\n%s\n--- after\n%s", before, after)
			}
		})
	}
	h.lab.GuestRun("ip", "addr", "flush", "dev", "eth1")
	if st := h.state(t); st != initial {
		t.Fatalf("lab not back to its initial state:\n%s", st)
	}

	h.lab.GuestRun("sysctl", "-q", "-w", "net.ipv4.conf.eth1.rp_filter=1")
	if _, err := h.configure(t, baseInput(h.lab)); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(h.lab.GuestRun("cat", "/proc/sys/net/ipv4/conf/eth1/rp_filter")); got != "2" {
		t.Errorf("eth1 rp_filter = %s, want 2", got)
	}
	if got := strings.TrimSpace(h.lab.GuestRun("ip", "-4", "route", "show", "default")); got != "default via 10.50.0.1 dev eth0" {
		t.Errorf("default route: %q", got)
	}
}

// TestLabNonRootGuest: stock cloud images forbid root SSH; their default
// user runs the changes through `sudo -n`. A user with a sudoers drop-in
// gets the same result as root, files owned by root; a user without one is
// refused up front, non-retryably, with the fix in the message, and the
// guest is left as it was.
func TestLabNonRootGuest(t *testing.T) {
	h := newHarness(t, guestlab.FlavourIfupdown)
	initial := h.state(t)

	plain := baseInput(h.lab)
	plain.Target = h.lab.AddUser(t, "plain", false)
	plain.Persist, plain.PolicyRouting, plain.Table = true, true, 100
	for name, fn := range map[string]any{"configure": h.acts.ConfigureRoutes, "remove": h.acts.RemoveRoutes} {
		_, err := h.env().ExecuteActivity(fn, plain)
		t.Logf("%s as plain: %v", name, err)
		ae := appErr(t, err)
		if ae.Type() != guestnet.ErrTypeSudoRefused || !ae.NonRetryable() ||
			!strings.Contains(ae.Error(), "user plain may not run commands as root without a password") ||
			!strings.Contains(ae.Error(), "add a sudoers rule") {
			t.Errorf("%s as a user without sudo: %v, want non-retryable %s", name, err, guestnet.ErrTypeSudoRefused)
		}
	}
	if st := h.state(t); st != initial {
		t.Fatalf("the refused user changed the guest:\n%s", st)
	}

	in := plain
	in.Target = h.lab.AddUser(t, "cloud", true)
	if who := strings.TrimSpace(h.guestSSHAs(t, in.Target, "id -un; sudo -n id -un")); who != "cloud\nroot" {
		t.Fatalf("lab user: %q", who)
	}
	res, err := h.configure(t, in)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := "/etc/network/interfaces.d/rackflow-52540051000a"
	if !res.Changed || res.Interface != "eth1" || res.Persisted != "ifupdown:"+wantPath {
		t.Errorf("first run as cloud: %+v", res)
	}
	fi, err := os.Stat(filepath.Join(h.lab.Etc, "network", "interfaces.d", "rackflow-52540051000a"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Errorf("persistent file owned by uid %d, want root", st.Uid)
	}
	if got := h.lab.GuestRun("ip", "-4", "route", "show", "table", "100"); strings.TrimSpace(got) != "10.52.0.0/24 via 10.51.0.1 dev eth1" {
		t.Errorf("table 100: %q", got)
	}
	again, err := h.configure(t, in)
	if err != nil || again.Changed {
		t.Errorf("re-run as cloud: %+v, %v", again, err)
	}
	v, err := h.env().ExecuteActivity(h.acts.VerifyPath, guestnet.VerifyInput{Target: in.Target, Dest: guestlab.DBAddr, MAC: guestlab.Eth1MAC})
	if err != nil {
		t.Fatal(err)
	}
	var vr guestnet.VerifyResult
	if err := v.Get(&vr); err != nil || vr.Source != "10.51.0.10" {
		t.Errorf("verify as cloud: %+v %v", vr, err)
	}
	h.remove(t, in)
	if diff := cmp.Diff(initial, h.state(t)); diff != "" {
		t.Errorf("guest state after RemoveRoutes as cloud (-initial +now):\n%s", diff)
	}
}

// TestLabNetplanNetworkd: a netplan guest whose real systemd-networkd runs,
// with a cloud image's DHCP catch-all for every ethN but the primary. When
// networkd gives the NIC to the catch-all rather than to rackflow's file,
// ConfigureRoutes says so, non-retryably, naming the file that won, instead
// of configuring routes by hand that networkd would remove on its next
// restart; RemoveRoutes takes rackflow's files away again.
//
// In this lab networkd never matches rackflow's file: netplan 0.106 renders
// `match: macaddress` as PermanentMACAddress=, and a veth has no permanent
// address (a virtio NIC has). So the lab proves the refusal with the real
// networkd, not the happy path; docs/cloudstack.md says so.
func TestLabNetplanNetworkd(t *testing.T) {
	lab := guestlab.Start(t, guestlab.Options{Flavour: guestlab.FlavourNetplan, Networkd: true})
	h := harness{lab: lab, acts: &guestnet.Activities{Dialer: &remote.Dialer{Secrets: lab.Secrets}}}
	defer func() {
		if t.Failed() {
			t.Logf("networkd log:\n%s", lab.NetworkdLog())
		}
	}()
	catchAll := "network:\n  version: 2\n  ethernets:\n    all-eth:\n      match:\n        name: \"eth[1-9]*\"\n      dhcp4: true\n"
	if err := os.WriteFile(filepath.Join(lab.Etc, "netplan", "50-cloud-init.yaml"), []byte(catchAll), 0o600); err != nil {
		t.Fatal(err)
	}
	lab.RootSSH(t, "netplan generate && networkctl reload")
	if st := lab.RootSSH(t, "networkctl --no-pager status eth1"); !strings.Contains(st, "10-netplan-all-eth.network") {
		t.Fatalf("the catch-all does not manage eth1:\n%s", st)
	}

	in := baseInput(lab)
	in.Persist, in.PolicyRouting, in.Table = true, true, 100
	_, err := h.configure(t, in)
	ae := appErr(t, err)
	if ae.Type() != guestnet.ErrTypeRendererConflict || !ae.NonRetryable() ||
		!strings.Contains(ae.Error(), `configures eth1 with "/run/systemd/network/10-netplan-all-eth.network", not rackflow's`) {
		t.Fatalf("got %v, want non-retryable %s naming the catch-all", err, guestnet.ErrTypeRendererConflict)
	}
	if st := h.state(t); strings.Contains(st, "lookup 100") || strings.Contains(st, "table 100") {
		t.Errorf("routes or rules configured by hand next to networkd:\n%s", st)
	}
	h.remove(t, in)
	if out := lab.RootSSH(t, "ls /etc/netplan /run/systemd/network"); strings.Contains(out, "rackflow") {
		t.Errorf("rackflow's files left:\n%s", out)
	}
}
