package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/api"
)

// TestDecommissionFlags: the flags become the workflow input, checked at
// the edge as the workflow checks it; a refused one exits 2 without
// dialing a server (none runs here).
func TestDecommissionFlags(t *testing.T) {
	tests := map[string]struct {
		args    []string
		want    api.DecommissionInput
		wantErr string
	}{
		"defaults drain 30s": {
			args: []string{"node07", "--confirm", "node07"},
			want: api.DecommissionInput{Host: "node07", Confirm: "node07", DrainSeconds: 30},
		},
		"every flag": {
			args: []string{"node07", "--confirm=node07", "--drain", "2m", "--leave-foreign-members", "--full-overwrite"},
			want: api.DecommissionInput{Host: "node07", Confirm: "node07", DrainSeconds: 120, LeaveForeignMembers: true, FullOverwrite: true},
		},
		"drain 0: at once": {
			args: []string{"--drain=0", "node07", "--confirm", "node07"},
			want: api.DecommissionInput{Host: "node07", Confirm: "node07"},
		},
		"no confirm":         {args: []string{"node07"}, wantErr: "confirm"},
		"confirm other host": {args: []string{"node07", "--confirm", "node08"}, wantErr: "must repeat the host's name"},
		"bad host":           {args: []string{"Node 7", "--confirm", "Node 7"}, wantErr: "host"},
		"two hosts":          {args: []string{"node07", "node08", "--confirm", "node07"}, wantErr: "usage"},
		"drain fraction":     {args: []string{"node07", "--confirm", "node07", "--drain", "1.5s"}, wantErr: "whole seconds"},
		"drain too long":     {args: []string{"node07", "--confirm", "node07", "--drain", "2h"}, wantErr: "drain_seconds"},
		"drain negative":     {args: []string{"node07", "--confirm", "node07", "--drain", "-1s"}, wantErr: "0 or more"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var errOut bytes.Buffer
			in, _, _, ok := decommissionInput(tc.args, &errOut)
			if tc.wantErr != "" {
				if ok || !strings.Contains(errOut.String(), tc.wantErr) {
					t.Errorf("ok=%v, stderr %q: want refused, saying %q", ok, errOut.String(), tc.wantErr)
				}
				return
			}
			if !ok {
				t.Fatalf("refused: %s", errOut.String())
			}
			if d := cmp.Diff(tc.want, in); d != "" {
				t.Errorf("input (-want +got):\n%s", d)
			}
		})
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"--address", "127.0.0.1:1", "decommission", "node07"}, &out, &errOut); code != ExitUsage {
		t.Errorf("exit %d, want %d (usage, no dial): %s", code, ExitUsage, errOut.String())
	}
}

// TestDecommissionSummary: --wait's last line names the erase and every
// membership removed or left.
func TestDecommissionSummary(t *testing.T) {
	got := decommissionSummary(api.DecommissionResult{
		Host: "node07", Duration: "3m2s",
		Erase:       api.EraseReport{Disk: "/dev/sda", Method: api.EraseRegions, VerifiedBytes: 4 << 20},
		Unpublished: []api.VIPMember{{NetScaler: "ns1", ServiceGroup: "rf_sg", Owner: "publish/203.0.113.10:443", IP: "10.0.0.7", Port: 443}},
		LeftForeign: []api.VIPMember{{NetScaler: "ns1", ServiceGroup: "team_x", Comment: "team-x", IP: "10.0.0.7", Port: 80}},
	})
	want := `node07 decommissioned in 3m2s: /dev/sda erased (zero-regions, 4194304 bytes read back as zeroes)
  removed from ns1:rf_sg member 10.0.0.7:443 (publish/203.0.113.10:443)
  left in ns1:team_x member 10.0.0.7:80: not rackflow's (comment "team-x")`
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("summary (-want +got):\n%s", d)
	}
}
