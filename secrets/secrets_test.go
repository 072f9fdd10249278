package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileResolves(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "id_test"), []byte("KEY-MATERIAL"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "secrets.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`secrets:
  bmc/node07: {username: admin, password: hunter2}
  bmc/env: {username: admin, password_env: RF_TEST_BMC_PW}
  ssh/provision: {private_key_file: id_test}
`)
	t.Setenv("RF_TEST_BMC_PW", "from-env")
	f, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for ref, want := range map[string]Secret{
		"bmc/node07":    {Username: "admin", Password: "hunter2"},
		"bmc/env":       {Username: "admin", Password: "from-env"},
		"ssh/provision": {PrivateKey: "KEY-MATERIAL"},
	} {
		got, err := f.Resolve(ctx, ref)
		if err != nil || got.Username != want.Username || got.Password != want.Password || got.PrivateKey != want.PrivateKey {
			t.Errorf("Resolve(%q) = %+v, %v", ref, got.Username, err)
		}
	}
	if _, err := f.Resolve(ctx, "bmc/missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: err = %v, want ErrNotFound", err)
	}

	// Rotation: a rewritten file is picked up without a new File, even one
	// of the same size (the stamp also holds the modification time, moved
	// on explicitly so the test does not depend on the clock's resolution).
	write("secrets:\n  bmc/node07: {username: admin, password: rotated}\n")
	now := time.Now().Add(time.Second)
	_ = os.Chtimes(path, now, now)
	got, err := f.Resolve(ctx, "bmc/node07")
	if err != nil || got.Password != "rotated" {
		t.Errorf("after rotation: %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret{Username: "admin", Password: "hunter2", PrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----"}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s)
	outs := []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), buf.String()}
	for _, out := range outs {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("secret leaked: %s", out)
		}
	}
}

func TestMalformedFileDoesNotEcho(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.yaml")
	for _, content := range []string{
		"secrets:\n  a: {password: hunter2\n", // does not parse
		"secrets:\n  a: hunter2\n",            // parses, but yaml's error quotes the value
		"secrets:\n  a: {passwd: hunter2}\n",  // unknown field
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewFile(path)
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: err = %v: want an error naming the file that does not echo the content", content, err)
		}
	}
}

func TestAllows(t *testing.T) {
	bound := func(eps ...string) Secret { return Secret{Password: "pw", Endpoints: eps} }
	tests := map[string]struct {
		s    Secret
		use  Use
		want error
	}{
		"url matches":                    {bound("https://ns1.dmz.internal"), Use{"https://ns1.dmz.internal/nitro/v1/config", true}, nil},
		"url default port matches":       {bound("https://ns1.dmz.internal:443"), Use{"https://NS1.dmz.internal/nitro", true}, nil},
		"url path prefix":                {bound("https://cloud.internal/client/api"), Use{"https://cloud.internal/client/api", true}, nil},
		"url path outside prefix":        {bound("https://cloud.internal/client/api"), Use{"https://cloud.internal/client/apix", true}, ErrNotAllowed},
		"other host refused":             {bound("https://ns1.dmz.internal"), Use{"https://attacker.example/nitro", true}, ErrNotAllowed},
		"other port refused":             {bound("https://ns1.dmz.internal"), Use{"https://ns1.dmz.internal:8443/", true}, ErrNotAllowed},
		"scheme downgrade refused":       {bound("https://ns1.dmz.internal"), Use{"http://ns1.dmz.internal/", false}, ErrNotAllowed},
		"user info in dest refused":      {bound("https://ns1.dmz.internal"), Use{"https://x@ns1.dmz.internal/", true}, ErrNotAllowed},
		"cidr matches address":           {bound("10.20.0.0/24"), Use{"10.20.0.7:623", true}, nil},
		"cidr refuses address":           {bound("10.20.0.0/24"), Use{"10.20.1.7:623", true}, ErrNotAllowed},
		"cidr matches url host":          {bound("10.20.0.0/24"), Use{"https://10.20.0.7/redfish/v1", true}, nil},
		"host matches any port":          {bound("bmc7.internal"), Use{"bmc7.internal:623", true}, nil},
		"host:port needs the port":       {bound("bmc7.internal:623"), Use{"bmc7.internal:624", true}, ErrNotAllowed},
		"star allows all":                {bound("*"), Use{"https://anywhere.example", true}, nil},
		"disclosed secret must be bound": {Secret{Password: "pw"}, Use{"https://ns1.dmz.internal", true}, ErrUnbound},
		"ssh key need not be bound":      {Secret{PrivateKey: "k"}, Use{"10.30.0.17:22", false}, nil},
		"bound ssh key is enforced":      {Secret{PrivateKey: "k", Endpoints: []string{"10.30.0.0/24"}}, Use{"192.0.2.1:22", false}, ErrNotAllowed},
		"cleartext beyond loopback":      {bound("*"), Use{"http://ns1.dmz.internal/nitro", true}, ErrCleartext},
		"cleartext on loopback is fine":  {bound("http://127.0.0.1:9080"), Use{"http://127.0.0.1:9080/nitro/v1", true}, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.s.Allows(tc.use)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Allows(%+v) = %v, want %v", tc.use, err, tc.want)
			}
		})
	}
}

func TestResolveForRefusesARedirectedSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := os.WriteFile(path, []byte(`secrets:
  netscaler/dmz: {username: nsroot, password: hunter2, endpoints: ["https://ns1.dmz.internal"]}
  bmc/node07: {username: admin, password: pw7}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if s, err := ResolveFor(ctx, f, "netscaler/dmz", Use{Dest: "https://ns1.dmz.internal/nitro/v1", Discloses: true}); err != nil || s.Password != "hunter2" {
		t.Fatalf("own endpoint: %v", err)
	}
	// The attack: a workflow input that names the worker's credential and
	// an address of its own.
	_, err = ResolveFor(ctx, f, "netscaler/dmz", Use{Dest: "https://198.51.100.9/nitro/v1", Discloses: true})
	if !errors.Is(err, ErrNotAllowed) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("redirected: err = %v, want ErrNotAllowed without the value", err)
	}
	if _, err := ResolveFor(ctx, f, "bmc/node07", Use{Dest: "10.20.0.7:623", Discloses: true}); !errors.Is(err, ErrUnbound) {
		t.Fatalf("unbound password: err = %v, want ErrUnbound", err)
	}
}

func TestFileRefusesBadEndpointsAndLooseModes(t *testing.T) {
	tests := map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"bad cidr":         {"secrets:\n  a: {password: x, endpoints: [\"10.0.0.0/33\"]}\n", 0o600, "not a CIDR"},
		"wildcard name":    {"secrets:\n  a: {password: x, endpoints: [\"https://*.internal\"]}\n", 0o600, "wildcards"},
		"group readable":   {"secrets:\n  a: {password: x}\n", 0o640, "chmod 600"},
		"world readable":   {"secrets:\n  a: {password: x}\n", 0o604, "chmod 600"},
		"owner only is ok": {"secrets:\n  a: {password: x, endpoints: [\"*\"]}\n", 0o400, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secrets.yaml")
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := NewFile(path)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("NewFile: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("NewFile: err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
