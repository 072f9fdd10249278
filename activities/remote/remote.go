// Package remote is rackflow's SSH client side: it dials a host's live system
// or installed OS with a key from the secrets store, pins the host key, waits
// for sshd to come up (WaitForSSH activity) and runs commands for the image
// and chef activities. It is not a general remote-execution layer: no agent
// forwarding, no port forwarding, no password logins, and no host key is ever
// trusted blindly, only on first use where the caller says so.
package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/secrets"
)

// Target says how to reach one sshd.
type Target struct {
	// Addr is host:port.
	Addr string `json:"addr"`
	// User logs in; "root" when empty.
	User string `json:"user,omitempty"`
	// Credential names a secret holding the private key.
	Credential string `json:"credential"`
	// HostKey is the expected host key in authorized_keys format. Empty is
	// accepted only by calls that explicitly allow trust on first use.
	HostKey string `json:"host_key,omitempty"`
	// Jump, when set, is an SSH server on the host's network through
	// which the connection is made (like ssh -J): bare-metal hosts are
	// not on the management network the worker is on. Its host key is
	// always pinned.
	Jump *Jump `json:"jump,omitempty"`
}

// Jump is a jump host: its address, login and pinned host key.
type Jump struct {
	Addr       string `json:"addr"`
	User       string `json:"user,omitempty"`
	Credential string `json:"credential"`
	HostKey    string `json:"host_key"`
}

var (
	// ErrNoHostKey is returned when a target has no pinned host key and
	// the caller did not allow trust on first use.
	ErrNoHostKey = errors.New("no host key pinned for target")
	// ErrBadHostKey is returned for a Target.HostKey that does not parse.
	ErrBadHostKey = errors.New("target host key is not in authorized_keys format")
	// ErrBadCredential is returned when the secret holds no usable key.
	ErrBadCredential = errors.New("credential holds no usable private key")
)

// HostKeyMismatchError says the server presented another host key than the
// pinned one: another machine, or the same one before or after a reinstall.
type HostKeyMismatchError struct {
	Addr string
	Want string // SHA256 fingerprint of the pinned key
	Got  string // SHA256 fingerprint of the key presented
}

func (e *HostKeyMismatchError) Error() string {
	return fmt.Sprintf("host key mismatch for %s: want %s, got %s", e.Addr, e.Want, e.Got)
}

// Ciphers in order of preference: AES-GCM is hardware-accelerated on the
// x86 and arm64 machines we run on, and makes image streaming several
// times faster than chacha20.
var Ciphers = []string{
	ssh.CipherAES128GCM,
	ssh.CipherAES256GCM,
	ssh.CipherChaCha20Poly1305,
	ssh.CipherAES128CTR,
	"aes256-ctr",
}

// Dialer opens SSH connections. The zero value needs only Secrets.
type Dialer struct {
	// Secrets resolves Target.Credential.
	Secrets secrets.Resolver
	// ConnectTimeout bounds the TCP connect; 10s when zero (or negative).
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds the SSH handshake and login; 30s when zero
	// (or negative).
	HandshakeTimeout time.Duration
	// KeepAlive is the interval of SSH keepalive requests on an open
	// connection, which detect a host that vanished mid-stream; 15s when
	// zero, negative to disable.
	KeepAlive time.Duration
	// DialContext opens the TCP connection; nil: a net.Dialer with
	// ConnectTimeout. (A lab dials from inside a network namespace; a
	// site could dial through a jump host.)
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Dial connects to t and logs in. t.HostKey must be set.
func (d *Dialer) Dial(ctx context.Context, t Target) (*ssh.Client, error) {
	c, _, err := d.dial(ctx, t, false)
	return c, err
}

// DialFirstUse is Dial that, when t.HostKey is empty, accepts whatever key
// the server presents and returns it, so the caller can record it. Use it
// only where an unpinned first contact is an explicit decision.
func (d *Dialer) DialFirstUse(ctx context.Context, t Target) (*ssh.Client, ssh.PublicKey, error) {
	return d.dial(ctx, t, true)
}

// ParseHostKey parses an authorized_keys-format key ("ssh-ed25519 AAAA...").
func ParseHostKey(s string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadHostKey, err)
	}
	return k, nil
}

// FormatHostKey renders a key in authorized_keys format, without newline.
func FormatHostKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// Signer resolves t's credential into a signer.
func (d *Dialer) Signer(ctx context.Context, t Target) (ssh.Signer, error) {
	if d.Secrets == nil {
		return nil, errors.New("remote: Dialer has no secrets resolver")
	}
	// Public-key login proves the key without sending it, so the key may
	// be bound to nothing; a key the secrets file binds must not be used
	// to log in to another address (Target.Addr comes from the input).
	sec, err := secrets.ResolveFor(ctx, d.Secrets, t.Credential, secrets.Use{Dest: t.Addr})
	if err != nil {
		return nil, fmt.Errorf("resolve credential %q: %w", t.Credential, err)
	}
	if sec.PrivateKey == "" {
		return nil, fmt.Errorf("credential %q: %w", t.Credential, ErrBadCredential)
	}
	signer, err := ssh.ParsePrivateKey([]byte(sec.PrivateKey))
	if err != nil {
		// The parse error never quotes the key, but say only what kind of
		// failure it was, to be safe.
		var pe *ssh.PassphraseMissingError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("credential %q: %w: key is passphrase-protected", t.Credential, ErrBadCredential)
		}
		return nil, fmt.Errorf("credential %q: %w: key does not parse", t.Credential, ErrBadCredential)
	}
	return signer, nil
}

func (d *Dialer) dial(ctx context.Context, t Target, allowFirstUse bool) (*ssh.Client, ssh.PublicKey, error) {
	var want ssh.PublicKey
	if t.HostKey != "" {
		k, err := ParseHostKey(t.HostKey)
		if err != nil {
			return nil, nil, err
		}
		want = k
	} else if !allowFirstUse {
		return nil, nil, fmt.Errorf("ssh %s: %w", t.Addr, ErrNoHostKey)
	}
	signer, err := d.Signer(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	user := t.User
	if user == "" {
		user = "root"
	}
	var got ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			got = key
			if want == nil {
				return nil // first use, allowed by the caller
			}
			if !bytes.Equal(key.Marshal(), want.Marshal()) {
				return &HostKeyMismatchError{Addr: t.Addr, Want: ssh.FingerprintSHA256(want), Got: ssh.FingerprintSHA256(key)}
			}
			return nil
		},
		Config:  ssh.Config{Ciphers: Ciphers},
		Timeout: activities.OrDefault(d.ConnectTimeout, 10*time.Second),
	}
	if want != nil {
		// Ask for the pinned key's algorithm so a server with several host
		// keys presents the one we know.
		cfg.HostKeyAlgorithms = hostKeyAlgorithms(want)
	}

	dial := d.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: cfg.Timeout}).DialContext
	}
	var jump *ssh.Client
	if j := t.Jump; j != nil {
		if j.HostKey == "" {
			return nil, nil, fmt.Errorf("ssh jump host %s: %w", j.Addr, ErrNoHostKey)
		}
		if jump, _, err = d.dial(ctx, Target{Addr: j.Addr, User: j.User, Credential: j.Credential, HostKey: j.HostKey}, false); err != nil {
			return nil, nil, fmt.Errorf("via jump host: %w", err)
		}
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := jump.DialContext(ctx, network, addr)
			if err != nil {
				return nil, fmt.Errorf("via jump host %s: %w", j.Addr, err)
			}
			return c, nil
		}
	}
	dctx, cancelDial := context.WithTimeout(ctx, cfg.Timeout)
	conn, err := dial(dctx, "tcp", t.Addr)
	cancelDial()
	if err != nil {
		if jump != nil {
			jump.Close()
		}
		return nil, nil, fmt.Errorf("ssh %s: %w", t.Addr, err)
	}
	if jump != nil {
		// The target's connection rides on the jump host's: closing it
		// closes both.
		conn = &jumpConn{Conn: conn, jump: jump}
	}
	hsTimeout := activities.OrDefault(d.HandshakeTimeout, 30*time.Second)
	_ = conn.SetDeadline(time.Now().Add(hsTimeout))
	if jump != nil {
		// No deadlines on a forwarded channel: a timer closes it.
		timer := time.AfterFunc(hsTimeout, func() { conn.Close() })
		defer timer.Stop()
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		conn.Close()
		return nil, nil, fmt.Errorf("ssh %s: %w", t.Addr, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("ssh %s: %w", t.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	client := ssh.NewClient(sc, chans, reqs)
	if d.KeepAlive >= 0 { // negative: off
		go keepAlive(client, activities.OrDefault(d.KeepAlive, 15*time.Second))
	}
	return client, got, nil
}

// jumpConn is a connection through a jump host, which it closes with it.
type jumpConn struct {
	net.Conn
	jump *ssh.Client
}

func (c *jumpConn) Close() error {
	err := c.Conn.Close()
	c.jump.Close()
	return err
}

// SetDeadline: a channel through a jump host has no deadlines (x/crypto/ssh
// returns an error); the handshake is bounded by the context instead.
func (c *jumpConn) SetDeadline(t time.Time) error {
	_ = c.Conn.SetDeadline(t)
	return nil
}

func hostKeyAlgorithms(k ssh.PublicKey) []string {
	switch k.Type() {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	default:
		return []string{k.Type()}
	}
}

// keepAlive closes the client when the server stops answering, so a stream
// to a dead host fails instead of hanging until the activity times out.
func keepAlive(c *ssh.Client, every time.Duration) {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		replied := make(chan struct{})
		go func() {
			_, _, _ = c.SendRequest("keepalive@openssh.com", true, nil)
			close(replied)
		}()
		select {
		case <-replied:
		case <-done:
			return
		case <-time.After(3 * every):
			c.Close()
			return
		}
	}
}
