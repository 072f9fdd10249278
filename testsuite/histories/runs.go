package histories

import (
	"context"
	"errors"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/rackflow/rackflow/activities/image"
)

// Fetch reads a run's whole history from the server.
func Fetch(ctx context.Context, c client.Client, id, runID string) (*historypb.History, error) {
	it := c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, err
		}
		h.Events = append(h.Events, ev)
	}
	return h, nil
}

// WriteImageResult finds the completed WriteImage's result in h and the
// attempt that produced it.
func WriteImageResult(h *historypb.History) (image.WriteResult, int32, error) {
	scheduled := map[int64]string{}
	started := map[int64]int32{}
	for _, ev := range h.Events {
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
			scheduled[ev.GetEventId()] = a.GetActivityType().GetName()
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil {
			started[a.GetScheduledEventId()] = a.GetAttempt()
		}
		if a := ev.GetActivityTaskCompletedEventAttributes(); a != nil && scheduled[a.GetScheduledEventId()] == "WriteImage" {
			var r image.WriteResult
			if err := converter.GetDefaultDataConverter().FromPayloads(a.GetResult(), &r); err != nil {
				return r, 0, err
			}
			return r, started[a.GetScheduledEventId()], nil
		}
	}
	return image.WriteResult{}, 0, errors.New("no completed WriteImage in the history")
}
