// Package procmem reads a process's memory and CPU time from /proc, for the
// benches and `make cluster`: resident set now and at its peak, the
// proportional set (shared pages split between their sharers, so a sum
// over processes is honest), and that sum over a process and its children.
// A figure that cannot be read is 0: a bench reports it as unknown rather
// than failing. Linux only; not a monitoring library.
package procmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// RSS is pid's resident set in bytes (VmRSS).
func RSS(pid int) int64 { return kbField(pid, "status", "VmRSS:") }

// PeakRSS is pid's peak resident set in bytes (VmHWM).
func PeakRSS(pid int) int64 { return kbField(pid, "status", "VmHWM:") }

// PSS is pid's proportional set in bytes.
func PSS(pid int) int64 { return kbField(pid, "smaps_rollup", "Pss:") }

// TreePSS is the PSS of pid and its direct children (a PostgreSQL
// postmaster and its backends).
func TreePSS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	total := PSS(pid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return total
	}
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			total += PSS(n)
		}
	}
	return total
}

// CPU is a running process's user and system CPU time.
func CPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the ")" that ends the command name; utime and stime
	// are fields 14 and 15 of the whole line, in clock ticks (100/s).
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// MiB formats bytes as "12.3 MiB", or "?" for 0 (unknown).
func MiB(n int64) string {
	if n <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// kbField reads a "Key:   123 kB" line of /proc/pid/file, in bytes.
func kbField(pid int, file, key string) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}
