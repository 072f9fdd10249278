// Package pxebench load-tests rackflow's PXE service in network-namespace
// labs: Storm plays many booting hosts doing full DHCP handshakes at once
// over one interface (a raw socket, each host with its own Ethernet source
// MAC, like PXE ROMs after a power outage), ParsePerfdhcp reads Kea's
// perfdhcp report, and Table formats the rackflow-versus-baseline table
// `make bench-pxe` prints.
//
// It is not a DHCP client for real use: it keeps no lease, never renews and
// configures no address. It needs root (AF_PACKET) and is meant to be used
// inside a namespace created with testsuite/netns.
package pxebench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"
)

// ErrNoLease is wrapped by HostResult.Err when a host got no ACK in time.
var ErrNoLease = errors.New("no lease")

// RawConn is an AF_PACKET socket on one interface that sends whole Ethernet
// frames and receives the IPv4 frames seen there. Open it inside the
// client namespace (netns.NS.Do); it may then be used from anywhere.
type RawConn struct {
	fd      int
	ifindex int
	once    sync.Once
}

// ListenRaw opens a RawConn on the named interface.
func ListenRaw(ifname string) (*RawConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind raw socket to %s: %w", ifname, err)
	}
	// A storm's replies arrive in a burst; do not lose them to a small buffer.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// Reads wake up now and then so Close is noticed.
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("raw socket timeout: %w", err)
	}
	return &RawConn{fd: fd, ifindex: ifi.Index}, nil
}

// Close closes the socket.
func (c *RawConn) Close() error {
	var err error
	c.once.Do(func() { err = unix.Close(c.fd) })
	return err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes msg as a broadcast UDP datagram 0.0.0.0:68 -> 255.255.255.255:67
// in an Ethernet frame from src.
func (c *RawConn) send(src net.HardwareAddr, msg []byte) error {
	frame := make([]byte, 14+20+8+len(msg))
	copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:12], src)
	binary.BigEndian.PutUint16(frame[12:14], unix.ETH_P_IP)
	ip := frame[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+len(msg)))
	ip[8] = 64 // TTL
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], net.IPv4zero.To4())
	copy(ip[16:20], net.IPv4bcast.To4())
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	udp := frame[34:42]
	binary.BigEndian.PutUint16(udp[0:2], dhcpv4.ClientPort)
	binary.BigEndian.PutUint16(udp[2:4], dhcpv4.ServerPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(msg)))
	// UDP checksum 0: none, allowed over IPv4.
	copy(frame[42:], msg)
	to := &unix.SockaddrLinklayer{Ifindex: c.ifindex, Halen: 6, Protocol: htons(unix.ETH_P_IP)}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return unix.Sendto(c.fd, frame, 0, to)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// readReply returns the next DHCP reply (a BOOTREPLY to UDP port 68) seen on
// the interface; ok=false for any other frame or a read timeout.
func (c *RawConn) readReply(buf []byte) (msg *dhcpv4.DHCPv4, ok bool, err error) {
	n, _, err := unix.Recvfrom(c.fd, buf, 0)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil, false, nil
		}
		return nil, false, err
	}
	b := buf[:n]
	if len(b) < 14+20+8 || binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_IP {
		return nil, false, nil
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
		return nil, false, nil
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != dhcpv4.ClientPort {
		return nil, false, nil
	}
	m, err := dhcpv4.FromBytes(udp[8:])
	if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
		return nil, false, nil
	}
	return m, true, nil
}

// Storm is a crowd of hosts booting at once. Each does what a PXE ROM does:
// broadcast DISCOVER, REQUEST the first offer naming its server, and
// retransmit after a random 1-4 s (RFC 2131 4.1 asks for about 4 s with
// ±1 s; PXE ROMs retry sooner) until it has an ACK or Timeout passes.
type Storm struct {
	// MACs are the hosts.
	MACs []net.HardwareAddr
	// Timeout bounds the whole storm. Default 60s.
	Timeout time.Duration
	// VendorClass is sent as option 60 with option 93 (arch) 0, so the
	// hosts look like BIOS PXE ROMs. Default "PXEClient:Arch:00000:UNDI:002001".
	VendorClass string
	// Retransmit returns how long to wait for a reply before sending again;
	// attempt counts from 1. Default: uniform in [1s, 4s).
	Retransmit func(attempt int) time.Duration
}

// HostResult is what one host of a Storm got.
type HostResult struct {
	MAC net.HardwareAddr
	// IP, ServerID, BootFile and NextServer come from the ACK.
	IP         net.IP
	ServerID   net.IP
	NextServer net.IP
	BootFile   string
	// Sent counts the DISCOVERs and REQUESTs sent.
	Sent int
	// Naks counts the NAKs received.
	Naks int
	// Elapsed is from the start of the storm to the ACK.
	Elapsed time.Duration
	// Err is nil once ACKed, else wraps ErrNoLease.
	Err error
}

// Run plays the storm on conn, all hosts starting at the same instant, and
// returns one result per MAC, in the order of MACs.
func (s Storm) Run(ctx context.Context, conn *RawConn) []HostResult {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	vc := s.VendorClass
	if vc == "" {
		vc = "PXEClient:Arch:00000:UNDI:002001"
	}
	retx := s.Retransmit
	if retx == nil {
		retx = func(int) time.Duration { return time.Second + rand.N(3*time.Second) }
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// One reader hands each reply to the host whose xid it carries.
	var mu sync.Mutex
	inbox := map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 65536)
		for ctx.Err() == nil {
			m, ok, err := conn.readReply(buf)
			if err != nil {
				return
			}
			if !ok {
				continue
			}
			mu.Lock()
			ch := inbox[m.TransactionID]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default: // host busy with an earlier reply; like a lost packet
				}
			}
		}
	}()

	start := time.Now()
	results := make([]HostResult, len(s.MACs))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, mac := range s.MACs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var xid dhcpv4.TransactionID
			for j := range xid {
				xid[j] = byte(rand.N(256))
			}
			ch := make(chan *dhcpv4.DHCPv4, 16)
			mu.Lock()
			inbox[xid] = ch
			mu.Unlock()
			<-gate
			results[i] = s.host(ctx, conn, mac, xid, vc, ch, retx, start)
		}()
	}
	close(gate)
	wg.Wait()
	cancel()
	<-readerDone
	return results
}

// host runs one host's handshake until it is ACKed or ctx ends.
func (s Storm) host(ctx context.Context, conn *RawConn, mac net.HardwareAddr, xid dhcpv4.TransactionID,
	vc string, replies <-chan *dhcpv4.DHCPv4, retx func(int) time.Duration, start time.Time) HostResult {
	r := HostResult{MAC: mac}
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithTransactionID(xid),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vc)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionBootfileName,
			dhcpv4.OptionTFTPServerName, dhcpv4.OptionVendorSpecificInformation),
	}
	var (
		offer   *dhcpv4.DHCPv4
		attempt int
	)
	for ctx.Err() == nil {
		attempt++
		var msg *dhcpv4.DHCPv4
		var err error
		if offer == nil {
			msg, err = dhcpv4.NewDiscovery(mac, pxe...)
		} else {
			msg, err = dhcpv4.NewRequestFromOffer(offer, pxe...)
		}
		if err != nil {
			r.Err = fmt.Errorf("build message: %w", err)
			return r
		}
		msg.Flags = 0 // PXE ROMs typically ask for broadcast; both work
		msg.SetBroadcast()
		if secs := time.Since(start).Seconds(); secs < 65535 {
			msg.NumSeconds = uint16(secs)
		}
		if err := conn.send(mac, msg.ToBytes()); err != nil {
			r.Err = fmt.Errorf("send: %w", err)
			return r
		}
		r.Sent++
		wait := time.NewTimer(retx(attempt))
	recv:
		for {
			select {
			case <-ctx.Done():
				wait.Stop()
				break recv
			case <-wait.C:
				// Retransmit: a host still without an offer, or whose
				// REQUEST got nothing, starts over with DISCOVER after a
				// few tries, as PXE ROMs do.
				if offer != nil && attempt%3 == 0 {
					offer = nil
				}
				break recv
			case m := <-replies:
				if !equalMAC(m.ClientHWAddr, mac) {
					continue
				}
				switch m.MessageType() {
				case dhcpv4.MessageTypeOffer:
					if offer != nil {
						continue // a late or duplicate offer
					}
					wait.Stop()
					offer = m
					attempt = 0
					break recv
				case dhcpv4.MessageTypeAck:
					if offer == nil {
						continue
					}
					wait.Stop()
					r.IP = m.YourIPAddr
					r.ServerID = m.ServerIdentifier()
					r.NextServer = m.ServerIPAddr
					r.BootFile = m.BootFileNameOption()
					if r.BootFile == "" {
						r.BootFile = m.BootFileName
					}
					r.Elapsed = time.Since(start)
					return r
				case dhcpv4.MessageTypeNak:
					if offer == nil {
						continue
					}
					wait.Stop()
					r.Naks++
					offer = nil
					break recv
				}
			}
		}
	}
	r.Elapsed = time.Since(start)
	r.Err = fmt.Errorf("%w for %s after %d packets in %s", ErrNoLease, mac, r.Sent, r.Elapsed.Round(time.Millisecond))
	return r
}

func equalMAC(a, b net.HardwareAddr) bool {
	return len(a) == len(b) && string(a) == string(b)
}
