package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/netns"
)

// The lab's boot network. Its first machine (on tap0) is LabVMMAC, given
// LabVMIP by tests that register it.
const (
	LabServerIP  = "10.98.0.1"
	LabPublicURL = "http://" + LabServerIP + ":8080"
	// LabAPIAddr is the lease API's address: the server namespace's
	// loopback, off the boot network, as in production.
	LabAPIAddr = "127.0.0.1:8081"
	LabVMMAC   = "52:54:00:98:00:11"
	LabVMIP    = "10.98.0.11"
	// BootTimeout is how long a boot may take: generous for TCG on 2 busy
	// cores, where one takes about a minute.
	BootTimeout = 3 * time.Minute
)

// IPXEDir holds Debian's iPXE builds (package ipxe); IPXEFiles are the
// ones the lab serves.
const IPXEDir = "/usr/lib/ipxe"

var IPXEFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// RequireLab skips t unless QEMU tests were asked for (RACKFLOW_QEMU=1,
// as make test-qemu does; never under -short) and fails it when their
// tools are missing. Its context ends with t, or after 10 minutes.
func RequireLab(t *testing.T) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot test: skipped with -short")
	}
	if os.Getenv("RACKFLOW_QEMU") != "1" {
		t.Skip("QEMU boot test: set RACKFLOW_QEMU=1 to run it (make test-qemu)")
	}
	netns.Require(t, nil)
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Lab is rackflow-pxe in a server namespace, and a rack namespace whose
// bridge joins it to two tap devices for VMs; nothing of it is visible to
// the host.
//
//	[srv ns] eth0 10.98.0.1 (rackflow-pxe) ==veth== port0 [rack ns: br0 + tap0, tap1 -> QEMU]
type Lab struct {
	// Dir is the test's directory: boot files, state, VM disks.
	Dir string
	// Srv is the server namespace, Rack the machines'.
	Srv, Rack *netns.NS
	// Server is rackflow-pxe, running in Srv.
	Server *netns.Process
	// Dial connects from the server namespace, as a worker on the boot
	// network would; HTTP and API use it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HTTP is a client on the boot network.
	HTTP *http.Client
	// API is the lease API's client, with its token.
	API *client.Client
	// Kernel is the live system's kernel and Cache the download cache, for
	// more images.
	Kernel Kernel
	Cache  string
	// Token is the lease API's bearer token.
	Token string
}

// StartLab builds the live system (with live's extras; cmdline is added
// to its kernel command line), starts rackflow-pxe and checks that TFTP
// answers on the segment. Everything stops with t.
func StartLab(t *testing.T, ctx context.Context, live LiveOptions, cmdline string) *Lab {
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
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := FetchKernel(ctx, cache)
	if err != nil {
		t.Fatalf("fetch kernel: %v", err)
	}
	vmlinuz, err := os.ReadFile(kernel.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bootDir, "vmlinuz"), vmlinuz, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LiveInitramfs(ctx, filepath.Join(bootDir, "initrd.img"), cache, kernel, live); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	// Debian's iPXE builds, as a site serves them: undionly.kpxe for BIOS
	// PXE ROMs and ipxe.efi for UEFI PXE over TFTP, ipxe.efi over HTTP
	// for UEFI HTTP boot.
	for _, f := range IPXEFiles {
		b, err := os.ReadFile(filepath.Join(IPXEDir, f))
		if err != nil {
			t.Fatalf("iPXE boot file: %v (apt-get install ipxe)", err)
		}
		if err := os.WriteFile(filepath.Join(tftpDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bootDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tftpFile, err := os.ReadFile(filepath.Join(IPXEDir, "undionly.kpxe"))
	if err != nil {
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
	srv.AddAddr("eth0", LabServerIP+"/24")
	for _, tap := range []string{"tap0", "tap1"} {
		rack.Run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
		rack.Run("ip", "link", "set", tap, "up")
	}
	rack.Bridge("br0", "port0", "tap0", "tap1")
	// The lab's own TFTP check comes from this address on the bridge.
	rack.AddAddr("br0", "10.98.0.2/24")

	token := rand.Text()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	server := srv.Start(bin,
		"-api-addr", LabAPIAddr,
		"-boot-addr", LabServerIP+":8080",
		"-token-file", tokenFile,
		"-state-file", filepath.Join(dir, "leases.json"),
		"-public-url", LabPublicURL,
		"-boot-dir", bootDir,
		"-cmdline", strings.TrimSpace("console=ttyS0,115200 panic=-1 "+cmdline),
		"-dhcp-interface", "eth0",
		"-dhcp-lease-time", "10m",
		"-tftp-root", tftpDir,
		"-boot-file-uefi", "ipxe.efi",
		"-boot-file-http", LabPublicURL+"/files/ipxe.efi",
		"-tftp-addr", LabServerIP+":69",
		"-log-level", "debug",
	)
	for _, line := range []string{"pxe api listening", "dhcp: serving", "tftp: serving"} {
		server.WaitFor(line, 20*time.Second)
	}

	// TFTP answers on the segment (SeaBIOS machines boot through the
	// NIC's iPXE ROM and do not need it; UEFI PXE machines fetch ipxe.efi
	// from it).
	got := filepath.Join(dir, "tftp-got")
	if out, err := rack.Exec(ctx, "busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", got, LabServerIP); err != nil {
		t.Fatalf("TFTP from the rack: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, tftpFile) {
		t.Errorf("TFTP from the rack got %q, want %q", b, tftpFile)
	}

	l := &Lab{Dir: dir, Srv: srv, Rack: rack, Server: server, Kernel: kernel, Cache: cache, Token: token}
	l.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := srv.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	l.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: l.Dial}}
	api, err := client.New("http://"+LabAPIAddr, token, client.Options{HTTPClient: l.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	l.API = api
	return l
}

// RegisterLive registers mac for a live boot, with authorized keys for the
// live system's sshd, and returns the lease and the host key to pin.
func (l *Lab) RegisterLive(t *testing.T, ctx context.Context, mac, ip, bootID string, keys ...string) (lease.Lease, ssh.PublicKey) {
	t.Helper()
	live, err := l.API.Put(ctx, lease.Lease{MAC: mac, IP: ip, Netmask: "255.255.255.0", Gateway: LabServerIP,
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

// ConsoleLine returns the first line of a serial console's output holding
// marker, from marker to the line's end (console escapes may precede it),
// or "".
func ConsoleLine(out, marker string) string {
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, marker); i >= 0 {
			return strings.TrimRight(l[i:], "\r")
		}
	}
	return ""
}
