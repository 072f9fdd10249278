package nitro

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
)

// Service types NITRO accepts for servicegroup and lbvserver that rackflow
// may ask for (NITRO reference, "Possible values"). LB methods are the one
// list in api.LBMethods. Types that terminate TLS on the vserver (SSL,
// SSL_TCP, DTLS, SIP_SSL, SSL_DIAMETER, MONGO_TLS, USER_SSL_TCP, QUIC) are
// left out: such a vserver stays DOWN until a certificate is bound
// (sslvserver_sslcertkey_binding), which rackflow does not do. SSL_BRIDGE
// passes TLS through to the backends and needs none.
var serviceTypes = []string{"HTTP", "FTP", "TCP", "UDP", "SSL_BRIDGE", "NNTP",
	"DNS", "DNS_TCP", "ANY", "SIP_UDP", "SIP_TCP", "RTSP", "RDP", "MYSQL", "MSSQL",
	"ORACLE", "MONGO", "RADIUS", "DIAMETER", "TFTP", "SMPP", "SYSLOGTCP",
	"SYSLOGUDP", "USER_TCP", "LDAP"}

// NetScaler entity names: a letter, digit or underscore, then letters,
// digits and _ # . space : @ = -; at most 127 characters.
var pinRE = regexp.MustCompile(`^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$`)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_#. :@=-]{0,126}$`)

// validate joins the failed checks into one non-retryable InvalidInput.
func validate(errs ...error) error {
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return temporal.NewNonRetryableApplicationError("invalid input: "+strings.Join(msgs, "; "), activities.ErrInvalidInput, nil)
}

func checkTarget(t Target) error {
	u, err := url.Parse(t.URL)
	switch {
	case t.URL == "":
		return errors.New("target.url: required")
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return fmt.Errorf("target.url: %q is not an http(s) URL", t.URL)
	case u.User != nil:
		return errors.New("target.url: must not carry user info; use target.credential")
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "":
		return fmt.Errorf("target.url: %q must be scheme://host[:port] only", t.URL)
	case t.Credential == "":
		return errors.New("target.credential: required")
	case t.Auth != "" && t.Auth != string(nitroclient.AuthSession) && t.Auth != string(nitroclient.AuthHeader):
		return fmt.Errorf("target.auth: %q is neither session nor header", t.Auth)
	case t.Partition != "" && t.Auth == string(nitroclient.AuthHeader):
		return errors.New("target.partition: needs session auth (a partition switch belongs to a session)")
	case t.Partition != "" && !nameRE.MatchString(t.Partition):
		return fmt.Errorf("target.partition: %q is not a partition name", t.Partition)
	case t.PinSHA256 != "" && !pinRE.MatchString(t.PinSHA256):
		return errors.New("target.pin_sha256: not a hex SHA-256 (64 hex digits, colons allowed)")
	}
	if t.CA != "" {
		rest := []byte(t.CA)
		n := 0
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return fmt.Errorf("target.ca: certificate %d: %v", n+1, err)
			}
			n++
		}
		if n == 0 {
			return errors.New("target.ca: no PEM certificate")
		}
	}
	return nil
}

func checkOwner(owner string) error {
	switch {
	case owner == "":
		return errors.New("owner: required (the workflow ID)")
	case len(Marker(owner)) > 256:
		return errors.New("owner: too long for a NetScaler comment (256)")
	case strings.IndexFunc(owner, func(r rune) bool { return !unicode.IsPrint(r) || r == '"' || r == '\\' }) >= 0:
		return fmt.Errorf("owner: %q has characters a NetScaler comment cannot hold", owner)
	}
	return nil
}

func checkName(f, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s: %q is not a NetScaler name (letter, digit or _ first; then letters, digits, _ # . space : @ = -; at most 127)", f, name)
	}
	return nil
}

func checkOwnedName(f, name, owner string) error {
	if err := checkName(f, name); err != nil {
		return err
	}
	if owner != "" && !strings.HasPrefix(name, NamePrefix(owner)) {
		return fmt.Errorf("%s: %q must start with %q: this type has no comment, so the name carries the owner (use nitro.OwnedName)", f, name, NamePrefix(owner))
	}
	return nil
}

func checkEnum(f, v string, allowed []string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%s: %q is not one of %s", f, v, strings.Join(allowed, ", "))
	}
	return nil
}

// checkIP accepts a plain IPv4 or IPv6 address; the unspecified address only if anyOK.
func checkIP(f, s string, anyOK bool) error {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%s: %q is not an IP address", f, s)
	}
	if a.IsUnspecified() && !anyOK {
		return fmt.Errorf("%s: %s is not usable here", f, s)
	}
	return nil
}

func checkNetmask(f, s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return fmt.Errorf("%s: %q is not an IPv4 netmask", f, s)
	}
	b := a.As4()
	inv := ^(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	if inv&(inv+1) != 0 {
		return fmt.Errorf("%s: %s is not a contiguous netmask", f, s)
	}
	return nil
}

func checkPort(f string, p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%s: %d is not a port (1-65535)", f, p)
	}
	return nil
}

func checkWeight(f string, w int) error {
	if w < 0 || w > 100 {
		return fmt.Errorf("%s: %d is not a weight (1-100, 0 for the default)", f, w)
	}
	return nil
}
