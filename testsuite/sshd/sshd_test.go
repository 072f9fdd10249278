package sshd_test

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/testsuite/sshd"
)

func dial(t *testing.T, addr string, hostKey ssh.PublicKey, key sshd.Key) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key.Signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func output(t *testing.T, c *ssh.Client, cmd string, stdin []byte) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Stdin = bytes.NewReader(stdin)
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	return string(out)
}

func TestStart(t *testing.T) {
	key := sshd.TestKey(t)
	srv := sshd.Start(t, sshd.Options{
		AuthorizedKeys: []ssh.PublicKey{key.Public()},
		PathPrefix:     []string{"/opt/fake/bin"},
		Env:            map[string]string{"RACKFLOW_LAB": "live"},
	})
	c := dial(t, srv.Addr(), srv.HostKey(), key)
	got := output(t, c, `echo "$PATH $RACKFLOW_LAB $HOME"`, nil)
	// A HOME of its own: the account's rc files do not run, so nothing
	// is prepended to PATH.
	if want := "/opt/fake/bin:" + sshd.DefaultPath + " live " + filepath.Join(filepath.Dir(srv.Config().Path), "home") + "\n"; got != want {
		t.Errorf("session env %q, want %q", got, want)
	}
	if got := output(t, c, "cat", []byte("stdin works")); got != "stdin works" {
		t.Errorf("cat: %q", got)
	}
	// Only the authorized key gets in.
	other := sshd.TestKey(t)
	if _, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(other.Signer)}, HostKeyCallback: ssh.FixedHostKey(srv.HostKey())}); err == nil {
		t.Error("an unknown key logged in")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	if testing.Short() {
		t.Skip("runs OpenSSH's sshd: skipped with -short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := sshd.Run(ctx, t.TempDir(), sshd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", srv.Addr(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("sshd still listening after its context was cancelled")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWriteConfigFixedAddr(t *testing.T) {
	dir := t.TempDir()
	cfg, err := sshd.WriteConfig(dir, sshd.Options{ListenAddr: "127.0.0.1:2222"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:2222" || cfg.Command[0] != sshd.Binary || cfg.Command[len(cfg.Command)-1] != cfg.Path {
		t.Errorf("config %+v", cfg)
	}
}

func TestFakeDropsOnce(t *testing.T) {
	key := sshd.TestKey(t)
	f := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{key.Public()}, DropAfterStdin: 100 << 10})
	c := dial(t, f.Addr(), f.HostKey(), key)
	s, _ := c.NewSession()
	s.Stdin = bytes.NewReader(make([]byte, 1<<20))
	if err := s.Run("cat >/dev/null"); err == nil {
		t.Fatal("1 MiB went through a connection that drops after 100 KiB")
	}
	if f.Drops() != 1 || f.StdinBytes() < 100<<10 || f.StdinBytes() > 1<<20 {
		t.Errorf("drops %d, stdin bytes %d", f.Drops(), f.StdinBytes())
	}
	// The next connection goes through.
	c2 := dial(t, f.Addr(), f.HostKey(), key)
	s2, _ := c2.NewSession()
	s2.Stdin = bytes.NewReader(make([]byte, 1<<20))
	out, err := s2.Output("wc -c")
	if err != nil || strings.TrimSpace(string(out)) != "1048576" {
		t.Errorf("second connection: %v %q", err, out)
	}
	if got := f.Commands(); len(got) != 2 || got[1] != "wc -c" {
		t.Errorf("commands %q", got)
	}
}
