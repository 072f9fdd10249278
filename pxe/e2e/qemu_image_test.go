package e2e_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/spec"
	"github.com/rackflow/rackflow/testsuite/qemu"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// TestQEMUWriteImage is the image step on a real machine's firmware and
// disk driver: the VM PXE-boots the live system through rackflow-pxe, and
// the live system runs OpenSSH's sshd with the per-boot host key it
// fetched once and the worker's key from its lease. WriteImage, dialing
// from the boot network's namespace as a worker there would, pins that
// host key, uploads the disk helper, streams a gzip image onto the VM's
// virtio disk (/dev/vda) and reads it back there. After the VM is powered
// off, the disk file on the host holds the image and nothing past it.
func TestQEMUWriteImage(t *testing.T) {
	ctx := requireQEMU(t)

	l := startQEMULab(t, ctx, qemu.LiveOptions{SSHD: true}, "rackflow.sshd=1")
	signer, keyPEM, err := sshd.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	lease, _ := l.registerLive(t, ctx, vmMAC, vmIP, "e2e-"+randHex(t, 4),
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))

	// The image: 24 MiB that compress like an OS image, gzipped; the disk
	// 64 MiB, filled with a pattern so stray writes would show.
	raw := make([]byte, 24<<20)
	rng := rand.NewChaCha8([32]byte{7})
	for i := 0; i < len(raw); i += 64 << 10 {
		rng.Read(raw[i : i+16<<10])
	}
	sum := sha256.Sum256(raw)
	imgPath := filepath.Join(l.dir, "os.img.gz")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(imgPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	diskPath := filepath.Join(l.dir, "vda.raw")
	if err := os.WriteFile(diskPath, bytes.Repeat([]byte{0x5a}, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(l.dir, "rackflow-diskhelper")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", helper, "github.com/rackflow/rackflow/activities/image/diskhelper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build diskhelper: %v\n%s", err, out)
	}

	name, args, err := qemu.VM{Tap: "tap0", MAC: vmMAC, Disk: diskPath}.Command(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vm := l.rack.Start(name, args...)
	vm.WaitFor(qemu.MarkerSSHD, bootTimeout)
	t.Logf("live system serving SSH %s after QEMU started", time.Since(start).Round(100*time.Millisecond))

	acts := &image.Activities{
		Dialer: &remote.Dialer{
			Secrets:     secrets.Static{"ssh/live": {PrivateKey: string(keyPEM)}},
			DialContext: l.dial,
		},
		DiskHelper:  helper,
		SegmentSize: 4 << 20,
	}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	env.SetTestTimeout(5 * time.Minute)
	in := image.WriteInput{
		Host:   "vm1",
		Target: remote.Target{Addr: vmIP + ":22", Credential: "ssh/live", HostKey: lease.HostKey},
		Image:  spec.Image{URL: imgPath, Size: int64(len(raw)), SHA256: hex.EncodeToString(sum[:])},
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
		t.Logf("serial console:\n%s", vm.Output())
	}
}
