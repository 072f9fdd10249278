// Package deps checks rackflow's import rules in tests: which packages a
// program links, as `go list -deps` reports them. It keeps the layout's
// promises (the starter links no vendor SDK, the worker no DHCP or TFTP
// server) from eroding one import at a time.
//
// It is not a linter: it only answers "does this package link that one".
package deps

import (
	"os/exec"
	"strings"
	"testing"
)

// List returns every package pkg links (its transitive non-test
// dependencies, itself included), as `go list -deps` prints them.
func List(t testing.TB, pkg string) []string {
	t.Helper()
	// go test puts its own toolchain first on the PATH of what it runs.
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	return strings.Fields(string(out))
}

// Forbid fails t for every package pkg links that matches one of
// patterns. A pattern is an import path, matched exactly, or a path
// ending in "/..." matching it and everything below it, as in go list.
func Forbid(t testing.TB, pkg string, patterns ...string) {
	t.Helper()
	for _, dep := range List(t, pkg) {
		for _, p := range patterns {
			if Match(p, dep) {
				t.Errorf("%s links %s (forbidden: %s)", pkg, dep, p)
			}
		}
	}
}

// Match reports whether the import path dep matches pattern (see Forbid).
func Match(pattern, dep string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return dep == base || strings.HasPrefix(dep, base+"/")
	}
	return dep == pattern
}
