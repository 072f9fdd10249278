// Package tftptest is a small TFTP read client for tests and benchmarks of
// rackflow's TFTP server: it negotiates blksize and RFC 7440 windowsize
// (pin/tftp's client does not) and can drop chosen ACKs to exercise the
// server's retransmission. It is not a client for production use.
package tftptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrServer wraps an ERROR packet from the server.
var ErrServer = errors.New("tftp server error")

// Client reads one file per Get.
type Client struct {
	// BlockSize and WindowSize are asked for when above zero.
	BlockSize, WindowSize int
	// Timeout is how long to wait for a packet before re-sending the last
	// ACK (or the request). Default 1s.
	Timeout time.Duration
	// Retries before giving up. Default 5.
	Retries int
	// DropACK, when set, is asked before each ACK is sent with the ACK's
	// block counted from 1 without rollover; true skips sending it.
	DropACK func(block int64) bool
}

// Result is what a Get negotiated.
type Result struct {
	Bytes      int64
	BlockSize  int
	WindowSize int
	Options    map[string]string
}

// Get reads name from addr into w.
func (c *Client) Get(addr, name string, w io.Writer) (Result, error) {
	var res Result
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return res, err
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	timeout, retries := c.Timeout, c.Retries
	if timeout <= 0 {
		timeout = time.Second
	}
	if retries <= 0 {
		retries = 5
	}

	req := []byte{0, 1}
	req = append(append(req, name...), 0)
	req = append(append(req, "octet"...), 0)
	opt := func(k string, v int) { req = append(append(append(append(req, k...), 0), strconv.Itoa(v)...), 0) }
	if c.BlockSize > 0 {
		opt("blksize", c.BlockSize)
	}
	if c.WindowSize > 0 {
		opt("windowsize", c.WindowSize)
	}
	res.BlockSize, res.WindowSize = 512, 1

	buf := make([]byte, 65536+4)
	var server *net.UDPAddr
	last := []byte(nil) // the packet to resend on a timeout
	send := func(b []byte) error {
		last = b
		to := server
		if to == nil {
			to = ra
		}
		_, err := conn.WriteToUDP(b, to)
		return err
	}
	ack := func(block int64) error {
		b := []byte{0, 4, byte(block >> 8), byte(block)}
		if c.DropACK != nil && c.DropACK(block) {
			last = b
			return nil
		}
		return send(b)
	}
	if err := send(req); err != nil {
		return res, err
	}
	var got int64 // blocks received in order
	inWindow := 0 // blocks received since the last ACK
	nacked := int64(-1)
	tries := 0
	for {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tries++
				if tries > retries {
					return res, fmt.Errorf("timeout after %d blocks", got)
				}
				if last != nil {
					_, _ = conn.WriteToUDP(last, serverOr(server, ra))
				}
				continue
			}
			return res, err
		}
		if server == nil {
			server = from
		} else if from.Port != server.Port {
			continue
		}
		if n < 4 {
			continue
		}
		tries = 0
		switch binary.BigEndian.Uint16(buf) {
		case 5:
			return res, fmt.Errorf("%w: code %d: %s", ErrServer, binary.BigEndian.Uint16(buf[2:]), strings.TrimRight(string(buf[4:n]), "\x00"))
		case 6:
			if got > 0 {
				continue
			}
			res.Options = map[string]string{}
			f := strings.Split(strings.TrimRight(string(buf[2:n]), "\x00"), "\x00")
			for i := 0; i+1 < len(f); i += 2 {
				res.Options[strings.ToLower(f[i])] = f[i+1]
			}
			if v, err := strconv.Atoi(res.Options["blksize"]); err == nil {
				res.BlockSize = v
			}
			if v, err := strconv.Atoi(res.Options["windowsize"]); err == nil {
				res.WindowSize = v
			}
			if err := ack(0); err != nil {
				return res, err
			}
		case 3:
			wire := binary.BigEndian.Uint16(buf[2:])
			if wire != uint16(got+1) {
				// Out of order: a block was lost. Say where we are once
				// per gap (RFC 7440: the server resends from there).
				if nacked != got {
					nacked, inWindow = got, 0
					if err := ack(got); err != nil {
						return res, err
					}
				}
				continue
			}
			got++
			data := buf[4:n]
			if _, err := w.Write(data); err != nil {
				return res, err
			}
			res.Bytes += int64(len(data))
			inWindow++
			if len(data) < res.BlockSize {
				// The last block; an ACK for it ends the transfer.
				_ = ack(got)
				return res, nil
			}
			if inWindow >= res.WindowSize {
				inWindow = 0
				if err := ack(got); err != nil {
					return res, err
				}
			}
		}
	}
}

func serverOr(s, ra *net.UDPAddr) *net.UDPAddr {
	if s != nil {
		return s
	}
	return ra
}
