package app

import (
	"context"
	"github.com/rackflow/rackflow/worker/temporalconn"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rackflow/rackflow/worker/internal/config"
)

// Bad settings stop the worker before it dials: the address points at
// nothing, so a Run that dialled first would fail with a connect error.
func TestRunRefusesBadSettingsBeforeConnecting(t *testing.T) {
	base := config.Config{Settings: temporalconn.Settings{Address: "127.0.0.1:1", Namespace: "default"}, TaskQueue: "rackflow", PXEURL: "http://127.0.0.1:8080", PXEToken: "t", BMCConcurrency: 1, ImageSegmentMiB: 64}
	tests := map[string]struct {
		edit func(c *config.Config)
		err  string
	}{
		"no pxe token":        {edit: func(c *config.Config) { c.PXEToken = "" }, err: "no pxe API token"},
		"missing inventory":   {edit: func(c *config.Config) { c.Inventory = filepath.Join(t.TempDir(), "inventory.yaml") }, err: "inventory.yaml"},
		"missing helper":      {edit: func(c *config.Config) { c.DiskHelper = filepath.Join(t.TempDir(), "rackflow-diskhelper") }, err: "disk helper"},
		"missing secrets":     {edit: func(c *config.Config) { c.Secrets = filepath.Join(t.TempDir(), "secrets.yaml") }, err: "secrets file"},
		"missing image dir":   {edit: func(c *config.Config) { c.ImageDir = filepath.Join(t.TempDir(), "images") }, err: "image dir"},
		"missing console dir": {edit: func(c *config.Config) { c.ConsoleDir = filepath.Join(t.TempDir(), "conserver") }, err: "console dir"},
		"pxe token in clear":  {edit: func(c *config.Config) { c.PXEURL = "http://10.0.0.2:8080" }, err: "refusing to send the bearer token in clear"},
		"missing pxe CA":      {edit: func(c *config.Config) { c.PXEURL, c.PXECA = "https://pxe.mgmt:8443", "/nonexistent/ca.pem" }, err: "pxe CA bundle"},
		"unreadable tls key":  {edit: func(c *config.Config) { c.TLSCert, c.TLSKey = "/nonexistent/tls.crt", "/nonexistent/tls.key" }, err: "mTLS key pair"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			err := Run(context.Background(), cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Run = %v, want an error about %q", err, tc.err)
			}
		})
	}
}

func TestServeMetricsStopsOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveMetrics(ctx, ln, reg) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "go_goroutines") {
		t.Errorf("/metrics holds no Go collector samples:\n%.300s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveMetrics = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serveMetrics still serving 5s after cancel")
	}
}

// The trust settings reach the activities that enforce them.
func TestBuildActivitiesWiresTrustSettings(t *testing.T) {
	tests := map[string]struct {
		edit func(c *config.Config)
		want [2]any // inventory.AllowInlineSpecs, image.ImageDir
	}{
		"defaults refuse": {edit: func(*config.Config) {}, want: [2]any{false, ""}},
		"allowed":         {edit: func(c *config.Config) { c.AllowInlineSpecs, c.ImageDir = true, "/" }, want: [2]any{true, "/"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := config.Config{PXEURL: "http://127.0.0.1:8080", PXEToken: "t", BMCConcurrency: 1, ImageSegmentMiB: 64}
			tc.edit(&cfg)
			acts, err := buildActivities(cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, [2]any{acts.inventory.AllowInlineSpecs, acts.image.ImageDir}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
