package pxebench

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePerfdhcp(t *testing.T) {
	real, err := os.ReadFile("testdata/perfdhcp-2.2.0.txt")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		out     string
		want    Perfdhcp
		wantErr error
	}{
		"report of Kea 2.2.0's perfdhcp": {
			out:  string(real),
			want: Perfdhcp{Rate: 7500.49, Discover: Exchange{Sent: 39997, Received: 37975}, Request: Exchange{Sent: 37975, Received: 37527}},
		},
		"no rate line": {
			out:     strings.Replace(string(real), "Rate: ", "Speed: ", 1),
			wantErr: ErrPerfdhcpOutput,
		},
		"no REQUEST-ACK section (perfdhcp -i)": {
			out:     string(real)[:strings.Index(string(real), "***Statistics for: REQUEST-ACK")],
			wantErr: ErrPerfdhcpOutput,
		},
		"error message only": {
			out:     "Error running perfdhcp: Failed to open socket\n",
			wantErr: ErrPerfdhcpOutput,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePerfdhcp(tc.out)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPerfdhcpLoss(t *testing.T) {
	tests := map[string]struct {
		p    Perfdhcp
		want float64
	}{
		"all acked":    {Perfdhcp{Discover: Exchange{Sent: 100, Received: 100}, Request: Exchange{Sent: 100, Received: 100}}, 0},
		"offers lost":  {Perfdhcp{Discover: Exchange{Sent: 100, Received: 80}, Request: Exchange{Sent: 80, Received: 80}}, 0.2},
		"acks lost":    {Perfdhcp{Discover: Exchange{Sent: 100, Received: 100}, Request: Exchange{Sent: 100, Received: 75}}, 0.25},
		"nothing sent": {Perfdhcp{}, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.p.Loss(); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Loss() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := map[string]struct {
		in   []float64
		want float64
	}{
		"none": {nil, 0},
		"odd":  {[]float64{3, 1, 2}, 2},
		"even": {[]float64{4, 1, 3, 2}, 2.5},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Median(tc.in); got != tc.want {
				t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestTable(t *testing.T) {
	got := Table([]Row{
		{What: "DHCP", Unit: "DORA/s", Rackflow: 7890, Baseline: 3135, BaselineName: "dnsmasq", Note: "peak"},
		{What: "DHCP clean", Unit: "DORA/s", Rackflow: 5000, Baseline: 4500, BaselineName: "dnsmasq", Goal: 1.25},
		{What: "TFTP 512", Unit: "MiB/s", Rackflow: 9.5, Baseline: 19, BaselineName: "dnsmasq"},
		{What: "nothing to compare", Unit: "x", Rackflow: 1, Baseline: 0, BaselineName: "none"},
	})
	want := `measure             unit    rackflow  baseline  baseline server  rackflow/baseline  goal          note
DHCP                DORA/s  7890      3135      dnsmasq          2.52               ≥1.00 met     peak
DHCP clean          DORA/s  5000      4500      dnsmasq          1.11               ≥1.25 MISSED  
TFTP 512            MiB/s   9.50      19.0      dnsmasq          0.50               ≥1.00 MISSED  
nothing to compare  x       1.00      0.00      none             0.00               ≥1.00 MISSED  
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestParsePerfdhcpTimes: the per-exchange timestamps of `perfdhcp -x t`
// (boost's to_iso_string of a duration since perfdhcp started).
func TestParsePerfdhcpTimes(t *testing.T) {
	out := `***Statistics for: REQUEST-ACK***
sent packets: 3
***Timestamps for packets: DISCOVER-OFFER***
sent / received: 000001.000000 / 000001.000400
sent / received: 000001.500000 / 000001.501000
sent / received: 005959.999900 / 010000.000100
***Timestamps for packets: REQUEST-ACK***
sent / received: 000002.000000 / 000002.000300
`
	got := ParsePerfdhcpTimes(out)
	round := func(vs []float64) []float64 {
		r := make([]float64, len(vs))
		for i, v := range vs {
			r[i] = math.Round(v*1e7) / 1e7
		}
		return r
	}
	want := map[string][]float64{"DISCOVER-OFFER": {0.0004, 0.001, 0.0002}, "REQUEST-ACK": {0.0003}}
	for k := range got {
		got[k] = round(got[k])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPercentile(t *testing.T) {
	vs := make([]float64, 100)
	for i := range vs {
		vs[i] = float64(100 - i) // 100..1, unsorted
	}
	tests := map[string]struct {
		vs   []float64
		p    float64
		want float64
	}{
		"p50":   {vs: vs, p: 50, want: 50},
		"p99":   {vs: vs, p: 99, want: 99},
		"p100":  {vs: vs, p: 100, want: 100},
		"one":   {vs: []float64{7}, p: 99, want: 7},
		"empty": {p: 50, want: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Percentile(tc.vs, tc.p); got != tc.want {
				t.Errorf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}
