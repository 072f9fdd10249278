// Package lab builds a bare-metal host out of real parts on loopback (or on an
// address of its own in a network namespace), for the end-to-end tests and
// `make run`: a BMC (OpenIPMI's ipmi_sim, driven through bmclib and
// ipmitool), and a "machine" that ipmi_sim's power control boots.
// Booted from PXE, the machine asks the pxe service for its iPXE script,
// fetches the one-time host key and authorized keys named on its kernel
// command line and starts a real OpenSSH sshd as its live system. Booted from
// disk, it starts a second sshd (the installed OS, with a fake chef-client on
// its PATH) only if the disk file holds the expected image, as a real disk
// would only boot a good image. The disk is a sparse file.
//
// It is a test rig, not a simulator of hardware timing or firmware.
package lab

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// Options describe the lab host.
type Options struct {
	// Dir holds everything; it must exist.
	Dir string
	// Host is the host's name (default "lab01").
	Host string
	// MAC of its boot NIC (default 52:54:00:00:00:01).
	MAC string
	// PXEURL is the pxe service's public URL (serves /boot/{mac}.ipxe).
	PXEURL string
	// ImageSize is the raw image's size in bytes (default 64 MiB).
	ImageSize int64
	// DiskSize is the disk file's size (default ImageSize + 16 MiB).
	DiskSize int64
	// BMCPort is the BMC's UDP port (default: one free now). SetBMCPort
	// changes it after the BMC has picked its own.
	BMCPort int
	// Addr is the machine's address on its boot network: its sshds listen
	// there, and the inventory names it for the BMC and the host (default
	// 127.0.0.1). Another address must exist where the machine runs, e.g.
	// in a network namespace of its own (see the pods test).
	Addr string
	// LivePort and OSPort are the live system's and the installed OS's
	// SSH ports (default: free ones on loopback now).
	LivePort, OSPort int
	// Pod, when set, is the host's pod in the inventory.
	Pod string
	// BMCProvider is "ipmi" (default) or "redfish"; SetRedfishBMC sets it
	// with the Redfish BMC's port and certificate pin.
	BMCProvider string
	// BMCPinSHA256 is the Redfish BMC's certificate pin (bmc.pin_sha256).
	BMCPinSHA256 string
}

// Lab is a prepared host: files written, nothing started.
type Lab struct {
	Options
	// ImageDir holds the image and nothing else: the worker's --image-dir
	// (RACKFLOW_IMAGE_DIR), the only directory it reads local images from.
	ImageDir      string
	ImagePath     string
	ImageSHA256   string
	DiskPath      string
	InventoryPath string
	SecretsPath   string
	HookPath      string
	ChefDir       string
	MachineLog    string
	LivePort      int
	OSPort        int
	// WorkerKey is the private key rackflow logs in with (a lab secret).
	WorkerKey ssh.Signer
	// OSHostKey is the installed OS's host key.
	OSHostKey ssh.PublicKey
	// BMCUser and BMCPassword are the ipmi_sim credentials (lab secrets).
	BMCUser, BMCPassword string
	// NetScalerUser and NetScalerPassword log in to the lab's fake
	// NetScaler (secret "netscaler/lab").
	NetScalerUser, NetScalerPassword string
	// NetScalerURL, when set, is the inventory's one NetScaler ("lab"),
	// which DecommissionHost asks about the host's servicegroups.
	NetScalerURL string
}

// Prepare writes the image, the disk, keys, sshd configs, the power hook, a
// fake chef-client, the inventory and the secrets file.
func Prepare(opts Options) (*Lab, error) {
	if opts.Host == "" {
		opts.Host = "lab01"
	}
	if opts.MAC == "" {
		opts.MAC = "52:54:00:00:00:01"
	}
	if opts.ImageSize == 0 {
		opts.ImageSize = 64 << 20
	}
	if opts.DiskSize == 0 {
		opts.DiskSize = opts.ImageSize + 16<<20
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	l := &Lab{Options: opts, BMCUser: "rackflow", BMCPassword: randomHex(8), NetScalerUser: "nsroot", NetScalerPassword: randomHex(10)}
	for _, d := range []string{"live", "os", "bin", "chef", "keys", "images"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	l.ImageDir = filepath.Join(opts.Dir, "images")
	if l.ImagePath, l.ImageSHA256, err = writeImage(filepath.Join(l.ImageDir, "image.raw"), opts.ImageSize); err != nil {
		return nil, err
	}
	l.DiskPath = filepath.Join(opts.Dir, "disk.img")
	if err := makeDisk(l.DiskPath, opts.DiskSize); err != nil {
		return nil, err
	}
	if err := l.writeKeys(); err != nil {
		return nil, err
	}
	if l.LivePort = opts.LivePort; l.LivePort == 0 {
		if l.LivePort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if l.OSPort = opts.OSPort; l.OSPort == 0 {
		if l.OSPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if l.BMCPort, err = freeUDPPort(); err != nil {
		return nil, err
	}
	if opts.BMCPort != 0 {
		l.BMCPort = opts.BMCPort
	}
	live, err := sshd.WriteConfig(filepath.Join(opts.Dir, "live"), sshd.Options{
		ListenAddr: net.JoinHostPort(opts.Addr, strconv.Itoa(l.LivePort)),
	})
	if err != nil {
		return nil, err
	}
	osKeyPEM, err := os.ReadFile(filepath.Join(opts.Dir, "keys", "os_host_key"))
	if err != nil {
		return nil, err
	}
	osCfg, err := sshd.WriteConfig(filepath.Join(opts.Dir, "os"), sshd.Options{
		ListenAddr:     net.JoinHostPort(opts.Addr, strconv.Itoa(l.OSPort)),
		HostKeyPEM:     osKeyPEM,
		AuthorizedKeys: []ssh.PublicKey{l.WorkerKey.PublicKey()},
		PathPrefix:     []string{filepath.Join(opts.Dir, "bin")},
	})
	if err != nil {
		return nil, err
	}
	l.OSHostKey = osCfg.HostKey
	l.ChefDir = filepath.Join(opts.Dir, "chef")
	l.MachineLog = filepath.Join(opts.Dir, "machine.log")
	if err := l.writeHook(live.Path, osCfg.Path); err != nil {
		return nil, err
	}
	if err := l.writeChef(); err != nil {
		return nil, err
	}
	if err := l.writeInventory(); err != nil {
		return nil, err
	}
	return l, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeImage writes a deterministic, incompressible-ish image and returns its
// sha256.
func writeImage(path string, size int64) (string, string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	block := make([]byte, 1<<20)
	seed := sha256.Sum256([]byte("rackflow lab image"))
	for written := int64(0); written < size; {
		for i := 0; i < len(block); i += len(seed) {
			seed = sha256.Sum256(seed[:])
			copy(block[i:], seed[:])
		}
		// A recognisable header, as a partition table would be.
		if written == 0 {
			copy(block, "RACKFLOW-LAB-IMAGE")
		}
		n := int64(len(block))
		if size-written < n {
			n = size - written
		}
		if _, err := w.Write(block[:n]); err != nil {
			return "", "", err
		}
		written += n
	}
	return path, hex.EncodeToString(h.Sum(nil)), f.Close()
}

func makeDisk(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

func (l *Lab) writeKeys() error {
	signer, pemBytes, err := sshd.NewKey()
	if err != nil {
		return err
	}
	l.WorkerKey = signer
	if err := os.WriteFile(filepath.Join(l.Dir, "keys", "worker_ed25519"), pemBytes, 0o600); err != nil {
		return err
	}
	_, osPEM, err := sshd.NewKey()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.Dir, "keys", "os_host_key"), osPEM, 0o600)
}

var hookTmpl = template.Must(template.New("hook").Parse(`#!/bin/sh
# A lab machine: what a bare-metal host does when its BMC powers it.
# Called by ipmi_sim's chassis_control as: on-power on|off BOOTDEV
LAB='{{.Dir}}'
exec >>"$LAB/machine.log" 2>&1 </dev/null
echo "$(date +%T.%N) power $1 boot ${2:-}"
stop() {
  for n in live os; do
    if [ -f "$LAB/$n.pid" ]; then kill "$(cat "$LAB/$n.pid")" 2>/dev/null; rm -f "$LAB/$n.pid"; fi
  done
}
stop
[ "$1" = on ] || exit 0
boot_disk() {
  got=$(head -c {{.ImageSize}} '{{.DiskPath}}' | sha256sum | cut -d' ' -f1)
  if [ "$got" != '{{.ImageSHA256}}' ]; then
    echo "disk: no bootable OS (first {{.ImageSize}} bytes hash to $got)"
    return
  fi
  setsid {{.SSHD}} -D -e -f '{{.OSConfig}}' >>"$LAB/os/sshd.log" 2>&1 </dev/null &
  echo $! > "$LAB/os.pid"
  echo "disk: installed OS booted, sshd pid $!"
}
case "${2:-}" in
pxe|PXE)
  script=$(curl -fsS --max-time 5 '{{.PXEURL}}/boot/{{.MAC}}.ipxe') || { echo "pxe: no boot script for {{.MAC}}"; exit 0; }
  hk=$(printf '%s\n' "$script" | tr ' ' '\n' | sed -n 's/^rackflow.hostkey_url=//p' | head -n1)
  ak=$(printf '%s\n' "$script" | tr ' ' '\n' | sed -n 's/^rackflow.authorized_keys_url=//p' | head -n1)
  if [ -z "$hk" ]; then
    echo "pxe: script boots no live system; falling through to disk"
    boot_disk
    exit 0
  fi
  curl -fsS --max-time 5 "$hk" > "$LAB/live/ssh_host_ed25519_key.new" || { echo "pxe: host key refused ($hk)"; exit 0; }
  chmod 600 "$LAB/live/ssh_host_ed25519_key.new"
  mv "$LAB/live/ssh_host_ed25519_key.new" "$LAB/live/ssh_host_ed25519_key"
  curl -fsS --max-time 5 "$ak" > "$LAB/live/authorized_keys" || { echo "pxe: no authorized keys"; exit 0; }
  mkdir -p /run/sshd
  setsid {{.SSHD}} -D -e -f '{{.LiveConfig}}' >>"$LAB/live/sshd.log" 2>&1 </dev/null &
  echo $! > "$LAB/live.pid"
  echo "pxe: live system booted, sshd pid $!"
  ;;
*)
  mkdir -p /run/sshd
  boot_disk
  ;;
esac
`))

func (l *Lab) writeHook(liveCfg, osCfg string) error {
	var b bytes.Buffer
	err := hookTmpl.Execute(&b, map[string]any{
		"Dir": l.Dir, "ImageSize": l.ImageSize, "DiskPath": l.DiskPath, "ImageSHA256": l.ImageSHA256,
		"SSHD": sshd.Binary, "OSConfig": osCfg, "LiveConfig": liveCfg, "PXEURL": strings.TrimRight(l.PXEURL, "/"), "MAC": l.MAC,
	})
	if err != nil {
		return err
	}
	l.HookPath = filepath.Join(l.Dir, "on-power")
	return os.WriteFile(l.HookPath, b.Bytes(), 0o755)
}

// The fake chef-client checks what rackflow's bootstrap wrote, the way the
// real one would fail without it, and records the converge.
const chefClient = `#!/bin/sh
dir=${RACKFLOW_LAB_CHEF_DIR:-%s}
for f in client.rb validation.pem first-boot.json; do
  [ -s "$dir/$f" ] || { echo "ERROR: $dir/$f missing" >&2; exit 2; }
done
grep -q 'BEGIN' "$dir/validation.pem" || { echo "ERROR: validation.pem is no key" >&2; exit 3; }
if [ -f "$dir/fail" ]; then echo "ERROR: 401 Unauthorized: the validator key was rejected" >&2; exit 1; fi
echo "Starting Chef Infra Client, run list from first-boot.json"
cat "$dir/first-boot.json"
echo "Chef Infra Client finished, 12/30 resources updated"
date > "$dir/converged"
`

func (l *Lab) writeChef() error {
	return os.WriteFile(filepath.Join(l.Dir, "bin", "chef-client"), []byte(ChefClient(l.ChefDir)), 0o755)
}

// ChefClient is the fake chef-client's script for a host whose chef
// directory is dir (an OS image for a lab machine carries it too).
func ChefClient(dir string) string { return fmt.Sprintf(chefClient, dir) }

// Host is the lab host's inventory entry.
func (l *Lab) Host() api.Host {
	h := api.Host{
		Name:    l.Options.Host,
		BMC:     api.BMC{Address: l.Addr, Port: l.BMCPort, Provider: l.bmcProvider(), Credential: "bmc/" + l.Options.Host, PinSHA256: l.BMCPinSHA256},
		MAC:     l.MAC,
		Network: api.Network{IP: l.Addr, Netmask: l.netmask()},
		Disk:    l.DiskPath,
		Image:   api.Image{URL: l.ImagePath, Size: l.ImageSize, SHA256: l.ImageSHA256},
		SSH:     api.SSH{User: "root", Port: l.OSPort, LivePort: l.LivePort, Credential: "ssh/provision"},
		Chef: &api.Chef{
			ServerURL:           "https://chef.lab.invalid/organizations/lab",
			RunList:             []string{"role[db]", "recipe[base]"},
			Environment:         "lab",
			ValidatorCredential: "chef/validator",
		},
		Pod: l.Pod,
	}
	h.Defaults()
	return h
}

func (l *Lab) writeInventory() error {
	h := l.Host()
	inv := fmt.Sprintf(`# The lab host of make run / the integration tests (testsuite/lab).
hosts:
  - name: %s
    bmc: {address: %s, port: %d, provider: %s, credential: %s%s}
    mac: "%s"
    network: {ip: %s, netmask: %s}
    disk: %s
    image: {url: %s, size: %d, sha256: %s}
    ssh: {user: root, port: %d, live_port: %d, credential: ssh/provision}
    chef:
      server_url: %s
      run_list: ["role[db]", "recipe[base]"]
      environment: lab
      validator_credential: chef/validator
%s%s`, h.Name, h.BMC.Address, h.BMC.Port, h.BMC.Provider, h.BMC.Credential, pinField(h.BMC.PinSHA256), h.MAC, h.Network.IP, h.Network.Netmask, h.Disk, h.Image.URL, h.Image.Size, h.Image.SHA256,
		h.SSH.Port, h.SSH.LivePort, h.Chef.ServerURL, podLine(h.Pod), netscalers(l.NetScalerURL))
	l.InventoryPath = filepath.Join(l.Dir, "inventory.yaml")
	if err := os.WriteFile(l.InventoryPath, []byte(inv), 0o644); err != nil {
		return err
	}
	_, validatorPEM, err := sshd.NewKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "keys", "chef-validator.pem"), validatorPEM, 0o600); err != nil {
		return err
	}
	sec := fmt.Sprintf(`# Lab secrets: the worker resolves these references; history never sees them.
# endpoints: binds each to where it may be sent; a workflow input naming
# another BMC, sshd or chef server gets CredentialNotAllowed.
secrets:
  %s: {username: %s, password: %s, endpoints: ["%s"]}
  ssh/provision: {private_key_file: keys/worker_ed25519, endpoints: ["%s"]}
  chef/validator: {private_key_file: keys/chef-validator.pem, endpoints: ["%s"]}
  # The lab's fake NetScaler listens on loopback (plain http is allowed
  # there only); the credential may go to no other address.
  netscaler/lab: {username: %s, password: %s, endpoints: [127.0.0.1]}
`, h.BMC.Credential, l.BMCUser, l.BMCPassword, h.BMC.CredentialDest(), h.Network.IP, chefServer(h.Chef.ServerURL), l.NetScalerUser, l.NetScalerPassword)
	l.SecretsPath = filepath.Join(l.Dir, "secrets.yaml")
	return os.WriteFile(l.SecretsPath, []byte(sec), 0o600)
}

// netmask is loopback's for the default address, a /24's for a boot
// network of the machine's own.
func (l *Lab) netmask() string {
	if l.Addr == "127.0.0.1" {
		return "255.0.0.0"
	}
	return "255.255.255.0"
}

func (l *Lab) bmcProvider() string {
	if l.BMCProvider == "" {
		return "ipmi"
	}
	return l.BMCProvider
}

func pinField(pin string) string {
	if pin == "" {
		return ""
	}
	return ", pin_sha256: " + pin
}

// SetRedfishBMC makes the host's BMC the Redfish service on port whose
// certificate has SHA-256 pin, and rewrites the inventory and secrets
// (the credential is then bound to https://127.0.0.1:port). The service
// must accept BMCUser and BMCPassword and run PowerHook on power changes.
func (l *Lab) SetRedfishBMC(port int, pin string) error {
	l.BMCProvider, l.BMCPort, l.BMCPinSHA256 = "redfish", port, pin
	return l.writeInventory()
}

// PowerHook runs the machine's power hook, as a BMC's power control does:
// on with the boot device ("pxe" boots the live system, anything else the
// disk), or off. It returns when the hook has (its daemons run detached).
func (l *Lab) PowerHook(on bool, bootDevice string) error {
	return RunHook(l.HookPath, on, bootDevice)
}

// RunHook runs a power hook, an executable taking "on BOOTDEV" or "off"
// as ipmi_sim's do, in a session of its own; it returns when the hook has
// (what it starts must run detached).
func RunHook(hook string, on bool, bootDevice string) error {
	state := "off"
	if on {
		state = "on"
	}
	cmd := exec.Command(hook, state, bootDevice)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("power hook %s %s: %v: %s", state, bootDevice, err, out)
	}
	return nil
}

func netscalers(url string) string {
	if url == "" {
		return ""
	}
	return fmt.Sprintf("netscalers:\n  - {name: lab, url: %q, credential: netscaler/lab, auth: header}\n", url)
}

// SetNetScaler makes the NetScaler at url the inventory's one ("lab",
// credential netscaler/lab) and rewrites the inventory; the worker reads
// it on the next run.
func (l *Lab) SetNetScaler(url string) error {
	l.NetScalerURL = url
	return l.writeInventory()
}

func podLine(pod string) string {
	if pod == "" {
		return ""
	}
	return "    pod: " + pod + "\n"
}

// chefServer is a chef server URL's scheme and host, what its validator
// key is bound to.
func chefServer(serverURL string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return serverURL
	}
	return u.Scheme + "://" + u.Host
}

// SetBMCPort records the port the BMC listens on and rewrites the inventory.
func (l *Lab) SetBMCPort(port int) error {
	l.BMCPort = port
	return l.writeInventory()
}

// SecretValues lists every secret value of the lab, for tests that prove a
// history holds none of them.
func (l *Lab) SecretValues() ([]string, error) {
	vals := []string{l.BMCPassword, l.NetScalerPassword}
	for _, f := range []string{"worker_ed25519", "chef-validator.pem", "os_host_key"} {
		b, err := os.ReadFile(filepath.Join(l.Dir, "keys", f))
		if err != nil {
			return nil, err
		}
		// The base64 body lines of the PEM: any of them in a history is a leak.
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) > 20 && !strings.HasPrefix(line, "-----") {
				vals = append(vals, line)
			}
		}
	}
	return vals, nil
}

// StopMachine kills the lab machine's sshds (as a power cut would).
func (l *Lab) StopMachine() {
	for _, n := range []string{"live", "os"} {
		p := filepath.Join(l.Dir, n+".pid")
		if b, err := os.ReadFile(p); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				if proc, err := os.FindProcess(pid); err == nil {
					_ = proc.Kill()
				}
			}
			_ = os.Remove(p)
		}
	}
}

// DiskDigest hashes the first ImageSize bytes of the disk.
func (l *Lab) DiskDigest() (string, error) {
	f, err := os.Open(l.DiskPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, l.ImageSize); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
