// Package api holds what every part of rackflow agrees on: the inventory and
// input types, their validation, and the names (task queue, workflow IDs,
// search attributes, queries, Updates) shared by the worker, the workflows and
// the starter. It carries no secret values, only references to them, and
// imports no vendor SDK, so the starter can use it without pulling in bmclib,
// cloudstack-go or the NITRO client.
package api

import "strings"

// DefaultTaskQueue is the task queue the worker polls unless told otherwise.
const DefaultTaskQueue = "rackflow"

// PodQueue is the task queue of a pod's worker: the activities of a host
// whose inventory entry names pod run there, on the worker that sits on
// that pod's boot network, while its workflow runs on shared. "rackflow"
// and pod "a" give "rackflow-a".
func PodQueue(shared, pod string) string { return shared + "-" + pod }

// Workflow type names, registered explicitly so renaming a Go function never
// changes what running histories refer to.
const (
	WorkflowProvisionHost = "ProvisionHost"
)

// Query and Update names of ProvisionHost.
const (
	QueryStatus  = "status"
	UpdateRetry  = "retry"
	UpdateSkip   = "skip"
	UpdateAbort  = "abort"
	SignalCancel = "cancel"
	// SignalImageProgress carries the image stream's progress
	// (ImageProgress) from the WriteImage activity to its run, so the
	// status query shows bytes, rate and ETA while the image is written.
	SignalImageProgress = "image-progress"
)

// Search attribute keys. They must be registered on the namespace (make run
// does it for the dev server; see README for a production namespace).
const (
	SearchAttrHost  = "RackflowHost"
	SearchAttrStep  = "RackflowStep"
	SearchAttrState = "RackflowState"
)

// SearchAttributes lists every key with its Temporal type, for registration.
var SearchAttributes = map[string]string{
	SearchAttrHost:  "Keyword",
	SearchAttrStep:  "Keyword",
	SearchAttrState: "Keyword",
}

// ProvisionWorkflowID is the one workflow ID of a host's provisioning, so two
// runs for the same host can never overlap.
func ProvisionWorkflowID(host string) string { return "provision/" + host }

// HostFromProvisionWorkflowID is the inverse of ProvisionWorkflowID.
func HostFromProvisionWorkflowID(id string) (string, bool) {
	return strings.CutPrefix(id, "provision/")
}
