package image_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/sshd"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"
)

// TestEraseDisk erases a disk (a file here: no partitions, no discard)
// through a real sshd: by default its first and last MiB become zeroes
// and the rest is left as it was; with Full all of it. The report says
// what was done and how much was read back as zeroes.
func TestEraseDisk(t *testing.T) {
	const size = 5 << 20
	tests := map[string]struct {
		full      bool
		zeroed    [][2]int64 // byte ranges that must be zero afterwards
		method    string
		verified  int64
		untouched [2]int64
	}{
		"regions": {false, [][2]int64{{0, mib}, {size - mib, size}}, api.EraseRegions, 2 * mib, [2]int64{mib, size - mib}},
		"full":    {true, [][2]int64{{0, size}}, api.EraseFull, size, [2]int64{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk")
			orig := make([]byte, size)
			rand.Read(orig)
			if err := os.WriteFile(disk, orig, 0o644); err != nil {
				t.Fatal(err)
			}
			key := sshd.TestKey(t)
			srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{key.Public()}})
			acts := &image.Activities{Dialer: &remote.Dialer{Secrets: secrets.Static{"ssh/live": {PrivateKey: key.PEM}}}}
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestActivityEnvironment()
			env.RegisterActivity(acts)
			in := image.EraseInput{Host: "node07", Target: remote.Target{Addr: srv.Addr(), Credential: "ssh/live", HostKey: srv.HostKeyLine()}, Disk: disk, Full: tc.full}
			v, err := env.ExecuteActivity(acts.EraseDisk, in)
			if err != nil {
				t.Fatalf("EraseDisk: %v", err)
			}
			var rep api.EraseReport
			if err := v.Get(&rep); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(disk)
			if err != nil || len(got) != size {
				t.Fatalf("disk after: %d bytes, %v", len(got), err)
			}
			for _, r := range tc.zeroed {
				if n := len(got[r[0]:r[1]]) - bytes.Count(got[r[0]:r[1]], []byte{0}); n != 0 {
					t.Errorf("bytes %d-%d: %d not zero", r[0], r[1], n)
				}
			}
			if u := tc.untouched; u[1] > 0 && !bytes.Equal(got[u[0]:u[1]], orig[u[0]:u[1]]) {
				t.Errorf("bytes %d-%d changed: only the regions may be", u[0], u[1])
			}
			if rep.Method != tc.method || rep.VerifiedBytes != tc.verified || rep.Size != size || rep.Disk != disk {
				t.Errorf("report %+v: want method %s, %d bytes verified of %d", rep, tc.method, tc.verified, size)
			}
		})
	}
}

func TestEraseDiskRefuses(t *testing.T) {
	key := sshd.TestKey(t)
	srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{key.Public()}})
	acts := &image.Activities{Dialer: &remote.Dialer{Secrets: secrets.Static{"ssh/live": {PrivateKey: key.PEM}}}}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	target := remote.Target{Addr: srv.Addr(), Credential: "ssh/live", HostKey: srv.HostKeyLine()}
	tests := map[string]struct {
		in  image.EraseInput
		typ string
	}{
		"missing disk":   {image.EraseInput{Host: "node07", Target: target, Disk: filepath.Join(t.TempDir(), "nope")}, activities.ErrTypeDiskNotFound},
		"relative path":  {image.EraseInput{Host: "node07", Target: target, Disk: "sda"}, activities.ErrTypeInvalidInput},
		"path and hints": {image.EraseInput{Host: "node07", Target: target, Disk: "/dev/sda", RootDevice: &api.RootDevice{Serial: "X"}}, activities.ErrTypeInvalidInput},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := env.ExecuteActivity(acts.EraseDisk, tc.in)
			wantAppError(t, err, tc.typ, true)
		})
	}
}
