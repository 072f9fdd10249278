package bmc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"strconv"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/bmclib/v2/providers/ipmitool"
	"github.com/bmc-toolbox/bmclib/v2/providers/redfish"

	"github.com/rackflow/rackflow/api"
)

// Client is what the activities need of a BMC. *bmclib.Client has these
// methods; tests may pass a hand-written fake for what a real BMC will not
// do on demand.
type Client interface {
	Open(ctx context.Context) error
	Close(ctx context.Context) error
	// GetPowerState returns the provider's text: "Chassis Power is on" from
	// ipmitool, "On" from Redfish.
	GetPowerState(ctx context.Context) (string, error)
	// SetPowerState takes "on", "off", "cycle" or "reset".
	SetPowerState(ctx context.Context, state string) (bool, error)
	SetBootDevice(ctx context.Context, device string, persistent, efiBoot bool) (bool, error)
}

// Conn is what a ClientFunc needs to reach one BMC. Its credential has
// passed the secrets file's endpoint binding for Host and Port.
type Conn struct {
	Host     string
	Port     int
	Provider string // "ipmi" or "redfish"
	User     string
	Password string
	// TLS verifies a Redfish BMC's certificate (see RedfishTLS); nil for
	// IPMI, which has no TLS.
	TLS *tls.Config
}

// String redacts the password, so a logged Conn does not leak it.
func (c Conn) String() string {
	return fmt.Sprintf("bmc.Conn{%s %s user=%s}", c.Provider, net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), c.User)
}

// ClientFunc builds a Client for one BMC. It must not contact the BMC (the
// activity calls Open) and must not retry: Temporal owns retries.
type ClientFunc func(ctx context.Context, c Conn) (Client, error)

// BMCLib is the default ClientFunc: a bmclib client restricted to one
// provider, ipmitool for "ipmi" (the ipmitool binary must be installed) and
// gofish for "redfish". Redfish runs over an HTTP client of ours that
// verifies the BMC's certificate with c.TLS (bmclib's own skips it) and
// notes what the BMC answered (see redfishClient).
func BMCLib(_ context.Context, c Conn) (Client, error) {
	var opts []bmclib.Option
	var driver string
	switch c.Provider {
	case "ipmi":
		// bmclib registers no ipmitool provider, silently, without it.
		if _, err := exec.LookPath("ipmitool"); err != nil {
			return nil, fmt.Errorf("ipmitool is not installed on this worker (Debian package ipmitool): %w", err)
		}
		opts = append(opts, bmclib.WithIpmitoolPort(strconv.Itoa(c.Port)))
		driver = ipmitool.ProviderName
	case "redfish":
		if c.TLS == nil {
			return nil, errors.New("redfish needs a TLS configuration")
		}
		// bmclib gives its gofish provider a copy of the client-wide
		// HTTP client (WithRedfishHTTPClient is not used by v2.3.5), so
		// the verifying transport goes there.
		hc, rt := redfishHTTPClient(c.TLS)
		bc := bmclib.NewClient(c.Host, c.User, c.Password, bmclib.WithRedfishPort(strconv.Itoa(c.Port)), bmclib.WithHTTPClient(hc))
		bc.Registry.Drivers = bc.Registry.For(redfish.ProviderName)
		if len(bc.Registry.Drivers) == 0 {
			return nil, fmt.Errorf("bmclib has no %s provider", redfish.ProviderName)
		}
		return &redfishClient{Client: bc, t: rt, hc: hc, base: "https://" + net.JoinHostPort(c.Host, strconv.Itoa(c.Port))}, nil
	default:
		return nil, fmt.Errorf("unknown bmc provider %q", c.Provider)
	}
	bc := bmclib.NewClient(c.Host, c.User, c.Password, opts...)
	bc.Registry.Drivers = bc.Registry.For(driver)
	if len(bc.Registry.Drivers) == 0 {
		return nil, fmt.Errorf("bmclib has no %s provider", driver)
	}
	return bc, nil
}

// redfishHTTPClient is bmclib's default client for a BMC (no keep-alives,
// a cookie jar, generous timeouts: BMCs are slow) with verified TLS, over
// a transport that notes what the BMC answered. Calls are bounded by the
// activity's CallTimeout too.
func redfishHTTPClient(cfg *tls.Config) (*http.Client, *redfishTransport) {
	jar, _ := cookiejar.New(nil)
	rt := &redfishTransport{tls: cfg, dialer: &net.Dialer{Timeout: 30 * time.Second}}
	return &http.Client{Timeout: 120 * time.Second, Jar: jar, Transport: &http.Transport{
		TLSClientConfig:       cfg,
		DisableKeepAlives:     true,
		DialContext:           rt.dialer.DialContext,
		DialTLSContext:        rt.dialTLS,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 120 * time.Second,
	}}, rt
}

// ErrUntrustedCert is the failure of a Redfish BMC whose certificate is
// not the pinned one.
var ErrUntrustedCert = errors.New("bmc certificate does not match pin_sha256")

// RedfishTLS is how a Redfish BMC's certificate is verified: against
// b.CAFile (chain and name) when set, else the system roots, unless
// b.PinSHA256 is set alone, which trusts that one certificate (a BMC's
// stock one is self-signed, for no name). With both, both must hold.
func RedfishTLS(b api.BMC) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.CAFile != "" {
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bmc.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bmc.ca_file %s: no PEM certificate in it", b.CAFile)
		}
		cfg.RootCAs = pool
	}
	if b.PinSHA256 == "" {
		return cfg, nil
	}
	pin := api.NormalizePin(b.PinSHA256)
	if pin == "" {
		return nil, fmt.Errorf("bmc.pin_sha256 %q: not a SHA-256", b.PinSHA256)
	}
	if b.CAFile == "" {
		// The pin replaces chain and name checks; VerifyConnection below
		// is then the only check, and it runs on every handshake.
		cfg.InsecureSkipVerify = true
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return ErrUntrustedCert
		}
		sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if got := hex.EncodeToString(sum[:]); got != pin {
			return fmt.Errorf("%w: it presented %s", ErrUntrustedCert, got)
		}
		return nil
	}
	return cfg, nil
}
