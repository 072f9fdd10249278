package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/lab"
	"github.com/rackflow/rackflow/testsuite/qemu"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// TestQEMUWriteImage is provisioning's second half on a real machine's
// firmware and disk driver: the VM PXE-boots the live system through
// rackflow-pxe, and the live system runs OpenSSH's sshd with the per-boot
// host key it fetched once and the worker's key from its lease.
// WriteImage, dialing from the boot network's namespace as a worker there
// would, pins that host key, uploads the disk helper, streams a gzip OS
// image onto the VM's virtio disk (/dev/vda) and reads it back there.
// After the VM is powered off, the disk file on the host holds the image
// and nothing past it. Then the lease says "disk", the VM boots again,
// iPXE hands over to the disk, and the installed OS comes up with a host
// key of its own, which WaitForSSH records on first use.
func TestQEMUWriteImage(t *testing.T) {
	ctx := qemu.RequireLab(t)

	l := qemu.StartLab(t, ctx, qemu.LiveOptions{SSHD: true}, "rackflow.sshd=1")
	signer, keyPEM, err := sshd.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	live, _ := l.RegisterLive(t, ctx, qemu.LabVMMAC, qemu.LabVMIP, "e2e-"+rand.Text()[:8],
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))

	// The OS image: a disk SeaBIOS boots (syslinux on FAT) with the same
	// kernel and an initramfs that plays the installed OS, holding the
	// worker's key; gzipped. The VM's disk: 64 MiB of a pattern, so stray
	// writes would show.
	raw, imgPath := osImage(t, ctx, l, signer.PublicKey())
	sum := sha256.Sum256(raw)
	diskPath := filepath.Join(l.Dir, "vda.raw")
	if err := os.WriteFile(diskPath, bytes.Repeat([]byte{0x5a}, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The helper is built for the VM's architecture.
	helper, err := diskHelper(l.Dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}

	name, args, err := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC, Disk: diskPath}.Command(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vm := l.Rack.Start(name, args...)
	vm.WaitFor(qemu.MarkerSSHD, qemu.BootTimeout)
	t.Logf("live system serving SSH %s after QEMU started", time.Since(start).Round(100*time.Millisecond))

	acts := &image.Activities{
		Dialer: &remote.Dialer{
			Secrets:     secrets.Static{"ssh/live": {PrivateKey: string(keyPEM)}},
			DialContext: l.Dial,
		},
		DiskHelper:  helper,
		SegmentSize: 4 << 20,
		ImageDir:    filepath.Dir(imgPath),
	}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	env.SetTestTimeout(5 * time.Minute)
	in := image.WriteInput{
		Host:   "vm1",
		Target: remote.Target{Addr: qemu.LabVMIP + ":22", Credential: "ssh/live", HostKey: live.HostKey},
		Image:  api.Image{URL: imgPath, Size: int64(len(raw)), SHA256: hex.EncodeToString(sum[:])},
		Disk:   "/dev/vda",
		Mode:   image.ModePush,
	}
	v, err := env.ExecuteActivity(acts.WriteImage, in)
	if err != nil {
		t.Fatalf("WriteImage into the VM: %v\nserial console:\n%s", err, vm.Output())
	}
	var res image.WriteResult
	if err := v.Get(&res); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d bytes (%s) into /dev/vda in %s (%.1f MB/s under TCG), helper %v, read back %s", res.Bytes, res.Format, res.Duration, res.MBps, res.Helper, res.Digest)
	if res.Digest != in.Image.SHA256 || res.Format != image.FormatGzip || !res.Helper || res.Bytes != int64(len(raw)) {
		t.Errorf("result %+v: want the image's digest, gzip, written by the helper", res)
	}

	// A wrong host key is refused before anything is sent.
	other, _, _ := sshd.NewKey()
	bad := in
	bad.Target.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey())))
	if _, err := env.ExecuteActivity(acts.WriteImage, bad); err == nil || !strings.Contains(err.Error(), "host key") {
		t.Errorf("WriteImage with another host key pinned: %v, want a host key error", err)
	}

	// Power the VM off from its live system, then look at its disk.
	c, err := acts.Dialer.Dial(ctx, in.Target)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.NewSession(); err == nil {
		_ = s.Start("sync; poweroff -f")
	}
	if err := vm.Wait(time.Minute); err != nil {
		t.Errorf("VM did not power off: %v", err)
	}
	c.Close()
	f, err := os.Open(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, int64(len(raw))); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != in.Image.SHA256 {
		t.Errorf("the VM's disk file holds %s in its first %d bytes, want the image's %s", got, len(raw), in.Image.SHA256)
	}
	tail, _ := io.ReadAll(f)
	if !bytes.Equal(tail, bytes.Repeat([]byte{0x5a}, len(tail))) {
		t.Error("the disk past the image was written to")
	}
	if t.Failed() {
		t.Fatalf("serial console:\n%s", vm.Output())
	}

	// Boot from the disk: the lease's profile says so, iPXE sanboots it.
	if _, err := l.API.Put(ctx, lease.Lease{MAC: qemu.LabVMMAC, IP: qemu.LabVMIP, Netmask: "255.255.255.0", Gateway: qemu.LabServerIP,
		Hostname: "vm1", Profile: lease.ProfileDisk}); err != nil {
		t.Fatalf("lease for a disk boot: %v", err)
	}
	start = time.Now()
	osVM := l.Rack.Start(name, args...)
	osVM.WaitFor(qemu.MarkerOS, qemu.BootTimeout)
	t.Logf("installed OS booted from the written disk %s after QEMU started", time.Since(start).Round(100*time.Millisecond))
	ra := &remote.Activities{Dialer: acts.Dialer}
	env.RegisterActivity(ra)
	wv, err := env.ExecuteActivity(ra.WaitForSSH, remote.WaitInput{
		Host: "vm1", Target: remote.Target{Addr: qemu.LabVMIP + ":22", Credential: "ssh/live"}, AllowFirstUse: true, Deadline: "2m"})
	if err != nil {
		t.Fatalf("WaitForSSH on the installed OS: %v\nserial console:\n%s", err, osVM.Output())
	}
	var wr remote.WaitResult
	if err := wv.Get(&wr); err != nil {
		t.Fatal(err)
	}
	// Read only now: the console line is complete once sshd answers.
	want := strings.TrimPrefix(qemu.ConsoleLine(osVM.Output(), qemu.MarkerOS+" "), qemu.MarkerOS+" fingerprint=")
	if wr.Fingerprint != want || wr.HostKey == live.HostKey {
		t.Errorf("installed OS presented %s (key %q); its console printed %s, and it must not be the live system's key", wr.Fingerprint, wr.HostKey, want)
	}
	osVM.Stop()
}

// osImage builds the installed OS's image: a disk SeaBIOS boots (syslinux
// on FAT) with the live system's kernel and an initramfs that plays the
// installed OS, letting key log in; it returns the raw image and the path
// of its gzipped form.
func osImage(t *testing.T, ctx context.Context, l *qemu.Lab, key ssh.PublicKey) ([]byte, string) {
	t.Helper()
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	osInitrd := filepath.Join(l.Dir, "os-initrd.img")
	// The installed OS carries chef-client (a fake that checks what the
	// bootstrap wrote to /etc/chef).
	osOpts := qemu.LiveOptions{SSHD: true, AuthorizedKeys: pub + "\n", Programs: map[string]string{"chef-client": lab.ChefClient(chef.DefaultDir)}}
	if err := qemu.LiveInitramfs(ctx, osInitrd, l.Cache, l.Kernel, osOpts); err != nil {
		t.Fatalf("installed OS initramfs: %v", err)
	}
	osDisk := filepath.Join(l.Dir, "os.raw")
	osCmdline := "console=ttyS0,115200 panic=-1 ip=" + qemu.LabVMIP + "::" + qemu.LabServerIP + ":255.255.255.0:vm1:eth0:off rackflow.os=1"
	if err := qemu.BootableDisk(ctx, osDisk, 40, l.Kernel.Vmlinuz, osInitrd, osCmdline); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(osDisk)
	if err != nil {
		t.Fatal(err)
	}
	imgPath := filepath.Join(l.Dir, "os.img.gz")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(imgPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return raw, imgPath
}
