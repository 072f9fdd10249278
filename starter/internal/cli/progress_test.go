package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/rackflow/rackflow/api"
)

func TestQueryProgressFillsInForHeartbeats(t *testing.T) {
	st := api.ProvisionStatus{Host: "node07", Step: api.StepWriteImage, State: api.StateRunning,
		BytesWritten: 512 << 20, BytesTotal: 1 << 30, MBps: 400}
	// No heartbeat with progress on the server yet: the query's shows.
	pend := withQueryProgress(st, []pendingInfo{{Activity: "WriteImage", Attempt: 1}})
	if len(pend) != 1 || pend[0].Progress == nil || pend[0].Progress.Offset != 512<<20 {
		t.Fatalf("pending %+v: want the query's 512 MiB", pend)
	}
	if line := progressLine(st, pend); !strings.Contains(line, "50.0%") || !strings.Contains(line, "400 MB/s") {
		t.Errorf("progress line %q: want 50%% at 400 MB/s", line)
	}
	// A fresher heartbeat wins.
	hb := &imageProgress{Offset: 768 << 20, Total: 1 << 30, MBps: 410}
	pend = withQueryProgress(st, []pendingInfo{{Activity: "WriteImage", Attempt: 1, Progress: hb}})
	if pend[0].Progress != hb {
		t.Errorf("progress %+v: want the heartbeat's 768 MiB", pend[0].Progress)
	}
	// Describe not allowed: the query alone still shows the stream.
	if pend = withQueryProgress(st, nil); len(pend) != 1 || pend[0].Progress == nil {
		t.Errorf("without describe: %+v", pend)
	}
	// Other steps, or a finished stream, add nothing.
	st.Step = api.StepChef
	if pend = withQueryProgress(st, nil); len(pend) != 0 {
		t.Errorf("at chef-bootstrap: %+v", pend)
	}
}

func TestStatusShowsTheConsole(t *testing.T) {
	if got := consoleBlock(nil); got != "" {
		t.Errorf("no timeline: %q", got)
	}
	if got := consoleBlock(&api.BootTimeline{MAC: "52:54:00:ab:cd:07"}); got != "" {
		t.Errorf("no console: %q", got)
	}
	tl := &api.BootTimeline{ConsoleAt: time.Date(2026, 12, 6, 10, 2, 55, 0, time.UTC),
		Console: []string{"Booting from Hard Disk...", "Boot failed: not a bootable disk", "No bootable\x1b[2J device."}}
	want := "  console (last 3 lines, written 2026-12-06T10:02:55Z):\n    | Booting from Hard Disk...\n    | Boot failed: not a bootable disk\n    | No bootable[2J device.\n"
	if got := consoleBlock(tl); got != want {
		t.Errorf("consoleBlock:\n%s\nwant:\n%s", got, want)
	}
}
