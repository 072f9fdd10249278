package remote_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

type lab struct {
	key    sshd.Key
	dialer *remote.Dialer
	acts   *remote.Activities
}

func newLab(t *testing.T) lab {
	key := sshd.TestKey(t)
	d := &remote.Dialer{Secrets: secrets.Static{
		"ssh/provision": {PrivateKey: key.PEM},
		// The same key, bound by the secrets file to other hosts and
		// to the loopback sshds of these tests.
		"ssh/elsewhere": {PrivateKey: key.PEM, Endpoints: []string{"10.30.0.17", "10.30.0.0/24"}},
		"ssh/loopback":  {PrivateKey: key.PEM, Endpoints: []string{"127.0.0.0/8"}},
	}}
	return lab{key: key, dialer: d, acts: &remote.Activities{Dialer: d}}
}

func (l lab) wait(t *testing.T, in remote.WaitInput, heartbeats *[]remote.WaitProgress) (remote.WaitResult, error) {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(testLogger())
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(l.acts)
	var mu sync.Mutex
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, d converter.EncodedValues) {
		var p remote.WaitProgress
		if d.Get(&p) == nil && heartbeats != nil {
			mu.Lock()
			*heartbeats = append(*heartbeats, p)
			mu.Unlock()
		}
	})
	v, err := env.ExecuteActivity(l.acts.WaitForSSH, in)
	if err != nil {
		return remote.WaitResult{}, err
	}
	var res remote.WaitResult
	if err := v.Get(&res); err != nil {
		t.Fatal(err)
	}
	return res, nil
}

func appError(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("want an ApplicationError, got %T: %v", err, err)
	}
	return ae
}

func TestWaitForSSH(t *testing.T) {
	l := newLab(t)
	srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{l.key.Public()}})
	other, _, _ := sshd.NewKey()
	want := remote.WaitResult{HostKey: srv.HostKeyLine(), Fingerprint: ssh.FingerprintSHA256(srv.HostKey())}

	tests := map[string]struct {
		target   remote.Target
		firstUse bool
		errType  string // "" = success
		retry    bool
	}{
		"pinned key": {
			target: remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: srv.HostKeyLine()},
		},
		"first use allowed": {
			target: remote.Target{Addr: srv.Addr(), Credential: "ssh/provision"}, firstUse: true,
		},
		"no key and first use not allowed": {
			target:  remote.Target{Addr: srv.Addr(), Credential: "ssh/provision"},
			errType: activities.ErrTypeInvalidInput,
		},
		"pinned key mismatch": {
			target:  remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: remote.FormatHostKey(other.PublicKey())},
			errType: activities.ErrTypeHostKeyMismatch,
		},
		"unknown credential": {
			target:  remote.Target{Addr: srv.Addr(), Credential: "ssh/nope", HostKey: srv.HostKeyLine()},
			errType: activities.ErrTypeCredentialNotFound,
		},
		"key bound to this address": {
			target: remote.Target{Addr: srv.Addr(), Credential: "ssh/loopback", HostKey: srv.HostKeyLine()},
		},
		// The input names the address and the credential together: the
		// secrets file refuses a login with a key bound elsewhere.
		"key bound to other hosts": {
			target:  remote.Target{Addr: srv.Addr(), Credential: "ssh/elsewhere", HostKey: srv.HostKeyLine()},
			errType: activities.ErrTypeCredentialNotAllowed,
		},
		"malformed pinned key": {
			target:  remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: "ssh-ed25519 !!!"},
			errType: activities.ErrTypeInvalidInput,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			res, err := l.wait(t, remote.WaitInput{Host: "node07", Target: tc.target, AllowFirstUse: tc.firstUse, Deadline: "2s", PollInterval: "200ms"}, nil)
			if tc.errType == "" {
				if err != nil {
					t.Fatalf("WaitForSSH: %v", err)
				}
				res.Waited = ""
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("result (-want +got):\n%s", diff)
				}
				return
			}
			ae := appError(t, err)
			if ae.Type() != tc.errType || !ae.NonRetryable() {
				t.Fatalf("want non-retryable %s, got type %s nonretryable=%v: %v", tc.errType, ae.Type(), ae.NonRetryable(), err)
			}
			if tc.errType == activities.ErrTypeHostKeyMismatch {
				if el := time.Since(start); el < 2*time.Second || el > 10*time.Second {
					t.Errorf("mismatch reported after %s, want at the 2s deadline", el)
				}
				for _, fp := range []string{ssh.FingerprintSHA256(other.PublicKey()), ssh.FingerprintSHA256(srv.HostKey())} {
					if !strings.Contains(err.Error(), fp) {
						t.Errorf("error %q lacks fingerprint %s", err, fp)
					}
				}
			}
		})
	}
}

func TestWaitForSSHUntilListening(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real sshd after a pause")
	}
	l := newLab(t)
	_, hostPEM, err := sshd.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, _ := ssh.ParsePrivateKey(hostPEM)
	// Reserve a port, then leave it closed: connects are refused until
	// sshd starts, as on a host that is still booting.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *sshd.Server, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		srv, err := sshd.Run(ctx, dir, sshd.Options{ListenAddr: addr, HostKeyPEM: hostPEM, AuthorizedKeys: []ssh.PublicKey{l.key.Public()}})
		if err != nil {
			t.Errorf("start sshd: %v", err)
		}
		started <- srv
	}()
	defer func() {
		if srv := <-started; srv != nil {
			srv.Close()
		}
	}()
	var hb []remote.WaitProgress
	start := time.Now()
	res, err := l.wait(t, remote.WaitInput{Host: "node07", Target: remote.Target{Addr: addr, Credential: "ssh/provision", HostKey: remote.FormatHostKey(hostSigner.PublicKey())}, Deadline: "30s", PollInterval: "200ms"}, &hb)
	if err != nil {
		t.Fatalf("WaitForSSH: %v", err)
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Errorf("succeeded after %s, before sshd started", el)
	}
	if res.Fingerprint != ssh.FingerprintSHA256(hostSigner.PublicKey()) {
		t.Errorf("fingerprint %s, want %s", res.Fingerprint, ssh.FingerprintSHA256(hostSigner.PublicKey()))
	}
	if len(hb) == 0 || !strings.Contains(hb[0].LastError, "connection refused") {
		t.Errorf("heartbeats %+v: want a first one saying connection refused", hb)
	}
}

func TestWaitForSSHTimeout(t *testing.T) {
	l := newLab(t)
	// sshd is up but does not know our key: a login that never works.
	srv := sshd.Start(t, sshd.Options{})
	var hb []remote.WaitProgress
	_, err := l.wait(t, remote.WaitInput{Target: remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: srv.HostKeyLine()}, Deadline: "1s", PollInterval: "100ms"}, &hb)
	ae := appError(t, err)
	if ae.Type() != remote.ErrTypeSSHTimeout || ae.NonRetryable() {
		t.Fatalf("want retryable SSHTimeout, got %s nonretryable=%v: %v", ae.Type(), ae.NonRetryable(), err)
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("error %q does not say why", err)
	}
	if len(hb) == 0 || hb[0].Attempts < 1 {
		t.Errorf("heartbeats %+v: want attempts recorded", hb)
	}
}

func TestRun(t *testing.T) {
	l := newLab(t)
	bin := t.TempDir()
	writeScript(t, bin+"/whoami-fake", "#!/bin/sh\necho fake \"$@\"\n")
	srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{l.key.Public()}, PathPrefix: []string{bin}})
	ctx := context.Background()
	c, err := l.dialer.Dial(ctx, remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: srv.HostKeyLine()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	type out struct {
		Stdout, Stderr string
		Exit           int
	}
	tests := map[string]struct {
		cmd, stdin string
		want       out
	}{
		"stdin to stdout": {cmd: "tr a-z A-Z", stdin: "hello", want: out{Stdout: "HELLO"}},
		"exit status":     {cmd: "echo oops >&2; exit 3", want: out{Stderr: "oops\n", Exit: 3}},
		"path prefix":     {cmd: "whoami-fake x", want: out{Stdout: "fake x\n"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o, e, exit, err := remote.Run(ctx, c, tc.cmd, strings.NewReader(tc.stdin))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, out{string(o), string(e), exit}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, _, err := remote.Run(ctx, c, "sleep 30", nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("got %v after %s, want deadline exceeded promptly", err, time.Since(start))
		}
	})
}

func TestDialRefusesMismatch(t *testing.T) {
	l := newLab(t)
	srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{l.key.Public()}})
	other, _, _ := sshd.NewKey()
	_, err := l.dialer.Dial(context.Background(), remote.Target{Addr: srv.Addr(), Credential: "ssh/provision", HostKey: remote.FormatHostKey(other.PublicKey())})
	var hk *remote.HostKeyMismatchError
	if !errors.As(err, &hk) {
		t.Fatalf("want HostKeyMismatchError, got %v", err)
	}
	if diff := cmp.Diff(&remote.HostKeyMismatchError{Addr: srv.Addr(), Want: ssh.FingerprintSHA256(other.PublicKey()), Got: ssh.FingerprintSHA256(srv.HostKey())}, hk); diff != "" {
		t.Error(diff)
	}
	if _, err := l.dialer.Dial(context.Background(), remote.Target{Addr: srv.Addr(), Credential: "ssh/provision"}); !errors.Is(err, remote.ErrNoHostKey) {
		t.Errorf("unpinned Dial: got %v, want ErrNoHostKey", err)
	}
}

// TestDialThroughJumpHost: a target reached through a jump host (OpenSSH
// sshd with TCP forwarding), both host keys pinned; a jump host that does
// not forward, or whose key is not the pinned one, stops the dial with a
// clear error, though the target itself would answer directly.
func TestDialThroughJumpHost(t *testing.T) {
	l := newLab(t)
	keys := []ssh.PublicKey{l.key.Public()}
	jump := sshd.Start(t, sshd.Options{AuthorizedKeys: keys, AllowTCPForwarding: true})
	closed := sshd.Start(t, sshd.Options{AuthorizedKeys: keys})
	target := sshd.Start(t, sshd.Options{AuthorizedKeys: keys, Env: map[string]string{"RACKFLOW_LAB": "target"}})
	via := func(j *sshd.Server, hostKey ssh.PublicKey) remote.Target {
		return remote.Target{Addr: target.Addr(), Credential: "ssh/provision", HostKey: remote.FormatHostKey(target.HostKey()),
			Jump: &remote.Jump{Addr: j.Addr(), Credential: "ssh/provision", HostKey: remote.FormatHostKey(hostKey)}}
	}
	c, err := l.dialer.Dial(context.Background(), via(jump, jump.HostKey()))
	if err != nil {
		t.Fatalf("dial through the jump host: %v", err)
	}
	out, _, exit, err := remote.Run(context.Background(), c, `echo "$RACKFLOW_LAB"`, nil)
	if err != nil || exit != 0 || string(out) != "target\n" {
		t.Errorf("command on the target: %q, exit %d, %v", out, exit, err)
	}
	c.Close()

	if _, err := l.dialer.Dial(context.Background(), via(closed, closed.HostKey())); err == nil || !strings.Contains(err.Error(), "via jump host") || !strings.Contains(err.Error(), "prohibited") {
		t.Errorf("through a jump host that does not forward: %v, want its refusal", err)
	}
	_, err = l.dialer.Dial(context.Background(), via(jump, target.HostKey()))
	var hk *remote.HostKeyMismatchError
	if !errors.As(err, &hk) || hk.Addr != jump.Addr() {
		t.Errorf("jump host with another key pinned: %v, want a host key mismatch for %s", err, jump.Addr())
	}
	// The jump host's key is bound to other addresses: no login there.
	bound := via(jump, jump.HostKey())
	bound.Jump.Credential = "ssh/elsewhere"
	if _, err := l.dialer.Dial(context.Background(), bound); !errors.Is(err, secrets.ErrNotAllowed) {
		t.Errorf("jump key bound elsewhere: %v, want ErrNotAllowed", err)
	}
	noKey := via(jump, jump.HostKey())
	noKey.Jump.HostKey = ""
	if _, err := l.dialer.Dial(context.Background(), noKey); !errors.Is(err, remote.ErrNoHostKey) {
		t.Errorf("unpinned jump host: %v, want ErrNoHostKey", err)
	}
}
