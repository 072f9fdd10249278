package api

import (
	"fmt"
	"strings"
	"testing"
)

func TestOperatorRequestValidate(t *testing.T) {
	tests := map[string]struct {
		reason string
		ok     bool
	}{
		"plain":                  {"re-seated the boot NIC cable", true},
		"tab and unicode":        {"câble\tre-seated", true},
		"empty":                  {"", false},
		"spaces only":            {"   \t ", false},
		"too short once trimmed": {"  ok  ", false},
		"newline forges a line":  {"ok\nlevel=INFO msg=\"host provisioned\"", false},
		"carriage return":        {"done\rOVERWRITTEN", false},
		"escape sequence":        {"\x1b[2Jcleared", false},
		"over 1 KiB":             {strings.Repeat("a", MaxReasonBytes+1), false},
		"exactly 1 KiB":          {strings.Repeat("a", MaxReasonBytes), true},
		"invalid utf-8":          {"bad \xff byte", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := OperatorRequest{Reason: tc.reason}.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate(%.40q) = %v, want ok=%v", tc.reason, err, tc.ok)
			}
		})
	}
}

func TestStatusActionsBounded(t *testing.T) {
	var s ProvisionStatus
	for i := range MaxActions + 7 {
		s.AddAction(OperatorAction{Action: UpdateRetry, Reason: fmt.Sprint("try ", i)})
	}
	if len(s.Actions) != MaxActions || s.ActionsDropped != 7 {
		t.Fatalf("%d actions kept, %d dropped; want %d and 7", len(s.Actions), s.ActionsDropped, MaxActions)
	}
	if first, last := s.Actions[0].Reason, s.Actions[MaxActions-1].Reason; first != "try 7" || last != fmt.Sprint("try ", MaxActions+6) {
		t.Fatalf("kept %q..%q, want the newest", first, last)
	}
}
