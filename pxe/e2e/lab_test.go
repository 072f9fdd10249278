package e2e_test

// Lab tests of the rackflow-pxe binary's DHCP under stress: a boot storm of
// 200 hosts after a power outage, and a SIGKILL and restart of the service
// while a client renews its lease. Root-only (network namespaces), skipped
// under -short; they do not need QEMU.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/netns"
	"github.com/rackflow/rackflow/testsuite/pxebench"
)

// labAPIAddr is where the lab's lease API and /metrics listen: srv's
// loopback, off the boot network, as in production.
const labAPIAddr = "127.0.0.1:8081"

// pxeLab is rackflow-pxe in namespace srv (boot routes at serverIP on eth0,
// lease API at labAPIAddr), with a veth to namespace cli.
type pxeLab struct {
	t        *testing.T
	dir      string
	bin      string
	token    string
	state    string
	serverIP string
	srv, cli *netns.NS
	api      *client.Client
	hc       *http.Client
}

func newPXELab(t *testing.T, tools map[string]string, subnet string) *pxeLab {
	t.Helper()
	netns.Require(t, tools)
	l := &pxeLab{t: t, dir: t.TempDir(), serverIP: subnet + ".1"}
	l.bin = filepath.Join(l.dir, "rackflow-pxe")
	if out, err := exec.Command("go", "build", "-o", l.bin, "github.com/rackflow/rackflow/pxe/cmd/rackflow-pxe").CombinedOutput(); err != nil {
		t.Fatalf("build rackflow-pxe: %v\n%s", err, out)
	}
	l.token = rand.Text()
	if err := os.WriteFile(filepath.Join(l.dir, "token"), []byte(l.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.state = filepath.Join(l.dir, "leases.json")
	l.srv = netns.New(t, "pxe")
	l.cli = netns.New(t, "host")
	netns.Veth(t, l.srv, "eth0", l.cli, "eth0")
	l.srv.AddAddr("eth0", l.serverIP+"/24")
	l.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := l.srv.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	api, err := client.New("http://"+labAPIAddr, l.token, client.Options{HTTPClient: l.hc})
	if err != nil {
		t.Fatal(err)
	}
	l.api = api
	return l
}

// start runs rackflow-pxe with DHCP on eth0 and the lab's state file, and
// waits until it serves.
func (l *pxeLab) start(extra ...string) *netns.Process {
	l.t.Helper()
	args := append([]string{
		"-api-addr", labAPIAddr,
		"-boot-addr", l.serverIP + ":8080",
		"-token-file", filepath.Join(l.dir, "token"),
		"-state-file", l.state,
		"-public-url", "http://" + l.serverIP + ":8080",
		"-dhcp-interface", "eth0",
	}, extra...)
	p := l.srv.Start(l.bin, args...)
	for _, line := range []string{"pxe api listening", "pxe boot listening", "dhcp: serving"} {
		p.WaitFor(line, 20*time.Second)
	}
	return p
}

// metric returns the value of one sample of rackflow-pxe's /metrics, 0 when
// absent.
func (l *pxeLab) metric(sample string) float64 {
	l.t.Helper()
	body := httpGet(l.t, l.hc, "http://"+labAPIAddr+"/metrics", http.StatusOK)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestLabBootStorm: after a power outage 200 registered hosts PXE-boot at
// the same instant. Every one must get its own registered address (and its
// boot program) within 15 seconds, retransmitting after 1-4 s as PXE ROMs
// do when a packet is lost.
func TestLabBootStorm(t *testing.T) {
	const (
		hosts = 200
		bound = 15 * time.Second
	)
	l := newPXELab(t, nil, "10.96.0")
	p := l.start("-dhcp-lease-time", "10m", "-log-level", "info")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	macs := make([]net.HardwareAddr, hosts)
	want := map[string]string{}
	for i := range macs {
		macs[i] = net.HardwareAddr{0x52, 0x54, 0x00, 0x96, byte(i >> 8), byte(i)}
		ip := fmt.Sprintf("10.96.0.%d", 20+i)
		want[macs[i].String()] = ip
		if _, err := l.api.Put(ctx, lease.Lease{MAC: macs[i].String(), IP: ip, Netmask: "255.255.255.0",
			Gateway: l.serverIP, Profile: lease.ProfileDisk}); err != nil {
			t.Fatalf("register host %d: %v", i, err)
		}
	}
	// A MAC nobody registered storms along and must get nothing.
	stray := net.HardwareAddr{0x52, 0x54, 0x00, 0x96, 0xff, 0xee}

	var conn *pxebench.RawConn
	if err := l.cli.Do(func() (err error) { conn, err = pxebench.ListenRaw("eth0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res := pxebench.Storm{MACs: append(slices.Clone(macs), stray), Timeout: bound}.Run(ctx, conn)

	var (
		elapsed  []time.Duration
		retried  int
		failures []string
	)
	for _, r := range res[:hosts] {
		mac := r.MAC.String()
		switch {
		case r.Err != nil:
			failures = append(failures, r.Err.Error())
		case r.IP.String() != want[mac]:
			failures = append(failures, fmt.Sprintf("%s got %s, registered %s", mac, r.IP, want[mac]))
		case !r.ServerID.Equal(net.ParseIP(l.serverIP)) || r.BootFile != "undionly.kpxe" || !r.NextServer.Equal(net.ParseIP(l.serverIP)):
			failures = append(failures, fmt.Sprintf("%s: server id %s, next server %s, boot file %q; want %s, %s, undionly.kpxe",
				mac, r.ServerID, r.NextServer, r.BootFile, l.serverIP, l.serverIP))
		default:
			elapsed = append(elapsed, r.Elapsed)
			if r.Sent > 2 {
				retried++
			}
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d hosts did not get their lease within %s:\n  %s", len(failures), hosts, bound, strings.Join(failures, "\n  "))
	}
	if r := res[hosts]; r.Err == nil {
		t.Errorf("unregistered MAC %s got %s", stray, r.IP)
	}
	if len(elapsed) > 0 {
		slices.Sort(elapsed)
		q := func(f float64) time.Duration { return elapsed[int(f*float64(len(elapsed)-1))].Round(time.Millisecond) }
		t.Logf("%d hosts bound: median %s, p90 %s, last %s; %d needed a retransmission", len(elapsed), q(0.5), q(0.9), q(1), retried)
	}
	t.Logf("server: %v offers, %v acks", l.metric(`rackflow_pxe_dhcp_replies_total{type="offer"}`),
		l.metric(`rackflow_pxe_dhcp_replies_total{type="ack"}`))
	// What an operator checks in `netstat -su`: the burst must fit in the
	// DHCP socket's receive buffer rather than be dropped and wait for the
	// hosts' retransmissions.
	if drops := udpDrops(t, l.srv, 67); drops != 0 {
		t.Errorf("the kernel dropped %d DHCP packets of the storm (DHCP socket's receive buffer full)", drops)
	}
	if t.Failed() {
		t.Logf("rackflow-pxe output (last 4 KiB):\n%s", tail(p.Output(), 4096))
	}
}

// TestLabRestartDuringRenewal: rackflow-pxe is killed (SIGKILL, no clean
// shutdown) just before a client's lease renewal and started again on the
// same state file while the client is renewing. The client must keep its
// address (the renewal is ACKed by the restarted service, no deconfig) and
// the lease API must still list the lease.
func TestLabRestartDuringRenewal(t *testing.T) {
	const (
		mac = "52:54:00:95:00:11"
		ip  = "10.95.0.11"
		// rackflow-pxe refuses lease times under 1m, so T1 is at 30s.
		leaseTime = time.Minute
	)
	l := newPXELab(t, map[string]string{"busybox": "busybox"}, "10.95.0")
	l.cli.SetMAC("eth0", mac)
	first := l.start("-dhcp-lease-time", leaseTime.String(), "-log-level", "debug")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := l.api.Put(ctx, lease.Lease{MAC: mac, IP: ip, Netmask: "255.255.255.0", Gateway: l.serverIP,
		Hostname: "node11", Profile: lease.ProfileLive, BootID: "restart-1"}); err != nil {
		t.Fatalf("register lease: %v", err)
	}

	// A real client: busybox udhcpc, staying in the foreground to renew,
	// with a hook that configures the address like a distribution's would
	// and records every event.
	events := filepath.Join(l.dir, "udhcpc.events")
	hook := filepath.Join(l.dir, "udhcpc.sh")
	script := `#!/bin/sh
echo "$1 ip=$ip lease=$lease serverid=$serverid" >> ` + events + `
case "$1" in
bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
deconfig) ip addr flush dev "$interface" ;;
esac
`
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	udhcpc := l.cli.Start("busybox", "udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "2", "-s", hook)
	waitEvents(t, events, 1, 15*time.Second)
	boundAt := time.Now()
	if got, want := readEvents(t, events), []string{"deconfig ip= lease= serverid=", fmt.Sprintf("bound ip=%s lease=%d serverid=%s", ip, int(leaseTime.Seconds()), l.serverIP)}; !slices.Equal(got, want) {
		t.Fatalf("udhcpc events %q, want %q; udhcpc:\n%s", got, want, udhcpc.Output())
	}

	// Kill the service a moment before T1, so the renewal finds it dead.
	time.Sleep(time.Until(boundAt.Add(leaseTime/2 - 2*time.Second)))
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(5 * time.Second); err == nil {
		t.Fatal("rackflow-pxe exited cleanly after SIGKILL")
	}
	udhcpc.WaitFor("sending renew", 20*time.Second)
	renewAt := time.Now()
	time.Sleep(time.Second) // the first renewal is lost; restart while the client retries

	second := l.start("-dhcp-lease-time", leaseTime.String(), "-log-level", "debug")
	t.Logf("restarted %s after the client's first renew request", time.Since(renewAt).Round(time.Millisecond))
	waitEvents(t, events, 2, leaseTime/2)
	evs := readEvents(t, events)
	if want := fmt.Sprintf("renew ip=%s lease=%d serverid=%s", ip, int(leaseTime.Seconds()), l.serverIP); evs[2] != want {
		t.Errorf("after the restart udhcpc got %q, want %q", evs[2], want)
	} else {
		t.Logf("renewal ACKed %s after the client's first renew request", time.Since(renewAt).Round(time.Millisecond))
	}
	if !regexp.MustCompile(`"msg":"dhcp: answer".*"type":"ACK","request":"REQUEST","ip":"` + regexp.QuoteMeta(ip) + `"`).MatchString(second.Output()) {
		t.Errorf("restarted rackflow-pxe logged no ACK of the renewal:\n%s", second.Output())
	}

	// The client keeps its address, the service keeps the lease.
	if addrs := l.cli.Run("ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, " "+ip+"/24 ") {
		t.Errorf("eth0 lost %s: %s", ip, addrs)
	}
	leases, err := l.api.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].MAC != mac || leases[0].IP != ip || leases[0].BootID != "restart-1" {
		t.Errorf("lease API after restart lists %+v, want the one lease of %s -> %s", leases, mac, ip)
	}
	// No deconfig or failure since bound, even a while later.
	time.Sleep(2 * time.Second)
	for _, e := range readEvents(t, events)[2:] {
		if !strings.HasPrefix(e, "renew ip="+ip+" ") {
			t.Errorf("udhcpc event after the restart: %q", e)
		}
	}
	if t.Failed() {
		t.Logf("udhcpc:\n%s", udhcpc.Output())
	}
}

func readEvents(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

// waitEvents waits until the hook has recorded more than n events.
func waitEvents(t *testing.T, path string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(readEvents(t, path)) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("udhcpc recorded %q within %s, waiting for event %d", readEvents(t, path), timeout, n+1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// udpDrops returns the drop counter of the UDP socket bound to port in ns
// (/proc/net/udp, last column).
func udpDrops(t *testing.T, ns *netns.NS, port int) int {
	t.Helper()
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(ns.Run("cat", "/proc/net/udp"), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasSuffix(f[1], suffix) {
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				t.Fatalf("/proc/net/udp: %q", line)
			}
			return n
		}
	}
	t.Fatalf("no UDP socket on port %d in %s", port, ns.Name)
	return 0
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
