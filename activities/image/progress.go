package image

import (
	"context"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
)

// tracker holds the committed progress and heartbeats it.
type tracker struct {
	ctx      context.Context
	mu       sync.Mutex
	p        Progress
	start    time.Time // of this attempt's stream
	from     int64     // offset this attempt's stream started at
	onCommit func(offset int64)
}

// started records where this attempt's stream starts.
func (t *tracker) started(offset int64, state []byte, format string) {
	t.mu.Lock()
	t.p.Offset, t.p.HashState, t.p.Format = offset, state, format
	t.from, t.start = offset, time.Now()
	t.mu.Unlock()
	if t.onCommit != nil {
		t.onCommit(offset)
	}
}

func (t *tracker) beat() {
	t.mu.Lock()
	p := t.p
	t.mu.Unlock()
	activity.RecordHeartbeat(t.ctx, p)
}

// commit records that [0, offset) is on the disk, and heartbeats it.
func (t *tracker) commit(offset int64, state []byte) {
	t.mu.Lock()
	t.p.Offset, t.p.HashState = offset, state
	t.p.MBps, t.p.ETASeconds = 0, 0
	if el := time.Since(t.start).Seconds(); el > 0 && offset > t.from {
		rate := float64(offset-t.from) / el
		t.p.MBps = rate / 1e6
		t.p.ETASeconds = float64(t.p.Total-offset) / rate
	}
	t.mu.Unlock()
	if t.onCommit != nil {
		t.onCommit(offset)
	}
	t.beat()
}

func (t *tracker) set(f func(p *Progress)) {
	t.mu.Lock()
	f(&t.p)
	t.mu.Unlock()
}

func (t *tracker) get() Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.p
}

// report hands p to a.Report, bounded in time so a slow Temporal
// frontend never stalls the heartbeats.
func (a *Activities) report(ctx context.Context, host string, p Progress) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := a.Report(rctx, api.ImageProgress{
		Offset: p.Offset, Total: p.Total, MBps: p.MBps, ETASeconds: p.ETASeconds,
		Phase: p.Phase, Mode: p.Mode, Format: p.Format, Disk: p.Disk, At: time.Now().UTC(),
	})
	if err != nil && ctx.Err() == nil {
		activity.GetLogger(ctx).Warn("could not report image progress to the workflow", "host", host, "error", err)
	}
}

// previousProgress is the previous attempt's progress, if it fits this
// image; a retry resumes from it.
func previousProgress(ctx context.Context, in WriteInput) Progress {
	p, ok := activities.PreviousProgress[Progress](ctx)
	if !ok {
		return Progress{}
	}
	if p.Total != in.Image.Size || p.Offset < 0 || p.Offset > p.Total {
		activity.GetLogger(ctx).Warn("ignoring progress of previous attempt: does not fit this image", "host", in.Host, "offset", p.Offset, "total", p.Total)
		return Progress{}
	}
	return p
}

// keepAlive heartbeats tr's progress every HeartbeatEvery (5s when zero, and
// at least three times per heartbeat timeout, or a slow read-back would look
// like a dead worker), and hands it to a.Report every ReportEvery, until
// stop.
func (a *Activities) keepAlive(ctx context.Context, host string, tr *tracker) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	reportEvery := activities.OrDefault(a.ReportEvery, 10*time.Second)
	var reported time.Time
	stopBeats := activities.KeepAlive(rctx, activities.OrDefault(a.HeartbeatEvery, 5*time.Second), func() any {
		p := tr.get()
		if a.Report != nil && time.Since(reported) >= reportEvery {
			reported = time.Now()
			a.report(rctx, host, p)
		}
		return p
	})
	return func() {
		cancel()
		stopBeats()
	}
}

// enterVerify records that the write is done and the read-back goes on,
// and says so at once.
func (a *Activities) enterVerify(ctx context.Context, host string, tr *tracker) {
	tr.set(func(p *Progress) { p.Phase, p.ETASeconds = "verify", 0 })
	tr.beat()
	if a.Report != nil {
		a.report(ctx, host, tr.get())
	}
}
