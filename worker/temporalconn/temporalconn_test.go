package temporalconn

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/rackflow/rackflow/testsuite/tlsfrontend"
)

func TestOptionsSpeakMTLSWithAPIKey(t *testing.T) {
	dir := t.TempDir()
	f := tlsfrontend.Start(t, dir, "temporal.internal")
	keyFile := filepath.Join(dir, "api-key")
	if err := os.WriteFile(keyFile, []byte("k3y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := Settings{Address: f.Addr, Namespace: "infra", TLSCert: f.ClientCert, TLSKey: f.ClientKey, TLSCA: f.CA,
		TLSServerName: "temporal.internal", APIKeyFile: keyFile}
	if err := s.Load(func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	o, err := s.Options()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c, err := client.DialContext(ctx, o); err == nil {
		c.Close()
	}
	got := f.Next(t)
	want := tlsfrontend.Call{ServerName: "temporal.internal", ClientCN: "rackflow-client", Authorization: "Bearer k3y"}
	if got != want {
		t.Fatalf("frontend saw %+v, want %+v", got, want)
	}
}

func TestLoadChecks(t *testing.T) {
	if err := (&Settings{TLSCert: "c.pem"}).Load(func(string) string { return "" }); err == nil {
		t.Error("tls-cert without tls-key accepted")
	}
	empty := filepath.Join(t.TempDir(), "k")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if err := (&Settings{APIKeyFile: empty}).Load(func(string) string { return "" }); err == nil {
		t.Error("an empty API key file accepted")
	}
	s := Settings{}
	if err := s.Load(func(k string) string { return map[string]string{"TEMPORAL_API_KEY": "env-key"}[k] }); err != nil || s.APIKey != "env-key" {
		t.Errorf("TEMPORAL_API_KEY: %q, %v", s.APIKey, err)
	}
	// An API key alone still means TLS: it is never sent in the clear.
	o, err := s.Options()
	if err != nil || o.ConnectionOptions.TLS == nil {
		t.Errorf("API key without TLS settings: TLS %v, %v", o.ConnectionOptions.TLS, err)
	}
}
