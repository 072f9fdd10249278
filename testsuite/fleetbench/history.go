package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/proto"

	"github.com/rackflow/rackflow/api"
)

// histStats are the fleet's histories as the server stored them: their
// sizes, and each activity's latency from its events' timestamps (the
// server's clock), so the figures do not depend on the worker's view.
type histStats struct {
	events []int // per run
	bytes  []int // per run: the protobuf size of its history as served
	// Over every activity of every run, from ActivityTaskScheduled to its
	// close (completed, failed, timed out or cancelled; retries of one
	// activity are inside it), from ActivityTaskStarted (the last
	// attempt's start) to the close, and from scheduled to started.
	schedToClose, startToClose, schedToStart []time.Duration
	// byType is schedule-to-close per activity type.
	byType map[string][]time.Duration
}

// histories reads every run's history, a few at a time.
func (b *bench) histories(ctx context.Context, ms []*machine) (histStats, error) {
	st := histStats{byType: map[string][]time.Duration{}}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			events, size, err := b.history(ctx, api.ProvisionWorkflowID(m.name))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("history of %s: %w", m.name, err)
				}
				return
			}
			st.add(events, size)
		}()
	}
	wg.Wait()
	return st, firstErr
}

func (b *bench) history(ctx context.Context, id string) ([]*historypb.HistoryEvent, int, error) {
	var events []*historypb.HistoryEvent
	size := 0
	var token []byte
	for {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := b.client.WorkflowService().GetWorkflowExecutionHistory(ctx, &workflowservice.GetWorkflowExecutionHistoryRequest{
			Namespace:     "default",
			Execution:     &commonpb.WorkflowExecution{WorkflowId: id},
			NextPageToken: token,
		})
		cancel()
		if err != nil {
			return nil, 0, err
		}
		size += proto.Size(resp.GetHistory())
		events = append(events, resp.GetHistory().GetEvents()...)
		if token = resp.GetNextPageToken(); len(token) == 0 {
			return events, size, nil
		}
	}
}

// add folds one run's history in.
func (st *histStats) add(events []*historypb.HistoryEvent, size int) {
	st.events = append(st.events, len(events))
	st.bytes = append(st.bytes, size)
	type act struct {
		typ              string
		scheduled, start time.Time
	}
	acts := map[int64]*act{}
	for _, e := range events {
		t := e.GetEventTime().AsTime()
		var closedID int64
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			acts[e.GetEventId()] = &act{typ: e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(), scheduled: t}
			continue
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			if a := acts[e.GetActivityTaskStartedEventAttributes().GetScheduledEventId()]; a != nil {
				a.start = t
			}
			continue
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			closedID = e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			closedID = e.GetActivityTaskFailedEventAttributes().GetScheduledEventId()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			closedID = e.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			closedID = e.GetActivityTaskCanceledEventAttributes().GetScheduledEventId()
		default:
			continue
		}
		a := acts[closedID]
		if a == nil {
			continue
		}
		st.schedToClose = append(st.schedToClose, t.Sub(a.scheduled))
		st.byType[a.typ] = append(st.byType[a.typ], t.Sub(a.scheduled))
		if !a.start.IsZero() {
			st.startToClose = append(st.startToClose, t.Sub(a.start))
			st.schedToStart = append(st.schedToStart, a.start.Sub(a.scheduled))
		}
	}
}

// quantile is the q-quantile (0 to 1) of xs by the nearest rank below,
// the zero value for none.
func quantile[T cmp.Ordered](xs []T, q float64) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
