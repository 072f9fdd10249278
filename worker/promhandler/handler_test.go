package promhandler

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHandlerExportsWhatTheSDKEmits(t *testing.T) {
	h := New("temporal_")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)

	wf := h.WithTags(map[string]string{"namespace": "default", "task_queue": "rackflow"})
	wf.Counter("request").Inc(2)
	wf.Counter("request").Inc(3)
	// The same family with an extra tag: exported with the union of keys.
	wf.WithTags(map[string]string{"operation": "PollActivityTaskQueue"}).Counter("request").Inc(1)
	wf.Gauge("num_pollers").Update(4)
	wf.Timer("activity_execution_latency").Record(300 * time.Millisecond)
	wf.Timer("activity_execution_latency").Record(20 * time.Second)

	want := `
# HELP temporal_request Temporal SDK metric temporal_request
# TYPE temporal_request counter
temporal_request{namespace="default",operation="",task_queue="rackflow"} 5
temporal_request{namespace="default",operation="PollActivityTaskQueue",task_queue="rackflow"} 1
# HELP temporal_num_pollers Temporal SDK metric temporal_num_pollers
# TYPE temporal_num_pollers gauge
temporal_num_pollers{namespace="default",task_queue="rackflow"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "temporal_request", "temporal_num_pollers"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather (pedantic registry must accept the output): %v", err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() != "temporal_activity_execution_latency" {
			continue
		}
		found = true
		hist := mf.GetMetric()[0].GetHistogram()
		if hist.GetSampleCount() != 2 {
			t.Errorf("timer count = %d, want 2", hist.GetSampleCount())
		}
		if got := hist.GetSampleSum(); got < 20.29 || got > 20.31 {
			t.Errorf("timer sum = %v, want 20.3", got)
		}
		for _, b := range hist.GetBucket() {
			if b.GetUpperBound() == 0.5 && b.GetCumulativeCount() != 1 {
				t.Errorf("bucket 0.5s = %d, want 1", b.GetCumulativeCount())
			}
		}
	}
	if !found {
		t.Fatal("timer family missing")
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"temporal.request":  "temporal_request",
		"9lives":            "_lives",
		"ok_name:sub":       "ok_name:sub",
		"with-dash and sp ": "with_dash_and_sp_",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
