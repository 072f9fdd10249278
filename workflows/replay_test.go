package workflows

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplaySavedHistories replays every saved history of a real run (made on
// the dev server by testsuite/integration with RACKFLOW_SAVE_HISTORY) against
// the current workflow code. A change that would break running workflows —
// a new activity call, a reordered step — fails here; guard it with
// workflow.GetVersion instead.
func TestReplaySavedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no saved histories in workflows/testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			id, ok := savedIDs[filepath.Base(f)]
			if !ok {
				t.Fatalf("add %s's workflow ID to savedIDs: workflows check their own ID", filepath.Base(f))
			}
			h, err := client.HistoryFromJSON(mustOpen(t, f), client.HistoryJSONOptions{})
			if err != nil {
				t.Fatal(err)
			}
			r := worker.NewWorkflowReplayer()
			Register(r)
			err = r.ReplayWorkflowHistoryWithOptions(nil, h, worker.ReplayWorkflowHistoryOptions{
				OriginalExecution: workflow.Execution{ID: id, RunID: "saved"},
			})
			if err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}

// savedIDs are the workflow IDs of the saved runs (a history does not
// record its own ID, and the publishing workflows check theirs).
var savedIDs = map[string]string{
	"provision_host_v1.json":      "provision/lab01",
	"provision_host_v2.json":      "provision/lab01", // with image-progress signals
	"provision_host_v3.json":      "provision/lab01", // with the boot-timeline version marker
	"decommission_host_v1.json":   "decommission/lab01",
	"decommission_host_v2.json":   "decommission/lab01", // the unpublish step asks the inventory's NetScaler
	"deploy_service_v1.json":      "deploy/shop",
	"publish_service_v1.json":     "publish/203.0.113.40:5432",
	"update_backends_v1.json":     "publish/203.0.113.40:5432",
	"unpublish_service_v1.json":   "publish/203.0.113.40:5432",
	"setup_vm_network_v1.json":    "vmnet/web01/secnet",
	"teardown_vm_network_v1.json": "vmnet/web01/secnet",
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestReplayDetectsAChangedWorkflow proves the replay test can fail: a
// history whose recorded activity differs from what the code schedules is
// reported as nondeterministic.
func TestReplayDetectsAChangedWorkflow(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "provision_host_v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	// protojson varies its spacing; match any.
	re := regexp.MustCompile(`"name":\s*"ResolveHost"`)
	tampered := re.ReplaceAllString(string(b), `"name": "SomethingElse"`)
	if tampered == string(b) {
		t.Fatal("saved history has no ResolveHost activity to tamper with")
	}
	f := filepath.Join(t.TempDir(), "tampered.json")
	if err := os.WriteFile(f, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	r := worker.NewWorkflowReplayer()
	Register(r)
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err == nil {
		t.Fatal("replay of a history that does not match the code succeeded")
	}
}
