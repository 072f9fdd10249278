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

const fleetOutput = `rackflow fleet bench: ProvisionHost x 200 at once, one worker, one dev server, 2 CPUs
runs started                                  200
completed correctly                           200
wall time (all runs)                          1m42.311s
runs/minute                                   117.3
one run alone                                 4.512s
run done after fleet start p50 / p95 / max    51.2s / 97.1s / 1m42.3s
worker peak RSS (goal < 300 MiB)              71.4 MiB
dev server peak RSS                           180.2 MiB
fakes (bench process) peak RSS                90.0 MiB
CPU time, whole bench: worker / dev server    40.1s / 60.2s
image per host                                1.0 MiB
anchor                                        Ironic defaults to 250 concurrent deploys per conductor
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
		{Bench: "fleet", What: "ProvisionHost x 200 at once, completed", Unit: "runs", Value: 200, Baseline: 200, BaselineName: "started", Ratio: 1, Goal: 1, Met: true},
		{Bench: "fleet", What: "runs/minute", Unit: "runs/min", Value: 117.3, Note: "wall 1m42.311s; one run alone 4.512s"},
		{Bench: "fleet", What: "worker peak RSS", Unit: "MiB", Value: 71.4, Baseline: 300, BaselineName: "goal <", Ratio: 300 / 71.4, Goal: 1, Met: true,
			Note: "ratio = goal / peak RSS"},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := ParseFleet("fleetbench: 3 of 200 runs failed\n"); err == nil {
		t.Error("output without a table parsed")
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
	if len(rep.Rows) != 6 || rep.Host == "" || rep.Date == "" {
		t.Fatalf("report %+v: want 6 rows, a host and a date", rep)
	}
	var met []bool
	for _, r := range rep.Rows {
		met = append(met, r.Met)
	}
	if diff := cmp.Diff([]bool{true, true, false, true, false, true}, met); diff != "" {
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
