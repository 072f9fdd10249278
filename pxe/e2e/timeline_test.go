package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/lease"
)

// TestLabBootTimeline: a host on the boot network, with real clients
// (busybox udhcpc, tftp and wget), gets its address, its first boot
// program over TFTP, its iPXE script and its kernel, and then stops. The
// lease API's timeline of its MAC lists each of those in order, with the
// file names, byte counts and the host's address, and its summary says
// where the boot stopped: after the kernel, with no initrd fetch. A
// fetch from another address on the segment is not put on this host's
// timeline, and a new boot ID starts the timeline afresh.
func TestLabBootTimeline(t *testing.T) {
	const (
		mac = "52:54:00:94:00:11"
		ip  = "10.94.0.11"
	)
	l := newPXELab(t, map[string]string{"busybox": "busybox"}, "10.94.0")
	l.cli.SetMAC("eth0", mac)
	tftpDir, bootDir := filepath.Join(l.dir, "tftp"), filepath.Join(l.dir, "boot")
	files := map[string]string{
		filepath.Join(tftpDir, "undionly.kpxe"): strings.Repeat("p", 3000),
		filepath.Join(bootDir, "vmlinuz"):       strings.Repeat("k", 70000),
		filepath.Join(bootDir, "initrd.img"):    strings.Repeat("i", 1000),
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l.start("-tftp-root", tftpDir, "-tftp-addr", l.serverIP+":69", "-boot-dir", bootDir)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := l.api.Put(ctx, lease.Lease{MAC: mac, IP: ip, Netmask: "255.255.255.0", Gateway: l.serverIP,
		Hostname: "node11", Profile: lease.ProfileLive, BootID: "timeline-1"}); err != nil {
		t.Fatalf("register lease: %v", err)
	}
	if tl, err := l.api.Timeline(ctx, mac); err != nil || len(tl.Events) != 0 || tl.BootID != "timeline-1" {
		t.Fatalf("timeline before the boot: %+v, %v; want an empty one for timeline-1", tl, err)
	}

	// DHCP: udhcpc once, configuring the address it gets.
	hook := filepath.Join(l.dir, "udhcpc.sh")
	script := "#!/bin/sh\ncase \"$1\" in bound) ip addr add \"$ip/$mask\" dev \"$interface\" ;; esac\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := l.cli.Exec(ctx, "busybox", args...); err != nil {
			t.Fatalf("busybox %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("udhcpc", "-q", "-n", "-i", "eth0", "-t", "5", "-T", "2", "-s", hook)
	run("tftp", "-g", "-r", "undionly.kpxe", "-l", filepath.Join(l.dir, "got-undionly"), l.serverIP)
	base := "http://" + l.serverIP + ":8080"
	run("wget", "-q", "-O", filepath.Join(l.dir, "got-script"), base+"/boot/"+mac+".ipxe")
	run("wget", "-q", "-O", filepath.Join(l.dir, "got-kernel"), base+"/files/vmlinuz")
	// Someone else on the segment (here the server's own address) fetches
	// the initrd: not this host's boot.
	httpGet(t, l.hc, base+"/files/initrd.img", 200)

	// rackflow-pxe records a fetch once its handler has returned, which
	// can be just after the client has read the last byte: wait (up to
	// 10 s) for the five events rather than reading once.
	tl, err := l.api.Timeline(ctx, mac)
	for deadline := time.Now().Add(10 * time.Second); err == nil && len(tl.Events) < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		tl, err = l.api.Timeline(ctx, mac)
	}
	if err != nil {
		t.Fatal(err)
	}
	type ev struct{ kind, file, from, status string }
	var got []ev
	for _, e := range tl.Events {
		got = append(got, ev{e.Kind, e.File, e.From, e.Status})
	}
	want := []ev{
		{api.BootDHCPOffer, "", ip, ""},
		{api.BootDHCPAck, "", ip, ""},
		{api.BootTFTP, "undionly.kpxe", ip, "ok"},
		{api.BootScript, "", ip, "200"},
		{api.BootFile, "vmlinuz", ip, "200"},
	}
	if len(got) != len(want) {
		t.Fatalf("timeline %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if b := tl.Events[2].Bytes; b != 3000 {
		t.Errorf("tftp bytes %d, want 3000", b)
	}
	if b := tl.Events[4].Bytes; b != 70000 {
		t.Errorf("kernel bytes %d, want 70000", b)
	}
	for i := 1; i < len(tl.Events); i++ {
		if tl.Events[i].At.Before(tl.Events[i-1].At) {
			t.Errorf("event %d at %s is before event %d at %s", i, tl.Events[i].At, i-1, tl.Events[i-1].At)
		}
	}
	sum := tl.Summary()
	for _, s := range []string{"DHCP answered " + ip, "undionly.kpxe fetched (3000 bytes, tftp)", "ipxe script fetched", "vmlinuz fetched (70000 bytes)", "no initrd fetch"} {
		if !strings.Contains(sum, s) {
			t.Errorf("summary %q lacks %q", sum, s)
		}
	}
	t.Logf("summary: %s", sum)

	// A new boot ID: a new boot, a clean record.
	if _, err := l.api.Put(ctx, lease.Lease{MAC: mac, IP: ip, Netmask: "255.255.255.0", Gateway: l.serverIP,
		Hostname: "node11", Profile: lease.ProfileLive, BootID: "timeline-2"}); err != nil {
		t.Fatal(err)
	}
	if tl, err := l.api.Timeline(ctx, mac); err != nil || len(tl.Events) != 0 || tl.BootID != "timeline-2" {
		t.Errorf("timeline after a new boot ID: %+v, %v; want an empty one", tl, err)
	}
}
