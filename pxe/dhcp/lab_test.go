package dhcp_test

// Lab tests: the DHCP and TFTP servers in one network namespace, real
// clients (busybox udhcpc, ISC dhclient, curl) in another, joined by a veth
// pair into a bridge. Nothing touches the host's interfaces. Slow-ish and
// root-only: named TestLab*, skipped under -short.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/rackflow/rackflow/pxe/dhcp"
	"github.com/rackflow/rackflow/pxe/tftp"
	"github.com/rackflow/rackflow/testsuite/netns"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) {
	netns.Main(map[string]func() error{"pxe-server": runPXEServer})
	os.Exit(m.Run())
}

const (
	labServerIP = "10.99.0.1"
	labMAC      = "52:54:00:99:00:11"
	labIP       = "10.99.0.11"
	labOtherMAC = "52:54:00:99:00:ee"
	labLease    = 600 // seconds
)

// leaseFile is the lab's lease table: MAC → lease, re-read on every lookup
// so a test can register and remove hosts while the server runs.
type leaseFile string

type fileLease struct {
	IP       string   `json:"ip"`
	Netmask  string   `json:"netmask"`
	Gateway  string   `json:"gateway"`
	DNS      []string `json:"dns"`
	Hostname string   `json:"hostname"`
	Profile  string   `json:"profile"`
}

func (f leaseFile) Lookup(_ context.Context, mac net.HardwareAddr) (dhcp.Lease, bool, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return dhcp.Lease{}, false, err
	}
	var m map[string]fileLease
	if err := json.Unmarshal(b, &m); err != nil {
		return dhcp.Lease{}, false, err
	}
	l, ok := m[mac.String()]
	if !ok {
		return dhcp.Lease{}, false, nil
	}
	var dns []net.IP
	for _, d := range l.DNS {
		dns = append(dns, net.ParseIP(d))
	}
	return dhcp.Lease{IP: net.ParseIP(l.IP), Netmask: net.ParseIP(l.Netmask), Gateway: net.ParseIP(l.Gateway),
		DNS: dns, Hostname: l.Hostname, Profile: l.Profile}, true, nil
}

func (f leaseFile) write(t *testing.T, m map[string]fileLease) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	tmp := string(f) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, string(f)); err != nil {
		t.Fatal(err)
	}
}

// runPXEServer is the helper run inside the server namespace: DHCP bound to
// br0, TFTP on the server address, until SIGTERM.
func runPXEServer() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dconn, err := server4.NewIPv4UDPConn("br0", &net.UDPAddr{Port: 67})
	if err != nil {
		return err
	}
	tconn, err := net.ListenPacket("udp4", labServerIP+":69")
	if err != nil {
		return err
	}
	d := &dhcp.Server{
		Interface:     "br0",
		ServerIP:      net.ParseIP(labServerIP),
		Backend:       leaseFile(os.Getenv("RF_LAB_LEASES")),
		LeaseTime:     labLease * time.Second,
		IPXEScriptURL: "http://" + labServerIP + ":8080/boot/{mac}.ipxe",
		BootFiles:     dhcp.BootFiles{HTTP: "http://" + labServerIP + ":8080/files/ipxe.efi"},
		Logger:        log,
		Conn:          dconn,
	}
	ts := &tftp.Server{Root: os.Getenv("RF_LAB_TFTP_ROOT"), Logger: log, Conn: tconn}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Serve(ctx) })
	g.Go(func() error { return ts.Serve(ctx) })
	netns.Ready()
	if err := g.Wait(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

type lab struct {
	srv, cli *netns.NS
	dir      string
	leases   leaseFile
	bootFile []byte // content of undionly.kpxe in the TFTP root
	server   *netns.Process
}

func newLab(t *testing.T, tools map[string]string) *lab {
	t.Helper()
	netns.Require(t, tools)
	l := &lab{dir: t.TempDir()}
	l.srv = netns.New(t, "pxe")
	l.cli = netns.New(t, "host")
	netns.Veth(t, l.srv, "port0", l.cli, "eth0")
	l.srv.Bridge("br0", "port0")
	l.srv.AddAddr("br0", labServerIP+"/24")
	l.cli.SetMAC("eth0", labMAC)

	root := filepath.Join(l.dir, "tftp")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	l.bootFile = make([]byte, 70001) // not a multiple of any block size
	_, _ = rand.Read(l.bootFile)
	if err := os.WriteFile(filepath.Join(root, "undionly.kpxe"), l.bootFile, 0o644); err != nil {
		t.Fatal(err)
	}
	l.leases = leaseFile(filepath.Join(l.dir, "leases.json"))
	l.leases.write(t, map[string]fileLease{labMAC: registered()})
	l.server = l.srv.Helper("pxe-server", "RF_LAB_LEASES="+string(l.leases), "RF_LAB_TFTP_ROOT="+root)
	return l
}

func registered() fileLease {
	return fileLease{IP: labIP, Netmask: "255.255.255.0", Gateway: "10.99.0.254",
		DNS: []string{"10.99.0.53", "10.99.0.54"}, Hostname: "node11", Profile: "live"}
}

// script writes a client hook script that appends "event" and the
// environment it is called with to OUT as one block, and configures the
// address on bound/renew so that renewals (unicast) work.
func (l *lab) script(t *testing.T, name, eventVar, body string) (path, out string) {
	t.Helper()
	path = filepath.Join(l.dir, name+".sh")
	out = filepath.Join(l.dir, name+".out")
	s := "#!/bin/sh\n{ echo \"== " + eventVar + "\"; env | grep -E '^[a-z_0-9]+=' | sort; echo ==; } >> " + out + "\n" + body
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, out
}

// events parses a script output file into its blocks: event name and env.
func events(t *testing.T, out string) []event {
	t.Helper()
	b, err := os.ReadFile(out)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// Only blocks closed by "==" count: the script may be mid-write.
	var evs []event
	var cur *event
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "== "); ok {
			cur = &event{name: name, env: map[string]string{}}
			continue
		}
		if line == "==" && cur != nil {
			evs = append(evs, *cur)
			cur = nil
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && cur != nil {
			cur.env[k] = v
		}
	}
	return evs
}

type event struct {
	name string
	env  map[string]string
}

func waitEvent(t *testing.T, out string, after int, want string, timeout time.Duration) (event, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		evs := events(t, out)
		for _, e := range evs[min(after, len(evs)):] {
			if e.name == want {
				return e, true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return event{}, false
}

func pick(env map[string]string, keys ...string) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		m[k] = env[k]
	}
	return m
}

var labTools = map[string]string{"busybox": "busybox", "dhclient": "isc-dhcp-client", "curl": "curl"}

// udhcpcScript configures the address it is given, like a real hook would,
// so that renewals (unicast from that address) and TFTP work.
const udhcpcScript = `case "$1" in
bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
deconfig) ip addr flush dev "$interface" ;;
esac`

// udhcpc runs busybox udhcpc once (-n -q: exit after bound, fail if no
// lease) with extra args, and returns its error and events.
func (l *lab) udhcpc(t *testing.T, name string, args ...string) (error, []event, string) {
	t.Helper()
	script, out := l.script(t, name, "$1", udhcpcScript)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := l.cli.Exec(ctx, "busybox", append([]string{"udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "2", "-s", script}, args...)...)
	return err, events(t, out), res
}

func lastBound(evs []event) (event, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].name == "bound" {
			return evs[i], true
		}
	}
	return event{}, false
}

func TestLabUdhcpc(t *testing.T) {
	l := newLab(t, labTools)
	base := map[string]string{"ip": labIP, "subnet": "255.255.255.0", "mask": "24", "router": "10.99.0.254",
		"dns": "10.99.0.53 10.99.0.54", "hostname": "node11", "serverid": labServerIP, "lease": "600"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	keys := []string{"ip", "subnet", "mask", "router", "dns", "hostname", "serverid", "lease", "siaddr", "boot_file", "vendor", "opt43"}
	tests := map[string]struct {
		args []string
		want map[string]string
	}{
		"BIOS PXE ROM gets undionly.kpxe over TFTP": {
			args: []string{"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"},
			want: with(map[string]string{"siaddr": labServerIP, "boot_file": "undionly.kpxe", "vendor": "PXEClient", "opt43": "060108ff"}),
		},
		"UEFI x86-64 PXE gets ipxe.efi": {
			args: []string{"-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"},
			want: with(map[string]string{"siaddr": labServerIP, "boot_file": "ipxe.efi", "vendor": "PXEClient", "opt43": "060108ff"}),
		},
		"UEFI HTTP boot gets the URL of ipxe.efi": {
			args: []string{"-V", "HTTPClient:Arch:00016:UNDI:003016", "-x", "0x5d:0010"},
			want: with(map[string]string{"siaddr": labServerIP, "boot_file": "http://10.99.0.1:8080/files/ipxe.efi", "vendor": "HTTPClient"}),
		},
		"iPXE gets its per-MAC script": {
			args: []string{"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x4d:69505845"},
			want: with(map[string]string{"siaddr": labServerIP, "boot_file": "http://10.99.0.1:8080/boot/" + labMAC + ".ipxe", "vendor": "PXEClient", "opt43": "060108ff"}),
		},
		"plain client (live OS) gets the address, no boot program": {
			want: with(map[string]string{"siaddr": labServerIP}),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err, evs, res := l.udhcpc(t, fmt.Sprintf("udhcpc-%x", sha256.Sum256([]byte(name)))[:20], tc.args...)
			if err != nil {
				t.Fatalf("udhcpc: %v\n%s", err, res)
			}
			b, ok := lastBound(evs)
			if !ok {
				t.Fatalf("udhcpc succeeded without a bound event:\n%s", res)
			}
			if diff := cmp.Diff(tc.want, pick(b.env, keys...), cmpDropEmpty); diff != "" {
				t.Errorf("lease as udhcpc sees it (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("unregistered MAC gets nothing", func(t *testing.T) {
		l.cli.SetMAC("eth0", labOtherMAC)
		defer l.cli.SetMAC("eth0", labMAC)
		start := time.Now()
		err, evs, res := l.udhcpc(t, "unregistered")
		if err == nil {
			t.Fatalf("udhcpc -n succeeded for an unregistered MAC:\n%s", res)
		}
		if b, ok := lastBound(evs); ok {
			t.Fatalf("unregistered MAC bound to %s", b.env["ip"])
		}
		if !strings.Contains(res, "no lease, failing") {
			t.Errorf("udhcpc output lacks %q:\n%s", "no lease, failing", res)
		}
		t.Logf("gave up after %s", time.Since(start).Round(time.Millisecond))
	})
}

// cmpDropEmpty treats a missing key and an empty value alike.
var cmpDropEmpty = cmp.Transformer("dropEmpty", func(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != "" {
			out[k] = v
		}
	}
	return out
})

func TestLabUdhcpcRenewalStopsWhenLeaseRemoved(t *testing.T) {
	l := newLab(t, labTools)
	script, out := l.script(t, "renew", "$1", udhcpcScript)
	p := l.cli.Start("busybox", "udhcpc", "-i", "eth0", "-f", "-t", "3", "-T", "2", "-s", script)
	if _, ok := waitEvent(t, out, 0, "bound", 15*time.Second); !ok {
		t.Fatalf("no lease at start; udhcpc:\n%s", p.Output())
	}

	// While registered, a renewal (SIGUSR1: unicast REQUEST from the
	// client's address) is answered.
	n := len(events(t, out))
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitEvent(t, out, n, "renew", 10*time.Second); !ok {
		t.Fatalf("renewal of a registered lease not answered; udhcpc:\n%s", p.Output())
	}

	// Remove the lease: the next renewal gets no answer, rebinding neither,
	// and the client gives the address up.
	l.leases.write(t, map[string]fileLease{})
	n = len(events(t, out))
	removed := time.Now()
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitEvent(t, out, n, "deconfig", 30*time.Second); !ok {
		t.Fatalf("client kept its lease 30s after removal; udhcpc:\n%s", p.Output())
	}
	t.Logf("client dropped the address %s after the lease was removed", time.Since(removed).Round(time.Millisecond))
	for _, e := range events(t, out)[n:] {
		if e.name == "renew" || e.name == "bound" {
			t.Errorf("after removal the client got %q with ip %s", e.name, e.env["ip"])
		}
	}
	if addrs := l.cli.Run("ip", "-4", "-o", "addr", "show", "dev", "eth0"); strings.Contains(addrs, labIP) {
		t.Errorf("eth0 still has %s after deconfig: %s", labIP, addrs)
	}
	// The server logged the now-unregistered MAC once, not per packet.
	if got := strings.Count(l.server.Output(), "reason=unregistered"); got != 1 {
		t.Errorf("server logged the unregistered MAC %d times, want 1 (rate limit):\n%s", got, l.server.Output())
	}
}

func (l *lab) dhclientConf(t *testing.T) string {
	t.Helper()
	conf := filepath.Join(l.dir, "dhclient.conf")
	c := `timeout 6;
retry 1;
send vendor-class-identifier "PXEClient:Arch:00000:UNDI:002001";
request subnet-mask, routers, domain-name-servers, host-name;
`
	if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestLabDhclient(t *testing.T) {
	l := newLab(t, labTools)
	conf := l.dhclientConf(t)

	t.Run("registered MAC", func(t *testing.T) {
		script, out := l.script(t, "dhclient", "$reason",
			`case "$reason" in BOUND|RENEW|REBOOT) ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;; esac`)
		dir := t.TempDir()
		p := l.cli.Start("dhclient", "-4", "-d", "-v", "-1", "-cf", conf, "-sf", script,
			"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "eth0")
		b, ok := waitEvent(t, out, 0, "BOUND", 20*time.Second)
		if !ok {
			t.Fatalf("dhclient did not bind; output:\n%s", p.Output())
		}
		want := map[string]string{
			"new_ip_address": labIP, "new_subnet_mask": "255.255.255.0", "new_routers": "10.99.0.254",
			"new_domain_name_servers": "10.99.0.53 10.99.0.54", "new_host_name": "node11",
			"new_dhcp_server_identifier": labServerIP, "new_dhcp_lease_time": "600",
			"new_dhcp_renewal_time": "300", "new_dhcp_rebinding_time": "525",
			"new_next_server": labServerIP, "new_filename": "undionly.kpxe", "new_bootfile_name": "undionly.kpxe",
			"new_vendor_class_identifier": "PXEClient",
		}
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		if diff := cmp.Diff(want, pick(b.env, keys...)); diff != "" {
			t.Errorf("lease as dhclient sees it (-want +got):\n%s", diff)
		}
		// dhclient runs the BOUND script before it writes the lease file, so
		// the file may lag the event by a moment: wait for it, bounded.
		var leases []byte
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			leases, err = os.ReadFile(filepath.Join(dir, "leases"))
			if (err == nil && strings.Contains(string(leases), "fixed-address "+labIP)) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || !strings.Contains(string(leases), "fixed-address "+labIP) {
			t.Errorf("dhclient lease file lacks fixed-address %s (err %v):\n%s", labIP, err, leases)
		}
		p.Stop()
		l.cli.Run("ip", "addr", "flush", "dev", "eth0")
	})

	t.Run("unregistered MAC", func(t *testing.T) {
		l.cli.SetMAC("eth0", labOtherMAC)
		defer l.cli.SetMAC("eth0", labMAC)
		script, out := l.script(t, "dhclient-unreg", "$reason", "")
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		res, err := l.cli.Exec(ctx, "dhclient", "-4", "-d", "-v", "-1", "-cf", conf, "-sf", script,
			"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "eth0")
		if err == nil {
			t.Fatalf("dhclient -1 succeeded for an unregistered MAC:\n%s", res)
		}
		if strings.Contains(res, "DHCPOFFER of") {
			t.Errorf("unregistered MAC got an offer:\n%s", res)
		}
		for _, e := range events(t, out) {
			if e.name == "BOUND" {
				t.Errorf("unregistered MAC bound to %s", e.env["new_ip_address"])
			}
		}
	})
}

// TestLabBootChain follows the chain a PXE ROM takes: DHCP gives it
// siaddr and a boot file, then it fetches that file over TFTP (here with
// curl's own TFTP client, blksize 1468 like iPXE's).
func TestLabBootChain(t *testing.T) {
	l := newLab(t, labTools)
	err, evs, res := l.udhcpc(t, "chain", "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, res)
	}
	b, ok := lastBound(evs)
	if !ok {
		t.Fatal("no bound event")
	}
	url := "tftp://" + b.env["siaddr"] + "/" + b.env["boot_file"]
	dst := filepath.Join(l.dir, "fetched")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := l.cli.Exec(ctx, "curl", "-sS", "--tftp-blksize", "1468", "-o", dst, url); err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, l.bootFile) {
		t.Errorf("fetched %d bytes, want the %d bytes of the boot file exactly", len(got), len(l.bootFile))
	}

	for _, path := range []string{"/../leases.json", "//etc/passwd", "/missing.efi"} {
		refused := filepath.Join(l.dir, "refused")
		out, err := l.cli.Exec(ctx, "curl", "-sS", "--path-as-is", "--tftp-blksize", "1468", "-o", refused, "tftp://"+labServerIP+path)
		// pin/tftp answers every refusal with TFTP error 1, which curl
		// reports as exit 68 (CURLE_TFTP_NOTFOUND); a timeout would be 28.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 68 {
			t.Errorf("curl tftp://%s%s: %v, want exit status 68 (refused by the server)", labServerIP, path, err)
		}
		if st, err := os.Stat(refused); err == nil && st.Size() > 0 {
			t.Errorf("curl %s wrote %d bytes", path, st.Size())
		}
		t.Logf("%s: %s", path, strings.TrimSpace(out))
	}
	for _, want := range []string{"file=../leases.json result=forbidden", "file=/etc/passwd result=forbidden", "file=missing.efi result=not_found"} {
		if !strings.Contains(l.server.Output(), want) {
			t.Errorf("server log lacks %q", want)
		}
	}
}
