package pxe

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rackflow/rackflow/pxe/dhcp"
	"github.com/rackflow/rackflow/pxe/lease"
)

// getterFunc lets a table case stand in for the store.
type getterFunc func(context.Context, net.HardwareAddr) (lease.Lease, bool, error)

func (f getterFunc) Get(ctx context.Context, mac net.HardwareAddr) (lease.Lease, bool, error) {
	return f(ctx, mac)
}

func TestDHCPBackendConvertsLeases(t *testing.T) {
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	errDisk := errors.New("disk on fire")
	tests := map[string]struct {
		lease     lease.Lease
		found     bool
		getErr    error
		want      dhcp.Lease
		wantFound bool
		wantErr   error
	}{
		"full live lease": {
			lease: lease.Lease{MAC: "52:54:00:12:34:56", IP: "10.0.0.7", Netmask: "255.255.255.0", Gateway: "10.0.0.1",
				DNS: []string{"10.0.0.53", "10.0.1.53"}, Hostname: "node7", Profile: lease.ProfileLive, ExpiresAt: expires,
				BootID: "b1", HostKey: "ssh-ed25519 AAAA"},
			found: true,
			want: dhcp.Lease{IP: net.IPv4(10, 0, 0, 7).To4(), Netmask: net.IPv4(255, 255, 255, 0).To4(),
				Gateway: net.IPv4(10, 0, 0, 1).To4(), DNS: []net.IP{net.IPv4(10, 0, 0, 53).To4(), net.IPv4(10, 0, 1, 53).To4()},
				Hostname: "node7", Profile: "live", Expires: expires},
			wantFound: true,
		},
		"no gateway, no dns, never expires": {
			lease:     lease.Lease{MAC: "52:54:00:12:34:56", IP: "192.168.5.9", Netmask: "255.255.0.0", Profile: lease.ProfileDisk},
			found:     true,
			want:      dhcp.Lease{IP: net.IPv4(192, 168, 5, 9).To4(), Netmask: net.IPv4(255, 255, 0, 0).To4(), Profile: "disk"},
			wantFound: true,
		},
		"profile none is passed on for the server to ignore": {
			lease:     lease.Lease{MAC: "52:54:00:12:34:56", IP: "10.0.0.7", Netmask: "255.255.255.0", Profile: lease.ProfileNone},
			found:     true,
			want:      dhcp.Lease{IP: net.IPv4(10, 0, 0, 7).To4(), Netmask: net.IPv4(255, 255, 255, 0).To4(), Profile: dhcp.ProfileNone},
			wantFound: true,
		},
		"ipv6 resolver is left out of option 6": {
			lease: lease.Lease{MAC: "52:54:00:12:34:56", IP: "10.0.0.7", Netmask: "255.255.255.0", Profile: lease.ProfileLive,
				DNS: []string{"2001:db8::53", "10.0.0.53"}},
			found: true,
			want: dhcp.Lease{IP: net.IPv4(10, 0, 0, 7).To4(), Netmask: net.IPv4(255, 255, 255, 0).To4(),
				DNS: []net.IP{net.IPv4(10, 0, 0, 53).To4()}, Profile: "live"},
			wantFound: true,
		},
		"unknown mac": {found: false},
		"store error": {getErr: errDisk, wantErr: errDisk},
		"corrupt ip":  {lease: lease.Lease{IP: "10.0.0", Netmask: "255.255.255.0", Profile: lease.ProfileLive}, found: true, wantErr: ErrBadLease},
		"corrupt gateway": {
			lease: lease.Lease{IP: "10.0.0.7", Netmask: "255.255.255.0", Gateway: "gw", Profile: lease.ProfileLive}, found: true, wantErr: ErrBadLease,
		},
		"ipv6 lease address": {lease: lease.Lease{IP: "2001:db8::7", Netmask: "255.255.255.0"}, found: true, wantErr: ErrBadLease},
	}
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := DHCPBackend{Leases: getterFunc(func(_ context.Context, got net.HardwareAddr) (lease.Lease, bool, error) {
				if got.String() != mac.String() {
					t.Errorf("Get(%s), want Get(%s)", got, mac)
				}
				return tc.lease, tc.found, tc.getErr
			})}
			got, found, err := b.Lookup(context.Background(), mac)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want one wrapping %v", err, tc.wantErr)
				}
				if found {
					t.Error("found=true with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if found != tc.wantFound {
				t.Errorf("found %v, want %v", found, tc.wantFound)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("dhcp lease (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDHCPBackendReadsTheStore goes through a real Store: what the worker
// PUTs is what DHCP hands out, and a deleted lease is gone at once.
func TestDHCPBackendReadsTheStore(t *testing.T) {
	store, err := OpenStore(StoreConfig{Path: filepath.Join(t.TempDir(), "leases.json")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	if _, _, err := store.Put(ctx, lease.Lease{MAC: "52-54-00-AA-BB-CC", IP: "10.1.2.3", Netmask: "255.255.255.0",
		Gateway: "10.1.2.1", Hostname: "web1", Profile: lease.ProfileLive}); err != nil {
		t.Fatal(err)
	}
	b := DHCPBackend{Leases: store}
	mac, _ := net.ParseMAC("52:54:00:aa:bb:cc")
	got, found, err := b.Lookup(ctx, mac)
	if err != nil || !found {
		t.Fatalf("Lookup: found=%v err=%v", found, err)
	}
	want := dhcp.Lease{IP: net.IPv4(10, 1, 2, 3).To4(), Netmask: net.IPv4(255, 255, 255, 0).To4(),
		Gateway: net.IPv4(10, 1, 2, 1).To4(), Hostname: "web1", Profile: "live"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dhcp lease (-want +got):\n%s", diff)
	}
	if err := store.Delete(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if _, found, err := b.Lookup(ctx, mac); found || err != nil {
		t.Errorf("after delete: found=%v err=%v, want not found", found, err)
	}
	if _, found, err := (DHCPBackend{}).Lookup(ctx, mac); found || err != nil {
		t.Errorf("zero DHCPBackend: found=%v err=%v, want not found", found, err)
	}
}
