package workflows

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
)

// saga records how to undo each step as soon as the step has succeeded, and
// undoes them newest first.
type saga struct {
	undo []compensation
}

func (s *saga) add(name string, fn func(ctx workflow.Context) error) {
	s.undo = append(s.undo, compensation{name: name, fn: fn})
}

// addOnce is add, except that a name already registered (by an earlier try
// of the same step) is kept rather than added twice.
func (s *saga) addOnce(name string, fn func(ctx workflow.Context) error) {
	for _, c := range s.undo {
		if c.name == name {
			return
		}
	}
	s.add(name, fn)
}

// compensate runs every undo on a disconnected context (so it completes even
// when the run is cancelled), continuing past failures, and reports those
// that failed.
func (s *saga) compensate(ctx workflow.Context) error {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		c := s.undo[i]
		if err := c.fn(dctx); err != nil {
			workflow.GetLogger(ctx).Error("compensation failed", "compensation", c.name, "error", err)
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		} else {
			workflow.GetLogger(ctx).Info("compensated", "compensation", c.name)
		}
	}
	s.undo = nil
	if len(errs) > 0 {
		return activities.NonRetryable("compensation incomplete: "+errors.Join(errs...).Error(), ErrTypeCompensationFailed, nil)
	}
	return nil
}

// failWith ends a run with the root cause's error type (so callers and the
// UI can branch on NitroConflict, InvalidInput...) and a message that says
// what happened around it.
func failWith(context string, err error) error {
	msg, typ := describe(err)
	if typ == "" {
		typ = ErrTypeFailed
	}
	return activities.NonRetryable(context+": "+msg, typ, err)
}
