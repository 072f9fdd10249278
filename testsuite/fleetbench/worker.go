package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/inventory"
	"github.com/rackflow/rackflow/activities/lease"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/activities/runs"
	"github.com/rackflow/rackflow/api"
	pxeclient "github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/workflows"
)

// workerSettings are the worker.Options the bench varies; 0 takes the
// SDK's default.
type workerSettings struct {
	ActSlots, WFTSlots, ActPollers, WFTPollers int
}

// SDK defaults of go.temporal.io/sdk v1.51 (internal/internal_worker.go).
const (
	sdkDefaultSlots   = 1000
	sdkDefaultPollers = 2
)

func (s workerSettings) effective() workerSettings {
	or := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	return workerSettings{or(s.ActSlots, sdkDefaultSlots), or(s.WFTSlots, sdkDefaultSlots), or(s.ActPollers, sdkDefaultPollers), or(s.WFTPollers, sdkDefaultPollers)}
}

func (s workerSettings) args() []string {
	return []string{
		"-act-slots", strconv.Itoa(s.ActSlots), "-wft-slots", strconv.Itoa(s.WFTSlots),
		"-act-pollers", strconv.Itoa(s.ActPollers), "-wft-pollers", strconv.Itoa(s.WFTPollers),
	}
}

// runWorker is the child process: rackflow's worker wired as worker/ wires
// it (workflows.Register, the real activity structs, a secrets file, the
// inventory file, the pxe client), except that BMCs are reached through
// the fake BMC's HTTP protocol instead of bmclib. It prints "ready" on
// stdout once polling and stops on SIGTERM.
func runWorker(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	addr := fs.String("address", "", "Temporal frontend")
	inv := fs.String("inventory", "", "inventory YAML")
	sec := fs.String("secrets", "", "secrets YAML")
	pxeURL := fs.String("pxe-url", "", "pxe lease API")
	chefDir := fs.String("chef-dir", "", "chef's directory on the hosts")
	imageDir := fs.String("image-dir", "", "the only directory local images are read from")
	perBMC := fs.Int("bmc-concurrency", 1, "calls per BMC at once")
	var ws workerSettings
	fs.IntVar(&ws.ActSlots, "act-slots", 0, "")
	fs.IntVar(&ws.WFTSlots, "wft-slots", 0, "")
	fs.IntVar(&ws.ActPollers, "act-pollers", 0, "")
	fs.IntVar(&ws.WFTPollers, "wft-pollers", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	res, err := secrets.NewFile(*sec)
	if err != nil {
		return err
	}
	if _, err := api.LoadInventory(*inv); err != nil {
		return err
	}
	path := *inv
	dialer := &remote.Dialer{Secrets: res}
	bmcActs := bmc.New(res, *perBMC)
	bmcActs.NewClient = newHTTPBMC
	token := os.Getenv("RACKFLOW_PXE_TOKEN")

	c, err := client.DialContext(ctx, client.Options{HostPort: *addr, Logger: sdklog.NewStructuredLogger(logger)})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", *addr, err)
	}
	defer c.Close()
	w := worker.New(c, api.DefaultTaskQueue, worker.Options{
		WorkerStopTimeout:                      5 * time.Second,
		MaxConcurrentActivityExecutionSize:     ws.ActSlots,
		MaxConcurrentWorkflowTaskExecutionSize: ws.WFTSlots,
		MaxConcurrentActivityTaskPollers:       ws.ActPollers,
		MaxConcurrentWorkflowTaskPollers:       ws.WFTPollers,
	})
	workflows.Register(w)
	w.RegisterActivity(&runs.Activities{Client: c})
	w.RegisterActivity(&inventory.Activities{Load: func() (*api.Inventory, error) { return api.LoadInventory(path) }, Secrets: res})
	pxe, err := pxeclient.New(*pxeURL, token, pxeclient.Options{})
	if err != nil {
		return err
	}
	w.RegisterActivity(&lease.Activities{PXE: pxe, Secrets: res})
	w.RegisterActivity(bmcActs)
	w.RegisterActivity(&remote.Activities{Dialer: dialer})
	w.RegisterActivity(&image.Activities{Dialer: dialer, SegmentSize: 128 << 20, ImageDir: *imageDir})
	// Every host has its own /etc/chef; these fake hosts share one
	// filesystem, so each gets its own directory under chefDir. The chef
	// code that runs is the real one; only Dir differs per host.
	base := *chefDir
	w.RegisterActivityWithOptions(func(ctx context.Context, in chef.BootstrapInput) (chef.BootstrapResult, error) {
		a := &chef.Activities{Dialer: dialer, Secrets: res, Dir: filepath.Join(base, in.Host)}
		return a.Bootstrap(ctx, in)
	}, activity.RegisterOptions{Name: "Bootstrap"})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	fmt.Println("ready")
	<-ctx.Done()
	w.Stop()
	return nil
}

// httpBMC is a bmc.Client for the bench's fake BMCs: JSON over HTTP with
// basic auth, one request per call.
type httpBMC struct {
	base       string
	user, pass string
	hc         *http.Client
}

var bmcHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}}

func newHTTPBMC(_ context.Context, c bmc.Conn) (bmc.Client, error) {
	if c.Provider != "redfish" {
		return nil, fmt.Errorf("fake bmc speaks redfish only, got %q", c.Provider)
	}
	return &httpBMC{base: "http://" + net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), user: c.User, pass: c.Password, hc: bmcHTTP}, nil
}

func (b *httpBMC) Open(ctx context.Context) error  { _, err := b.GetPowerState(ctx); return err }
func (b *httpBMC) Close(ctx context.Context) error { return nil }

func (b *httpBMC) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(b.user, b.pass)
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

func (b *httpBMC) GetPowerState(ctx context.Context) (string, error) {
	var st bmcState
	if err := b.do(ctx, http.MethodGet, "/power", nil, &st); err != nil {
		return "", err
	}
	if st.State == "" {
		return "", errors.New("bmc answered no power state")
	}
	return st.State, nil
}

func (b *httpBMC) SetPowerState(ctx context.Context, state string) (bool, error) {
	if err := b.do(ctx, http.MethodPost, "/power", bmcState{State: state}, nil); err != nil {
		return false, err
	}
	return true, nil
}

func (b *httpBMC) SetBootDevice(ctx context.Context, device string, persistent, _ bool) (bool, error) {
	if err := b.do(ctx, http.MethodPost, "/bootdev", bmcBootDev{Device: device, Persistent: persistent}, nil); err != nil {
		return false, err
	}
	return true, nil
}
