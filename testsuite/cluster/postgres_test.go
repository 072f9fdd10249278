package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// tempDir is a directory the postgres user can enter (a test's TempDir is
// private to root).
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rackflow-pg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPostgresPrivateInstance starts an instance, stops it and starts it
// again from the same directory: same port, same password, loopback only,
// its socket inside its data directory.
func TestPostgresPrivateInstance(t *testing.T) {
	needCluster(t)
	dir := filepath.Join(tempDir(t), "pg")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := StartPostgres(ctx, PostgresOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	if c, err := net.DialTimeout("tcp", pg.Addr(), time.Second); err != nil {
		t.Fatalf("PostgreSQL at %s: %v", pg.Addr(), err)
	} else {
		c.Close()
	}
	if _, err := os.Stat(filepath.Join(pg.DataDir(), fmt.Sprintf(".s.PGSQL.%d", pg.Port()))); err != nil {
		t.Errorf("socket not in the data directory: %v", err)
	}
	port, pw := pg.Port(), pg.Password()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	again, err := StartPostgres(ctx, PostgresOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Stop() })
	if again.Port() != port || again.Password() != pw {
		t.Errorf("restarted on port %d (was %d), password changed: %v", again.Port(), port, again.Password() != pw)
	}
}
