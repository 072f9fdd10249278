package e2e_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/testsuite/qemu"
)

// TestQEMUUEFIBoot boots QEMU machines with UEFI firmware (OVMF) whose NIC
// carries no option ROM, so EDK2's own network stack does what a server's
// platform firmware does, through rackflow-pxe, into the live system:
//
//   - native PXE: DHCP with option 93 = 7 (x64 UEFI) gets ipxe.efi, EDK2
//     fetches it over TFTP, iPXE asks DHCP again as iPXE and gets the
//     machine's script URL, then the kernel and initrd over HTTP;
//   - HTTP boot: EDK2's HTTP boot client (vendor class HTTPClient, option
//     93 = 16, PXE switched off in the firmware) gets ipxe.efi's URL and
//     downloads it over HTTP; no TFTP at all.
//
// Each boot must end in the live system reporting the MAC and boot ID it
// was given, and rackflow-pxe's log must show each link of the chain.
func TestQEMUUEFIBoot(t *testing.T) {
	ctx := qemu.RequireLab(t)
	l := qemu.StartLab(t, ctx, qemu.LiveOptions{}, "")
	efi, err := os.ReadFile(filepath.Join(qemu.IPXEDir, "ipxe.efi"))
	if err != nil {
		t.Fatal(err)
	}
	efiSize := strconv.Itoa(len(efi))
	scriptURL := qemu.LabPublicURL + "/boot/" + qemu.LabVMMAC + ".ipxe"

	boot := func(t *testing.T, uefiBoot string) []logLine {
		t.Helper()
		bootID := "uefi-" + uefiBoot + "-" + rand.Text()[:8]
		l.RegisterLive(t, ctx, qemu.LabVMMAC, qemu.LabVMIP, bootID)
		from := len(l.Server.Output())
		dir := t.TempDir()
		name, args, err := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC, Firmware: qemu.FirmwareUEFI, UEFIBoot: uefiBoot}.Command(dir)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		vm := l.Rack.Start(name, args...)
		defer vm.Stop()
		vm.WaitFor(qemu.MarkerBooted, qemu.BootTimeout)
		t.Logf("UEFI %s: live system up %s after QEMU started", uefiBoot, time.Since(start).Round(100*time.Millisecond))
		vm.WaitFor(qemu.MarkerDone, time.Minute)
		serial := vm.Output()
		want := qemu.MarkerBooted + " mac=" + qemu.LabVMMAC + " boot_id=" + bootID + " ip=" + qemu.LabVMIP
		if got := qemu.ConsoleLine(serial, qemu.MarkerBooted); got != want {
			t.Errorf("live system reported\n  %s\nwant\n  %s", got, want)
		}
		if failed := qemu.ConsoleLine(serial, qemu.MarkerFailed); failed != "" {
			t.Errorf("live system: %s", failed)
		}
		if err := vm.Wait(time.Minute); err != nil {
			t.Errorf("QEMU did not exit after the guest powered off: %v", err)
		}
		if t.Failed() {
			t.Logf("serial console:\n%s", serial)
		}
		return parseLog(l.Server.Output()[from:])
	}

	t.Run("native PXE", func(t *testing.T) {
		lines := boot(t, qemu.UEFIBootPXE)
		firmware := find(lines, "dhcp: answer", "type", "ACK", "boot_file", "ipxe.efi")
		tftp := find(lines, "tftp: read request", "file", "ipxe.efi", "result", "ok", "bytes", efiSize)
		// EDK2 reads the size first and ends that request: a probe, not
		// a failure worth a warning.
		if probe := find(lines, "tftp: read request", "file", "ipxe.efi", "result", "size_probe"); probe < 0 || probe > tftp {
			t.Errorf("no size probe before the transfer, or logged otherwise:\n%s", dump(lines))
		}
		if i := find(lines, "tftp: read request", "level", "WARN"); i >= 0 {
			t.Errorf("a UEFI boot logged a TFTP warning: %s", lines[i].raw)
		}
		ipxe := find(lines, "dhcp: answer", "type", "ACK", "boot_file", scriptURL)
		script := find(lines, "http request", "route", "GET /boot/{file}", "status", "200")
		switch {
		case firmware < 0:
			t.Errorf("no DHCP ACK gave the UEFI firmware ipxe.efi:\n%s", dump(lines))
		case tftp < firmware:
			t.Errorf("ipxe.efi (%s bytes) was not sent over TFTP after the firmware's ACK:\n%s", efiSize, dump(lines))
		case ipxe < tftp:
			t.Errorf("iPXE did not get its script URL from DHCP after loading:\n%s", dump(lines))
		case script < ipxe:
			t.Errorf("iPXE did not fetch its script:\n%s", dump(lines))
		}
		if tftp >= 0 && lines[tftp].kv["remote"] != qemu.LabVMIP {
			t.Errorf("ipxe.efi went to %s, want the lease's %s", lines[tftp].kv["remote"], qemu.LabVMIP)
		}
	})

	t.Run("HTTP boot", func(t *testing.T) {
		lines := boot(t, qemu.UEFIBootHTTP)
		fileURL := qemu.LabPublicURL + "/files/ipxe.efi"
		firmware := find(lines, "dhcp: answer", "type", "ACK", "boot_file", fileURL)
		get := find(lines, "http request", "route", "GET /files/{name...}", "status", "200", "bytes", efiSize)
		ipxe := find(lines, "dhcp: answer", "type", "ACK", "boot_file", scriptURL)
		switch {
		case firmware < 0:
			t.Errorf("no DHCP ACK gave the HTTP boot client ipxe.efi's URL:\n%s", dump(lines))
		case get < firmware:
			t.Errorf("ipxe.efi (%s bytes) was not downloaded over HTTP after the ACK:\n%s", efiSize, dump(lines))
		case ipxe < get:
			t.Errorf("iPXE did not get its script URL after loading:\n%s", dump(lines))
		}
		if i := find(lines, "tftp: read request"); i >= 0 {
			t.Errorf("an HTTP boot used TFTP: %s", lines[i].raw)
		}
	})
}

// logLine is one line of rackflow-pxe's JSON log, its values as text.
type logLine struct {
	msg string
	kv  map[string]string
	raw string
}

func parseLog(out string) []logLine {
	var lines []logLine
	for _, raw := range strings.Split(out, "\n") {
		d := json.NewDecoder(strings.NewReader(raw))
		d.UseNumber()
		var m map[string]any
		if d.Decode(&m) != nil {
			continue
		}
		ll := logLine{kv: map[string]string{}, raw: raw}
		for k, v := range m {
			ll.kv[k] = fmt.Sprint(v)
		}
		ll.msg = ll.kv["msg"]
		lines = append(lines, ll)
	}
	return lines
}

// find returns the index of the first line with message msg and every
// key/value pair in kv, or -1.
func find(lines []logLine, msg string, kv ...string) int {
next:
	for i, l := range lines {
		if l.msg != msg {
			continue
		}
		for j := 0; j+1 < len(kv); j += 2 {
			if l.kv[kv[j]] != kv[j+1] {
				continue next
			}
		}
		return i
	}
	return -1
}

func dump(lines []logLine) string {
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString("  " + l.raw + "\n")
	}
	return sb.String()
}
