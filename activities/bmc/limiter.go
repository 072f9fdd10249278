package bmc

import (
	"context"
	"sync"
)

// Limiter bounds how many activities of this worker process talk to the
// same BMC at once. BMCs have few session slots and some misbehave when two
// clients interleave boot-device and power commands, so the default is one.
// A Limiter must not be copied after first use.
type Limiter struct {
	n     int
	mu    sync.Mutex
	slots map[string]chan struct{}
}

// NewLimiter allows perBMC concurrent holders per BMC (1 when < 1).
func NewLimiter(perBMC int) *Limiter {
	if perBMC < 1 {
		perBMC = 1
	}
	return &Limiter{n: perBMC, slots: map[string]chan struct{}{}}
}

// Acquire waits for a slot for key (the BMC's address:port) until ctx ends.
// The caller must call release exactly once.
func (l *Limiter) Acquire(ctx context.Context, key string) (release func(), err error) {
	l.mu.Lock()
	if l.slots == nil {
		l.slots = map[string]chan struct{}{}
	}
	if l.n < 1 {
		l.n = 1
	}
	ch, ok := l.slots[key]
	if !ok {
		ch = make(chan struct{}, l.n)
		l.slots[key] = ch
	}
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-ch }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// InUse reports how many slots for key are held.
func (l *Limiter) InUse(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.slots[key])
}
