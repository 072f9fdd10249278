package api

import (
	"strings"
	"testing"
	"time"
)

func TestBootTimelineSummary(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 10, 2, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := map[string]struct {
		tl   BootTimeline
		want []string
	}{
		"nothing": {BootTimeline{MAC: "52:54:00:ab:cd:07", At: at(300)}, []string{"saw nothing of 52:54:00:ab:cd:07", "no DHCP request"}},
		"stuck after the kernel": {BootTimeline{At: at(250), Events: []BootEvent{
			{At: at(0), Kind: BootDHCPAck, From: "10.0.0.7", File: "undionly.kpxe"},
			{At: at(2), Kind: BootTFTP, File: "undionly.kpxe", Bytes: 70000, Status: "ok"},
			{At: at(5), Kind: BootScript, Bytes: 480, Status: "200"},
			{At: at(10), Kind: BootFile, File: "vmlinuz", Bytes: 8000000, Status: "200"},
		}}, []string{"DHCP answered 10.0.0.7 (boot file undionly.kpxe) 10:02:00", "undionly.kpxe fetched (70000 bytes, tftp) 10:02:02",
			"vmlinuz fetched (8000000 bytes) 10:02:10; nothing since 10:02:10 (4m0s): no initrd fetch"}},
		// A host in a boot loop: each step once, at its latest time.
		"boot loop": {BootTimeline{At: at(130), Events: []BootEvent{
			{At: at(0), Kind: BootDHCPAck, From: "10.0.0.7"},
			{At: at(5), Kind: BootScript, Status: "403"},
			{At: at(60), Kind: BootDHCPAck, From: "10.0.0.7"},
			{At: at(65), Kind: BootScript, Status: "403"},
		}}, []string{"DHCP answered 10.0.0.7 10:03:00, ipxe script refused (403) 10:03:05; nothing since 10:03:05 (1m5s): no ipxe script fetch"}},
		// The console says why: the host booted its empty disk, not the
		// network.
		"console": {BootTimeline{MAC: "52:54:00:ab:cd:07", At: at(300), ConsoleAt: at(12),
			Console: []string{"Booting from Hard Disk...", "Boot failed: not a bootable disk", "No bootable device."}},
			[]string{"saw nothing of 52:54:00:ab:cd:07", "no DHCP request reached it (powered on? PXE enabled on that NIC? on the boot network?); console 10:02:12: No bootable device."}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := tc.tl.Summary()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Summary() = %q\nlacks %q", got, w)
				}
			}
		})
	}
}
