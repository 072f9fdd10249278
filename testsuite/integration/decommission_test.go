package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/api"
)

// TestDecommissionOnTheLab runs DecommissionHost on the dev server with
// the real worker against the lab host (ipmi_sim BMC, the live system's
// real sshd, a disk file full of data): the live system boots through the
// lease, the first and last MiB of the disk are zeroed and read back, the
// rest stays, the host is powered off and its lease removed, and the run's
// history holds no secret.
func TestDecommissionOnTheLab(t *testing.T) {
	s := newStack(t, 4<<20)
	disk, err := os.ReadFile(s.lab.DiskPath)
	if err != nil {
		t.Fatal(err)
	}
	rand.Read(disk)
	if err := os.WriteFile(s.lab.DiskPath, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	id := api.DecommissionWorkflowID(s.lab.Options.Host)
	run, err := s.client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: id, TaskQueue: api.DefaultTaskQueue, WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
	}, api.WorkflowDecommissionHost, api.DecommissionInput{Host: s.lab.Options.Host, Confirm: s.lab.Options.Host, Options: testOptions})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res api.DecommissionResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("decommission: %v", err)
	}
	t.Logf("erase report: %+v", res.Erase)
	const mib = 1 << 20
	size := int64(len(disk))
	if res.Erase.Disk != s.lab.DiskPath || res.Erase.Method != api.EraseRegions || res.Erase.VerifiedBytes != 2*mib || res.Erase.Size != size {
		t.Errorf("erase report %+v: want the lab disk's first and last MiB zeroed and read back", res.Erase)
	}
	got, err := os.ReadFile(s.lab.DiskPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, mib}, {size - mib, size}} {
		if n := int(r[1]-r[0]) - bytes.Count(got[r[0]:r[1]], []byte{0}); n != 0 {
			t.Errorf("disk bytes %d-%d: %d not zero", r[0], r[1], n)
		}
	}
	if !bytes.Equal(got[mib:size-mib], disk[mib:size-mib]) {
		t.Error("the disk between its first and last MiB changed")
	}
	if s.sim.Power() {
		t.Error("host still powered on")
	}
	if _, ok, _ := s.store.Lookup(context.Background(), s.lab.MAC); ok {
		t.Error("lease still there")
	}
	h := s.history(t, id, run.GetRunID())
	s.checkNoSecrets(t, h)
	if dir := os.Getenv("RACKFLOW_SAVE_HISTORY_DIR"); dir != "" {
		saveHistory(t, h, filepath.Join(dir, "decommission_host_v1.json"))
	}
}
