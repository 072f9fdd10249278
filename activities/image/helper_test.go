package image_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/rackflow/rackflow/testsuite/sshd"
)

// helperPath is rackflow-diskhelper built for this machine, and
// foreignHelper the same for another architecture; both built once by
// TestMain.
var helperPath, foreignHelper string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "diskhelper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	helperPath = filepath.Join(dir, "rackflow-diskhelper")
	foreignHelper = filepath.Join(dir, "rackflow-diskhelper-"+other)
	for out, arch := range map[string]string{helperPath: runtime.GOARCH, foreignHelper: other} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/rackflow-diskhelper")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build diskhelper for %s: %v\n%s", arch, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestWriteImageHelperArchitecture: a helper built for another
// architecture is never uploaded; the dd pipeline writes the disk.
func TestWriteImageHelperArchitecture(t *testing.T) {
	for name, tc := range map[string]struct {
		helper string
		want   bool
	}{
		"same architecture":    {helperPath, true},
		"directory of several": {filepath.Dir(helperPath), true},
		"another architecture": {foreignHelper, false},
		"not an executable":    {"/etc/hostname", false},
		"missing":              {"/nonexistent/rackflow-diskhelper", false},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixtureData(t, compressible(3*mib+4095), 4*mib)
			f.acts.DiskHelper = tc.helper
			srv := startSSHD(t, f, sshd.Options{})
			r := execute(t, f.acts, f.input(srv.Addr(), srv.HostKeyLine()), nil)
			if r.err != nil {
				t.Fatalf("WriteImage: %v", r.err)
			}
			f.checkDisk(t)
			if r.res.Helper != tc.want {
				t.Errorf("helper used = %v, want %v", r.res.Helper, tc.want)
			}
			// The helper lands in the login's own cache directory.
			home := filepath.Join(filepath.Dir(srv.Config().Path), "home", ".cache", "rackflow")
			ents, _ := os.ReadDir(home)
			if tc.want && (len(ents) != 1 || !executable(ents[0])) {
				t.Errorf("%s holds %v: want one executable helper", home, ents)
			}
			if !tc.want && len(ents) != 0 {
				t.Errorf("%s holds %v: want nothing uploaded", home, ents)
			}
		})
	}
}

func executable(e os.DirEntry) bool {
	fi, err := e.Info()
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o100 != 0
}
