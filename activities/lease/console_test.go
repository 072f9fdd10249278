package lease_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/api"
)

// TestBootTimelineWithConsole reads a host's boot timeline from the real
// pxe service with a console directory beside it, as a pod worker next
// to a console logger runs, and checks what reaches the status query and
// the run's history: the console's last lines as a terminal shows them,
// nothing that could repaint an operator's terminal, no host key URL.
func TestBootTimelineWithConsole(t *testing.T) {
	dir := t.TempDir()
	a := &lease.Activities{ConsoleDir: dir}
	act := startPXE(t, a).act
	const mac = testMAC
	timeline := func(host string) api.BootTimeline {
		t.Helper()
		done := make(chan struct{})
		var tl api.BootTimeline
		go func() {
			defer close(done)
			v, err := act.ExecuteActivity(a.BootTimeline, lease.TimelineInput{Host: host, MAC: mac})
			if err != nil {
				t.Errorf("BootTimeline: %v", err)
				return
			}
			_ = v.Get(&tl)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("BootTimeline hangs")
		}
		return tl
	}
	logPath := filepath.Join(dir, "node07.log")

	// No console logger for the host: the timeline is pxe's alone.
	if tl := timeline("node07"); tl.MAC != mac || len(tl.Console) != 0 || !tl.ConsoleAt.IsZero() {
		t.Errorf("without a console log: %+v", tl)
	}

	// A week of console, then a boot that ends on an empty disk: SeaBIOS's
	// cursor escapes, CRLF line ends, a kernel command line with the host
	// key URL, iPXE's progress redrawn with carriage returns, a bell.
	const token = "Zq7xSECRETt0kenW3"
	var log strings.Builder
	for i := 0; log.Len() < 200<<10; i++ {
		log.WriteString("[    1.000000] old boot line that must not be read whole " + strings.Repeat("x", i%50) + "\r\n")
	}
	// (What SeaBIOS 1.16 sends first: RIS, no autowrap, clear, reset.)
	log.WriteString("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n")
	log.WriteString("[    0.000000] Command line: console=ttyS0 rackflow.hostkey_url=http://10.60.0.1:8080/v1/hostkeys/" + token + " quiet\r\n")
	log.WriteString("http://10.60.0.1:8080/files/vmlinuz... 10%\r http://10.60.0.1:8080/files/vmlinuz... ok\r\n")
	log.WriteString("\x07\x1b]0;title\x07\x1b(BBooting from Hard Disk...\r\n")
	log.WriteString(strings.Repeat("é", 300) + "\r\n")
	log.WriteString("\r\n\r\nBoot failed: not a bootable disk\r\n\r\nNo bootable device.\r\n")
	if err := os.WriteFile(logPath, []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	written := time.Date(2026, 12, 6, 10, 2, 55, 0, time.UTC)
	if err := os.Chtimes(logPath, written, written); err != nil {
		t.Fatal(err)
	}
	tl := timeline("node07")
	if n := len(tl.Console); n == 0 || n > api.MaxConsoleLines {
		t.Fatalf("console has %d lines, want 1 to %d: %q", n, api.MaxConsoleLines, tl.Console)
	}
	last := tl.Console[len(tl.Console)-5:]
	want := []string{"http://10.60.0.1:8080/files/vmlinuz... ok", "Booting from Hard Disk...", "", "Boot failed: not a bootable disk", "No bootable device."}
	for i, w := range want {
		if w != "" && last[i] != w {
			t.Errorf("console line %d from the end: %q, want %q (a terminal's view)", 5-i, last[i], w)
		}
	}
	if l := last[2]; len(l) > api.MaxConsoleLineBytes || !strings.HasPrefix(l, "éé") || !strings.HasSuffix(l, "…") {
		t.Errorf("a 600-byte line became %d bytes %q: want it cut at %d on a rune boundary", len(l), l, api.MaxConsoleLineBytes)
	}
	all := strings.Join(tl.Console, "\n")
	if strings.Contains(all, token) || !strings.Contains(all, "/v1/hostkeys/[redacted] quiet") {
		t.Errorf("the host key URL's token is not redacted: %q", all)
	}
	if strings.ContainsAny(all, "\x1b\x07\r") || !strings.Contains(all, "\nSeaBIOS (version 1.16.2-debian-1.16.2-1)\n") {
		t.Errorf("escape sequences or control characters left: %q", all)
	}
	if !tl.ConsoleAt.Equal(written) {
		t.Errorf("ConsoleAt %s, want the log's last write %s", tl.ConsoleAt, written)
	}
	if s := tl.Summary(); !strings.HasSuffix(s, "; console 10:02:55: No bootable device.") {
		t.Errorf("Summary() = %q: want the console's last line at the end", s)
	}

	// What the console directory holds is not to be trusted blindly: a
	// FIFO (a console logger misconfigured) must not hang the activity,
	// a symlink out of the directory must not be followed.
	os.Remove(logPath)
	if err := syscall.Mkfifo(logPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if tl := timeline("node07"); len(tl.Console) != 0 {
		t.Errorf("a FIFO as console log gave %q", tl.Console)
	}
	os.Remove(logPath)
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("root:secret-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, logPath); err != nil {
		t.Fatal(err)
	}
	if tl := timeline("node07"); len(tl.Console) != 0 {
		t.Errorf("a symlink out of the console directory was followed: %q", tl.Console)
	}
}
