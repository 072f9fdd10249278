package secrets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Errors of ResolveFor, beside ErrNotFound. Activities turn both into
// non-retryable errors: the secrets file, not a retry, has to change.
var (
	// ErrNotAllowed means the secret is bound to other endpoints than the
	// one it was about to be sent to.
	ErrNotAllowed = errors.New("secret not allowed for this endpoint")
	// ErrUnbound means a secret that would be disclosed to its peer names
	// no endpoint at all: the secrets file must say where it may go.
	ErrUnbound = errors.New("secret bound to no endpoint")
	// ErrCleartext means a secret would cross the network unencrypted.
	ErrCleartext = errors.New("secret would be sent in the clear")
)

// Use says where a resolved secret is about to go.
type Use struct {
	// Dest is the peer: a URL ("https://ns1.dmz.internal/nitro/v1") or an
	// address ("10.20.0.7:623", "10.20.0.7").
	Dest string
	// Discloses is true when the peer learns the secret or something it can
	// replay: a password in a login or basic auth, an IPMI or CloudStack
	// key, a chef validator key copied to the node. SSH public-key login
	// proves the key without sending it, so it does not disclose.
	Discloses bool
}

// ResolveFor resolves ref and checks it may be sent to u.Dest: when the
// secret lists endpoints, u.Dest must match one; a secret that u discloses
// must list some, and must not travel over plain http beyond loopback.
// Workflow inputs name endpoints and references together, so this check —
// against the worker's own secrets file — is what keeps a workflow starter
// from sending a credential to an address of their choosing.
func ResolveFor(ctx context.Context, r Resolver, ref string, u Use) (Secret, error) {
	s, err := r.Resolve(ctx, ref)
	if err != nil {
		return Secret{}, err
	}
	if err := s.Allows(u); err != nil {
		return Secret{}, fmt.Errorf("secret %q to %s: %w", ref, u.Dest, err)
	}
	return s, nil
}

// Allows reports whether the secret may be used as u says (see ResolveFor).
func (s Secret) Allows(u Use) error {
	d, err := parseDest(u.Dest)
	if err != nil {
		return fmt.Errorf("%w: destination %q: %v", ErrNotAllowed, u.Dest, err)
	}
	if u.Discloses && d.scheme == "http" && !isLoopback(d.host) {
		return fmt.Errorf("%w: use https", ErrCleartext)
	}
	if len(s.Endpoints) == 0 {
		if u.Discloses {
			return fmt.Errorf("%w: list where it may be sent under endpoints: in the secrets file", ErrUnbound)
		}
		return nil
	}
	for _, p := range s.Endpoints {
		if matchPattern(p, d) {
			return nil
		}
	}
	return fmt.Errorf("%w: the secrets file binds it to %s", ErrNotAllowed, strings.Join(s.Endpoints, ", "))
}

// dest is a parsed destination. port is empty when the destination gave
// none and no scheme implies one.
type dest struct {
	scheme, host, port, path string
}

var defaultPorts = map[string]string{"https": "443", "http": "80", "ssh": "22"}

func parseDest(s string) (dest, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return dest{}, err
		}
		if u.Host == "" {
			return dest{}, errors.New("no host")
		}
		if u.User != nil {
			return dest{}, errors.New("a URL with user information")
		}
		d := dest{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: u.Port(), path: u.Path}
		if d.port == "" {
			d.port = defaultPorts[d.scheme]
		}
		return d, nil
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		return dest{host: strings.ToLower(h), port: p}, nil
	}
	if s == "" || strings.ContainsAny(s, "/ ") {
		return dest{}, errors.New("not a URL or host[:port]")
	}
	return dest{host: strings.ToLower(strings.Trim(s, "[]"))}, nil
}

// checkPattern validates one entry of a secret's endpoints.
func checkPattern(p string) error {
	if p == "*" {
		return nil
	}
	if strings.Contains(p, "/") && !strings.Contains(p, "://") {
		if _, err := netip.ParsePrefix(p); err != nil {
			return fmt.Errorf("%q: not a CIDR: %v", p, err)
		}
		return nil
	}
	d, err := parseDest(p)
	if err != nil {
		return fmt.Errorf("%q: %v (want https://host[:port][/path], host[:port], a CIDR or *)", p, err)
	}
	if d.host == "*" || strings.Contains(d.host, "*") {
		return fmt.Errorf("%q: wildcards in names are not supported; list the hosts or give a CIDR", p)
	}
	return nil
}

// matchPattern: "*" matches all; a CIDR matches a destination whose host is
// an IP inside it; a URL matches the same scheme, host and port with a path
// under its own; host[:port] matches that host (and port, if given).
func matchPattern(p string, d dest) bool {
	if p == "*" {
		return true
	}
	if strings.Contains(p, "/") && !strings.Contains(p, "://") {
		pfx, err := netip.ParsePrefix(p)
		ip, ipErr := netip.ParseAddr(d.host)
		return err == nil && ipErr == nil && pfx.Contains(ip.Unmap())
	}
	pd, err := parseDest(p)
	if err != nil || pd.host != d.host {
		return false
	}
	if pd.scheme != "" && pd.scheme != d.scheme {
		return false
	}
	if pd.port != "" && pd.port != d.port {
		return false
	}
	if pd.scheme != "" {
		prefix := strings.TrimSuffix(pd.path, "/")
		return d.path == prefix || strings.HasPrefix(d.path, prefix+"/")
	}
	return true
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func stampOf(st fs.FileInfo) fileStamp {
	s := fileStamp{mtime: st.ModTime().UnixNano(), size: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s
}
