package pxebench_test

// TestBenchPXE is `make bench-pxe`: rackflow-pxe against dnsmasq (DHCP,
// TFTP) and busybox httpd (HTTP) on the same namespaces, the same leases,
// the same files and the same clients, in one run, printed as a table.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/pxe/tftp/tftptest"
	"github.com/rackflow/rackflow/testsuite/netns"
	"github.com/rackflow/rackflow/testsuite/pxebench"
)

const (
	benchServerIP = "10.97.0.1"
	benchClientIP = "10.97.0.2"
	benchHosts    = 1000
	stormHosts    = 200
	fileSize      = 32 << 20 // a kernel-sized boot file
)

// Offered DHCP rates (DORA/s) perfdhcp sweeps for each server.
// The grid is fine between 4000 and 8000, where the two servers' lossless
// rates lie on a quiet 2-core machine, so that row can tell them apart;
// 500 is there for a busy one.
var benchRates = []int{500, 1000, 2000, 3000, 4000, 4500, 5000, 5500, 6000, 6500, 7000, 7500, 8000, 12000, 16000}

const (
	benchRounds     = 2 // rackflow, baseline, rackflow, baseline
	ratePeriod      = 4 // seconds per perfdhcp run
	tftpFetches     = 3
	tftpWindow      = 16 // RFC 7440 windowsize the Go client asks for
	httpFetches     = 9
	cleanLossLimit  = 0.01
	benchLeaseMACv0 = 0x52
)

func benchMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{benchLeaseMACv0, 0x54, 0x01, 0x00, byte(i >> 8), byte(i)}
}

func benchIP(i int) string { return fmt.Sprintf("10.97.%d.%d", 1+i/250, 1+i%250) }

// measures of one server in one round.
type measures struct {
	dhcp map[int]pxebench.Perfdhcp // by offered rate
	tftp map[int][]float64         // MiB/s by blksize
	// tftpWin is MiB/s of the windowsize client at blksize 1468, and the
	// window the server granted.
	tftpWin     []float64
	tftpGranted int // the windowsize the server granted
	// clean is the highest offered rate with < 1 % loss in this round;
	// doLat and raLat the DISCOVER-OFFER and REQUEST-ACK delays (s) of a
	// perfdhcp run at that rate.
	clean        int
	doLat, raLat []float64
	http         []float64     // MiB/s
	storm        time.Duration // until all stormHosts were ACKed
}

func TestBenchPXE(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark: skipped with -short")
	}
	if os.Getenv("RACKFLOW_BENCH_PXE") != "1" {
		t.Skip("PXE benchmark: set RACKFLOW_BENCH_PXE=1 to run it (make bench-pxe)")
	}
	netns.Require(t, map[string]string{"perfdhcp": "kea-admin", "dnsmasq": "dnsmasq-base", "busybox": "busybox", "curl": "curl"})
	dir := t.TempDir()

	bin := filepath.Join(dir, "rackflow-pxe")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rackflow/rackflow/pxe/cmd/rackflow-pxe").CombinedOutput(); err != nil {
		t.Fatalf("build rackflow-pxe: %v\n%s", err, out)
	}

	// The same leases for both servers: the lease store, dnsmasq's hosts
	// file and perfdhcp's MAC list.
	stateFile := filepath.Join(dir, "leases.json")
	store, err := pxe.OpenStore(pxe.StoreConfig{Path: stateFile})
	if err != nil {
		t.Fatal(err)
	}
	var hosts, macList strings.Builder
	start := time.Now()
	for i := range benchHosts {
		l := lease.Lease{MAC: benchMAC(i).String(), IP: benchIP(i), Netmask: "255.255.0.0", Profile: lease.ProfileDisk}
		if _, _, err := store.Put(context.Background(), l); err != nil {
			t.Fatalf("register lease %d: %v", i, err)
		}
		fmt.Fprintf(&hosts, "%s,%s\n", l.MAC, l.IP)
		fmt.Fprintf(&macList, "%s\n", l.MAC)
	}
	store.Close()
	t.Logf("registered %d leases in %s", benchHosts, time.Since(start).Round(time.Millisecond))
	hostsFile, macFile := filepath.Join(dir, "dnsmasq.hosts"), filepath.Join(dir, "macs.txt")
	writeFile(t, hostsFile, []byte(hosts.String()), 0o644)
	writeFile(t, macFile, []byte(macList.String()), 0o644)

	// The same boot file for every server.
	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	content := make([]byte, fileSize)
	_, _ = rand.Read(content)
	writeFile(t, filepath.Join(files, "vmlinuz"), content, 0o644)
	wantSum := sha256.Sum256(content)
	token := filepath.Join(dir, "token")
	writeFile(t, token, []byte("bench-token\n"), 0o600)

	srv := netns.New(t, "pxe")
	cli := netns.New(t, "cli")
	netns.Veth(t, srv, "eth0", cli, "eth0")
	srv.AddAddr("eth0", benchServerIP+"/16")
	cli.AddAddr("eth0", benchClientIP+"/16")

	b := &bench{t: t, dir: dir, srv: srv, cli: cli, macFile: macFile, wantSum: wantSum}
	var rf, base []measures
	for round := range benchRounds {
		t.Logf("round %d: rackflow-pxe", round+1)
		p := b.startLogged("rackflow-pxe", bin,
			"-api-addr", benchServerIP+":8080", "-token-file", token, "-state-file", stateFile,
			"-public-url", "http://"+benchServerIP+":8080", "-boot-dir", files,
			"-dhcp-interface", "eth0", "-dhcp-relays", benchClientIP, // perfdhcp relays from the client's address
			"-tftp-root", files, "-tftp-addr", benchServerIP+":69")
		p.waitLog(t, "dhcp: serving", "tftp: serving", "pxe api listening")
		rf = append(rf, b.measure("http://"+benchServerIP+":8080/files/vmlinuz"))
		p.stop(t)

		t.Logf("round %d: dnsmasq + busybox httpd", round+1)
		dlog := filepath.Join(dir, fmt.Sprintf("dnsmasq-%d.log", round+1))
		d := b.startLogged("dnsmasq", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
			"--interface=eth0", "--bind-interfaces", "--user=root",
			"--dhcp-range="+"10.97.0.0,static,255.255.0.0,1h", "--dhcp-hostsfile="+hostsFile, "--leasefile-ro",
			"--enable-tftp", "--tftp-root="+files, "--log-facility="+dlog)
		waitFileHas(t, dlog, "TFTP root is")
		h := b.startLogged("busybox-httpd", "busybox", "httpd", "-f", "-p", benchServerIP+":8081", "-h", files)
		waitTCP(t, srv, benchServerIP+":8081")
		base = append(base, b.measure("http://"+benchServerIP+":8081/vmlinuz"))
		h.stop(t)
		d.stop(t)
		if log, _ := os.ReadFile(dlog); bytes.Contains(log, []byte("no address available")) {
			t.Errorf("dnsmasq saw clients it has no lease for: the clients were not the registered MACs")
		}
	}

	rows := b.rows(rf, base)
	dnsmasqVersion := firstLine(run(t, exec.Command("dnsmasq", "--version")))
	fmt.Printf("\nrackflow-pxe vs %s and busybox httpd, %d registered hosts, %d MiB boot file, %d rounds, %d cores\n\n%s\n",
		dnsmasqVersion, benchHosts, fileSize>>20, benchRounds, runtime.NumCPU(), pxebench.Table(rows))
	if out := os.Getenv("RACKFLOW_BENCH_JSON"); out != "" {
		// For `make bench`'s combined table (testsuite/benchreport).
		js, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, out, js, 0o644)
	}
	for _, r := range rows {
		verdict := "goal met"
		if !r.Met() {
			verdict = "GOAL MISSED"
		}
		fmt.Printf("%-40s %s (rackflow/baseline %.2f, goal %.2f)\n", r.What, verdict, r.Ratio(), r.GoalRatio())
	}
}

type bench struct {
	t        *testing.T
	dir      string
	srv, cli *netns.NS
	macFile  string
	wantSum  [32]byte
	// lastWindow is the windowsize the server granted the last fetchWindow.
	lastWindow int
}

// measure runs every load against the server now running in srv.
func (b *bench) measure(httpURL string) measures {
	t := b.t
	m := measures{dhcp: map[int]pxebench.Perfdhcp{}, tftp: map[int][]float64{}}
	for _, rate := range benchRates {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ratePeriod+30)*time.Second)
		out, err := b.cli.Exec(ctx, "perfdhcp", "-4", "-M", b.macFile, "-R", strconv.Itoa(benchHosts),
			"-r", strconv.Itoa(rate), "-p", strconv.Itoa(ratePeriod), benchServerIP)
		cancel()
		// perfdhcp exits 3 when packets were dropped; its report is still there.
		p, perr := pxebench.ParsePerfdhcp(out)
		if perr != nil {
			t.Fatalf("perfdhcp -r %d: %v (%v)\n%s", rate, perr, err, out)
		}
		m.dhcp[rate] = p
		t.Logf("  perfdhcp -r %5d: %7.0f DORA/s, loss %5.1f%%", rate, p.Rate, 100*p.Loss())
	}
	if p := m.dhcp[benchRates[0]]; p.Request.Received == 0 {
		t.Fatalf("no ACK at all at %d/s: the server is not answering the registered MACs", benchRates[0])
	}
	for _, rate := range benchRates {
		if m.dhcp[rate].Loss() < cleanLossLimit {
			m.clean = rate
		}
	}
	if m.clean > 0 {
		// Latency at the highest lossless rate: perfdhcp's per-exchange
		// timestamps (-x t), one more run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ratePeriod+30)*time.Second)
		out, _ := b.cli.Exec(ctx, "perfdhcp", "-4", "-x", "t", "-M", b.macFile, "-R", strconv.Itoa(benchHosts),
			"-r", strconv.Itoa(m.clean), "-p", strconv.Itoa(ratePeriod), benchServerIP)
		cancel()
		times := pxebench.ParsePerfdhcpTimes(out)
		m.doLat, m.raLat = times["DISCOVER-OFFER"], times["REQUEST-ACK"]
		if len(m.doLat) == 0 {
			t.Logf("  perfdhcp -x t at %d/s: no timestamps parsed; output starts:\n%.2000s", m.clean, out)
		} else {
			t.Logf("  perfdhcp -x t -r %5d: DISCOVER-OFFER p50 %.3f ms p99 %.3f ms, REQUEST-ACK p50 %.3f ms p99 %.3f ms (%d exchanges)",
				m.clean, 1e3*pxebench.Percentile(m.doLat, 50), 1e3*pxebench.Percentile(m.doLat, 99),
				1e3*pxebench.Percentile(m.raLat, 50), 1e3*pxebench.Percentile(m.raLat, 99), len(m.doLat))
		}
	}

	for _, blk := range []int{512, 1468} {
		for range tftpFetches {
			m.tftp[blk] = append(m.tftp[blk], b.fetch(fmt.Sprintf("tftp://%s/vmlinuz", benchServerIP), "--tftp-blksize", strconv.Itoa(blk)))
		}
	}
	for range tftpFetches {
		m.tftpWin = append(m.tftpWin, b.fetchWindow(blkWin))
	}
	m.tftpGranted = b.lastWindow
	for range httpFetches {
		m.http = append(m.http, b.fetch(httpURL))
	}

	// 200 PXE ROMs broadcasting at once, one raw socket in the client
	// namespace; the first stormHosts leases.
	var conn *pxebench.RawConn
	if err := b.cli.Do(func() (err error) { conn, err = pxebench.ListenRaw("eth0"); return err }); err != nil {
		t.Fatal(err)
	}
	macs := make([]net.HardwareAddr, stormHosts)
	for i := range macs {
		macs[i] = benchMAC(i)
	}
	res := pxebench.Storm{MACs: macs, Timeout: 60 * time.Second}.Run(context.Background(), conn)
	conn.Close()
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("boot storm: %v", r.Err)
		}
		if r.IP.String() != benchIP(i) {
			t.Fatalf("boot storm: %s got %s, registered %s", r.MAC, r.IP, benchIP(i))
		}
		m.storm = max(m.storm, r.Elapsed)
	}
	t.Logf("  tftp 512: %.1f MiB/s, tftp 1468: %.1f MiB/s, tftp 1468 windowsize %d (granted %d): %.1f MiB/s, http: %.0f MiB/s, storm of %d: all bound in %s",
		pxebench.Median(m.tftp[512]), pxebench.Median(m.tftp[1468]), tftpWindow, b.lastWindow, pxebench.Median(m.tftpWin), pxebench.Median(m.http), stormHosts, m.storm.Round(time.Millisecond))
	return m
}

const blkWin = 1468

// fetchWindow reads the boot file over TFTP with the Go client asking for
// windowsize tftpWindow (curl and busybox do not ask for one) and returns
// MiB/s.
func (b *bench) fetchWindow(blk int) float64 {
	t := b.t
	h := sha256.New()
	var res tftptest.Result
	var d time.Duration
	err := b.cli.Do(func() error {
		c := &tftptest.Client{BlockSize: blk, WindowSize: tftpWindow, Timeout: time.Second}
		start := time.Now()
		var err error
		res, err = c.Get(benchServerIP+":69", "vmlinuz", h)
		d = time.Since(start)
		return err
	})
	if err != nil {
		t.Fatalf("tftp windowsize %d: %v", tftpWindow, err)
	}
	if [32]byte(h.Sum(nil)) != b.wantSum {
		t.Fatalf("tftp windowsize %d: got %d bytes that are not the boot file", tftpWindow, res.Bytes)
	}
	b.lastWindow = res.WindowSize
	return float64(res.Bytes) / (1 << 20) / d.Seconds()
}

// fetch downloads url with curl in the client namespace, checks the file and
// returns the speed in MiB/s.
func (b *bench) fetch(url string, args ...string) float64 {
	t := b.t
	dst := filepath.Join(b.dir, "got")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := b.cli.Exec(ctx, "curl", append([]string{"-sS", "-o", dst, "-w", "%{speed_download}", url}, args...)...)
	if err != nil {
		t.Fatalf("fetch %s: %v", url, err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != b.wantSum {
		t.Fatalf("fetch %s: got %d bytes that are not the boot file", url, len(got))
	}
	os.Remove(dst)
	bps, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("curl speed %q: %v", out, err)
	}
	return bps / (1 << 20)
}

// rows folds the rounds into the table: for each server the best of its
// rounds (the machine's noise only ever slows a run down).
func (b *bench) rows(rf, base []measures) []pxebench.Row {
	peak := func(ms []measures) (float64, string) {
		best, note := 0.0, ""
		for _, m := range ms {
			for _, rate := range benchRates {
				if p := m.dhcp[rate]; p.Rate > best {
					best, note = p.Rate, fmt.Sprintf("at offered %d/s, loss %.1f%%", rate, 100*p.Loss())
				}
			}
		}
		return best, note
	}
	// neverClean names a server that lost ≥1 % at every offered rate
	// in every round: its lossless rate is 0 and the ratio says nothing.
	neverClean := func(name string, ms []measures) string {
		for _, m := range ms {
			if m.clean > 0 {
				return ""
			}
		}
		return fmt.Sprintf("; %s lost ≥1%% at every offered rate", name)
	}
	clean := func(ms []measures) float64 {
		best := 0.0
		for _, m := range ms {
			for _, rate := range benchRates {
				if p := m.dhcp[rate]; p.Loss() < cleanLossLimit {
					best = max(best, p.Rate)
				}
			}
		}
		return best
	}
	bestOf := func(ms []measures, f func(measures) float64) float64 {
		best := 0.0
		for _, m := range ms {
			best = max(best, f(m))
		}
		return best
	}
	rfPeak, rfNote := peak(rf)
	basePeak, baseNote := peak(base)
	storm := func(m measures) float64 { return stormHosts / m.storm.Seconds() }
	tftpAt := func(blk int) func(measures) float64 {
		return func(m measures) float64 { return pxebench.Median(m.tftp[blk]) }
	}
	win := func(m measures) float64 { return pxebench.Median(m.tftpWin) }
	// rounds shows every round's value of both servers: the spread says
	// how much the machine's load moved the figures.
	rounds := func(f func(measures) float64) string {
		var rs, bs []string
		for _, m := range rf {
			rs = append(rs, strconv.FormatFloat(f(m), 'f', 1, 64))
		}
		for _, m := range base {
			bs = append(bs, strconv.FormatFloat(f(m), 'f', 1, 64))
		}
		return "rounds rackflow " + strings.Join(rs, "/") + ", baseline " + strings.Join(bs, "/")
	}
	cleanOf := func(m measures) float64 { return m.dhcp[m.clean].Rate }
	lat := func(ms []measures) string {
		// The round with the highest lossless rate.
		var best measures
		for _, m := range ms {
			if m.clean >= best.clean {
				best = m
			}
		}
		if len(best.doLat) == 0 {
			return "no latency parsed"
		}
		ms2 := func(v float64) string { return strconv.FormatFloat(1e3*v, 'f', 2, 64) }
		return fmt.Sprintf("at %d/s DISCOVER-OFFER p50/p99 %s/%s ms, REQUEST-ACK p50/p99 %s/%s ms",
			best.clean, ms2(pxebench.Percentile(best.doLat, 50)), ms2(pxebench.Percentile(best.doLat, 99)),
			ms2(pxebench.Percentile(best.raLat, 50)), ms2(pxebench.Percentile(best.raLat, 99)))
	}
	return []pxebench.Row{
		{What: "DHCP DORA/s, peak (perfdhcp, relayed)", Unit: "DORA/s", Rackflow: rfPeak, Baseline: basePeak, BaselineName: "dnsmasq",
			Note: "rackflow " + rfNote + "; dnsmasq " + baseNote},
		{What: "DHCP DORA/s, highest rate with <1% loss", Unit: "DORA/s", Rackflow: clean(rf), Baseline: clean(base), BaselineName: "dnsmasq", Goal: 1.25,
			Note: fmt.Sprintf("offered rates %v; %s; rackflow %s; dnsmasq %s%s%s", benchRates, rounds(cleanOf), lat(rf), lat(base),
				neverClean("rackflow", rf), neverClean("dnsmasq", base))},
		{What: fmt.Sprintf("DHCP boot storm, %d broadcasting hosts", stormHosts), Unit: "hosts/s", Rackflow: bestOf(rf, storm), Baseline: bestOf(base, storm), BaselineName: "dnsmasq",
			Note: "hosts / time until the last ACK, retransmit 1-4s; " + rounds(storm)},
		{What: "TFTP 32 MiB, blksize 512 (curl)", Unit: "MiB/s", Rackflow: bestOf(rf, tftpAt(512)),
			Baseline: bestOf(base, tftpAt(512)), BaselineName: "dnsmasq", Note: fmt.Sprintf("median of %d fetches; %s", tftpFetches, rounds(tftpAt(512)))},
		{What: "TFTP 32 MiB, blksize 1468 (curl)", Unit: "MiB/s", Rackflow: bestOf(rf, tftpAt(1468)),
			Baseline: bestOf(base, tftpAt(1468)), BaselineName: "dnsmasq", Note: fmt.Sprintf("median of %d fetches; %s", tftpFetches, rounds(tftpAt(1468)))},
		{What: fmt.Sprintf("TFTP 32 MiB, blksize %d, windowsize %d (Go client)", blkWin, tftpWindow), Unit: "MiB/s", Rackflow: bestOf(rf, win),
			Baseline: bestOf(base, win), BaselineName: "dnsmasq",
			Note: fmt.Sprintf("median of %d fetches; windowsize granted: rackflow %d, dnsmasq %d (1: lock-step); %s", tftpFetches, rf[0].tftpGranted, base[0].tftpGranted, rounds(win))},
		{What: "HTTP 32 MiB (curl), /files vs httpd", Unit: "MiB/s", Rackflow: bestOf(rf, func(m measures) float64 { return pxebench.Median(m.http) }),
			Baseline: bestOf(base, func(m measures) float64 { return pxebench.Median(m.http) }), BaselineName: "busybox httpd",
			Note: fmt.Sprintf("median of %d fetches; %s", httpFetches, rounds(func(m measures) float64 { return pxebench.Median(m.http) }))},
	}
}

// logged is a server running in the lab with its output in a file (the
// servers log every answer; a file keeps that out of the test's memory).
type logged struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has exited
}

func (b *bench) startLogged(name, bin string, args ...string) *logged {
	t := b.t
	log := filepath.Join(b.dir, name+".out")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := b.srv.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	l := &logged{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(l.done) }()
	t.Cleanup(func() { l.stop(t) })
	return l
}

func (l *logged) stop(t *testing.T) {
	select {
	case <-l.done:
		return
	default:
	}
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(5 * time.Second):
		_ = l.cmd.Process.Kill()
		<-l.done
	}
}

func (l *logged) waitLog(t *testing.T, lines ...string) {
	t.Helper()
	for _, s := range lines {
		waitFileHas(t, l.log, s)
	}
}

func waitFileHas(t *testing.T, path, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(s)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not say %q after 20s:\n%s", path, s, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitTCP(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return string(out)
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return strings.TrimSpace(sc.Text())
	}
	return ""
}
