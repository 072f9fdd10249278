package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/devserver"
	"github.com/rackflow/rackflow/testsuite/lab"
	"github.com/rackflow/rackflow/testsuite/redfishfake"
)

// newRedfishStack is newStack with a Redfish BMC: testsuite/redfishfake,
// its certificate pinned in the inventory, its power changes running the
// lab machine's hook.
func newRedfishStack(t *testing.T, imageSize int64) (*stack, *redfishfake.Fake) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: real dev server, Redfish fake and sshd")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	s := &stack{}

	store, err := pxe.OpenStore(pxe.StoreConfig{Path: filepath.Join(dir, "leases.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s.store = store
	ln := freeListener(t)
	s.pxeURL = "http://" + ln.Addr().String()
	const token = "integration-pxe-token"
	apiSrv := &pxe.APIServer{Listener: ln, Token: token, Store: store, PublicURL: s.pxeURL}
	go func() { _ = apiSrv.Serve(ctx) }()

	labDir := filepath.Join(dir, "lab")
	if err := os.MkdirAll(labDir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := lab.Prepare(lab.Options{Dir: labDir, PXEURL: s.pxeURL, ImageSize: imageSize})
	if err != nil {
		t.Fatal(err)
	}
	s.lab = l
	t.Cleanup(l.StopMachine)
	hookLog := filepath.Join(dir, "hook-errors.log")
	bmc := redfishfake.Start(t, redfishfake.Options{
		Username: l.BMCUser, Password: l.BMCPassword,
		// A real BMC powers the machine; here the lab's hook boots it.
		OnPower: redfishPower(l.HookPath, hookLog),
	})
	if err := l.SetRedfishBMC(bmc.Port(), bmc.PinSHA256()); err != nil {
		t.Fatal(err)
	}

	s.server = devserver.StartT(t, devserver.Options{LogFile: filepath.Join(dir, "temporal.log")})
	c, err := client.Dial(client.Options{HostPort: s.server.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s.client = c

	s.worker = &workerProc{t: t, log: filepath.Join(dir, "worker.log"), env: []string{
		"TEMPORAL_ADDRESS=" + s.server.Addr(),
		"RACKFLOW_INVENTORY=" + l.InventoryPath,
		"RACKFLOW_SECRETS=" + l.SecretsPath,
		"RACKFLOW_IMAGE_DIR=" + l.ImageDir,
		"RACKFLOW_PXE_URL=" + s.pxeURL,
		"RACKFLOW_PXE_TOKEN=" + token,
		"RACKFLOW_CHEF_DIR=" + l.ChefDir,
		"RACKFLOW_METRICS_ADDR=",
		"RACKFLOW_IMAGE_SEGMENT_MIB=16",
		"RACKFLOW_IMAGE_REPORT_EVERY=300ms",
		"RACKFLOW_LOG_LEVEL=debug",
	}}
	s.worker.start()
	t.Cleanup(s.worker.kill)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{s.worker.log, l.MachineLog, hookLog} {
				b, _ := os.ReadFile(f)
				t.Logf("--- %s (tail):\n%s", f, tail(string(b), 60))
			}
		}
	})
	return s, bmc
}

// redfishPower runs a power hook (lab.RunHook) for each power change of
// the fake BMC: on into "pxe" when its boot override says Pxe, else into
// "disk"; or off. A hook's failure is appended to errLog.
func redfishPower(hook, errLog string) func(redfishfake.PowerEvent) {
	return func(ev redfishfake.PowerEvent) {
		dev := "disk"
		if ev.BootTarget == "Pxe" {
			dev = "pxe"
		}
		if err := lab.RunHook(hook, ev.On, dev); err != nil {
			appendFile(errLog, err.Error()+"\n")
		}
	}
}

// checkRedfishBoots checks what a BMC was told by one provisioning run of
// a UEFI host, in order: a one-time PXE boot before the power-on, the
// disk (persistently) before the restart into it; that the machine booted
// Pxe then Hdd, in its UEFI mode; and that it is left on with the disk.
func checkRedfishBoots(t *testing.T, bmc *redfishfake.Fake) {
	t.Helper()
	if st := bmc.State(); st.PowerState != "On" || st.BootSourceOverrideTarget != "Hdd" || st.BootSourceOverrideEnabled != "Continuous" {
		t.Errorf("BMC after provisioning: %+v, want on with Hdd/Continuous", st)
	}
	writes := redfishWrites(bmc)
	want := []string{"boot Pxe/Once", "reset On", "boot Hdd/Continuous", "reset ForceRestart"}
	if fmt.Sprint(writes) != fmt.Sprint(want) {
		t.Errorf("BMC writes %q, want %q", writes, want)
	}
	var boots []string
	for _, ev := range bmc.PowerEvents() {
		if ev.On {
			boots = append(boots, ev.BootTarget+"/"+ev.BootMode)
		}
	}
	if fmt.Sprint(boots) != fmt.Sprint([]string{"Pxe/UEFI", "Hdd/UEFI"}) {
		t.Errorf("the machine booted %q, want Pxe then Hdd, in its UEFI mode", boots)
	}
}

func appendFile(path, text string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(text)
}

// redfishWrites lists the successful writes the BMC took, in order:
// "boot Pxe/Once", "reset On"...
func redfishWrites(f *redfishfake.Fake) []string {
	var out []string
	for _, r := range f.Requests() {
		if r.Status >= 300 {
			continue
		}
		switch {
		case r.Method == "PATCH" && r.Path == redfishfake.SystemPath:
			var b struct{ Boot map[string]string }
			_ = json.Unmarshal([]byte(r.Body), &b)
			out = append(out, "boot "+b.Boot["BootSourceOverrideTarget"]+"/"+b.Boot["BootSourceOverrideEnabled"])
		case r.Method == "POST" && r.Path == redfishfake.ResetPath:
			var b struct{ ResetType string }
			_ = json.Unmarshal([]byte(r.Body), &b)
			out = append(out, "reset "+b.ResetType)
		}
	}
	return out
}

// TestProvisionOverRedfish runs ProvisionHost for a host whose BMC speaks
// Redfish: the worker pins the BMC's certificate, sets a one-time PXE
// boot and powers the host on, writes the image, sets the disk as the
// boot device and restarts the host, which boots the image and runs chef.
func TestProvisionOverRedfish(t *testing.T) {
	s, bmc := newRedfishStack(t, 64<<20)
	run := s.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res api.ProvisionResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("provisioning failed: %v", err)
	}

	digest, err := s.lab.DiskDigest()
	if err != nil {
		t.Fatal(err)
	}
	if digest != s.lab.ImageSHA256 || res.ImageDigest != s.lab.ImageSHA256 {
		t.Errorf("disk digest %s, result digest %s, want the image's %s", digest, res.ImageDigest, s.lab.ImageSHA256)
	}
	if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.lab.OSHostKey))); res.OSHostKey != want {
		t.Errorf("recorded OS host key %q, want %q", res.OSHostKey, want)
	}
	if _, err := os.Stat(filepath.Join(s.lab.ChefDir, "converged")); err != nil {
		t.Errorf("chef never converged: %v", err)
	}
	if l, ok, err := s.store.Lookup(context.Background(), s.lab.MAC); err != nil || !ok || l.Profile != lease.ProfileDisk {
		t.Errorf("lease after provisioning = %+v %v %v, want profile disk", l, ok, err)
	}
	checkRedfishBoots(t, bmc)
	for _, r := range bmc.Requests() {
		if r.Auth == "basic" {
			t.Errorf("%s used Basic auth; bmclib logs in with a session", r)
		}
	}

	h := s.history(t, run.GetID(), run.GetRunID())
	s.checkNoSecrets(t, h)
	t.Logf("provisioned %s over Redfish in %s", res.Host, res.Duration)
}
