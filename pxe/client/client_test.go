package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/testpki"
	"golang.org/x/crypto/ssh"
)

const token = "client-test-token"

// newClient is client.New with default options; it fails the test on an
// error.
func newClient(t *testing.T, base, tok string) *client.Client {
	t.Helper()
	c, err := client.New(base, tok, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startPXE runs a real pxe API on loopback and returns its URL.
func startPXE(t *testing.T) string {
	t.Helper()
	return startPXEWith(t, nil)
}

// startPXEWith is startPXE with the server changed by tweak first.
func startPXEWith(t *testing.T, tweak func(*pxe.APIServer)) string {
	t.Helper()
	store, err := pxe.OpenStore(pxe.StoreConfig{Path: t.TempDir() + "/leases.json"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &pxe.APIServer{Listener: ln, Token: token, Store: store}
	scheme := "http://"
	if tweak != nil {
		tweak(srv)
		if srv.TLSCertFile != "" {
			scheme = "https://"
		}
	}
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		store.Close()
	})
	return scheme + ln.Addr().String()
}

func testLease(t *testing.T, mac, ip string) lease.Lease {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return lease.Lease{
		MAC: mac, IP: ip, Netmask: "255.255.255.0", Gateway: "10.0.0.1", Hostname: "node07",
		Profile: lease.ProfileLive, BootID: "boot-1",
		SSHAuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))},
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, startPXE(t)+"/", token)

	put, err := c.Put(ctx, testLease(t, "52:54:00:AA:BB:01", "10.0.0.7"))
	if err != nil {
		t.Fatal(err)
	}
	if put.MAC != "52:54:00:aa:bb:01" || !strings.HasPrefix(put.HostKey, "ssh-ed25519 ") || put.UpdatedAt.IsZero() {
		t.Fatalf("Put answered %+v", put)
	}
	// PUTting back what Put returned (output fields included) changes nothing.
	again, err := c.Put(ctx, put)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(put, again); diff != "" {
		t.Errorf("repeated Put (-first +second):\n%s", diff)
	}
	got, err := c.Get(ctx, "52-54-00-aa-bb-01")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(put, got); diff != "" {
		t.Errorf("Get (-put +get):\n%s", diff)
	}
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]lease.Lease{put}, list); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	for range 2 {
		if err := c.Delete(ctx, put.MAC); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if _, err := c.Get(ctx, put.MAC); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
}

func TestTypedErrors(t *testing.T) {
	ctx := context.Background()
	base := startPXE(t)
	c := newClient(t, base, token)
	if _, err := c.Put(ctx, testLease(t, "52:54:00:aa:bb:01", "10.0.0.7")); err != nil {
		t.Fatal(err)
	}
	sentinels := []error{client.ErrBadInput, client.ErrUnauthorized, client.ErrNotFound, client.ErrConflict}

	tests := map[string]struct {
		call   func() error
		want   error
		status int
		field  string
	}{
		"bad ip": {
			call: func() error { _, err := c.Put(ctx, testLease(t, "52:54:00:aa:bb:02", "10.0.0.999")); return err },
			want: client.ErrBadInput, status: 400, field: "ip",
		},
		"bad mac": {
			call: func() error { _, err := c.Get(ctx, "not-a-mac"); return err },
			want: client.ErrBadInput, status: 400, field: "mac",
		},
		"bad profile": {
			call: func() error {
				l := testLease(t, "52:54:00:aa:bb:02", "10.0.0.8")
				l.Profile = "rescue"
				_, err := c.Put(ctx, l)
				return err
			},
			want: client.ErrBadInput, status: 400, field: "profile",
		},
		"conflict": {
			call: func() error { _, err := c.Put(ctx, testLease(t, "52:54:00:aa:bb:02", "10.0.0.7")); return err },
			want: client.ErrConflict, status: 409, field: "ip",
		},
		"not found": {
			call: func() error { _, err := c.Get(ctx, "52:54:00:aa:bb:03"); return err },
			want: client.ErrNotFound, status: 404, field: "mac",
		},
		"wrong token": {
			call: func() error { _, err := newClient(t, base, "wrong").List(ctx); return err },
			want: client.ErrUnauthorized, status: 401,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			var apiErr *client.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *APIError", err, err)
			}
			if apiErr.Status != tc.status || apiErr.Field != tc.field || apiErr.Message == "" {
				t.Errorf("APIError %+v, want status %d field %q and a message", apiErr, tc.status, tc.field)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tc.want; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
	// The pxe package's own sentinels match too.
	_, err := c.Get(ctx, "52:54:00:aa:bb:03")
	if !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("errors.Is(err, lease.ErrNotFound) = false for %v", err)
	}
}

func TestTransportErrors(t *testing.T) {
	ctx := context.Background()
	// A closed port: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = newClient(t, "http://"+addr, token).List(ctx)
	var apiErr *client.APIError
	var urlErr *url.Error
	if err == nil || errors.As(err, &apiErr) || !errors.As(err, &urlErr) {
		t.Fatalf("refused connection: %v (%T), want a wrapped *url.Error and no APIError", err, err)
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error shows the token: %v", err)
	}

	// A server that accepts and never answers: the caller's deadline wins.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = newClient(t, "http://"+hang.Addr().String(), token).Get(tctx, "52:54:00:aa:bb:01")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung server: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hung server took %v to fail (retries?)", d)
	}
}

// TestNewRefusesTokenInClear: an http URL of another machine would send the
// bearer token in clear across the network, so New refuses it before any
// request; loopback and https are fine.
func TestNewRefusesTokenInClear(t *testing.T) {
	tests := map[string]struct {
		url  string
		want error // nil: accepted
	}{
		"http to a management address": {url: "http://10.0.0.2:8080", want: client.ErrPlainHTTP},
		"http to a name":               {url: "http://pxe.mgmt:8080", want: client.ErrPlainHTTP},
		"http to a v6 address":         {url: "http://[fd00::2]:8080", want: client.ErrPlainHTTP},
		"http to 127.0.0.1":            {url: "http://127.0.0.1:8080"},
		"http to 127.3.4.5":            {url: "http://127.3.4.5:8080"},
		"http to ::1":                  {url: "http://[::1]:8080"},
		"http to localhost":            {url: "http://localhost:8080"},
		"https anywhere":               {url: "https://pxe.mgmt:8443"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := client.New(tc.url, token, client.Options{})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("New(%s) = %v, want %v", tc.url, err, tc.want)
			}
			if err != nil && (!strings.Contains(err.Error(), "https") || strings.Contains(err.Error(), token)) {
				t.Errorf("error %q should point to https and not show the token", err)
			}
		})
	}
	if _, err := client.New("ftp://127.0.0.1", token, client.Options{}); err == nil {
		t.Error("New accepted an ftp URL")
	}
}

// TestTLSWithPrivateCA talks to a real TLS listener whose certificate a
// freshly made CA signs: trusted through CAFile, refused without it, and a
// missing or empty bundle fails in New.
func TestTLSWithPrivateCA(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	base := startPXEWith(t, func(s *pxe.APIServer) { s.TLSCertFile, s.TLSKeyFile = pki.Cert, pki.Key })

	c, err := client.New(base, token, client.Options{CAFile: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, testLease(t, "52:54:00:aa:bb:01", "10.0.0.7")); err != nil {
		t.Fatalf("Put over TLS with the CA: %v", err)
	}
	ls, err := c.List(ctx)
	if err != nil || len(ls) != 1 {
		t.Fatalf("List over TLS: %d leases, %v", len(ls), err)
	}

	// The system roots do not know the test CA.
	_, err = newClient(t, base, token).List(ctx)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("without the CA: %v, want x509.UnknownAuthorityError", err)
	}
	// Plain http to the TLS port gets no lease API.
	if _, err := newClient(t, "http"+strings.TrimPrefix(base, "https"), token).List(ctx); err == nil {
		t.Error("plain http to the TLS listener succeeded")
	}

	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string]string{"missing": filepath.Join(dir, "nope.pem"), "empty": empty} {
		if _, err := client.New(base, token, client.Options{CAFile: ca}); err == nil || !strings.Contains(err.Error(), "CA bundle") {
			t.Errorf("%s CA bundle: New = %v, want an error about the CA bundle", name, err)
		}
	}
}
