package api

import (
	"fmt"
	"strings"
	"time"
)

// Kinds of BootEvent, in the order a PXE boot runs through them.
const (
	BootDHCPOffer      = "dhcp-offer"
	BootDHCPAck        = "dhcp-ack"
	BootDHCPNak        = "dhcp-nak"
	BootTFTP           = "tftp"            // a TFTP read (iPXE binary)
	BootScript         = "ipxe-script"     // GET /boot/{mac}.ipxe
	BootFile           = "http-file"       // GET /files/... (kernel, initrd)
	BootHostKey        = "host-key"        // the one-time host key
	BootAuthorizedKeys = "authorized-keys" // the live system's authorized_keys
)

// BootEvent is one thing rackflow-pxe answered for a booting MAC.
type BootEvent struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"`
	// File is the TFTP file name, the HTTP route's file, or the DHCP
	// answer's boot file.
	File  string `json:"file,omitempty"`
	Bytes int64  `json:"bytes,omitempty"`
	// From is the client's address (the offered one, for DHCP).
	From string `json:"from,omitempty"`
	// Status is the HTTP status, "ok" or the TFTP error, empty for DHCP.
	Status string `json:"status,omitempty"`
}

// OK reports whether the event is a request that was served.
func (e BootEvent) OK() bool {
	return e.Status == "" || e.Status == "ok" || e.Status == "200" || e.Status == "206"
}

// BootTimeline is what rackflow-pxe saw of one MAC's boots since its
// lease last got a new boot ID, oldest first; at most MaxBootEvents, the
// oldest dropped first and counted.
type BootTimeline struct {
	MAC     string      `json:"mac"`
	BootID  string      `json:"boot_id,omitempty"`
	Events  []BootEvent `json:"events"`
	Dropped int         `json:"dropped,omitempty"`
	// At is when the timeline was read.
	At time.Time `json:"at"`
	// Console is the end of the host's serial console log, as a console
	// logger on the worker's host keeps it (conserver, `ipmitool sol
	// activate` into a file, a lab's QEMU): at most MaxConsoleLines
	// lines, escape sequences and control characters removed, the live
	// system's one-time host key URL redacted. Empty when the worker has
	// no console log for the host (no --console-dir).
	Console []string `json:"console,omitempty"`
	// ConsoleAt is when the console log was last written.
	ConsoleAt time.Time `json:"console_at,omitzero"`
}

// MaxConsoleLines and MaxConsoleLineBytes bound the console's end in a
// timeline, which goes into the run's history.
const (
	MaxConsoleLines     = 20
	MaxConsoleLineBytes = 240
)

// MaxBootEvents bounds a MAC's timeline: a PXE boot takes about ten
// events, a boot loop fills it with the latest ones.
const MaxBootEvents = 64

// Summary tells in one line how far the boot got and since when nothing
// more happened, as of t.At: "DHCP answered 10:02:11, ipxe script fetched
// 10:02:13, vmlinuz fetched 10:02:40 (8123456 bytes); nothing since
// 10:02:40 (4m0s): no initrd.img fetch".
//
// With a console log, the last line the host printed follows, with when it
// was written: "; console 10:02:55: Kernel panic - not syncing: ...".
func (t BootTimeline) Summary() string {
	out := t.events()
	if c := t.ConsoleSummary(); c != "" {
		out += "; " + c
	}
	return out
}

// ConsoleSummary is the console's last line with when it was written,
// "console 10:02:55: Kernel panic - not syncing: ...", or "" without a
// console log.
func (t BootTimeline) ConsoleSummary() string {
	n := len(t.Console)
	if n == 0 {
		return ""
	}
	out := "console"
	if !t.ConsoleAt.IsZero() {
		out += " " + t.ConsoleAt.UTC().Format("15:04:05")
	}
	return out + ": " + t.Console[n-1]
}

// events is Summary without the console.
func (t BootTimeline) events() string {
	if len(t.Events) == 0 {
		return "rackflow-pxe saw nothing of " + t.MAC + " since its lease was registered: no DHCP request reached it (powered on? PXE enabled on that NIC? on the boot network?)"
	}
	hm := func(at time.Time) string { return at.UTC().Format("15:04:05") }
	var parts []string
	idx := map[string]int{}
	for _, e := range t.Events {
		var s string
		switch e.Kind {
		case BootDHCPOffer:
			s = "DHCP offered " + e.From
		case BootDHCPAck:
			s = "DHCP answered " + e.From
			if e.File != "" {
				s += " (boot file " + e.File + ")"
			}
		case BootDHCPNak:
			s = "DHCP refused " + e.From
		case BootTFTP, BootFile, BootScript:
			name := e.File
			if e.Kind == BootScript {
				name = "ipxe script"
			}
			if e.OK() {
				s = fmt.Sprintf("%s fetched (%d bytes", name, e.Bytes)
			} else {
				s = fmt.Sprintf("%s refused (%s", name, e.Status)
			}
			if e.Kind == BootTFTP {
				s += ", tftp"
			}
			s += ")"
		case BootHostKey:
			s = "host key fetched"
			if !e.OK() {
				s = "host key refused (" + e.Status + ")"
			}
		case BootAuthorizedKeys:
			s = "authorized_keys fetched"
		default:
			s = e.Kind
		}
		s += " " + hm(e.At)
		// A boot loop repeats itself: say each thing once, with its latest
		// time, in the order first seen.
		key := e.Kind + "\x00" + e.File + "\x00" + e.Status
		if i, ok := idx[key]; ok {
			parts[i] = s
			continue
		}
		idx[key] = len(parts)
		parts = append(parts, s)
	}
	last := t.Events[len(t.Events)-1]
	out := strings.Join(parts, ", ")
	if !t.At.IsZero() && t.At.After(last.At) {
		out += fmt.Sprintf("; nothing since %s (%s)", hm(last.At), t.At.Sub(last.At).Round(time.Second))
		if next := nextExpected(t.Events); next != "" {
			out += ": " + next
		}
	}
	if t.Dropped > 0 {
		out += fmt.Sprintf(" [%d older events dropped]", t.Dropped)
	}
	return out
}

// nextExpected names what a live boot would do next after the events.
func nextExpected(ev []BootEvent) string {
	has := func(kind string) bool {
		for _, e := range ev {
			if e.Kind == kind && e.OK() {
				return true
			}
		}
		return false
	}
	files := 0
	for _, e := range ev {
		if e.Kind == BootFile && e.OK() {
			files++
		}
	}
	switch {
	case !has(BootDHCPAck):
		return "no DHCP ack"
	case !has(BootScript):
		return "no ipxe script fetch"
	case files == 0:
		return "no kernel fetch"
	case files == 1:
		return "no initrd fetch"
	case !has(BootHostKey):
		return "no host-key fetch (the live system did not come up, or has no network)"
	case !has(BootAuthorizedKeys):
		return "no authorized_keys fetch"
	}
	return ""
}
