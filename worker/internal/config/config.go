// Package config is the worker's configuration: its flags and environment
// variables, checked at start-up, and the Temporal client options they
// imply. It reads the files holding secrets (API key, pxe token) but keeps
// them out of flags. It does not connect to anything.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/worker/temporalconn"
)

// Config is everything the worker is told, from flags or environment.
type Config struct {
	// Settings say how to reach Temporal (address, namespace, TLS, API
	// key), as for the starter.
	temporalconn.Settings
	// TaskQueue is the shared queue: workflows, and the activities of
	// hosts that name no pod.
	TaskQueue string
	// Pod, when set, makes this the pod's worker: it polls only
	// api.PodQueue(TaskQueue, Pod) and runs only activities, those of the
	// hosts on its boot network.
	Pod string
	// SharedOnly makes this a shared worker with no boot network: it runs
	// workflows and the activities that need none (inventory, NetScaler,
	// CloudStack, guests), needs no pxe service, and refuses hosts that
	// name no pod.
	SharedOnly bool

	// Inventory is the host inventory file, read again on every run.
	Inventory string
	// Secrets is the secrets file credential references resolve from.
	Secrets string
	// AllowInlineSpecs lets a ProvisionHost input carry its host's spec
	// in place of the inventory entry. Off, the inventory is the only
	// source of BMC addresses, images and chef servers; on, whoever may
	// start workflows chooses them, and only the secrets file's endpoint
	// bindings keep credentials where they belong.
	AllowInlineSpecs bool
	// ImageDir is the only directory local images (file:// or absolute
	// paths in the inventory) are read from; "" refuses local images.
	ImageDir string
	// ConsoleDir is where a console logger keeps each host's serial
	// console as <host>.log; its end is shown with the boot timeline.
	// "" shows none.
	ConsoleDir string
	// PXEURL is the pxe service's lease API: https, or http on loopback
	// (the client refuses to send its token in clear over a network).
	PXEURL string
	// PXECA is a PEM bundle of the CAs that sign the pxe service's
	// certificate, for a private CA ("" for the system's roots).
	PXECA string
	// PXEToken is the lease API's bearer token, read from PXETokenFile or
	// RACKFLOW_PXE_TOKEN.
	PXEToken, PXETokenFile string

	// MetricsAddr is where /metrics listens ("" for nowhere).
	MetricsAddr string
	// LogLevel is the lowest level logged.
	LogLevel slog.Level
	// StopTimeout is how long running activities get on shutdown to stop
	// at a resumable point and heartbeat.
	StopTimeout time.Duration
	// BMCConcurrency is how many calls one BMC gets at once.
	BMCConcurrency int
	// ImageSegmentMiB is how much of an image one remote dd writes before
	// its progress is recorded: a retried stream resumes at a segment
	// boundary.
	ImageSegmentMiB int
	// ImageMaxMBps caps one image stream's rate (0: no cap).
	ImageMaxMBps int
	// DiskHelper is the rackflow-diskhelper binary uploaded to live
	// systems of its architecture ("" for none: dd and openssl).
	DiskHelper string
	// ImageReportEvery is how often an image stream signals its progress
	// to its run, for the status query (0: never).
	ImageReportEvery time.Duration
	// Fleet settings; zero takes the SDK's default.
	MaxConcurrentActivities    int
	MaxConcurrentWorkflowTasks int
	ActivityPollers            int
	WorkflowPollers            int
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// defaultDiskHelper is rackflow-diskhelper beside the worker's own
// executable (make build puts both in bin/), or "" when it is not there.
func defaultDiskHelper() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), "rackflow-diskhelper")
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return p
}

// Parse reads the worker's flags, with the environment variables of the
// same meaning as defaults (the names the temporal CLI uses where there is
// one). Secrets (the API key, the pxe token) come from files or the
// environment, never from flags, which show in ps.
func Parse(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	c.Settings.RegisterFlags(fs, env)
	fs.StringVar(&c.TaskQueue, "task-queue", env("RACKFLOW_TASK_QUEUE", api.DefaultTaskQueue), "task queue (RACKFLOW_TASK_QUEUE)")
	fs.StringVar(&c.Pod, "pod", env("RACKFLOW_POD", ""), "serve this pod's boot network: poll only <task-queue>-<pod> for the activities of hosts whose inventory entry says pod: <pod> (RACKFLOW_POD)")
	sharedOnly := env("RACKFLOW_SHARED_ONLY", "false")
	fs.BoolFunc("shared-only", "run workflows and the activities that need no boot network; no pxe service; hosts must name a pod (RACKFLOW_SHARED_ONLY, default false)", func(s string) error { sharedOnly = s; return nil })
	fs.StringVar(&c.Inventory, "inventory", env("RACKFLOW_INVENTORY", ""), "host inventory YAML (RACKFLOW_INVENTORY)")
	fs.StringVar(&c.Secrets, "secrets", env("RACKFLOW_SECRETS", ""), "secrets YAML (RACKFLOW_SECRETS)")
	inline := env("RACKFLOW_ALLOW_INLINE_SPECS", "false")
	fs.BoolFunc("allow-inline-specs", "accept a host spec in the ProvisionHost input instead of the inventory entry; its credentials still only go where the secrets file binds them (RACKFLOW_ALLOW_INLINE_SPECS, default false)", func(s string) error { inline = s; return nil })
	fs.StringVar(&c.ImageDir, "image-dir", env("RACKFLOW_IMAGE_DIR", ""), "directory local images (file:// URLs, absolute paths) must be in; empty refuses local images (RACKFLOW_IMAGE_DIR)")
	fs.StringVar(&c.ConsoleDir, "console-dir", env("RACKFLOW_CONSOLE_DIR", ""), "directory where a console logger (conserver, ipmitool sol) keeps each host's serial console as <host>.log; its last lines go with the boot timeline (RACKFLOW_CONSOLE_DIR)")
	fs.StringVar(&c.PXEURL, "pxe-url", env("RACKFLOW_PXE_URL", "http://127.0.0.1:8080"), "pxe service lease API (RACKFLOW_PXE_URL)")
	fs.StringVar(&c.PXECA, "pxe-ca", env("RACKFLOW_PXE_CA", ""), "CA bundle that signs the pxe service's certificate, for an https pxe-url with a private CA (RACKFLOW_PXE_CA)")
	fs.StringVar(&c.PXETokenFile, "pxe-token-file", env("RACKFLOW_PXE_TOKEN_FILE", ""), "file holding the pxe API token (or RACKFLOW_PXE_TOKEN)")
	fs.StringVar(&c.MetricsAddr, "metrics", env("RACKFLOW_METRICS_ADDR", "127.0.0.1:9464"), "Prometheus /metrics listen address, empty to disable (RACKFLOW_METRICS_ADDR)")
	level := env("RACKFLOW_LOG_LEVEL", "info")
	fs.Func("log-level", "debug, info, warn or error (RACKFLOW_LOG_LEVEL, default info)", func(s string) error { level = s; return nil })
	stop := env("RACKFLOW_STOP_TIMEOUT", "30s")
	fs.Func("stop-timeout", "how long running activities get to finish or heartbeat on shutdown (RACKFLOW_STOP_TIMEOUT, default 30s)", func(s string) error { stop = s; return nil })
	conc := env("RACKFLOW_BMC_CONCURRENCY", "1")
	fs.Func("bmc-concurrency", "concurrent calls per BMC (RACKFLOW_BMC_CONCURRENCY, default 1)", func(s string) error { conc = s; return nil })
	var err error
	seg := env("RACKFLOW_IMAGE_SEGMENT_MIB", "64")
	fs.Func("image-segment-mib", "MiB written per resumable image segment (RACKFLOW_IMAGE_SEGMENT_MIB, default 64)", func(s string) error { seg = s; return nil })
	maxRate := env("RACKFLOW_IMAGE_MAX_MBPS", "0")
	fs.Func("image-max-mbps", "cap on one image stream's rate in MB/s, 0 for none (RACKFLOW_IMAGE_MAX_MBPS)", func(s string) error { maxRate = s; return nil })
	fs.StringVar(&c.DiskHelper, "disk-helper", env("RACKFLOW_DISK_HELPER", defaultDiskHelper()), "rackflow-diskhelper binary, or a directory of them (one per architecture), uploaded to live systems to write and read back the disk; empty for none: dd and openssl (RACKFLOW_DISK_HELPER; default: beside this executable, if there)")
	report := env("RACKFLOW_IMAGE_REPORT_EVERY", "10s")
	fs.Func("image-report-every", "how often an image stream reports its progress to the run's status query, 0 for never (RACKFLOW_IMAGE_REPORT_EVERY, default 10s)", func(s string) error { report = s; return nil })
	fleet := []struct {
		flag, env, usage string
		dst              *int
		raw              string
	}{
		{"max-concurrent-activities", "RACKFLOW_MAX_CONCURRENT_ACTIVITIES", "activities this worker runs at once (SDK default 1000)", &c.MaxConcurrentActivities, ""},
		{"max-concurrent-workflow-tasks", "RACKFLOW_MAX_CONCURRENT_WORKFLOW_TASKS", "workflow tasks this worker runs at once (SDK default 1000)", &c.MaxConcurrentWorkflowTasks, ""},
		{"activity-pollers", "RACKFLOW_ACTIVITY_POLLERS", "activity task pollers (SDK default 2)", &c.ActivityPollers, ""},
		{"workflow-pollers", "RACKFLOW_WORKFLOW_POLLERS", "workflow task pollers (SDK default 2)", &c.WorkflowPollers, ""},
	}
	for i := range fleet {
		f := &fleet[i]
		f.raw = env(f.env, "0")
		fs.Func(f.flag, f.usage+" ("+f.env+")", func(s string) error { f.raw = s; return nil })
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, f := range fleet {
		n, err := strconv.Atoi(f.raw)
		if err != nil || n < 0 {
			return c, fmt.Errorf("%s: must be a number >= 0, got %q", f.flag, f.raw)
		}
		*f.dst = n
	}
	if c.SharedOnly, err = strconv.ParseBool(sharedOnly); err != nil {
		return c, fmt.Errorf("shared-only: must be true or false, got %q", sharedOnly)
	}
	if c.Pod != "" && !api.ValidName(c.Pod) {
		return c, fmt.Errorf("pod: must be a DNS label (lower-case letters, digits, '-'), got %q", c.Pod)
	}
	if c.Pod != "" && c.SharedOnly {
		return c, errors.New("pod and shared-only: a worker is either a pod's or the shared one")
	}
	if c.AllowInlineSpecs, err = strconv.ParseBool(inline); err != nil {
		return c, fmt.Errorf("allow-inline-specs: must be true or false, got %q", inline)
	}
	if c.ImageMaxMBps, err = strconv.Atoi(maxRate); err != nil || c.ImageMaxMBps < 0 {
		return c, fmt.Errorf("image-max-mbps: must be a number >= 0, got %q", maxRate)
	}
	if c.ImageSegmentMiB, err = strconv.Atoi(seg); err != nil || c.ImageSegmentMiB < 1 {
		return c, fmt.Errorf("image-segment-mib: must be a positive number, got %q", seg)
	}
	if c.ImageReportEvery, err = time.ParseDuration(report); err != nil || c.ImageReportEvery < 0 {
		return c, fmt.Errorf("image-report-every: must be a duration >= 0 such as 10s, got %q", report)
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("log-level: %w", err)
	}
	if c.StopTimeout, err = time.ParseDuration(stop); err != nil {
		return c, fmt.Errorf("stop-timeout: %w", err)
	}
	if c.BMCConcurrency, err = strconv.Atoi(conc); err != nil || c.BMCConcurrency < 1 {
		return c, fmt.Errorf("bmc-concurrency: must be a positive number, got %q", conc)
	}
	if err := c.Settings.Load(os.Getenv); err != nil {
		return c, err
	}
	c.PXEToken = os.Getenv("RACKFLOW_PXE_TOKEN")
	if c.PXETokenFile != "" {
		b, err := os.ReadFile(c.PXETokenFile)
		if err != nil {
			return c, fmt.Errorf("pxe token file: %w", err)
		}
		c.PXEToken = strings.TrimSpace(string(b))
	}
	return c, nil
}

// ClientOptions is how the worker connects to Temporal: mTLS and an API key
// when configured, plain gRPC to a local dev server otherwise.
func (c Config) ClientOptions(logger *slog.Logger, metrics client.MetricsHandler) (client.Options, error) {
	o, err := c.Settings.Options()
	if err != nil {
		return o, err
	}
	o.Logger = sdklog.NewStructuredLogger(logger)
	o.MetricsHandler = metrics
	return o, nil
}
