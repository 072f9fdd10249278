package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/testsuite/tlsfrontend"
)

func write(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateListsEveryErrorWithFileAndLine(t *testing.T) {
	p := write(t, "service.yaml", `service: shop
hosts:
  - host: db01
    backend: 10.0.3.1:5432
  - host: db01
    backend: 10.0.3.1:5432
vms:
  - vm: web01
    network: secnet
    cidrs: [10.52.0.0/33]
    guest: {address: "10.50.0.10:22", credential: ssh/guests, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
    cloudstack: {url: "https://cloud/client/api", credential: cloudstack/rf}
`)
	var out, errOut bytes.Buffer
	code := run([]string{"validate", "-f", p}, &out, &errOut)
	if code != ExitFailed {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitFailed, errOut.String())
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(errOut.String()), "\n") {
		got = append(got, strings.SplitN(strings.TrimPrefix(l, p+":"), ":", 3)[0]+":"+strings.TrimSpace(strings.SplitN(strings.TrimPrefix(l, p+":"), ":", 3)[1]))
	}
	want := []string{"5:hosts[1].host", "6:hosts[1].backend", "10:vms[0].cidrs[0]"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("errors (-want +got):\n%s\nfull:\n%s", d, errOut.String())
	}
}

func TestValidateAcceptsTheExample(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "-f", "../../../examples/service.yaml"}, &out, &errOut); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "service shop") {
		t.Errorf("output: %s", out.String())
	}
}

// A bad input file is reported with its lines before anything dials: the
// address points at nothing.
func TestInputFileErrorsNeedNoServer(t *testing.T) {
	p := write(t, "vip.yaml", "name: web\nvip: 203.0.113.50\nport: 0\nprotocol: TCP\nbackends:\n  - {ip: 10.0.0.300, port: 80}\nnetscaler: {url: \"http://ns\", credential: netscaler/lab}\n")
	var out, errOut bytes.Buffer
	if code := run([]string{"--address", "127.0.0.1:1", "publish", "-f", p}, &out, &errOut); code != ExitFailed {
		t.Fatalf("exit %d, want %d; stderr: %s", code, ExitFailed, errOut.String())
	}
	for _, want := range []string{p + ":3: port:", p + ":6: backends[0].ip:"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr %q: want %q", errOut.String(), want)
		}
	}
	p = write(t, "typo.yaml", "name: web\nvipp: 203.0.113.50\n")
	errOut.Reset()
	if code := run([]string{"--address", "127.0.0.1:1", "vmnet", "-f", p}, &out, &errOut); code != ExitFailed ||
		!strings.Contains(errOut.String(), p+":1: field name not found") {
		t.Errorf("unknown field: exit %d, stderr %q", code, errOut.String())
	}
	if strings.Contains(errOut.String(), "connect to Temporal") {
		t.Errorf("a bad input file dialled Temporal: %s", errOut.String())
	}
}

// Usage errors are reported before any connection: the address points at
// nothing, so a command that dialled first would fail with exit 1 instead.
func TestUsageErrorsNeedNoServer(t *testing.T) {
	for _, args := range [][]string{{}, {"provision"}, {"provision", "Not_A_Host"}, {"retry", "node07"},
		{"abort", "node07", "--reason"}, {"status"}, {"history"}, {"deploy"}, {"publish"}, {"validate"}, {"frobnicate"}} {
		var out, errOut bytes.Buffer
		full := append([]string{"--address", "127.0.0.1:1"}, args...)
		if code := run(full, &out, &errOut); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (usage); stderr: %s", args, code, ExitUsage, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"--address", "127.0.0.1:1", "status", "node07"}, &out, &errOut); code != ExitFailed ||
		!strings.Contains(errOut.String(), "connect to Temporal at 127.0.0.1:1") {
		t.Errorf("unreachable server: exit %d, stderr %q", code, errOut.String())
	}
}

// run is what the starter's main does: parse, then run.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := Parse(args, stderr)
	if err != nil {
		return ExitUsage
	}
	return Run(context.Background(), cfg, stdout, stderr)
}

// TestConnectsWithMTLSAndAPIKey: the starter reaches a secured frontend as
// the worker does — the frontend sees the expected server name, the
// starter's client certificate and its API key (read from a file, never a
// flag).
func TestConnectsWithMTLSAndAPIKey(t *testing.T) {
	dir := t.TempDir()
	f := tlsfrontend.Start(t, dir, "temporal.internal")
	keyFile := filepath.Join(dir, "api-key")
	if err := os.WriteFile(keyFile, []byte("starter-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"--address", f.Addr, "--tls-cert", f.ClientCert, "--tls-key", f.ClientKey, "--tls-ca", f.CA,
		"--tls-server-name", "temporal.internal", "--api-key-file", keyFile, "status", "node07"}, &out, &errOut)
	if code != ExitFailed {
		t.Fatalf("exit %d against a frontend that answers Unavailable; stderr %s", code, errOut.String())
	}
	got := f.Next(t)
	want := tlsfrontend.Call{ServerName: "temporal.internal", ClientCN: "rackflow-client", Authorization: "Bearer starter-key"}
	if got != want {
		t.Fatalf("frontend saw %+v, want %+v", got, want)
	}
	if code := run([]string{"--tls-cert", f.ClientCert, "status", "node07"}, &out, &errOut); code != ExitUsage {
		t.Errorf("--tls-cert without --tls-key: exit %d, want usage", code)
	}
}
