// Package sshd starts a real OpenSSH sshd on a loopback port for tests and
// for the end-to-end lab, where it stands in for a host's live system or its
// installed OS. It also has a small in-process SSH server (Fake) for the
// failures a real sshd will not produce on demand: a connection dropped in the
// middle of a stream, a slow reader. It is not a general SSH server: the
// config accepts only key logins, by root or whoever runs it.
//
// The sshd config it writes (see WriteConfig) is, for a directory DIR:
//
//	ListenAddress 127.0.0.1:PORT
//	HostKey DIR/ssh_host_ed25519_key      (mode 0600)
//	AuthorizedKeysFile DIR/authorized_keys
//	PidFile none
//	PermitRootLogin prohibit-password
//	PubkeyAuthentication yes
//	PasswordAuthentication no
//	KbdInteractiveAuthentication no
//	UsePAM no
//	StrictModes no
//	UseDNS no
//	PrintMotd no
//	SetEnv PATH=PREFIX:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
//
// and it is started, as root, with /run/sshd present, as
//
//	/usr/sbin/sshd -D -e -f DIR/sshd_config
//
// (sshd needs its absolute path to re-exec itself).
package sshd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Binary is the sshd executable; sshd refuses to start from a relative path.
const Binary = "/usr/sbin/sshd"

// DefaultPath is the PATH sshd gives root's sessions on Debian.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrNotInstalled is returned when OpenSSH's server is missing.
var ErrNotInstalled = errors.New(Binary + " not found: install the Debian package openssh-server")

// Options configures a server. The zero value is a server on a free
// 127.0.0.1 port with a fresh host key that nobody can log in to.
type Options struct {
	// ListenAddr is host:port; "127.0.0.1:0" (a free port) when empty.
	ListenAddr string
	// HostKeyPEM is the server's private host key as ssh-keygen writes it
	// (OpenSSH PEM). Empty: a fresh ed25519 key.
	HostKeyPEM []byte
	// AuthorizedKeys may log in (as root, or as the user running sshd).
	AuthorizedKeys []ssh.PublicKey
	// PathPrefix is put in front of PATH in remote sessions, so tests can
	// shadow commands (a fake chef-client, a fake blockdev). Sessions get
	// a HOME under the server's directory, so no rc file of the account
	// changes PATH.
	PathPrefix []string
	// AllowTCPForwarding lets clients open TCP channels through the
	// server (a jump host, ssh -J); off by default.
	AllowTCPForwarding bool
	// Env is set in every remote session (sshd_config SetEnv). Values must
	// not contain spaces or quotes.
	Env map[string]string
	// Wrapper is put in front of the sshd command line, e.g. an unshare(1)
	// invocation so sessions run in a private mount namespace. The last
	// element must exec its arguments ("sh -c '...; exec \"$@\"' sh" works).
	Wrapper []string
	// Log receives sshd's own log. Nil: kept in memory (Server.Log), and
	// for Start printed when the test fails.
	Log io.Writer
}

// Config is what WriteConfig wrote.
type Config struct {
	Path    string        // the sshd_config file
	Addr    string        // host:port sshd will listen on
	HostKey ssh.PublicKey // the server's public host key
	// Command is the full command line to start sshd in the foreground.
	Command []string
}

// WriteConfig writes a host key, an authorized_keys file and an sshd_config
// into dir and returns where sshd will listen. A port of 0 is replaced by a
// port that is free now (a small race with other listeners, which Run
// retries).
func WriteConfig(dir string, opts Options) (Config, error) {
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(opts.ListenAddr)
	if err != nil {
		return Config{}, fmt.Errorf("sshd config: listen address: %w", err)
	}
	if port == "0" || port == "" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return Config{}, fmt.Errorf("sshd config: find a free port: %w", err)
		}
		port = fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	addr := net.JoinHostPort(host, port)

	keyPEM := opts.HostKeyPEM
	if len(keyPEM) == 0 {
		_, keyPEM, err = NewKey()
		if err != nil {
			return Config{}, err
		}
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return Config{}, fmt.Errorf("sshd config: host key: %w", err)
	}
	keyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return Config{}, fmt.Errorf("sshd config: %w", err)
	}
	if err := os.Chmod(keyPath, 0o600); err != nil { // WriteFile keeps an existing file's mode
		return Config{}, fmt.Errorf("sshd config: %w", err)
	}
	var ak bytes.Buffer
	for _, k := range opts.AuthorizedKeys {
		ak.Write(ssh.MarshalAuthorizedKey(k))
	}
	akPath := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(akPath, ak.Bytes(), 0o644); err != nil {
		return Config{}, fmt.Errorf("sshd config: %w", err)
	}

	var c strings.Builder
	fmt.Fprintf(&c, "ListenAddress %s\n", addr)
	fmt.Fprintf(&c, "HostKey %s\n", keyPath)
	fmt.Fprintf(&c, "AuthorizedKeysFile %s\n", akPath)
	c.WriteString(`PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp
`)
	if opts.AllowTCPForwarding {
		c.WriteString("AllowTcpForwarding yes\n")
	} else {
		c.WriteString("AllowTcpForwarding no\n")
	}
	// Sessions get a HOME of their own, so the login shell skips the
	// account's rc files (a root ~/.bashrc that runs pyenv or waits on a
	// lock would slow or hang every command).
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return Config{}, fmt.Errorf("sshd config: %w", err)
	}
	env := map[string]string{"HOME": home}
	for k, v := range opts.Env {
		env[k] = v
	}
	if len(opts.PathPrefix) > 0 {
		env["PATH"] = strings.Join(opts.PathPrefix, ":") + ":" + DefaultPath
	}
	if len(env) > 0 {
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		c.WriteString("SetEnv")
		for _, k := range keys {
			if strings.ContainsAny(env[k], " \t\"'\n") {
				return Config{}, fmt.Errorf("sshd config: SetEnv %s: value must not contain spaces or quotes", k)
			}
			fmt.Fprintf(&c, " %s=%s", k, env[k])
		}
		c.WriteString("\n")
	}
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(c.String()), 0o644); err != nil {
		return Config{}, fmt.Errorf("sshd config: %w", err)
	}
	cmd := append(append([]string{}, opts.Wrapper...), Binary, "-D", "-e", "-f", cfgPath)
	return Config{Path: cfgPath, Addr: addr, HostKey: signer.PublicKey(), Command: cmd}, nil
}

// NewKey returns a fresh ed25519 key and its OpenSSH PEM encoding.
func NewKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("signer: %w", err)
	}
	return signer, pem.EncodeToMemory(block), nil
}

// Server is a running sshd.
type Server struct {
	cfg  Config
	dir  string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error // sshd's exit, valid after done

	closeOnce sync.Once
	stopCtx   func() bool
}

// Run writes a config into dir and starts sshd, returning once it answers
// with an SSH banner. Cancelling ctx stops it, as does Close.
func Run(ctx context.Context, dir string, opts Options) (*Server, error) {
	if _, err := os.Stat(Binary); err != nil {
		return nil, ErrNotInstalled
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	freePort := opts.ListenAddr == "" || strings.HasSuffix(opts.ListenAddr, ":0")
	var lastErr error
	for try := 0; try < 3; try++ {
		s, err := start(ctx, dir, opts)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !freePort || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, dir string, opts Options) (*Server, error) {
	cfg, err := WriteConfig(dir, opts)
	if err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, Binary, "-t", "-f", cfg.Path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sshd -t %s: %v: %s", cfg.Path, err, bytes.TrimSpace(out))
	}
	s := &Server{cfg: cfg, dir: dir, log: &lockedBuffer{}, done: make(chan struct{})}
	var logw io.Writer = s.log
	if opts.Log != nil {
		logw = io.MultiWriter(s.log, opts.Log)
	}
	s.cmd = exec.Command(cfg.Command[0], cfg.Command[1:]...)
	s.cmd.Stdout = logw
	s.cmd.Stderr = logw
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	s.stopCtx = context.AfterFunc(ctx, func() { s.Close() })

	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := probe(cfg.Addr); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("sshd on %s did not answer: %v; log:\n%s", cfg.Addr, err, s.Log())
		}
		select {
		case <-s.done:
			s.Close()
			return nil, fmt.Errorf("sshd exited at start (%v); log:\n%s", s.err, s.Log())
		case <-ctx.Done():
			s.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// probe connects and reads the server's banner line.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// Addr is the host:port sshd listens on.
func (s *Server) Addr() string { return s.cfg.Addr }

// HostKey is the server's public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.cfg.HostKey }

// HostKeyLine is the host key in authorized_keys format, without newline.
func (s *Server) HostKeyLine() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.cfg.HostKey)))
}

// Config is the config the server was started with.
func (s *Server) Config() Config { return s.cfg }

// Log is what sshd has logged so far.
func (s *Server) Log() string { return s.log.String() }

// Close stops sshd (its listener; sessions already open end with their
// clients) and waits for it to exit.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.stopCtx != nil {
			s.stopCtx()
		}
		select {
		case <-s.done:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return nil
}

// Stop is Close for tests.
func (s *Server) Stop() { _ = s.Close() }

// Start starts sshd for a test, in a temporary directory, and stops it when
// the test ends. A missing sshd fails the test. Under -short (the fast path,
// no root, no daemons) it skips the test.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs OpenSSH's sshd: skipped with -short")
	}
	if _, err := os.Stat(Binary); err != nil {
		t.Fatal(ErrNotInstalled)
	}
	s, err := Run(context.Background(), t.TempDir(), opts)
	if err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() && opts.Log == nil {
			t.Logf("sshd %s log:\n%s", s.Addr(), s.Log())
		}
	})
	return s
}

// Key is a client key pair for tests.
type Key struct {
	Signer ssh.Signer
	// PEM is the private key, as secrets.Secret.PrivateKey wants it.
	PEM string
	// Authorized is the public key in authorized_keys format.
	Authorized string
}

// Public is the key's public half.
func (k Key) Public() ssh.PublicKey { return k.Signer.PublicKey() }

// TestKey returns a fresh ed25519 key pair or fails the test.
func TestKey(t testing.TB) Key {
	t.Helper()
	s, p, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return Key{Signer: s, PEM: string(p), Authorized: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
