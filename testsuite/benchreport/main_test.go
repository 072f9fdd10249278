package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rackflow/rackflow/testsuite/pxebench"
)

// imageOutput writes a table the way testsuite/imagebench prints it
// (tabwriter, right-aligned, trailing tab), the machine: line first.
func imageOutput(pinned bool, rows [][]string) string {
	var b bytes.Buffer
	share := "sshd and the worker share them"
	if pinned {
		share = "pinned as two machines: the host's sshd (and what it runs) on CPU 1, the sender (worker, ssh, dd) on CPU 0"
	}
	fmt.Fprintf(&b, "\nimage 1024 MiB raw (25%% random, rest zeros: gzip -1 260 MiB, zstd -3 257 MiB, xz -1 256 MiB); disk: sparse file in /tmp\n")
	fmt.Fprintf(&b, "machine: 2 CPUs, Some CPU; %s; median of 3 runs (xz: 1; ...); MB/s = raw MB (10^6) / wall time\n", share)
	fmt.Fprintf(&b, "vs ssh: against the baseline command ...\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "what\tMB/s\tvs ssh\tvs ssh aes-gcm\tworker peak RSS\tworker CPU s/GiB\tsecs\tnote\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
	b.WriteString("\nrackflow rows include dialing, ...\n")
	return b.String()
}

const fleetOutput = `rackflow fleet bench: ProvisionHost x 12 at once, one worker, 2 CPUs, 2026-12-05
measure                                              dev server                   cluster
runs started                                         12                           12
completed correctly                                  12                           12
wall time (all runs)                                 20.873s                      20.696s
runs/minute                                          34.5                         34.8
one run alone                                        6.029s                       6.075s
run done after fleet start p50 / p95 / max           18.046s / 20.871s / 20.871s  18.216s / 20.692s / 20.692s
activity schedule-to-close p50 / p99 (histories)     128ms / 8.895s               78ms / 8.642s
activity start-to-close p50 / p99 (histories)        58ms / 8.887s                37ms / 8.636s
activity schedule-to-start p50 / p99 (histories)     22ms / 148ms                 17ms / 186ms
history events per run p50 / max                     94 / 94                      94 / 94
history size per run p50 / max                       20.6 KiB / 20.6 KiB          20.6 KiB / 20.6 KiB
BMC calls at once, most of any BMC (limit 1)         1 (4 BMCs, 156 calls)        1 (4 BMCs, 156 calls)
worker peak RSS (goal < 300 MiB)                     64.2 MiB                     69.4 MiB
server peak RSS (sum of its processes' peaks)        170.7 MiB (1 process)        231.2 MiB (2 processes)
PostgreSQL peak PSS (all its processes, 1s samples)  -                            110.0 MiB
fakes (bench process) peak RSS                       50.1 MiB                     52.3 MiB
CPU time: worker / server                            1.8s / 6.9s                  1.9s / 7.1s
CPU time: fakes / host commands                      1.2s / 3.5s                  1.5s / 3.8s
image per host                                       2.0 MiB
BMCs                                                 4 host(s) per BMC, each call answered after 50ms
worker settings                                      activity slots 1000, workflow task slots 1000, activity pollers 2, workflow task pollers 2
anchor                                               Ironic defaults to 250 concurrent deploys per conductor

schedule-to-close per activity type, p50 / p99 (histories; retries inside):
activity                count  dev server      cluster
BootFromDisk            12     8.7s / 8.974s   8.54s / 8.642s
Bootstrap               12     241ms / 302ms   289ms / 397ms
CheckImage              12     114ms / 202ms   48ms / 217ms
LastCompletedProvision  12     155ms / 217ms   95ms / 186ms
PowerOnPXE              12     6.568s / 8.77s  5.528s / 8.822s
RegisterLease           24     46ms / 231ms    51ms / 158ms
ResolveHost             12     112ms / 212ms   74ms / 309ms
VerifyBoot              12     25ms / 42ms     41ms / 133ms
WaitForSSH              24     33ms / 107ms    35ms / 98ms
WriteImage              12     293ms / 367ms   485ms / 612ms
`

func TestParseImage(t *testing.T) {
	out := "$ go run ./testsuite/imagebench\n" + imageOutput(false, [][]string{
		{"ssh dd (aes128-gcm)", "546", "1.45", "1.00", "-", "-", "1.97", ""},
		{"rackflow push raw (verified)", "404", "1.07", "0.74", "32 MiB", "1.70", "2.66", "verify tail 0.1s"},
	}) + "\nthe same rows for push and pull, as two machines (host pinned to CPU 1, sender to CPU 0):\n" + imageOutput(true, [][]string{
		{"rackflow push raw (verified)", "420", "1.03", "0.72", "32 MiB", "1.60", "2.56", ""},
		{"rackflow pull raw (verified)", "600", "1.47", "1.02", "30 MiB", "1.20", "1.79", ""},
	})
	got, err := ParseImage(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Bench: "image", What: "ssh dd (aes128-gcm)", Unit: "MB/s", Value: 546, BaselineName: "ssh aes128-gcm", Ratio: 1, Note: "vs ssh (default cipher) 1.45"},
		{Bench: "image", What: "rackflow push raw (verified)", Unit: "MB/s", Value: 404, BaselineName: "ssh aes128-gcm", Ratio: 0.74,
			Note: "vs ssh (default cipher) 1.07; worker peak RSS 32 MiB; worker CPU s/GiB 1.70; verify tail 0.1s"},
		{Bench: "image", What: "rackflow push raw (verified) [pinned]", Unit: "MB/s", Value: 420, BaselineName: "ssh aes128-gcm", Ratio: 0.72,
			Goal: 0.9, Met: false, Note: "vs ssh (default cipher) 1.03; worker peak RSS 32 MiB; worker CPU s/GiB 1.60"},
		{Bench: "image", What: "rackflow pull raw (verified) [pinned]", Unit: "MB/s", Value: 600, BaselineName: "ssh aes128-gcm", Ratio: 1.02,
			Note: "vs ssh (default cipher) 1.47; worker peak RSS 30 MiB; worker CPU s/GiB 1.20"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := ParseImage("imagebench: build diskhelper: exit status 1\n"); err == nil {
		t.Error("output without a table parsed")
	}
}

func TestParseFleet(t *testing.T) {
	got, err := ParseFleet(fleetOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Bench: "fleet", What: "ProvisionHost x 12 at once, completed [dev server]", Unit: "runs", Value: 12, Baseline: 12, BaselineName: "started", Ratio: 1, Goal: 1, Met: true},
		{Bench: "fleet", What: "runs/minute [dev server]", Unit: "runs/min", Value: 34.5, Note: "wall 20.873s; one run alone 6.029s"},
		{Bench: "fleet", What: "worker peak RSS [dev server]", Unit: "MiB", Value: 64.2, Baseline: 300, BaselineName: "goal <", Ratio: 300 / 64.2, Goal: 1, Met: true,
			Note: "ratio = goal / peak RSS"},
		{Bench: "fleet", What: "BMC calls at once, most of any BMC [dev server]", Unit: "calls", Value: 1, Baseline: 1, BaselineName: "limit", Ratio: 1, Goal: 1, Met: true,
			Note: "1 (4 BMCs, 156 calls)"},
		{Bench: "fleet", What: "activity schedule-to-close p99 [dev server]", Unit: "s", Value: 8.895, Note: "p50 128ms"},
		{Bench: "fleet", What: "server peak RSS [dev server]", Unit: "MiB", Value: 170.7, Note: "Temporal server"},
		{Bench: "fleet", What: "ProvisionHost x 12 at once, completed [cluster]", Unit: "runs", Value: 12, Baseline: 12, BaselineName: "started", Ratio: 1, Goal: 1, Met: true},
		{Bench: "fleet", What: "runs/minute [cluster]", Unit: "runs/min", Value: 34.8, Note: "wall 20.696s; one run alone 6.075s"},
		{Bench: "fleet", What: "worker peak RSS [cluster]", Unit: "MiB", Value: 69.4, Baseline: 300, BaselineName: "goal <", Ratio: 300 / 69.4, Goal: 1, Met: true,
			Note: "ratio = goal / peak RSS"},
		{Bench: "fleet", What: "BMC calls at once, most of any BMC [cluster]", Unit: "calls", Value: 1, Baseline: 1, BaselineName: "limit", Ratio: 1, Goal: 1, Met: true,
			Note: "1 (4 BMCs, 156 calls)"},
		{Bench: "fleet", What: "activity schedule-to-close p99 [cluster]", Unit: "s", Value: 8.642, Note: "p50 78ms"},
		{Bench: "fleet", What: "server peak RSS [cluster]", Unit: "MiB", Value: 231.2, Note: "Temporal server; PostgreSQL 110.0 MiB"},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := ParseFleet("fleetbench: 3 of 200 runs failed\n"); err == nil {
		t.Error("output without a table parsed")
	}
	// A BMC over its limit misses the row's goal.
	over := strings.Replace(fleetOutput, "1 (4 BMCs, 156 calls)        1 (4", "2 (4 BMCs, 156 calls)        1 (4", 1)
	rows, err := ParseFleet(over)
	if err != nil {
		t.Fatal(err)
	}
	if r := rows[3]; r.Value != 2 || r.Met {
		t.Errorf("BMC row with 2 calls at once under limit 1: %+v, want missed", r)
	}
}

// TestCombineAndCompare: the three outputs fold into one JSON report, and
// compare reads two of them.
func TestCombineAndCompare(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image.txt")
	must(t, os.WriteFile(img, []byte(imageOutput(true, [][]string{{"rackflow push raw (verified)", "540", "1.3", "0.93", "32 MiB", "1.60", "2.00", ""}})), 0o644))
	pxeRows, _ := json.Marshal([]pxebench.Row{
		{What: "TFTP 32 MiB, blksize 512 (curl)", Unit: "MiB/s", Rackflow: 12, Baseline: 11.9, BaselineName: "dnsmasq"},
		{What: "DHCP DORA/s, highest rate with <1% loss", Unit: "DORA/s", Rackflow: 5000, Baseline: 4500, BaselineName: "dnsmasq", Goal: 1.25},
	})
	pxeF := filepath.Join(dir, "pxe.json")
	must(t, os.WriteFile(pxeF, pxeRows, 0o644))
	fleet := filepath.Join(dir, "fleet.txt")
	must(t, os.WriteFile(fleet, []byte(fleetOutput), 0o644))
	results := filepath.Join(dir, "results")

	var out bytes.Buffer
	if err := run([]string{"combine", "-image", img, "-pxe", pxeF, "-fleet", fleet, "-dir", results}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"≥0.90 met", "≥1.25 MISSED", "TFTP 32 MiB, blksize 512", "worker peak RSS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	files, _ := filepath.Glob(filepath.Join(results, "*.json"))
	if len(files) != 1 {
		t.Fatalf("results: %v, want one JSON file", files)
	}
	rep, err := load(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 15 || rep.Host == "" || rep.Date == "" {
		t.Fatalf("report %+v: want 15 rows, a host and a date", rep)
	}
	var met []bool
	for _, r := range rep.Rows {
		met = append(met, r.Met)
	}
	if diff := cmp.Diff([]bool{true, true, false,
		true, false, true, true, false, false, // dev server
		true, false, true, true, false, false}, met); diff != "" {
		t.Errorf("met (-want +got):\n%s", diff)
	}

	// A second run with one figure changed and one row gone.
	rep2 := rep
	rep2.Rows = append([]Row(nil), rep.Rows[:5]...)
	rep2.Rows[1].Value = 13.2
	b, _ := json.Marshal(rep2)
	second := filepath.Join(dir, "second.json")
	must(t, os.WriteFile(second, b, 0o644))
	out.Reset()
	if err := run([]string{"compare", files[0], second}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"+10.0%", "gone"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("compare lacks %q:\n%s", want, out.String())
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
