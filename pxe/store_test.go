package pxe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/lease"
	"golang.org/x/crypto/ssh"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	hw, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

func TestStoreSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "leases.json")
	s1, err := OpenStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := s1.Put(ctx, liveLease(t, macA, "10.0.0.7", "b1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := s1.Put(ctx, liveLease(t, "52:54:00:00:00:02", "10.0.0.8", "b1"))
	if err != nil {
		t.Fatal(err)
	}
	// b's key is fetched before the restart, a's is not.
	if _, _, err := s1.TakeHostKey(ctx, s1.hostKeyToken(b.MAC), netip.MustParseAddr("10.0.0.8")); err != nil {
		t.Fatal(err)
	}
	// Who fetched it is part of the lease, and survives the restart too.
	if b, _, err = s1.Get(ctx, mustMAC(t, b.MAC)); err != nil || b.HostKeyFetchedFrom != "10.0.0.8" {
		t.Fatalf("after the fetch: fetched from %q, %v", b.HostKeyFetchedFrom, err)
	}
	tokenA, tokenB := s1.hostKeyToken(a.MAC), s1.hostKeyToken(b.MAC)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", st.Mode().Perm())
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := OpenStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]lease.Lease{b, a}, got); diff != "" {
		t.Errorf("leases after restart (-before +after):\n%s", diff)
	}
	pemA, mac, err := s2.TakeHostKey(ctx, tokenA, netip.MustParseAddr("10.0.0.7"))
	if err != nil || mac != a.MAC {
		t.Fatalf("unfetched key after restart: mac %q, err %v", mac, err)
	}
	signer, err := ssh.ParsePrivateKey(pemA)
	if err != nil {
		t.Fatal(err)
	}
	if pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))); pub != a.HostKey {
		t.Errorf("key after restart does not match host_key")
	}
	if _, _, err := s2.TakeHostKey(ctx, tokenB, netip.MustParseAddr("10.0.0.8")); !errors.Is(err, ErrHostKeyGone) {
		t.Errorf("key fetched before restart: err %v, want ErrHostKeyGone", err)
	}
	// Fetched keys are wiped from disk, not only from memory.
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "PRIVATE KEY-----"); n != 0 {
		t.Errorf("state file still holds %d private key markers after both keys were fetched", n/2)
	}
}

func TestStoreLoadsLastGoodStateAfterCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	s1, err := OpenStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := s1.Put(ctx, liveLease(t, macA, "10.0.0.7", "b1"))
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()
	// A crash mid-write leaves a half-written temporary file beside the
	// state file; the state file itself is untouched.
	leftover := filepath.Join(dir, ".leases.json.tmp-123456")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"leases":[{"lease":{"mac":"52:54:00:00:00:09","ip":"10.0.`), 0o600); err != nil {
		t.Fatal(err)
	}

	s2, err := OpenStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatalf("open after crash: %v", err)
	}
	defer s2.Close()
	got, _ := s2.List(ctx)
	if diff := cmp.Diff([]lease.Lease{want}, got); diff != "" {
		t.Errorf("state after crash (-last good +loaded):\n%s", diff)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temp file not removed: %v", err)
	}
}

func TestStoreFileIsNeverTruncated(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "leases.json")
	s, err := OpenStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Put(ctx, liveLease(t, macA, "10.0.0.7", "b0")); err != nil {
		t.Fatal(err)
	}
	// A reader racing the writer must always see a whole, parsable file.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads int
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(path)
			if err == nil {
				var st stateFile
				err = json.Unmarshal(data, &st)
				if err == nil && len(st.Records) == 0 {
					err = errors.New("no leases")
				}
			}
			if err != nil && bad == nil {
				bad = err
			}
			reads++
		}
	}()
	for i := range 50 {
		l := liveLease(t, macA, "10.0.0.7", fmt.Sprintf("b%d", i))
		if _, _, err := s.Put(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Errorf("a concurrent reader saw a broken state file after %d reads: %v", reads, bad)
	}
}

func TestStoreRefusesCorruptFileAndSecondOpener(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"leases":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(StoreConfig{Path: path}); err == nil {
		t.Error("corrupt state file opened as if empty")
	}
	os.Remove(path)
	s, err := OpenStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenStore(StoreConfig{Path: path}); !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v, want ErrLocked", err)
	}
}

func TestExpiredLeasesAreNotServedAndPruned(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "leases.json")
	store, err := OpenStore(StoreConfig{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ts := startServer(t, store, nil)

	l := liveLease(t, macA, "10.0.0.7", "b1")
	l.ExpiresAt = clock.Now().Add(time.Hour)
	if r := do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, l); r.Status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	if _, ok, _ := store.Get(ctx, mustMAC(t, macA)); !ok {
		t.Fatal("lease not served before expiry")
	}
	token := store.hostKeyToken(macA)
	clock.Advance(time.Hour)

	if _, ok, _ := store.Get(ctx, mustMAC(t, macA)); ok {
		t.Error("Get serves an expired lease")
	}
	for path, want := range map[string]int{
		"/v1/leases/" + macA:                 http.StatusNotFound,
		"/boot/" + macA + ".ipxe":            http.StatusNotFound,
		"/v1/hostkeys/" + token:              http.StatusNotFound,
		"/boot/" + macA + "/authorized_keys": http.StatusNotFound,
	} {
		if r := do(t, "GET", ts.URL+path, testToken, nil); r.Status != want {
			t.Errorf("GET %s after expiry: %d, want %d", path, r.Status, want)
		}
	}
	// Another MAC may now take the address.
	other := liveLease(t, "52:54:00:00:00:02", "10.0.0.7", "b1")
	if r := do(t, "PUT", ts.URL+"/v1/leases/52:54:00:00:00:02", testToken, other); r.Status != http.StatusCreated {
		t.Errorf("PUT of the expired lease's IP: %d %s, want 201", r.Status, r.Body)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), macA) {
		t.Errorf("expired lease still in the state file:\n%s", data)
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "leases.json")
	store, err := OpenStore(StoreConfig{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l := liveLease(t, macA, "10.0.0.7", "b1")
	l.ExpiresAt = clock.Now().Add(time.Minute)
	if _, _, err := store.Put(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Put(ctx, liveLease(t, "52:54:00:00:00:02", "10.0.0.8", "b1")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	n, err := store.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1, nil", n, err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), macA) || !strings.Contains(string(data), "52:54:00:00:00:02") {
		t.Errorf("state file after prune:\n%s", data)
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		lease lease.Lease
		want  []string
	}{
		"good": {
			lease: lease.Lease{MAC: "52:54:00:12:34:56", IP: "10.0.0.7", Netmask: "255.255.255.0", Profile: lease.ProfileDisk},
		},
		"empty": {
			want: []string{"mac", "ip", "netmask", "profile"},
		},
		"all bad": {
			lease: lease.Lease{MAC: "52:54:00:12:34:56:78:9a", IP: "10.0.0.7/24", Netmask: "24", Gateway: "::1",
				DNS: []string{"x"}, Hostname: "-x", Profile: "LIVE", BootID: strings.Repeat("x", 129),
				ExpiresAt: now, SSHAuthorizedKeys: []string{"ssh-rsa"}},
			want: []string{"mac", "ip", "netmask", "gateway", "dns[0]", "hostname", "profile", "expires_at", "boot_id", "ssh_authorized_keys[0]"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []string
			var fe api.FieldErrors
			if err := tc.lease.Validate(now); errors.As(err, &fe) {
				for _, e := range fe {
					got = append(got, e.Field)
				}
			} else if err != nil {
				t.Fatalf("Validate returned %T, want api.FieldErrors", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("bad fields (-want +got):\n%s", diff)
			}
		})
	}
}
