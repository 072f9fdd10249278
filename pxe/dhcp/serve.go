package dhcp

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/net/ipv4"
)

// Serve answers DHCP on ListenAddr (and ProxyListenAddr in proxy mode) until
// ctx is cancelled, then closes its sockets, waits for replies in flight and
// returns ctx.Err(). A config or socket error is returned at once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.init(); err != nil {
		return err
	}
	if s.ServerIP.To4() == nil || s.ServerIP.IsUnspecified() {
		return fmt.Errorf("%w: ServerIP %q is not an IPv4 address", ErrConfig, s.ServerIP.String())
	}
	type sock struct {
		conn      net.PacketConn
		proxyPort bool
	}
	var socks []sock
	closeAll := func() {
		for _, k := range socks {
			_ = k.conn.Close()
		}
	}

	conn := s.Conn
	if conn == nil {
		c, err := s.listen(s.ListenAddr, "0.0.0.0:67")
		if err != nil {
			return err
		}
		conn = c
	}
	socks = append(socks, sock{conn: conn})
	if s.ProxyDHCP {
		pc := s.ProxyConn
		if pc == nil {
			c, err := s.listen(s.ProxyListenAddr, "0.0.0.0:4011")
			if err != nil {
				closeAll()
				return err
			}
			pc = c
		}
		socks = append(socks, sock{conn: pc, proxyPort: true})
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(socks))
	for _, k := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- s.serveConn(ctx, k.conn, k.proxyPort)
		}()
	}
	s.log.Info("dhcp: serving", "addr", conn.LocalAddr().String(), "interface", s.Interface,
		"server_ip", s.ServerIP.String(), "proxy", s.ProxyDHCP)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	closeAll()
	wg.Wait()
	if perr := parent.Err(); perr != nil {
		return perr
	}
	return err
}

func (s *Server) listen(addr, def string) (net.PacketConn, error) {
	if addr == "" {
		addr = def
	}
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %w", ErrConfig, addr, err)
	}
	c, err := server4.NewIPv4UDPConn(s.Interface, ua)
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s (interface %q): %w", addr, s.Interface, err)
	}
	growReadBuffer(c, readBuffer)
	return c, nil
}

// readBuffer is the receive buffer asked for the sockets Serve opens: room
// for a few thousand requests, so a rack powering on at once waits there
// instead of being dropped (the kernel's default, about 200 KiB, holds some
// 150 and made a storm of 200 hosts retransmit).
const readBuffer = 4 << 20

// serveConn reads requests from conn and answers them, each in its own
// goroutine, at most Workers at once (reading pauses while all are busy);
// it returns when conn fails or closes.
func (s *Server) serveConn(ctx context.Context, conn net.PacketConn, proxyPort bool) error {
	// With IP_PKTINFO the reply to a broadcast leaves by the interface the
	// request came in on, even on an unbound socket.
	var pc *ipv4.PacketConn
	if uc, ok := conn.(*net.UDPConn); ok {
		pc = ipv4.NewPacketConn(uc)
		if err := pc.SetControlMessage(ipv4.FlagInterface, true); err != nil {
			pc = nil
		}
	}
	workers := s.Workers
	if workers <= 0 {
		workers = 64
	}
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, 4096)
	for {
		var (
			n     int
			peer  net.Addr
			ifidx int
			err   error
		)
		if pc != nil {
			var cm *ipv4.ControlMessage
			n, cm, peer, err = pc.ReadFrom(buf)
			if cm != nil {
				ifidx = cm.IfIndex
			}
		} else {
			n, peer, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		upeer, _ := peer.(*net.UDPAddr)
		// With every worker busy, wait for one instead of dropping a
		// packet already read: a burst (a rack powering on at once) then
		// queues in the socket's receive buffer and is answered a moment
		// later rather than after the clients' 1-4 s retransmission. A
		// flood stays bounded: the kernel drops what the buffer cannot hold.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		pkt := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			reply := s.handleBytes(ctx, pkt, proxyPort)
			if reply == nil {
				return
			}
			dst := replyDestination(reply, upeer)
			var werr error
			if pc != nil {
				var cm *ipv4.ControlMessage
				if ifidx != 0 {
					cm = &ipv4.ControlMessage{IfIndex: ifidx}
				}
				_, werr = pc.WriteTo(reply.ToBytes(), cm, dst)
			} else {
				_, werr = conn.WriteTo(reply.ToBytes(), dst)
			}
			if werr != nil && ctx.Err() == nil {
				s.log.Warn("dhcp: send reply", "mac", reply.ClientHWAddr.String(), "dst", dst.String(), "error", werr)
			}
		}()
	}
}

// replyDestination is where a reply goes (RFC 2131 4.1): to the relay
// (giaddr, port 67) if there is one; else to the address the request came
// from if the client has one (renewing, rebinding, INFORM, ProxyDHCPREQUEST);
// else broadcast, since an unconfigured client cannot be reached by unicast
// without writing its ARP entry by hand.
func replyDestination(reply *dhcpv4.DHCPv4, peer *net.UDPAddr) *net.UDPAddr {
	if gi := reply.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if peer != nil && peer.IP != nil && !peer.IP.IsUnspecified() && peer.Port != 0 {
		return peer
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}
