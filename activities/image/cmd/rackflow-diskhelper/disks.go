package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// lsblkDevice is one entry of `lsblk -J -b -d -o NAME,SERIAL,WWN,SIZE,
// MODEL,TYPE,TRAN,RO`, which disks prints from sysfs for live systems
// without util-linux (or without udev, whose database lsblk reads serials
// and WWNs from).
type lsblkDevice struct {
	Name   string  `json:"name"`
	Serial *string `json:"serial"`
	WWN    *string `json:"wwn"`
	Size   int64   `json:"size"`
	Model  *string `json:"model"`
	Type   string  `json:"type"`
	Tran   *string `json:"tran"`
	RO     bool    `json:"ro"`
}

// disks prints the whole disks under /sys/block as lsblk's JSON.
func disks(sysBlock string) int {
	doc, err := listDisks(sysBlock)
	if err != nil {
		return fail(3, "disks: %v", err)
	}
	fmt.Println(string(doc))
	return 0
}

// listDisks reads the block devices under sysBlock into lsblk's JSON.
func listDisks(sysBlock string) ([]byte, error) {
	names, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, err
	}
	out := struct {
		BlockDevices []lsblkDevice `json:"blockdevices"`
	}{BlockDevices: []lsblkDevice{}}
	for _, e := range names {
		dir := filepath.Join(sysBlock, e.Name())
		d := lsblkDevice{Name: e.Name(), Type: "disk"}
		sectors, err := strconv.ParseInt(attr(dir, "size"), 10, 64)
		if err != nil {
			continue
		}
		d.Size = sectors * 512 // sysfs counts 512-byte sectors, whatever the device's
		d.RO = attr(dir, "ro") == "1"
		switch {
		case strings.HasPrefix(d.Name, "loop"):
			d.Type = "loop"
		case strings.HasPrefix(d.Name, "sr"):
			d.Type = "rom"
		case strings.HasPrefix(d.Name, "dm-"), strings.HasPrefix(d.Name, "md"):
			d.Type = "virtual"
		}
		d.Serial = opt(firstOf(attr(dir, "serial"), attr(dir, "device/serial"), vpdSerial(filepath.Join(dir, "device/vpd_pg80"))))
		d.WWN = opt(wwn(firstOf(attr(dir, "wwid"), attr(dir, "device/wwid"))))
		d.Model = opt(attr(dir, "device/model"))
		switch {
		case strings.HasPrefix(d.Name, "vd"):
			d.Tran = opt("virtio")
		case strings.HasPrefix(d.Name, "nvme"):
			d.Tran = opt("nvme")
		}
		out.BlockDevices = append(out.BlockDevices, d)
	}
	slices.SortFunc(out.BlockDevices, func(a, b lsblkDevice) int { return strings.Compare(a.Name, b.Name) })
	return json.MarshalIndent(out, "", "   ")
}

// attr is a sysfs attribute, trimmed; "" when it is not there.
func attr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstOf(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// vpdSerial reads the unit serial number page (SCSI VPD 0x80): a 4-byte
// header whose last byte is the serial's length, then the serial.
func vpdSerial(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return strings.TrimSpace(string(b[4 : 4+n]))
}

// wwn turns sysfs's identifier ("naa.5000c50015ea71ac", NVMe's
// "eui.0025388b71b0a3a1") into lsblk's spelling ("0x5000c50015ea71ac");
// other designators (t10 vendor strings) are not WWNs.
func wwn(id string) string {
	for _, p := range []string{"naa.", "eui."} {
		if h, ok := strings.CutPrefix(id, p); ok {
			return "0x" + strings.ToLower(h)
		}
	}
	return ""
}
