package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/testsuite/sshd"
)

// machine is one fake bare-metal host: power and boot device, set through
// its BMC (bmcEndpoint, on its own loopback address or shared with other
// hosts as a chassis manager is), and, when powered on, either a live system (an
// in-process SSH server keyed with the one-time host key it fetched from
// the pxe service) or its installed OS (an SSH server with the host's own
// key, only if the disk holds the image). The SSH servers listen on the
// host's own loopback IP and ports through a forwarder, since sshd.Fake
// picks its own port.
type machine struct {
	name    string
	mac     string
	ip      string
	bmcAddr string // ip:port of its BMC
	bmcUser string // unique on its BMC: the BMC tells its hosts apart by it
	bmcPass string
	disk    string
	chefDir string // where its fake chef-client records the converge
	osKey   []byte // PEM of the installed OS's host key
	osKeyPK ssh.PublicKey

	fleet *fleet

	mu       sync.Mutex
	power    bool
	bootDev  string // pxe or disk
	bootOnce bool   // next boot device applies once
	running  *endpoint
	liveKey  ssh.PublicKey // key of the last live system booted
	boots    []string      // what each power-on booted
	bootErrs []string
}

// fleet holds what the machines share.
type fleet struct {
	pxeURL    string
	livePort  int
	osPort    int
	workerPub ssh.PublicKey // the worker's login key, authorized on the OS
	imageSize int64
	imageSHA  string
	env       []string // environment of commands run on the hosts
}

// endpoint is an SSH server reachable at the machine's ip:port.
type endpoint struct {
	fake *sshd.Fake
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   map[net.Conn]struct{}
}

func startEndpoint(addr string, opts sshd.FakeOptions) (*endpoint, error) {
	f, err := sshd.NewFake(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	e := &endpoint{fake: f, ln: ln, cs: map[net.Conn]struct{}{}}
	e.wg.Add(1)
	go e.accept()
	return e, nil
}

func (e *endpoint) accept() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.forward(c)
		}()
	}
}

func (e *endpoint) track(c net.Conn, add bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if add {
		if e.cs == nil {
			return false
		}
		e.cs[c] = struct{}{}
	} else if e.cs != nil {
		delete(e.cs, c)
	}
	return true
}

func (e *endpoint) forward(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", e.fake.Addr())
	if err != nil {
		return
	}
	defer up.Close()
	if !e.track(c, true) || !e.track(up, true) {
		return
	}
	defer e.track(c, false)
	defer e.track(up, false)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// close cuts power: the listener, every connection and the server go.
func (e *endpoint) close() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.cs {
		c.Close()
	}
	e.cs = nil
	e.mu.Unlock()
	e.fake.Close()
	e.wg.Wait()
}

// setPower switches the machine. A power-on boots asynchronously, as
// firmware does: the BMC answers before the OS is up.
func (m *machine) setPower(state string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch state {
	case "off":
		m.stopLocked()
		m.power = false
		return nil
	case "on":
		if m.power {
			return nil
		}
	case "cycle", "reset":
		m.stopLocked()
	default:
		return fmt.Errorf("unknown power state %q", state)
	}
	m.power = true
	dev := m.bootDev
	if m.bootOnce {
		m.bootDev, m.bootOnce = "disk", false
	}
	gen := len(m.boots)
	m.boots = append(m.boots, dev)
	go m.boot(gen, dev)
	return nil
}

func (m *machine) stopLocked() {
	if m.running != nil {
		m.running.close()
		m.running = nil
	}
}

func (m *machine) bootErr(format string, a ...any) {
	m.mu.Lock()
	m.bootErrs = append(m.bootErrs, fmt.Sprintf(format, a...))
	m.mu.Unlock()
}

// boot does what the host does after power-on: PXE into the live system,
// or boot the disk if it holds the image.
func (m *machine) boot(gen int, dev string) {
	var ep *endpoint
	var liveKey ssh.PublicKey
	var err error
	if dev == "pxe" {
		ep, liveKey, err = m.bootLive()
	} else {
		ep, err = m.bootDisk()
	}
	if err != nil {
		m.bootErr("boot %d (%s): %v", gen, dev, err)
		return
	}
	if ep == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.boots)-1 != gen || !m.power {
		// Power was cut or cycled while booting.
		ep.close()
		return
	}
	m.running = ep
	if liveKey != nil {
		m.liveKey = liveKey
	}
}

// get fetches a boot URL as the machine: from its own loopback address,
// which is its lease's IP (boot routes answer no other).
func (m *machine) get(url string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(m.ip)}, Timeout: 10 * time.Second}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", strings.SplitN(url, "/v1/hostkeys/", 2)[0], resp.Status)
	}
	return b, nil
}

// bootLive fetches the iPXE script like iPXE does and, from the kernel
// command line in it, the one-time host key and the authorized keys, like
// the live system's init does.
func (m *machine) bootLive() (*endpoint, ssh.PublicKey, error) {
	script, err := m.get(m.fleet.pxeURL + "/boot/" + m.mac + ".ipxe")
	if err != nil {
		return nil, nil, fmt.Errorf("ipxe script: %w", err)
	}
	var hkURL, akURL string
	for _, f := range strings.Fields(string(script)) {
		if v, ok := strings.CutPrefix(f, "rackflow.hostkey_url="); ok {
			hkURL = v
		}
		if v, ok := strings.CutPrefix(f, "rackflow.authorized_keys_url="); ok {
			akURL = v
		}
	}
	if hkURL == "" || akURL == "" {
		// Not a live boot (a disk or none lease): fall through to disk.
		ep, err := m.bootDisk()
		return ep, nil, err
	}
	keyPEM, err := m.get(hkURL)
	if err != nil {
		return nil, nil, fmt.Errorf("host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("host key: %w", err)
	}
	akText, err := m.get(akURL)
	if err != nil {
		return nil, nil, fmt.Errorf("authorized keys: %w", err)
	}
	var aks []ssh.PublicKey
	sc := bufio.NewScanner(strings.NewReader(string(akText)))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey(sc.Bytes())
		if err != nil {
			return nil, nil, fmt.Errorf("authorized keys: %w", err)
		}
		aks = append(aks, k)
	}
	ep, err := startEndpoint(net.JoinHostPort(m.ip, fmt.Sprint(m.fleet.livePort)), sshd.FakeOptions{
		HostKeyPEM: keyPEM, AuthorizedKeys: aks, Env: m.fleet.env,
	})
	if err != nil {
		return nil, nil, err
	}
	return ep, signer.PublicKey(), nil
}

// bootDisk starts the installed OS if the disk holds the image.
func (m *machine) bootDisk() (*endpoint, error) {
	got, err := diskDigest(m.disk, m.fleet.imageSize)
	if err != nil {
		return nil, err
	}
	if got != m.fleet.imageSHA {
		return nil, nil // no bootable OS: the host sits at the firmware
	}
	env := append(append([]string(nil), m.fleet.env...), "RACKFLOW_BENCH_CONVERGED="+filepath.Join(m.chefDir, "converged"), "RACKFLOW_BENCH_HOST="+m.name)
	return startEndpoint(net.JoinHostPort(m.ip, fmt.Sprint(m.fleet.osPort)), sshd.FakeOptions{
		HostKeyPEM: m.osKey, AuthorizedKeys: []ssh.PublicKey{m.fleet.workerPub}, Env: env,
	})
}

func (m *machine) shutdown() {
	m.mu.Lock()
	m.stopLocked()
	m.power = false
	m.mu.Unlock()
}

func diskDigest(path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// bmcState and bmcBootDev are the fake BMC's wire format.
type bmcState struct {
	State string `json:"state"`
}

type bmcBootDev struct {
	Device     string `json:"device"`
	Persistent bool   `json:"persistent"`
}
