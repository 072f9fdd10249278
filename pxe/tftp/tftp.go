// Package tftp is the read-only TFTP server of rackflow's PXE service: it
// hands PXE firmware the iPXE binaries (undionly.kpxe, ipxe.efi) from one
// directory, with blksize, tsize, timeout and windowsize negotiation
// (RFC 2347, 2348, 2349, 7440).
//
// It is not a general TFTP server: write requests are refused, and no name
// can reach outside Root (no "..", no absolute paths, no symlink leading out,
// no directories or device files). Kernels and initrds go over HTTP, not here.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Errors a transfer fails with; the client sees their text in the TFTP
// ERROR packet, so they name no host path.
var (
	ErrConfig    = errors.New("tftp: invalid config")
	ErrNotFound  = errors.New("file not found")
	ErrForbidden = errors.New("access violation")
	ErrBusy      = errors.New("server busy, try again")
	// ErrSizeProbe is a transfer the client ended after reading the
	// file's size from the OACK, before any data: UEFI firmware (EDK2)
	// and many PXE ROMs ask for tsize, abort with TFTP error 8 (option
	// negotiation ended, RFC 2347) and then read the file in a second
	// request. It is normal, not a failure.
	ErrSizeProbe = errors.New("size probe: the client read tsize and ended the transfer")
)

// DefaultMaxTransfers caps concurrent transfers when Server.MaxTransfers is
// zero: far above a real boot storm's need for a few-KiB iPXE binary, low
// enough that a flood of read requests cannot pin memory and sockets.
const DefaultMaxTransfers = 256

// Transfer describes one finished read request, for Server.OnTransfer.
type Transfer struct {
	Remote   net.IP
	Filename string
	Bytes    int64
	Duration time.Duration
	// Err is nil for a complete transfer; errors.Is(Err, ErrNotFound) or
	// ErrForbidden tells a refused name from a failed transfer.
	Err error
}

// Server serves the files under Root over TFTP, read-only. Set the fields,
// then call Serve; do not change them while it runs.
type Server struct {
	// Root is the directory served. Required.
	Root string
	// ListenAddr is the UDP address to listen on. Default "0.0.0.0:69".
	ListenAddr string
	// Interface, when set, binds the socket to that interface
	// (SO_BINDTODEVICE), so only the boot network reaches the server even
	// when ListenAddr is 0.0.0.0.
	Interface string
	// Conn, when set, is used instead of listening on ListenAddr.
	// Serve closes it when ctx is cancelled.
	Conn net.PacketConn
	// MaxTransfers caps transfers in flight; a read request beyond it is
	// answered with an ERROR ("server busy") at once. Zero means
	// DefaultMaxTransfers.
	MaxTransfers int
	// MaxBlockSize caps the blksize a client may negotiate (513..65464).
	// Zero leaves the cap at the MTU of the interface the request came in
	// on minus headers, so blocks are never fragmented.
	MaxBlockSize int
	// MaxWindowSize caps the RFC 7440 windowsize a client may negotiate
	// (blocks sent per ACK). A client that does not ask gets lock-step,
	// one block per ACK, as PXE ROMs expect. Zero means
	// DefaultMaxWindowSize.
	MaxWindowSize int
	// Anticipate is ignored. It was pin/tftp's non-standard "sender
	// anticipate"; the server now negotiates RFC 7440 windowsize instead.
	//
	// Deprecated: set MaxWindowSize; clients choose their window.
	Anticipate uint
	// Timeout is how long to wait for each ACK, unless the client
	// negotiates its own (RFC 2349 timeout). Default 5s.
	Timeout time.Duration
	// Retries is how often a block is resent before the transfer fails.
	// Default 5.
	Retries int
	// Logger gets one line per transfer. Nil discards.
	Logger *slog.Logger
	// Registerer gets the server's metrics (rackflow_pxe_tftp_*). Nil keeps
	// them unregistered.
	Registerer prometheus.Registerer
	// OnTransfer, when set, is called after each read request (e.g. to
	// count boots per host: map Remote to a MAC through the lease store).
	// It must not block.
	OnTransfer func(Transfer)

	initOnce sync.Once
	initErr  error
	log      *slog.Logger
	metrics  *metrics
	root     *os.Root
	slots    chan struct{}
	wg       sync.WaitGroup
}

func (s *Server) init() error {
	s.initOnce.Do(func() {
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.metrics = newMetrics()
		if s.Registerer != nil {
			if err := s.metrics.register(s.Registerer); err != nil {
				s.initErr = err
				return
			}
		}
		if s.Root == "" {
			s.initErr = fmt.Errorf("%w: Root is empty", ErrConfig)
			return
		}
		r, err := os.OpenRoot(s.Root)
		if err != nil {
			s.initErr = fmt.Errorf("%w: open root: %w", ErrConfig, err)
			return
		}
		s.root = r
		n := s.MaxTransfers
		if n <= 0 {
			n = DefaultMaxTransfers
		}
		s.slots = make(chan struct{}, n)
	})
	return s.initErr
}

// Serve answers read requests until ctx is cancelled, then closes the
// socket, lets running transfers finish (each ends within Timeout×Retries)
// and returns ctx.Err(). A config or socket error is returned at once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.init(); err != nil {
		return err
	}
	conn := s.Conn
	if conn == nil {
		addr := s.ListenAddr
		if addr == "" {
			addr = "0.0.0.0:69"
		}
		c, err := listen(ctx, addr, s.Interface)
		if err != nil {
			return fmt.Errorf("tftp: listen on %s (interface %q): %w", addr, s.Interface, err)
		}
		conn = c
	}

	// Blocks are sized from the MTU of the interface a request came in
	// on, learnt from IP_PKTINFO; the kernel attaches that only to
	// datagrams queued after the option is on, so turn it on before anyone
	// can be waiting.
	enablePktinfo(conn)

	errc := make(chan error, 1)
	go func() { errc <- s.serveConn(ctx, conn) }()
	s.log.Info("tftp: serving", "addr", conn.LocalAddr().String(), "root", s.Root)
	select {
	case <-ctx.Done():
		_ = conn.Close()
		<-errc
		s.wg.Wait()
		return ctx.Err()
	case err := <-errc:
		_ = conn.Close()
		s.wg.Wait()
		if err != nil {
			return fmt.Errorf("tftp: serve: %w", err)
		}
		return nil
	}
}

// open resolves a requested name inside Root.
func (s *Server) open(name string) (*os.File, int64, error) {
	if name == "" || strings.ContainsRune(name, 0) || strings.HasPrefix(name, "/") || strings.Contains(name, `\`) {
		return nil, 0, ErrForbidden
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return nil, 0, ErrForbidden
		}
	}
	// os.Root refuses any path, symlinks included, that resolves outside Root.
	// Lstat first and O_NONBLOCK: opening a FIFO for reading would block
	// until a writer comes, and opening a device can have side effects.
	clean := path.Clean(name)
	if st, err := s.root.Stat(clean); err == nil && !st.Mode().IsRegular() {
		return nil, 0, ErrForbidden
	}
	f, err := s.root.OpenFile(clean, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, ErrNotFound
		}
		return nil, 0, ErrForbidden
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, ErrForbidden
	}
	return f, st.Size(), nil
}

func (s *Server) record(t Transfer) {
	result := "ok"
	switch {
	case errors.Is(t.Err, ErrNotFound):
		result = "not_found"
	case errors.Is(t.Err, ErrForbidden):
		result = "forbidden"
	case errors.Is(t.Err, ErrBusy):
		result = "busy"
	case errors.Is(t.Err, ErrSizeProbe):
		result = "size_probe"
	case t.Err != nil:
		result = "failed"
	}
	s.metrics.transfers.WithLabelValues(result).Inc()
	s.metrics.bytes.Add(float64(t.Bytes))
	level := slog.LevelInfo
	if t.Err != nil && result != "not_found" && result != "size_probe" {
		level = slog.LevelWarn
	}
	args := []any{"remote", t.Remote.String(), "file", t.Filename, "result", result, "bytes", t.Bytes, "duration", t.Duration}
	if t.Err != nil && result != "size_probe" {
		args = append(args, "error", t.Err)
	}
	s.log.Log(context.Background(), level, "tftp: read request", args...)
	if s.OnTransfer != nil {
		s.OnTransfer(t)
	}
}

// listen opens the UDP socket, bound to iface when one is named.
func listen(ctx context.Context, addr, iface string) (net.PacketConn, error) {
	lc := net.ListenConfig{}
	if iface != "" {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.BindToDevice(int(fd), iface)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return lc.ListenPacket(ctx, "udp", addr)
}

func enablePktinfo(conn net.PacketConn) {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return
	}
	if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil && !la.IP.IsUnspecified() {
		_ = ipv6.NewPacketConn(uc).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
		return
	}
	_ = ipv4.NewPacketConn(uc).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
}
