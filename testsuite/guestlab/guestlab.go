// Package guestlab builds, for tests, the network a multi-NIC VM lives in,
// on the real Linux network stack: a "guest" namespace with eth0 on the DMZ
// (its default route) and eth1 on the security area's network (down and
// unconfigured, as a freshly hot-plugged NIC), a router between that network
// and a "legacy database" subnet, and a TCP listener on the database. The
// guest runs a real OpenSSH sshd in a private mount namespace whose /etc is
// a private copy and whose /run is a private tmpfs, so what the guest writes
// to /etc/netplan, /etc/network or /run stays out of the test host's own.
//
// Topology (all inside namespaces the lab creates):
//
//	dmz  br0 10.50.0.1/24 ── eth0 10.50.0.10/24 guest (default via 10.50.0.1)
//	                         eth1 (down)  ── sec0 10.51.0.1/24 router db0 10.52.0.1/24 ── eth0 10.52.0.20/24 db (:5432)
//
// The test process reaches the guest's sshd through a forwarder: a listener
// on 127.0.0.1 in the test's namespace whose connections are dialled from
// inside the dmz namespace to the guest's eth0 address, as a worker reaches
// a VM on its primary address: the guest sees the session come from
// 10.50.0.1 (SSHPeer) to 10.50.0.10. No interface or address is added to the
// test's namespace.
//
// Besides root, a test can add guest users (AddUser) that log in with the
// same key, with or without a sudoers drop-in, as a stock cloud image's
// default user (root SSH forbidden, passwordless sudo) or a plain one.
//
// It is not for production; it needs root, iproute2, openssh-server,
// util-linux (unshare), coreutils (cp) and sudo.
package guestlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/netns"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// The lab's addresses.
const (
	Eth0MAC     = "52:54:00:50:00:0a"
	Eth1MAC     = "52:54:00:51:00:0a"
	GuestDMZ    = "10.50.0.10/24"
	DMZGateway  = "10.50.0.1"
	GuestSecnet = "10.51.0.10/24" // what CloudStack assigns eth1
	SecGateway  = "10.51.0.1"
	DBNet       = "10.52.0.0/24"
	DBAddr      = "10.52.0.20:5432"
	// Credential is the secret name of the guest's root key in Secrets.
	Credential = "ssh/guest"
	// SSHPeer is where the guest sees SSH sessions come from.
	SSHPeer = DMZGateway
)

// Flavours of the guest's network configuration.
const (
	FlavourNone     = ""
	FlavourNetplan  = "netplan"
	FlavourIfupdown = "ifupdown"
)

// Options configures a Lab.
type Options struct {
	// Flavour is the guest's persistent network configuration: an empty
	// /etc/netplan (netplan is detected only where the netplan binary is
	// installed), an /etc/network/interfaces that sources interfaces.d, or
	// neither.
	Flavour string
	// Networkd runs a real systemd-networkd (and the D-Bus system bus
	// networkctl talks to it over) in the guest, in the sessions' mount
	// namespace, as on a netplan cloud image. It needs a read-only /sys in
	// the guest (networkd then does not wait for udev, as in a container).
	Networkd bool
}

// NetworkdBinary is systemd-networkd on Debian.
const NetworkdBinary = "/lib/systemd/systemd-networkd"

// Lab is a running lab.
type Lab struct {
	Guest, DMZ, Router, DB *netns.NS
	// Target logs in to the guest's sshd as root.
	Target remote.Target
	// Secrets holds the key for Target.Credential.
	Secrets secrets.Static
	// Etc is the host path of the guest's private /etc.
	Etc string

	nextU   int
	state   string // pid files and logs of the guest's daemons (Networkd)
	keysDir string // where sshd's authorized_keys is

	mu    sync.Mutex
	peers []string
}

// Require fails t unless the lab's tools are there (skips under -short).
func Require(t testing.TB) {
	t.Helper()
	netns.Require(t, map[string]string{"unshare": "util-linux", "ss": "iproute2", "bash": "bash", "timeout": "coreutils", "sudo": "sudo"})
	if _, err := os.Stat(sshd.Binary); err != nil {
		t.Fatal(sshd.ErrNotInstalled)
	}
}

// Start builds the lab; everything is removed when the test ends.
func Start(t *testing.T, opts Options) *Lab {
	t.Helper()
	Require(t)
	l := &Lab{
		Guest:  netns.New(t, "guest"),
		DMZ:    netns.New(t, "dmz"),
		Router: netns.New(t, "router"),
		DB:     netns.New(t, "db"),
	}

	netns.Veth(t, l.Guest, "eth0", l.DMZ, "guest0")
	l.DMZ.Bridge("br0", "guest0")
	l.DMZ.AddAddr("br0", DMZGateway+"/24")
	l.Guest.SetMAC("eth0", Eth0MAC)
	l.Guest.AddAddr("eth0", GuestDMZ)
	l.Guest.Run("ip", "route", "add", "default", "via", DMZGateway, "dev", "eth0")

	netns.Veth(t, l.Guest, "eth1", l.Router, "sec0")
	l.Guest.SetMAC("eth1", Eth1MAC)
	l.Guest.Run("ip", "link", "set", "eth1", "down")
	l.Router.AddAddr("sec0", SecGateway+"/24")

	netns.Veth(t, l.Router, "db0", l.DB, "eth0")
	l.Router.AddAddr("db0", "10.52.0.1/24")
	l.Router.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	l.DB.AddAddr("eth0", "10.52.0.20/24")
	l.DB.Run("ip", "route", "add", "default", "via", "10.52.0.1")
	l.startDB(t)

	l.Etc = filepath.Join(t.TempDir(), "etc")
	if out, err := exec.Command("cp", "-a", "/etc", l.Etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc for the guest: %v: %s", err, out)
	}
	for _, d := range []string{"netplan", "network", "NetworkManager"} {
		if err := os.RemoveAll(filepath.Join(l.Etc, d)); err != nil {
			t.Fatal(err)
		}
	}
	switch opts.Flavour {
	case FlavourNetplan:
		mkdir(t, filepath.Join(l.Etc, "netplan"))
	case FlavourIfupdown:
		// As the ifupdown package installs it: the hook directories
		// ifup's run-parts reads, empty here.
		for _, d := range []string{"interfaces.d", "if-pre-up.d", "if-up.d", "if-down.d", "if-post-down.d"} {
			mkdir(t, filepath.Join(l.Etc, "network", d))
		}
		writeFile(t, filepath.Join(l.Etc, "network", "interfaces"),
			"source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n")
	case FlavourNone:
	default:
		t.Fatalf("guestlab: unknown flavour %q", opts.Flavour)
	}

	setup := `mount --bind "$0" /etc && mount -t tmpfs rackflow-guest-run /run && mkdir -m 755 /run/sshd /run/network`
	if opts.Networkd {
		if _, err := os.Stat(NetworkdBinary); err != nil {
			t.Fatal("guestlab: Networkd needs systemd-networkd (Debian package systemd)")
		}
		l.state = t.TempDir()
		setup += ` && umount /sys && mount -t sysfs -o ro rackflow-guest-sys /sys` +
			` && mkdir -p /run/dbus /run/systemd && dbus-daemon --system --fork --nopidfile --print-pid > ` + l.state + `/dbus.pid` +
			` && ` + l.networkdStart()
		t.Cleanup(func() { l.killState("networkd.pid"); l.killState("dbus.pid") })
	}
	key := sshd.TestKey(t)
	fwd := l.forward(t)
	_, port, _ := net.SplitHostPort(fwd)
	srv := sshd.Start(t, sshd.Options{
		// Inside the guest namespace; the forwarder's port is free there
		// as the namespace is new.
		ListenAddr:     net.JoinHostPort("0.0.0.0", port),
		AuthorizedKeys: []ssh.PublicKey{key.Public()},
		Wrapper: []string{"ip", "netns", "exec", l.Guest.Name,
			"unshare", "--mount", "--propagation", "private",
			"sh", "-c", setup + ` && exec "$@"`, l.Etc},
	})
	l.keysDir = filepath.Dir(srv.Config().Path)
	l.Target = remote.Target{Addr: fwd, User: "root", Credential: Credential, HostKey: srv.HostKeyLine()}
	l.Secrets = secrets.Static{Credential: {PrivateKey: key.PEM}}
	return l
}

// forward listens on 127.0.0.1:PORT in the test's namespace and connects
// each connection, from inside the dmz namespace, to the guest's eth0
// address and PORT, where sshd listens. It returns the address.
func (l *Lab) forward(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	guestAddr := net.JoinHostPort(strings.Split(GuestDMZ, "/")[0], port)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var up net.Conn
			err = l.DMZ.Do(func() (err error) {
				up, err = net.DialTimeout("tcp", guestAddr, 2*time.Second)
				return err
			})
			if err != nil {
				c.Close()
				continue
			}
			track(c, true)
			track(up, true)
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
				track(dst, false)
				track(src, false)
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return addr
}

// startDB listens on DBAddr inside the db namespace and records the source
// address of every connection.
func (l *Lab) startDB(t *testing.T) {
	var ln net.Listener
	if err := l.DB.Do(func() (err error) {
		ln, err = net.Listen("tcp", DBAddr)
		return err
	}); err != nil {
		t.Fatalf("db listener: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Logf("db accept: %v", err)
				}
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			l.mu.Lock()
			l.peers = append(l.peers, host)
			l.mu.Unlock()
			c.Close()
		}
	}()
}

// DBPeers lists the source address of every connection the database got.
func (l *Lab) DBPeers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.peers...)
}

// GuestRun runs a command in the guest namespace (not through SSH) and
// returns its output, failing the test on error.
func (l *Lab) GuestRun(args ...string) string {
	return l.Guest.Run(args[0], args[1:]...)
}

// GuestState is the guest's network state a test compares before and
// after: eth1's link and addresses, every routing table, the rules.
func (l *Lab) GuestState(ctx context.Context) (string, error) {
	var out string
	for _, args := range [][]string{
		{"ip", "-4", "-o", "addr", "show"},
		{"ip", "-o", "link", "show", "eth1"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-4", "rule", "show"},
	} {
		o, err := l.Guest.Exec(ctx, args[0], args[1:]...)
		if err != nil {
			return "", err
		}
		out += fmt.Sprintf("$ %v\n%s", args, o)
	}
	return out, nil
}

// AddUser creates a user in the guest's /etc (passwd, shadow, group; no
// password, not locked, shell /bin/sh, home /tmp) who logs in with the
// lab's key, and returns its Target. With sudo, a drop-in
// /etc/sudoers.d/rackflow-NAME lets it run anything as root without a
// password, as cloud-init sets up an image's default user; without, sudo
// has no rule for it.
func (l *Lab) AddUser(t *testing.T, name string, sudo bool) remote.Target {
	t.Helper()
	// sshd reads authorized_keys as the user: let it through the test's
	// 0700 temporary directories (search only; the host key stays 0600).
	for d := l.keysDir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.Lock()
	l.nextU++
	uid := 4100 + l.nextU
	l.mu.Unlock()
	appendFile(t, filepath.Join(l.Etc, "passwd"), fmt.Sprintf("%s:x:%d:%d:rackflow lab:/tmp:/bin/sh\n", name, uid, uid))
	appendFile(t, filepath.Join(l.Etc, "group"), fmt.Sprintf("%s:x:%d:\n", name, uid))
	appendFile(t, filepath.Join(l.Etc, "shadow"), name+":*:20000:0:99999:7:::\n")
	if sudo {
		// visudo's rules for a drop-in: owned by root, mode 0440.
		p := filepath.Join(l.Etc, "sudoers.d", "rackflow-"+name)
		if err := os.WriteFile(p, []byte(name+" ALL=(root) NOPASSWD: ALL\n"), 0o440); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("visudo", "-c", "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("visudo -c %s: %v: %s", p, err, out)
		}
	}
	tg := l.Target
	tg.User = name
	return tg
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// networkdStart is the shell line that starts networkd in the background,
// its pid in the state directory.
func (l *Lab) networkdStart() string {
	return `(container=rackflow-guestlab setsid sh -c 'echo $$ > ` + l.state + `/networkd.pid; exec ` + NetworkdBinary + `' >> ` + l.state + `/networkd.log 2>&1 < /dev/null &)`
}

func (l *Lab) killState(name string) {
	b, err := os.ReadFile(filepath.Join(l.state, name))
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// NetworkdLog is what the guest's networkd logged.
func (l *Lab) NetworkdLog() string {
	b, _ := os.ReadFile(filepath.Join(l.state, "networkd.log"))
	return string(b)
}

// RootSSH runs a shell line in the guest as root over SSH (in the guest's
// mount namespace) and returns its output, failing the test on error.
func (l *Lab) RootSSH(t *testing.T, cmd string) string { t.Helper(); return l.rootSSH(t, cmd) }

func (l *Lab) rootSSH(t *testing.T, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := (&remote.Dialer{Secrets: l.Secrets}).Dial(ctx, l.Target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, errOut, code, err := remote.Run(ctx, c, cmd, nil)
	if err != nil || code != 0 {
		t.Fatalf("guest %q: exit %d %v: %s", cmd, code, err, errOut)
	}
	return string(out)
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
