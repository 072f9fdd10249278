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

// fleetTable reads bench-fleet's table: the header row starts with
// "measure" and names one engine a column; every row below it, up to a
// blank line, is a label and a cell per engine (cells split on two or more
// spaces). A row with fewer cells is a note on the whole bench.
func fleetTable(out string) (engines []string, cells map[string][]string, ok bool) {
	cells = map[string][]string{}
	in := false
	for _, line := range strings.Split(out, "\n") {
		trim := strings.TrimSpace(line)
		f := cellSep.Split(trim, -1)
		switch {
		case !in && len(f) > 1 && f[0] == "measure":
			engines, in = f[1:], true
		case in && trim == "":
			return engines, cells, true
		case in && len(f) == len(engines)+1:
			cells[f[0]] = f[1:]
		}
	}
	return engines, cells, in
}

var (
	fleetRSSLabel = regexp.MustCompile(`^worker peak RSS \(goal < (\d+) MiB\)$`)
	fleetBMCLabel = regexp.MustCompile(`^BMC calls at once, most of any BMC \(limit (\d+)\)$`)
	leadingNumber = regexp.MustCompile(`^[0-9.]+`)
)

// ParseFleet reads bench-fleet's table, a column per Temporal engine, and
// gives each engine's rows (the engine in brackets after the measure).
// Goals: every run completes, the worker's peak RSS stays under the goal
// it prints (ratio goal / RSS, higher is better like every other ratio),
// and no BMC serves more calls at once than the limit (ratio limit /
// most seen). Latency, server memory and history size have no goal.
func ParseFleet(out string) ([]Row, error) {
	engines, cells, ok := fleetTable(out)
	var rssGoal, bmcLimit float64
	rssKey, bmcKey := "", ""
	for k := range cells {
		if m := fleetRSSLabel.FindStringSubmatch(k); m != nil {
			rssKey, rssGoal = k, atof(m[1])
		}
		if m := fleetBMCLabel.FindStringSubmatch(k); m != nil {
			bmcKey, bmcLimit = k, atof(m[1])
		}
	}
	need := []string{"completed correctly", "runs started", "runs/minute"}
	for _, k := range need {
		if cells[k] == nil {
			ok = false
		}
	}
	if !ok || rssKey == "" {
		return nil, fmt.Errorf("%w: no fleet table (measure row, completed, started, runs/minute, worker peak RSS)", ErrFormat)
	}
	var rows []Row
	for i, e := range engines {
		cell := func(k string) string {
			if c := cells[k]; c != nil {
				return c[i]
			}
			return ""
		}
		num := func(k string) float64 { return atof(leadingNumber.FindString(cell(k))) }
		tag := " [" + e + "]"
		okRuns, started := num("completed correctly"), num("runs started")
		done := Row{Bench: "fleet", What: fmt.Sprintf("ProvisionHost x %.0f at once, completed%s", started, tag), Unit: "runs",
			Value: okRuns, Baseline: started, BaselineName: "started", Goal: 1}
		if started > 0 {
			done.Ratio = okRuns / started
		}
		done.Met = done.Ratio >= 1
		var notes []string
		if w := cell("wall time (all runs)"); w != "" {
			notes = append(notes, "wall "+w)
		}
		if so := cell("one run alone"); so != "" {
			notes = append(notes, "one run alone "+so)
		}
		rows = append(rows, done, Row{Bench: "fleet", What: "runs/minute" + tag, Unit: "runs/min", Value: num("runs/minute"), Note: strings.Join(notes, "; ")})
		rss := num(rssKey)
		mem := Row{Bench: "fleet", What: "worker peak RSS" + tag, Unit: "MiB", Value: rss, Baseline: rssGoal, BaselineName: "goal <", Goal: 1,
			Note: "ratio = goal / peak RSS"}
		if rss > 0 {
			mem.Ratio = rssGoal / rss
		}
		mem.Met = rss < rssGoal
		rows = append(rows, mem)
		if bmcKey != "" {
			peak := num(bmcKey)
			r := Row{Bench: "fleet", What: "BMC calls at once, most of any BMC" + tag, Unit: "calls", Value: peak, Baseline: bmcLimit, BaselineName: "limit", Goal: 1,
				Note: cell(bmcKey)}
			if peak > 0 {
				r.Ratio = bmcLimit / peak
			}
			r.Met = peak <= bmcLimit
			rows = append(rows, r)
		}
		if c := cell("activity schedule-to-close p50 / p99 (histories)"); c != "" {
			if p50, p99, ok := strings.Cut(c, " / "); ok {
				if d, err := time.ParseDuration(p99); err == nil {
					rows = append(rows, Row{Bench: "fleet", What: "activity schedule-to-close p99" + tag, Unit: "s", Value: d.Seconds(), Note: "p50 " + p50})
				}
			}
		}
		if c := cell("server peak RSS (sum of its processes' peaks)"); c != "" {
			note := "Temporal server"
			if pg := cell("PostgreSQL peak PSS (all its processes, 1s samples)"); pg != "" && pg != "-" {
				note += "; PostgreSQL " + pg
			}
			rows = append(rows, Row{Bench: "fleet", What: "server peak RSS" + tag, Unit: "MiB", Value: num("server peak RSS (sum of its processes' peaks)"), Note: note})
		}
	}
	return rows, nil
}

func atof(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}
