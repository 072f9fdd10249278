package qemu

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Lines the live init prints on the serial console.
const (
	// MarkerBooted is followed by " mac=<eth0 MAC> boot_id=<rackflow.boot_id> ip=<address>".
	MarkerBooted = "RACKFLOW-LIVE-BOOTED"
	// MarkerHostKey is followed by " sha256=<hex of the fetched file>
	// fingerprint=SHA256:<fingerprint of its public half>".
	MarkerHostKey = "RACKFLOW-LIVE-HOSTKEY"
	// MarkerRefetch is followed by " refused" when a second fetch of the
	// host key URL failed, " served" when it got the key again.
	MarkerRefetch = "RACKFLOW-LIVE-HOSTKEY-REFETCH"
	// MarkerFailed is followed by what went wrong; the VM then powers off.
	MarkerFailed = "RACKFLOW-LIVE-FAILED"
	// MarkerDone is the last line before the VM powers off.
	MarkerDone = "RACKFLOW-LIVE-DONE"
	// MarkerSSHD is printed once OpenSSH's sshd listens on port 22 with
	// the fetched host key (live systems built WithSSHD, booted with
	// rackflow.sshd=1); the VM then stays up until powered off.
	MarkerSSHD = "RACKFLOW-LIVE-SSHD"
	// MarkerOS is followed by " fingerprint=SHA256:..." of the host key
	// the installed OS made on its first boot (rackflow.os=1), printed
	// before its sshd starts.
	MarkerOS = "RACKFLOW-OS-BOOTED"
)

// initScript is the live system's /init, run by busybox sh. It reads the
// kernel command line iPXE got from rackflow (pxe.RenderLive), loads the
// virtio NIC modules, configures eth0 from ip=, reports, fetches the
// one-time host key (with hostkeyfp) and powers off. The key itself is
// never printed nor written to disk.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
fail() { echo "` + MarkerFailed + ` $*"; poweroff -f; sleep 60; }
for m in ` + "MODULES" + `; do
	insmod /lib/modules/$m.ko || fail "insmod $m"
done
ipcfg= boot_id= hostkey_url= keys_url= sshd= os=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	ip=*) ipcfg=${arg#ip=} ;;
	rackflow.boot_id=*) boot_id=${arg#rackflow.boot_id=} ;;
	rackflow.hostkey_url=*) hostkey_url=${arg#rackflow.hostkey_url=} ;;
	rackflow.authorized_keys_url=*) keys_url=${arg#rackflow.authorized_keys_url=} ;;
	rackflow.sshd=1) sshd=1 ;;
	rackflow.os=1) os=1 ;;
	esac
done
[ -n "$sshd" ] && [ ! -x /usr/sbin/sshd ] && fail "rackflow.sshd=1 but this live system has no sshd"
keyout=
[ -n "$sshd" ] && keyout="-o /etc/ssh/host_key"
i=0
while [ ! -e /sys/class/net/eth0 ]; do
	i=$((i+1)); [ $i -gt 200 ] && fail "no eth0 after 20s"
	sleep 0.1
done
mac=$(cat /sys/class/net/eth0/address)
ip link set lo up
if [ -n "$ipcfg" ]; then
	# ip=<client>:<peer>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>
	IFS=:
	set -- $ipcfg
	unset IFS
	addr=$1 gw=$3 mask=$4
	[ -n "$5" ] && hostname "$5"
	ifconfig eth0 "$addr" netmask "$mask" up || fail "ifconfig eth0 $addr"
	if [ -n "$gw" ]; then route add default gw "$gw" || fail "route via $gw"; fi
else
	ifconfig eth0 up
	udhcpc -i eth0 -n -q -t 5 -s /bin/udhcpc-script || fail "udhcpc on eth0"
	addr=$(ip -4 -o addr show eth0 | sed -n 's/.* inet \([0-9.]*\).*/\1/p')
fi
echo "` + MarkerBooted + ` mac=$mac boot_id=$boot_id ip=$addr"
start_sshd() {
	mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
	/usr/sbin/sshd -f /etc/ssh/sshd_config -E /tmp/sshd.log || fail "sshd: $(cat /tmp/sshd.log)"
	# sshd forks into the background before it binds its socket: wait
	# until port 22 (0016) is in LISTEN (0A), so the marker printed after
	# this means a connection will be accepted.
	i=0
	until grep -q ':0016 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
		i=$((i+1))
		[ $i -le 120 ] || fail "sshd did not listen on port 22 within 60s: $(cat /tmp/sshd.log)"
		usleep 500000
	done
}
if [ -n "$os" ]; then
	# The installed OS (booted from its disk): a host key of its own,
	# made on first boot, and the authorized keys its image holds.
	[ -x /usr/sbin/sshd ] || fail "rackflow.os=1 but this system has no sshd"
	got=$(hostkeyfp -gen /etc/ssh/host_key 2>&1) || fail "make host key: $got"
	echo "` + MarkerOS + ` $got"
	start_sshd
	while :; do sleep 3600; done
fi
if [ -n "$hostkey_url" ]; then
	got=$(hostkeyfp $keyout "$hostkey_url" 2>&1) || fail "fetch host key: $got"
	echo "` + MarkerHostKey + ` $got"
	# Without sshd this is the PXE boot test, which proves the key is served
	# once. A live system for provisioning fetches once, as a real one does:
	# pxe records a second fetch and the worker then refuses the boot.
	if [ -n "$sshd" ]; then
		:
	elif hostkeyfp "$hostkey_url" >/dev/null 2>&1; then
		echo "` + MarkerRefetch + ` served"
	else
		echo "` + MarkerRefetch + ` refused"
	fi
fi
if [ -n "$sshd" ]; then
	for m in ` + "BLKMODULES" + `; do
		insmod /lib/modules/$m.ko || fail "insmod $m"
	done
	[ -n "$keys_url" ] || fail "rackflow.sshd=1 without rackflow.authorized_keys_url"
	out=$(hostkeyfp -fetch "$keys_url" /root/.ssh/authorized_keys 2>&1) || fail "fetch authorized_keys: $out"
	start_sshd
	echo "` + MarkerSSHD + ` up"
	while :; do sleep 3600; done
fi
echo "` + MarkerDone + `"
poweroff -f
`

// sshdConfig is the live system's sshd_config: root with the keys the
// lease names, nothing else.
const sshdConfig = `Port 22
HostKey /etc/ssh/host_key
PermitRootLogin prohibit-password
AuthorizedKeysFile /root/.ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile /run/sshd.pid
`

// LiveOptions are the extras of a live system.
type LiveOptions struct {
	// SSHD puts this machine's OpenSSH sshd (with the shared libraries
	// it links) into the live system, for boots with rackflow.sshd=1:
	// it then installs the fetched host key, takes authorized_keys from
	// rackflow.authorized_keys_url, loads the virtio disk driver and
	// serves SSH as rackflow's live system does.
	SSHD bool
	// AuthorizedKeys, with SSHD, is put in /root/.ssh/authorized_keys:
	// an installed OS's image carries the keys that may log in.
	AuthorizedKeys string
	// Programs are extra executables, by name, put in /bin (a fake
	// chef-client, say).
	Programs map[string]string
}

// baseDirs are the live system's first directories.
var baseDirs = []string{"bin", "dev", "lib", "lib/modules", "proc", "sys", "run", "tmp"}

// sshdBinary is the sshd the live system runs.
const sshdBinary = "/usr/sbin/sshd"

// BlockModules are the modules disks need on top of VirtioNetModules, in
// load order: virtio disks, and SCSI disks on a virtio-scsi controller
// (sd_mod needs t10-pi and its CRCs, whose generic code is in the
// modules themselves).
var BlockModules = []string{
	"virtio_blk",
	"scsi_common", "scsi_mod", "crct10dif_common", "crc-t10dif", "crc64", "crc64-rocksoft", "t10-pi",
	"sd_mod", "virtio_scsi",
}

// udhcpcScript configures what udhcpc got, for a live system booted
// without ip=.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
	[ -n "$router" ] && route add default gw "${router%% *}"
	;;
esac
`

// LiveInitramfs builds the test live system into dst (a gzipped newc
// cpio): a static busybox, the kernel's virtio NIC modules, the hostkeyfp
// tool (built here with go build, so go must be on PATH) and initScript as
// /init. Network access is limited to what the kernel command line names.
func LiveInitramfs(ctx context.Context, dst, cacheDir string, k Kernel, opts ...LiveOptions) error {
	var o LiveOptions
	for _, x := range opts {
		o = x
	}
	bb, err := Busybox(ctx, cacheDir)
	if err != nil {
		return err
	}
	tool := filepath.Join(filepath.Dir(dst), "hostkeyfp")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", tool,
		"github.com/rackflow/rackflow/testsuite/qemu/internal/hostkeyfp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build hostkeyfp: %w: %s", err, out)
	}
	defer os.Remove(tool)

	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	gz := gzip.NewWriter(bw)
	w := NewCpioWriter(gz)
	for _, d := range baseDirs {
		w.Dir(d, 0o755)
	}
	w.CharDev("dev/console", 0o600, 5, 1)
	w.CharDev("dev/null", 0o666, 1, 3)
	init := strings.Replace(initScript, "BLKMODULES", strings.Join(BlockModules, " "), 1)
	init = strings.Replace(init, "MODULES", strings.Join(VirtioNetModules, " "), 1)
	w.File("init", 0o755, []byte(init))
	w.File("bin/udhcpc-script", 0o755, []byte(udhcpcScript))
	for _, m := range VirtioNetModules {
		if err := w.CopyFile("lib/modules/"+m+".ko", 0o644, k.Modules[m]); err != nil {
			return err
		}
	}
	if err := w.CopyFile("bin/busybox", 0o755, bb); err != nil {
		return err
	}
	if err := w.CopyFile("bin/hostkeyfp", 0o755, tool); err != nil {
		return err
	}
	if o.SSHD {
		if err := addSSHD(ctx, w, k); err != nil {
			return err
		}
		if o.AuthorizedKeys != "" {
			w.File("root/.ssh/authorized_keys", 0o600, []byte(o.AuthorizedKeys))
		}
	}
	names := make([]string, 0, len(o.Programs))
	for n := range o.Programs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w.File("bin/"+n, 0o755, []byte(o.Programs[n]))
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return f.Close()
}

// CpioWriter writes a newc ("070701") cpio archive, the format the Linux
// kernel unpacks as initramfs. Entries are owned by root; the first error
// sticks and is returned by Close.
type CpioWriter struct {
	w   io.Writer
	ino int
	err error
}

// NewCpioWriter returns a writer to w.
func NewCpioWriter(w io.Writer) *CpioWriter { return &CpioWriter{w: w, ino: 1} }

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
)

func (c *CpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	if c.err != nil {
		return
	}
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.ino++
	var b []byte
	b = append(b, hdr...)
	b = append(b, name...)
	b = append(b, 0)
	b = pad4(b)
	b = append(b, data...)
	b = pad4(b)
	_, c.err = c.w.Write(b)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// Dir adds a directory.
func (c *CpioWriter) Dir(name string, perm uint32) { c.entry(name, modeDir|perm, 0, 0, nil) }

// File adds a regular file.
func (c *CpioWriter) File(name string, perm uint32, data []byte) {
	c.entry(name, modeFile|perm, 0, 0, data)
}

// Symlink adds a symbolic link to target.
func (c *CpioWriter) Symlink(name, target string) {
	c.entry(name, modeLink|0o777, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *CpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, modeChr|perm, major, minor, nil)
}

// CopyFile adds a regular file with the contents of src.
func (c *CpioWriter) CopyFile(name string, perm uint32, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	c.File(name, perm, data)
	return nil
}

// Close writes the trailer and returns the first error.
func (c *CpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}

// addSSHD adds OpenSSH's sshd, the libraries ldd says it needs, an
// account database with root and the privilege separation user, and
// sshdConfig.
func addSSHD(ctx context.Context, w *CpioWriter, k Kernel) error {
	if _, err := os.Stat(sshdBinary); err != nil {
		return fmt.Errorf("live system with sshd: %w (Debian package openssh-server)", err)
	}
	out, err := exec.CommandContext(ctx, "ldd", sshdBinary).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", sshdBinary, err)
	}
	dirs := map[string]bool{}
	for _, d := range baseDirs {
		dirs[d] = true
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	for _, d := range []string{"usr", "usr/sbin", "etc", "etc/ssh", "root", "root/.ssh", "run/sshd", "var", "var/empty"} {
		w.Dir(d, 0o755)
		dirs[d] = true
	}
	for _, l := range libs {
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			return fmt.Errorf("live system with sshd: %w", err)
		}
		d := strings.TrimPrefix(filepath.Dir(l), "/")
		for _, p := range parents(d) {
			if !dirs[p] {
				w.Dir(p, 0o755)
				dirs[p] = true
			}
		}
		if err := w.CopyFile(strings.TrimPrefix(l, "/"), 0o755, real); err != nil {
			return err
		}
	}
	if err := w.CopyFile("usr/sbin/sshd", 0o755, sshdBinary); err != nil {
		return err
	}
	w.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n"))
	w.File("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	w.File("etc/ssh/sshd_config", 0o644, []byte(sshdConfig))
	for _, m := range BlockModules {
		if err := w.CopyFile("lib/modules/"+m+".ko", 0o644, k.Modules[m]); err != nil {
			return err
		}
	}
	return nil
}

// parents returns d's ancestors and d, outermost first ("a/b" -> a, a/b).
func parents(d string) []string {
	var out []string
	for p := d; p != "." && p != "/" && p != ""; p = filepath.Dir(p) {
		out = append([]string{p}, out...)
	}
	return out
}

// BootableDisk writes a raw disk image to out that both firmware boot: a
// FAT file system over the whole disk with syslinux in its boot sector
// for SeaBIOS (iPXE's sanboot of drive 0x80, say), and for UEFI firmware
// \EFI\BOOT\BOOTX64.EFI, the removable-media path, a unified kernel
// image (systemd's EFI stub carrying kernel, initrd and cmdline). Both
// boot kernel and initrd with cmdline. It plays an installed OS image.
// Needs mkfs.fat (dosfstools), syslinux, mcopy (mtools), objcopy
// (binutils) and the stub (systemd-boot-efi).
func BootableDisk(ctx context.Context, out string, sizeMiB int, kernel, initrd, cmdline string) error {
	for tool, pkg := range map[string]string{"mkfs.fat": "dosfstools", "syslinux": "syslinux", "mcopy": "mtools", "objcopy": "binutils"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("bootable disk needs %s (Debian package %s)", tool, pkg)
		}
	}
	if _, err := os.Stat(EFIStub); err != nil {
		return fmt.Errorf("bootable disk needs %s (Debian package systemd-boot-efi)", EFIStub)
	}
	os.Remove(out)
	cfg := "DEFAULT os\nPROMPT 0\nTIMEOUT 0\nLABEL os\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND " + cmdline + "\n"
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".bootable-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfgFile := filepath.Join(tmp, "syslinux.cfg")
	cmdlineFile := filepath.Join(tmp, "cmdline")
	osrel := filepath.Join(tmp, "os-release")
	uki := filepath.Join(tmp, "BOOTX64.EFI")
	for f, b := range map[string]string{cfgFile: cfg, cmdlineFile: cmdline, osrel: "ID=rackflow-test\n"} {
		if err := os.WriteFile(f, []byte(b), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		// The stub finds its parts by section name; the addresses are
		// the ones systemd's stub documents for a hand-built image: past
		// the stub's own sections, the kernel below 32 MiB.
		{"objcopy",
			"--add-section", ".osrel=" + osrel, "--change-section-vma", ".osrel=0x20000",
			"--add-section", ".cmdline=" + cmdlineFile, "--change-section-vma", ".cmdline=0x30000",
			"--add-section", ".linux=" + kernel, "--change-section-vma", ".linux=0x2000000",
			"--add-section", ".initrd=" + initrd, "--change-section-vma", ".initrd=0x3000000",
			EFIStub, uki},
		{"mkfs.fat", "-C", "-n", "RACKFLOWOS", out, fmt.Sprint(sizeMiB * 1024)},
		{"syslinux", "--install", out},
		{"mcopy", "-i", out, kernel, "::vmlinuz"},
		{"mcopy", "-i", out, initrd, "::initrd.img"},
		{"mcopy", "-i", out, cfgFile, "::syslinux.cfg"},
		{"mmd", "-i", out, "::EFI", "::EFI/BOOT"},
		{"mcopy", "-i", out, uki, "::EFI/BOOT/BOOTX64.EFI"},
	} {
		if b, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("bootable disk: %s: %w: %s", strings.Join(args, " "), err, b)
		}
	}
	return nil
}

// EFIStub is systemd's EFI stub for unified kernel images, from Debian's
// systemd-boot-efi.
const EFIStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
