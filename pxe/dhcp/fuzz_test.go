package dhcp

import (
	"context"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandle feeds arbitrary datagrams through parse and handle. Besides not
// panicking, a reply must be well-formed and must never give a client an
// address other than its own lease. Seeds: f.Add below and testdata/fuzz.
//
//	go test -run '^$' -fuzz FuzzHandle -fuzztime 60s ./pxe/dhcp
func FuzzHandle(f *testing.F) {
	seeds := []*dhcpv4.DHCPv4{
		discover(macLive, pxeBIOS()),
		discover(macLive, pxeArch(iana.EFI_X86_64_HTTP, "HTTPClient")),
		discover(macLive, pxeArch(iana.EFI_BC, "PXEClient"), ipxeUserClass()),
		discover(macSoon, ipxeEncap()),
		request(macLive, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.11")))),
		request(macLive, dhcpv4.WithClientIP(net.ParseIP("10.99.0.99")), dhcpv4.WithGatewayIP(net.ParseIP("10.98.0.1"))),
		request(macDisk, withType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.ParseIP("10.99.0.12"))),
		request(macLive, withType(dhcpv4.MessageTypeDecline)),
		discover(macNone, pxeBIOS()),
		discover(macErr),
	}
	for i, p := range seeds {
		f.Add(p.ToBytes(), i%2 == 0)
	}
	f.Add([]byte{}, false)
	f.Add([]byte{1, 1, 6, 0}, true)

	backend := newBackend()
	full := newTestServer(backend, nil)
	proxy := newTestServer(backend, nil)
	proxy.ProxyDHCP = true
	ctx := context.Background()

	f.Fuzz(func(t *testing.T, data []byte, proxyMode bool) {
		s := full
		if proxyMode {
			s = proxy
		}
		for _, port := range []bool{false, true} {
			reply := s.handleBytes(ctx, data, port)
			if reply == nil {
				continue
			}
			req, err := dhcpv4.FromBytes(data)
			if err != nil {
				t.Fatalf("reply to a packet that does not parse: %v", err)
			}
			wire := reply.ToBytes()
			back, err := dhcpv4.FromBytes(wire)
			if err != nil {
				t.Fatalf("reply does not parse back: %v", err)
			}
			if back.OpCode != dhcpv4.OpcodeBootReply || back.TransactionID != req.TransactionID {
				t.Fatalf("reply op=%s xid=%s, want BootReply and request xid %s", back.OpCode, back.TransactionID, req.TransactionID)
			}
			if yi := back.YourIPAddr; yi != nil && !yi.IsUnspecified() {
				l, ok := backend.leases[req.ClientHWAddr.String()]
				if !ok || !yi.Equal(l.IP) || proxyMode {
					t.Fatalf("reply gives %s to %s (lease %v, proxy %v)", yi, req.ClientHWAddr, l.IP, proxyMode)
				}
			}
			_ = replyDestination(reply, nil)
		}
	})
}
