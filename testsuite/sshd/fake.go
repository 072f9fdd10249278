package sshd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// FakeOptions configures an in-process SSH server. The zero value runs
// commands without faults for nobody (no authorized keys).
type FakeOptions struct {
	// HostKeyPEM as in Options; empty: a fresh ed25519 key.
	HostKeyPEM []byte
	// AuthorizedKeys may log in, as any user.
	AuthorizedKeys []ssh.PublicKey
	// Env is added to the environment of the commands it runs.
	Env []string
	// DropAfterStdin, when > 0, makes the server close the connection (TCP
	// and all) once that many bytes of session stdin have arrived in total,
	// counted over all connections. It drops only once.
	DropAfterStdin int64
	// StdinBytesPerSecond, when > 0, limits how fast the server reads
	// session stdin: a slow disk, a slow link.
	StdinBytesPerSecond int64
}

// Fake is an in-process SSH server built on golang.org/x/crypto/ssh. It
// accepts "exec" requests only and runs them with /bin/sh -c on this
// machine, so a test sees the same effects a real host would produce.
type Fake struct {
	opts    FakeOptions
	l       net.Listener
	hostKey ssh.Signer
	config  *ssh.ServerConfig

	stdin   atomic.Int64 // session stdin bytes received, all connections
	dropped atomic.Bool
	drops   atomic.Int64

	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	commands []string
}

// NewFake starts a Fake on a free 127.0.0.1 port.
func NewFake(opts FakeOptions) (*Fake, error) {
	keyPEM := opts.HostKeyPEM
	if len(keyPEM) == 0 {
		var err error
		if _, keyPEM, err = NewKey(); err != nil {
			return nil, err
		}
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("fake sshd: host key: %w", err)
	}
	f := &Fake{opts: opts, hostKey: signer, conns: map[net.Conn]struct{}{}}
	f.config = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range opts.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	f.config.AddHostKey(signer)
	f.l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake sshd: %w", err)
	}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// StartFake starts a Fake for a test and closes it when the test ends.
func StartFake(t testing.TB, opts FakeOptions) *Fake {
	t.Helper()
	f, err := NewFake(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Addr is the host:port the server listens on.
func (f *Fake) Addr() string { return f.l.Addr().String() }

// HostKey is the server's public host key.
func (f *Fake) HostKey() ssh.PublicKey { return f.hostKey.PublicKey() }

// HostKeyLine is the host key in authorized_keys format, without newline.
func (f *Fake) HostKeyLine() string {
	return string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(f.hostKey.PublicKey())))
}

// StdinBytes is how many bytes of session stdin the server has received.
func (f *Fake) StdinBytes() int64 { return f.stdin.Load() }

// Commands lists the commands the server was asked to run, in order, so a
// test can check what went over the command line (and what did not).
func (f *Fake) Commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

// Drops is how many connections the server has dropped on purpose.
func (f *Fake) Drops() int64 { return f.drops.Load() }

// Close stops listening, drops every connection and waits for the
// connections' goroutines (and commands) to end.
func (f *Fake) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.l.Close()
	f.wg.Wait()
	return err
}

func (f *Fake) serve() {
	defer f.wg.Done()
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			c.Close()
			return
		}
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handleConn(c)
			f.mu.Lock()
			delete(f.conns, c)
			f.mu.Unlock()
		}()
	}
}

func (f *Fake) handleConn(c net.Conn) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, f.config)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	// Commands end with their connection, as sshd's do.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.session(ctx, c, ch, creqs)
		}()
	}
}

func (f *Fake) session(ctx context.Context, conn net.Conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil {
				env = append(env, kv.Name+"="+kv.Value)
			}
			req.Reply(true, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			f.mu.Lock()
			f.commands = append(f.commands, cmd.Command)
			f.mu.Unlock()
			go ssh.DiscardRequests(reqs)
			status := f.run(ctx, conn, ch, cmd.Command, env)
			_, _ = ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(status)))
			return
		default:
			req.Reply(false, nil)
		}
	}
}

func (f *Fake) run(ctx context.Context, conn net.Conn, ch ssh.Channel, command string, env []string) int {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(append(os.Environ(), f.opts.Env...), env...)
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 255
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "fake sshd: %v\n", err)
		return 127
	}
	go func() {
		defer stdin.Close()
		var r io.Reader = &faultReader{f: f, conn: conn, r: ch}
		_, _ = io.CopyBuffer(stdin, r, make([]byte, 256<<10))
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode()
	default:
		return 255
	}
}

// faultReader counts stdin, drops the connection once past the threshold,
// and throttles.
type faultReader struct {
	f    *Fake
	conn net.Conn
	r    io.Reader
}

func (r *faultReader) Read(p []byte) (int, error) {
	f := r.f
	if rate := f.opts.StdinBytesPerSecond; rate > 0 {
		// Read in slices of ~1/20 s worth of data, sleeping after each.
		max := rate / 20
		if max < 1 {
			max = 1
		}
		if int64(len(p)) > max {
			p = p[:max]
		}
	}
	n, err := r.r.Read(p)
	if n > 0 {
		total := f.stdin.Add(int64(n))
		if d := f.opts.DropAfterStdin; d > 0 && total >= d && f.dropped.CompareAndSwap(false, true) {
			f.drops.Add(1)
			r.conn.Close()
			return 0, io.ErrUnexpectedEOF
		}
		if rate := f.opts.StdinBytesPerSecond; rate > 0 {
			time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
		}
	}
	return n, err
}
