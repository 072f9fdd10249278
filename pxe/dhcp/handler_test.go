package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	serverIP = net.IPv4(10, 99, 0, 1).To4()
	testNow  = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

	macLive    = mustMAC("52:54:00:00:00:01")
	macDisk    = mustMAC("52:54:00:00:00:02")
	macNone    = mustMAC("52:54:00:00:00:03")
	macExpired = mustMAC("52:54:00:00:00:04")
	macSoon    = mustMAC("52:54:00:00:00:05")
	macBroken  = mustMAC("52:54:00:00:00:06")
	macUnknown = mustMAC("52:54:00:00:00:99")
	macErr     = mustMAC("52:54:00:00:00:ee")

	guid = append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// fakeBackend is a lease map; MACs in errs make Lookup fail.
type fakeBackend struct {
	mu     sync.Mutex
	leases map[string]Lease
	errs   map[string]error
}

func (f *fakeBackend) Lookup(_ context.Context, mac net.HardwareAddr) (Lease, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[mac.String()]; err != nil {
		return Lease{}, false, err
	}
	l, ok := f.leases[mac.String()]
	return l, ok, nil
}

func (f *fakeBackend) remove(mac net.HardwareAddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.leases, mac.String())
}

func lease(ip, profile string) Lease {
	return Lease{
		IP:       net.ParseIP(ip),
		Netmask:  net.IPv4(255, 255, 255, 0),
		Gateway:  net.ParseIP("10.99.0.254"),
		DNS:      []net.IP{net.ParseIP("10.99.0.53"), net.ParseIP("10.99.0.54")},
		Hostname: "node-" + strings.ReplaceAll(ip, ".", "-"),
		Profile:  profile,
	}
}

func newBackend() *fakeBackend {
	soon := lease("10.99.0.15", "live")
	soon.Expires = testNow.Add(10*time.Minute + 500*time.Millisecond)
	expired := lease("10.99.0.14", "live")
	expired.Expires = testNow
	broken := lease("10.99.0.16", "live")
	broken.Netmask = nil
	return &fakeBackend{
		leases: map[string]Lease{
			macLive.String():    lease("10.99.0.11", "live"),
			macDisk.String():    lease("10.99.0.12", "disk"),
			macNone.String():    lease("10.99.0.13", "none"),
			macExpired.String(): expired,
			macSoon.String():    soon,
			macBroken.String():  broken,
		},
		errs: map[string]error{macErr.String(): errors.New("store unavailable")},
	}
}

func newTestServer(b Backend, log *slog.Logger) *Server {
	s := &Server{
		ServerIP:      serverIP,
		Relays:        []net.IP{net.ParseIP("10.98.0.1")},
		Backend:       b,
		LeaseTime:     time.Hour,
		BootFiles:     BootFiles{HTTP: "http://10.99.0.1:8080/files/ipxe.efi"},
		IPXEScriptURL: "http://10.99.0.1:8080/boot/{mac}.ipxe",
		Logger:        log,
		now:           func() time.Time { return testNow },
	}
	if err := s.init(); err != nil {
		panic(err)
	}
	return s
}

// Request builders. Each returns a fresh packet.

func discover(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	p, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		panic(err)
	}
	return p
}

func request(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	p, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
	}, mods...)...)
	if err != nil {
		panic(err)
	}
	return p
}

func withType(mt dhcpv4.MessageType) dhcpv4.Modifier { return dhcpv4.WithMessageType(mt) }

func pxeBIOS() dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))
		d.UpdateOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1}))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
}

func pxeArch(a iana.Arch, class string) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("%s:Arch:%05d:UNDI:003016", class, a)))
		d.UpdateOption(dhcpv4.OptClientArch(a))
	}
}

func ipxeUserClass() dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) { d.UpdateOption(dhcpv4.OptUserClass("iPXE")) }
}

func ipxeEncap() dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptGeneric(optionIPXEEncap, []byte{0x10, 1, 1}))
	}
}

func opt(code uint8, value []byte) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(code), value)
}

// view is the part of a reply a client acts on, in readable form.
type view struct {
	Type      string
	YIAddr    string
	SIAddr    string
	File      string
	Broadcast bool
	Options   map[uint8]string
}

func viewOf(r *dhcpv4.DHCPv4) *view {
	if r == nil {
		return nil
	}
	v := &view{
		Type:      r.MessageType().String(),
		YIAddr:    r.YourIPAddr.String(),
		SIAddr:    r.ServerIPAddr.String(),
		File:      r.BootFileName,
		Broadcast: r.IsBroadcast(),
		Options:   map[uint8]string{},
	}
	for code, val := range r.Options {
		switch code {
		case 53:
			continue // in Type
		case 1, 3, 6, 54:
			var ips []string
			for i := 0; i+4 <= len(val); i += 4 {
				ips = append(ips, net.IP(val[i:i+4]).String())
			}
			v.Options[code] = strings.Join(ips, ",")
		case 51, 58, 59:
			v.Options[code] = fmt.Sprint(binary.BigEndian.Uint32(val))
		case 12, 56, 60, 66, 67:
			v.Options[code] = string(val)
		default:
			v.Options[code] = hex.EncodeToString(val)
		}
	}
	return v
}

// addressOpts are the options of an OFFER/ACK for lease(ip) with a 1h lease.
func addressOpts(ip string, extra map[uint8]string) map[uint8]string {
	m := map[uint8]string{
		1:  "255.255.255.0",
		3:  "10.99.0.254",
		6:  "10.99.0.53,10.99.0.54",
		12: "node-" + strings.ReplaceAll(ip, ".", "-"),
		51: "3600",
		54: "10.99.0.1",
		58: "1800",
		59: "3150",
	}
	for k, v := range extra {
		if v == "" {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

const (
	opt43Skip = "060108ff"
	guidHex   = "00abababababababababababababababab"
	scriptURL = "http://10.99.0.1:8080/boot/52:54:00:00:00:01.ipxe"
)

func TestHandle(t *testing.T) {
	tests := map[string]struct {
		req       *dhcpv4.DHCPv4
		proxy     bool
		proxyPort bool
		want      *view
	}{
		"BIOS PXE discover gets undionly.kpxe by TFTP": {
			req: discover(macLive, pxeBIOS(), dhcpv4.WithBroadcast(true)),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: "undionly.kpxe", Broadcast: true,
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "PXEClient", 43: opt43Skip, 66: "10.99.0.1", 67: "undionly.kpxe", 97: guidHex})},
		},
		"UEFI x86-64 (arch 7) PXE discover gets ipxe.efi": {
			req: discover(macLive, pxeArch(iana.EFI_X86_64, "PXEClient")),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: "ipxe.efi",
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "PXEClient", 43: opt43Skip, 66: "10.99.0.1", 67: "ipxe.efi"})},
		},
		"UEFI x86-64 (arch 9) PXE request gets ACK with ipxe.efi": {
			req: request(macLive, pxeArch(iana.EFI_BC, "PXEClient"),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.11"))),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP))),
			want: &view{Type: "ACK", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: "ipxe.efi",
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "PXEClient", 43: opt43Skip, 66: "10.99.0.1", 67: "ipxe.efi"})},
		},
		"UEFI HTTP boot gets the http URL of ipxe.efi": {
			req: discover(macLive, pxeArch(iana.EFI_X86_64_HTTP, "HTTPClient")),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: "http://10.99.0.1:8080/files/ipxe.efi",
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "HTTPClient", 67: "http://10.99.0.1:8080/files/ipxe.efi"})},
		},
		"ARM64 UEFI without a configured binary gets an address only": {
			req: discover(macLive, pxeArch(iana.EFI_ARM64, "PXEClient")),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1",
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "PXEClient", 43: opt43Skip})},
		},
		"iPXE (user class) gets its script URL": {
			req: discover(macLive, pxeBIOS(), ipxeUserClass()),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: scriptURL,
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "PXEClient", 43: opt43Skip, 67: scriptURL, 97: guidHex})},
		},
		"iPXE (RFC 3004 user class, no vendor class) gets its script URL": {
			req: request(macLive, dhcpv4.WithUserClass("iPXE", true),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.11")))),
			want: &view{Type: "ACK", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: scriptURL,
				Options: addressOpts("10.99.0.11", map[uint8]string{67: scriptURL})},
		},
		"iPXE (option 175) gets its script URL": {
			req: discover(macLive, pxeArch(iana.EFI_X86_64, "PXEClient"), ipxeEncap()),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1", File: scriptURL,
				Options: addressOpts("10.99.0.11", map[uint8]string{60: "PXEClient", 43: opt43Skip, 67: scriptURL})},
		},
		"plain DHCP client gets an address and no boot program": {
			req: discover(macLive),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1",
				Options: addressOpts("10.99.0.11", nil)},
		},
		"profile disk still gets address and boot chain": {
			req: discover(macDisk, pxeBIOS()),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.12", SIAddr: "10.99.0.1", File: "undionly.kpxe",
				Options: addressOpts("10.99.0.12", map[uint8]string{60: "PXEClient", 43: opt43Skip, 66: "10.99.0.1", 67: "undionly.kpxe", 97: guidHex})},
		},
		"lease time stops at the lease's expiry": {
			req: discover(macSoon),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.15", SIAddr: "10.99.0.1",
				Options: addressOpts("10.99.0.15", map[uint8]string{51: "600", 58: "300", 59: "525"})},
		},
		"renewing client (ciaddr) gets ACK": {
			req: request(macLive, dhcpv4.WithClientIP(net.ParseIP("10.99.0.11")), dhcpv4.WithBroadcast(false)),
			want: &view{Type: "ACK", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1",
				Options: addressOpts("10.99.0.11", nil)},
		},
		"INFORM gets options without address or lease time": {
			req: request(macLive, withType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.ParseIP("10.99.0.11"))),
			want: &view{Type: "ACK", YIAddr: "0.0.0.0", SIAddr: "10.99.0.1",
				Options: addressOpts("10.99.0.11", map[uint8]string{51: "", 58: "", 59: ""})},
		},
		"request for another address gets NAK": {
			req: request(macLive, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.77"))),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP))),
			want: &view{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0",
				Options: map[uint8]string{54: "10.99.0.1", 56: "requested address is not this client's reservation"}},
		},
		"INIT-REBOOT with a stale address gets NAK": {
			req: request(macLive, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.0.2.7")))),
			want: &view{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0",
				Options: map[uint8]string{54: "10.99.0.1", 56: "requested address is not this client's reservation"}},
		},
		"relayed NAK asks the relay to broadcast": {
			req: request(macLive, dhcpv4.WithClientIP(net.ParseIP("192.0.2.7")), dhcpv4.WithGatewayIP(net.ParseIP("10.98.0.1")), dhcpv4.WithBroadcast(false)),
			want: &view{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0", Broadcast: true,
				Options: map[uint8]string{54: "10.99.0.1", 56: "requested address is not this client's reservation"}},
		},
		"request without any address gets NAK": {
			req: request(macLive),
			want: &view{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0",
				Options: map[uint8]string{54: "10.99.0.1", 56: "requested address is not this client's reservation"}},
		},
		"client id (option 61) is echoed": {
			req: discover(macLive, opt(61, []byte{1, 0x52, 0x54, 0, 0, 0, 1})),
			want: &view{Type: "OFFER", YIAddr: "10.99.0.11", SIAddr: "10.99.0.1",
				Options: addressOpts("10.99.0.11", map[uint8]string{61: "01525400000001"})},
		},
		"request to another server is ignored": {
			req: request(macLive, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.11"))),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.2")))),
		},
		"unregistered MAC is ignored":       {req: discover(macUnknown, pxeBIOS())},
		"unregistered MAC request ignored":  {req: request(macUnknown, dhcpv4.WithClientIP(net.ParseIP("10.99.0.11")))},
		"expired lease is ignored":          {req: discover(macExpired, pxeBIOS())},
		"profile none is ignored":           {req: discover(macNone, pxeBIOS())},
		"lease without netmask is ignored":  {req: discover(macBroken)},
		"backend error is ignored":          {req: discover(macErr)},
		"release gets no reply":             {req: request(macLive, withType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.ParseIP("10.99.0.11")))},
		"decline gets no reply":             {req: request(macLive, withType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.11"))))},
		"BOOTREPLY from another server":     {req: discover(macLive, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply })},
		"non-Ethernet hardware is ignored":  {req: discover(macLive, dhcpv4.WithHWType(iana.HWTypeIEEE802))},
		"BOOTP without message type":        {req: discover(macLive, dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType))},
		"server-side message type (OFFER)":  {req: discover(macLive, withType(dhcpv4.MessageTypeOffer))},
		"proxy: plain client is left alone": {req: discover(macLive), proxy: true},
		"proxy: BIOS PXE discover gets boot info only": {
			req: discover(macLive, pxeBIOS()), proxy: true,
			want: &view{Type: "OFFER", YIAddr: "0.0.0.0", SIAddr: "10.99.0.1", File: "undionly.kpxe",
				Options: map[uint8]string{54: "10.99.0.1", 60: "PXEClient", 43: opt43Skip, 66: "10.99.0.1", 67: "undionly.kpxe", 97: guidHex}},
		},
		"proxy: UEFI HTTP boot gets the URL": {
			req: discover(macLive, pxeArch(iana.EFI_X86_64_HTTP, "HTTPClient")), proxy: true,
			want: &view{Type: "OFFER", YIAddr: "0.0.0.0", SIAddr: "10.99.0.1", File: "http://10.99.0.1:8080/files/ipxe.efi",
				Options: map[uint8]string{54: "10.99.0.1", 60: "HTTPClient", 67: "http://10.99.0.1:8080/files/ipxe.efi"}},
		},
		"proxy: iPXE ProxyDHCPREQUEST on 4011 gets ACK with script": {
			req:   request(macLive, pxeArch(iana.EFI_X86_64, "PXEClient"), ipxeUserClass(), dhcpv4.WithClientIP(net.ParseIP("10.50.0.9")), dhcpv4.WithBroadcast(false)),
			proxy: true, proxyPort: true,
			want: &view{Type: "ACK", YIAddr: "0.0.0.0", SIAddr: "10.99.0.1", File: scriptURL,
				Options: map[uint8]string{54: "10.99.0.1", 60: "PXEClient", 43: opt43Skip, 67: scriptURL}},
		},
		"proxy: REQUEST on 67 for the address server is left alone": {
			req: request(macLive, pxeBIOS(), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.2"))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.50")))),
			proxy: true,
		},
		"proxy: unregistered PXE client is ignored": {req: discover(macUnknown, pxeBIOS()), proxy: true},
		"proxy: profile none is ignored":            {req: discover(macNone, pxeBIOS()), proxy: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(newBackend(), nil)
			s.ProxyDHCP = tc.proxy
			got := s.handle(context.Background(), tc.req, tc.proxyPort)
			if diff := cmp.Diff(tc.want, viewOf(got)); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if got == nil {
				return
			}
			if got.TransactionID != tc.req.TransactionID || !bytes.Equal(got.ClientHWAddr, tc.req.ClientHWAddr) || got.OpCode != dhcpv4.OpcodeBootReply {
				t.Errorf("reply header xid=%s chaddr=%s op=%s; want the request's xid=%s chaddr=%s and BootReply",
					got.TransactionID, got.ClientHWAddr, got.OpCode, tc.req.TransactionID, tc.req.ClientHWAddr)
			}
			// What goes on the wire must parse back to the same reply.
			back, err := dhcpv4.FromBytes(got.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse back: %v", err)
			}
			if diff := cmp.Diff(viewOf(got), viewOf(back)); diff != "" {
				t.Errorf("reply changed on the wire (-built +parsed):\n%s", diff)
			}
		})
	}
}

func TestBootFileTooLongForLegacyField(t *testing.T) {
	s := newTestServer(newBackend(), nil)
	s.IPXEScriptURL = "http://10.99.0.1:8080/" + strings.Repeat("x", 120) + "/{mac}.ipxe"
	got := s.handle(context.Background(), discover(macLive, ipxeUserClass()), false)
	want := strings.ReplaceAll(s.IPXEScriptURL, "{mac}", macLive.String())
	if got.BootFileNameOption() != want {
		t.Errorf("option 67 = %q, want %q", got.BootFileNameOption(), want)
	}
	if got.BootFileName != "" {
		t.Errorf("file field = %q, want empty (a truncated URL would be a wrong one)", got.BootFileName)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := &Server{ServerIP: serverIP, Backend: newBackend(), Registerer: reg}
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.handle(ctx, discover(macLive), false)
	s.handle(ctx, request(macLive, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.11")))), false)
	s.handle(ctx, request(macLive, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.12")))), false)
	s.handle(ctx, discover(macUnknown), false)
	s.handle(ctx, discover(macUnknown), false)
	s.handleBytes(ctx, []byte{1, 2, 3}, false)

	want := `
# HELP rackflow_pxe_dhcp_ignored_total DHCP packets not answered, by reason: malformed, unregistered, expired, profile_none, backend_error, other_server, not_pxe, unknown_relay, unsupported.
# TYPE rackflow_pxe_dhcp_ignored_total counter
rackflow_pxe_dhcp_ignored_total{reason="malformed"} 1
rackflow_pxe_dhcp_ignored_total{reason="unregistered"} 2
# HELP rackflow_pxe_dhcp_replies_total DHCP replies sent, by message type: offer, ack, nak.
# TYPE rackflow_pxe_dhcp_replies_total counter
rackflow_pxe_dhcp_replies_total{type="ack"} 1
rackflow_pxe_dhcp_replies_total{type="nak"} 1
rackflow_pxe_dhcp_replies_total{type="offer"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	// A second server on the same registry counts into the same series.
	s2 := &Server{ServerIP: serverIP, Backend: newBackend(), Registerer: reg}
	if err := s2.init(); err != nil {
		t.Fatalf("second server on one registry: %v", err)
	}
	s2.handle(ctx, discover(macLive), false)
	if got := testutil.ToFloat64(s.metrics.replies.WithLabelValues("offer")); got != 2 {
		t.Errorf("offers after second server = %v, want 2", got)
	}
}

func TestMetricsZeroValueSafe(t *testing.T) {
	s := &Server{ServerIP: serverIP} // no backend, registry, logger
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	if r := s.handle(context.Background(), discover(macLive, pxeBIOS()), false); r != nil {
		t.Errorf("server without backend answered: %s", r.Summary())
	}
}

func TestIgnoredClientsLoggedOncePerInterval(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	s := newTestServer(newBackend(), log)
	now := testNow
	s.now = func() time.Time { return now }
	ctx := context.Background()

	for range 5 {
		s.handle(ctx, discover(macUnknown, pxeBIOS()), false)
	}
	s.handle(ctx, discover(macNone), false)
	if got := strings.Count(buf.String(), "mac="+macUnknown.String()); got != 1 {
		t.Errorf("unregistered MAC logged %d times for 5 packets in one minute, want 1:\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "reason=profile_none") {
		t.Errorf("profile none not logged:\n%s", buf.String())
	}

	now = now.Add(61 * time.Second)
	s.handle(ctx, discover(macUnknown), false)
	if got := strings.Count(buf.String(), "mac="+macUnknown.String()); got != 2 {
		t.Errorf("unregistered MAC logged %d times after the interval, want 2:\n%s", got, buf.String())
	}
}

func TestLimiterBounded(t *testing.T) {
	l := newLimiter(time.Minute, 3)
	for i, key := range []string{"a", "b", "c"} {
		if !l.allow(key, testNow) {
			t.Fatalf("key %d refused before the limiter is full", i)
		}
	}
	if l.allow("d", testNow) {
		t.Error("a new key was allowed while the limiter is full of recent keys")
	}
	if !l.allow("d", testNow.Add(time.Minute)) {
		t.Error("a new key was refused after the old ones aged out")
	}
	if len(l.last) > 3 {
		t.Errorf("limiter holds %d keys, max 3", len(l.last))
	}
}

// TestRelayAllowList: a client that puts an address of its choosing in
// giaddr must not get our reply (and its lease) sent there; a configured
// relay is still answered, through the relay.
func TestRelayAllowList(t *testing.T) {
	relay := net.ParseIP("10.98.0.1")
	tests := map[string]struct {
		relays []net.IP
		giaddr string
		answer bool
	}{
		"no giaddr, no relays":         {giaddr: "", answer: true},
		"forged giaddr, no relays":     {giaddr: "198.51.100.7", answer: false},
		"forged giaddr, other relay":   {relays: []net.IP{relay}, giaddr: "198.51.100.7", answer: false},
		"configured relay is answered": {relays: []net.IP{relay}, giaddr: "10.98.0.1", answer: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(newBackend(), nil)
			s.Relays = tc.relays
			var mods []dhcpv4.Modifier
			if tc.giaddr != "" {
				mods = append(mods, dhcpv4.WithGatewayIP(net.ParseIP(tc.giaddr)))
			}
			reply := s.handle(context.Background(), discover(macLive, mods...), false)
			if got := reply != nil; got != tc.answer {
				t.Fatalf("answered = %v, want %v", got, tc.answer)
			}
			if reply != nil && tc.giaddr != "" {
				if dst := replyDestination(reply, nil); !dst.IP.Equal(relay) {
					t.Errorf("reply goes to %v, want the relay %v", dst, relay)
				}
			}
			if !tc.answer {
				if got := testutil.ToFloat64(s.metrics.ignored.WithLabelValues(reasonUnknownRelay)); got != 1 {
					t.Errorf("ignored{unknown_relay} = %v, want 1", got)
				}
			}
		})
	}
}
