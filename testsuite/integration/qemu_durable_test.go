package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"gopkg.in/yaml.v3"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/histories"
	"github.com/rackflow/rackflow/testsuite/qemu"
)

// TestQEMUProvisionSurvivesWorkerKill provisions the QEMU machine with the
// real thing: the temporal dev server and rackflow's worker as its own
// process, configured from an inventory and a secrets file as in
// production. The worker reaches the lease API and the machine only
// through the boot network's doors (a forwarded port, the jump host). In
// the middle of the image stream the worker is killed with SIGKILL; a new
// one resumes the stream where the last heartbeat left it, and the run
// ends with the installed OS up and its host key recorded.
func TestQEMUProvisionSurvivesWorkerKill(t *testing.T) {
	ctx := qemu.RequireLab(t)
	r := newProvisionRig(t, ctx, rigOptions{})
	dir := r.l.Dir

	// The lease API, on the host's loopback, forwarded into the server
	// namespace.
	pxeURL := forward(t, r.l, qemu.LabAPIAddr)

	inv, err := yaml.Marshal(api.Inventory{Hosts: []api.Host{r.host}})
	if err != nil {
		t.Fatal(err)
	}
	invPath := filepath.Join(dir, "inventory.yaml")
	keyPath := filepath.Join(dir, "provision_key")
	validatorPath := filepath.Join(dir, "validator.pem")
	secPath := filepath.Join(dir, "secrets.yaml")
	bmcSec := r.sec["bmc/vm1"]
	for path, data := range map[string]string{
		invPath:       string(inv),
		keyPath:       string(r.keyPEM),
		validatorPath: r.sec["chef/validator"].PrivateKey,
		secPath: fmt.Sprintf("secrets:\n  bmc/vm1: {username: %s, password: %s, endpoints: [127.0.0.1]}\n  ssh/provision: {private_key_file: %s}\n  chef/validator: {private_key_file: %s, endpoints: [\"https://chef.lab.invalid\"]}\n",
			bmcSec.Username, bmcSec.Password, keyPath, validatorPath),
	} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	server := devserver.StartT(t, devserver.Options{LogFile: filepath.Join(dir, "temporal.log")})
	c, err := client.Dial(client.Options{HostPort: server.Addr(), Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The worker as installed: its binary with the disk helper beside it.
	worker := &workerProc{t: t, log: filepath.Join(dir, "worker.log"), env: []string{
		"TEMPORAL_ADDRESS=" + server.Addr(),
		"RACKFLOW_INVENTORY=" + invPath,
		"RACKFLOW_SECRETS=" + secPath,
		"RACKFLOW_IMAGE_DIR=" + filepath.Dir(r.host.Image.URL),
		"RACKFLOW_CONSOLE_DIR=" + r.consoleDir,
		"RACKFLOW_PXE_URL=" + pxeURL,
		"RACKFLOW_PXE_TOKEN=" + r.l.Token,
		"RACKFLOW_METRICS_ADDR=",
		"RACKFLOW_IMAGE_SEGMENT_MIB=4",
		// Paced so the stream outlasts the SDK's heartbeat throttling (0.8 of
		// the 5s heartbeat timeout) and the kill lands in its middle.
		"RACKFLOW_IMAGE_MAX_MBPS=3",
		"RACKFLOW_LOG_LEVEL=debug",
	}}
	worker.start()
	t.Cleanup(func() {
		worker.kill()
		if t.Failed() {
			b, _ := os.ReadFile(worker.log)
			t.Logf("worker log (tail):\n%s", tail(string(b), 40))
		}
	})

	start := time.Now()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: api.ProvisionWorkflowID(r.host.Name), TaskQueue: api.DefaultTaskQueue},
		api.WorkflowProvisionHost, api.ProvisionInput{Host: r.host.Name, Options: api.ProvisionOptions{
			LiveSSHDeadline: "4m", OSSSHDeadline: "4m", ImageHeartbeat: "5s", StepAttempts: 3, RetryInterval: "1s"}})
	if err != nil {
		t.Fatal(err)
	}

	// Kill the worker once the server holds a heartbeat from inside the
	// stream.
	seen := waitImageProgress(t, c, run.GetID(), 5*time.Minute)
	worker.kill()
	t.Logf("worker killed with the stream at %d of %d bytes, %s after the start", seen.Offset, seen.Total, time.Since(start).Round(time.Second))
	worker.start()

	var res api.ProvisionResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("ProvisionHost: %v", err)
	}
	t.Logf("provisioned %s in %s on the dev server; BMC power hooks %q", res.Host, time.Since(start).Round(time.Second), r.bmc.Hooks())
	if res.ImageDigest != r.host.Image.SHA256 {
		t.Errorf("image digest %s, want %s", res.ImageDigest, r.host.Image.SHA256)
	}
	if want := r.osFingerprint(); want == "" || res.OSHostKeyFP != want {
		t.Errorf("recorded OS host key %q; the installed OS's console printed %q", res.OSHostKeyFP, want)
	}
	if got := r.converged(t, ctx, res.OSHostKey); !strings.Contains(got, "role[db]") {
		t.Errorf("the installed OS shows no chef run with the run list: %q", got)
	}
	// The retried stream resumed past zero: from its result in history.
	h, err := histories.Fetch(ctx, c, run.GetID(), run.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	wr, attempt, err := histories.WriteImageResult(h)
	if err != nil {
		t.Fatal(err)
	}
	if attempt < 2 || wr.ResumedFrom == 0 || wr.ResumedFrom > seen.Offset+4<<20 || !wr.Helper {
		t.Errorf("WriteImage finished on attempt %d resuming from %d (progress seen before the kill: %d), helper %v: want a retry that resumed near it",
			attempt, wr.ResumedFrom, seen.Offset, wr.Helper)
	}
	t.Logf("WriteImage attempt %d resumed from %d and wrote %d bytes at %.1f MB/s", attempt, wr.ResumedFrom, wr.Bytes, wr.MBps)

	// Credentials went by reference only: no secret in any payload.
	text, err := histories.Text(h)
	if err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{"BMC password": bmcSec.Password, "SSH private key": strings.Split(string(r.keyPEM), "\n")[1],
		"chef validator key": strings.Split(r.sec["chef/validator"].PrivateKey, "\n")[1]} {
		if strings.Contains(text, secret) {
			t.Errorf("the run's history holds the %s", what)
		}
	}
}

// forward serves a loopback port of the host that connects, from the
// server namespace, to addr there; it returns the port's http:// URL.
func forward(t *testing.T, l *qemu.Lab, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := l.Dial(context.Background(), "tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}
