package pxe

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/dhcp"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/pxe/tftp"
)

// DefaultTimelineMACs bounds how many MACs a Timeline keeps when
// Timeline.MaxMACs is zero.
const DefaultTimelineMACs = 4096

// Timeline records, per MAC, what the boot network's servers answered it:
// DHCP offers and acks, TFTP reads, iPXE script, file, host key and
// authorized_keys fetches. It is bounded (api.MaxBootEvents per MAC,
// MaxMACs MACs, the longest-quiet MAC forgotten first), kept in memory
// only (a restart of rackflow-pxe starts it empty), and only MACs with a
// lease are recorded, so a flood of strangers cannot fill it. A new
// boot ID on a MAC's lease starts its record afresh.
//
// It is the answer to "where did the boot stop?", not an audit log: the
// lease's Refusals and the request log are that.
type Timeline struct {
	// Leases maps requests to MACs (TFTP and /files/ requests carry only
	// an address). Required.
	Leases *Store
	// MaxMACs; DefaultTimelineMACs when zero.
	MaxMACs int
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu   sync.Mutex
	macs map[string]*macTimeline
}

type macTimeline struct {
	bootID  string
	events  []api.BootEvent
	dropped int
	last    time.Time
}

func (t *Timeline) now() time.Time {
	if t.Now != nil {
		return t.Now().UTC()
	}
	return time.Now().UTC()
}

// Record adds e to mac's timeline (e.At is set when zero). A MAC without
// a lease is not recorded.
func (t *Timeline) Record(mac string, e api.BootEvent) {
	if t == nil || mac == "" {
		return
	}
	l, found, err := t.Leases.Lookup(context.Background(), mac)
	if err != nil || !found {
		return
	}
	if e.At.IsZero() {
		e.At = t.now()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.macs == nil {
		t.macs = map[string]*macTimeline{}
	}
	m := t.macs[l.MAC]
	if m == nil || m.bootID != l.BootID {
		if m == nil {
			t.evictLocked()
		}
		m = &macTimeline{bootID: l.BootID}
		t.macs[l.MAC] = m
	}
	m.events = append(m.events, e)
	if over := len(m.events) - api.MaxBootEvents; over > 0 {
		m.events = append(m.events[:0:0], m.events[over:]...)
		m.dropped += over
	}
	m.last = e.At
}

// evictLocked forgets the longest-quiet MAC when the timeline is full.
func (t *Timeline) evictLocked() {
	limit := t.MaxMACs
	if limit <= 0 {
		limit = DefaultTimelineMACs
	}
	for len(t.macs) >= limit {
		var oldest string
		var at time.Time
		for mac, m := range t.macs {
			if oldest == "" || m.last.Before(at) {
				oldest, at = mac, m.last
			}
		}
		delete(t.macs, oldest)
	}
}

// Get returns mac's timeline for its lease's current boot ID: empty when
// nothing was seen since the boot ID changed.
func (t *Timeline) Get(l lease.Lease) api.BootTimeline {
	out := api.BootTimeline{MAC: l.MAC, BootID: l.BootID, Events: []api.BootEvent{}, At: t.now()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if m := t.macs[l.MAC]; m != nil && m.bootID == l.BootID {
		out.Events = slices.Clone(m.events)
		out.Dropped = m.dropped
	}
	return out
}

// RecordByIP adds e to the timeline of the MAC whose lease holds ip.
func (t *Timeline) RecordByIP(ip net.IP, e api.BootEvent) {
	if t == nil || ip == nil {
		return
	}
	if mac := t.Leases.macByIP(ip.String()); mac != "" {
		t.Record(mac, e)
	}
}

// OnDHCPAnswer is a dhcp.Server.OnAnswer hook.
func (t *Timeline) OnDHCPAnswer(a dhcp.Answer) {
	kind := map[string]string{"offer": api.BootDHCPOffer, "ack": api.BootDHCPAck, "nak": api.BootDHCPNak}[a.Type]
	if kind == "" {
		return
	}
	from := ""
	if a.IP != nil {
		from = a.IP.String()
	}
	t.Record(a.MAC.String(), api.BootEvent{Kind: kind, File: a.BootFile, From: from})
}

// OnTFTPTransfer is a tftp.Server.OnTransfer hook.
func (t *Timeline) OnTFTPTransfer(x tftp.Transfer) {
	status := "ok"
	if x.Err != nil {
		status = x.Err.Error()
	}
	t.RecordByIP(x.Remote, api.BootEvent{Kind: api.BootTFTP, File: x.Filename, Bytes: x.Bytes, From: x.Remote.String(), Status: status})
}
