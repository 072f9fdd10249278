package dhcp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Reasons a packet gets no reply; the values label rackflow_pxe_dhcp_ignored_total.
const (
	reasonMalformed    = "malformed"
	reasonUnsupported  = "unsupported"
	reasonUnregistered = "unregistered"
	reasonExpired      = "expired"
	reasonProfileNone  = "profile_none"
	reasonBadLease     = "bad_lease"
	reasonBackendError = "backend_error"
	reasonOtherServer  = "other_server"
	reasonNotPXE       = "not_pxe"
	reasonUnknownRelay = "unknown_relay"
)

// Vendor classes (option 60) of network-boot clients.
const (
	classPXE  = "PXEClient"
	classHTTP = "HTTPClient"
)

// optionIPXEEncap is option 175, iPXE's encapsulated options; only iPXE sends it.
const optionIPXEEncap = dhcpv4.GenericOptionCode(175)

// handleBytes parses one received datagram and returns the reply to send, or
// nil. onProxyPort says it came in on the PXE boot-server port (4011).
func (s *Server) handleBytes(ctx context.Context, b []byte, onProxyPort bool) *dhcpv4.DHCPv4 {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.metrics.ignored.WithLabelValues(reasonMalformed).Inc()
		s.log.Debug("dhcp: unparsable packet", "error", err, "len", len(b))
		return nil
	}
	return s.handle(ctx, req, onProxyPort)
}

// handle decides the reply to one request; nil means no reply. It sends
// nothing itself, so tests and the fuzzer can call it directly.
func (s *Server) handle(ctx context.Context, req *dhcpv4.DHCPv4, onProxyPort bool) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		s.metrics.ignored.WithLabelValues(reasonMalformed).Inc()
		return nil
	}
	mac := req.ClientHWAddr
	log := s.log.With("mac", mac.String(), "xid", req.TransactionID.String())
	mt := req.MessageType()
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() && !s.isRelay(gi) {
		// Replies go to giaddr: an unknown one would let anyone on the
		// segment aim our answers (and the lease in them) at any address.
		s.ignore(log, mac, reasonUnknownRelay, "giaddr", gi.String())
		return nil
	}

	switch mt {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
	case dhcpv4.MessageTypeRelease:
		// Every address is a reservation: nothing to free.
		if !s.ProxyDHCP {
			log.Info("dhcp: release", "ip", req.ClientIPAddr.String())
		}
		return nil
	case dhcpv4.MessageTypeDecline:
		if !s.ProxyDHCP {
			// The client found our address in use: someone else on the
			// segment has it. Worth an operator's look.
			log.Warn("dhcp: client declined its address, it is probably in use by another host",
				"ip", req.RequestedIPAddress().String())
		}
		return nil
	default:
		s.metrics.ignored.WithLabelValues(reasonUnsupported).Inc()
		return nil
	}

	if s.ProxyDHCP {
		return s.handleProxy(ctx, log, req, onProxyPort)
	}

	if mt == dhcpv4.MessageTypeRequest {
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.ServerIP) {
			// The client chose another server's offer.
			s.metrics.ignored.WithLabelValues(reasonOtherServer).Inc()
			return nil
		}
	}

	lease, ok := s.lookup(ctx, log, mac)
	if !ok {
		return nil
	}
	if lease.IP.To4() == nil || lease.Netmask.To4() == nil {
		s.ignore(log, mac, reasonBadLease, "ip", lease.IP.String(), "netmask", lease.Netmask.String())
		return nil
	}

	switch mt {
	case dhcpv4.MessageTypeDiscover:
		return s.answer(log, req, dhcpv4.MessageTypeOffer, lease)
	case dhcpv4.MessageTypeInform:
		return s.answer(log, req, dhcpv4.MessageTypeAck, lease)
	}

	// REQUEST: SELECTING and INIT-REBOOT name the address in option 50,
	// RENEWING and REBINDING in ciaddr.
	asked := req.RequestedIPAddress()
	if asked == nil || asked.IsUnspecified() {
		asked = req.ClientIPAddr
	}
	if asked == nil || !asked.Equal(lease.IP) {
		return s.nak(log, req, asked, lease)
	}
	return s.answer(log, req, dhcpv4.MessageTypeAck, lease)
}

// isRelay reports whether gi is one of the configured relay agents.
func (s *Server) isRelay(gi net.IP) bool {
	for _, r := range s.Relays {
		if r.Equal(gi) {
			return true
		}
	}
	return false
}

// lookup returns the lease to serve mac, or ok=false after counting and
// (rate-limited) logging why it is not served.
func (s *Server) lookup(ctx context.Context, log *slog.Logger, mac net.HardwareAddr) (Lease, bool) {
	if s.Backend == nil {
		s.ignore(log, mac, reasonUnregistered)
		return Lease{}, false
	}
	lease, found, err := s.Backend.Lookup(ctx, mac)
	switch {
	case err != nil:
		s.ignore(log, mac, reasonBackendError, "error", err)
		return Lease{}, false
	case !found:
		s.ignore(log, mac, reasonUnregistered)
		return Lease{}, false
	case !lease.Expires.IsZero() && !s.now().Before(lease.Expires):
		s.ignore(log, mac, reasonExpired, "expired", lease.Expires)
		return Lease{}, false
	case lease.Profile == ProfileNone:
		s.ignore(log, mac, reasonProfileNone)
		return Lease{}, false
	}
	return lease, true
}

// ignore counts a packet left unanswered and logs it at most once per MAC
// and reason per IgnoreLogInterval.
func (s *Server) ignore(log *slog.Logger, mac net.HardwareAddr, reason string, args ...any) {
	s.metrics.ignored.WithLabelValues(reason).Inc()
	if s.ignored.allow(mac.String()+"/"+reason, s.now()) {
		log.Info("dhcp: not answering (logged once per interval)", append([]any{"reason", reason}, args...)...)
	}
}

// newReply starts a reply to req from this server.
func (s *Server) newReply(log *slog.Logger, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.ServerIP.To4())),
	)
	if err != nil {
		// Only a failing random source for the (then overwritten) xid gets here.
		log.Error("dhcp: build reply", "error", err)
		return nil
	}
	return r
}

// answer builds the OFFER or ACK giving lease to req's client.
func (s *Server) answer(log *slog.Logger, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, lease Lease) *dhcpv4.DHCPv4 {
	r := s.newReply(log, req, mt)
	if r == nil {
		return nil
	}
	inform := req.MessageType() == dhcpv4.MessageTypeInform
	if !inform {
		// INFORM: the client has its address already and gets no lease (RFC 2131 4.3.5).
		r.YourIPAddr = lease.IP.To4()
		lt := s.leaseTime()
		if !lease.Expires.IsZero() {
			if left := lease.Expires.Sub(s.now()).Truncate(time.Second); left < lt {
				lt = max(left, time.Second)
			}
		}
		r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		r.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
		r.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	}
	r.UpdateOption(dhcpv4.OptSubnetMask(net.IPMask(lease.Netmask.To4())))
	if gw := lease.Gateway.To4(); gw != nil && !gw.IsUnspecified() {
		r.UpdateOption(dhcpv4.OptRouter(gw))
	}
	var dns []net.IP
	for _, d := range lease.DNS {
		if d4 := d.To4(); d4 != nil {
			dns = append(dns, d4)
		}
	}
	if len(dns) > 0 {
		r.UpdateOption(dhcpv4.OptDNS(dns...))
	}
	if lease.Hostname != "" {
		r.UpdateOption(dhcpv4.OptHostName(lease.Hostname))
	}
	r.ServerIPAddr = s.ServerIP.To4()
	file, class := s.bootFile(req)
	s.addBoot(r, req, file, class)

	s.metrics.replies.WithLabelValues(metricType(mt)).Inc()
	s.tell(Answer{MAC: req.ClientHWAddr, Type: metricType(mt), IP: lease.IP, BootFile: file})
	log.Info("dhcp: answer", "type", mt.String(), "request", req.MessageType().String(),
		"ip", lease.IP.String(), "profile", lease.Profile, "boot_file", file)
	return r
}

// tell hands a to OnAnswer, if set.
func (s *Server) tell(a Answer) {
	if s.OnAnswer != nil {
		s.OnAnswer(a)
	}
}

// nak refuses a REQUEST for an address that is not the client's lease.
func (s *Server) nak(log *slog.Logger, req *dhcpv4.DHCPv4, asked net.IP, lease Lease) *dhcpv4.DHCPv4 {
	r := s.newReply(log, req, dhcpv4.MessageTypeNak)
	if r == nil {
		return nil
	}
	r.UpdateOption(dhcpv4.OptMessage("requested address is not this client's reservation"))
	if !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil {
		r.SetBroadcast() // RFC 2131 4.3.2: relay must broadcast the NAK
	}
	s.metrics.replies.WithLabelValues("nak").Inc()
	s.tell(Answer{MAC: req.ClientHWAddr, Type: "nak", IP: asked})
	log.Info("dhcp: nak", "asked", asked.String(), "reserved", lease.IP.String())
	return r
}

// handleProxy answers as a proxyDHCP server: boot program only, no address.
func (s *Server) handleProxy(ctx context.Context, log *slog.Logger, req *dhcpv4.DHCPv4, onProxyPort bool) *dhcpv4.DHCPv4 {
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// On port 67 a REQUEST is for the server that gives addresses,
		// unless it names us; on 4011 it is a ProxyDHCPREQUEST for us.
		if sid := req.ServerIdentifier(); !onProxyPort && (sid == nil || !sid.Equal(s.ServerIP)) {
			s.metrics.ignored.WithLabelValues(reasonOtherServer).Inc()
			return nil
		}
		mt = dhcpv4.MessageTypeAck
	default:
		s.metrics.ignored.WithLabelValues(reasonUnsupported).Inc()
		return nil
	}
	_, class := s.bootFile(req)
	if class == "" {
		// Not a network-boot client: the other DHCP server's business.
		s.metrics.ignored.WithLabelValues(reasonNotPXE).Inc()
		return nil
	}
	lease, ok := s.lookup(ctx, log, req.ClientHWAddr)
	if !ok {
		return nil
	}
	r := s.newReply(log, req, mt)
	if r == nil {
		return nil
	}
	r.ServerIPAddr = s.ServerIP.To4()
	file, _ := s.bootFile(req)
	s.addBoot(r, req, file, class)
	s.metrics.replies.WithLabelValues(metricType(mt)).Inc()
	s.tell(Answer{MAC: req.ClientHWAddr, Type: metricType(mt), BootFile: file, Proxy: true})
	log.Info("dhcp: proxy answer", "type", mt.String(), "profile", lease.Profile, "boot_file", file)
	return r
}

// addBoot puts the boot program and the PXE options in r.
func (s *Server) addBoot(r, req *dhcpv4.DHCPv4, file, class string) {
	if file != "" {
		r.UpdateOption(dhcpv4.OptBootFileName(file))
		if len(file) < 128 { // the legacy field holds 127 bytes and a NUL
			r.BootFileName = file
		}
		if !strings.Contains(file, "://") {
			r.UpdateOption(dhcpv4.OptTFTPServerName(s.ServerIP.String()))
		}
	}
	if class == "" {
		return
	}
	// PXE and HTTP boot clients only take offers that carry their class back.
	r.UpdateOption(dhcpv4.OptClassIdentifier(class))
	if class == classPXE {
		// Option 43, PXE_DISCOVERY_CONTROL (6) = 8: boot the file named
		// here, skip boot server discovery.
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	if guid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); len(guid) == 17 {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
}

// bootFile returns the boot program for req's client and the vendor class
// to answer with; both empty for a client that is not network-booting.
func (s *Server) bootFile(req *dhcpv4.DHCPv4) (file, class string) {
	vc := req.ClassIdentifier()
	switch {
	case strings.HasPrefix(vc, classHTTP):
		class = classHTTP
	case strings.HasPrefix(vc, classPXE):
		class = classPXE
	}
	if isIPXE(req) {
		return strings.ReplaceAll(s.IPXEScriptURL, "{mac}", req.ClientHWAddr.String()), class
	}
	if class == "" {
		return "", ""
	}
	bf := s.bootFiles()
	arch := iana.INTEL_X86PC // PXE ROMs that omit option 93 are old BIOS ones
	if archs := req.ClientArch(); len(archs) > 0 {
		arch = archs[0]
	}
	switch arch {
	case iana.EFI_X86_HTTP, iana.EFI_X86_64_HTTP:
		return bf.HTTP, classHTTP
	}
	if class == classHTTP {
		return "", class // HTTP boot of an architecture we have no binary for
	}
	switch arch {
	case iana.INTEL_X86PC:
		return bf.BIOS, class
	case iana.EFI_IA32, iana.EFI_X86_64, iana.EFI_BC:
		return bf.UEFI, class
	case iana.EFI_ARM64:
		return bf.UEFIARM64, class
	}
	return "", class
}

// isIPXE says the client already runs iPXE: it sends user class "iPXE"
// (option 77, raw or RFC 3004 encoded) or its option 175.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	return bytes.Contains(req.GetOneOption(dhcpv4.OptionUserClassInformation), []byte("iPXE")) ||
		req.Options.Has(optionIPXEEncap)
}

func metricType(mt dhcpv4.MessageType) string {
	switch mt {
	case dhcpv4.MessageTypeOffer:
		return "offer"
	case dhcpv4.MessageTypeAck:
		return "ack"
	case dhcpv4.MessageTypeNak:
		return "nak"
	}
	return "other"
}
