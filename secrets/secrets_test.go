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
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %+v, %v", ref, got.Username, err)
		}
	}
	if _, err := f.Resolve(ctx, "bmc/missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: err = %v, want ErrNotFound", err)
	}

	// Rotation: a rewritten file is picked up without a new File.
	time.Sleep(10 * time.Millisecond)
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
