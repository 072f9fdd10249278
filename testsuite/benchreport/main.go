// Command benchreport folds the outputs of `make bench`'s three benches
// (bench-image's tables, bench-pxe's rows, bench-fleet's table) into one
// table of every ratio and whether its goal is met, saved as JSON so two
// runs can be compared:
//
//	benchreport combine -image image.txt -pxe pxe.json -fleet fleet.txt -dir bench-results
//	benchreport compare OLD.json NEW.json
//
// It measures nothing itself and invents no figure: every value is one a
// bench printed.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ErrFormat is wrapped when a bench's output is not what this reads.
var ErrFormat = errors.New("unexpected bench output")

// Row is one measure with its ratio against a baseline.
type Row struct {
	Bench string `json:"bench"` // image, pxe, fleet
	What  string `json:"what"`
	Unit  string `json:"unit"`
	// Value is rackflow's figure in Unit.
	Value float64 `json:"value"`
	// Baseline is the baseline's figure in Unit, when the bench printed
	// one (bench-image prints only the ratio).
	Baseline     float64 `json:"baseline,omitempty"`
	BaselineName string  `json:"baseline_name,omitempty"`
	// Ratio is higher-is-better: rackflow / baseline, or goal / value for
	// a measure where less is better (memory).
	Ratio float64 `json:"ratio"`
	// Goal is the ratio to reach; zero: the row has no goal.
	Goal float64 `json:"goal,omitempty"`
	Met  bool    `json:"met"`
	Note string  `json:"note,omitempty"`
}

// Report is one `make bench` run.
type Report struct {
	Date    string `json:"date"`
	Host    string `json:"host"`
	Machine string `json:"machine,omitempty"`
	Rows    []Row  `json:"rows"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(2)
	}
}

func run(args []string, w io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: benchreport combine|compare ...")
	}
	switch args[0] {
	case "combine":
		fs := flag.NewFlagSet("combine", flag.ContinueOnError)
		imageF := fs.String("image", "", "bench-image's output")
		pxeF := fs.String("pxe", "", "bench-pxe's rows (JSON, RACKFLOW_BENCH_JSON)")
		fleetF := fs.String("fleet", "", "bench-fleet's output")
		dir := fs.String("dir", "bench-results", "folder for the JSON report")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		rep, err := combine(*imageF, *pxeF, *fleetF)
		if err != nil {
			return err
		}
		host, _ := os.Hostname()
		rep.Date, rep.Host = time.Now().UTC().Format(time.RFC3339), host
		rep.Machine = machine()
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return err
		}
		out := filepath.Join(*dir, time.Now().UTC().Format("2006-01-02T1504")+"-"+host+".json")
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(w, "make bench, %s, %s (%s)\n\n", rep.Date, rep.Host, rep.Machine)
		printTable(w, rep.Rows)
		fmt.Fprintf(w, "\nsaved %s (compare two runs: go run ./testsuite/benchreport compare OLD.json NEW.json)\n", out)
		return nil
	case "compare":
		if len(args) != 3 {
			return errors.New("usage: benchreport compare OLD.json NEW.json")
		}
		a, err := load(args[1])
		if err != nil {
			return err
		}
		b, err := load(args[2])
		if err != nil {
			return err
		}
		compare(w, a, b)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func combine(imageF, pxeF, fleetF string) (Report, error) {
	var rep Report
	add := func(name, file string, parse func(string) ([]Row, error)) error {
		if file == "" {
			return nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rows, err := parse(string(b))
		if err != nil {
			return fmt.Errorf("%s (%s): %w", name, file, err)
		}
		rep.Rows = append(rep.Rows, rows...)
		return nil
	}
	if err := add("image", imageF, ParseImage); err != nil {
		return rep, err
	}
	if err := add("pxe", pxeF, ParsePXE); err != nil {
		return rep, err
	}
	if err := add("fleet", fleetF, ParseFleet); err != nil {
		return rep, err
	}
	return rep, nil
}

func load(path string) (Report, error) {
	var r Report
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func verdict(r Row) string {
	switch {
	case r.Goal == 0:
		return "no goal"
	case r.Met:
		return fmt.Sprintf("≥%.2f met", r.Goal)
	}
	return fmt.Sprintf("≥%.2f MISSED", r.Goal)
}

func printTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "bench\tmeasure\trackflow\tbaseline\tratio\tgoal\tnote")
	for _, r := range rows {
		base := "-"
		if r.Baseline > 0 {
			base = num(r.Baseline) + " " + r.Unit
		}
		if r.BaselineName != "" {
			base = r.BaselineName + " " + base
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%.2f\t%s\t%s\n", r.Bench, r.What, num(r.Value), r.Unit, base, r.Ratio, verdict(r), r.Note)
	}
	tw.Flush()
}

// compare prints each row of b beside the same row of a.
func compare(w io.Writer, a, b Report) {
	fmt.Fprintf(w, "old: %s %s\nnew: %s %s\n\n", a.Date, a.Host, b.Date, b.Host)
	old := map[string]Row{}
	for _, r := range a.Rows {
		old[r.Bench+"\x00"+r.What] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "bench\tmeasure\told value\tnew value\tchange\told ratio\tnew ratio\tgoal")
	seen := map[string]bool{}
	for _, r := range b.Rows {
		k := r.Bench + "\x00" + r.What
		seen[k] = true
		o, ok := old[k]
		if !ok {
			fmt.Fprintf(tw, "%s\t%s\t-\t%s\tnew row\t-\t%.2f\t%s\n", r.Bench, r.What, num(r.Value), r.Ratio, verdict(r))
			continue
		}
		change := "-"
		if o.Value != 0 {
			change = fmt.Sprintf("%+.1f%%", 100*(r.Value/o.Value-1))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\n", r.Bench, r.What, num(o.Value), num(r.Value), change, o.Ratio, r.Ratio, verdict(r))
	}
	for _, r := range a.Rows {
		if !seen[r.Bench+"\x00"+r.What] {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\tgone\t%.2f\t-\t-\n", r.Bench, r.What, num(r.Value), r.Ratio)
		}
	}
	tw.Flush()
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func machine() string {
	cpu, _ := os.ReadFile("/proc/cpuinfo")
	model, n := "", 0
	for _, line := range strings.Split(string(cpu), "\n") {
		if strings.HasPrefix(line, "model name") {
			n++
			if model == "" {
				_, model, _ = strings.Cut(line, ":")
			}
		}
	}
	return fmt.Sprintf("%d CPUs, %s", n, strings.TrimSpace(model))
}

var cellSep = regexp.MustCompile(`\s{2,}`)

// ImagePushGoal is the goal of the pinned verified raw push against
// OpenSSH told to use aes128-gcm (issue 16).
const ImagePushGoal = 0.9

// ParseImage reads bench-image's tables (one per invocation: the second,
// `-pin`, says "pinned as two machines" on its machine: line). Each row's
// ratio is the "vs ssh aes-gcm" column; "vs ssh" goes in the note.
func ParseImage(out string) ([]Row, error) {
	var rows []Row
	pinned, inTable := false, false
	for _, line := range strings.Split(out, "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trim, "machine:"):
			pinned = strings.Contains(trim, "pinned as two machines")
			inTable = false
			continue
		case strings.HasPrefix(trim, "what ") && strings.Contains(trim, "vs ssh aes-gcm"):
			inTable = true
			continue
		case trim == "":
			inTable = false
			continue
		}
		if !inTable {
			continue
		}
		f := cellSep.Split(trim, -1)
		if len(f) < 7 {
			return nil, fmt.Errorf("%w: image row %q", ErrFormat, trim)
		}
		mbps, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("%w: image row %q: MB/s %q", ErrFormat, trim, f[1])
		}
		r := Row{Bench: "image", What: f[0], Unit: "MB/s", Value: mbps, BaselineName: "ssh aes128-gcm"}
		if pinned {
			r.What += " [pinned]"
		}
		if v, err := strconv.ParseFloat(f[3], 64); err == nil {
			r.Ratio = v
		}
		notes := []string{"vs ssh (default cipher) " + f[2]}
		if f[4] != "-" {
			notes = append(notes, "worker peak RSS "+f[4])
		}
		if f[5] != "-" {
			notes = append(notes, "worker CPU s/GiB "+f[5])
		}
		if len(f) > 7 {
			notes = append(notes, strings.Join(f[7:], " "))
		}
		r.Note = strings.Join(notes, "; ")
		if pinned && f[0] == "rackflow push raw (verified)" {
			r.Goal = ImagePushGoal
			r.Met = r.Ratio >= r.Goal
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: no image table", ErrFormat)
	}
	return rows, nil
}

// pxeRow is bench-pxe's row as TestBenchPXE writes it (pxebench.Row).
type pxeRow struct {
	What         string
	Unit         string
	Rackflow     float64
	Baseline     float64
	BaselineName string
	Note         string
	Goal         float64
}

// ParsePXE reads the JSON rows bench-pxe writes to $RACKFLOW_BENCH_JSON.
// Every pxe row has a goal: Goal, or 1.0 when zero.
func ParsePXE(out string) ([]Row, error) {
	var in []pxeRow
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		return nil, fmt.Errorf("%w: pxe rows: %w", ErrFormat, err)
	}
	var rows []Row
	for _, p := range in {
		r := Row{Bench: "pxe", What: p.What, Unit: p.Unit, Value: p.Rackflow, Baseline: p.Baseline, BaselineName: p.BaselineName, Note: p.Note, Goal: p.Goal}
		if r.Goal == 0 {
			r.Goal = 1
		}
		if p.Baseline > 0 {
			r.Ratio = p.Rackflow / p.Baseline
		}
		r.Met = r.Ratio >= r.Goal
		rows = append(rows, r)
	}
	return rows, nil
}

var (
	fleetCompleted = regexp.MustCompile(`(?m)^completed correctly\s+(\d+)$`)
	fleetStarted   = regexp.MustCompile(`(?m)^runs started\s+(\d+)$`)
	fleetPerMin    = regexp.MustCompile(`(?m)^runs/minute\s+([0-9.]+)$`)
	fleetRSS       = regexp.MustCompile(`(?m)^worker peak RSS \(goal < (\d+) MiB\)\s+([0-9.]+) MiB$`)
	fleetSolo      = regexp.MustCompile(`(?m)^one run alone\s+(\S+)$`)
	fleetWall      = regexp.MustCompile(`(?m)^wall time \(all runs\)\s+(\S+)$`)
)

// ParseFleet reads bench-fleet's table. Its goals: every run completes,
// and the worker's peak RSS stays under the goal it prints (ratio goal /
// RSS, higher is better like every other ratio).
func ParseFleet(out string) ([]Row, error) {
	c, s := fleetCompleted.FindStringSubmatch(out), fleetStarted.FindStringSubmatch(out)
	rss, pm := fleetRSS.FindStringSubmatch(out), fleetPerMin.FindStringSubmatch(out)
	if c == nil || s == nil || rss == nil || pm == nil {
		return nil, fmt.Errorf("%w: no fleet table (completed, started, runs/minute, worker peak RSS)", ErrFormat)
	}
	ok, _ := strconv.Atoi(c[1])
	started, _ := strconv.Atoi(s[1])
	perMin, _ := strconv.ParseFloat(pm[1], 64)
	goalMiB, _ := strconv.ParseFloat(rss[1], 64)
	rssMiB, _ := strconv.ParseFloat(rss[2], 64)
	var rows []Row
	done := Row{Bench: "fleet", What: fmt.Sprintf("ProvisionHost x %d at once, completed", started), Unit: "runs",
		Value: float64(ok), Baseline: float64(started), BaselineName: "started", Goal: 1}
	if started > 0 {
		done.Ratio = float64(ok) / float64(started)
	}
	done.Met = done.Ratio >= 1
	var notes []string
	if w := fleetWall.FindStringSubmatch(out); w != nil {
		notes = append(notes, "wall "+w[1])
	}
	if so := fleetSolo.FindStringSubmatch(out); so != nil {
		notes = append(notes, "one run alone "+so[1])
	}
	rows = append(rows, done,
		Row{Bench: "fleet", What: "runs/minute", Unit: "runs/min", Value: perMin, Note: strings.Join(notes, "; ")})
	mem := Row{Bench: "fleet", What: "worker peak RSS", Unit: "MiB", Value: rssMiB, Baseline: goalMiB, BaselineName: "goal <", Goal: 1,
		Note: "ratio = goal / peak RSS"}
	if rssMiB > 0 {
		mem.Ratio = goalMiB / rssMiB
	}
	mem.Met = rssMiB < goalMiB
	rows = append(rows, mem)
	return rows, nil
}
