package nitroclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

func newClient(t *testing.T, s *nitrofake.Server, mode nitroclient.AuthMode) *nitroclient.Client {
	t.Helper()
	c, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password(), CAPEM: s.CAPEM(), Auth: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestClientSequence runs a publish-like sequence with both auth styles,
// over TLS with the fake's CA, and checks the fake holds what was sent.
func TestClientSequence(t *testing.T) {
	for _, mode := range []nitroclient.AuthMode{nitroclient.AuthSession, nitroclient.AuthHeader} {
		t.Run(string(mode), func(t *testing.T) {
			ctx := context.Background()
			s := nitrofake.Start(t, nitrofake.Options{TLS: true})
			c := newClient(t, s, mode)
			steps := []func() error{
				func() error {
					return c.Add(ctx, nitroclient.ServiceGroup{Name: "web sg", ServiceType: "TCP", Comment: "rackflow:x"})
				},
				func() error {
					return c.Bind(ctx, nitroclient.ServiceGroupMember{ServiceGroup: "web sg", IP: "10.0.0.1", Port: 8080, Weight: 3})
				},
				func() error {
					return c.Bind(ctx, nitroclient.ServiceGroupMonitorBinding{ServiceGroup: "web sg", Monitor: "tcp"})
				},
				func() error {
					return c.Add(ctx, nitroclient.LBVServer{Name: "web#vs", ServiceType: "TCP", IPv46: "203.0.113.10", Port: 443, LBMethod: "ROUNDROBIN"})
				},
				func() error {
					return c.Bind(ctx, nitroclient.LBVServerServiceGroupBinding{VServer: "web#vs", ServiceGroup: "web sg"})
				},
				func() error { return c.Save(ctx) },
			}
			for i, st := range steps {
				if err := st(); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			vs, err := nitroclient.Get[nitroclient.LBVServer](ctx, c, "web#vs")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(nitroclient.LBVServer{Name: "web#vs", ServiceType: "TCP", IPv46: "203.0.113.10", Port: 443, LBMethod: "ROUNDROBIN", CurState: nitroclient.CurStateUp}, vs); diff != "" {
				t.Errorf("vserver (-want +got):\n%s", diff)
			}
			members, err := nitroclient.Bindings[nitroclient.ServiceGroupMember](ctx, c, "web sg")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]nitroclient.ServiceGroupMember{{ServiceGroup: "web sg", IP: "10.0.0.1", Port: 8080, Weight: 3, ServerName: "10.0.0.1"}}, members); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			if err := c.Unbind(ctx, nitroclient.ServiceGroupMember{}.ResourceType(), "web sg", nitroclient.Arg{Key: "ip", Value: "10.0.0.1"}, nitroclient.Arg{Key: "port", Value: "8080"}); err != nil {
				t.Fatal(err)
			}
			if got := s.Bindings("servicegroup_servicegroupmember_binding", "web sg"); len(got) != 0 {
				t.Errorf("member still bound: %v", got)
			}
			if _, ok := s.SavedConfig(); !ok {
				t.Error("nothing saved")
			}
			wantAuth := map[nitroclient.AuthMode]string{nitroclient.AuthSession: "session", nitroclient.AuthHeader: "header"}[mode]
			for _, call := range s.Calls() {
				if call.Path != "/nitro/v1/config/login" && call.Auth != wantAuth {
					t.Errorf("%v authenticated by %q, want %q", call, call.Auth, wantAuth)
				}
			}
			if mode == nitroclient.AuthSession {
				if err := c.Close(ctx); err != nil {
					t.Fatal(err)
				}
				if n := s.Sessions(); n != 0 {
					t.Errorf("%d sessions open after Close", n)
				}
			}
		})
	}
}

func TestClientRelogin(t *testing.T) {
	ctx := context.Background()
	s := nitrofake.Start(t, nitrofake.Options{})
	c := newClient(t, s, nitroclient.AuthSession)
	if err := c.Add(ctx, nitroclient.ServiceGroup{Name: "a", ServiceType: "TCP"}); err != nil {
		t.Fatal(err)
	}
	s.ExpireSessions()
	if err := c.Add(ctx, nitroclient.ServiceGroup{Name: "b", ServiceType: "TCP"}); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if n := s.Logins(); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
	if _, ok := s.Objects("servicegroup")["b"]; !ok {
		t.Error("b was not created after the re-login")
	}

	// A session that dies again right after the re-login fails with ErrAuth.
	s.FailNext("GET", "/nitro/v1/config/servicegroup", 444)
	s.FailNext("GET", "/nitro/v1/config/servicegroup", 444)
	_, err := nitroclient.Get[nitroclient.ServiceGroup](ctx, c, "a")
	if !errors.Is(err, nitroclient.ErrAuth) || nitroclient.Code(err) != 444 {
		t.Errorf("twice expired: %v (code %d), want ErrAuth/444", err, nitroclient.Code(err))
	}
	if n := s.Logins(); n != 3 {
		t.Errorf("%d logins, want 3 (one re-login per call only)", n)
	}

	// Header auth has no session to renew: 1027 is an auth failure at once.
	h := newClient(t, s, nitroclient.AuthHeader)
	s.FailNext("GET", "/nitro/v1/config/servicegroup", 1027)
	if _, err := nitroclient.Get[nitroclient.ServiceGroup](ctx, h, "a"); !errors.Is(err, nitroclient.ErrAuth) {
		t.Errorf("header auth, 1027: %v", err)
	}
}

// TestClientSessionTimeout lets sessions run out on the device's clock: the
// client logs in again by itself, and only once the session is over. The
// session lasts the device's timeout, or the client's if that is shorter
// (sent as the login's "timeout").
func TestClientSessionTimeout(t *testing.T) {
	tests := map[string]struct {
		device, client time.Duration
		lifetime       time.Duration
	}{
		"device's timeout":              {device: 5 * time.Minute, lifetime: 5 * time.Minute},
		"client asks for a shorter one": {device: 30 * time.Minute, client: time.Minute, lifetime: time.Minute},
		"client asks for a longer one":  {device: 2 * time.Minute, client: time.Hour, lifetime: 2 * time.Minute},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			// The device's clock, moved by the test instead of sleeping.
			var elapsed atomic.Int64
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
			s := nitrofake.Start(t, nitrofake.Options{SessionTimeout: tc.device, Now: now})
			c, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password(), SessionTimeout: tc.client})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			var logins []int
			for _, step := range []time.Duration{0, tc.lifetime - time.Second, 2 * time.Second} {
				elapsed.Add(int64(step))
				m, err := nitroclient.Get[nitroclient.LBMonitor](ctx, c, "tcp")
				if err != nil || m.Type != "TCP" {
					t.Fatalf("after %v more: %v %v", step, m, err)
				}
				logins = append(logins, s.Logins())
			}
			if diff := cmp.Diff([]int{1, 1, 2}, logins); diff != "" {
				t.Errorf("logins at start, just before and just after the session's end (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientAbandonsAnUnansweredRequest: a NetScaler that takes a request
// and never answers does not hold the caller. The call ends when its
// context ends or Config.RequestTimeout passes, and the device sees the
// request abandoned.
func TestClientAbandonsAnUnansweredRequest(t *testing.T) {
	tests := map[string]struct {
		requestTimeout time.Duration
		cancel         bool
		want           func(error) bool
	}{
		"caller cancels": {cancel: true, want: func(err error) bool { return errors.Is(err, context.Canceled) }},
		"request timeout": {requestTimeout: 50 * time.Millisecond, want: func(err error) bool {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			arrived, abandoned, release := make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				select {
				case <-r.Context().Done(): // the client hung up
					close(abandoned)
				case <-release: // the test is over: let srv.Close return
				}
			}))
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(release) })
			c, err := nitroclient.New(nitroclient.Config{URL: srv.URL, Username: "nsroot", Password: "pw",
				Auth: nitroclient.AuthHeader, RequestTimeout: tc.requestTimeout})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := nitroclient.Get[nitroclient.LBMonitor](ctx, c, "tcp")
				errc <- err
			}()
			<-arrived
			if tc.cancel {
				cancel()
			}
			err = <-errc
			var ne *nitroclient.Error
			if !tc.want(err) || errors.As(err, &ne) {
				t.Errorf("err = %v (%T), want the abandoned call's error and no NITRO error", err, err)
			}
			<-abandoned
		})
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	s := nitrofake.Start(t, nitrofake.Options{})
	c := newClient(t, s, nitroclient.AuthSession)
	if err := c.Add(ctx, nitroclient.ServiceGroup{Name: "sg", ServiceType: "TCP"}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		do       func() error
		wantKind error
		wantCode int
	}{
		"duplicate": {func() error { return c.Add(ctx, nitroclient.ServiceGroup{Name: "sg", ServiceType: "TCP"}) }, nitroclient.ErrExists, 273},
		"missing":   {func() error { _, err := nitroclient.Get[nitroclient.ServiceGroup](ctx, c, "nope"); return err }, nitroclient.ErrNotFound, 258},
		"bad servicetype": {func() error { return c.Add(ctx, nitroclient.ServiceGroup{Name: "x", ServiceType: "TCPX"}) },
			nitroclient.ErrInvalidArgument, 1097},
		"bad ip": {func() error {
			return c.Add(ctx, nitroclient.LBVServer{Name: "v", ServiceType: "TCP", IPv46: "300.1.1.1", Port: 80})
		}, nitroclient.ErrInvalidArgument, 1110},
		"missing vserver": {func() error {
			return c.Bind(ctx, nitroclient.LBVServerServiceGroupBinding{VServer: "nope", ServiceGroup: "sg"})
		}, nitroclient.ErrNotFound, 461},
		"missing servicegroup": {func() error {
			return c.Bind(ctx, nitroclient.ServiceGroupMember{ServiceGroup: "nope", IP: "10.0.0.1", Port: 80})
		}, nitroclient.ErrNotFound, 258},
		"busy": {func() error { s.FailNext("POST", "/nitro/v1/config/nsconfig", 293); return c.Save(ctx) }, nitroclient.ErrBusy, 293},
		"in use": {func() error {
			s.FailNext("DELETE", "/nitro/v1/config/servicegroup", 315)
			return c.Delete(ctx, "servicegroup", "sg")
		}, nitroclient.ErrInUse, 315},
		"rnat exists": {func() error {
			s.FailNext("POST", "/nitro/v1/config/rnat", 774)
			return c.Add(ctx, nitroclient.RNAT{Name: "r"})
		}, nitroclient.ErrExists, 774},
		"config being saved": {func() error { s.FailNext("POST", "/nitro/v1/config/nsconfig", 603); return c.Save(ctx) }, nitroclient.ErrBusy, 603},
		"concurrent saves":   {func() error { s.FailNext("POST", "/nitro/v1/config/nsconfig", 1461); return c.Save(ctx) }, nitroclient.ErrBusy, 1461},
		"session limit": {func() error {
			s.FailNext("GET", "/nitro/v1/config/lbmonitor", 445)
			_, err := nitroclient.Get[nitroclient.LBMonitor](ctx, c, "tcp")
			return err
		}, nitroclient.ErrBusy, 445},
		"not permitted": {func() error {
			s.FailNext("POST", "/nitro/v1/config/servicegroup", 257)
			return c.Add(ctx, nitroclient.ServiceGroup{Name: "y", ServiceType: "TCP"})
		}, nitroclient.ErrNotPermitted, 257},
		"not authorized": {func() error {
			s.FailNext("POST", "/nitro/v1/config/servicegroup", 2138)
			return c.Add(ctx, nitroclient.ServiceGroup{Name: "y", ServiceType: "TCP"})
		}, nitroclient.ErrNotPermitted, 2138},
		"nat argument": {func() error {
			return c.Add(ctx, nitroclient.INAT{Name: "i", PublicIP: "198.51.100.99", PrivateIP: "10.0.0.1"})
		}, nitroclient.ErrInvalidArgument, 3888},
		"monitor not bound": {func() error {
			return c.Unbind(ctx, "servicegroup_lbmonitor_binding", "sg", nitroclient.Arg{Key: "monitor_name", Value: "http"})
		}, nitroclient.ErrNotBound, 2170},
		"servicegroup not bound": {func() error {
			if err := c.Add(ctx, nitroclient.LBVServer{Name: "vs", ServiceType: "TCP"}); err != nil && !errors.Is(err, nitroclient.ErrExists) {
				return err
			}
			return c.Unbind(ctx, "lbvserver_servicegroup_binding", "vs", nitroclient.Arg{Key: "servicegroupname", Value: "sg"})
		}, nitroclient.ErrNotBound, 1303},
		"rnat natip missing": {func() error {
			s.FailNext("DELETE", "/nitro/v1/config/rnat_nsip_binding", 776)
			return c.Unbind(ctx, "rnat_nsip_binding", "r", nitroclient.Arg{Key: "natip", Value: "1.2.3.4"})
		}, nitroclient.ErrNotFound, 776},
	}
	kinds := []error{nitroclient.ErrExists, nitroclient.ErrNotFound, nitroclient.ErrInvalidArgument, nitroclient.ErrBusy, nitroclient.ErrAuth, nitroclient.ErrInUse,
		nitroclient.ErrNotPermitted, nitroclient.ErrNotBound, nitroclient.ErrRedirected, nitroclient.ErrNotPropagated}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.do()
			var ne *nitroclient.Error
			if !errors.As(err, &ne) {
				t.Fatalf("got %T %v, want *nitroclient.Error", err, err)
			}
			if ne.ErrorCode != tc.wantCode {
				t.Errorf("errorcode %d, want %d (%v)", ne.ErrorCode, tc.wantCode, err)
			}
			for _, k := range kinds {
				if errors.Is(err, k) != (k == tc.wantKind) {
					t.Errorf("errors.Is(err, %v) = %v", k, errors.Is(err, k))
				}
			}
		})
	}
}

func TestClientCredentialsStayOut(t *testing.T) {
	ctx := context.Background()
	s := nitrofake.Start(t, nitrofake.Options{Password: "S3cret-Passw0rd"})
	for _, mode := range []nitroclient.AuthMode{nitroclient.AuthSession, nitroclient.AuthHeader} {
		cfg := nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: "Wrong-Passw0rd", Auth: mode}
		c, err := nitroclient.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Add(ctx, nitroclient.ServiceGroup{Name: "x", ServiceType: "TCP"})
		if !errors.Is(err, nitroclient.ErrAuth) || nitroclient.Code(err) != 354 {
			t.Errorf("%s: wrong password: %v, want ErrAuth/354", mode, err)
		}
		for _, text := range []string{err.Error(), cfg.String(), strings.ReplaceAll(cfg.GoString(), " ", "")} {
			if strings.Contains(text, "Passw0rd") {
				t.Errorf("%s: a password leaked: %s", mode, text)
			}
		}
	}
}

func TestClientTLS(t *testing.T) {
	ctx := context.Background()
	s := nitrofake.Start(t, nitrofake.Options{TLS: true})
	// Without the fake's CA the certificate is refused ...
	c, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nitroclient.Get[nitroclient.LBMonitor](ctx, c, "tcp"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate accepted: %v", err)
	}
	if s.Logins() != 0 {
		t.Error("credentials were sent to an unverified server")
	}
	// ... unless verification is explicitly switched off.
	c, err = nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password(), InsecureSkipVerifyDANGEROUS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nitroclient.Get[nitroclient.LBMonitor](ctx, c, "tcp"); err != nil {
		t.Errorf("insecure: %v", err)
	}
	for _, bad := range []string{"ftp://x", "https://user:pw@ns1", "https://ns1/nitro/v1", "ns1"} {
		if _, err := nitroclient.New(nitroclient.Config{URL: bad, Username: "u", Password: "p"}); err == nil {
			t.Errorf("URL %q accepted", bad)
		}
	}
}

// TestClientLoginRedirectIsNotBadCredentials: an address that answers the
// login with a redirect (http to https, a portal) has not judged the
// credentials; the client neither follows it nor calls it ErrAuth.
func TestClientLoginRedirectIsNotBadCredentials(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(target.Close)
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(redir.Close)
	c, err := nitroclient.New(nitroclient.Config{URL: redir.URL, Username: "nsroot", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Login(context.Background())
	if !errors.Is(err, nitroclient.ErrRedirected) || errors.Is(err, nitroclient.ErrAuth) {
		t.Fatalf("login redirect: %v, want ErrRedirected and not ErrAuth", err)
	}
	if !strings.Contains(err.Error(), target.URL) {
		t.Errorf("error does not name where it was sent: %v", err)
	}
	if hits.Load() != 0 {
		t.Error("the redirect was followed with the credentials")
	}
}

// TestClientSessionTimeoutAtLogin: every login asks for a session timeout,
// so a killed worker's sessions end on their own.
func TestClientSessionTimeoutAtLogin(t *testing.T) {
	tests := map[string]struct {
		set  time.Duration
		want string
	}{
		"default":  {0, fmt.Sprintf(`"timeout":%d`, int(nitroclient.DefaultSessionTimeout/time.Second))},
		"explicit": {90 * time.Second, `"timeout":90`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := nitrofake.Start(t, nitrofake.Options{})
			c, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password(), SessionTimeout: tc.set})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Login(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer c.Logout(context.Background())
			login := s.Calls()[0]
			if !strings.Contains(login.Body, tc.want) {
				t.Errorf("login body %s lacks %s", login.Body, tc.want)
			}
		})
	}
}

// TestClientWarnings: every change asks ?warning=yes; a warning that the
// HA peer did not take the change is an error, as it is on an appliance
// whose peer is out of reach.
func TestClientWarnings(t *testing.T) {
	ctx := context.Background()
	s := nitrofake.Start(t, nitrofake.Options{HA: nitrofake.HA{PeerIP: "192.0.2.2", NotPropagated: true}})
	c := newClient(t, s, nitroclient.AuthSession)
	err := c.Add(ctx, nitroclient.ServiceGroup{Name: "sg", ServiceType: "TCP"})
	if !errors.Is(err, nitroclient.ErrNotPropagated) || nitroclient.Code(err) != 1028 {
		t.Fatalf("add on a pair that does not propagate: %v, want ErrNotPropagated/1028", err)
	}
	for _, call := range s.Calls() {
		if call.Mutating() && !strings.Contains(call.Query, "warning=yes") {
			t.Errorf("change without ?warning=yes: %v", call)
		}
	}
}

// TestClientPartition: with a partition the client switches right after
// login, and objects land in that partition only.
func TestClientPartition(t *testing.T) {
	ctx := context.Background()
	s := nitrofake.Start(t, nitrofake.Options{Partitions: []string{"tenant1"}})
	c, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password(), Partition: "tenant1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ctx, nitroclient.ServiceGroup{Name: "sg", ServiceType: "TCP"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Partition("tenant1").Objects["servicegroup"]["sg"]; !ok {
		t.Error("not in the partition")
	}
	if _, ok := s.Objects("servicegroup")["sg"]; ok {
		t.Error("landed in the default partition")
	}
	bad, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: s.Username(), Password: s.Password(), Partition: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Login(ctx); !errors.Is(err, nitroclient.ErrNotFound) {
		t.Errorf("unknown partition: %v", err)
	}
	if _, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: "u", Password: "p", Partition: "tenant1", Auth: nitroclient.AuthHeader}); err == nil {
		t.Error("partition with header auth accepted")
	}
	_ = c.Logout(ctx)
	if n := s.Sessions(); n != 0 {
		t.Errorf("%d sessions left open", n)
	}
}

// TestClientTLSNameAndPin: the appliance's certificate is trusted by a
// server-name override or by its SHA-256, never by turning checks off.
func TestClientTLSNameAndPin(t *testing.T) {
	s := nitrofake.Start(t, nitrofake.Options{TLS: true})
	pin := s.CertSHA256()
	wrongPin := strings.Repeat("ab", 32)
	tests := map[string]struct {
		cfg    nitroclient.Config
		wantOK bool
	}{
		// httptest's certificate names 127.0.0.1 and example.com.
		"CA, name override matches":   {nitroclient.Config{CAPEM: s.CAPEM(), ServerName: "example.com"}, true},
		"CA, name override is wrong":  {nitroclient.Config{CAPEM: s.CAPEM(), ServerName: "ns1.example.net"}, false},
		"pin matches, no CA":          {nitroclient.Config{PinSHA256: pin}, true},
		"pin with colons":             {nitroclient.Config{PinSHA256: colons(pin)}, true},
		"pin does not match":          {nitroclient.Config{PinSHA256: wrongPin}, false},
		"no CA, no pin: system roots": {nitroclient.Config{}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.URL, cfg.Username, cfg.Password = s.URL(), s.Username(), s.Password()
			c, err := nitroclient.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			before := s.LoginAttempts()
			_, err = nitroclient.Get[nitroclient.LBMonitor](context.Background(), c, "tcp")
			if (err == nil) != tc.wantOK {
				t.Fatalf("err = %v, want ok=%v", err, tc.wantOK)
			}
			if !tc.wantOK && s.LoginAttempts() != before {
				t.Error("credentials sent over an unverified connection")
			}
			_ = c.Logout(context.Background())
		})
	}
	if _, err := nitroclient.New(nitroclient.Config{URL: s.URL(), Username: "u", Password: "p", PinSHA256: "nothex"}); err == nil {
		t.Error("bad pin accepted")
	}
}

func colons(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}
