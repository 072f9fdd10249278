package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// printTable prints one column per engine. `make bench` (testsuite/
// benchreport) reads it: the header row starts with "measure", cells are
// separated by two or more spaces, and the labels below are its keys.
func printTable(w io.Writer, rs []results, cfg config) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "rackflow fleet bench: ProvisionHost x %d at once, one worker, %d CPUs, %s\n", rs[0].hosts, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label string, cell func(r results) string) {
		cells := []string{label}
		for _, r := range rs {
			cells = append(cells, cell(r))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	dur := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	pair := func(xs []time.Duration) string {
		if len(xs) == 0 {
			return "?"
		}
		return dur(quantile(xs, 0.5)) + " / " + dur(quantile(xs, 0.99))
	}
	row("measure", func(r results) string { return engineNames[r.engine] })
	row("runs started", func(r results) string { return fmt.Sprint(r.hosts) })
	row("completed correctly", func(r results) string { return fmt.Sprint(r.ok) })
	row("wall time (all runs)", func(r results) string { return dur(r.wall) })
	row("runs/minute", func(r results) string { return fmt.Sprintf("%.1f", float64(r.ok)/r.wall.Minutes()) })
	row("one run alone", func(r results) string { return dur(r.solo) })
	row("run done after fleet start p50 / p95 / max", func(r results) string {
		return dur(r.p50) + " / " + dur(r.p95) + " / " + dur(r.max)
	})
	row("activity schedule-to-close p50 / p99 (histories)", func(r results) string { return pair(r.hist.schedToClose) })
	row("activity start-to-close p50 / p99 (histories)", func(r results) string { return pair(r.hist.startToClose) })
	row("activity schedule-to-start p50 / p99 (histories)", func(r results) string { return pair(r.hist.schedToStart) })
	row("history events per run p50 / max", func(r results) string {
		return fmt.Sprintf("%d / %d", quantile(r.hist.events, 0.5), quantile(r.hist.events, 1))
	})
	row("history size per run p50 / max", func(r results) string {
		return kib(quantile(r.hist.bytes, 0.5)) + " / " + kib(quantile(r.hist.bytes, 1))
	})
	row(fmt.Sprintf("BMC calls at once, most of any BMC (limit %d)", cfg.bmcLimit), func(r results) string {
		return fmt.Sprintf("%d (%d BMCs, %d calls)", r.bmc.peak, r.bmc.bmcs, r.bmc.calls)
	})
	row(fmt.Sprintf("worker peak RSS (goal < %d MiB)", cfg.maxWorkerMiB), func(r results) string { return mib(r.workerRSS) })
	row("server peak RSS (sum of its processes' peaks)", func(r results) string {
		return fmt.Sprintf("%s (%d %s)", mib(r.serverRSS), r.serverProcs, plural(r.serverProcs, "process", "processes"))
	})
	row("PostgreSQL peak PSS (all its processes, 1s samples)", func(r results) string {
		if r.pgPSS == 0 {
			return "-"
		}
		return mib(r.pgPSS)
	})
	row("fakes (bench process) peak RSS", func(r results) string { return mib(r.benchRSS) })
	row("CPU time: worker / server", func(r results) string {
		return r.workerCPU.Round(100*time.Millisecond).String() + " / " + r.serverCPU.Round(100*time.Millisecond).String()
	})
	row("CPU time: fakes / host commands", func(r results) string {
		return r.benchCPU.Round(100*time.Millisecond).String() + " / " + r.hostCmdCPU.Round(100*time.Millisecond).String()
	})
	s := rs[0].settings
	fmt.Fprintf(tw, "image per host\t%s\n", mib(rs[0].imageSize))
	fmt.Fprintf(tw, "BMCs\t%d host(s) per BMC, each call answered after %s\n", cfg.hostsPerBMC, cfg.bmcLatency)
	fmt.Fprintf(tw, "worker settings\tactivity slots %d, workflow task slots %d, activity pollers %d, workflow task pollers %d\n",
		s.ActSlots, s.WFTSlots, s.ActPollers, s.WFTPollers)
	fmt.Fprintf(tw, "anchor\tIronic defaults to 250 concurrent deploys per conductor\n")
	tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(w, "schedule-to-close per activity type, p50 / p99 (histories; retries inside):")
	types := map[string]int{}
	for _, r := range rs {
		for t, ds := range r.hist.byType {
			types[t] = max(types[t], len(ds))
		}
	}
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	slices.Sort(names)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	hdr := []string{"activity", "count"}
	for _, r := range rs {
		hdr = append(hdr, engineNames[r.engine])
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	for _, t := range names {
		cells := []string{t, fmt.Sprint(types[t])}
		for _, r := range rs {
			cells = append(cells, pair(r.hist.byType[t]))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

func kib(n int) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
