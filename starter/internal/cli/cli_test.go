package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/api"
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
    guest: {address: "10.50.0.10:22", credential: ssh/guests, host_key: "ssh-ed25519 AAAA"}
    cloudstack: {url: "https://cloud/client/api", credential: cloudstack/rf}
`)
	var out, errOut bytes.Buffer
	code := run([]string{"validate", "-f", p}, &out, &errOut)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitFailed, errOut.String())
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
	if code := run([]string{"validate", "-f", "../examples/service.yaml"}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "service shop") {
		t.Errorf("output: %s", out.String())
	}
}

func TestPublishInputFileErrors(t *testing.T) {
	p := write(t, "vip.yaml", "name: web\nvip: 203.0.113.50\nport: 0\nprotocol: TCP\nbackends:\n  - {ip: 10.0.0.300, port: 80}\nnetscaler: {url: \"http://ns\", credential: netscaler/lab}\n")
	var in api.PublishInput
	err := loadInput(p, &in)
	var se api.SpecErrors
	if err == nil || !asSpecErrors(err, &se) || len(se) != 2 || se[0].Line != 3 || se[1].Line != 6 {
		t.Fatalf("err = %v", err)
	}
	p = write(t, "typo.yaml", "name: web\nvipp: 203.0.113.50\n")
	if err := loadInput(p, &in); err == nil || !strings.Contains(err.Error(), "vipp") {
		t.Errorf("unknown field: err = %v", err)
	}
}

func asSpecErrors(err error, se *api.SpecErrors) bool {
	v, ok := err.(api.SpecErrors)
	*se = v
	return ok
}

// Usage errors are reported before any connection: the address points at
// nothing, so a command that dialled first would fail with exit 1 instead.
func TestUsageErrorsNeedNoServer(t *testing.T) {
	for _, args := range [][]string{{}, {"provision"}, {"provision", "Not_A_Host"}, {"retry", "node07"},
		{"abort", "node07", "--reason"}, {"status"}, {"history"}, {"deploy"}, {"publish"}, {"validate"}, {"frobnicate"}} {
		var out, errOut bytes.Buffer
		full := append([]string{"--address", "127.0.0.1:1"}, args...)
		if code := run(full, &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage); stderr: %s", args, code, exitUsage, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"--address", "127.0.0.1:1", "status", "node07"}, &out, &errOut); code != exitFailed ||
		!strings.Contains(errOut.String(), "connect to Temporal at 127.0.0.1:1") {
		t.Errorf("unreachable server: exit %d, stderr %q", code, errOut.String())
	}
}
