package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/ipmisim"
	"github.com/rackflow/rackflow/testsuite/qemu"
	"github.com/rackflow/rackflow/testsuite/redfishfake"
	"github.com/rackflow/rackflow/testsuite/sshd"
	"github.com/rackflow/rackflow/workflows"
)

// powerHook is a QEMU machine's power hook, run by ipmi_sim or for
// redfishfake's power changes (redfishPower): "on DEV" (re)starts the VM
// in the rack namespace with the command in boot-DEV, boot-pxe when there
// is none, its serial console appended to a log (as a console server
// keeps one per host); "off" stops it.
const powerHook = `#!/bin/sh
D=%[1]s
LOG=%[3]s
stop() {
  if [ -s "$D/qemu.pid" ]; then
    kill "$(cat "$D/qemu.pid")" 2>/dev/null
    i=0; while kill -0 "$(cat "$D/qemu.pid")" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    rm -f "$D/qemu.pid"
  fi
}
case "$1" in
off) stop ;;
on) stop
    echo "=== power on, boot device $2" >> "$LOG"
    B="$D/boot-$2"; [ -f "$B" ] || B="$D/boot-pxe"
    ip netns exec %[2]s sh "$B" >> "$LOG" 2>&1 < /dev/null &
    echo $! > "$D/qemu.pid" ;;
esac
`

// writeBootScript writes the shell script the power hook runs to boot the
// machine: QEMU with its arguments quoted.
func writeBootScript(t *testing.T, path, name string, args []string) {
	t.Helper()
	cmd := "exec " + name
	for _, a := range args {
		cmd += " '" + a + "'"
	}
	if err := os.WriteFile(path, []byte(cmd+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rigOptions is the machine a provisionRig builds.
type rigOptions struct {
	// Redfish puts the machine behind testsuite/redfishfake (its
	// certificate pinned) instead of ipmi_sim, and the VM boots what the
	// boot source override says: the network for Pxe, its disk for
	// anything else. Behind ipmi_sim it always boots the network first
	// and its lease decides (iPXE's sanboot for the disk).
	Redfish bool
	// Firmware is the VM's, qemu.FirmwareBIOS (default) or
	// qemu.FirmwareUEFI; the BMC reports the matching boot mode.
	Firmware string
}

// provisionRig is a QEMU machine ready for ProvisionHost: behind its BMC
// (whose power hook starts and stops QEMU in the rack namespace), reached
// only through an SSH jump host on the boot network, with an OS image to
// write and its inventory entry and secrets.
type provisionRig struct {
	l       *qemu.Lab
	host    api.Host
	sec     secrets.Static
	keyPEM  []byte
	bmc     *ipmisim.Sim      // nil with Redfish
	redfish *redfishfake.Fake // nil without
	vmDir   string
	// consoleDir holds the machine's serial console as vm1.log, as a
	// console logger (conserver) keeps it for a worker's --console-dir.
	consoleDir string
	jump       *jumpHost
}

// consoleLog is the machine's serial console log.
func (r *provisionRig) consoleLog() string { return filepath.Join(r.consoleDir, "vm1.log") }

func newProvisionRig(t *testing.T, ctx context.Context, opts rigOptions) *provisionRig {
	t.Helper()
	l := qemu.StartLab(t, ctx, qemu.LiveOptions{SSHD: true}, "rackflow.sshd=1")
	signer, keyPEM, err := sshd.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, validatorPEM, err := sshd.NewKey() // the chef validator's key
	if err != nil {
		t.Fatal(err)
	}
	raw, imgPath := osImage(t, ctx, l, signer.PublicKey())
	sum := sha256.Sum256(raw)
	diskPath := filepath.Join(l.Dir, "vda.raw")
	if err := os.WriteFile(diskPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(diskPath, 64<<20); err != nil {
		t.Fatal(err)
	}

	// The machine behind its BMC: one command that boots the network,
	// and with Redfish one that boots the disk.
	vmDir := filepath.Join(l.Dir, "vm")
	if err := os.Mkdir(vmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	boots := map[string]bool{"pxe": false}
	if opts.Redfish {
		boots["disk"] = true
	}
	for dev, bootDisk := range boots {
		name, args, err := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC, Disk: diskPath, Firmware: opts.Firmware, BootDisk: bootDisk}.Command(vmDir)
		if err != nil {
			t.Fatal(err)
		}
		writeBootScript(t, filepath.Join(vmDir, "boot-"+dev), name, args)
	}
	r := &provisionRig{l: l, keyPEM: keyPEM, vmDir: vmDir, consoleDir: filepath.Join(l.Dir, "console")}
	if err := os.Mkdir(r.consoleDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(l.Dir, "power-hook")
	if err := os.WriteFile(hook, []byte(fmt.Sprintf(powerHook, vmDir, l.Rack.Name, r.consoleLog())), 0o755); err != nil {
		t.Fatal(err)
	}
	hookLog := filepath.Join(l.Dir, "hook-errors.log")
	t.Cleanup(func() {
		out, _ := os.ReadFile(filepath.Join(vmDir, "qemu.pid"))
		if pid := strings.TrimSpace(string(out)); pid != "" {
			l.Rack.Run("sh", "-c", "kill "+pid+" 2>/dev/null; true")
		}
		if t.Failed() {
			for _, f := range []string{r.consoleLog(), hookLog} {
				b, _ := os.ReadFile(f)
				t.Logf("--- %s (tail):\n%s", filepath.Base(f), tail(string(b), 80))
			}
		}
	})
	var bmcHost api.BMC
	var bmcSecret secrets.Secret
	if opts.Redfish {
		modes := []string{"Legacy", "UEFI"}
		if opts.Firmware == qemu.FirmwareUEFI {
			modes = []string{"UEFI", "Legacy"}
		}
		r.redfish = redfishfake.Start(t, redfishfake.Options{Username: "admin", BootModes: modes, OnPower: redfishPower(hook, hookLog)})
		bmcHost = api.BMC{Address: "127.0.0.1", Port: r.redfish.Port(), Provider: "redfish", Credential: "bmc/vm1", PinSHA256: r.redfish.PinSHA256()}
		bmcSecret = secrets.Secret{Username: r.redfish.Username, Password: r.redfish.Password, Endpoints: []string{bmcHost.CredentialDest()}}
	} else {
		r.bmc = ipmisim.Start(t, ipmisim.Options{OnPower: hook})
		bmcHost = api.BMC{Address: "127.0.0.1", Port: r.bmc.Port(), Provider: "ipmi", Credential: "bmc/vm1"}
		bmcSecret = secrets.Secret{Username: r.bmc.Username, Password: r.bmc.Password, Endpoints: []string{"127.0.0.1"}}
	}

	// The worker is not on the boot network: it reaches the machine
	// through a jump host there, OpenSSH's sshd in the server namespace.
	r.jump = startJumpHost(t, l, signer.PublicKey())

	r.host = api.Host{
		Name:    "vm1",
		BMC:     bmcHost,
		MAC:     qemu.LabVMMAC,
		Network: api.Network{IP: qemu.LabVMIP, Netmask: "255.255.255.0", Gateway: qemu.LabServerIP},
		Disk:    "/dev/vda",
		Image:   api.Image{URL: imgPath, Size: int64(len(raw)), SHA256: hex.EncodeToString(sum[:])},
		SSH: api.SSH{User: "root", Credential: "ssh/provision",
			Jump: &api.SSHJump{Address: r.jump.addr, Credential: "ssh/provision", HostKey: r.jump.hostKey}},
		Chef: &api.Chef{ServerURL: "https://chef.lab.invalid/organizations/lab", RunList: []string{"role[db]"},
			Environment: "lab", ValidatorCredential: "chef/validator"},
	}
	r.host.Defaults()
	r.sec = secrets.Static{
		"bmc/vm1":        bmcSecret,
		"ssh/provision":  {PrivateKey: string(keyPEM)},
		"chef/validator": {PrivateKey: string(validatorPEM), Endpoints: []string{"https://chef.lab.invalid"}},
	}
	return r
}

// converged reads, through the jump host, what chef-client recorded on
// the installed OS.
func (r *provisionRig) converged(t *testing.T, ctx context.Context, osKey string) string {
	t.Helper()
	d := &remote.Dialer{Secrets: r.sec}
	c, err := d.Dial(ctx, remote.Target{Addr: qemu.LabVMIP + ":22", Credential: "ssh/provision", HostKey: osKey,
		Jump: &remote.Jump{Addr: r.jump.addr, Credential: "ssh/provision", HostKey: r.jump.hostKey}})
	if err != nil {
		t.Fatalf("ssh to the installed OS: %v", err)
	}
	defer c.Close()
	out, _, _, err := remote.Run(ctx, c, "cat "+chef.DefaultDir+"/first-boot.json "+chef.DefaultDir+"/converged", nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// osFingerprint is the host key fingerprint the installed OS printed on
// its console.
func (r *provisionRig) osFingerprint() string {
	serial, _ := os.ReadFile(r.consoleLog())
	return strings.TrimPrefix(qemu.ConsoleLine(string(serial), qemu.MarkerOS+" "), qemu.MarkerOS+" fingerprint=")
}

// env is the SDK's test environment with the workflows and rackflow's
// real activities for the rig's machine, as a pod worker beside its boot
// network and console logger has them.
func (r *provisionRig) env(t *testing.T) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	dialer := &remote.Dialer{Secrets: r.sec} // from the host's namespace: only the jump host gets in
	// The helper is built for the VM's architecture.
	helper, err := diskHelper(r.l.Dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.SetTestTimeout(8 * time.Minute)
	workflows.Register(env)
	// The rig has no inventory file: the host comes inline, as a worker
	// with --allow-inline-specs takes it.
	env.RegisterActivity(&inventory.Activities{Secrets: r.sec, AllowInlineSpecs: true})
	env.RegisterActivity(&lease.Activities{PXE: r.l.API, Secrets: r.sec, ConsoleDir: r.consoleDir})
	env.RegisterActivity(bmc.New(r.sec, 1))
	env.RegisterActivity(&remote.Activities{Dialer: dialer})
	env.RegisterActivity(&image.Activities{Dialer: dialer, DiskHelper: helper, SegmentSize: 8 << 20, ImageDir: filepath.Dir(r.host.Image.URL)})
	env.RegisterActivity(&chef.Activities{Dialer: dialer, Secrets: r.sec})
	return env
}

// provision runs the ProvisionHost workflow, with rackflow's real
// activities, on the rig's machine in the SDK's test environment, and
// checks what every run must show: each step done, the image's digest,
// the installed OS's host key recorded on first use, chef converged on it
// and the jump host used for the live system and the OS.
func (r *provisionRig) provision(t *testing.T, ctx context.Context) api.ProvisionResult {
	t.Helper()
	env := r.env(t)
	start := time.Now()
	host := r.host
	env.ExecuteWorkflow(api.WorkflowProvisionHost, api.ProvisionInput{Host: host.Name, Spec: &host, Reprovision: true /* a fresh VM: nothing to guard; the test env has no visibility to ask */, Options: api.ProvisionOptions{
		LiveSSHDeadline: "4m", OSSSHDeadline: "4m", StepAttempts: 2, RetryInterval: "2s",
	}})
	if !env.IsWorkflowCompleted() {
		t.Fatal("ProvisionHost did not complete")
	}
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("ProvisionHost: %v", err)
	}
	var res api.ProvisionResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	// (The test environment's workflow clock stands still: wall time is
	// what counts.)
	t.Logf("provisioned %s in %s wall time; image %s", res.Host, time.Since(start).Round(time.Second), res.ImageDigest)
	var steps []string
	for _, s := range res.Steps {
		steps = append(steps, s.Name+"="+s.State)
	}
	if want := "validate=done register-lease=done power-on-pxe=done wait-live-ssh=done write-image=done boot-disk=done wait-os-ssh=done chef-bootstrap=done"; strings.Join(steps, " ") != want {
		t.Errorf("steps %q, want %q", steps, want)
	}
	if got := r.converged(t, ctx, res.OSHostKey); !strings.Contains(got, "role[db]") {
		t.Errorf("the installed OS shows no chef run with the run list: %q", got)
	}
	if res.ImageDigest != host.Image.SHA256 {
		t.Errorf("image digest %s, want %s", res.ImageDigest, host.Image.SHA256)
	}
	if want := r.osFingerprint(); want == "" || res.OSHostKeyFP != want {
		t.Errorf("recorded OS host key %q; the installed OS's console printed %q", res.OSHostKeyFP, r.osFingerprint())
	}
	if n := r.jump.sessions(); n < 3 {
		t.Errorf("%d connections through the jump host, want the live system's and the installed OS's", n)
	}
	return res
}

// TestQEMUProvisionHost runs ProvisionHost against a QEMU machine whose
// BMC is ipmi_sim and which the worker reaches only through an SSH jump
// host on the boot network: the lease is registered, bmclib powers the
// machine on into PXE, the live system comes up with its per-boot host
// key, the OS image is streamed onto the virtio disk and read back, the
// lease turns to disk and bmclib power cycles the machine into the
// installed OS (iPXE's sanboot), whose new host key is recorded on first
// use. (The workflow runs in the SDK's test environment here;
// TestQEMUProvisionSurvivesWorkerKill runs it on the dev server.)
func TestQEMUProvisionHost(t *testing.T) {
	ctx := qemu.RequireLab(t)
	r := newProvisionRig(t, ctx, rigOptions{})
	r.provision(t, ctx)
	if hooks := r.bmc.Hooks(); len(hooks) < 3 || hooks[0] != "on pxe" {
		t.Errorf("BMC power hooks %q: want on into PXE, then a cycle into the disk", hooks)
	}
}

// TestQEMUProvisionOverRedfish runs ProvisionHost against a UEFI QEMU
// machine (OVMF) whose BMC is testsuite/redfishfake, its certificate
// pinned: the worker sets a one-time PXE boot and powers the machine on,
// and the fake's power hook starts the VM booting the network (EDK2's
// PXE, ipxe.efi, the live system); the image is written; the worker sets
// the disk as the boot device and restarts the machine, which the hook
// restarts booting its disk, where the firmware runs the image's
// \EFI\BOOT\BOOTX64.EFI into the installed OS; chef converges. The
// BMC's request log shows Pxe/Once before Reset On and Hdd/Continuous
// before ForceRestart, both boots in UEFI mode.
func TestQEMUProvisionOverRedfish(t *testing.T) {
	ctx := qemu.RequireLab(t)
	r := newProvisionRig(t, ctx, rigOptions{Redfish: true, Firmware: qemu.FirmwareUEFI})
	r.provision(t, ctx)
	checkRedfishBoots(t, r.redfish)
	// The second boot came from the disk, not from rackflow-pxe.
	serial, _ := os.ReadFile(r.consoleLog())
	if got := strings.Count(string(serial), "=== power on, boot device "); got != 2 || !strings.Contains(string(serial), "=== power on, boot device disk") {
		t.Errorf("%d power-ons in the console log, want one into pxe and one into disk", got)
	}
}

// jumpHost is OpenSSH's sshd in inetd mode (sshd -i) inside the server
// namespace, started for each connection to a loopback port of the host:
// the worker's way onto the boot network, nothing routed between the two.
type jumpHost struct {
	addr, hostKey string
	mu            sync.Mutex
	n             int
}

func (j *jumpHost) sessions() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.n
}

func startJumpHost(t *testing.T, l *qemu.Lab, key ssh.PublicKey) *jumpHost {
	t.Helper()
	dir := filepath.Join(l.Dir, "jump")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := sshd.WriteConfig(dir, sshd.Options{AuthorizedKeys: []ssh.PublicKey{key}, AllowTCPForwarding: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	j := &jumpHost{addr: ln.Addr().String(), hostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cfg.HostKey)))}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			j.mu.Lock()
			j.n++
			j.mu.Unlock()
			go func() {
				defer c.Close()
				f, err := c.(*net.TCPConn).File()
				if err != nil {
					return
				}
				defer f.Close()
				cmd := exec.Command("ip", "netns", "exec", l.Srv.Name, sshd.Binary, "-i", "-e", "-f", cfg.Path)
				cmd.Stdin, cmd.Stdout = f, f
				_ = cmd.Run()
			}()
		}
	}()
	return j
}
