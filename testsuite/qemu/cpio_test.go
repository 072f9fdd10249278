package qemu

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCpioWriterReadByGNUCpio writes an archive and unpacks it with GNU
// cpio, which reads newc as the kernel does.
func TestCpioWriterReadByGNUCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatal("needs cpio: apt-get install -y --no-install-recommends cpio")
	}
	var buf bytes.Buffer
	w := NewCpioWriter(&buf)
	w.Dir("bin", 0o755)
	w.File("bin/hello", 0o755, []byte("#!/bin/sh\necho hi\n"))
	w.File("odd", 0o644, []byte("abc")) // lengths that need padding
	w.Symlink("bin/sh", "hello")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	got := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			got[rel] = "-> " + target
		case fi.IsDir():
			got[rel] = fi.Mode().String()
		default:
			b, _ := os.ReadFile(p)
			got[rel] = fi.Mode().String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bin":       "drwxr-xr-x",
		"bin/hello": "-rwxr-xr-x #!/bin/sh\necho hi\n",
		"bin/sh":    "-> hello",
		"odd":       "-rw-r--r-- abc",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unpacked tree (-want +got):\n%s", diff)
	}
}
