package bmc_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/bmc"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
)

// redfishBMC is a Redfish service on a loopback TLS port with httptest's
// self-signed certificate, as a BMC ships with its own: just enough of
// the protocol for bmclib to log in and read the power state. It counts
// TLS connections and records every request, logins included.
type redfishBMC struct {
	srv   *httptest.Server
	conns atomic.Int64

	mu       sync.Mutex
	requests []string
	logins   []string // user names that posted a session
}

func startRedfish(t *testing.T) *redfishBMC {
	t.Helper()
	b := &redfishBMC{}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /redfish/v1/{$}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{
			"@odata.id": "/redfish/v1/", "Id": "RootService", "RedfishVersion": "1.6.0",
			"Systems":        map[string]string{"@odata.id": "/redfish/v1/Systems"},
			"SessionService": map[string]string{"@odata.id": "/redfish/v1/SessionService"},
			"Links":          map[string]any{"Sessions": map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions"}},
		})
	})
	mux.HandleFunc("POST /redfish/v1/SessionService/Sessions", func(w http.ResponseWriter, r *http.Request) {
		var login struct{ UserName, Password string }
		_ = json.NewDecoder(r.Body).Decode(&login)
		b.mu.Lock()
		b.logins = append(b.logins, login.UserName)
		b.mu.Unlock()
		w.Header().Set("X-Auth-Token", "token-1")
		w.Header().Set("Location", "/redfish/v1/SessionService/Sessions/1")
		w.WriteHeader(http.StatusCreated)
		reply(w, map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions/1", "Id": "1"})
	})
	mux.HandleFunc("DELETE /redfish/v1/SessionService/Sessions/1", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /redfish/v1/Systems", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"@odata.id": "/redfish/v1/Systems", "Members": []map[string]string{{"@odata.id": "/redfish/v1/Systems/1"}}, "Members@odata.count": 1})
	})
	mux.HandleFunc("GET /redfish/v1/Systems/1", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"@odata.id": "/redfish/v1/Systems/1", "Id": "1", "PowerState": "On"})
	})
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.requests = append(b.requests, r.Method+" "+r.URL.Path)
		b.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	b.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

// pin is the SHA-256 of the server's certificate, as openssl prints it.
func (b *redfishBMC) pin() string {
	sum := sha256.Sum256(b.srv.Certificate().Raw)
	var parts []string
	for _, c := range sum {
		parts = append(parts, strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return strings.Join(parts, ":")
}

func (b *redfishBMC) input() bmc.Input {
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return bmc.Input{Host: "node01", BMC: api.BMC{Address: host, Port: p, Provider: "redfish", Credential: credRef}}
}

func (b *redfishBMC) seen() (requests, logins []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.logins...)
}

func redfishActivities() *bmc.Activities {
	return &bmc.Activities{
		Secrets:     secrets.Static{credRef: {Username: "admin", Password: "redfish-pw", Endpoints: []string{"127.0.0.1"}}},
		CallTimeout: 5 * time.Second,
	}
}

// TestRedfishVerifiesTLS drives the real bmclib Redfish client: a BMC's
// self-signed certificate is refused unless the inventory pins it or
// names its CA, and a refused handshake sends no request, so no password.
func TestRedfishVerifiesTLS(t *testing.T) {
	b := startRedfish(t)
	caFile := filepath.Join(t.TempDir(), "bmc-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	otherPin := strings.Repeat("ab", 32)
	tests := map[string]struct {
		edit     func(*api.BMC)
		wantType string // "" = success
	}{
		"not trusted by default": {edit: func(*api.BMC) {}, wantType: bmc.ErrTypeUntrustedCert},
		"pinned":                 {edit: func(m *api.BMC) { m.PinSHA256 = b.pin() }},
		"pinned lower case":      {edit: func(m *api.BMC) { m.PinSHA256 = strings.ToLower(strings.ReplaceAll(b.pin(), ":", "")) }},
		"another pin":            {edit: func(m *api.BMC) { m.PinSHA256 = otherPin }, wantType: bmc.ErrTypeUntrustedCert},
		"ca file":                {edit: func(m *api.BMC) { m.CAFile = caFile }},
		"ca file and another pin": {
			edit: func(m *api.BMC) { m.CAFile, m.PinSHA256 = caFile, otherPin }, wantType: bmc.ErrTypeUntrustedCert,
		},
		"ca file missing": {edit: func(m *api.BMC) { m.CAFile = caFile + ".gone" }, wantType: activities.ErrTypeInvalidInput},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before, _ := b.seen()
			conns := b.conns.Load()
			a := redfishActivities()
			env := newEnv(t)
			env.RegisterActivity(a)
			in := b.input()
			tc.edit(&in.BMC)
			v, err := env.ExecuteActivity(a.PowerState, in)
			reqs, _ := b.seen()
			reqs = reqs[len(before):]
			if tc.wantType == "" {
				if err != nil {
					t.Fatalf("PowerState: %v", err)
				}
				var st string
				if err := v.Get(&st); err != nil || st != "on" {
					t.Errorf("power state %q (%v), want on", st, err)
				}
				if len(reqs) == 0 || !strings.HasPrefix(reqs[0], "GET /redfish/v1") {
					t.Errorf("requests %q: want bmclib's Redfish calls", reqs)
				}
				return
			}
			typ, retryable := errKind(t, err)
			if diff := cmp.Diff(struct {
				Type      string
				Retryable bool
			}{tc.wantType, false}, struct {
				Type      string
				Retryable bool
			}{typ, retryable}); diff != "" {
				t.Errorf("error kind (-want +got):\n%s\n%v", diff, err)
			}
			if len(reqs) != 0 {
				t.Errorf("the BMC got %q over an untrusted connection", reqs)
			}
			if tc.wantType == bmc.ErrTypeUntrustedCert && b.conns.Load() == conns {
				t.Error("no handshake was tried")
			}
		})
	}
}

// TestCredentialGoesOnlyToItsBMC: the inventory (or an inline spec) names
// another BMC than the one the secrets file binds the credential to. The
// activity refuses before a packet leaves: the other BMC, a Redfish
// service and an IPMI listener on loopback, sees no login at all.
func TestCredentialGoesOnlyToItsBMC(t *testing.T) {
	rf := startRedfish(t)
	ipmi, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ipmi.Close()
	var packets atomic.Int64
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := ipmi.ReadFrom(buf); err != nil {
				return
			}
			packets.Add(1)
		}
	}()
	ipmiIn := bmc.Input{Host: "node01", BMC: api.BMC{Address: "127.0.0.1", Port: ipmi.LocalAddr().(*net.UDPAddr).Port, Provider: "ipmi", Credential: credRef}}
	rfIn := rf.input()
	rfIn.BMC.PinSHA256 = rf.pin()

	for name, in := range map[string]bmc.Input{"ipmi": ipmiIn, "redfish": rfIn} {
		t.Run(name, func(t *testing.T) {
			a := redfishActivities()
			a.CallTimeout = time.Second
			a.Secrets = secrets.Static{credRef: {Username: "admin", Password: "node07-pw", Endpoints: []string{"10.20.0.7"}}}
			env := newEnv(t)
			env.RegisterActivity(a)
			_, err := env.ExecuteActivity(a.PowerOnPXE, in)
			typ, retryable := errKind(t, err)
			if typ != activities.ErrTypeCredentialNotAllowed || retryable {
				t.Errorf("got %s retryable=%v, want non-retryable %s: %v", typ, retryable, activities.ErrTypeCredentialNotAllowed, err)
			}
			if !strings.Contains(err.Error(), "binds it to 10.20.0.7") {
				t.Errorf("error %q does not say where the credential may go", err)
			}
		})
	}
	reqs, logins := rf.seen()
	if n := rf.conns.Load(); n != 0 || len(reqs) != 0 || len(logins) != 0 {
		t.Errorf("redfish BMC saw %d connections, requests %q, logins %q", n, reqs, logins)
	}
	// ipmitool would have sent its session requests by now; the socket is
	// read until the test ends, and no packet is the proof nothing left.
	if n := packets.Load(); n != 0 {
		t.Errorf("ipmi listener got %d packets", n)
	}
}
