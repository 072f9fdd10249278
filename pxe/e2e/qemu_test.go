package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/netns"
	"github.com/rackflow/rackflow/testsuite/qemu"
	"golang.org/x/crypto/ssh"
)

const (
	serverIP  = "10.98.0.1"
	publicURL = "http://" + serverIP + ":8080"
	vmMAC     = "52:54:00:98:00:11"
	vmIP      = "10.98.0.11"
	strayMAC  = "52:54:00:98:00:ee"
	// bootTimeout is generous for TCG on 2 busy cores; a boot takes about
	// a minute.
	bootTimeout = 3 * time.Minute
)

// TestQEMUPXEBoot boots a QEMU machine with real firmware (SeaBIOS and
// QEMU's iPXE ROM) through rackflow-pxe: DHCP hands the registered MAC its
// address and its iPXE script URL, iPXE fetches the script, kernel and
// initrd over HTTP, and the live system reports the MAC and boot ID it was
// booted with and takes its one-time SSH host key, whose public half must be
// the one the lease API gave the worker to pin. A second fetch of the key
// must be refused. Then a machine whose MAC has no lease must get no boot.
//
// Topology, nothing of it visible to the host:
//
//	[srv ns] eth0 10.98.0.1 (rackflow-pxe) ==veth== port0 [rack ns: br0 + tap0, tap1 -> QEMU]
func TestQEMUPXEBoot(t *testing.T) {
	ctx := requireQEMU(t)

	l := startQEMULab(t, ctx, qemu.LiveOptions{}, "")
	dir, rack, server, hc := l.dir, l.rack, l.server, l.hc

	// The worker's side: register the VM's MAC for a live boot.
	bootID := "e2e-" + randHex(t, 4)
	_, pinned := l.registerLive(t, ctx, vmMAC, vmIP, bootID)
	wantFP := ssh.FingerprintSHA256(pinned)

	// The machine.
	name, args, err := qemu.VM{Tap: "tap0", MAC: vmMAC}.Command(dir)
	if err != nil {
		t.Fatal(err)
	}
	bootStart := time.Now()
	vm := rack.Start(name, args...)
	vm.WaitFor(qemu.MarkerBooted, bootTimeout)
	booted := time.Since(bootStart)
	vm.WaitFor(qemu.MarkerDone, time.Minute)
	serial := vm.Output()
	t.Logf("VM booted the live system %s after QEMU started", booted.Round(100*time.Millisecond))
	if failed := lineWith(serial, qemu.MarkerFailed); failed != "" {
		t.Errorf("live system: %s", failed)
	}

	bootedLine := lineWith(serial, qemu.MarkerBooted)
	if want := qemu.MarkerBooted + " mac=" + vmMAC + " boot_id=" + bootID + " ip=" + vmIP; bootedLine != want {
		t.Errorf("live system reported\n  %s\nwant\n  %s", bootedLine, want)
	}
	m := regexp.MustCompile(`^` + qemu.MarkerHostKey + ` sha256=([0-9a-f]{64}) fingerprint=(\S+)$`).
		FindStringSubmatch(lineWith(serial, qemu.MarkerHostKey+" "))
	switch {
	case m == nil:
		t.Errorf("live system printed no host key line")
	case m[2] != wantFP:
		t.Errorf("live system got a host key with fingerprint %s, the API pinned %s", m[2], wantFP)
	}
	t.Logf("serial console:\n  %s\n  %s\n  %s", bootedLine, lineWith(serial, qemu.MarkerHostKey+" "), lineWith(serial, qemu.MarkerRefetch))
	if r := lineWith(serial, qemu.MarkerRefetch); r != qemu.MarkerRefetch+" refused" {
		t.Errorf("second host key fetch from the VM: %q, want it refused", r)
	}
	if err := vm.Wait(time.Minute); err != nil {
		t.Errorf("QEMU did not exit cleanly after the guest powered off: %v", err)
	}

	// The key is gone for everyone else too.
	script := httpGet(t, hc, publicURL+"/boot/"+vmMAC+".ipxe", http.StatusOK)
	keyURL := regexp.MustCompile(`rackflow\.hostkey_url=(\S+)`).FindStringSubmatch(script)
	if keyURL == nil {
		t.Fatalf("boot script has no host key URL:\n%s", script)
	}
	httpGet(t, hc, keyURL[1], http.StatusGone)
	if strings.Contains(server.Output(), "BEGIN OPENSSH PRIVATE KEY") || strings.Contains(serial, "PRIVATE KEY") {
		t.Error("the private host key shows in a log")
	}

	// A machine nobody registered: DHCP stays silent, iPXE gives up, and
	// the firmware finds nothing to boot.
	name, args, err = qemu.VM{Tap: "tap1", MAC: strayMAC}.Command(dir)
	if err != nil {
		t.Fatal(err)
	}
	stray := rack.Start(name, args...)
	strayStart := time.Now()
	stray.WaitFor("No bootable device", bootTimeout)
	t.Logf("unregistered machine gave up %s after QEMU started", time.Since(strayStart).Round(100*time.Millisecond))
	stray.Stop()
	if strings.Contains(stray.Output(), qemu.MarkerBooted) {
		t.Error("the unregistered machine booted the live system")
	}
	if !strings.Contains(server.Output(), strayMAC) {
		t.Errorf("rackflow-pxe did not log the unregistered MAC %s", strayMAC)
	}
	if t.Failed() {
		t.Logf("serial console of %s:\n%s", vmMAC, serial)
	}
}

// lineWith returns the first line of out holding marker, from marker to
// the line's end (console escapes may precede it).
func lineWith(out, marker string) string {
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, marker); i >= 0 {
			return strings.TrimRight(l[i:], "\r")
		}
	}
	return ""
}

func httpGet(t *testing.T, hc *http.Client, url string, wantStatus int) string {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Errorf("GET %s: %s, want %d", url, resp.Status, wantStatus)
	}
	return string(b)
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// requireQEMU skips t unless QEMU tests were asked for (make test-qemu)
// and fails it when their tools are missing; its context ends with t.
func requireQEMU(t *testing.T) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot test: skipped with -short")
	}
	if os.Getenv("RACKFLOW_QEMU") != "1" {
		t.Skip("QEMU boot test: set RACKFLOW_QEMU=1 to run it (make test-qemu)")
	}
	netns.Require(t, nil)
	qemu.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// qemuLab is rackflow-pxe in a server namespace, and a rack namespace
// whose bridge joins it to two tap devices for VMs; nothing of it is
// visible to the host.
//
//	[srv ns] eth0 10.98.0.1 (rackflow-pxe) ==veth== port0 [rack ns: br0 + tap0, tap1 -> QEMU]
type qemuLab struct {
	dir       string
	srv, rack *netns.NS
	server    *netns.Process
	// dial connects from the server namespace, as a worker on the boot
	// network would; hc and api use it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	hc   *http.Client
	api  *client.Client
	// The live system's kernel, and the download cache, for more images.
	kernel qemu.Kernel
	cache  string
	token  string // the lease API's bearer token
}

// startQEMULab builds the live system (with live's extras; cmdline is
// added to its kernel command line), starts rackflow-pxe and checks that
// TFTP answers on the segment.
func startQEMULab(t *testing.T, ctx context.Context, live qemu.LiveOptions, cmdline string) *qemuLab {
	t.Helper()
	dir := t.TempDir()
	bootDir := filepath.Join(dir, "boot")
	tftpDir := filepath.Join(dir, "tftp")
	for _, d := range []string{bootDir, tftpDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// The live system: Debian's kernel and a busybox initramfs.
	start := time.Now()
	cache, err := qemu.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := qemu.FetchKernel(ctx, cache)
	if err != nil {
		t.Fatalf("fetch kernel: %v", err)
	}
	if err := copyFile(kernel.Vmlinuz, filepath.Join(bootDir, "vmlinuz")); err != nil {
		t.Fatal(err)
	}
	if err := qemu.LiveInitramfs(ctx, filepath.Join(bootDir, "initrd.img"), cache, kernel, live); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	tftpFile := []byte("rackflow tftp check\n")
	if err := os.WriteFile(filepath.Join(tftpDir, "undionly.kpxe"), tftpFile, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "rackflow-pxe")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/rackflow/rackflow/pxe/cmd/rackflow-pxe").CombinedOutput(); err != nil {
		t.Fatalf("build rackflow-pxe: %v\n%s", err, out)
	}
	t.Logf("kernel %s, initramfs and rackflow-pxe ready in %s", kernel.Package, time.Since(start).Round(time.Millisecond))

	// The lab.
	srv := netns.New(t, "pxe")
	rack := netns.New(t, "rack")
	netns.Veth(t, srv, "eth0", rack, "port0")
	srv.AddAddr("eth0", serverIP+"/24")
	for _, tap := range []string{"tap0", "tap1"} {
		rack.Run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
		rack.Run("ip", "link", "set", tap, "up")
	}
	rack.Bridge("br0", "port0", "tap0", "tap1")
	// The test's own TFTP check comes from this address on the bridge.
	rack.AddAddr("br0", "10.98.0.2/24")

	token := randHex(t, 16)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	server := srv.Start(bin,
		"-api-addr", serverIP+":8080",
		"-token-file", tokenFile,
		"-state-file", filepath.Join(dir, "leases.json"),
		"-public-url", publicURL,
		"-boot-dir", bootDir,
		"-cmdline", strings.TrimSpace("console=ttyS0,115200 panic=-1 "+cmdline),
		"-dhcp-interface", "eth0",
		"-dhcp-lease-time", "10m",
		"-tftp-root", tftpDir,
		"-tftp-addr", serverIP+":69",
		"-log-level", "debug",
	)
	for _, line := range []string{"pxe api listening", "dhcp: serving", "tftp: serving"} {
		server.WaitFor(line, 20*time.Second)
	}

	// TFTP answers on the segment (the iPXE ROM is already iPXE, so the
	// boot itself does not need it).
	got := filepath.Join(dir, "tftp-got")
	if out, err := rack.Exec(ctx, "busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", got, serverIP); err != nil {
		t.Fatalf("TFTP from the rack: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, tftpFile) {
		t.Errorf("TFTP from the rack got %q, want %q", b, tftpFile)
	}

	l := &qemuLab{dir: dir, srv: srv, rack: rack, server: server, kernel: kernel, cache: cache, token: token}
	l.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := srv.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	l.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: l.dial}}
	l.api = client.New(publicURL, token, l.hc)
	return l
}

// registerLive registers mac for a live boot, with authorized keys for
// the live system's sshd, and returns the lease and the host key to pin.
func (l *qemuLab) registerLive(t *testing.T, ctx context.Context, mac, ip, bootID string, keys ...string) (lease.Lease, ssh.PublicKey) {
	t.Helper()
	live, err := l.api.Put(ctx, lease.Lease{MAC: mac, IP: ip, Netmask: "255.255.255.0", Gateway: serverIP,
		Hostname: "vm1", Profile: lease.ProfileLive, BootID: bootID, SSHAuthorizedKeys: keys})
	if err != nil {
		t.Fatalf("register lease: %v", err)
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey([]byte(live.HostKey))
	if err != nil {
		t.Fatalf("lease host key %q: %v", live.HostKey, err)
	}
	return live, pinned
}
