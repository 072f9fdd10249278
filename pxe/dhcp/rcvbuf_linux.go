package dhcp

import (
	"net"
	"syscall"
)

// growReadBuffer asks for a receive buffer of n bytes on c: SO_RCVBUFFORCE,
// which may exceed net.core.rmem_max but needs CAP_NET_ADMIN, else
// SO_RCVBUF, which the kernel caps at rmem_max. Best effort: a small buffer
// only means more retransmissions in a burst.
func growReadBuffer(c net.PacketConn, n int) {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err != nil || serr != nil {
		_ = uc.SetReadBuffer(n)
	}
}
