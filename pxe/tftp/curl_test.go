package tftp

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestCurl fetches over loopback with curl's own TFTP client, as a
// different implementation than pin/tftp's client: blksize 1468 (what iPXE
// asks for) and tsize, byte-exact; refused names make curl fail.
func TestCurl(t *testing.T) {
	if testing.Short() {
		t.Skip("real-client test: skipped with -short")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("test needs curl: apt-get install -y --no-install-recommends curl")
	}
	root, content := testRoot(t, 1468*40+1)
	addr := start(t, &Server{Root: root})
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, blk := range []string{"512", "1468", "8192"} {
		dst := filepath.Join(dir, "got-"+blk)
		out, err := exec.CommandContext(ctx, "curl", "-sS", "--tftp-blksize", blk, "-o", dst, "tftp://"+addr+"/undionly.kpxe").CombinedOutput()
		if err != nil {
			t.Fatalf("curl blksize %s: %v: %s", blk, err, out)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("curl blksize %s: got %d bytes, want the %d bytes on disk exactly", blk, len(got), len(content))
		}
	}

	for _, path := range []string{"/../secret.txt", "/escape", "//etc/passwd", "/nope"} {
		dst := filepath.Join(dir, "refused")
		out, err := exec.CommandContext(ctx, "curl", "-sS", "--path-as-is", "-o", dst, "tftp://"+addr+path).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 68 {
			t.Errorf("curl %s: %v (%s), want exit status 68: refused by the server", path, err, bytes.TrimSpace(out))
		}
		if b, _ := os.ReadFile(dst); len(b) > 0 {
			t.Errorf("curl %s wrote %q", path, b)
		}
	}
}
