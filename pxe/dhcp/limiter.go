package dhcp

import (
	"sync"
	"time"
)

// limiter says whether a key may be logged now: at most once per interval.
// It holds at most max keys, so a flood of made-up MACs cannot grow it; when
// it is full of recent keys, new keys are not logged (they are still counted
// by the metrics).
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	max      int
	last     map[string]time.Time
}

func newLimiter(interval time.Duration, max int) *limiter {
	return &limiter{interval: interval, max: max, last: make(map[string]time.Time)}
}

func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.interval {
		return false
	}
	if _, ok := l.last[key]; !ok && len(l.last) >= l.max {
		for k, t := range l.last {
			if now.Sub(t) >= l.interval {
				delete(l.last, k)
			}
		}
		if len(l.last) >= l.max {
			return false
		}
	}
	l.last[key] = now
	return true
}
