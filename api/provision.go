package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Steps of ProvisionHost, in order. Their names appear in the status query,
// the RackflowStep search attribute and the starter's output.
const (
	StepValidate    = "validate"
	StepLease       = "register-lease"
	StepPowerPXE    = "power-on-pxe"
	StepWaitLive    = "wait-live-ssh"
	StepWriteImage  = "write-image"
	StepBootDisk    = "boot-disk"
	StepWaitOS      = "wait-os-ssh"
	StepChef        = "chef-bootstrap"
	StepProvisioned = "provisioned"
)

// ProvisionSteps lists the steps in the order they run.
var ProvisionSteps = []string{StepValidate, StepLease, StepPowerPXE, StepWaitLive, StepWriteImage, StepBootDisk, StepWaitOS, StepChef}

// SkippableSteps are the steps an operator may skip with a reason: the ones
// an operator can do by hand without rackflow losing track of the disk's state.
// (DecommissionHost's unpublish and power-off too: an operator can do
// them by hand.)
var SkippableSteps = map[string]bool{StepBootDisk: true, StepChef: true, StepUnpublish: true, StepPowerOff: true}

// States of a provisioning run (RackflowState search attribute).
const (
	StateRunning        = "running"
	StateNeedsAttention = "needs-attention"
	StateCompensating   = "compensating"
	StateSucceeded      = "succeeded"
	StateFailed         = "failed"
	StateAborted        = "aborted"
)

// ProvisionInput starts ProvisionHost. Typed by hand it is just
// {"host":"node07"}: the worker looks the host up in its inventory.
type ProvisionInput struct {
	// Host is the host's name in the worker's inventory.
	Host string `json:"host"`
	// Spec, when set, is used instead of the inventory entry — only by a
	// worker started with --allow-inline-specs: otherwise a workflow starter
	// could choose where the worker sends its credentials.
	Spec *Host `json:"spec,omitempty"`
	// Options tune timeouts; zero values take the defaults.
	Options ProvisionOptions `json:"options,omitempty"`
	// Reprovision must be true to provision a host that a completed run
	// provisioned before: doing so wipes its disk. The workflow checks it,
	// so a plain `temporal workflow start` cannot wipe a host by accident.
	Reprovision bool `json:"reprovision,omitempty"`
}

// ProvisionOptions are the tunable deadlines of a run, as duration strings.
type ProvisionOptions struct {
	// LiveSSHDeadline bounds the wait for the live system's SSH (default 20m).
	LiveSSHDeadline string `json:"live_ssh_deadline,omitempty" yaml:"live_ssh_deadline,omitempty"`
	// OSSSHDeadline bounds the wait for the installed OS's SSH (default 20m).
	OSSSHDeadline string `json:"os_ssh_deadline,omitempty" yaml:"os_ssh_deadline,omitempty"`
	// AttentionDeadline bounds how long a parked run waits for an operator
	// before it compensates and fails (default 72h).
	AttentionDeadline string `json:"attention_deadline,omitempty" yaml:"attention_deadline,omitempty"`
	// ImageHeartbeat is the heartbeat timeout of the image stream (default
	// 1m): how soon a retry starts after the worker writing it died.
	ImageHeartbeat string `json:"image_heartbeat,omitempty" yaml:"image_heartbeat,omitempty"`
	// StepAttempts is how many times Temporal tries a step before the run
	// parks in needs-attention (default 5; 1 for non-retryable errors).
	StepAttempts int `json:"step_attempts,omitempty" yaml:"step_attempts,omitempty"`
	// RetryInterval is the first back-off between attempts (default 5s).
	RetryInterval string `json:"retry_interval,omitempty" yaml:"retry_interval,omitempty"`
}

// StepRecord is one step's outcome, reported in status and result.
type StepRecord struct {
	Name     string    `json:"name"`
	State    string    `json:"state"` // pending, running, done, skipped, failed
	Started  time.Time `json:"started,omitempty"`
	Finished time.Time `json:"finished,omitempty"`
	// Tries counts operator-triggered runs of the step (1 + retries).
	Tries int `json:"tries,omitempty"`
	// Error is the last error of the step, if any.
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
	// Reason is the operator's reason for a skip.
	Reason string `json:"reason,omitempty"`
}

// ProvisionStatus answers the status query.
type ProvisionStatus struct {
	Host string `json:"host"`
	// Pod and PodQueue say where the host's activities run (empty: the
	// shared queue); a run waiting on a pod whose worker is down shows it.
	Pod      string `json:"pod,omitempty"`
	PodQueue string `json:"pod_queue,omitempty"`
	State    string `json:"state"`
	Step     string `json:"step"`
	// Try is the current step's operator-level try (1 + retries).
	Try            int       `json:"try"`
	StepStarted    time.Time `json:"step_started,omitempty"`
	AttentionSince time.Time `json:"attention_since,omitempty"`
	// AttentionDeadline is when a parked run gives up.
	AttentionDeadline time.Time    `json:"attention_deadline,omitempty"`
	LastError         string       `json:"last_error,omitempty"`
	LastErrorType     string       `json:"last_error_type,omitempty"`
	Skippable         bool         `json:"skippable"`
	Steps             []StepRecord `json:"steps"`
	// Image progress as last reported by the image stream (every few
	// seconds while it runs), final once the step is done.
	BytesWritten int64   `json:"bytes_written,omitempty"`
	BytesTotal   int64   `json:"bytes_total,omitempty"`
	MBps         float64 `json:"mbps,omitempty"`
	ETASeconds   float64 `json:"eta_seconds,omitempty"`
	// ImagePhase is "write" or "verify" (the read-back on the host).
	ImagePhase string `json:"image_phase,omitempty"`
	// ImageProgressAt is when the stream last reported.
	ImageProgressAt time.Time `json:"image_progress_at,omitempty"`
	// BootTimeline is what rackflow-pxe saw of the live boot (DHCP,
	// TFTP and HTTP fetches), read every minute while wait-live-ssh runs
	// and once more when it fails; BootSummary says in one line where the
	// boot stopped.
	BootTimeline *BootTimeline `json:"boot_timeline,omitempty"`
	BootSummary  string        `json:"boot_summary,omitempty"`
	// TargetDisk is the disk the host's root-device hints resolved to on
	// the live system (from the image stream's first report, final from
	// its result); nil when the inventory names a path.
	TargetDisk *ResolvedDisk `json:"target_disk,omitempty"`
	// Operator actions, newest last; at most MaxActions, the oldest dropped
	// first and counted in ActionsDropped (the run's history keeps them all).
	Actions        []OperatorAction `json:"actions,omitempty"`
	ActionsDropped int              `json:"actions_dropped,omitempty"`
}

// MaxActions bounds ProvisionStatus.Actions, so a stream of Updates cannot
// grow the status query (and the workflow's memory) without end.
const MaxActions = 50

// AddAction appends a to s.Actions, dropping the oldest beyond MaxActions.
func (s *ProvisionStatus) AddAction(a OperatorAction) {
	s.Actions = append(s.Actions, a)
	if over := len(s.Actions) - MaxActions; over > 0 {
		s.Actions = append(s.Actions[:0:0], s.Actions[over:]...)
		s.ActionsDropped += over
	}
}

// OperatorAction records an Update an operator sent.
type OperatorAction struct {
	Action string    `json:"action"`
	Step   string    `json:"step"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// OperatorRequest is the argument of the retry, skip and abort Updates.
type OperatorRequest struct {
	Reason string `json:"reason"`
}

// MaxReasonBytes bounds an operator's reason: it is kept in the run's
// history and shown in the status query and the Web UI.
const MaxReasonBytes = 1024

// Validate checks the reason: at least 3 characters once trimmed, at most
// MaxReasonBytes, valid UTF-8 without control characters (tabs aside), so a
// reason cannot forge lines in logs or terminals that show it.
func (r OperatorRequest) Validate() error {
	reason := strings.TrimSpace(r.Reason)
	switch {
	case len(r.Reason) > MaxReasonBytes:
		return fmt.Errorf("reason is %d bytes; at most %d", len(r.Reason), MaxReasonBytes)
	case !utf8.ValidString(reason):
		return errors.New("reason is not valid UTF-8")
	case utf8.RuneCountInString(reason) < 3:
		return errors.New("a reason is required (it is recorded in the run's history)")
	}
	for _, c := range reason {
		if c != '\t' && !unicode.IsPrint(c) {
			return fmt.Errorf("reason holds a control character (%U); write it on one line", c)
		}
	}
	return nil
}

// ProvisionResult is what a successful run returns.
type ProvisionResult struct {
	Host         string       `json:"host"`
	ImageDigest  string       `json:"image_digest"`
	BytesWritten int64        `json:"bytes_written"`
	LiveHostKey  string       `json:"live_host_key_fingerprint"`
	OSHostKey    string       `json:"os_host_key"`
	OSHostKeyFP  string       `json:"os_host_key_fingerprint"`
	Steps        []StepRecord `json:"steps"`
	Duration     string       `json:"duration"`
	// Disk is the disk root-device hints resolved to (nil for a path).
	Disk *ResolvedDisk `json:"disk,omitempty"`
}

// ImageProgress is the payload of SignalImageProgress: what the image
// stream has committed to the disk so far. Small and free of hash state.
type ImageProgress struct {
	Offset     int64   `json:"offset"`
	Total      int64   `json:"total"`
	MBps       float64 `json:"mbps"`
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	Phase      string  `json:"phase,omitempty"`
	Mode       string  `json:"mode,omitempty"`
	Format     string  `json:"format,omitempty"`
	// Disk is the disk root-device hints resolved to (nil for a path).
	Disk *ResolvedDisk `json:"disk,omitempty"`
	At   time.Time     `json:"at"`
}
