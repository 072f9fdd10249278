package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMain lets a test run the helper itself: the test binary is main
// when asked to be.
func TestMain(m *testing.M) {
	if os.Getenv("RACKFLOW_DISKHELPER_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// TestWriteCommitsSegments runs `write` as rackflow does, through pipes: a
// segment's end is printed only once all of it is on the disk, a stream
// that ends early says where (exit 5), one that goes on past the end in
// pull mode says "long" (exit 6), and nothing before START is touched.
func TestWriteCommitsSegments(t *testing.T) {
	const mib = 1 << 20
	size := int64(10*mib + 777) // not a multiple of the O_DIRECT alignment
	data := make([]byte, size)
	rand.Read(data)
	seg := int64(3 * mib)
	tests := map[string]struct {
		start, sent int64 // START, and how much of the image (from START) stdin gives
		extra       int   // bytes past the image
		pull        bool
		wantOut     []string
		wantCode    int
		wantErr     string
	}{
		"whole image": {sent: size,
			wantOut: []string{"3145728", "6291456", "9437184", "10486537"}},
		"resumed mid-image": {start: 4 * mib, sent: size - 4*mib,
			wantOut: []string{"7340032", "10485760", "10486537"}},
		"input ends in a segment": {sent: 5 * mib,
			wantOut: []string{"3145728"}, wantCode: 5, wantErr: "short segment at 3145728: 2097152 of 3145728 bytes"},
		"input ends at a segment's end": {sent: 6 * mib,
			wantOut: []string{"3145728", "6291456"}, wantCode: 5, wantErr: "short segment at 6291456: 0 of 3145728 bytes"},
		"input ends in the last segment": {sent: size - 1,
			wantOut: []string{"3145728", "6291456", "9437184"}, wantCode: 5, wantErr: "short segment at 9437184: 1049352 of 1049353 bytes"},
		"pull: input ends early": {sent: 5 * mib, pull: true,
			wantOut: []string{"committed 3145728", "short 5242880"}, wantCode: 5},
		"pull: input goes on past the end": {sent: size, extra: 1, pull: true,
			wantOut: []string{"committed 3145728", "committed 6291456", "committed 9437184", "committed 10486537", "long"}, wantCode: 6},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(disk, make([]byte, size+mib), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"write", disk, fmt.Sprint(tc.start), fmt.Sprint(size), fmt.Sprint(seg), "direct"}
			if tc.pull {
				args = append(args, "pull")
			}
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(exe, args...)
			cmd.Env = append(os.Environ(), "RACKFLOW_DISKHELPER_MAIN=1")
			cmd.Stdin = bytes.NewReader(append(data[tc.start:tc.start+tc.sent:tc.start+tc.sent], make([]byte, tc.extra)...))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err = cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.wantOut, strings.Split(strings.TrimSpace(stdout.String()), "\n")); d != "" {
				t.Errorf("stdout (-want +got):\n%s", d)
			}
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("exit %d, stderr %q: want exit %d and %q", code, stderr.String(), tc.wantCode, tc.wantErr)
			}
			got, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			end := tc.start + tc.sent
			if !bytes.Equal(got[tc.start:end], data[tc.start:end]) {
				t.Error("the disk does not hold what was sent")
			}
			if bytes.Count(got[:tc.start], []byte{0}) != int(tc.start) || bytes.Count(got[end:], []byte{0}) != len(got)-int(end) {
				t.Error("bytes outside what was sent were written")
			}
		})
	}
}
