package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRootDeviceHintsDecode: an inventory may name the disk by hints
// instead of a path; they decode strictly and validate at the edge.
func TestRootDeviceHintsDecode(t *testing.T) {
	inv, err := parseInventory(strings.Replace(goodInventory, "disk: /dev/sda",
		"root_device: {serial: \"S3Z9NB0K\", wwn: \"0x5000C50015EA71AC\", min_size: 400GB, max_size: 1TiB}", 1))
	if err != nil {
		t.Fatal(err)
	}
	h := inv.Hosts[0]
	want := &RootDevice{Serial: "S3Z9NB0K", WWN: "0x5000C50015EA71AC", MinSize: "400GB", MaxSize: "1TiB"}
	if d := cmp.Diff(want, h.RootDevice); d != "" || h.Disk != "" {
		t.Fatalf("root_device (-want +got):\n%s (disk %q)", d, h.Disk)
	}
	if lo, hi := h.RootDevice.Sizes(); lo != 400e9 || hi != 1<<40 {
		t.Errorf("Sizes() = %d, %d; want 400e9, 2^40", lo, hi)
	}
	if got := NormalizeWWN(h.RootDevice.WWN); got != NormalizeWWN("naa.5000c50015ea71ac") || got != "5000c50015ea71ac" {
		t.Errorf("NormalizeWWN = %q: lsblk's and sysfs's spellings must compare equal", got)
	}
}

// TestNormalizeWWN: every spelling of one WWN compares equal: lsblk's
// (udev's ID_WWN_WITH_EXTENSION), the kernel's device/wwid as a QEMU
// scsi-hd with wwn=0x5000c50015ea71b0 reports it under Linux 6.1
// (TestQEMURootDeviceHints), an inventory's upper case, a by-id name; an
// NVMe EUI and a 16-byte NAA keep all their digits.
func TestNormalizeWWN(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"lsblk":               {"0x5000c50015ea71b0", "5000c50015ea71b0"},
		"kernel device/wwid":  {"naa.5000c50015ea71b0\n", "5000c50015ea71b0"},
		"upper case":          {"0x5000C50015EA71B0", "5000c50015ea71b0"},
		"bare hex":            {"5000c50015ea71b0", "5000c50015ea71b0"},
		"by-id name":          {"wwn-0x5000c50015ea71b0", "5000c50015ea71b0"},
		"nvme eui":            {"eui.0025388b71b0a3a1", "0025388b71b0a3a1"},
		"16-byte naa, kernel": {"naa.600508b1001c4d5f0000000000001234", "600508b1001c4d5f0000000000001234"},
		"16-byte naa, lsblk":  {"0x600508b1001c4d5f0000000000001234", "600508b1001c4d5f0000000000001234"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NormalizeWWN(tc.in); got != tc.want {
				t.Errorf("NormalizeWWN(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRootDeviceHintsRefused(t *testing.T) {
	edit := func(new string) string { return strings.Replace(goodInventory, "disk: /dev/sda", new, 1) }
	tests := map[string]struct {
		inv  string
		want string
	}{
		"disk and hints":      {edit("disk: /dev/sda\n    root_device: {serial: ABC}"), "root_device: host node07: give disk or root_device, not both"},
		"neither":             {edit(""), "disk: host node07: must be an absolute device path"},
		"empty hints":         {edit("root_device: {}"), "root_device: host node07: give at least one hint"},
		"unknown hint":        {edit("root_device: {serial_number: ABC}"), "serial_number"},
		"bad wwn":             {edit("root_device: {wwn: 5000c500}"), "root_device.wwn: host node07: must be 16 or 32 hex digits"},
		"bad size":            {edit("root_device: {min_size: 1.5TB}"), "root_device.min_size: host node07: must be a size"},
		"integer size":        {edit("root_device: {min_size: 1000}"), ""},
		"inverted range":      {edit("root_device: {min_size: 2TB, max_size: 1TB}"), "root_device.max_size: host node07: is below min_size"},
		"serial with newline": {edit("root_device: {serial: \"A\\nchain x\"}"), "root_device.serial"},
		"by_path escape":      {edit("root_device: {by_path: \"../../sda\"}"), "root_device.by_path"},
		"size overflow":       {edit("root_device: {max_size: 9999999999TiB}"), "root_device.max_size"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parseInventory(tc.inv)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := map[string]int64{"512": 512, "512B": 512, "4KiB": 4096, "480GB": 480e9, "1TiB": 1 << 40, "2 MiB": 2 << 20, "1TB": 1e12}
	for in, want := range tests {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1.5GB", "-1", "1PB", "GB", "1gb"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}
