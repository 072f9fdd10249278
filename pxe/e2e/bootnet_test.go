package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/netns"
)

// TestLabBootNetworkAttacker runs the host key theft of the security review
// on a real boot network: rackflow-pxe on a bridge, the host and an
// attacker in their own namespaces, busybox udhcpc and curl as clients.
//
//  1. An attacker who saw the host's DHCPDISCOVER takes its MAC and an
//     address of its own, and asks for the host's iPXE script (which holds
//     the one-time host key URL) and authorized_keys: refused, recorded. The
//     host then boots as usual and takes its key; the boot is trusted.
//  2. An attacker who also runs DHCP with the spoofed MAC gets the host's
//     address and takes the key first. The real host's fetch is refused
//     (410), and the lease says the boot cannot be trusted — which is what
//     the worker checks before it sends the host anything.
func TestLabBootNetworkAttacker(t *testing.T) {
	const (
		mac      = "52:54:00:93:00:20"
		hostIP   = "10.93.0.20"
		attacker = "10.93.0.66"
	)
	l := newPXELab(t, map[string]string{"busybox": "busybox", "curl": "curl"}, "10.93.0")
	atk := newAttacker(t, l)
	l.start("-dhcp-interface", "br0", "-dhcp-lease-time", "10m")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	put := func(bootID string) {
		t.Helper()
		if _, err := l.api.Put(ctx, lease.Lease{MAC: mac, IP: hostIP, Netmask: "255.255.255.0", Gateway: l.serverIP,
			Hostname: "node20", Profile: lease.ProfileLive, BootID: bootID}); err != nil {
			t.Fatal(err)
		}
	}
	get := func() lease.Lease {
		t.Helper()
		got, err := l.api.Get(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	base := "http://" + l.serverIP + ":8080"
	hook := udhcpcHook(t, l.dir)

	// 1. Spoofed MAC, own address.
	put("b1")
	atk.SetMAC("eth0", mac)
	atk.AddAddr("eth0", attacker+"/24")
	for _, path := range []string{"/boot/" + mac + ".ipxe", "/boot/" + mac + "/authorized_keys"} {
		if code := curlStatus(t, atk.Run, base+path); code != "403" {
			t.Errorf("attacker GET %s: %s, want 403", path, code)
		}
	}
	// Even with the token (say, sniffed), the lease API is not on the boot
	// network: it listens on the server's loopback only.
	if code := strings.TrimSpace(atk.Run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
		"-X", "PUT", "-H", "Authorization: Bearer "+l.token, "--data", `{"ip":"`+attacker+`"}`, base+"/v1/leases/"+mac)); code != "404" {
		t.Errorf("attacker PUT of a lease on the boot network with the token: %s, want 404", code)
	}
	atk.Run("ip", "link", "set", "eth0", "down")
	l.cli.SetMAC("eth0", mac)
	l.cli.Run("busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "5", "-T", "2", "-s", hook)
	keyURL := bootAndTakeKey(t, l.cli.Run, base, mac, "200")
	got := get()
	if ok, why := got.BootTrusted(); !ok || got.HostKeyFetchedFrom != hostIP {
		t.Fatalf("host's own boot: trusted=%v (%s), key fetched from %q", ok, why, got.HostKeyFetchedFrom)
	}
	if len(got.Refusals) != 2 || got.Refusals[0].From != attacker || got.Refusals[1].From != attacker {
		t.Errorf("refusals %+v: want the attacker's two requests from %s", got.Refusals, attacker)
	}
	if !strings.Contains(keyURL, "/v1/hostkeys/") {
		t.Fatalf("no host key URL in the host's script")
	}

	// 2. Spoofed MAC with DHCP: the attacker is at the host's address and
	// wins the race for the key; the host's own fetch exposes it.
	put("b2")
	l.cli.Run("ip", "link", "set", "eth0", "down")
	atk.Run("ip", "addr", "flush", "dev", "eth0")
	atk.Run("ip", "link", "set", "eth0", "up")
	atk.Run("busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "5", "-T", "2", "-s", hook)
	bootAndTakeKey(t, atk.Run, base, mac, "200")
	atk.Run("ip", "link", "set", "eth0", "down")
	l.cli.Run("ip", "addr", "flush", "dev", "eth0")
	l.cli.Run("ip", "link", "set", "eth0", "up")
	l.cli.Run("busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "5", "-T", "2", "-s", hook)
	bootAndTakeKey(t, l.cli.Run, base, mac, "410")
	if ok, why := get().BootTrusted(); ok || !strings.Contains(why, "second time") {
		t.Fatalf("after the race: trusted=%v (%s), want untrusted", ok, why)
	}
}

// newAttacker adds a namespace on the lab's boot network: the server's side
// becomes a bridge br0 (holding the server's address) with the host's and
// the attacker's links as ports.
func newAttacker(t *testing.T, l *pxeLab) *netns.NS {
	atk := netns.New(t, "atk")
	netns.Veth(t, l.srv, "va", atk, "eth0")
	l.srv.Run("ip", "addr", "flush", "dev", "eth0")
	l.srv.Bridge("br0", "eth0", "va")
	l.srv.AddAddr("br0", l.serverIP+"/24")
	return atk
}

// udhcpcHook writes a udhcpc script that sets the address it is given.
func udhcpcHook(t *testing.T, dir string) string {
	t.Helper()
	hook := filepath.Join(dir, "bind.sh")
	script := "#!/bin/sh\ncase \"$1\" in\nbound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\" ;;\nesac\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return hook
}

// curlStatus GETs url with curl in a namespace and returns the HTTP status.
func curlStatus(t *testing.T, run func(string, ...string) string, url string) string {
	t.Helper()
	return strings.TrimSpace(run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url))
}

// bootAndTakeKey does what the live system does: fetch the iPXE script,
// then the host key it names; the key fetch must answer wantKey. It returns
// the key URL.
func bootAndTakeKey(t *testing.T, run func(string, ...string) string, base, mac, wantKey string) string {
	t.Helper()
	script := run("curl", "-sf", "--max-time", "10", base+"/boot/"+mac+".ipxe")
	keyURL := ""
	for _, f := range strings.Fields(script) {
		if v, ok := strings.CutPrefix(f, "rackflow.hostkey_url="); ok {
			keyURL = v
		}
	}
	if keyURL == "" {
		t.Fatalf("no host key URL in the script:\n%s", script)
	}
	if code := curlStatus(t, run, keyURL); code != wantKey {
		t.Fatalf("key fetch: %s, want %s", code, wantKey)
	}
	return keyURL
}
