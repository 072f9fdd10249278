package image

import (
	"errors"
	"os"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
)

func recordedDisks(t *testing.T, name string) []Disk {
	t.Helper()
	doc, err := os.ReadFile("testdata/lsblk/" + name)
	if err != nil {
		t.Fatal(err)
	}
	disks, err := ParseLsblk(doc)
	if err != nil {
		t.Fatal(err)
	}
	return disks
}

// TestMatchRootDevice resolves hints against lsblk's JSON as recorded on
// a server (lsblk 2.38: numbers and booleans), an older lsblk (every
// value a string, models padded with spaces) and a VM without udev
// (lsblk 2.38 lists no serials there, and zram is a "disk").
func TestMatchRootDevice(t *testing.T) {
	server := recordedDisks(t, "server-2.38.json")
	old := recordedDisks(t, "old-2.32-strings.json")
	vm := recordedDisks(t, "vm-no-udev.json")
	server[1].ByPath = []string{"/dev/disk/by-path/pci-0000:00:17.0-ata-2"}
	tests := map[string]struct {
		disks []Disk
		hints api.RootDevice
		want  string // the resolved node, or the error type
	}{
		"serial":                     {server, api.RootDevice{Serial: "ZA1B2C3E"}, "/dev/sdc"},
		"wwn as lsblk prints it":     {server, api.RootDevice{WWN: "0x5000c500b1c2d3e4"}, "/dev/sdb"},
		"wwn as sysfs prints it":     {server, api.RootDevice{WWN: "naa.5000C500B1C2D3E4"}, "/dev/sdb"},
		"nvme eui":                   {server, api.RootDevice{WWN: "0025388b71b0a3a1"}, "/dev/nvme0n1"},
		"model alone, unique":        {server, api.RootDevice{Model: "SAMSUNG MZ7LH480HAHQ-00005"}, "/dev/sda"},
		"model alone, two match":     {server, api.RootDevice{Model: "ST4000NM0035-1V4107"}, ErrTypeRootDeviceAmbiguous},
		"model and serial":           {server, api.RootDevice{Model: "ST4000NM0035-1V4107", Serial: "ZA1B2C3D"}, "/dev/sdb"},
		"hints that contradict":      {server, api.RootDevice{Model: "SAMSUNG MZ7LH480HAHQ-00005", Serial: "ZA1B2C3D"}, ErrTypeRootDeviceNotFound},
		"size range":                 {server, api.RootDevice{MinSize: "400GB", MaxSize: "500GB"}, "/dev/sda"},
		"size range, two 4TB disks":  {server, api.RootDevice{MinSize: "3TB"}, ErrTypeRootDeviceAmbiguous},
		"the cdrom is never a disk":  {server, api.RootDevice{Serial: "KZ8E2CM5730"}, ErrTypeRootDeviceNotFound},
		"by-path name":               {server, api.RootDevice{ByPath: "pci-0000:00:17.0-ata-2"}, "/dev/sdb"},
		"by-path full":               {server, api.RootDevice{ByPath: "/dev/disk/by-path/pci-0000:00:17.0-ata-2"}, "/dev/sdb"},
		"unknown serial":             {server, api.RootDevice{Serial: "NOPE"}, ErrTypeRootDeviceNotFound},
		"old lsblk: padded model":    {old, api.RootDevice{Model: "INTEL SSDSC2BB15", Serial: "PHDV7240013Y150MGN"}, "/dev/sdb"},
		"old lsblk: string sizes":    {old, api.RootDevice{MaxSize: "150039945216"}, ErrTypeRootDeviceAmbiguous},
		"no udev: no serial to find": {vm, api.RootDevice{Serial: "20366338377028917"}, ErrTypeRootDeviceNotFound},
		"no udev: zram is no disk":   {vm, api.RootDevice{MaxSize: "1GiB"}, ErrTypeRootDeviceNotFound},
		"no udev: size finds vda":    {vm, api.RootDevice{MinSize: "1GiB"}, "/dev/vda"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := tc.hints.Validate(); err != nil {
				t.Fatalf("hints invalid: %v", err)
			}
			d, err := MatchRootDevice(tc.hints, tc.disks)
			if !strings.HasPrefix(tc.want, "/") {
				var ae *temporal.ApplicationError
				if !errors.As(err, &ae) || ae.Type() != tc.want || !ae.NonRetryable() {
					t.Fatalf("MatchRootDevice = %v, %v; want a non-retryable %s", d, err, tc.want)
				}
				return
			}
			if err != nil || d.Path() != tc.want {
				t.Fatalf("MatchRootDevice = %v, %v; want %s", d, err, tc.want)
			}
		})
	}
}

// TestRootDeviceRefusalListsCandidates: the operator reads in the error
// which disks the host has (none matched) or which matched (several).
func TestRootDeviceRefusalListsCandidates(t *testing.T) {
	server := recordedDisks(t, "server-2.38.json")
	_, err := MatchRootDevice(api.RootDevice{MinSize: "3TB"}, server)
	for _, want := range []string{`min_size="3TB"`, "match 2 disks", "/dev/sdb (serial ZA1B2C3D, wwn 0x5000c500b1c2d3e4", "/dev/sdc (serial ZA1B2C3E"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ambiguous: %v; want it to contain %q", err, want)
		}
	}
	var ae *temporal.ApplicationError
	var cands []api.ResolvedDisk
	if !errors.As(err, &ae) || ae.Details(&cands) != nil || len(cands) != 2 || cands[1].Serial != "ZA1B2C3E" {
		t.Errorf("details: %+v; want the two candidates", cands)
	}
	_, err = MatchRootDevice(api.RootDevice{ByPath: "pci-0000:00:17.0-ata-9"}, recordedDisks(t, "vm-no-udev.json"))
	if err == nil || !strings.Contains(err.Error(), "/dev/vda (serial -, wwn -, model -, 274877906944 bytes)") || !strings.Contains(err.Error(), "no udev") {
		t.Errorf("not found: %v; want the host's disks and the missing udev named", err)
	}
	if !activities.IsType(err, ErrTypeRootDeviceNotFound) {
		t.Errorf("type of %v: want %s", err, ErrTypeRootDeviceNotFound)
	}
}

func TestParseListing(t *testing.T) {
	out := "arch=x86_64\nlsblk<\n{\"blockdevices\": []}\n>lsblk\nbypath=/dev/disk/by-path/pci-0000:00:05.0 /dev/vdb\nbypath=/dev/disk/by-path/pci-0000:00:05.0-part1 /dev/vdb1\n"
	arch, doc, byPath, err := parseListing([]byte(out))
	if err != nil || arch != "x86_64" || strings.TrimSpace(string(doc)) != `{"blockdevices": []}` || len(byPath["/dev/vdb"]) != 1 {
		t.Errorf("parseListing = %q, %q, %v, %v", arch, doc, byPath, err)
	}
	if _, doc, _, _ := parseListing([]byte("arch=x86_64\nlsblk=none\n")); doc != nil {
		t.Errorf("no lsblk: doc %q, want nil (use the helper)", doc)
	}
	if _, _, _, err := parseListing([]byte("lsblk<\n{\"blockdev")); err == nil {
		t.Error("a cut-off lsblk answer was accepted")
	}
}
