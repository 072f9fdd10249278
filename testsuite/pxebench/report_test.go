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
		{What: "TFTP 512", Unit: "MiB/s", Rackflow: 9.5, Baseline: 19, BaselineName: "dnsmasq"},
		{What: "nothing to compare", Unit: "x", Rackflow: 1, Baseline: 0, BaselineName: "none"},
	})
	want := `measure             unit    rackflow  baseline  baseline server  rackflow/baseline  note
DHCP                DORA/s  7890      3135      dnsmasq          2.52               peak
TFTP 512            MiB/s   9.50      19.0      dnsmasq          0.50               
nothing to compare  x       1.00      0.00      none             0.00               
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
