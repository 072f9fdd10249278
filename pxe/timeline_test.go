package pxe

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/lease"
)

// TestTimelineBounded: a boot loop cannot grow a MAC's timeline past
// api.MaxBootEvents (the newest kept, the rest counted), MACs past MaxMACs
// push out the longest-quiet one, and a MAC without a lease is never
// recorded, so strangers on the boot network cannot fill it.
func TestTimelineBounded(t *testing.T) {
	ctx := context.Background()
	store, err := OpenStore(StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(i int) lease.Lease {
		l, _, err := store.Put(ctx, lease.Lease{MAC: fmt.Sprintf("52:54:00:00:00:%02x", i), IP: fmt.Sprintf("10.0.0.%d", i+10),
			Netmask: "255.255.255.0", Profile: lease.ProfileDisk, BootID: "b1"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	clock := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	tl := &Timeline{Leases: store, MaxMACs: 2, Now: func() time.Time { clock = clock.Add(time.Second); return clock }}
	a := put(1)
	for i := range api.MaxBootEvents + 10 {
		tl.Record(a.MAC, api.BootEvent{Kind: api.BootFile, File: fmt.Sprint("f", i)})
	}
	got := tl.Get(a)
	if len(got.Events) != api.MaxBootEvents || got.Dropped != 10 || got.Events[0].File != "f10" {
		t.Errorf("after %d events: %d kept (first %q), %d dropped; want %d kept from f10, 10 dropped",
			api.MaxBootEvents+10, len(got.Events), got.Events[0].File, got.Dropped, api.MaxBootEvents)
	}
	tl.Record("52:54:00:ff:ff:ff", api.BootEvent{Kind: api.BootDHCPOffer})
	if n := len(tl.macs); n != 1 {
		t.Errorf("a MAC without a lease was recorded: %d MACs", n)
	}
	b, c := put(2), put(3)
	tl.Record(b.MAC, api.BootEvent{Kind: api.BootDHCPOffer})
	tl.Record(c.MAC, api.BootEvent{Kind: api.BootDHCPOffer})
	if len(tl.macs) != 2 || len(tl.Get(a).Events) != 0 || len(tl.Get(c).Events) != 1 {
		t.Errorf("with MaxMACs 2 a third MAC must push out the quietest (a): have %d MACs, a has %d events", len(tl.macs), len(tl.Get(a).Events))
	}
}
