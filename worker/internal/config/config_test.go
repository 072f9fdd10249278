package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/rackflow/rackflow/worker/temporalconn"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFlagsAndEnvironment(t *testing.T) {
	tests := map[string]struct {
		env  map[string]string
		args []string
		want func(c *Config)
		err  string
	}{
		"defaults": {want: func(c *Config) {}},
		"env": {
			env: map[string]string{"TEMPORAL_ADDRESS": "temporal.internal:7233", "TEMPORAL_NAMESPACE": "infra", "RACKFLOW_TASK_QUEUE": "rackflow-lab", "TEMPORAL_API_KEY": "k3y"},
			want: func(c *Config) {
				c.Address, c.Namespace, c.TaskQueue, c.APIKey = "temporal.internal:7233", "infra", "rackflow-lab", "k3y"
			},
		},
		"flags win over env": {
			env:  map[string]string{"TEMPORAL_ADDRESS": "from-env:7233"},
			args: []string{"--address", "from-flag:7233", "--stop-timeout", "2m", "--bmc-concurrency", "3"},
			want: func(c *Config) { c.Address, c.StopTimeout, c.BMCConcurrency = "from-flag:7233", 2*time.Minute, 3 },
		},
		"cert without key":    {args: []string{"--tls-cert", "/x.crt"}, err: "tls-cert and tls-key go together"},
		"bad concurrency":     {args: []string{"--bmc-concurrency", "0"}, err: "bmc-concurrency"},
		"bad stop timeout":    {args: []string{"--stop-timeout", "soon"}, err: "stop-timeout"},
		"bad segment size":    {args: []string{"--image-segment-mib", "-1"}, err: "image-segment-mib"},
		"missing key file":    {args: []string{"--api-key-file", "/nonexistent/key"}, err: "api key file"},
		"unknown flag":        {args: []string{"--adress", "x"}, err: "flag provided but not defined"},
		"report interval":     {args: []string{"--image-report-every", "2s"}, want: func(c *Config) { c.ImageReportEvery = 2 * time.Second }},
		"bad report interval": {args: []string{"--image-report-every", "often"}, err: "image-report-every"},
		"log level":           {env: map[string]string{"RACKFLOW_LOG_LEVEL": "debug"}, want: func(c *Config) { c.LogLevel = slog.LevelDebug }},
		"bad log level":       {args: []string{"--log-level", "chatty"}, err: "log-level"},
		"rate cap from env":   {env: map[string]string{"RACKFLOW_IMAGE_MAX_MBPS": "50"}, want: func(c *Config) { c.ImageMaxMBps = 50 }},
		"fleet settings": {
			env:  map[string]string{"RACKFLOW_MAX_CONCURRENT_ACTIVITIES": "400"},
			args: []string{"--activity-pollers", "8"},
			want: func(c *Config) { c.MaxConcurrentActivities, c.ActivityPollers = 400, 8 },
		},
		"bad fleet setting": {args: []string{"--workflow-pollers", "-2"}, err: "workflow-pollers"},
		"inline specs":      {args: []string{"--allow-inline-specs"}, want: func(c *Config) { c.AllowInlineSpecs = true }},
		"inline specs env":  {env: map[string]string{"RACKFLOW_ALLOW_INLINE_SPECS": "true"}, want: func(c *Config) { c.AllowInlineSpecs = true }},
		"inline specs off by flag": {
			env: map[string]string{"RACKFLOW_ALLOW_INLINE_SPECS": "1"}, args: []string{"--allow-inline-specs=false"}, want: func(c *Config) {},
		},
		"bad inline specs": {env: map[string]string{"RACKFLOW_ALLOW_INLINE_SPECS": "sometimes"}, err: "allow-inline-specs"},
		"pod":              {args: []string{"--pod", "rack-a"}, want: func(c *Config) { c.Pod = "rack-a" }},
		"pod from env":     {env: map[string]string{"RACKFLOW_POD": "rack-b"}, want: func(c *Config) { c.Pod = "rack-b" }},
		"bad pod":          {args: []string{"--pod", "Rack A"}, err: "pod: must be a DNS label"},
		"shared only":      {args: []string{"--shared-only"}, want: func(c *Config) { c.SharedOnly = true }},
		"pod and shared":   {args: []string{"--pod", "a", "--shared-only"}, err: "either a pod's or the shared one"},
		"image dir":        {env: map[string]string{"RACKFLOW_IMAGE_DIR": "/srv/images"}, want: func(c *Config) { c.ImageDir = "/srv/images" }},
		"console dir":      {args: []string{"--console-dir", "/var/log/conserver"}, want: func(c *Config) { c.ConsoleDir = "/var/log/conserver" }},
		"pxe over https with a CA from env": {
			env:  map[string]string{"RACKFLOW_PXE_CA": "/etc/rackflow/pxe-ca.pem"},
			args: []string{"--pxe-url", "https://pxe.mgmt:8443"},
			want: func(c *Config) { c.PXEURL, c.PXECA = "https://pxe.mgmt:8443", "/etc/rackflow/pxe-ca.pem" },
		},
		"pxe CA flag wins": {
			env:  map[string]string{"RACKFLOW_PXE_CA": "/env/ca.pem"},
			args: []string{"--pxe-ca", "/flag/ca.pem"},
			want: func(c *Config) { c.PXECA = "/flag/ca.pem" },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, k := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "RACKFLOW_TASK_QUEUE", "TEMPORAL_API_KEY", "RACKFLOW_IMAGE_MAX_MBPS", "RACKFLOW_PXE_TOKEN", "RACKFLOW_MAX_CONCURRENT_ACTIVITIES", "RACKFLOW_LOG_LEVEL", "RACKFLOW_ALLOW_INLINE_SPECS", "RACKFLOW_IMAGE_DIR", "RACKFLOW_PXE_CA"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := Parse(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Config{Settings: temporalconn.Settings{Address: "127.0.0.1:7233", Namespace: "default"}, TaskQueue: "rackflow", PXEURL: "http://127.0.0.1:8080",
				MetricsAddr: "127.0.0.1:9464", LogLevel: slog.LevelInfo, StopTimeout: 30 * time.Second, BMCConcurrency: 1, ImageSegmentMiB: 64, ImageReportEvery: 10 * time.Second}
			tc.want(&want)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("config (-want +got):\n%s", d)
			}
		})
	}
}

func TestClientOptionsTLSAndAPIKey(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := writeSelfSigned(t, dir)
	logger := slog.New(slog.DiscardHandler)

	c := Config{Settings: temporalconn.Settings{Address: "temporal.internal:7233", Namespace: "infra", TLSCert: certPath, TLSKey: keyPath, TLSCA: certPath, TLSServerName: "temporal.internal", APIKey: "k"}}
	o, err := c.ClientOptions(logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc := o.ConnectionOptions.TLS
	if tc == nil || len(tc.Certificates) != 1 || tc.RootCAs == nil || tc.ServerName != "temporal.internal" {
		t.Fatalf("TLS config = %+v", tc)
	}
	if o.Credentials == nil {
		t.Error("API key not turned into credentials")
	}

	plain, err := Config{Settings: temporalconn.Settings{Address: "127.0.0.1:7233"}}.ClientOptions(logger, nil)
	if err != nil || plain.ConnectionOptions.TLS != nil {
		t.Errorf("plain: TLS = %v, err = %v; want no TLS for a local dev server", plain.ConnectionOptions.TLS, err)
	}

	if err := os.WriteFile(filepath.Join(dir, "bad.pem"), []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Config{Settings: temporalconn.Settings{TLSCA: filepath.Join(dir, "bad.pem")}}.ClientOptions(logger, nil)
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("bad CA: err = %v", err)
	}
}

func writeSelfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rackflow-worker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
