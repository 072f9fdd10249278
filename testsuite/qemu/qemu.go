// Package qemu boots throw-away x86 virtual machines for end-to-end tests of
// rackflow's PXE chain with real firmware: it fetches and caches a Debian
// kernel, builds a tiny busybox initramfs that plays rackflow's live system
// (reporting on the serial console what it booted with), assembles the
// QEMU command line of a VM that network-boots from a tap device, and sets
// up the Lab those VMs boot in: rackflow-pxe on a boot network in network
// namespaces, shared by pxe/e2e and testsuite/integration.
//
// It is not a VM manager: it does not run QEMU itself (start the command
// in the Lab's rack namespace), and the VMs live for one test, with at most
// a raw file as their disk. It runs QEMU under TCG unless asked for KVM: on
// nested hosts /dev/kvm can exist and open while guests hang in it.
package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// VirtioROM is the iPXE option ROM QEMU's virtio-net loads by default, from
// ipxe-qemu (QEMU refuses to boot from it when given its path as romfile=).
const VirtioROM = "/usr/lib/ipxe/qemu/efi-virtio.rom"

// Require fails t unless QEMU and its iPXE ROMs, apt-get, dpkg-deb and go
// are there, naming the Debian package to install; it skips under
// testing.Short().
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot test: skipped with -short")
	}
	for cmd, pkg := range map[string]string{
		"qemu-system-x86_64": "qemu-system-x86",
		"apt-get":            "apt",
		"dpkg-deb":           "dpkg",
		"go":                 "golang (the Go toolchain)",
	} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("QEMU boot test needs %q: apt-get install -y --no-install-recommends %s", cmd, pkg)
		}
	}
	for file, pkg := range map[string]string{
		VirtioROM:                          "ipxe-qemu",
		filepath.Join(IPXEDir, "ipxe.efi"): "ipxe",
		OVMFCode:                           "ovmf",
	} {
		if _, err := os.Stat(file); err != nil {
			t.Fatalf("QEMU boot test needs %s: apt-get install -y --no-install-recommends %s", file, pkg)
		}
	}
}

// VM is one network-booting machine: BIOS firmware (SeaBIOS), one
// virtio-net NIC with QEMU's iPXE ROM on an existing tap device, an
// optional virtio disk, serial console on QEMU's stdout.
type VM struct {
	// Tap is the tap device the NIC uses; it must exist in the namespace
	// QEMU runs in (ip tuntap add NAME mode tap).
	Tap string
	// MAC is the NIC's address, e.g. "52:54:00:98:00:11".
	MAC string
	// MemoryMB is the guest's memory. Default 512.
	MemoryMB int
	// Accel is QEMU's accelerator, "tcg" or "kvm". Default: the
	// RACKFLOW_QEMU_ACCEL environment variable, else "tcg".
	Accel string
	// Disk, when set, is a raw file the VM sees as a virtio disk
	// (/dev/vda). The VM boots from the network unless BootDisk.
	Disk string
	// BootDisk makes the VM boot Disk first instead of the network, as a
	// BMC's boot override to Hdd does: SeaBIOS runs its boot sector, OVMF
	// its \EFI\BOOT\BOOTX64.EFI (see BootableDisk).
	BootDisk bool
	// Disks are more raw files, each a virtio disk with a serial number
	// at a PCI slot of its own: the guest names virtio disks in slot
	// order, so moving a disk to another slot renames it between boots,
	// as a controller probing in another order does on real hardware.
	Disks []Disk
	// Firmware is FirmwareBIOS (the default: SeaBIOS, which boots the
	// network through the NIC's iPXE option ROM) or FirmwareUEFI (OVMF,
	// whose own EDK2 network stack boots the network: no option ROM is
	// loaded, as on a server whose NIC firmware is the platform's).
	Firmware string
	// UEFIBoot picks EDK2's network boot client when Firmware is
	// FirmwareUEFI: UEFIBootPXE (DHCP, then the boot file over TFTP) or
	// UEFIBootHTTP (DHCP with vendor class HTTPClient, then the boot file
	// from a URL; PXE is switched off in the firmware so it is the only
	// one). Default UEFIBootPXE.
	UEFIBoot string
}

// Disk is a disk of a VM: a virtio disk, or a SCSI disk when it has a WWN.
type Disk struct {
	// Path is the raw file.
	Path string
	// Serial is what the guest reads in /sys/block/vdX/serial, or a SCSI
	// disk's unit serial number page (at most 20 characters: virtio's
	// limit).
	Serial string
	// WWN, when set ("0x" and 16 hex digits, as lsblk prints it), makes
	// the disk a SCSI disk (QEMU's scsi-hd) on the VM's virtio-scsi
	// controller, reporting the WWN as an NAA designator in its device
	// identification page: virtio disks have no WWN. The guest names
	// SCSI disks sdX in target order.
	WWN string
	// Slot is a virtio disk's PCI slot on bus 0, 5 to 31 (lower ones hold
	// the chipset and the NIC), or a SCSI disk's target number, 0 to 255.
	Slot int
}

// Firmware and UEFI network boot clients.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
	UEFIBootPXE  = "pxe"
	UEFIBootHTTP = "http"
)

var wwnRE = regexp.MustCompile(`^0x[0-9a-fA-F]{16}$`)

// OVMF's code and variable store for 4 MiB flash, from Debian's ovmf.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Command returns the program and arguments that boot the VM, writing the
// small files QEMU reads into dir. QEMU exits when the guest powers off,
// reboots or its kernel panics (with panic=-1 on its command line).
func (vm VM) Command(dir string) (string, []string, error) {
	// SeaBIOS reads etc/sercon-port as a little-endian integer, so it must
	// come from a file: "string=0x3f8" would be five ASCII bytes.
	sercon := filepath.Join(dir, "sercon-port")
	if err := os.WriteFile(sercon, []byte{0xf8, 0x03}, 0o644); err != nil {
		return "", nil, fmt.Errorf("qemu vm: %w", err)
	}
	mem := vm.MemoryMB
	if mem <= 0 {
		mem = 512
	}
	accel := vm.Accel
	if accel == "" {
		accel = os.Getenv("RACKFLOW_QEMU_ACCEL")
	}
	if accel == "" {
		accel = "tcg"
	}
	args := []string{
		"-nodefaults", "-no-user-config",
		"-machine", "pc",
		"-accel", accel,
		"-m", fmt.Sprint(mem), "-smp", "1",
		"-display", "none", "-vga", "none",
		"-serial", "stdio",
		"-no-reboot",
		"-netdev", "tap,id=net0,ifname=" + vm.Tap + ",script=no,downscript=no",
	}
	if vm.BootDisk && vm.Disk == "" {
		return "", nil, fmt.Errorf("qemu vm: BootDisk without a Disk")
	}
	nicBootIndex := ",bootindex=1"
	if vm.BootDisk {
		nicBootIndex = ""
	}
	switch vm.Firmware {
	case "", FirmwareBIOS:
		if vm.UEFIBoot != "" {
			return "", nil, fmt.Errorf("qemu vm: UEFIBoot %q needs Firmware %q", vm.UEFIBoot, FirmwareUEFI)
		}
		// SeaBIOS and iPXE write their console to the serial port too,
		// so a failed DHCP or download is readable in the log.
		args = append(args, "-fw_cfg", "name=etc/sercon-port,file="+sercon)
		if !vm.BootDisk {
			args = append(args, "-boot", "order=n,strict=on")
		}
		args = append(args, "-device", "virtio-net-pci,netdev=net0,mac="+vm.MAC)
	case FirmwareUEFI:
		// The variable store is the machine's NVRAM: a private copy,
		// written by the firmware as it records its boot options.
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(OVMFVars)
		if err != nil {
			return "", nil, fmt.Errorf("qemu vm: UEFI firmware: %w (apt-get install ovmf)", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return "", nil, fmt.Errorf("qemu vm: %w", err)
		}
		if strings.ContainsAny(dir, ",") {
			return "", nil, fmt.Errorf("qemu vm: directory %q must not contain a comma", dir)
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars,
			// romfile= (empty) loads no iPXE ROM: the firmware's own
			// virtio-net driver and network stack boot the machine.
			"-device", "virtio-net-pci,netdev=net0,mac="+vm.MAC+",romfile="+nicBootIndex)
		switch vm.UEFIBoot {
		case "", UEFIBootPXE:
			// EDK2 offers PXE before HTTP; IPv6 would only add timeouts.
			args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no")
		case UEFIBootHTTP:
			args = append(args,
				"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
				"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
				"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no")
		default:
			return "", nil, fmt.Errorf("qemu vm: UEFIBoot %q: want %q or %q", vm.UEFIBoot, UEFIBootPXE, UEFIBootHTTP)
		}
	default:
		return "", nil, fmt.Errorf("qemu vm: Firmware %q: want %q or %q", vm.Firmware, FirmwareBIOS, FirmwareUEFI)
	}
	if vm.Disk != "" {
		if strings.ContainsAny(vm.Disk, ",") {
			return "", nil, fmt.Errorf("qemu vm: disk path %q must not contain a comma", vm.Disk)
		}
		dev := "virtio-blk-pci,drive=disk0"
		if vm.BootDisk {
			dev += ",bootindex=1"
		}
		args = append(args, "-drive", "file="+vm.Disk+",if=none,id=disk0,format=raw", "-device", dev)
	}
	var scsi []string
	for i, d := range vm.Disks {
		if strings.ContainsAny(d.Path+d.Serial, ",=") || len(d.Serial) > 20 {
			return "", nil, fmt.Errorf("qemu vm: disk %+v: want a path and serial without , or =, a serial of at most 20 characters", d)
		}
		id := fmt.Sprintf("xdisk%d", i)
		var dev string
		if d.WWN != "" {
			if !wwnRE.MatchString(d.WWN) || d.Slot < 0 || d.Slot > 255 {
				return "", nil, fmt.Errorf("qemu vm: SCSI disk %+v: want a WWN of 0x and 16 hex digits and a target 0-255", d)
			}
			dev = fmt.Sprintf("scsi-hd,drive=%s,bus=scsi0.0,channel=0,scsi-id=%d,lun=0,wwn=%s", id, d.Slot, d.WWN)
		} else {
			if d.Slot < 5 || d.Slot > 31 {
				return "", nil, fmt.Errorf("qemu vm: disk %+v: want slot 5-31", d)
			}
			dev = fmt.Sprintf("virtio-blk-pci,drive=%s,addr=0x%x", id, d.Slot)
		}
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		drive := []string{"-drive", "file=" + d.Path + ",if=none,id=" + id + ",format=raw", "-device", dev}
		if d.WWN != "" {
			scsi = append(scsi, drive...)
		} else {
			args = append(args, drive...)
		}
	}
	if len(scsi) > 0 {
		// The controller comes after every device with a slot of its own,
		// so QEMU gives it a free one.
		args = append(append(args, "-device", "virtio-scsi-pci,id=scsi0"), scsi...)
	}
	return "qemu-system-x86_64", args, nil
}
