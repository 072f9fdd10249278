package cli

import (
	"strings"
	"testing"

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
