package e2e_test

import (
	"crypto/rand"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/testsuite/qemu"
)

// strayMAC is a machine nobody registered.
const strayMAC = "52:54:00:98:00:ee"

// TestQEMUPXEBoot boots a QEMU machine with real firmware (SeaBIOS and
// QEMU's iPXE ROM) through rackflow-pxe: DHCP hands the registered MAC its
// address and its iPXE script URL, iPXE fetches the script, kernel and
// initrd over HTTP, and the live system reports the MAC and boot ID it was
// booted with and takes its one-time SSH host key, whose public half must be
// the one the lease API gave the worker to pin. A second fetch of the key
// must be refused. Then a machine whose MAC has no lease must get no boot.
//
// Topology, nothing of it visible to the host:
//
//	[srv ns] eth0 10.98.0.1 (rackflow-pxe) ==veth== port0 [rack ns: br0 + tap0, tap1 -> QEMU]
func TestQEMUPXEBoot(t *testing.T) {
	ctx := qemu.RequireLab(t)

	l := qemu.StartLab(t, ctx, qemu.LiveOptions{}, "")
	dir, rack, server, hc := l.Dir, l.Rack, l.Server, l.HTTP

	// The worker's side: register the VM's MAC for a live boot.
	bootID := "e2e-" + rand.Text()[:8]
	_, pinned := l.RegisterLive(t, ctx, qemu.LabVMMAC, qemu.LabVMIP, bootID)
	wantFP := ssh.FingerprintSHA256(pinned)

	// The machine.
	name, args, err := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC}.Command(dir)
	if err != nil {
		t.Fatal(err)
	}
	bootStart := time.Now()
	vm := rack.Start(name, args...)
	vm.WaitFor(qemu.MarkerBooted, qemu.BootTimeout)
	booted := time.Since(bootStart)
	vm.WaitFor(qemu.MarkerDone, time.Minute)
	serial := vm.Output()
	t.Logf("VM booted the live system %s after QEMU started", booted.Round(100*time.Millisecond))
	if failed := qemu.ConsoleLine(serial, qemu.MarkerFailed); failed != "" {
		t.Errorf("live system: %s", failed)
	}

	bootedLine := qemu.ConsoleLine(serial, qemu.MarkerBooted)
	if want := qemu.MarkerBooted + " mac=" + qemu.LabVMMAC + " boot_id=" + bootID + " ip=" + qemu.LabVMIP; bootedLine != want {
		t.Errorf("live system reported\n  %s\nwant\n  %s", bootedLine, want)
	}
	m := regexp.MustCompile(`^` + qemu.MarkerHostKey + ` sha256=([0-9a-f]{64}) fingerprint=(\S+)$`).
		FindStringSubmatch(qemu.ConsoleLine(serial, qemu.MarkerHostKey+" "))
	switch {
	case m == nil:
		t.Errorf("live system printed no host key line")
	case m[2] != wantFP:
		t.Errorf("live system got a host key with fingerprint %s, the API pinned %s", m[2], wantFP)
	}
	t.Logf("serial console:\n  %s\n  %s\n  %s", bootedLine, qemu.ConsoleLine(serial, qemu.MarkerHostKey+" "), qemu.ConsoleLine(serial, qemu.MarkerRefetch))
	if r := qemu.ConsoleLine(serial, qemu.MarkerRefetch); r != qemu.MarkerRefetch+" refused" {
		t.Errorf("second host key fetch from the VM: %q, want it refused", r)
	}
	if err := vm.Wait(time.Minute); err != nil {
		t.Errorf("QEMU did not exit cleanly after the guest powered off: %v", err)
	}

	// Nobody else gets the VM's boot files: the test sits on the boot
	// network at the server's own address, not the lease's. pxe recorded
	// that the VM took its key (and refused its second try).
	httpGet(t, hc, qemu.LabPublicURL+"/boot/"+qemu.LabVMMAC+".ipxe", http.StatusForbidden)
	got, err := l.API.Get(ctx, qemu.LabVMMAC)
	if err != nil {
		t.Fatal(err)
	}
	if got.HostKeyFetchedFrom != qemu.LabVMIP {
		t.Errorf("host key fetched from %q, want the VM's %s", got.HostKeyFetchedFrom, qemu.LabVMIP)
	}
	if ok, why := got.BootTrusted(); ok || !strings.Contains(why, "second time") {
		t.Errorf("after the VM's deliberate second fetch: trusted=%v (%s), want untrusted", ok, why)
	}
	if strings.Contains(server.Output(), "BEGIN OPENSSH PRIVATE KEY") || strings.Contains(serial, "PRIVATE KEY") {
		t.Error("the private host key shows in a log")
	}

	// A machine nobody registered: DHCP stays silent, iPXE gives up, and
	// the firmware finds nothing to boot.
	name, args, err = qemu.VM{Tap: "tap1", MAC: strayMAC}.Command(dir)
	if err != nil {
		t.Fatal(err)
	}
	stray := rack.Start(name, args...)
	strayStart := time.Now()
	stray.WaitFor("No bootable device", qemu.BootTimeout)
	t.Logf("unregistered machine gave up %s after QEMU started", time.Since(strayStart).Round(100*time.Millisecond))
	stray.Stop()
	if strings.Contains(stray.Output(), qemu.MarkerBooted) {
		t.Error("the unregistered machine booted the live system")
	}
	if !strings.Contains(server.Output(), strayMAC) {
		t.Errorf("rackflow-pxe did not log the unregistered MAC %s", strayMAC)
	}
	if t.Failed() {
		t.Logf("serial console of %s:\n%s", qemu.LabVMMAC, serial)
	}
}

func httpGet(t *testing.T, hc *http.Client, url string, wantStatus int) string {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Errorf("GET %s: %s, want %d", url, resp.Status, wantStatus)
	}
	return string(b)
}
