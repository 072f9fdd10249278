// Package app runs rackflow's Temporal worker from its configuration: it
// builds every activity with its clients, connects to Temporal, registers
// the workflows and activities on the task queue, serves SDK and process
// metrics for Prometheus, and stops gracefully so running activities can
// heartbeat their last progress. It holds the credentials; workflows never
// do.
//
// It does not parse flags or handle signals: the worker's main does, and
// cancels Run's context to stop it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"

	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/worker/internal/config"
	"github.com/rackflow/rackflow/worker/promhandler"
	"github.com/rackflow/rackflow/workflows"
)

// Run runs the worker until ctx is cancelled, then stops it, giving running
// activities cfg.StopTimeout, and returns ctx's error. A bad setting, a
// failed connection or a metrics listener that cannot bind is returned at
// once.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := promhandler.New("temporal_")
	reg.MustRegister(metrics)

	acts, err := buildActivities(cfg, logger)
	if err != nil {
		return err
	}
	opts, err := cfg.ClientOptions(logger, metrics)
	if err != nil {
		return err
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", cfg.Address, err)
	}
	defer c.Close()
	acts.runs = &runs.Activities{Client: c}
	if cfg.ImageReportEvery > 0 {
		acts.image.Report, acts.image.ReportEvery = signalProgress(c), cfg.ImageReportEvery
	}

	queue := cfg.TaskQueue
	if cfg.Pod != "" {
		queue = api.PodQueue(cfg.TaskQueue, cfg.Pod)
	}
	w := worker.New(c, queue, worker.Options{
		// A pod's worker runs its hosts' activities; workflows run on
		// the shared queue's workers.
		DisableWorkflowWorker: cfg.Pod != "",
		// Activities see the shutdown through activity.GetWorkerStopChannel
		// and get this long to stop at a resumable point and heartbeat.
		WorkerStopTimeout:                      cfg.StopTimeout,
		MaxConcurrentActivityExecutionSize:     cfg.MaxConcurrentActivities,
		MaxConcurrentWorkflowTaskExecutionSize: cfg.MaxConcurrentWorkflowTasks,
		MaxConcurrentActivityTaskPollers:       cfg.ActivityPollers,
		MaxConcurrentWorkflowTaskPollers:       cfg.WorkflowPollers,
	})
	if cfg.Pod == "" {
		workflows.Register(w)
	}
	acts.register(w, cfg)

	g, gctx := errgroup.WithContext(ctx)
	if cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		logger.Info("metrics listening", "addr", ln.Addr().String())
		g.Go(func() error { return serveMetrics(gctx, ln, reg) })
	}
	g.Go(func() error {
		if err := w.Start(); err != nil {
			return fmt.Errorf("start worker: %w", err)
		}
		logger.Info("worker started", "address", cfg.Address, "namespace", cfg.Namespace, "task_queue", queue, "pod", cfg.Pod, "shared_only", cfg.SharedOnly)
		<-gctx.Done()
		logger.Info("worker stopping", "stop_timeout", cfg.StopTimeout.String())
		w.Stop()
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("worker stopped")
	return ctx.Err()
}

// serveMetrics serves reg's /metrics on ln until ctx is cancelled.
func serveMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry) error {
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
