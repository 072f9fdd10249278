package dhcp

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// startLoopback runs s on a 127.0.0.1 socket and returns a client socket
// whose requests reach it. Replies go back to the client's unicast source
// address, so nothing is ever broadcast.
func startLoopback(t *testing.T, s *Server) (client *net.UDPConn, server net.Addr, done <-chan error) {
	t.Helper()
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s.Conn = sc
	cc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return within 5s of cancel")
		}
	})
	return cc, sc.LocalAddr(), errc
}

func exchange(t *testing.T, c *net.UDPConn, to net.Addr, req []byte, wait time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := c.WriteTo(req, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		t.Fatal(err)
	}
	r, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return r
}

func TestServeLoopback(t *testing.T) {
	b := newBackend()
	s := newTestServer(b, nil)
	s.now = time.Now
	c, addr, _ := startLoopback(t, s)

	// Garbage first: the server must keep serving.
	for _, junk := range [][]byte{nil, {0}, make([]byte, 300), []byte("GET / HTTP/1.0\r\n\r\n")} {
		if _, err := c.WriteTo(junk, addr); err != nil {
			t.Fatal(err)
		}
	}

	offer := exchange(t, c, addr, discover(macLive, pxeBIOS()).ToBytes(), 2*time.Second)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.ParseIP("10.99.0.11")) {
		t.Fatalf("DISCOVER: got %v, want OFFER of 10.99.0.11", offer)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, pxeBIOS())
	if err != nil {
		t.Fatal(err)
	}
	ack := exchange(t, c, addr, req.ToBytes(), 2*time.Second)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "undionly.kpxe" {
		t.Fatalf("REQUEST: got %v, want ACK with undionly.kpxe", ack)
	}

	if r := exchange(t, c, addr, discover(macUnknown).ToBytes(), 300*time.Millisecond); r != nil {
		t.Fatalf("unregistered MAC got %s", r.MessageType())
	}

	// Once the lease is gone, a renewal gets no answer.
	b.remove(macLive)
	renew, err := dhcpv4.NewRenewFromAck(ack)
	if err != nil {
		t.Fatal(err)
	}
	if r := exchange(t, c, addr, renew.ToBytes(), 300*time.Millisecond); r != nil {
		t.Fatalf("renewal of a removed lease got %s", r.MessageType())
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(newBackend(), nil)
	s.now = time.Now
	s.Conn = sc
	cc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	// Cancel a server that is serving: one that has answered.
	if offer := exchange(t, cc, sc.LocalAddr(), discover(macLive, pxeBIOS()).ToBytes(), 5*time.Second); offer == nil {
		t.Fatal("no OFFER: the server never served")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after cancel")
	}
	if _, err := sc.WriteTo([]byte{1}, sc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("socket still open after Serve returned (write error %v)", err)
	}
}

func TestServeConfigErrors(t *testing.T) {
	tests := map[string]*Server{
		"no server IP":       {},
		"IPv6 server IP":     {ServerIP: net.ParseIP("2001:db8::1")},
		"bad listen address": {ServerIP: serverIP, ListenAddr: "not an address"},
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			err := s.Serve(context.Background())
			if !errors.Is(err, ErrConfig) {
				t.Errorf("Serve = %v, want an error wrapping ErrConfig", err)
			}
		})
	}
}

func TestServeProxyLoopback(t *testing.T) {
	s := newTestServer(newBackend(), nil)
	s.now = time.Now
	s.ProxyDHCP = true
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s.ProxyConn = pc
	c, addr, _ := startLoopback(t, s)

	offer := exchange(t, c, addr, discover(macLive, pxeArch(iana.EFI_X86_64, "PXEClient")).ToBytes(), 2*time.Second)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "ipxe.efi" {
		t.Fatalf("proxy DISCOVER on 67: got %v, want OFFER of no address with ipxe.efi", offer)
	}
	if r := exchange(t, c, addr, discover(macLive).ToBytes(), 300*time.Millisecond); r != nil {
		t.Fatalf("proxy answered a client that is not network-booting: %s", r.Summary())
	}
	// iPXE, once it has an address from the other server, asks us on 4011.
	req := request(macLive, pxeArch(iana.EFI_X86_64, "PXEClient"), ipxeUserClass(), dhcpv4.WithClientIP(net.ParseIP("10.50.0.9")))
	ack := exchange(t, c, pc.LocalAddr(), req.ToBytes(), 2*time.Second)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileNameOption() != scriptURL {
		t.Fatalf("ProxyDHCPREQUEST on 4011: got %v, want ACK with the script URL", ack)
	}
}
