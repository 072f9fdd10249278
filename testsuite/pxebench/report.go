package pxebench

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// ErrPerfdhcpOutput is wrapped when perfdhcp's report lacks a statistic.
var ErrPerfdhcpOutput = errors.New("unexpected perfdhcp output")

// Exchange is perfdhcp's statistics of one half of the handshake.
type Exchange struct {
	Sent, Received int
}

// Perfdhcp is what one perfdhcp run (basic scenario, DHCPv4) reports.
type Perfdhcp struct {
	// Rate is perfdhcp's "Rate:" line: completed 4-way exchanges per second.
	Rate float64
	// Discover is DISCOVER-OFFER, Request is REQUEST-ACK.
	Discover, Request Exchange
}

// Loss is the fraction of DISCOVERs that did not end in an ACK.
func (p Perfdhcp) Loss() float64 {
	if p.Discover.Sent == 0 {
		return 1
	}
	return 1 - float64(p.Request.Received)/float64(p.Discover.Sent)
}

var (
	rateRE    = regexp.MustCompile(`(?m)^Rate: ([0-9.]+) 4-way exchanges/second`)
	sectionRE = regexp.MustCompile(`(?m)^\*\*\*Statistics for: (DISCOVER-OFFER|REQUEST-ACK)\*\*\*$`)
	sentRE    = regexp.MustCompile(`(?m)^sent packets: (\d+)$`)
	recvRE    = regexp.MustCompile(`(?m)^received packets: (\d+)$`)
)

// ParsePerfdhcp reads the final report of `perfdhcp -4`.
func ParsePerfdhcp(out string) (Perfdhcp, error) {
	var p Perfdhcp
	m := rateRE.FindStringSubmatch(out)
	if m == nil {
		return p, fmt.Errorf("%w: no Rate line", ErrPerfdhcpOutput)
	}
	p.Rate, _ = strconv.ParseFloat(m[1], 64)
	idx := sectionRE.FindAllStringSubmatchIndex(out, -1)
	found := map[string]bool{}
	for i, loc := range idx {
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		body := out[loc[1]:end]
		s, r := sentRE.FindStringSubmatch(body), recvRE.FindStringSubmatch(body)
		if s == nil || r == nil {
			return p, fmt.Errorf("%w: %s lacks sent/received packets", ErrPerfdhcpOutput, out[loc[2]:loc[3]])
		}
		var e Exchange
		e.Sent, _ = strconv.Atoi(s[1])
		e.Received, _ = strconv.Atoi(r[1])
		name := out[loc[2]:loc[3]]
		found[name] = true
		if name == "DISCOVER-OFFER" {
			p.Discover = e
		} else {
			p.Request = e
		}
	}
	for _, name := range []string{"DISCOVER-OFFER", "REQUEST-ACK"} {
		if !found[name] {
			return p, fmt.Errorf("%w: no %s statistics", ErrPerfdhcpOutput, name)
		}
	}
	return p, nil
}

// Row is one line of the benchmark table: a measure of rackflow and of the
// baseline it is compared with, in the same unit, higher is better.
type Row struct {
	What     string
	Unit     string
	Rackflow float64
	Baseline float64
	// BaselineName names the baseline server, e.g. "dnsmasq 2.90".
	BaselineName string
	// Note is shown after the ratio, e.g. the loss at that rate.
	Note string
	// Goal is the ratio the row must reach; zero means 1.0.
	Goal float64
}

// GoalRatio is the row's goal, 1.0 unless set.
func (r Row) GoalRatio() float64 {
	if r.Goal > 0 {
		return r.Goal
	}
	return 1
}

// Met tells whether the ratio reaches the goal.
func (r Row) Met() bool { return r.Ratio() >= r.GoalRatio() }

// Ratio is rackflow / baseline; 0 when the baseline is 0.
func (r Row) Ratio() float64 {
	if r.Baseline == 0 {
		return 0
	}
	return r.Rackflow / r.Baseline
}

// Table formats rows as an aligned text table.
func Table(rows []Row) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "measure\tunit\trackflow\tbaseline\tbaseline server\trackflow/baseline\tgoal\tnote")
	for _, r := range rows {
		verdict := "met"
		if !r.Met() {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.2f\t≥%.2f %s\t%s\n", r.What, r.Unit, num(r.Rackflow), num(r.Baseline), r.BaselineName, r.Ratio(), r.GoalRatio(), verdict, r.Note)
	}
	w.Flush()
	return b.String()
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

var stampRE = regexp.MustCompile(`(?m)^sent / received: (\d+)(\d\d)(\d\d(?:\.\d+)?) / (\d+)(\d\d)(\d\d(?:\.\d+)?)$`)

// ParsePerfdhcpTimes reads the per-exchange delays `perfdhcp -x t` prints
// ("sent / received: HHMMSS.ffffff / HHMMSS.ffffff" under "***Timestamps
// for packets: DISCOVER-OFFER***" and REQUEST-ACK), in seconds.
func ParsePerfdhcpTimes(out string) map[string][]float64 {
	res := map[string][]float64{}
	const head = "***Timestamps for packets: "
	for _, part := range strings.Split(out, head)[1:] {
		name, body, _ := strings.Cut(part, "***")
		for _, m := range stampRE.FindAllStringSubmatch(body, -1) {
			d := isoSeconds(m[4], m[5], m[6]) - isoSeconds(m[1], m[2], m[3])
			res[name] = append(res[name], d)
		}
	}
	return res
}

func isoSeconds(h, m, s string) float64 {
	hh, _ := strconv.Atoi(h)
	mm, _ := strconv.Atoi(m)
	ss, _ := strconv.ParseFloat(s, 64)
	return float64(hh*3600+mm*60) + ss
}

// Percentile returns the p-th percentile (0..100, nearest rank) of vs, 0
// for none.
func Percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Median returns the median of vs (the mean of the middle two for an even
// count), 0 for none.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
