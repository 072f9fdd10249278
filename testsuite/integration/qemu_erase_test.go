package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/qemu"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// TestQEMUEraseDisk is DecommissionHost's erase on a real machine: a VM
// with three serial-numbered 8 MiB disks boots the busybox live system;
// the target (named by its serial, in the middle slot) holds an MBR with
// two partitions. EraseDisk resolves the serial and erases: QEMU's
// virtio disk takes discards but (without discard=unmap) does not zero
// them, so the erase finds the discarded regions still holding data and
// zeroes them, and reads them back. From the host side: the first and
// last MiB of the disk and of each partition are zero, the MiB in the
// middle of each partition is as it was, and the other two disks hash
// unchanged.
func TestQEMUEraseDisk(t *testing.T) {
	ctx := qemu.RequireLab(t)
	l := qemu.StartLab(t, ctx, qemu.LiveOptions{SSHD: true}, "rackflow.sshd=1")
	signer, keyPEM, err := sshd.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	const mib = 1 << 20
	const diskSize = 8 * mib
	disks, before := map[string]string{}, map[string]string{}
	var target []byte
	for _, serial := range []string{"rf-disk-a", "rf-disk-b", "rf-disk-c"} {
		b := make([]byte, diskSize)
		rand.Read(b)
		if serial == "rf-disk-b" {
			// An MBR: partition 1 at 1 MiB (3 MiB), partition 2 at 4 MiB (3 MiB).
			for i, p := range [][2]uint32{{2048, 6144}, {8192, 6144}} {
				e := b[446+16*i : 446+16*(i+1)]
				clear(e)
				e[4] = 0x83
				binary.LittleEndian.PutUint32(e[8:], p[0])
				binary.LittleEndian.PutUint32(e[12:], p[1])
			}
			clear(b[446+32 : 510])
			b[510], b[511] = 0x55, 0xaa
			target = b
		}
		p := filepath.Join(l.Dir, serial+".raw")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		disks[serial], before[serial] = p, fileSHA(t, p, 0, diskSize)
	}
	live, _ := l.RegisterLive(t, ctx, qemu.LabVMMAC, qemu.LabVMIP, "erase-"+rand.Text()[:8],
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
	vm := qemu.VM{Tap: "tap0", MAC: qemu.LabVMMAC, Disks: []qemu.Disk{
		{Path: disks["rf-disk-a"], Serial: "rf-disk-a", Slot: 5},
		{Path: disks["rf-disk-b"], Serial: "rf-disk-b", Slot: 6},
		{Path: disks["rf-disk-c"], Serial: "rf-disk-c", Slot: 7},
	}}
	name, args, err := vm.Command(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	proc := l.Rack.Start(name, args...)
	proc.WaitFor(qemu.MarkerSSHD, qemu.BootTimeout)

	dialer := &remote.Dialer{Secrets: secrets.Static{"ssh/live": {PrivateKey: string(keyPEM)}}, DialContext: l.Dial}
	// The busybox live system has no lsblk: the disk helper lists disks.
	helper, err := diskHelper(l.Dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	acts := &image.Activities{Dialer: dialer, DiskHelper: helper}
	ra := &remote.Activities{Dialer: dialer}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	env.RegisterActivity(ra)
	env.SetTestTimeout(5 * time.Minute)
	tgt := remote.Target{Addr: qemu.LabVMIP + ":22", Credential: "ssh/live", HostKey: live.HostKey}
	if _, err := env.ExecuteActivity(ra.WaitForSSH, remote.WaitInput{Host: "vm1", Target: tgt, Deadline: "2m"}); err != nil {
		t.Fatalf("WaitForSSH: %v\nserial console:\n%s", err, proc.Output())
	}
	v, err := env.ExecuteActivity(acts.EraseDisk, image.EraseInput{Host: "vm1", Target: tgt, RootDevice: &api.RootDevice{Serial: "rf-disk-b"}})
	if err != nil {
		t.Fatalf("EraseDisk: %v\nserial console:\n%s", err, proc.Output())
	}
	var rep api.EraseReport
	if err := v.Get(&rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("erase report: %+v", rep)
	if rep.Disk != "/dev/vdb" || rep.Resolved == nil || rep.Resolved.Serial != "rf-disk-b" || rep.Size != diskSize ||
		len(rep.Partitions) != 2 || rep.VerifiedBytes != 6*mib {
		t.Errorf("report %+v: want /dev/vdb (rf-disk-b), 2 partitions, 6 MiB read back as zeroes", rep)
	}
	powerOff(t, ctx, dialer, tgt, proc)

	got, err := os.ReadFile(disks["rf-disk-b"])
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 2}, {3, 5}, {6, 8}} { // disk start, p1 start; p1 end, p2 start; p2 end, disk end
		part := got[r[0]*mib : r[1]*mib]
		if n := len(part) - bytes.Count(part, []byte{0}); n != 0 {
			t.Errorf("MiB %d-%d of the target: %d bytes not zero", r[0], r[1], n)
		}
	}
	for _, r := range [][2]int{{2, 3}, {5, 6}} {
		if !bytes.Equal(got[r[0]*mib:r[1]*mib], target[r[0]*mib:r[1]*mib]) {
			t.Errorf("MiB %d-%d of the target changed: only the regions may be erased", r[0], r[1])
		}
	}
	for _, serial := range []string{"rf-disk-a", "rf-disk-c"} {
		if h := fileSHA(t, disks[serial], 0, diskSize); h != before[serial] {
			t.Errorf("%s changed", serial)
		}
	}
}
