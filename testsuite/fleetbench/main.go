// Command fleetbench measures how many ProvisionHost runs one worker carries
// at once, on each Temporal engine in turn: it is what `make bench-fleet`
// runs. For each engine (-engines: the dev server, bin/temporal; the
// cluster, testsuite/cluster's two temporal-server processes on
// PostgreSQL) it starts the server, the pxe lease API in process, a fleet
// of fake machines and rackflow's worker as a child process, runs one
// ProvisionHost alone, then N at once (-hosts), checks every outcome, reads
// every run's history, and prints one table with a column per engine:
// completed runs per minute, activity latency from the histories, history
// sizes, the most calls any BMC served at once against the worker's
// per-BMC limit, and the memory of the worker, the server and PostgreSQL.
// It fails if a run fails, if the worker's peak RSS passes its goal, or if
// any BMC saw more calls at once than the limit.
//
// A fake machine has its own loopback address (127.0.x.y: the pxe service
// refuses one IP for two MACs); its BMC answers a small JSON-over-HTTP
// protocol on a loopback address of its own, or shared by -hosts-per-bmc
// machines as a blade chassis' manager is, and takes -bmc-latency per
// call. The machine boots like a real host: on power-on
// with PXE it fetches its iPXE script, the one-time host key and the
// authorized keys from the pxe service over HTTP and starts an in-process
// SSH server (testsuite/sshd.Fake) with them; from disk, it starts the
// installed OS's SSH server only if the disk file holds the image. Commands
// run with /bin/sh on this machine (dd onto the disk file, a fake
// chef-client).
//
// The worker child wires the real activity structs as worker/ does, with
// two differences: BMCs are reached through the fake protocol rather than
// bmclib, and chef's directory is per host (real hosts each have their own
// /etc/chef; these share one filesystem). Everything stays on loopback.
// It is not a test of correctness under faults; see testsuite/integration.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/procmem"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		if err := runWorker(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fleetbench worker:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	var engines string
	flag.IntVar(&cfg.hosts, "hosts", 200, "concurrent ProvisionHost runs")
	flag.StringVar(&engines, "engines", "dev,cluster", "Temporal engines to run the fleet on, in order: dev (the dev server), cluster (testsuite/cluster)")
	flag.IntVar(&cfg.hostsPerBMC, "hosts-per-bmc", 1, "machines behind one BMC address (a chassis manager); the solo run's machine has its own")
	flag.IntVar(&cfg.bmcLimit, "bmc-concurrency", 1, "the worker's calls per BMC at once (rackflow-worker --bmc-concurrency)")
	flag.DurationVar(&cfg.bmcLatency, "bmc-latency", 50*time.Millisecond, "how long the fake BMC takes to answer each call")
	flag.IntVar(&cfg.imageKiB, "image-kib", 2048, "image size in KiB (the same image for every host)")
	flag.IntVar(&cfg.ws.ActSlots, "act-slots", 0, "worker MaxConcurrentActivityExecutionSize (0: SDK default 1000)")
	flag.IntVar(&cfg.ws.WFTSlots, "wft-slots", 0, "worker MaxConcurrentWorkflowTaskExecutionSize (0: SDK default 1000)")
	flag.IntVar(&cfg.ws.ActPollers, "act-pollers", 0, "worker MaxConcurrentActivityTaskPollers (0: SDK default 2)")
	flag.IntVar(&cfg.ws.WFTPollers, "wft-pollers", 0, "worker MaxConcurrentWorkflowTaskPollers (0: SDK default 2)")
	flag.IntVar(&cfg.maxWorkerMiB, "max-worker-mib", 300, "fail when the worker's peak RSS exceeds this")
	flag.DurationVar(&cfg.timeout, "timeout", 30*time.Minute, "give up on the fleet after this long, per engine")
	flag.StringVar(&cfg.dir, "dir", os.TempDir(), "parent of the bench's temporary directory")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (logs, disks) for a look")
	flag.Parse()
	if cfg.hosts < 1 || cfg.hosts > 20000 || cfg.imageKiB < 1 || cfg.hostsPerBMC < 1 || cfg.bmcLimit < 1 {
		fmt.Fprintln(os.Stderr, "fleetbench: -hosts must be 1-20000; -image-kib, -hosts-per-bmc and -bmc-concurrency positive")
		os.Exit(2)
	}
	for _, e := range strings.Split(engines, ",") {
		if _, ok := engineNames[e]; !ok {
			fmt.Fprintf(os.Stderr, "fleetbench: unknown engine %q in -engines (dev, cluster)\n", e)
			os.Exit(2)
		}
		cfg.engines = append(cfg.engines, e)
	}
	ok, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// engineNames are the -engines values and their column titles.
var engineNames = map[string]string{"dev": "dev server", "cluster": "cluster"}

type config struct {
	hosts, imageKiB, maxWorkerMiB int
	engines                       []string
	hostsPerBMC, bmcLimit         int
	bmcLatency                    time.Duration
	ws                            workerSettings
	timeout                       time.Duration
	dir                           string
	keep                          bool
}

// Options of every run: short deadlines so a stuck run shows within the
// bench, a 1s first back-off.
var runOptions = api.ProvisionOptions{
	LiveSSHDeadline:   "3m",
	OSSSHDeadline:     "3m",
	AttentionDeadline: "2m",
	ImageHeartbeat:    "1m",
	StepAttempts:      3,
	RetryInterval:     "1s",
}

const pxeToken = "fleetbench-pxe-token"

type bench struct {
	cfg       config
	engine    string
	dir       string
	fleet     *fleet
	machines  []*machine
	bmcs      []*bmcEndpoint
	imagePath string
	imageSize int64
	imageSHA  string
	chefDir   string
	store     *pxe.Store
	server    *devserver.Server
	worker    *exec.Cmd
	workerLog string
	client    client.Client
}

// run runs the fleet on each engine in turn, each with fresh machines, pxe
// store and worker, then prints one table.
func run(cfg config) (bool, error) {
	dir, err := os.MkdirTemp(cfg.dir, "rackflow-fleetbench-")
	if err != nil {
		return false, err
	}
	defer func() {
		if cfg.keep {
			fmt.Fprintln(os.Stderr, "fleetbench: kept", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	// The cluster's PostgreSQL runs as the postgres user, which must
	// reach its data directory below this one.
	if err := os.Chmod(dir, 0o755); err != nil {
		return false, err
	}
	var all []results
	okAll := true
	for _, e := range cfg.engines {
		r, ok, err := runEngine(cfg, e, filepath.Join(dir, e))
		if err != nil {
			return false, fmt.Errorf("%s: %w", engineNames[e], err)
		}
		all = append(all, r)
		okAll = okAll && ok
	}
	printTable(os.Stdout, all, cfg)
	for _, r := range all {
		okAll = reportFailures(r, cfg) && okAll
	}
	return okAll, nil
}

func runEngine(cfg config, engine, dir string) (results, bool, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return results{}, false, err
	}
	b := &bench{cfg: cfg, engine: engine, dir: dir}
	defer b.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The bench process's peak RSS, per engine: reset it (Linux ≥ 4.0).
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	began := time.Now()
	if err := b.setUp(ctx); err != nil {
		return results{}, false, err
	}
	fmt.Fprintf(os.Stderr, "fleetbench: %s: set up in %s\n", engineNames[engine], time.Since(began).Round(100*time.Millisecond))
	return b.measure(ctx)
}

func (b *bench) setUp(ctx context.Context) error {
	b.imageSize = int64(b.cfg.imageKiB) << 10
	if err := os.Mkdir(filepath.Join(b.dir, "images"), 0o755); err != nil {
		return err
	}
	b.imagePath = filepath.Join(b.dir, "images", "image.raw")
	var err error
	if b.imageSHA, err = writeImage(b.imagePath, b.imageSize); err != nil {
		return err
	}
	keys := filepath.Join(b.dir, "keys")
	binDir := filepath.Join(b.dir, "bin")
	b.chefDir = filepath.Join(b.dir, "chef")
	for _, d := range []string{keys, binDir, b.chefDir, filepath.Join(b.dir, "disks")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	workerKey, workerPEM, err := sshd.NewKey()
	if err != nil {
		return err
	}
	_, validatorPEM, err := sshd.NewKey()
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"worker_ed25519": workerPEM, "chef-validator.pem": validatorPEM} {
		if err := os.WriteFile(filepath.Join(keys, name), data, 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(binDir, "chef-client"), []byte(chefClient), 0o755); err != nil {
		return err
	}

	// The pxe service, in process, persisting to a file as in production.
	b.store, err = pxe.OpenStore(pxe.StoreConfig{Path: filepath.Join(b.dir, "leases.json")})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pxeURL := "http://" + ln.Addr().String()
	apiSrv := &pxe.APIServer{Listener: ln, Token: pxeToken, Store: b.store, PublicURL: pxeURL,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { _ = apiSrv.Serve(ctx) }()

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	b.fleet = &fleet{
		pxeURL: pxeURL, livePort: ports[0], osPort: ports[1],
		workerPub: workerKey.PublicKey(), imageSize: b.imageSize, imageSHA: b.imageSHA,
		env: []string{"PATH=" + binDir + ":" + os.Getenv("PATH")},
	}

	// The machines: index 0 is the one that runs alone.
	inv := api.Inventory{}
	// Credentials are bound to where they go, as in production: each
	// BMC's to its address, the validator key to the chef server.
	sec := map[string]map[string]any{
		"ssh/provision":  {"private_key_file": filepath.Join(keys, "worker_ed25519")},
		"chef/validator": {"private_key_file": filepath.Join(keys, "chef-validator.pem"), "endpoints": []string{"https://chef.fleetbench.invalid"}},
	}
	for i := 0; i <= b.cfg.hosts; i++ {
		name := fmt.Sprintf("fleet-%04d", i)
		if i == 0 {
			name = "fleet-solo"
		}
		_, osPEM, err := sshd.NewKey()
		if err != nil {
			return err
		}
		osSigner, err := ssh.ParsePrivateKey(osPEM)
		if err != nil {
			return err
		}
		// The solo machine has a BMC of its own; the fleet's share theirs
		// hostsPerBMC at a time.
		bi := 0
		if i > 0 {
			bi = 1 + (i-1)/b.cfg.hostsPerBMC
		}
		if bi == len(b.bmcs) {
			addr := net.JoinHostPort(fmt.Sprintf("127.0.%d.%d", 128+bi/250, 1+bi%250), strconv.Itoa(ports[2]))
			b.bmcs = append(b.bmcs, newBMCEndpoint(addr, b.cfg.bmcLatency))
		}
		bmcEP := b.bmcs[bi]
		m := &machine{
			name:    name,
			mac:     fmt.Sprintf("52:54:00:%02x:%02x:%02x", (i>>16)&0xff, (i>>8)&0xff, i&0xff),
			ip:      fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250),
			bmcAddr: bmcEP.addr,
			bmcUser: "admin-" + name,
			bmcPass: randomHex(12),
			disk:    filepath.Join(b.dir, "disks", name+".img"),
			chefDir: filepath.Join(b.chefDir, name),
			osKey:   osPEM,
			osKeyPK: osSigner.PublicKey(),
			fleet:   b.fleet,
			bootDev: "disk",
		}
		if err := makeDisk(m.disk, b.imageSize+1<<20); err != nil {
			return err
		}
		bmcEP.add(m)
		b.machines = append(b.machines, m)
		bmcHost, bmcPort, _ := net.SplitHostPort(m.bmcAddr)
		port, _ := strconv.Atoi(bmcPort)
		inv.Hosts = append(inv.Hosts, api.Host{
			Name:    name,
			BMC:     api.BMC{Address: bmcHost, Port: port, Provider: "redfish", Credential: "bmc/" + name},
			MAC:     m.mac,
			Network: api.Network{IP: m.ip, Netmask: "255.0.0.0"},
			Disk:    m.disk,
			Image:   api.Image{URL: b.imagePath, Size: b.imageSize, SHA256: b.imageSHA},
			SSH:     api.SSH{User: "root", Port: b.fleet.osPort, LivePort: b.fleet.livePort, Credential: "ssh/provision"},
			Chef: &api.Chef{
				ServerURL:           "https://chef.fleetbench.invalid/organizations/bench",
				RunList:             []string{"role[base]"},
				ValidatorCredential: "chef/validator",
				Command:             "chef-client -j " + filepath.Join(m.chefDir, "first-boot.json"),
			},
		})
		sec["bmc/"+name] = map[string]any{"username": m.bmcUser, "password": m.bmcPass, "endpoints": []string{bmcHost}}
	}
	for _, e := range b.bmcs {
		if err := e.serve(); err != nil {
			return err
		}
	}
	invPath := filepath.Join(b.dir, "inventory.yaml")
	if err := writeYAML(invPath, inv, 0o644); err != nil {
		return err
	}
	secPath := filepath.Join(b.dir, "secrets.yaml")
	if err := writeYAML(secPath, map[string]any{"secrets": sec}, 0o600); err != nil {
		return err
	}

	b.server, err = devserver.Start(ctx, devserver.Options{
		DBFile: filepath.Join(b.dir, "temporal.db"), LogFile: filepath.Join(b.dir, "temporal.log"),
		Cluster: b.engine == "cluster", ClusterDir: filepath.Join(b.dir, "cluster"),
	})
	if err != nil {
		return err
	}
	b.client, err = client.Dial(client.Options{HostPort: b.server.Addr(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))})
	if err != nil {
		return err
	}
	return b.startWorker(ctx, invPath, secPath, pxeURL)
}

func (b *bench) startWorker(ctx context.Context, invPath, secPath, pxeURL string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{"worker", "-address", b.server.Addr(), "-inventory", invPath, "-secrets", secPath,
		"-pxe-url", pxeURL, "-chef-dir", b.chefDir, "-bmc-concurrency", strconv.Itoa(b.cfg.bmcLimit), "-image-dir", filepath.Dir(b.imagePath)}, b.cfg.ws.args()...)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "RACKFLOW_PXE_TOKEN="+pxeToken)
	b.workerLog = filepath.Join(b.dir, "worker.log")
	logf, err := os.Create(b.workerLog)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	b.worker = cmd
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("worker did not start: %v; log: %s", err, tailFile(b.workerLog, 20))
		}
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("worker not ready after 60s; log: %s", tailFile(b.workerLog, 20))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopWorker stops the worker and returns its peak RSS in bytes and the
// CPU time it used.
func (b *bench) stopWorker() (int64, time.Duration, error) {
	if b.worker == nil {
		return 0, 0, errors.New("worker not running")
	}
	_ = syscall.Kill(b.worker.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = b.worker.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-b.worker.Process.Pid, syscall.SIGKILL)
		<-done
	}
	st := b.worker.ProcessState
	b.worker = nil
	ru, ok := st.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0, errors.New("no rusage for the worker")
	}
	return ru.Maxrss << 10, cpu(ru), nil
}

func (b *bench) close() {
	if b.worker != nil {
		_ = syscall.Kill(-b.worker.Process.Pid, syscall.SIGKILL)
		_ = b.worker.Wait()
	}
	if b.client != nil {
		b.client.Close()
	}
	if b.server != nil {
		b.server.Stop()
	}
	var wg sync.WaitGroup
	for _, m := range b.machines {
		wg.Add(1)
		go func() { defer wg.Done(); m.shutdown() }()
	}
	for _, e := range b.bmcs {
		wg.Add(1)
		go func() { defer wg.Done(); e.shutdown() }()
	}
	wg.Wait()
	if b.store != nil {
		_ = b.store.Close()
	}
}

// outcome is one run's result as checked.
type outcome struct {
	host     string
	err      error
	duration time.Duration
}

// start starts m's run. A thousand starts at once outlast the SDK's 10s
// deadline on a busy 2-core server (measured on both engines), so a start
// that timed out is tried again, up to 5 times; one that went through
// although its answer was lost is found by its workflow ID.
func (b *bench) start(ctx context.Context, m *machine) (client.WorkflowRun, error) {
	var err error
	for try := 0; try < 5; try++ {
		var run client.WorkflowRun
		run, err = b.startOnce(ctx, m)
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		var deadline *serviceerror.DeadlineExceeded
		timedOut := errors.As(err, &deadline) || errors.Is(err, context.DeadlineExceeded)
		switch {
		case err == nil:
			return run, nil
		case try > 0 && errors.As(err, &started):
			return b.client.GetWorkflow(ctx, api.ProvisionWorkflowID(m.name), ""), nil
		case !timedOut || ctx.Err() != nil:
			return nil, err
		}
	}
	return nil, err
}

func (b *bench) startOnce(ctx context.Context, m *machine) (client.WorkflowRun, error) {
	return b.client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       api.ProvisionWorkflowID(m.name),
		TaskQueue:                                api.DefaultTaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, api.WorkflowProvisionHost, api.ProvisionInput{Host: m.name, Options: runOptions})
}

// provision starts one run, waits for it and checks what a user would:
// the result, the disk, the host keys, chef's converge, the lease and the
// power.
func (b *bench) provision(ctx context.Context, m *machine, started time.Time) outcome {
	o := outcome{host: m.name}
	run, err := b.start(ctx, m)
	if err != nil {
		o.err = fmt.Errorf("start: %w", err)
		return o
	}
	var res api.ProvisionResult
	if err := run.Get(ctx, &res); err != nil {
		o.err = fmt.Errorf("run: %w", err)
		o.duration = time.Since(started)
		return o
	}
	o.duration = time.Since(started)
	o.err = b.check(ctx, m, res)
	return o
}

func (b *bench) check(ctx context.Context, m *machine, res api.ProvisionResult) error {
	var errs []string
	if res.ImageDigest != b.imageSHA {
		errs = append(errs, fmt.Sprintf("result digest %s, want %s", res.ImageDigest, b.imageSHA))
	}
	if got, err := diskDigest(m.disk, b.imageSize); err != nil || got != b.imageSHA {
		errs = append(errs, fmt.Sprintf("disk hashes to %s (%v), want the image's %s", got, err, b.imageSHA))
	}
	if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(m.osKeyPK))); res.OSHostKey != want {
		errs = append(errs, fmt.Sprintf("recorded OS host key %q, want %q", res.OSHostKey, want))
	}
	m.mu.Lock()
	liveKey, power, running, bootErrs := m.liveKey, m.power, m.running != nil, append([]string(nil), m.bootErrs...)
	m.mu.Unlock()
	if liveKey == nil || res.LiveHostKey != ssh.FingerprintSHA256(liveKey) {
		errs = append(errs, fmt.Sprintf("live host key in result %q is not the key the live system fetched", res.LiveHostKey))
	}
	if !power || !running {
		errs = append(errs, fmt.Sprintf("host not up after provisioning (power %v, OS running %v)", power, running))
	}
	if conv, err := os.ReadFile(filepath.Join(m.chefDir, "converged")); err != nil || strings.TrimSpace(string(conv)) != m.name {
		errs = append(errs, fmt.Sprintf("chef did not converge on %s: %v", m.name, err))
	}
	if rb, err := os.ReadFile(filepath.Join(m.chefDir, "client.rb")); err != nil || !strings.Contains(string(rb), "node_name '"+m.name+"'") {
		errs = append(errs, "client.rb missing or for another node")
	}
	if l, ok, err := b.store.Lookup(ctx, m.mac); err != nil || !ok || l.Profile != lease.ProfileDisk {
		errs = append(errs, fmt.Sprintf("lease after provisioning %+v (found %v, %v), want profile disk", l.Profile, ok, err))
	}
	if len(res.Steps) != len(api.ProvisionSteps) {
		errs = append(errs, fmt.Sprintf("%d steps in result", len(res.Steps)))
	}
	for _, s := range res.Steps {
		if s.State != "done" {
			errs = append(errs, fmt.Sprintf("step %s %s", s.Name, s.State))
		}
	}
	if len(bootErrs) > 0 {
		// Not a failure by itself: a retried step boots again.
		fmt.Fprintf(os.Stderr, "fleetbench: %s had boot errors (recovered): %s\n", m.name, strings.Join(bootErrs, "; "))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

type results struct {
	engine               string
	hosts, ok            int
	solo, wall           time.Duration
	p50, p95, max        time.Duration
	hist                 histStats
	bmc                  bmcLoad
	workerRSS, serverRSS int64
	serverProcs          int
	pgPSS                int64 // 0 without PostgreSQL
	benchRSS             int64
	workerCPU, serverCPU time.Duration
	benchCPU, hostCmdCPU time.Duration
	failures             []outcome
	workerLogTail        string
	settings             workerSettings
	imageSize            int64
}

// serverPids are the Temporal server's processes: the dev server, or the
// cluster's two nodes.
func (b *bench) serverPids() []int {
	if c := b.server.Cluster(); c != nil {
		return []int{c.Frontend.Pid(), c.History.Pid()}
	}
	return []int{b.server.Pid()}
}

// samplePostgres records the peak PSS of the cluster's PostgreSQL (the
// postmaster and its backends, which come and go) once a second until
// stop is closed; 0 for the dev server.
func (b *bench) samplePostgres(stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	c := b.server.Cluster()
	if c == nil {
		out <- 0
		return out
	}
	pid := c.Postgres().Pid()
	go func() {
		var peak int64
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			peak = max(peak, procmem.TreePSS(pid))
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func (b *bench) measure(ctx context.Context) (results, bool, error) {
	name := engineNames[b.engine]
	var self0, kids0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids0)
	stopSampling := make(chan struct{})
	pgPeak := b.samplePostgres(stopSampling)
	defer func() {
		select {
		case <-stopSampling:
		default:
			close(stopSampling)
		}
	}()

	fmt.Fprintf(os.Stderr, "fleetbench: %s: %d hosts behind %d BMCs ready, server at %s; one run alone first\n", name, b.cfg.hosts, len(b.bmcs), b.server.Addr())
	solo := b.provision(ctx, b.machines[0], time.Now())
	if solo.err != nil {
		return results{}, false, fmt.Errorf("the single run failed: %v; worker log: %s", solo.err, tailFile(b.workerLog, 20))
	}
	fmt.Fprintf(os.Stderr, "fleetbench: %s: one run took %s; now %d at once\n", name, solo.duration.Round(time.Millisecond), b.cfg.hosts)

	fctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	fleetMs := b.machines[1:]
	outs := make([]outcome, len(fleetMs))
	var done atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "fleetbench: %s: %s: %d/%d done\n", name, time.Since(begin).Round(time.Second), done.Load(), len(fleetMs))
			}
		}
	}()
	for i, m := range fleetMs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = b.provision(fctx, m, begin)
			done.Add(1)
		}()
	}
	wg.Wait()
	wall := time.Since(begin)
	close(stopProgress)
	fmt.Fprintf(os.Stderr, "fleetbench: %s: fleet done in %s; reading %d histories\n", name, wall.Round(time.Second), len(fleetMs))

	r := results{engine: b.engine, hosts: len(fleetMs), solo: solo.duration, wall: wall, settings: b.cfg.ws.effective(), imageSize: b.imageSize}
	var durs []time.Duration
	for _, o := range outs {
		if o.err == nil {
			r.ok++
			durs = append(durs, o.duration)
		} else {
			r.failures = append(r.failures, o)
		}
	}
	r.p50, r.p95, r.max = quantile(durs, 0.5), quantile(durs, 0.95), quantile(durs, 1)
	r.bmc = measureBMCs(b.bmcs, b.cfg.bmcLimit)
	for _, pid := range b.serverPids() {
		r.serverRSS += procmem.PeakRSS(pid)
		r.serverCPU += procmem.CPU(pid)
		r.serverProcs++
	}
	close(stopSampling)
	r.pgPSS = <-pgPeak
	r.benchRSS = procmem.PeakRSS(os.Getpid())

	hbegin := time.Now()
	var err error
	if r.hist, err = b.histories(ctx, fleetMs); err != nil {
		// The runs were measured; a history that cannot be read leaves
		// its figures out rather than the whole table.
		fmt.Fprintf(os.Stderr, "fleetbench: %s: reading histories: %v\n", name, err)
	}
	fmt.Fprintf(os.Stderr, "fleetbench: %s: read %d histories in %s\n", name, len(r.hist.events), time.Since(hbegin).Round(100*time.Millisecond))

	if r.workerRSS, r.workerCPU, err = b.stopWorker(); err != nil {
		return r, false, err
	}
	r.workerLogTail = tailFile(b.workerLog, 20)
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	// Children reaped during this engine's part: the worker and every
	// command the fake hosts ran (sh, dd, sha256sum, chef-client).
	r.benchCPU = cpu(&self) - cpu(&self0)
	r.hostCmdCPU = cpu(&kids) - cpu(&kids0) - r.workerCPU
	ok := r.ok == r.hosts && r.workerRSS <= int64(b.cfg.maxWorkerMiB)<<20 && len(r.bmc.over) == 0
	return r, ok, nil
}

// reportFailures says on stderr what failed on r's engine, loudly, and
// reports whether nothing did.
func reportFailures(r results, cfg config) bool {
	name := engineNames[r.engine]
	ok := true
	if r.ok != r.hosts {
		ok = false
		fmt.Fprintf(os.Stderr, "fleetbench: %s: %d of %d runs failed; first failures:\n", name, len(r.failures), r.hosts)
		for i, f := range r.failures {
			if i == 5 {
				break
			}
			fmt.Fprintf(os.Stderr, "  %s: %v\n", f.host, f.err)
		}
		fmt.Fprintf(os.Stderr, "worker log tail:\n%s\n", r.workerLogTail)
	}
	if r.workerRSS > int64(cfg.maxWorkerMiB)<<20 {
		ok = false
		fmt.Fprintf(os.Stderr, "fleetbench: %s: worker peak RSS %s is over the %d MiB goal\n", name, mib(r.workerRSS), cfg.maxWorkerMiB)
	}
	if len(r.bmc.over) > 0 {
		ok = false
		fmt.Fprintf(os.Stderr, "fleetbench: %s: FAIL: the per-BMC limit did not hold: %d of %d BMCs served more than %d calls at once:\n",
			name, len(r.bmc.over), r.bmc.bmcs, cfg.bmcLimit)
		for _, o := range r.bmc.over {
			fmt.Fprintln(os.Stderr, "  "+o)
		}
	}
	return ok
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func cpu(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The fake chef-client checks what rackflow's bootstrap wrote next to the
// -j file, as the real one would fail without it, and records the converge
// for the bench to check.
const chefClient = `#!/bin/sh
[ "$1" = -j ] && [ -n "$2" ] || { echo "usage: chef-client -j FILE" >&2; exit 64; }
dir=$(dirname "$2")
for f in client.rb validation.pem first-boot.json; do
  [ -s "$dir/$f" ] || { echo "ERROR: $dir/$f missing" >&2; exit 2; }
done
grep -q 'BEGIN' "$dir/validation.pem" || { echo "ERROR: validation.pem is no key" >&2; exit 3; }
node=$(sed -n "s/^node_name '\(.*\)'$/\1/p" "$dir/client.rb")
echo "Starting Chef Infra Client on $node"
echo "Chef Infra Client finished, 1/1 resources updated"
echo "$node" > "$dir/converged"
`

func writeImage(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func makeDisk(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

func writeYAML(path string, v any, mode os.FileMode) error {
	data, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePorts returns n distinct free ports of 127.0.0.1. The machines bind
// them on their own loopback addresses, where nothing else listens.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
