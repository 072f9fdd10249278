package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/spec"
)

// Registry is the part of worker.Worker (and the test environment) that
// registers workflows.
type Registry interface {
	RegisterWorkflowWithOptions(w interface{}, options workflow.RegisterOptions)
}

// Register registers every rackflow workflow under its fixed name.
func Register(r Registry) {
	r.RegisterWorkflowWithOptions(ProvisionHost, workflow.RegisterOptions{Name: spec.WorkflowProvisionHost})
	r.RegisterWorkflowWithOptions(PublishService, workflow.RegisterOptions{Name: spec.WorkflowPublishService})
	r.RegisterWorkflowWithOptions(UnpublishService, workflow.RegisterOptions{Name: spec.WorkflowUnpublishService})
	r.RegisterWorkflowWithOptions(UpdateBackends, workflow.RegisterOptions{Name: spec.WorkflowUpdateBackends})
	r.RegisterWorkflowWithOptions(SetupVMNetwork, workflow.RegisterOptions{Name: spec.WorkflowSetupVMNetwork})
	r.RegisterWorkflowWithOptions(TeardownVMNetwork, workflow.RegisterOptions{Name: spec.WorkflowTeardownVMNetwork})
	r.RegisterWorkflowWithOptions(DeployService, workflow.RegisterOptions{Name: spec.WorkflowDeployService})
}
