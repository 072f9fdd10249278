package pxe

import (
	"net/url"
	"strings"

	"github.com/rackflow/rackflow/pxe/lease"
)

const (
	// exitScript hands the boot back to the firmware's next device.
	exitScript = "#!ipxe\nexit\n"
	// diskScript boots the first BIOS disk. UEFI firmware without SAN boot
	// support falls through to its next boot entry instead.
	diskScript = "#!ipxe\nsanboot --no-describe --drive 0x80\n"
)

// LiveBoot is what the live profile's iPXE script is built from.
type LiveBoot struct {
	Lease lease.Lease
	// BaseURL prefixes every URL, without a trailing slash.
	BaseURL string
	// Kernel and Initrd are file names under BaseURL/files/.
	Kernel, Initrd string
	// Cmdline is appended to the kernel command line.
	Cmdline string
	// HostKeyToken is the one-time token of the lease's host key; empty
	// leaves rackflow.hostkey_url out.
	HostKeyToken string
}

// RenderLive renders the iPXE script that boots the live system. The kernel
// command line carries:
//
//	initrd=<name>                  for EFI-stub kernels
//	ip=<ip>::<gw>:<netmask>:<hostname>::off   static address (kernel/dracut form)
//	nameserver=<ip>                one per DNS server (dracut form)
//	BOOTIF=01-<mac>                the NIC that booted, for dracut
//	rackflow.boot_id=<id>          so the live system can report which boot it is
//	rackflow.authorized_keys_url=<BaseURL>/boot/<mac>/authorized_keys
//	rackflow.hostkey_url=<BaseURL>/v1/hostkeys/<token>
//
// The host key URL stays in the script after the key was fetched: a second
// boot with the same BootID then gets 410 Gone and must fail, and the worker
// boots again with a new BootID.
//
// Authorized keys are fetched from a URL rather than put on the command line
// because several RSA keys would overflow its 2 KiB limit on x86 and
// because keys hold spaces.
func RenderLive(b LiveBoot) string {
	l := b.Lease
	args := []string{
		"initrd=" + pathBase(b.Initrd),
		"ip=" + l.IP + "::" + l.Gateway + ":" + l.Netmask + ":" + l.Hostname + "::off",
	}
	for _, d := range l.DNS {
		args = append(args, "nameserver="+d)
	}
	args = append(args, "BOOTIF=01-"+strings.ReplaceAll(l.MAC, ":", "-"))
	if l.BootID != "" {
		args = append(args, "rackflow.boot_id="+l.BootID)
	}
	args = append(args, "rackflow.authorized_keys_url="+b.BaseURL+"/boot/"+l.MAC+"/authorized_keys")
	if b.HostKeyToken != "" {
		args = append(args, "rackflow.hostkey_url="+b.BaseURL+"/v1/hostkeys/"+b.HostKeyToken)
	}
	if b.Cmdline != "" {
		args = append(args, b.Cmdline)
	}
	var sb strings.Builder
	sb.WriteString("#!ipxe\n")
	sb.WriteString("kernel " + fileURL(b.BaseURL, b.Kernel) + " " + strings.Join(args, " ") + "\n")
	sb.WriteString("initrd " + fileURL(b.BaseURL, b.Initrd) + "\n")
	sb.WriteString("boot\n")
	return sb.String()
}

func fileURL(base, name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return base + "/files/" + strings.Join(parts, "/")
}

func pathBase(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}
