// Package dhcp is the DHCPv4 server of rackflow's PXE service: it answers only
// the MACs a workflow has registered (a Lease from the Backend), gives each one
// its reserved address and the next link of the boot chain (iPXE binary for the
// firmware, per-host iPXE script URL for iPXE), and can run as a proxyDHCP
// server beside an existing DHCP server.
//
// It is not a general DHCP server: it has no address pools, keeps no lease
// state of its own (the Backend is the only truth, so a removed lease stops
// being answered at once), and does not speak DHCPv6 or BOOTP without DHCP
// message types. It does not import the lease store; callers adapt it to
// Backend.
package dhcp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Lease is what the server hands one registered MAC.
type Lease struct {
	IP      net.IP
	Netmask net.IP // dotted form, e.g. 255.255.255.0
	Gateway net.IP // optional
	DNS     []net.IP
	// Hostname is sent as option 12 when set.
	Hostname string
	// Profile is "live", "disk" or "none". "none" is treated as unregistered:
	// the host gets no address and so falls through to its next boot device.
	Profile string
	// Expires is when the lease stops being served; zero means never. The
	// offered lease time never runs past it.
	Expires time.Time
}

// Answer describes a reply, for Server.OnAnswer.
type Answer struct {
	MAC net.HardwareAddr
	// Type is "offer", "ack" or "nak".
	Type string
	// IP is the address given (for a nak, the one asked for).
	IP       net.IP
	BootFile string
	// Proxy says the server answered as proxyDHCP (no address).
	Proxy bool
}

// Backend finds the lease of a MAC. found=false means the MAC is not
// registered; err is for a backend that could not answer.
type Backend interface {
	Lookup(ctx context.Context, mac net.HardwareAddr) (lease Lease, found bool, err error)
}

// ProfileNone is the lease profile that gets no answer.
const ProfileNone = "none"

// ErrConfig is wrapped by the errors Serve returns for an unusable config.
var ErrConfig = errors.New("dhcp: invalid config")

// BootFiles names the first boot program per client type. Empty BIOS and UEFI
// take their defaults; for the other fields empty means clients of that type
// get an address but no boot program.
type BootFiles struct {
	// BIOS is the TFTP file for legacy PXE ROMs (arch 0). Default "undionly.kpxe".
	BIOS string
	// UEFI is the TFTP file for x86 UEFI PXE (arch 6, 7, 9). Default "ipxe.efi".
	UEFI string
	// UEFIARM64 is the TFTP file for ARM64 UEFI PXE (arch 11). No default.
	UEFIARM64 string
	// HTTP is the full URL of the iPXE binary for UEFI HTTP boot clients
	// (option 60 "HTTPClient", arch 15/16), e.g.
	// "http://10.0.0.1:8080/files/ipxe.efi". No default.
	HTTP string
}

// Server is a DHCPv4 server for registered MACs. Set the fields, then call
// Serve; do not change them while it runs. The zero value (plus ServerIP)
// serves nobody: a nil Backend knows no MAC.
type Server struct {
	// Interface is the interface to bind to (SO_BINDTODEVICE), e.g. "br-mgmt".
	// Empty means all interfaces; then broadcast replies leave by the
	// interface the request came in on.
	Interface string
	// ListenAddr is the UDP address to listen on. Default "0.0.0.0:67".
	ListenAddr string
	// ServerIP is this server's address on the segment: the server
	// identifier (option 54) and next-server (siaddr). Required.
	ServerIP net.IP
	// Relays lists the DHCP relay agents (giaddr) whose forwarded requests
	// are answered. A request naming any other giaddr is ignored: the reply
	// would go to that address. Empty: no relays, only directly attached
	// clients are served.
	Relays []net.IP
	// Backend gives the lease of each MAC. Nil means no MAC is registered.
	Backend Backend
	// LeaseTime is the lease time offered (capped by Lease.Expires).
	// Default 1h.
	LeaseTime time.Duration
	// BootFiles is the first boot program per client architecture.
	BootFiles BootFiles
	// IPXEScriptURL is sent as boot file to clients that already run iPXE
	// (option 77 "iPXE" or option 175 present); "{mac}" is replaced by the
	// client's MAC in lower-case colon form, e.g.
	// "http://10.0.0.1:8080/boot/{mac}.ipxe". Empty means iPXE clients get
	// no boot file.
	IPXEScriptURL string
	// ProxyDHCP makes the server a proxyDHCP server (PXE spec 2.1): it
	// offers no address, answers only PXE/HTTP boot clients, and gives them
	// only the boot program. Another DHCP server must hand out addresses.
	ProxyDHCP bool
	// ProxyListenAddr is the PXE boot-server port listened on as well in
	// proxy mode, where iPXE sends its ProxyDHCPREQUEST. Default
	// "0.0.0.0:4011".
	ProxyListenAddr string
	// IgnoreLogInterval is how often at most an ignored MAC is logged.
	// Default 1 minute.
	IgnoreLogInterval time.Duration
	// Logger gets one line per answer and rate-limited lines for ignored
	// clients. Nil discards.
	Logger *slog.Logger
	// Registerer gets the server's metrics (rackflow_pxe_dhcp_*). Nil keeps
	// them unregistered.
	Registerer prometheus.Registerer
	// OnAnswer, when set, is told of every offer, ack and nak the server
	// is about to send (rackflow-pxe's boot timeline). It must not block.
	OnAnswer func(Answer)
	// Conn, when set, is used instead of listening on ListenAddr (tests,
	// socket activation). Serve closes it when ctx is cancelled.
	Conn net.PacketConn
	// ProxyConn, when set, replaces the ProxyListenAddr socket.
	ProxyConn net.PacketConn
	// Workers bounds the packets handled at once; while all are busy,
	// further packets wait in the socket's receive buffer. Default 64.
	Workers int

	// now is the clock; tests set it.
	now func() time.Time

	initOnce sync.Once
	initErr  error
	log      *slog.Logger
	metrics  *metrics
	ignored  *limiter
}

func (s *Server) init() error {
	s.initOnce.Do(func() {
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		if s.now == nil {
			s.now = time.Now
		}
		iv := s.IgnoreLogInterval
		if iv <= 0 {
			iv = time.Minute
		}
		s.ignored = newLimiter(iv, 4096)
		s.metrics = newMetrics()
		if s.Registerer != nil {
			s.initErr = s.metrics.register(s.Registerer)
		}
	})
	return s.initErr
}

func (s *Server) leaseTime() time.Duration {
	if s.LeaseTime > 0 {
		return s.LeaseTime
	}
	return time.Hour
}

func (s *Server) bootFiles() BootFiles {
	b := s.BootFiles
	if b.BIOS == "" {
		b.BIOS = "undionly.kpxe"
	}
	if b.UEFI == "" {
		b.UEFI = "ipxe.efi"
	}
	return b
}
