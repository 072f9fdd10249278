package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// StderrTailLines is how many of its last stderr lines a failed command's
// ExitError carries; at most stderrTailBytes of them.
const (
	StderrTailLines = 20
	stderrTailBytes = 4 << 10
)

// ExitError is a remote command that ran and exited non-zero. Callers that
// branch on the status or on what the command printed use errors.As.
type ExitError struct {
	// Cmd is the command line as run.
	Cmd string
	// Status is its exit status.
	Status int
	// StderrTail is the end of its stderr: the last StderrTailLines lines.
	StderrTail string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("remote command %q exited %d", shortCmd(e.Cmd), e.Status)
	if e.StderrTail != "" {
		msg += ": " + e.StderrTail
	}
	return msg
}

// shortCmd is cmd's first line, cut to a length a message can carry: a
// script run with sh -c would otherwise fill the error.
func shortCmd(cmd string) string {
	const max = 80
	line, _, more := strings.Cut(cmd, "\n")
	if len(line) > max {
		line, more = line[:max], true
	}
	if more {
		line += "…"
	}
	return line
}

// Output runs cmd in a new session of client, feeding it stdin (nil: none),
// and returns its stdout. A command that exits non-zero fails with an
// *ExitError carrying its status and the end of its stderr; one that could
// not run, or whose connection failed, with another error. Cancelling ctx
// ends the session.
func Output(ctx context.Context, client *ssh.Client, cmd string, stdin io.Reader) ([]byte, error) {
	var o bytes.Buffer
	err := Stream(ctx, client, cmd, stdin, &o, nil)
	return o.Bytes(), err
}

// Run is Output for a caller that reads a failed command's whole output:
// it returns stdout, stderr and the exit status, and err only when the
// command could not run or its connection failed (exit is then -1).
func Run(ctx context.Context, client *ssh.Client, cmd string, stdin io.Reader) (stdout, stderr []byte, exit int, err error) {
	var o, e bytes.Buffer
	err = Stream(ctx, client, cmd, stdin, &o, &e)
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		return o.Bytes(), e.Bytes(), ee.Status, nil
	case err != nil:
		return o.Bytes(), e.Bytes(), -1, err
	}
	return o.Bytes(), e.Bytes(), 0, nil
}

// Stream is Output writing the command's stdout and stderr to the given
// writers (nil: discarded) as they come.
func Stream(ctx context.Context, client *ssh.Client, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	sess, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("open ssh session: %w", err)
	}
	defer sess.Close()
	// The gate cuts the session off from the caller's reader and writers
	// when ctx ends, since the session's copying goroutines may outlive
	// this call.
	g := &gate{}
	if stdin != nil {
		sess.Stdin = gatedReader{g, stdin}
	}
	if stdout != nil {
		sess.Stdout = gatedWriter{g, stdout}
	}
	errTail := &Tail{}
	sess.Stderr = gatedWriter{g, errTail}
	if stderr != nil {
		sess.Stderr = gatedWriter{g, io.MultiWriter(stderr, errTail)}
	}
	// Run in the background so a cancelled ctx returns at once even if the
	// remote command ignores its closed channel (sshd cannot signal root's
	// sessions, and a command that does not read stdin never notices).
	done := make(chan error, 1)
	go func() { done <- sess.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		sess.Close()
		g.close()
		return fmt.Errorf("remote %s: %w", firstWord(cmd), ctx.Err())
	}
	return SessionError(cmd, err, errTail.Bytes())
}

// SessionError turns what a finished session's Run or Wait returned into the
// error Output returns: nil, an *ExitError with the tail of stderr (what the
// command wrote there), or the connection's error. For callers that drive
// an ssh.Session themselves, as a stream into a long-running command does.
func SessionError(cmd string, err error, stderr []byte) error {
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		tail := TailLines(stderr, StderrTailLines)
		if len(tail) > stderrTailBytes {
			tail = "..." + tail[len(tail)-stderrTailBytes:]
		}
		return &ExitError{Cmd: cmd, Status: ee.ExitStatus(), StderrTail: tail}
	}
	return fmt.Errorf("remote %s: %w", firstWord(cmd), err)
}

// TailLines returns the last n lines of b, without trailing blank space.
func TailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), " \t\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimLeft(strings.Join(lines, "\n"), "\r\n")
}

// Tail is an io.Writer that keeps the last Max bytes written to it (64 KiB
// when Max is zero): the end of a long command's output. It is safe for
// concurrent use.
type Tail struct {
	Max int

	mu sync.Mutex
	b  []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	max := t.Max
	if max <= 0 {
		max = 64 << 10
	}
	t.b = append(t.b, p...)
	if len(t.b) > max {
		t.b = append(t.b[:0], t.b[len(t.b)-max:]...)
	}
	return len(p), nil
}

// Bytes returns a copy of what it holds.
func (t *Tail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.b)
}

// Lines returns the last n lines it holds.
func (t *Tail) Lines(n int) string { return TailLines(t.Bytes(), n) }

// firstWord names cmd's program, past any VAR=value before it.
func firstWord(cmd string) string {
	for _, w := range strings.Fields(cmd) {
		if !strings.Contains(w, "=") {
			return w
		}
	}
	return "command"
}

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type gatedReader struct {
	g *gate
	r io.Reader
}

func (r gatedReader) Read(p []byte) (int, error) {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.g.closed {
		return 0, io.EOF
	}
	return r.r.Read(p)
}

type gatedWriter struct {
	g *gate
	w io.Writer
}

func (w gatedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	if w.g.closed {
		return 0, io.ErrClosedPipe
	}
	return w.w.Write(p)
}
