package pxe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/testsuite/testpki"
)

// startSplit runs a server with the boot routes on their own loopback
// listener and returns it with the boot listener's URL.
func startSplit(t *testing.T, tweak func(*APIServer)) (*testServer, string) {
	t.Helper()
	boot, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bootURL := "http://" + boot.Addr().String()
	ts := startServer(t, nil, func(s *APIServer) {
		s.BootListener, s.PublicURL = boot, bootURL
		if tweak != nil {
			tweak(s)
		}
	})
	return ts, bootURL
}

// TestSplitListeners: with a boot listener, the lease API and /metrics are
// not on it at all, even with the right token, and the boot routes are not
// on the management listener. With one listener, it serves both.
func TestSplitListeners(t *testing.T) {
	const hostIP = "127.0.0.7"
	hostKeyPath := func(t *testing.T, base, api string) string {
		t.Helper()
		l := liveLease(t, macA, hostIP, "boot-1")
		if r := do(t, "PUT", api+"/v1/leases/"+macA, testToken, l); r.Status != http.StatusCreated {
			t.Fatalf("PUT on the management listener: %d %s", r.Status, r.Body)
		}
		script := doFrom(t, hostIP, "GET", base+"/boot/"+macA+".ipxe", "", nil)
		u, err := hostKeyURL(string(script.Body))
		if err != nil {
			t.Fatalf("boot script %d %q: %v", script.Status, script.Body, err)
		}
		return strings.TrimPrefix(u, base)
	}
	type req struct{ method, path, token, from string }
	reqs := map[string]req{
		"PUT lease with the token":  {"PUT", "/v1/leases/" + macA, testToken, ""},
		"GET lease with the token":  {"GET", "/v1/leases/" + macA, testToken, ""},
		"list leases":               {"GET", "/v1/leases", testToken, ""},
		"DELETE lease":              {"DELETE", "/v1/leases/52:54:00:00:00:01", testToken, ""},
		"metrics":                   {"GET", "/metrics", "", ""},
		"iPXE script from the host": {"GET", "/boot/" + macA + ".ipxe", "", hostIP},
		"authorized_keys":           {"GET", "/boot/" + macA + "/authorized_keys", "", hostIP},
		"a missing file":            {"GET", "/files/vmlinuz", "", hostIP},
	}
	send := func(t *testing.T, base string) map[string]int {
		got := map[string]int{}
		for name, r := range reqs {
			var body any
			if r.method == "PUT" {
				body = liveLease(t, macA, hostIP, "boot-1")
			}
			got[name] = doFrom(t, r.from, r.method, base+r.path, r.token, body).Status
		}
		return got
	}

	t.Run("split", func(t *testing.T) {
		ts, boot := startSplit(t, nil)
		keyPath := hostKeyPath(t, boot, ts.URL)
		want := map[string]int{
			"PUT lease with the token": 404, "GET lease with the token": 404, "list leases": 404, "DELETE lease": 404, "metrics": 404,
			"iPXE script from the host": 200, "authorized_keys": 200, "a missing file": 404,
		}
		if diff := cmp.Diff(want, send(t, boot)); diff != "" {
			t.Errorf("boot listener (-want +got):\n%s", diff)
		}
		want = map[string]int{
			"PUT lease with the token": 200, "GET lease with the token": 200, "list leases": 200, "DELETE lease": 204, "metrics": 200,
			"iPXE script from the host": 404, "authorized_keys": 404, "a missing file": 404,
		}
		if diff := cmp.Diff(want, send(t, ts.URL)); diff != "" {
			t.Errorf("management listener (-want +got):\n%s", diff)
		}
		// The one-time host key is not on the management listener either:
		// the fetch there is 404 and leaves it to the host.
		if r := doFrom(t, hostIP, "GET", ts.URL+keyPath, "", nil); r.Status != 404 {
			t.Errorf("host key on the management listener: %d, want 404", r.Status)
		}
		if r := doFrom(t, hostIP, "GET", boot+keyPath, "", nil); r.Status != 200 {
			t.Errorf("host key on the boot listener: %d %s, want 200", r.Status, r.Body)
		}
	})
	t.Run("single listener", func(t *testing.T) {
		ts := startServer(t, nil, nil)
		keyPath := hostKeyPath(t, ts.URL, ts.URL)
		want := map[string]int{
			"PUT lease with the token": 200, "GET lease with the token": 200, "list leases": 200, "DELETE lease": 204, "metrics": 200,
			"iPXE script from the host": 200, "authorized_keys": 200, "a missing file": 404,
		}
		if diff := cmp.Diff(want, send(t, ts.URL)); diff != "" {
			t.Errorf("single listener (-want +got):\n%s", diff)
		}
		if r := doFrom(t, hostIP, "GET", ts.URL+keyPath, "", nil); r.Status != 200 {
			t.Errorf("host key: %d %s, want 200", r.Status, r.Body)
		}
	})
}

// TestTLSOnManagementListener: the management listener speaks TLS with the
// configured pair; the boot listener stays plain HTTP for iPXE.
func TestTLSOnManagementListener(t *testing.T) {
	pki := testpki.New(t, t.TempDir())
	ts, boot := startSplit(t, func(s *APIServer) { s.TLSCertFile, s.TLSKeyFile = pki.Cert, pki.Key })
	apiURL := "https" + strings.TrimPrefix(ts.URL, "http")
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	req, _ := http.NewRequest("PUT", apiURL+"/v1/leases/"+macA, strings.NewReader(`{"ip":"127.0.0.7","netmask":"255.0.0.0","profile":"disk"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("PUT over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.TLS == nil {
		t.Fatalf("PUT over TLS: %d (tls %v), want 201 over TLS", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP to the management port is not served.
	if r := do(t, "GET", ts.URL+"/v1/leases", testToken, nil); r.Status != http.StatusBadRequest {
		t.Errorf("plain http to the TLS listener: %d, want 400", r.Status)
	}
	if r := doFrom(t, "127.0.0.7", "GET", boot+"/boot/"+macA+".ipxe", "", nil); r.Status != 200 {
		t.Errorf("boot script over plain http: %d %s", r.Status, r.Body)
	}

	for name, s := range map[string]*APIServer{
		"cert without key": {TLSCertFile: pki.Cert, Store: ts.Store},
		"key is not a key": {TLSCertFile: pki.Cert, TLSKeyFile: pki.CA, Store: ts.Store},
	} {
		if err := s.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "TLS") {
			t.Errorf("%s: Serve = %v, want a TLS error", name, err)
		}
	}
}

// TestConnectionCap: with MaxConns 2, two idle connections held keep a third
// from being served on that listener until one of them closes.
func TestConnectionCap(t *testing.T) {
	ts, boot := startSplit(t, func(s *APIServer) { s.MaxConns = 2 })
	for name, tc := range map[string]struct{ base, path string }{
		"management listener": {ts.URL, "/metrics"},
		"boot listener":       {boot, "/files/vmlinuz"},
	} {
		t.Run(name, func(t *testing.T) {
			addr := strings.TrimPrefix(tc.base, "http://")
			dial := func() (net.Conn, *bufio.Reader) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c, bufio.NewReader(c)
			}
			get := "GET " + tc.path + " HTTP/1.1\r\nHost: pxe\r\n\r\n"
			roundTrip := func(c net.Conn, br *bufio.Reader) {
				t.Helper()
				if _, err := io.WriteString(c, get); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			c1, r1 := dial()
			c2, r2 := dial()
			c3, r3 := dial()
			// The third asks first; the two held ones are served after it.
			if _, err := io.WriteString(c3, get); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				roundTrip(c1, r1)
				roundTrip(c2, r2)
			}
			if unread(t, c3) {
				t.Fatal("third connection answered while two were held")
			}
			c1.Close()
			c3.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(r3, nil)
			if err != nil {
				t.Fatalf("third connection not served after one closed: %v", err)
			}
			resp.Body.Close()
		})
	}
}

// unread reports whether bytes wait to be read on c, without waiting.
func unread(t *testing.T, c net.Conn) bool {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if rerr != nil && !errors.Is(rerr, syscall.EAGAIN) {
		t.Fatal(rerr)
	}
	return n > 0
}

// lineWriter sends each log line that holds want to ch.
type lineWriter struct {
	want string
	ch   chan string
}

func (w lineWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.want)) {
		w.ch <- string(p)
	}
	return len(p), nil
}

// TestWriteTimeout: a client that asks for a JSON route and stops reading
// is cut after WriteTimeout, while a file fetched as slowly at the same
// time is given the time its size needs.
func TestWriteTimeout(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	store, err := OpenStore(StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// A list of leases larger than the socket buffers in between (4 MiB
	// for the server's at most, the client's stays small while it does not
	// read): ~12 MB.
	key := newAuthorizedKey(t)
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s k%d", key, i)
	}
	for i := range 12 {
		l := liveLease(t, fmt.Sprintf("52:54:00:00:01:%02x", i), fmt.Sprintf("10.0.1.%d", i+1), "b")
		l.SSHAuthorizedKeys = keys
		if _, _, err := store.Put(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	list, err := json.MarshalIndent(lease.List{Leases: ls}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	bootDir := t.TempDir()
	file := bytes.Repeat([]byte("initrd.."), 2<<20) // 16 MiB
	if err := os.WriteFile(filepath.Join(bootDir, "initrd.img"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 4)
	ts := startServer(t, store, func(s *APIServer) {
		s.WriteTimeout, s.BootDir = writeTimeout, bootDir
		s.Logger = slogTo(lineWriter{want: `"route":"GET /v1/leases"`, ch: done})
	})
	addr := strings.TrimPrefix(ts.URL, "http://")
	slowReader := func(req string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	fc, fr := slowReader("GET /files/initrd.img HTTP/1.1\r\nHost: pxe\r\n\r\n")
	jc, jr := slowReader("GET /v1/leases HTTP/1.1\r\nHost: pxe\r\nAuthorization: Bearer " + testToken + "\r\n\r\n")

	select {
	case line := <-done:
		if !strings.Contains(line, `"status":200`) {
			t.Errorf("log of the cut list: %s", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server still writes the list to a client that stopped reading, 20s after asking (WriteTimeout " + writeTimeout.String() + ")")
	}
	// Cut: the connection ends (EOF or reset) well short of the list.
	jc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(jr)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("list connection still open after its write timed out (%d bytes read)", len(got))
	}
	if len(got) >= len(list) {
		t.Errorf("list read whole (%d bytes) after its write timed out", len(got))
	}

	// The file's deadline is WriteTimeout plus 16 MiB at 64 KiB/s: 256s.
	fc.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(fr, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, file) {
		t.Errorf("file read after the list was cut: %d of %d bytes, %v", len(got), len(file), err)
	}
}

// TestHeaderCap: a request header over 8 KiB is refused with 431.
func TestHeaderCap(t *testing.T) {
	ts := startServer(t, nil, nil)
	tests := map[string]struct {
		size int
		want int
	}{
		"1 KiB":  {1 << 10, http.StatusNotFound},
		"32 KiB": {32 << 10, http.StatusRequestHeaderFieldsTooLarge},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", ts.URL+"/boot/"+macA+".ipxe", nil)
			req.Header.Set("X-Pad", strings.Repeat("a", tc.size))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }
