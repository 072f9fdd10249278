// Package runs reads rackflow's own past runs from Temporal, so a deploy can
// tell which hosts already carry the image it wants. It only reads: it never
// starts, signals or changes a workflow.
package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/api"
)

// Statuses of a run, as LastProvisionResult.Status names them (Temporal's
// own for any other).
const (
	StatusRunning    = "Running"
	StatusCompleted  = "Completed"
	StatusFailed     = "Failed"
	StatusCanceled   = "Canceled"
	StatusTerminated = "Terminated"
	StatusTimedOut   = "TimedOut"
)

// Activities hold a Temporal client.
type Activities struct {
	Client client.Client
}

// LastProvisionResult is a host's latest provisioning run.
type LastProvisionResult struct {
	Found bool `json:"found"`
	// Status is one of the Status constants: Running, Completed, Failed...
	Status      string `json:"status,omitempty"`
	RunID       string `json:"run_id,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
	// Steps of the completed run.
	Steps []api.StepRecord `json:"steps,omitempty"`
}

// LastProvision describes provision/<host>'s latest run and, if it
// completed, the image it wrote.
func (a *Activities) LastProvision(ctx context.Context, host string) (LastProvisionResult, error) {
	id := api.ProvisionWorkflowID(host)
	desc, err := a.Client.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return LastProvisionResult{}, nil
	}
	if err != nil {
		return LastProvisionResult{}, fmt.Errorf("describe %s: %w", id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	res := LastProvisionResult{Found: true, RunID: info.GetExecution().GetRunId(), Status: statusName(info.GetStatus())}
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		return res, nil
	}
	var pr api.ProvisionResult
	if err := a.Client.GetWorkflow(ctx, id, res.RunID).Get(ctx, &pr); err != nil {
		return res, fmt.Errorf("result of %s: %w", id, err)
	}
	res.ImageDigest, res.Steps = pr.ImageDigest, pr.Steps
	return res, nil
}

func statusName(s enumspb.WorkflowExecutionStatus) string {
	switch s {
	case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		return StatusRunning
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return StatusCompleted
	case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
		return StatusFailed
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return StatusCanceled
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return StatusTerminated
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return StatusTimedOut
	default:
		return s.String()
	}
}

// CompletedProvision is a host's latest completed provisioning run.
type CompletedProvision struct {
	Found    bool      `json:"found"`
	RunID    string    `json:"run_id,omitempty"`
	ClosedAt time.Time `json:"closed_at,omitzero"`
}

// LastCompletedProvision finds provision/<host>'s latest completed run
// (through visibility, so a running provisioning run of the same ID does
// not hide it).
func (a *Activities) LastCompletedProvision(ctx context.Context, host string) (CompletedProvision, error) {
	id := api.ProvisionWorkflowID(host)
	q := fmt.Sprintf("WorkflowId = %q AND ExecutionStatus = 'Completed'", id)
	resp, err := a.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: q, PageSize: 1})
	if err != nil {
		return CompletedProvision{}, fmt.Errorf("list completed runs of %s: %w", id, err)
	}
	for _, e := range resp.GetExecutions() {
		return CompletedProvision{Found: true, RunID: e.GetExecution().GetRunId(), ClosedAt: e.GetCloseTime().AsTime()}, nil
	}
	return CompletedProvision{}, nil
}
