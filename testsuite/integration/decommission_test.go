package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// TestDecommissionOnTheLab runs DecommissionHost, started with `starter
// decommission`, on the dev server with the real worker against the lab host (ipmi_sim BMC, the live system's
// real sshd, a disk file full of data) and a fake NetScaler in the
// worker's inventory. Two services are published first through the
// worker (PublishService), the host a backend of one of them: the
// decommission drains and unbinds it from that servicegroup (the worker
// SIGKILLed mid-drain and restarted) and saves, while the other backend
// and the other publication stay. Then the live
// system boots through the lease, the first and last MiB of the disk are
// zeroed and read back, the rest stays, the host is powered off and its
// lease removed, and the run's history holds no secret.
func TestDecommissionOnTheLab(t *testing.T) {
	s := newStack(t, 4<<20)
	ns := nitrofake.Start(t, nitrofake.Options{Username: s.lab.NetScalerUser, Password: s.lab.NetScalerPassword})
	if err := s.lab.SetNetScaler(ns.URL()); err != nil {
		t.Fatal(err)
	}
	nsIn := api.NetScaler{URL: ns.URL(), Credential: "netscaler/lab", Auth: "header"}
	hostIP := s.lab.Host().Network.IP
	web := api.PublishInput{Name: "web", VIP: "203.0.113.50", Port: 443, Protocol: "TCP", NetScaler: nsIn,
		Backends: []api.Backend{{IP: hostIP, Port: 8443}, {IP: "10.0.2.11", Port: 8443}}}
	db := api.PublishInput{Name: "db", VIP: "203.0.113.51", Port: 5432, Protocol: "TCP", NetScaler: nsIn,
		Backends: []api.Backend{{IP: "10.0.2.12", Port: 5432}}}
	for _, in := range []api.PublishInput{web, db} {
		prun, err := s.client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
			ID: api.PublishWorkflowID(in.VIP, in.Port), TaskQueue: api.DefaultTaskQueue,
		}, api.WorkflowPublishService, in)
		if err == nil {
			err = prun.Get(context.Background(), nil)
		}
		if err != nil {
			t.Fatalf("publish %s: %v", in.Name, err)
		}
	}
	webSG := nitro.Names(api.PublishWorkflowID(web.VIP, web.Port)).ServiceGroup
	dbSG := nitro.Names(api.PublishWorkflowID(db.VIP, db.Port)).ServiceGroup
	members := func(sg string) []string {
		var out []string
		for _, r := range ns.Bindings("servicegroup_servicegroupmember_binding", sg) {
			out = append(out, fmt.Sprintf("%v:%v", r["ip"], r["port"]))
		}
		sort.Strings(out)
		return out
	}
	if got := members(webSG); len(got) != 2 {
		t.Fatalf("%s members before: %v", webSG, got)
	}

	disk, err := os.ReadFile(s.lab.DiskPath)
	if err != nil {
		t.Fatal(err)
	}
	rand.Read(disk)
	if err := os.WriteFile(s.lab.DiskPath, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	id := api.DecommissionWorkflowID(s.lab.Options.Host)
	// Started as on-call starts it: the real starter binary.
	host := s.lab.Options.Host
	out, code := s.starter(t, "decommission", host, "--confirm", host, "--drain", "4s")
	if code != 0 || !strings.Contains(out, "started "+id) || !strings.Contains(out, "starter status "+id) {
		t.Fatalf("starter decommission: exit %d:\n%s", code, out)
	}
	run := s.client.GetWorkflow(context.Background(), id, "")
	// Kill the worker while it drains the host's member: the removal
	// resumes on the restarted worker and is reported once.
	deadline := time.Now().Add(time.Minute)
	for !activityStarted(t, s.client, id, "EnsureMembers") {
		if time.Now().After(deadline) {
			t.Fatal("EnsureMembers never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.worker.kill()
	s.worker.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res api.DecommissionResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("decommission: %v", err)
	}
	t.Logf("erase report: %+v", res.Erase)
	t.Logf("unpublished: %v", res.Unpublished)
	wantGone := []api.VIPMember{{NetScaler: "lab", ServiceGroup: webSG, Owner: api.PublishWorkflowID(web.VIP, web.Port), Server: hostIP, IP: hostIP, Port: 8443}}
	if d := cmp.Diff(wantGone, res.Unpublished); d != "" {
		t.Errorf("result's unpublished (-want +got):\n%s", d)
	}
	if got := members(webSG); !slices.Equal(got, []string{"10.0.2.11:8443"}) {
		t.Errorf("%s members after: %v, want the other backend only", webSG, got)
	}
	if got := members(dbSG); !slices.Equal(got, []string{"10.0.2.12:5432"}) {
		t.Errorf("%s members after: %v, want the other publication untouched", dbSG, got)
	}
	disabled := ns.Disabled()
	if len(disabled) == 0 {
		t.Error("the host's member was not drained")
	}
	for _, d := range disabled {
		if d.ServiceGroup != webSG || d.ServerName != hostIP || d.Port != 8443 || d.Delay != 4 || d.Graceful != "YES" {
			t.Errorf("drain: %+v, want the host's member disabled gracefully with delay 4", d)
		}
	}
	if saved, ok := ns.SavedConfig(); !ok || len(saved.Bindings["servicegroup_servicegroupmember_binding"]) != 2 {
		t.Error("the removal was not saved")
	}
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
		// v1 was recorded before the unpublish step did anything.
		saveHistory(t, h, filepath.Join(dir, "decommission_host_v2.json"))
	}
}
