package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities/image"
)

// TestDisksReadsSysfsAsLsblk: on a live system without lsblk or udev the
// helper lists disks from sysfs in lsblk's shape: a virtio disk's serial,
// a SCSI disk's serial from its VPD page and its WWN from wwid, an NVMe
// namespace's EUI; loop devices and optical drives are not disks.
func TestDisksReadsSysfsAsLsblk(t *testing.T) {
	root := t.TempDir()
	write := func(dev, name, content string) {
		p := filepath.Join(root, dev, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("vda", "size", "8192\n")
	write("vda", "serial", "rf-disk-b\n")
	write("sda", "size", "16384\n")
	write("sda", "device/wwid", "naa.5000C50015EA71AC\n")
	write("sda", "device/model", "QEMU HARDDISK   \n")
	write("sda", "device/vpd_pg80", "\x00\x80\x00\x09rf-scsi-a")
	write("nvme0n1", "size", "2048\n")
	write("nvme0n1", "wwid", "eui.0025388b71b0a3a1\n")
	write("nvme0n1", "device/serial", "S4EVNX0R700123      \n")
	write("loop0", "size", "0\n")
	write("sr0", "size", "2048\n")

	doc, err := listDisks(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := image.ParseLsblk(doc)
	if err != nil {
		t.Fatalf("ParseLsblk of the helper's output: %v\n%s", err, doc)
	}
	want := []image.Disk{
		{Name: "nvme0n1", Serial: "S4EVNX0R700123", WWN: "0x0025388b71b0a3a1", Size: 2048 * 512, Type: "disk", Tran: "nvme"},
		{Name: "sda", Serial: "rf-scsi-a", WWN: "0x5000c50015ea71ac", Model: "QEMU HARDDISK", Size: 16384 * 512, Type: "disk"},
		{Name: "vda", Serial: "rf-disk-b", Size: 8192 * 512, Type: "disk", Tran: "virtio"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("disks (-want +got):\n%s\n%s", d, doc)
	}
}
