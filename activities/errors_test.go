package activities_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/secrets"
)

func TestIsType(t *testing.T) {
	tests := map[string]struct {
		err  error
		typ  string
		want bool
	}{
		"same name": {
			err: activities.NonRetryable("bad mac", activities.ErrTypeInvalidInput, nil), typ: activities.ErrTypeInvalidInput, want: true,
		},
		"legacy name raised": {
			err: temporal.NewNonRetryableApplicationError("bad duration", "BadInput", nil), typ: activities.ErrTypeInvalidInput, want: true,
		},
		"legacy name asked": {
			err: activities.InvalidInput(errors.New("bad duration")), typ: "BadInput", want: true,
		},
		"legacy credential": {
			err: temporal.NewNonRetryableApplicationError("no key", "CredentialUnusable", nil), typ: activities.ErrTypeInvalidCredential, want: true,
		},
		"wrapped": {
			err: fmt.Errorf("write image: %w", temporal.NewNonRetryableApplicationError("x", "BadInput", nil)), typ: activities.ErrTypeInvalidInput, want: true,
		},
		"other kind": {
			err: temporal.NewNonRetryableApplicationError("no key", "CredentialUnusable", nil), typ: activities.ErrTypeCredentialNotFound,
		},
		"package kind": {
			err: temporal.NewApplicationError("dd failed", "DiskWriteFailed"), typ: "DiskWriteFailed", want: true,
		},
		"not an application error": {
			err: errors.New("connection reset"), typ: activities.ErrTypeInvalidInput,
		},
		"nil": {
			typ: activities.ErrTypeInvalidInput,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, activities.IsType(tc.err, tc.typ)); diff != "" {
				t.Errorf("IsType(%v, %q) (-want +got):\n%s", tc.err, tc.typ, diff)
			}
		})
	}
}

// A workflow sees an activity's error wrapped in an ActivityError, and a
// parent sees its child's wrapped once more; an old worker's activity fails
// with a legacy name.
func TestIsTypeThroughActivityFailure(t *testing.T) {
	env := newEnv()
	oldWorkerActivity := func(context.Context) error {
		return temporal.NewNonRetryableApplicationError("deadline \"5 parsecs\": not a duration", "BadInput", nil)
	}
	env.RegisterActivityWithOptions(oldWorkerActivity, activityName("WaitForSSH"))
	env.ExecuteWorkflow(func(ctx workflow.Context) error {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			RetryPolicy:         &temporal.RetryPolicy{NonRetryableErrorTypes: activities.NonRetryableTypes},
		})
		err := workflow.ExecuteActivity(ctx, "WaitForSSH").Get(ctx, nil)
		if !activities.IsType(err, activities.ErrTypeInvalidInput) {
			return fmt.Errorf("inside the workflow: IsType(%v) = false", err)
		}
		return err
	})
	err := env.GetWorkflowError()
	if !activities.IsType(err, activities.ErrTypeInvalidInput) {
		t.Errorf("IsType(%v, InvalidInput) = false, want true", err)
	}
	if activities.IsType(err, activities.ErrTypeInvalidCredential) {
		t.Errorf("IsType(%v, InvalidCredential) = true, want false", err)
	}
}

func TestIsInputError(t *testing.T) {
	tests := map[string]struct {
		typ  string
		want bool
	}{
		"invalid input":        {typ: activities.ErrTypeInvalidInput, want: true},
		"legacy bad input":     {typ: "BadInput", want: true},
		"legacy credential":    {typ: "CredentialUnusable", want: true},
		"credential missing":   {typ: activities.ErrTypeCredentialNotFound, want: true},
		"credential not here":  {typ: activities.ErrTypeCredentialNotAllowed, want: true},
		"image gone":           {typ: activities.ErrTypeImageNotFound, want: true},
		"checksum is no input": {typ: activities.ErrTypeImageChecksumMismatch},
		"retryable kind":       {typ: "DiskWriteFailed"},
		"no type":              {typ: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, activities.IsInputError(tc.typ)); diff != "" {
				t.Errorf("IsInputError(%q) (-want +got):\n%s", tc.typ, diff)
			}
		})
	}
}

// A RetryPolicy built from NonRetryableTypes must stop an old worker's
// failure too.
func TestNonRetryableTypesListLegacyNames(t *testing.T) {
	for old, now := range activities.Legacy {
		if !slices.Contains(activities.NonRetryableTypes, old) {
			t.Errorf("NonRetryableTypes lacks legacy %q", old)
		}
		if !slices.Contains(activities.NonRetryableTypes, now) {
			t.Errorf("NonRetryableTypes lacks %q, which legacy %q stands for", now, old)
		}
	}
}

func TestNonRetryable(t *testing.T) {
	cause := errors.New("mac: not a 48-bit MAC address")
	err := activities.InvalidInput(cause)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("%T is not an ApplicationError", err)
	}
	got := struct {
		Type, Message string
		NonRetryable  bool
		Cause         bool
	}{ae.Type(), ae.Message(), ae.NonRetryable(), errors.Is(err, cause)}
	want := struct {
		Type, Message string
		NonRetryable  bool
		Cause         bool
	}{activities.ErrTypeInvalidInput, cause.Error(), true, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("InvalidInput (-want +got):\n%s", diff)
	}
}

func TestOrDefault(t *testing.T) {
	tests := map[string]struct {
		v, def, want time.Duration
	}{
		"zero takes the default":     {v: 0, def: 5 * time.Second, want: 5 * time.Second},
		"negative takes the default": {v: -time.Second, def: 5 * time.Second, want: 5 * time.Second},
		"positive is kept":           {v: 20 * time.Millisecond, def: 5 * time.Second, want: 20 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, activities.OrDefault(tc.v, tc.def)); diff != "" {
				t.Errorf("OrDefault(%v, %v) (-want +got):\n%s", tc.v, tc.def, diff)
			}
		})
	}
	if got := activities.OrDefault(int64(0), 64<<20); got != 64<<20 {
		t.Errorf("OrDefault(int64 0) = %d, want %d", got, 64<<20)
	}
}

func TestCredentialError(t *testing.T) {
	bound := secrets.Static{"bmc/node07": {Username: "admin", Password: "pw", Endpoints: []string{"10.20.0.7"}}}
	resolve := func(ref, dest string) error {
		_, err := secrets.ResolveFor(context.Background(), bound, ref, secrets.Use{Dest: dest, Discloses: true})
		return err
	}
	tests := map[string]struct {
		err      error
		wantType string // "" when CredentialError returns nil
	}{
		"missing":         {err: resolve("bmc/node08", "10.20.0.8:623"), wantType: activities.ErrTypeCredentialNotFound},
		"bound elsewhere": {err: resolve("bmc/node07", "10.20.0.8:623"), wantType: activities.ErrTypeCredentialNotAllowed},
		"cleartext":       {err: resolve("bmc/node07", "http://10.20.0.7/"), wantType: activities.ErrTypeCredentialNotAllowed},
		"unbound":         {err: fmt.Errorf("x: %w", secrets.ErrUnbound), wantType: activities.ErrTypeCredentialNotAllowed},
		"unreadable file": {err: errors.New("secrets file: permission denied")},
		"allowed":         {err: resolve("bmc/node07", "10.20.0.7:623")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := activities.CredentialError(tc.err)
			gotType := ""
			var ae *temporal.ApplicationError
			if errors.As(got, &ae) {
				gotType = ae.Type()
				if !ae.NonRetryable() {
					t.Errorf("%v is retryable", got)
				}
			} else if got != nil {
				t.Fatalf("%T is not an ApplicationError", got)
			}
			if diff := cmp.Diff(tc.wantType, gotType); diff != "" {
				t.Errorf("type of CredentialError(%v) (-want +got):\n%s", tc.err, diff)
			}
		})
	}
}
