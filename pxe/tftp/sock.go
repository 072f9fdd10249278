package tftp

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errReadTimeout is a transfer socket's read that waited its timeout out.
var errReadTimeout = errors.New("read timeout")

// transferSock is a transfer's own socket, connected to the client.
type transferSock interface {
	Write(b []byte) (int, error)
	// readTimeout waits up to d for a datagram; errReadTimeout when none
	// came.
	readTimeout(b []byte, d time.Duration) (int, error)
	Close() error
}

// blockingIO picks the transfer socket: true uses blocking read(2) and
// write(2) on a socket of its own with SO_RCVTIMEO, so a lock-step
// transfer is woken by the kernel straight in read(2), as dnsmasq is from
// poll(2), instead of through Go's netpoller (an epoll_wait and a
// goroutine hand-off per block). Each transfer then holds an OS thread
// while it waits, at most MaxTransfers of them. false uses net.UDPConn.
var blockingIO = true

// udpSock is a blocking UDP socket driven by system calls directly.
type udpSock struct {
	fd      int
	timeout time.Duration // the SO_RCVTIMEO set
}

func sockaddr(ip net.IP, port int) (unix.Sockaddr, int) {
	if ip4 := ip.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], ip4)
		return sa, unix.AF_INET
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], ip.To16())
	return sa, unix.AF_INET6
}

// dialBlocking opens a blocking UDP socket on local (any address of the
// client's family when nil), port 0, bound to iface when set, connected to
// remote.
func dialBlocking(local net.IP, remote *net.UDPAddr, iface string) (*udpSock, error) {
	rsa, family := sockaddr(remote.IP, remote.Port)
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, err
	}
	s := &udpSock{fd: fd}
	fail := func(err error) (*udpSock, error) { unix.Close(fd); return nil, err }
	if iface != "" {
		if err := unix.BindToDevice(fd, iface); err != nil {
			return fail(err)
		}
	}
	if local == nil {
		if family == unix.AF_INET {
			local = net.IPv4zero
		} else {
			local = net.IPv6unspecified
		}
	}
	lsa, _ := sockaddr(local, 0)
	if err := unix.Bind(fd, lsa); err != nil {
		return fail(err)
	}
	if err := unix.Connect(fd, rsa); err != nil {
		return fail(err)
	}
	return s, nil
}

func (s *udpSock) Write(b []byte) (int, error) {
	for {
		n, err := unix.Write(s.fd, b)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

func (s *udpSock) readTimeout(b []byte, d time.Duration) (int, error) {
	d = max(d, time.Millisecond) // a zero SO_RCVTIMEO waits forever
	if d != s.timeout {
		tv := unix.NsecToTimeval(d.Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return 0, err
		}
		s.timeout = d
	}
	for {
		n, err := unix.Read(s.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errReadTimeout
		}
		return n, err
	}
}

func (s *udpSock) Close() error { return unix.Close(s.fd) }

// netSock is a transfer socket on Go's netpoller.
type netSock struct{ *net.UDPConn }

func (s netSock) readTimeout(b []byte, d time.Duration) (int, error) {
	_ = s.SetReadDeadline(time.Now().Add(d))
	n, err := s.Read(b)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, errReadTimeout
	}
	return n, err
}

// transferSocket opens the transfer's socket: an ephemeral port on the
// address the request came to (so the reply leaves from the address the
// client talked to), on the boot interface when one is named, connected to
// the client so the kernel drops packets from any other transfer ID.
func (s *Server) transferSocket(ctx context.Context, local net.IP, remote *net.UDPAddr) (transferSock, error) {
	if blockingIO {
		return dialBlocking(local, remote, s.Interface)
	}
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: local}}
	if s.Interface != "" {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), s.Interface) }); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.DialContext(ctx, "udp", remote.String())
	if err != nil {
		return nil, err
	}
	return netSock{c.(*net.UDPConn)}, nil
}
