package activities_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
)

func activityName(name string) activity.RegisterOptions {
	return activity.RegisterOptions{Name: name}
}

// newEnv is a workflow test environment that logs warnings and up.
func newEnv() *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	env := s.NewTestWorkflowEnvironment()
	env.SetTestTimeout(time.Minute)
	return env
}

// TestKeepAlive runs an activity that waits longer than its heartbeat
// timeout, as a BMC slot wait or a chef run does.
func TestKeepAlive(t *testing.T) {
	const hbTimeout = time.Second
	tests := map[string]struct {
		keepAlive   bool
		stopAfter   time.Duration // 0: at the end
		wantTimeout bool
	}{
		"kept alive":            {keepAlive: true},
		"without it, timed out": {wantTimeout: true},
		"stopped, timed out":    {keepAlive: true, stopAfter: 100 * time.Millisecond, wantTimeout: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newEnv()
			var mu sync.Mutex
			var details []string
			env.SetOnActivityHeartbeatListener(func(_ *activity.Info, d converter.EncodedValues) {
				var step string
				if d.HasValues() && d.Get(&step) == nil {
					mu.Lock()
					details = append(details, step)
					mu.Unlock()
				}
			})
			wait := func(ctx context.Context) error {
				if tc.keepAlive {
					// A minute, shortened to a third of the timeout.
					stop := activities.KeepAlive(ctx, time.Minute, func() any { return "waiting for a slot" })
					defer stop()
					if tc.stopAfter > 0 {
						time.Sleep(tc.stopAfter)
						stop()
					}
				}
				time.Sleep(3 * hbTimeout)
				return nil
			}
			env.RegisterActivityWithOptions(wait, activityName("Wait"))
			env.ExecuteWorkflow(func(ctx workflow.Context) error {
				ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
					StartToCloseTimeout: time.Minute,
					HeartbeatTimeout:    hbTimeout,
					RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
				})
				return workflow.ExecuteActivity(ctx, "Wait").Get(ctx, nil)
			})
			err := env.GetWorkflowError()
			var te *temporal.TimeoutError
			timedOut := errors.As(err, &te) && te.TimeoutType().String() == "Heartbeat"
			if timedOut != tc.wantTimeout {
				t.Fatalf("heartbeat timeout %v, want %v (err: %v)", timedOut, tc.wantTimeout, err)
			}
			if tc.keepAlive && !tc.wantTimeout {
				mu.Lock()
				defer mu.Unlock()
				if len(details) == 0 || details[len(details)-1] != "waiting for a slot" {
					t.Errorf("heartbeat details %q, want the activity's own", details)
				}
			}
		})
	}
}

func TestKeepAliveOutsideActivity(t *testing.T) {
	stop := activities.KeepAlive(context.Background(), time.Millisecond, func() any {
		t.Error("details called outside an activity")
		return nil
	})
	time.Sleep(10 * time.Millisecond)
	stop()
	stop()
}

// progress is what a streaming activity heartbeats.
type progress struct {
	Offset int64 `json:"offset"`
	Phase  string
}

type resumed struct {
	Attempt int32
	Prev    progress
	Found   bool
}

// TestPreviousProgress runs an activity that heartbeats its progress and
// fails; Temporal hands the retry the last detail.
func TestPreviousProgress(t *testing.T) {
	tests := map[string]struct {
		firstBeats []any // heartbeats of the failing first attempt; nil: it succeeds
		want       resumed
	}{
		"first attempt": {
			want: resumed{Attempt: 1},
		},
		"retry resumes from the last heartbeat": {
			firstBeats: []any{progress{Offset: 0, Phase: "write"}, progress{Offset: 64 << 20, Phase: "write"}},
			want:       resumed{Attempt: 2, Prev: progress{Offset: 64 << 20, Phase: "write"}, Found: true},
		},
		"retry after a failure that never heartbeated": {
			firstBeats: []any{},
			want:       resumed{Attempt: 2},
		},
		"detail of another shape is ignored": {
			firstBeats: []any{"waiting for 10.0.0.1"},
			want:       resumed{Attempt: 2},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			env := newEnv()
			stream := func(ctx context.Context) (resumed, error) {
				prev, ok := activities.PreviousProgress[progress](ctx)
				attempt := activity.GetInfo(ctx).Attempt
				if attempt == 1 && tc.firstBeats != nil {
					for _, d := range tc.firstBeats {
						activity.RecordHeartbeat(ctx, d)
					}
					return resumed{}, errors.New("connection reset by peer")
				}
				return resumed{Attempt: attempt, Prev: prev, Found: ok}, nil
			}
			env.RegisterActivityWithOptions(stream, activityName("Stream"))
			env.ExecuteWorkflow(func(ctx workflow.Context) (resumed, error) {
				ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
					StartToCloseTimeout: time.Minute,
					RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Millisecond, MaximumAttempts: 2},
				})
				var r resumed
				err := workflow.ExecuteActivity(ctx, "Stream").Get(ctx, &r)
				return r, err
			})
			if err := env.GetWorkflowError(); err != nil {
				t.Fatal(err)
			}
			var got resumed
			if err := env.GetWorkflowResult(&got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("second attempt saw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPreviousProgressOutsideActivity(t *testing.T) {
	p, ok := activities.PreviousProgress[progress](context.Background())
	if diff := cmp.Diff(progress{}, p); diff != "" || ok {
		t.Errorf("PreviousProgress outside an activity = %+v, %v; want none (-want +got):\n%s", p, ok, diff)
	}
}
