package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/testpki"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yamlFile := filepath.Join(dir, "pxe.yaml")
	if err := os.WriteFile(yamlFile, []byte("api_addr: 127.0.0.1:9000\nstate_file: /yaml/leases.json\nboot_dir: /yaml/boot\ntoken_file: "+tokenFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("api_adr: x\n"), 0o600)

	tests := map[string]struct {
		args    []string
		env     map[string]string
		want    func(*config)
		wantErr string
	}{
		"yaml only": {
			args: []string{"-config", yamlFile},
			env:  map[string]string{},
			want: func(c *config) {
				c.APIAddr, c.StateFile, c.BootDir, c.TokenFile, c.Token = "127.0.0.1:9000", "/yaml/leases.json", "/yaml/boot", tokenFile, "from-file"
			},
		},
		"env beats yaml, flag beats env": {
			args: []string{"-state-file", "/flag/leases.json"},
			env: map[string]string{"RACKFLOW_PXE_CONFIG": yamlFile, "RACKFLOW_PXE_STATE_FILE": "/env/leases.json",
				"RACKFLOW_PXE_BOOT_DIR": "/env/boot", "RACKFLOW_PXE_TOKEN": "from-env"},
			want: func(c *config) {
				c.APIAddr, c.StateFile, c.BootDir, c.TokenFile, c.Token = "127.0.0.1:9000", "/flag/leases.json", "/env/boot", tokenFile, "from-env"
			},
		},
		"defaults with a token in the environment": {
			want: func(c *config) { c.Token = "t" },
		},
		"separate listeners, TLS and a connection cap": {
			args: []string{"-api-addr", "127.0.0.1:9443", "-boot-addr", "10.0.0.2:8080", "-tls-cert", "/etc/pxe/tls.crt",
				"-tls-key", "/etc/pxe/tls.key", "-max-conns", "64"},
			want: func(c *config) {
				c.Token, c.APIAddr, c.BootAddr, c.TLSCert, c.TLSKey, c.MaxConns = "t", "127.0.0.1:9443", "10.0.0.2:8080", "/etc/pxe/tls.crt", "/etc/pxe/tls.key", "64"
			},
		},
		"no token":              {env: map[string]string{}, wantErr: "token is required"},
		"blank env token":       {env: map[string]string{"RACKFLOW_PXE_TOKEN": " \n"}, wantErr: "RACKFLOW_PXE_TOKEN holds only blanks"},
		"unknown yaml key":      {args: []string{"-config", badYAML}, wantErr: "api_adr"},
		"bad public url":        {args: []string{"-public-url", "10.0.0.2:8080"}, wantErr: "public-url"},
		"bad prune":             {args: []string{"-prune-interval", "soon"}, wantErr: "prune-interval"},
		"stray argument":        {args: []string{"extra"}, wantErr: "unexpected arguments"},
		"missing token file":    {args: []string{"-token-file", filepath.Join(dir, "nope")}, env: map[string]string{}, wantErr: "read token file"},
		"tls cert without key":  {args: []string{"-tls-cert", "/etc/pxe/tls.crt"}, wantErr: "tls-cert and tls-key go together"},
		"boot-addr is api-addr": {args: []string{"-api-addr", "127.0.0.1:9000", "-boot-addr", "127.0.0.1:9000"}, wantErr: "own address"},
		"bad max-conns":         {args: []string{"-max-conns", "0"}, wantErr: "max-conns"},
		"dhcp and tftp from env, script url from public url": {
			env: map[string]string{"RACKFLOW_PXE_TOKEN": "t", "RACKFLOW_PXE_DHCP_INTERFACE": "br-mgmt", "RACKFLOW_PXE_PUBLIC_URL": "http://10.0.0.2:8080/",
				"RACKFLOW_PXE_DHCP_LEASE_TIME": "10m", "RACKFLOW_PXE_DHCP_PROXY": "true", "RACKFLOW_PXE_BOOT_FILE_BIOS": "ipxe.pxe",
				"RACKFLOW_PXE_TFTP_ROOT": "/srv/tftp", "RACKFLOW_PXE_TFTP_ADDR": "10.0.0.2:69"},
			want: func(c *config) {
				c.Token, c.DHCPInterface, c.PublicURL, c.DHCPLeaseTime, c.DHCPProxy, c.BootFileBIOS = "t", "br-mgmt", "http://10.0.0.2:8080/", "10m", "true", "ipxe.pxe"
				c.IPXEScriptURL, c.TFTPRoot, c.TFTPAddr = "http://10.0.0.2:8080/boot/{mac}.ipxe", "/srv/tftp", "10.0.0.2:69"
			},
		},
		"explicit script url wins": {
			args: []string{"-dhcp-interface", "eth1", "-dhcp-server-ip", "10.0.0.2", "-ipxe-script-url", "http://boot.example/s/{mac}"},
			want: func(c *config) {
				c.Token, c.DHCPInterface, c.DHCPServerIP, c.IPXEScriptURL = "t", "eth1", "10.0.0.2", "http://boot.example/s/{mac}"
			},
		},
		"dhcp settings unchecked while dhcp is off": {
			args: []string{"-dhcp-lease-time", "soon"},
			want: func(c *config) { c.Token, c.DHCPLeaseTime = "t", "soon" },
		},
		"dhcp without any script url": {args: []string{"-dhcp-interface", "eth1"}, wantErr: "public-url"},
		"dhcp bad lease time": {
			args:    []string{"-dhcp-interface", "eth1", "-public-url", "http://10.0.0.2", "-dhcp-lease-time", "5s"},
			wantErr: "dhcp-lease-time",
		},
		"dhcp bad proxy": {
			args:    []string{"-dhcp-interface", "eth1", "-public-url", "http://10.0.0.2", "-dhcp-proxy", "maybe"},
			wantErr: "dhcp-proxy",
		},
		"dhcp ipv6 server ip": {
			args:    []string{"-dhcp-interface", "eth1", "-public-url", "http://10.0.0.2", "-dhcp-server-ip", "fd00::2"},
			wantErr: "dhcp-server-ip",
		},
		"dhcp bad http boot file": {
			args:    []string{"-dhcp-interface", "eth1", "-public-url", "http://10.0.0.2", "-boot-file-http", "ipxe.efi"},
			wantErr: "boot-file-http",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			env := tc.env
			if env == nil {
				env = map[string]string{"RACKFLOW_PXE_TOKEN": "t"}
			}
			got, err := loadConfig(tc.args, envFrom(env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := config{APIAddr: pxe.DefaultAddr, MaxConns: "1024", StateFile: "/var/lib/rackflow-pxe/leases.json", Kernel: "vmlinuz",
				Initrd: "initrd.img", PruneInterval: "1m", LogLevel: "info", DHCPLeaseTime: "1h", DHCPProxy: "false"}
			tc.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTokenMisuseRefused: the token never comes from the command line (ps
// shows it to every user) or the YAML file, nor from a file others may read,
// and an empty one is no token. Each refusal says what to do instead.
func TestTokenMisuseRefused(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	yamlToken := file("token.yaml", "token: from-yaml\n", 0o600)
	tests := map[string]struct {
		args      []string
		wantErr   []string // all in the error; none: accepted
		wantToken string
	}{
		"token flag":              {args: []string{"-token", "t"}, wantErr: []string{"-token is gone", "-token-file", "RACKFLOW_PXE_TOKEN"}},
		"token flag with =":       {args: []string{"--token=t", "-state-file", "/x"}, wantErr: []string{"-token is gone"}},
		"token flag after others": {args: []string{"-state-file", "/x", "-token", "t"}, wantErr: []string{"-token is gone"}},
		"yaml token key":          {args: []string{"-config", yamlToken}, wantErr: []string{"token_file", "RACKFLOW_PXE_TOKEN"}},
		"world-readable file":     {args: []string{"-token-file", file("t644", "tok\n", 0o644)}, wantErr: []string{"mode 0644", "chmod 600 " + filepath.Join(dir, "t644")}},
		"group-readable file":     {args: []string{"-token-file", file("t640", "tok\n", 0o640)}, wantErr: []string{"mode 0640", "chmod 600"}},
		"group-writable file":     {args: []string{"-token-file", file("t620", "tok\n", 0o620)}, wantErr: []string{"chmod 600"}},
		"empty file":              {args: []string{"-token-file", file("empty", " \n", 0o600)}, wantErr: []string{"is empty"}},
		"a directory":             {args: []string{"-token-file", dir}, wantErr: []string{"not a regular file"}},
		"owner-only file":         {args: []string{"-token-file", file("t600", "tok\n", 0o600)}, wantToken: "tok"},
		"read-only file":          {args: []string{"-token-file", file("t400", "tok4\n", 0o400)}, wantToken: "tok4"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := loadConfig(tc.args, envFrom(nil), io.Discard)
			if len(tc.wantErr) == 0 {
				if err != nil || cfg.Token != tc.wantToken {
					t.Fatalf("token %q, err %v; want %q", cfg.Token, err, tc.wantToken)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, token %q; want an error with %q", cfg.Token, tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newClient(t *testing.T, base, token string) *client.Client {
	t.Helper()
	c, err := client.New(base, token, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunServesAndStops runs the whole command: a lease PUT through the
// client shows up in the boot script, the state survives a restart, and
// cancelling the context stops it cleanly.
func TestRunServesAndStops(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "leases.json")
	start := func() (string, *lockedBuffer, context.CancelFunc, chan error) {
		addr := freePort(t)
		logs := &lockedBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"-api-addr", addr, "-state-file", state, "-boot-dir", dir, "-public-url", "http://" + addr},
				envFrom(map[string]string{"RACKFLOW_PXE_TOKEN": "run-token"}), logs)
		}()
		for range 200 {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return "http://" + addr, logs, cancel, done
			}
			select {
			case err := <-done:
				t.Fatalf("run exited early: %v\n%s", err, logs)
			case <-time.After(25 * time.Millisecond):
			}
		}
		t.Fatalf("run never listened on %s:\n%s", addr, logs)
		return "", nil, nil, nil
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("run did not stop")
		}
	}

	base, logs, cancel, done := start()
	ctx := context.Background()
	c := newClient(t, base, "run-token")
	// The lease is at 127.0.0.7, where the request below comes from: boot
	// routes answer only a lease's own address.
	l, err := c.Put(ctx, lease.Lease{MAC: "52:54:00:12:34:56", IP: "127.0.0.7", Netmask: "255.0.0.0", Profile: lease.ProfileDisk})
	if err != nil {
		t.Fatal(err)
	}
	fromHost := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}).DialContext}}
	resp, err := fromHost.Get(base + "/boot/52:54:00:12:34:56.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "#!ipxe\nsanboot --no-describe --drive 0x80\n" {
		t.Errorf("boot script %q", body)
	}
	stop(cancel, done)
	if strings.Contains(logs.String(), "run-token") {
		t.Errorf("logs show the token:\n%s", logs)
	}

	base, _, cancel, done = start()
	got, err := newClient(t, base, "run-token").Get(ctx, l.MAC)
	if err != nil {
		t.Fatalf("lease after restart: %v", err)
	}
	if diff := cmp.Diff(l, got); diff != "" {
		t.Errorf("lease after restart (-before +after):\n%s", diff)
	}
	if _, err := newClient(t, base, "wrong").List(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("wrong token: %v, want ErrUnauthorized", err)
	}
	stop(cancel, done)
}

// startRun runs the command with args (plus a fresh state file and token)
// until the test ends, and waits until its HTTP API answers.
func startRun(t *testing.T, args ...string) (base string, logs *lockedBuffer) {
	t.Helper()
	addr := freePort(t)
	logs = &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	args = append([]string{"-api-addr", addr, "-state-file", filepath.Join(t.TempDir(), "leases.json"),
		"-public-url", "http://" + addr}, args...)
	go func() { done <- run(ctx, args, envFrom(map[string]string{"RACKFLOW_PXE_TOKEN": "run-token"}), logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not stop within 10s")
		}
		if t.Failed() {
			t.Logf("rackflow-pxe log:\n%s", logs)
		}
	})
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr, logs
		}
		select {
		case err := <-done:
			t.Fatalf("run exited early: %v\n%s", err, logs)
		case <-time.After(25 * time.Millisecond):
		}
	}
	t.Fatalf("run never listened on %s:\n%s", addr, logs)
	return "", nil
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestRunServesTFTP fetches an iPXE binary from the TFTP server the command
// starts when tftp-root is set, with a real TFTP client on loopback.
func TestRunServesTFTP(t *testing.T) {
	root := t.TempDir()
	want := make([]byte, 70_000) // several blocks, not a multiple of 512
	for i := range want {
		want[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(root, "undionly.kpxe"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	tftpAddr := freeUDPPort(t)
	_, logs := startRun(t, "-tftp-root", root, "-tftp-addr", tftpAddr)

	c, err := tftp.NewClient(tftpAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	var got bytes.Buffer
	var fetchErr error
	// The TFTP goroutine may bind a moment after the HTTP listener.
	for range 20 {
		got.Reset()
		var wt io.WriterTo
		if wt, fetchErr = c.Receive("undionly.kpxe", "octet"); fetchErr == nil {
			_, fetchErr = wt.WriteTo(&got)
		}
		if fetchErr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fetchErr != nil {
		t.Fatalf("TFTP fetch: %v", fetchErr)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("TFTP file: got %d bytes, want the %d written", got.Len(), len(want))
	}
	if _, err := c.Receive("../leases.json", "octet"); err == nil {
		t.Error("TFTP served a name outside tftp-root")
	}
	if !strings.Contains(logs.String(), "dhcp disabled") {
		t.Errorf("log does not say DHCP is disabled:\n%s", logs)
	}
}

// TestRunServesDHCP registers a lease through the API and asks the DHCP
// server the command starts on loopback for it, as iPXE would: the OFFER
// carries the leased address and the per-MAC script URL built from
// public-url. An unregistered MAC gets no answer.
func TestRunServesDHCP(t *testing.T) {
	if testing.Short() {
		t.Skip("binds the DHCP socket to lo (SO_BINDTODEVICE, root): skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("binding the DHCP socket to an interface (SO_BINDTODEVICE) needs root")
	}
	dhcpAddr := freeUDPPort(t)
	base, _ := startRun(t, "-dhcp-interface", "lo", "-dhcp-addr", dhcpAddr, "-dhcp-lease-time", "7m")
	ctx := context.Background()
	if _, err := newClient(t, base, "run-token").Put(ctx, lease.Lease{MAC: "52:54:00:12:34:56", IP: "10.0.0.7",
		Netmask: "255.255.255.0", Gateway: "10.0.0.1", Profile: lease.ProfileLive}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to, _ := net.ResolveUDPAddr("udp4", dhcpAddr)

	ask := func(mac string, wait time.Duration) *dhcpv4.DHCPv4 {
		t.Helper()
		hw, _ := net.ParseMAC(mac)
		req, err := dhcpv4.NewDiscovery(hw,
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{0xb1, 0x01, 0x01})))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(wait)
		buf := make([]byte, 2048)
		for time.Now().Before(deadline) {
			if _, err := conn.WriteTo(req.ToBytes(), to); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				continue // not listening yet, or no answer
			}
			reply, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			return reply
		}
		return nil
	}
	offer := ask("52:54:00:12:34:56", 5*time.Second)
	if offer == nil {
		t.Fatal("no OFFER for the registered MAC")
	}
	got := map[string]string{
		"type":   offer.MessageType().String(),
		"yiaddr": offer.YourIPAddr.String(),
		"file":   offer.BootFileName,
		"router": fmt.Sprint(offer.Router()),
		"lease":  offer.IPAddressLeaseTime(0).String(),
	}
	want := map[string]string{
		"type":   "OFFER",
		"yiaddr": "10.0.0.7",
		"file":   base + "/boot/52:54:00:12:34:56.ipxe",
		"router": "[10.0.0.1]",
		"lease":  "7m0s",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OFFER (-want +got):\n%s", diff)
	}
	if r := ask("52:54:00:99:99:99", time.Second); r != nil {
		t.Errorf("unregistered MAC got a %s", r.MessageType())
	}
}

// TestRunSplitListenersWithTLS runs the command as in production: the lease
// API over TLS on api-addr, the boot routes in plain HTTP on boot-addr, the
// token from a file of mode 0600. A PUT with the right token to the boot
// listener is 404; the worker's client reaches the API only with the CA.
func TestRunSplitListenersWithTLS(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("split-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apiAddr, bootAddr := freePort(t), freePort(t)
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-api-addr", apiAddr, "-boot-addr", bootAddr, "-tls-cert", pki.Cert, "-tls-key", pki.Key,
			"-token-file", tokenFile, "-state-file", filepath.Join(dir, "leases.json"), "-public-url", "http://" + bootAddr, "-max-conns", "16"},
			envFrom(nil), logs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	})
	for _, addr := range []string{apiAddr, bootAddr} {
		ok := false
		for range 200 {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				ok = true
				break
			}
			select {
			case err := <-done:
				t.Fatalf("run exited early: %v\n%s", err, logs)
			case <-time.After(25 * time.Millisecond):
			}
		}
		if !ok {
			t.Fatalf("run never listened on %s:\n%s", addr, logs)
		}
	}

	c, err := client.New("https://"+apiAddr, "split-token", client.Options{CAFile: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	l := lease.Lease{MAC: "52:54:00:12:34:56", IP: "127.0.0.7", Netmask: "255.0.0.0", Profile: lease.ProfileDisk}
	if _, err := c.Put(ctx, l); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	send := func(method, url, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer split-token")
		hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}).DialContext}}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	got := map[string]int{
		"PUT lease on boot-addr":   send("PUT", "http://"+bootAddr+"/v1/leases/52:54:00:12:34:56", `{"ip":"127.0.0.9","netmask":"255.0.0.0","profile":"live"}`),
		"GET leases on boot-addr":  send("GET", "http://"+bootAddr+"/v1/leases", ""),
		"metrics on boot-addr":     send("GET", "http://"+bootAddr+"/metrics", ""),
		"boot script on boot-addr": send("GET", "http://"+bootAddr+"/boot/52:54:00:12:34:56.ipxe", ""),
	}
	want := map[string]int{"PUT lease on boot-addr": 404, "GET leases on boot-addr": 404, "metrics on boot-addr": 404, "boot script on boot-addr": 200}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("boot listener (-want +got):\n%s", diff)
	}
	if after, err := c.Get(ctx, l.MAC); err != nil || after.IP != "127.0.0.7" {
		t.Errorf("lease after the boot-network PUT: %+v, %v; want it unchanged", after, err)
	}
	if _, err := newClient(t, "https://"+apiAddr, "split-token").List(ctx); err == nil {
		t.Error("the API answered a client that does not trust its CA")
	}
}
