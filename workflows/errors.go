package workflows

// Error types a workflow run can end with, beyond the activity error types
// in package activities (a run that fails on an activity error ends with that
// error's type, so callers and the UI can branch on it).
const (
	// ErrTypeProvisionAborted: an operator aborted the run; what it had
	// done is undone.
	ErrTypeProvisionAborted = "ProvisionAborted"
	// ErrTypeWouldWipeProvisionedHost: the host was provisioned before and
	// the input does not say reprovision: true. Nothing was touched.
	ErrTypeWouldWipeProvisionedHost = "WouldWipeProvisionedHost"
	// ErrTypeAttentionDeadlineExceeded: the run needed attention and
	// nobody answered before the deadline; what it had done is undone.
	ErrTypeAttentionDeadlineExceeded = "AttentionDeadlineExceeded"
	// ErrTypeCompensationFailed: a rollback could not undo everything; an
	// operator must clean up what its message lists.
	ErrTypeCompensationFailed = "CompensationFailed"
	// ErrTypeDeployIncomplete: too few members of a deploy came up to
	// publish it.
	ErrTypeDeployIncomplete = "DeployIncomplete"
	// ErrTypeHostInForeignServiceGroups: DecommissionHost's unpublish
	// step found the host a member of servicegroups rackflow does not own
	// (after removing it from rackflow's); the details list them. The run
	// waits in needs-attention: remove them by hand and retry, or skip.
	ErrTypeHostInForeignServiceGroups = "HostInForeignServiceGroups"
	// ErrTypeFailed: a failure whose cause has no type of its own.
	ErrTypeFailed = "Failed"
	// ErrTypeTimeout and ErrTypeCanceled name, in a step's status, an
	// activity that timed out or was cancelled.
	ErrTypeTimeout  = "Timeout"
	ErrTypeCanceled = "Canceled"
)
