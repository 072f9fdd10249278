package deps

import "testing"

func TestMatch(t *testing.T) {
	tests := map[string]struct {
		pattern, dep string
		want         bool
	}{
		"exact":                {"github.com/rackflow/rackflow/pxe", "github.com/rackflow/rackflow/pxe", true},
		"exact not below":      {"github.com/rackflow/rackflow/pxe", "github.com/rackflow/rackflow/pxe/lease", false},
		"tree root":            {"github.com/pin/tftp/...", "github.com/pin/tftp", true},
		"tree below":           {"github.com/pin/tftp/...", "github.com/pin/tftp/v3", true},
		"tree not a neighbour": {"github.com/pin/tftp/...", "github.com/pin/tftpx", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Match(tc.pattern, tc.dep); got != tc.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.dep, got, tc.want)
			}
		})
	}
}
