//go:build !linux

package dhcp

import "net"

// growReadBuffer asks for a receive buffer of n bytes on c (SO_RCVBUF; the
// system may cap it). Best effort.
func growReadBuffer(c net.PacketConn, n int) {
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(n)
	}
}
