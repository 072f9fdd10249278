package activities

import (
	"context"

	"go.temporal.io/sdk/activity"
)

// PreviousProgress returns the last heartbeat detail the previous attempt of
// this activity recorded, decoded as a T, and whether there was one. A
// detail that does not decode as a T (another worker version's) is logged
// and ignored: the attempt starts afresh, as it would with none. Outside an
// activity it reports none.
//
// Whether the progress still fits this attempt's input is the caller's to
// check.
func PreviousProgress[T any](ctx context.Context) (T, bool) {
	var p T
	if !activity.IsActivity(ctx) || !activity.HasHeartbeatDetails(ctx) {
		return p, false
	}
	if err := activity.GetHeartbeatDetails(ctx, &p); err != nil {
		activity.GetLogger(ctx).Warn("ignoring unreadable progress of the previous attempt", "error", err)
		var zero T
		return zero, false
	}
	return p, true
}
