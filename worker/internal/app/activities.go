package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/activities/guestnet"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/nitro"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
	pxeclient "github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/worker/internal/config"
)

// activitySet holds every activity struct, built once with its clients.
type activitySet struct {
	inventory *inventory.Activities
	lease     *lease.Activities
	bmc       *bmc.Activities
	remote    *remote.Activities
	image     *image.Activities
	chef      *chef.Activities
	nitro     *nitro.Activities
	cs        *cloudstack.Activities
	guest     *guestnet.Activities
	runs      *runs.Activities
}

func buildActivities(cfg config.Config, logger *slog.Logger) (*activitySet, error) {
	var res secrets.Resolver = secrets.Static{}
	if cfg.Secrets != "" {
		f, err := secrets.NewFile(cfg.Secrets)
		if err != nil {
			return nil, err
		}
		res = f
	} else {
		logger.Warn("no secrets file: every credential reference will be reported missing")
	}
	var load func() (*api.Inventory, error)
	if cfg.Inventory != "" {
		// A broken inventory stops the worker at start-up; later edits
		// are read on each run.
		if _, err := api.LoadInventory(cfg.Inventory); err != nil {
			return nil, fmt.Errorf("inventory:\n%w", err)
		}
		path := cfg.Inventory
		load = func() (*api.Inventory, error) { return api.LoadInventory(path) }
	}
	if cfg.PXEToken == "" && !cfg.SharedOnly {
		return nil, errors.New("no pxe API token: set RACKFLOW_PXE_TOKEN or --pxe-token-file (a shared worker with no boot network: --shared-only)")
	}
	if cfg.DiskHelper != "" {
		if _, err := os.Stat(cfg.DiskHelper); err != nil {
			return nil, fmt.Errorf("disk helper: %w", err)
		}
	}
	if cfg.ImageDir != "" {
		if st, err := os.Stat(cfg.ImageDir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("image dir %s: not a directory (%v)", cfg.ImageDir, err)
		}
	}
	if cfg.ConsoleDir != "" {
		if st, err := os.Stat(cfg.ConsoleDir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("console dir %s: not a directory (%v)", cfg.ConsoleDir, err)
		}
	}
	if cfg.AllowInlineSpecs {
		logger.Warn("inline host specs allowed: workflow inputs choose BMCs, images and chef servers; the secrets file's endpoints keep credentials bound")
	}
	var pxe *pxeclient.Client
	if !cfg.SharedOnly {
		var err error
		if pxe, err = pxeclient.New(cfg.PXEURL, cfg.PXEToken, pxeclient.Options{CAFile: cfg.PXECA}); err != nil {
			return nil, err
		}
	}
	dialer := &remote.Dialer{Secrets: res}
	chefDir := os.Getenv("RACKFLOW_CHEF_DIR") // labs only: chef's directory on the host
	return &activitySet{
		inventory: &inventory.Activities{Load: load, Secrets: res, AllowInlineSpecs: cfg.AllowInlineSpecs, Pod: cfg.Pod, SharedOnly: cfg.SharedOnly},
		lease:     &lease.Activities{PXE: pxe, Secrets: res, ConsoleDir: cfg.ConsoleDir},
		bmc:       bmc.New(res, cfg.BMCConcurrency),
		remote:    &remote.Activities{Dialer: dialer},
		image:     &image.Activities{Dialer: dialer, SegmentSize: int64(cfg.ImageSegmentMiB) << 20, MaxBytesPerSecond: int64(cfg.ImageMaxMBps) * 1e6, DiskHelper: cfg.DiskHelper, ImageDir: cfg.ImageDir},
		chef:      &chef.Activities{Dialer: dialer, Secrets: res, Dir: chefDir},
		nitro:     &nitro.Activities{Secrets: res},
		cs:        &cloudstack.Activities{Secrets: res},
		guest:     &guestnet.Activities{Dialer: dialer},
	}, nil
}

// register registers the activities a worker runs: a pod's worker the
// boot network's (and the inventory check of its hosts), a shared-only
// worker those that need no boot network, a worker of both kinds all.
func (a *activitySet) register(w worker.Worker, cfg config.Config) {
	w.RegisterActivity(a.inventory)
	w.RegisterActivity(a.runs)
	if !cfg.SharedOnly {
		w.RegisterActivity(a.lease)
		w.RegisterActivity(a.bmc)
		w.RegisterActivity(a.remote)
		w.RegisterActivity(a.image)
		w.RegisterActivity(a.chef)
	}
	if cfg.Pod == "" {
		w.RegisterActivity(a.nitro)
		w.RegisterActivity(a.cs)
		w.RegisterActivity(a.guest)
	}
}

// signalProgress reports an image stream's progress to the run that
// started it, for that run's status query.
func signalProgress(c client.Client) func(context.Context, api.ImageProgress) error {
	return func(ctx context.Context, p api.ImageProgress) error {
		we := activity.GetInfo(ctx).WorkflowExecution
		return c.SignalWorkflow(ctx, we.ID, we.RunID, api.SignalImageProgress, p)
	}
}
