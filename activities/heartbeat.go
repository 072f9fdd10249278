package activities

import (
	"context"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
)

// DefaultHeartbeatEvery is KeepAlive's interval when given none.
const DefaultHeartbeatEvery = 5 * time.Second

// KeepAlive heartbeats the activity every interval, with details() as the
// heartbeat's detail (none when details is nil), until stop is called or ctx
// ends, so a long wait or stream is not taken for a dead worker. The
// interval is shortened to a third of the activity's HeartbeatTimeout when
// that is shorter, and is DefaultHeartbeatEvery when not positive. details
// runs on KeepAlive's goroutine: it must be safe to call concurrently with
// the activity.
//
// stop waits until the loop has ended, so no heartbeat follows it; calling it
// again does nothing. Outside an activity (a unit test's plain context)
// KeepAlive does nothing.
func KeepAlive(ctx context.Context, every time.Duration, details func() any) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	every = OrDefault(every, DefaultHeartbeatEvery)
	if hbt := activity.GetInfo(ctx).HeartbeatTimeout; hbt > 0 && hbt/3 < every {
		every = hbt / 3
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if details == nil {
				activity.RecordHeartbeat(ctx)
			} else {
				activity.RecordHeartbeat(ctx, details())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}
