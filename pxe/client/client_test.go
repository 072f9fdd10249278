package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/client"
	"github.com/rackflow/rackflow/pxe/lease"
	"golang.org/x/crypto/ssh"
)

const token = "client-test-token"

// startPXE runs a real pxe API on loopback and returns its URL.
func startPXE(t *testing.T) string {
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
	go func() { done <- (&pxe.APIServer{Listener: ln, Token: token, Store: store}).Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		store.Close()
	})
	return "http://" + ln.Addr().String()
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
	c := client.New(startPXE(t)+"/", token, nil)

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
	c := client.New(base, token, nil)
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
			call: func() error { _, err := client.New(base, "wrong", nil).List(ctx); return err },
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
	_, err = client.New("http://"+addr, token, nil).List(ctx)
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
	_, err = client.New("http://"+hang.Addr().String(), token, nil).Get(tctx, "52:54:00:aa:bb:01")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung server: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hung server took %v to fail (retries?)", d)
	}
}
