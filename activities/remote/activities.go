package remote

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
)

// ErrTypeSSHTimeout: sshd did not accept a login before the deadline.
// Retryable: the host may just be slow to boot. This package's activities
// also raise the shared, non-retryable activities.ErrTypeInvalidInput (a bad
// duration or host key), ErrTypeCredentialNotFound, ErrTypeInvalidCredential
// (no usable key), ErrTypeCredentialNotAllowed (the key is bound to other
// addresses) and activities.ErrTypeHostKeyMismatch (until the deadline the server
// presented another host key than the pinned one).
const ErrTypeSSHTimeout = "SSHTimeout"

// Activities are the SSH activities; they hold the Dialer.
type Activities struct {
	Dialer *Dialer
}

// WaitInput is the input of WaitForSSH.
type WaitInput struct {
	// Host names the inventory host, for logs.
	Host   string `json:"host"`
	Target Target `json:"target"`
	// AllowFirstUse accepts an unpinned Target (empty HostKey) and records
	// the key presented. Without it an empty HostKey is bad input.
	AllowFirstUse bool `json:"allow_first_use,omitempty"`
	// Deadline bounds the whole wait, "20m" when empty.
	Deadline string `json:"deadline,omitempty"`
	// PollInterval is the pause between attempts, "5s" when empty.
	PollInterval string `json:"poll_interval,omitempty"`
}

// WaitResult is the output of WaitForSSH.
type WaitResult struct {
	// HostKey is the key the server presented, authorized_keys format.
	HostKey string `json:"host_key"`
	// Fingerprint is its SHA256 fingerprint ("SHA256:...").
	Fingerprint string `json:"fingerprint"`
	// Waited is how long the wait took.
	Waited string `json:"waited"`
}

// WaitProgress is WaitForSSH's heartbeat detail.
type WaitProgress struct {
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
}

// WaitForSSH waits until the target accepts a key login: a TCP connect,
// the SSH handshake with the host key check, and authentication. A wrong
// host key does not end the wait early, since during a reboot the old system
// may still answer, but if it is still wrong at the deadline the activity
// fails with HostKeyMismatch (not retryable); any other failure at the
// deadline is SSHTimeout (retryable).
func (a *Activities) WaitForSSH(ctx context.Context, in WaitInput) (WaitResult, error) {
	log := activity.GetLogger(ctx)
	deadline, err := api.ParseDuration("deadline", in.Deadline, 20*time.Minute)
	if err != nil {
		return WaitResult{}, activities.InvalidInput(err)
	}
	interval, err := api.ParseDuration("poll_interval", in.PollInterval, 5*time.Second)
	if err != nil {
		return WaitResult{}, activities.InvalidInput(err)
	}
	if in.Target.HostKey == "" && !in.AllowFirstUse {
		err := fmt.Errorf("wait for ssh on %s: %w and first use not allowed", in.Target.Addr, ErrNoHostKey)
		return WaitResult{}, activities.InvalidInput(err)
	}
	start := time.Now()
	waitCtx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	prog := WaitProgress{}
	var lastErr error
	for {
		prog.Attempts++
		client, key, err := a.Dialer.DialFirstUse(waitCtx, in.Target)
		if err == nil {
			client.Close()
			res := WaitResult{
				HostKey:     FormatHostKey(key),
				Fingerprint: ssh.FingerprintSHA256(key),
				Waited:      time.Since(start).Round(time.Millisecond).String(),
			}
			log.Info("ssh is up", "host", in.Host, "addr", in.Target.Addr, "fingerprint", res.Fingerprint, "attempts", prog.Attempts, "waited", res.Waited)
			return res, nil
		}
		if e := classify(err); e != nil {
			return WaitResult{}, e
		}
		if ctx.Err() != nil {
			return WaitResult{}, ctx.Err()
		}
		if waitCtx.Err() == nil || lastErr == nil {
			lastErr = err
		}
		prog.LastError = lastErr.Error()
		activity.RecordHeartbeat(ctx, prog)
		log.Debug("ssh not up yet", "host", in.Host, "addr", in.Target.Addr, "attempt", prog.Attempts, "error", err)

		select {
		case <-ctx.Done():
			return WaitResult{}, ctx.Err()
		case <-waitCtx.Done():
		case <-time.After(interval):
		}
		if waitCtx.Err() != nil {
			var hk *HostKeyMismatchError
			if errors.As(lastErr, &hk) {
				msg := fmt.Sprintf("wait for ssh on %s: still a different host key after %s: %v", in.Target.Addr, deadline, lastErr)
				return WaitResult{}, activities.NonRetryable(msg, activities.ErrTypeHostKeyMismatch, lastErr, hk.Want, hk.Got)
			}
			msg := fmt.Sprintf("wait for ssh on %s: not up after %s (%d attempts): %v", in.Target.Addr, deadline, prog.Attempts, lastErr)
			return WaitResult{}, temporal.NewApplicationError(msg, ErrTypeSSHTimeout, prog)
		}
	}
}

// classify returns a non-retryable error for failures that waiting cannot
// fix, and nil for those it might.
func classify(err error) error {
	if e := activities.CredentialError(err); e != nil {
		return e
	}
	switch {
	case errors.Is(err, ErrBadHostKey), errors.Is(err, ErrNoHostKey):
		return activities.InvalidInput(err)
	case errors.Is(err, ErrBadCredential):
		return activities.NonRetryable(err.Error(), activities.ErrTypeInvalidCredential, err)
	}
	return nil
}

// AppError turns a Dial error into the activity error the workflow should
// see: bad input and unusable credentials are not retryable, a host key
// mismatch is not retryable, anything else (network) is.
func AppError(err error) error {
	if e := classify(err); e != nil {
		return e
	}
	var hk *HostKeyMismatchError
	if errors.As(err, &hk) {
		return activities.NonRetryable(err.Error(), activities.ErrTypeHostKeyMismatch, err, hk.Want, hk.Got)
	}
	return err
}
