package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/api"
)

// Registry is the part of worker.Worker (and the test environment) that
// registers workflows.
type Registry interface {
	RegisterWorkflowWithOptions(w interface{}, options workflow.RegisterOptions)
}

// Register registers every rackflow workflow under its fixed name.
func Register(r Registry) {
	r.RegisterWorkflowWithOptions(ProvisionHost, workflow.RegisterOptions{Name: api.WorkflowProvisionHost})
	r.RegisterWorkflowWithOptions(DecommissionHost, workflow.RegisterOptions{Name: api.WorkflowDecommissionHost})
	r.RegisterWorkflowWithOptions(PublishService, workflow.RegisterOptions{Name: api.WorkflowPublishService})
	r.RegisterWorkflowWithOptions(UnpublishService, workflow.RegisterOptions{Name: api.WorkflowUnpublishService})
	r.RegisterWorkflowWithOptions(UpdateBackends, workflow.RegisterOptions{Name: api.WorkflowUpdateBackends})
	r.RegisterWorkflowWithOptions(SetupVMNetwork, workflow.RegisterOptions{Name: api.WorkflowSetupVMNetwork})
	r.RegisterWorkflowWithOptions(TeardownVMNetwork, workflow.RegisterOptions{Name: api.WorkflowTeardownVMNetwork})
	r.RegisterWorkflowWithOptions(DeployService, workflow.RegisterOptions{Name: api.WorkflowDeployService})
}
