package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/qemu"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// TestQEMURootDeviceHints: a VM with three virtio disks, told apart only
// by their serial numbers, and two SCSI disks on a virtio-scsi controller,
// told apart by their WWNs, boots the live system twice with the virtio
// disks in other PCI slots and the SCSI disks at other targets, so the
// serial's target is /dev/vdb and the WWN's /dev/sdb on the first boot,
// /dev/vda and /dev/sda on the second. WriteImage, given the serial or
// the WWN (as lsblk prints it) as a root-device hint, writes each boot's
// image onto that disk; its result names the disk it resolved. Hashed
// from the host side, the two targets hold the image and the three other
// disks are byte for byte what they were. Hints that match every disk or
// none are refused before anything is written. (The live system is
// busybox without lsblk or udev: the disk helper lists the disks from
// sysfs, the WWN from the kernel's device/wwid, "naa.5000c500…".)
func TestQEMURootDeviceHints(t *testing.T) {
	ctx := qemu.RequireLab(t)
	l := qemu.StartLab(t, ctx, qemu.LiveOptions{SSHD: true}, "rackflow.sshd=1")
	signer, keyPEM, err := sshd.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	helper, err := diskHelper(l.Dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}

	// Five 4 MiB disks of random bytes: a stray write shows in a hash.
	const diskSize = 4 << 20
	disks := map[string]string{} // serial -> file
	before := map[string]string{}
	wwns := map[string]string{"rf-scsi-a": "0x5000c50015ea71a0", "rf-scsi-b": "0x5000c50015ea71b0"} // the SCSI disks
	for _, serial := range []string{"rf-disk-a", "rf-disk-b", "rf-disk-c", "rf-scsi-a", "rf-scsi-b"} {
		p := filepath.Join(l.Dir, serial+".raw")
		b := make([]byte, diskSize)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		disks[serial], before[serial] = p, fileSHA(t, p, 0, diskSize)
	}
	const target, wwnTarget = "rf-disk-b", "rf-scsi-b"
	imgDir := filepath.Join(l.Dir, "images")
	if err := os.Mkdir(imgDir, 0o755); err != nil {
		t.Fatal(err)
	}

	acts := &image.Activities{
		Dialer:     &remote.Dialer{Secrets: secrets.Static{"ssh/live": {PrivateKey: string(keyPEM)}}, DialContext: l.Dial},
		DiskHelper: helper, SegmentSize: 1 << 20, ImageDir: imgDir,
	}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	ra := &remote.Activities{Dialer: acts.Dialer}
	env.RegisterActivity(ra)
	env.SetTestTimeout(5 * time.Minute)

	boots := []struct {
		slots             map[string]int // serial -> PCI slot, or SCSI target
		wantPath, wwnPath string
	}{
		{map[string]int{"rf-disk-a": 5, "rf-disk-b": 6, "rf-disk-c": 7, "rf-scsi-a": 0, "rf-scsi-b": 1}, "/dev/vdb", "/dev/sdb"},
		{map[string]int{"rf-disk-b": 5, "rf-disk-c": 6, "rf-disk-a": 7, "rf-scsi-b": 0, "rf-scsi-a": 1}, "/dev/vda", "/dev/sda"},
	}
	for i, boot := range boots {
		// The image of this boot: 1 MiB of random bytes.
		raw := make([]byte, 1<<20)
		rand.Read(raw)
		imgPath := filepath.Join(imgDir, "os.raw")
		if err := os.WriteFile(imgPath, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw)
		live, _ := l.RegisterLive(t, ctx, qemu.LabVMMAC, qemu.LabVMIP, "hints-"+rand.Text()[:8], pub)

		vm := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC}
		for serial, slot := range boot.slots {
			vm.Disks = append(vm.Disks, qemu.Disk{Path: disks[serial], Serial: serial, WWN: wwns[serial], Slot: slot})
		}
		name, args, err := vm.Command(l.Dir)
		if err != nil {
			t.Fatal(err)
		}
		proc := l.Rack.Start(name, args...)
		proc.WaitFor(qemu.MarkerSSHD, qemu.BootTimeout)
		// The marker comes as sshd daemonizes, a moment before it listens:
		// wait for SSH as ProvisionHost's wait-live-ssh step does.
		if _, err := env.ExecuteActivity(ra.WaitForSSH, remote.WaitInput{Host: "vm1",
			Target: remote.Target{Addr: qemu.LabVMIP + ":22", Credential: "ssh/live", HostKey: live.HostKey}, Deadline: "2m"}); err != nil {
			t.Fatalf("boot %d: WaitForSSH: %v\nserial console:\n%s", i+1, err, proc.Output())
		}

		in := image.WriteInput{
			Host:       "vm1",
			Target:     remote.Target{Addr: qemu.LabVMIP + ":22", Credential: "ssh/live", HostKey: live.HostKey},
			Image:      api.Image{URL: imgPath, Size: int64(len(raw)), SHA256: hex.EncodeToString(sum[:])},
			RootDevice: &api.RootDevice{Serial: target},
		}
		if i == 0 {
			// Hints that every disk matches, or none, are refused, and
			// the refusal lists what the host has.
			for hints, want := range map[api.RootDevice]string{
				{MaxSize: "4MiB"}:     image.ErrTypeRootDeviceAmbiguous,
				{Serial: "rf-disk-z"}: image.ErrTypeRootDeviceNotFound,
			} {
				bad := in
				bad.RootDevice = &hints
				_, err := env.ExecuteActivity(acts.WriteImage, bad)
				var ae *temporal.ApplicationError
				if !errors.As(err, &ae) || ae.Type() != want || !strings.Contains(err.Error(), "serial rf-disk-c") {
					t.Errorf("WriteImage with hints %s: %v; want %s naming the disks", hints, err, want)
				}
			}
		}
		for _, w := range []struct {
			hints        api.RootDevice
			serial, path string
		}{
			{api.RootDevice{Serial: target}, target, boot.wantPath},
			{api.RootDevice{WWN: wwns[wwnTarget]}, wwnTarget, boot.wwnPath},
		} {
			in := in
			in.RootDevice = &w.hints
			v, err := env.ExecuteActivity(acts.WriteImage, in)
			if err != nil {
				t.Fatalf("boot %d: WriteImage with hints %s: %v\nserial console:\n%s", i+1, w.hints, err, proc.Output())
			}
			var res image.WriteResult
			if err := v.Get(&res); err != nil {
				t.Fatal(err)
			}
			t.Logf("boot %d: hints %s resolved to %s via %s", i+1, w.hints, res.Disk, res.Disk.Source)
			if res.Digest != in.Image.SHA256 || res.Disk == nil || res.Disk.Path != w.path || res.Disk.Serial != w.serial ||
				api.NormalizeWWN(res.Disk.WWN) != api.NormalizeWWN(wwns[w.serial]) || res.Disk.Size != diskSize || res.Disk.Source != "rackflow-diskhelper" {
				t.Errorf("boot %d: hints %s: result %+v disk %+v; want %s, serial %s, wwn %q, %d bytes", i+1, w.hints, res, res.Disk, w.path, w.serial, wwns[w.serial], diskSize)
			}
		}
		if i == 0 {
			// What the kernel itself reports, for the record.
			if wwid, err := liveOutput(ctx, acts.Dialer, in.Target, "cat /sys/block/sd*/device/wwid"); err == nil {
				t.Logf("the guest kernel's device/wwid: %q", wwid)
			}
		}
		powerOff(t, ctx, acts.Dialer, in.Target, proc)

		// From the host: the targets hold the image, the rest untouched.
		for _, serial := range []string{target, wwnTarget} {
			if got := fileSHA(t, disks[serial], 0, int64(len(raw))); got != in.Image.SHA256 {
				t.Errorf("boot %d: %s holds %s, want the image's %s", i+1, serial, got, in.Image.SHA256)
			}
		}
		for serial, p := range disks {
			if serial == target || serial == wwnTarget {
				continue
			}
			if got := fileSHA(t, p, 0, diskSize); got != before[serial] {
				t.Errorf("boot %d: %s changed (sha256 %s, was %s)", i+1, serial, got, before[serial])
			}
		}
		if t.Failed() {
			t.Fatalf("serial console:\n%s", proc.Output())
		}
	}
}

// fileSHA is the sha256 of n bytes of a file from off.
func fileSHA(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// liveOutput runs cmd on the live system and returns its output.
func liveOutput(ctx context.Context, d *remote.Dialer, target remote.Target, cmd string) (string, error) {
	c, err := d.Dial(ctx, target)
	if err != nil {
		return "", err
	}
	defer c.Close()
	out, _, _, err := remote.Run(ctx, c, cmd, nil)
	return strings.TrimSpace(string(out)), err
}

// powerOff powers the live system off over SSH and waits for QEMU to exit.
func powerOff(t *testing.T, ctx context.Context, d *remote.Dialer, target remote.Target, proc interface {
	Wait(time.Duration) error
}) {
	t.Helper()
	c, err := d.Dial(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err := c.NewSession(); err == nil {
		_ = s.Start("sync; poweroff -f")
	}
	if err := proc.Wait(time.Minute); err != nil {
		t.Errorf("VM did not power off: %v", err)
	}
}
