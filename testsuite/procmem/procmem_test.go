package procmem

import (
	"os"
	"testing"
)

func TestOwnProcess(t *testing.T) {
	pid := os.Getpid()
	rss, peak, pss := RSS(pid), PeakRSS(pid), PSS(pid)
	if rss <= 0 || peak < rss || pss <= 0 {
		t.Errorf("RSS %d, PeakRSS %d, PSS %d: want positive, peak ≥ RSS", rss, peak, pss)
	}
	if tree := TreePSS(pid); tree < pss {
		t.Errorf("TreePSS %d < own PSS %d", tree, pss)
	}
	if RSS(0) != 0 || TreePSS(-1) != 0 || CPU(0) != 0 {
		t.Error("a pid ≤ 0 must read as unknown (0)")
	}
	if MiB(0) != "?" || MiB(3<<20) != "3.0 MiB" {
		t.Errorf("MiB: %q, %q", MiB(0), MiB(3<<20))
	}
}
