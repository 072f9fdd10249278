package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// TFTP opcodes (RFC 1350, 2347) and error codes.
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6

	errCodeUndefined   = 0
	errCodeNotFound    = 1
	errCodeAccess      = 2
	errCodeIllegalOp   = 4
	errCodeOptionsDeny = 8
)

const (
	defaultBlockSize = 512
	minBlockSize     = 8     // RFC 2348
	maxBlockSize     = 65464 // RFC 2348
	// DefaultMaxWindowSize caps the RFC 7440 windowsize a client may
	// negotiate when Server.MaxWindowSize is zero.
	DefaultMaxWindowSize = 64
	// readAhead is how much of the file one pread fetches, so a lock-step
	// transfer at blksize 512 costs one read(2) per 128 blocks, not per block.
	readAhead = 64 << 10
)

// request is a parsed RRQ.
type request struct {
	name string
	mode string
	opts map[string]string // lower-case names
	// order keeps the client's option order for the OACK.
	order []string
}

func parseRequest(b []byte) (request, error) {
	var r request
	fields := strings.Split(string(b), "\x00")
	// A well-formed request ends with a NUL, so the last field is empty.
	if len(fields) < 3 || fields[len(fields)-1] != "" {
		return r, errors.New("malformed request")
	}
	fields = fields[:len(fields)-1]
	r.name, r.mode = fields[0], strings.ToLower(fields[1])
	r.opts = map[string]string{}
	for i := 2; i+1 < len(fields); i += 2 {
		k := strings.ToLower(fields[i])
		if _, dup := r.opts[k]; dup {
			continue
		}
		r.opts[k] = fields[i+1]
		r.order = append(r.order, k)
	}
	return r, nil
}

// packetConn reads a request with the address it was sent to and the
// interface it came in on (IP_PKTINFO / IPV6_PKTINFO).
type packetConn interface {
	readRequest(b []byte) (n int, src net.Addr, dst net.IP, ifIndex int, err error)
}

type pc4 struct{ c *ipv4.PacketConn }

func (p pc4) readRequest(b []byte) (int, net.Addr, net.IP, int, error) {
	n, cm, src, err := p.c.ReadFrom(b)
	if cm == nil {
		return n, src, nil, 0, err
	}
	return n, src, cm.Dst, cm.IfIndex, err
}

type pc6 struct{ c *ipv6.PacketConn }

func (p pc6) readRequest(b []byte) (int, net.Addr, net.IP, int, error) {
	n, cm, src, err := p.c.ReadFrom(b)
	if cm == nil {
		return n, src, nil, 0, err
	}
	return n, src, cm.Dst, cm.IfIndex, err
}

type plainPC struct{ c net.PacketConn }

func (p plainPC) readRequest(b []byte) (int, net.Addr, net.IP, int, error) {
	n, src, err := p.c.ReadFrom(b)
	return n, src, nil, 0, err
}

func wrapConn(conn net.PacketConn) packetConn {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return plainPC{conn}
	}
	if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil && !la.IP.IsUnspecified() {
		p := ipv6.NewPacketConn(uc)
		// Also tells p to read the control messages, which it tracks
		// itself (enablePktinfo's PacketConn is another one).
		_ = p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
		return pc6{p}
	}
	p := ipv4.NewPacketConn(uc)
	_ = p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	return pc4{p}
}

// serveConn reads requests on conn until it is closed and runs each read
// request in its own goroutine on its own socket (RFC 1350's transfer ID).
func (s *Server) serveConn(ctx context.Context, conn net.PacketConn) error {
	pc := wrapConn(conn)
	buf := make([]byte, 65536)
	for {
		n, src, dst, ifIndex, err := pc.readRequest(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if n < 2 {
			continue
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		switch binary.BigEndian.Uint16(buf) {
		case opRRQ:
			req, err := parseRequest(buf[2:n])
			if err != nil {
				sendError(conn, ua, errCodeIllegalOp, err.Error())
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handleRead(ctx, conn, ua, dst, ifIndex, req)
			}()
		case opWRQ:
			sendError(conn, ua, errCodeAccess, "write requests are refused")
		default:
			// DATA, ACK or ERROR for a finished transfer, or noise: a
			// transfer's own packets go to its own socket.
		}
	}
}

func sendError(w interface {
	WriteTo([]byte, net.Addr) (int, error)
}, to net.Addr, code uint16, msg string) {
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(append(b, msg...), 0)
	_, _ = w.WriteTo(b, to)
}

// blockCap is the largest blksize the transfer may use: MaxBlockSize, and
// no more than fits the interface's MTU unfragmented.
func (s *Server) blockCap(ifIndex int, v6 bool) int {
	limit := maxBlockSize
	if ifIndex > 0 {
		if ifi, err := net.InterfaceByIndex(ifIndex); err == nil && ifi.MTU > 0 {
			hdr := 20 + 8 + 4
			if v6 {
				hdr = 40 + 8 + 4
			}
			limit = min(limit, ifi.MTU-hdr)
		}
	} else {
		limit = defaultBlockSize // MTU unknown: never fragment
	}
	if s.MaxBlockSize > 0 {
		if ifIndex > 0 {
			limit = min(limit, s.MaxBlockSize)
		} else {
			limit = s.MaxBlockSize
		}
	}
	return max(limit, minBlockSize)
}

// transfer is one read in progress.
type transfer struct {
	conn    transferSock
	file    *os.File
	size    int64
	blksize int
	window  int
	timeout time.Duration
	retries int
	done    <-chan struct{}

	// read-ahead cache: file bytes [cacheOff, cacheOff+len(cache)).
	cache    []byte
	cacheBuf []byte
	cacheOff int64
	pkt      []byte
	in       []byte
}

func (s *Server) handleRead(ctx context.Context, mainConn net.PacketConn, remote *net.UDPAddr, local net.IP, ifIndex int, req request) {
	start := time.Now()
	t := Transfer{Remote: remote.IP, Filename: req.name}
	recorded := false
	defer func() {
		if !recorded {
			t.Duration = time.Since(start)
			s.record(t)
		}
	}()
	// refuse records the refusal before the client hears of it, so a
	// client that has its answer finds the transfer already counted.
	refuse := func(err error, code uint16, msg string) {
		t.Err, t.Duration, recorded = err, time.Since(start), true
		s.record(t)
		sendError(mainConn, remote, code, msg)
	}

	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		refuse(ErrBusy, errCodeNotFound, ErrBusy.Error())
		return
	}
	if req.mode != "octet" {
		// netascii would need line-ending translation of binaries that
		// are never text; PXE firmware and iPXE ask for octet.
		refuse(fmt.Errorf("%w: mode %q", ErrForbidden, req.mode), errCodeIllegalOp, "only octet mode is supported")
		return
	}
	f, size, err := s.open(req.name)
	if err != nil {
		// Error code 1 for every refusal, as before: clients (curl) report
		// it as "not found", and the text says which.
		refuse(err, errCodeNotFound, err.Error())
		return
	}
	defer f.Close()

	if local != nil && local.IsUnspecified() {
		local = nil
	}
	conn, err := s.transferSocket(ctx, local, remote)
	if err != nil {
		t.Err = fmt.Errorf("send %s: open transfer socket: %w", req.name, err)
		sendError(mainConn, remote, errCodeUndefined, "server error")
		return
	}
	defer conn.Close()

	tr := &transfer{
		conn: conn, file: f, size: size,
		blksize: defaultBlockSize, window: 1,
		timeout: s.timeout(), retries: s.retries(),
		done: ctx.Done(),
	}
	oack := tr.negotiate(req, s.blockCap(ifIndex, remote.IP.To4() == nil), s.maxWindow())
	n, err := tr.run(oack)
	t.Bytes = n
	switch {
	case errors.Is(err, errClientOptionsDenied) && n == 0:
		t.Err = ErrSizeProbe
	case err != nil:
		t.Err = fmt.Errorf("send %s: %w", req.name, err)
	}
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return 5 * time.Second
}

func (s *Server) retries() int {
	if s.Retries > 0 {
		return s.Retries
	}
	return 5
}

func (s *Server) maxWindow() int {
	if s.MaxWindowSize > 0 {
		return min(s.MaxWindowSize, 65535)
	}
	return DefaultMaxWindowSize
}

// negotiate applies the options the server knows (RFC 2347-2349, 7440) and
// returns the OACK to send, nil when the client asked for none of them.
func (tr *transfer) negotiate(req request, blkCap, winCap int) []byte {
	var acked []string
	for _, k := range req.order {
		v := req.opts[k]
		switch k {
		case "blksize":
			n, err := strconv.Atoi(v)
			if err != nil || n < minBlockSize {
				continue
			}
			tr.blksize = min(n, blkCap)
			acked = append(acked, k, strconv.Itoa(tr.blksize))
		case "tsize":
			// A read request sends 0; the answer is the file's size.
			acked = append(acked, k, strconv.FormatInt(tr.size, 10))
		case "timeout":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 255 {
				continue
			}
			tr.timeout = time.Duration(n) * time.Second
			acked = append(acked, k, v)
		case "windowsize":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				continue
			}
			tr.window = min(n, winCap)
			acked = append(acked, k, strconv.Itoa(tr.window))
		}
	}
	if len(acked) == 0 {
		return nil
	}
	b := []byte{0, opOACK}
	for _, f := range acked {
		b = append(append(b, f...), 0)
	}
	return b
}

var (
	errClientOptionsDenied = errors.New("client ended the transfer after the OACK (error 8)")
	errGaveUp              = errors.New("no acknowledgement: gave up")
	errShutdown            = errors.New("server shutting down")
)

// clientError is a TFTP ERROR packet from the client.
type clientError struct {
	code uint16
	msg  string
}

func (e *clientError) Error() string { return fmt.Sprintf("client error code %d: %s", e.code, e.msg) }

// run sends the file and returns the bytes of it the client acknowledged.
func (tr *transfer) run(oack []byte) (int64, error) {
	tr.in = make([]byte, 516)
	tr.pkt = make([]byte, 4+tr.blksize)
	// The number of blocks: the last one is shorter than blksize, empty
	// when the size is a multiple of it.
	total := tr.size/int64(tr.blksize) + 1

	if oack != nil {
		acked, err := tr.exchange(func() error { _, err := tr.conn.Write(oack); return err }, 0, 0)
		if err != nil {
			var ce *clientError
			if errors.As(err, &ce) && ce.code == errCodeOptionsDeny {
				return 0, errClientOptionsDenied
			}
			return 0, err
		}
		_ = acked
	}

	// base is the first unacknowledged block (1-based, 64-bit: the wire
	// number is its low 16 bits and rolls over past 65535 to 0).
	base := int64(1)
	for base <= total {
		end := min(base+int64(tr.window), total+1) // blocks [base, end)
		from := base
		send := func() error {
			for b := from; b < end; b++ {
				if err := tr.sendBlock(b); err != nil {
					return err
				}
			}
			return nil
		}
		acked, err := tr.exchange(send, base-1, end-base)
		if err != nil {
			return tr.ackedBytes(base - 1), err
		}
		base = acked + 1
	}
	return tr.size, nil
}

func (tr *transfer) ackedBytes(block int64) int64 {
	return min(block*int64(tr.blksize), tr.size)
}

// exchange calls send, then waits for an ACK of a block in (last, last+n]
// (last+0 too when n is 0: the OACK's ACK of block 0). A stale or
// duplicate ACK is ignored in lock-step and within a window means the
// client lost a block: the window is resent from the block after it.
// On a timeout everything is sent again, up to retries times. It returns
// the highest block acknowledged.
func (tr *transfer) exchange(send func() error, last, n int64) (int64, error) {
	tries := 0
	if err := send(); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(tr.timeout)
	// timedOut resends, or gives up once the retries are spent.
	timedOut := func() error {
		select {
		case <-tr.done:
			return errShutdown
		default:
		}
		tries++
		if tries > tr.retries {
			sendErr(tr.conn, errCodeUndefined, "timeout")
			return errGaveUp
		}
		if err := send(); err != nil {
			return err
		}
		deadline = time.Now().Add(tr.timeout)
		return nil
	}
	for {
		m, err := tr.conn.readTimeout(tr.in, tr.timeout)
		if err != nil {
			// ECONNREFUSED: an ICMP port unreachable from the client; it
			// may be transient, so it counts as a timeout.
			if errors.Is(err, errReadTimeout) || errors.Is(err, syscall.ECONNREFUSED) {
				if err := timedOut(); err != nil {
					return 0, err
				}
				continue
			}
			return 0, err
		}
		if m >= 4 {
			switch binary.BigEndian.Uint16(tr.in) {
			case opACK:
				wire := binary.BigEndian.Uint16(tr.in[2:])
				delta := int64(uint16(wire - uint16(last)))
				switch {
				case n == 0 && delta == 0:
					return last, nil
				case n > 0 && delta >= 1 && delta <= n:
					return last + delta, nil
				case n > 1 && delta == 0:
					// The client saw a gap at the window's first block.
					return last, nil
				}
			case opERROR:
				msg := strings.TrimRight(string(tr.in[4:m]), "\x00")
				return 0, &clientError{code: binary.BigEndian.Uint16(tr.in[2:]), msg: msg}
			}
		}
		// A stale or duplicate ACK, or noise: it does not reset the
		// timeout, so a client repeating an old ACK cannot hold the
		// transfer forever.
		if time.Now().After(deadline) {
			if err := timedOut(); err != nil {
				return 0, err
			}
		}
	}
}

func sendErr(c transferSock, code uint16, msg string) {
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(append(b, msg...), 0)
	_, _ = c.Write(b)
}

// sendBlock sends block b (1-based) from the read-ahead cache.
func (tr *transfer) sendBlock(b int64) error {
	off := (b - 1) * int64(tr.blksize)
	n := int(min(int64(tr.blksize), tr.size-off))
	if n > 0 && (off < tr.cacheOff || off+int64(n) > tr.cacheOff+int64(len(tr.cache))) {
		if err := tr.fill(off); err != nil {
			return err
		}
	}
	binary.BigEndian.PutUint16(tr.pkt, opDATA)
	binary.BigEndian.PutUint16(tr.pkt[2:], uint16(b))
	if n > 0 {
		copy(tr.pkt[4:], tr.cache[off-tr.cacheOff:off-tr.cacheOff+int64(n)])
	} else {
		n = 0
	}
	_, err := tr.conn.Write(tr.pkt[:4+n])
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		return nil // an ICMP error from an earlier packet; the timeout decides
	}
	return err
}

// fill reads the file from off: a whole window, at least readAhead bytes.
func (tr *transfer) fill(off int64) error {
	want := max(readAhead, tr.blksize*tr.window)
	want -= want % tr.blksize
	if cap(tr.cacheBuf) < want {
		tr.cacheBuf = make([]byte, want)
	}
	buf := tr.cacheBuf[:want]
	n, err := tr.file.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read: %w", err)
	}
	tr.cache, tr.cacheOff = buf[:n], off
	if int64(n) < min(int64(tr.blksize), tr.size-off) {
		return fmt.Errorf("read: file shrank to %d bytes", off+int64(n))
	}
	return nil
}
