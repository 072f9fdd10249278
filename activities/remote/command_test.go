package remote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// TestOutput runs commands on the in-process SSH server, which runs them
// with /bin/sh on this machine.
func TestOutput(t *testing.T) {
	l := newLab(t)
	srv := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{l.key.Public()}})
	c, err := l.dialer.Dial(context.Background(), remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: srv.HostKeyLine()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var last20 []string
	for i := 11; i <= 30; i++ {
		last20 = append(last20, fmt.Sprintf("dd: error %d", i))
	}
	type result struct {
		Stdout string
		Exit   *remote.ExitError
	}
	tests := map[string]struct {
		cmd, stdin string
		want       result
	}{
		"success": {cmd: "tr a-z A-Z", stdin: "hello", want: result{Stdout: "HELLO"}},
		"exit status and the end of stderr": {
			cmd:  `echo partial; i=1; while [ $i -le 30 ]; do echo "dd: error $i" >&2; i=$((i+1)); done; exit 3`,
			want: result{Stdout: "partial\n", Exit: &remote.ExitError{Status: 3, StderrTail: strings.Join(last20, "\n")}},
		},
		"silent failure": {cmd: "exit 4", want: result{Exit: &remote.ExitError{Status: 4}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := remote.Output(context.Background(), c, tc.cmd, strings.NewReader(tc.stdin))
			got := result{Stdout: string(out)}
			if err != nil {
				// As a caller sees it: wrapped with what it was doing.
				err = fmt.Errorf("check disk /dev/sda: %w", err)
				if !errors.As(err, &got.Exit) {
					t.Fatalf("error %v is no *remote.ExitError", err)
				}
				if got.Exit.Cmd != tc.cmd {
					t.Errorf("ExitError.Cmd = %q, want %q", got.Exit.Cmd, tc.cmd)
				}
				got.Exit.Cmd = ""
				if want := fmt.Sprintf("exited %d", tc.want.Exit.Status); !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not say %q", err, want)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("stream keeps the whole stderr", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := remote.Stream(context.Background(), c, `i=1; while [ $i -le 30 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 1`, nil, &stdout, &stderr)
		var ee *remote.ExitError
		if !errors.As(err, &ee) || ee.Status != 1 {
			t.Fatalf("err = %v, want exit 1", err)
		}
		if n := strings.Count(stderr.String(), "\n"); n != 30 {
			t.Errorf("stderr writer got %d lines, want all 30", n)
		}
		if n := strings.Count(ee.StderrTail, "\n") + 1; n != remote.StderrTailLines {
			t.Errorf("ExitError carries %d lines, want the last %d", n, remote.StderrTailLines)
		}
	})

	t.Run("broken connection is no exit", func(t *testing.T) {
		c2, err := l.dialer.Dial(context.Background(), remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: srv.HostKeyLine()})
		if err != nil {
			t.Fatal(err)
		}
		c2.Close()
		_, err = remote.Output(context.Background(), c2, "true", nil)
		var ee *remote.ExitError
		if err == nil || errors.As(err, &ee) {
			t.Errorf("on a closed connection: %v, want an error that is no ExitError", err)
		}
	})
}

func TestTail(t *testing.T) {
	tests := map[string]struct {
		max    int
		writes []string
		lines  int
		want   string
	}{
		"last lines":           {writes: []string{"a\nb\n", "c\nd\n"}, lines: 2, want: "c\nd"},
		"fewer than asked":     {writes: []string{"only\n"}, lines: 5, want: "only"},
		"bounded by Max":       {max: 4, writes: []string{"first\n", "xy\nz"}, lines: 5, want: "xy\nz"},
		"trailing blank space": {writes: []string{"err\n\n  \n"}, lines: 1, want: "err"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tl := &remote.Tail{Max: tc.max}
			for _, w := range tc.writes {
				if _, err := tl.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tc.want, tl.Lines(tc.lines)); diff != "" {
				t.Errorf("Lines(%d) (-want +got):\n%s", tc.lines, diff)
			}
		})
	}
}
