package pxe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"crypto/ed25519"
	"crypto/rand"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/pxe/lease"
)

const testToken = "s3cret-test-token"

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type testServer struct {
	URL      string
	Store    *Store
	Logs     *syncBuffer
	Registry *prometheus.Registry
}

// startServer runs an APIServer on a real loopback listener until the test
// ends. tweak may change the server config before it starts.
func startServer(t *testing.T, store *Store, tweak func(*APIServer)) *testServer {
	t.Helper()
	if store == nil {
		var err error
		store, err = OpenStore(StoreConfig{Path: t.TempDir() + "/leases.json"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	url := "http://" + ln.Addr().String()
	srv := &APIServer{
		Listener:  ln,
		Token:     testToken,
		Store:     store,
		Logger:    slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PublicURL: url,
		Registry:  reg,
	}
	if tweak != nil {
		tweak(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return &testServer{URL: url, Store: store, Logs: logs, Registry: reg}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request; token "" sends no Authorization header.
func do(t *testing.T, method, url, token string, body any) response {
	t.Helper()
	return doFrom(t, "", method, url, token, body)
}

// clientFrom is an HTTP client whose connections leave from the loopback
// address from (any 127.x address is this machine's), as a booting host's
// come from its lease's IP.
func clientFrom(from string) *http.Client {
	if from == "" {
		return http.DefaultClient
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// doFrom is do from the loopback address from ("" for the default).
func doFrom(t *testing.T, from, method, url, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := clientFrom(from).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

func decodeLease(t *testing.T, r response) lease.Lease {
	t.Helper()
	var l lease.Lease
	if err := json.Unmarshal(r.Body, &l); err != nil {
		t.Fatalf("decode lease from %d %s: %v", r.Status, r.Body, err)
	}
	return l
}

func decodeError(t *testing.T, r response) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatalf("decode error from %d %s: %v", r.Status, r.Body, err)
	}
	return e
}

func newAuthorizedKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " rackflow@worker"
}

func liveLease(t *testing.T, mac, ip, bootID string) lease.Lease {
	return lease.Lease{
		MAC:               mac,
		IP:                ip,
		Netmask:           "255.255.255.0",
		Gateway:           ip[:strings.LastIndex(ip, ".")] + ".1",
		DNS:               []string{"10.0.0.53", "10.0.0.54"},
		Hostname:          "node07",
		Profile:           lease.ProfileLive,
		BootID:            bootID,
		SSHAuthorizedKeys: []string{newAuthorizedKey(t)},
	}
}

var errNoHostKeyURL = errors.New("no rackflow.hostkey_url in script")

// hostKeyURL extracts rackflow.hostkey_url from an iPXE script.
func hostKeyURL(script string) (string, error) {
	for _, f := range strings.Fields(script) {
		if v, ok := strings.CutPrefix(f, "rackflow.hostkey_url="); ok {
			return v, nil
		}
	}
	return "", errNoHostKeyURL
}
