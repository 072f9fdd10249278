package redfishfake_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/testsuite/redfishfake"
)

// client talks to f over TLS that trusts only f's certificate.
type client struct {
	t     *testing.T
	f     *redfishfake.Fake
	hc    *http.Client
	token string
	basic bool
}

func newClient(t *testing.T, f *redfishfake.Fake) *client {
	pool := x509.NewCertPool()
	pool.AddCert(f.Certificate())
	return &client{t: t, f: f, hc: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

type resp struct {
	Status int
	Header http.Header
	Body   map[string]any
}

// messageIDs lists the @Message.ExtendedInfo MessageIds of an error body.
func (r resp) messageIDs() []string {
	e, _ := r.Body["error"].(map[string]any)
	infos, _ := e["@Message.ExtendedInfo"].([]any)
	var ids []string
	for _, i := range infos {
		ids = append(ids, i.(map[string]any)["MessageId"].(string))
	}
	return ids
}

func (c *client) do(method, path string, body any, hdr ...string) resp {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.f.URL()+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	if c.basic {
		req.SetBasicAuth(c.f.Username, c.f.Password)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	out := resp{Status: res.StatusCode, Header: res.Header}
	b, _ := io.ReadAll(res.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out.Body); err != nil {
			c.t.Fatalf("%s %s: body is not JSON: %q", method, path, b)
		}
	}
	return out
}

func (c *client) login() resp {
	c.t.Helper()
	r := c.do("POST", redfishfake.SessionsURI, map[string]string{"UserName": c.f.Username, "Password": c.f.Password})
	if r.Status != http.StatusCreated {
		c.t.Fatalf("login: %d %v", r.Status, r.Body)
	}
	c.token = r.Header.Get("X-Auth-Token")
	return r
}

func TestAuth(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{})
	c := newClient(t, f)

	if r := c.do("GET", redfishfake.Root, nil); r.Status != 200 || r.Body["RedfishVersion"] == nil {
		t.Errorf("service root without auth: %d %v", r.Status, r.Body)
	}
	for _, p := range []string{redfishfake.SystemsPath, redfishfake.SystemPath, redfishfake.SessionsURI, redfishfake.TaskSvc, "/redfish/v1/Nowhere"} {
		r := c.do("GET", p, nil)
		if r.Status != 401 || r.Header.Get("WWW-Authenticate") == "" || !cmp.Equal(r.messageIDs(), []string{"Base.1.18.NoValidSession"}) {
			t.Errorf("GET %s without auth: %d %v %v, want 401 NoValidSession with WWW-Authenticate", p, r.Status, r.Header, r.Body)
		}
	}
	bad := c.do("POST", redfishfake.SessionsURI, map[string]string{"UserName": f.Username, "Password": "wrong"})
	if bad.Status != 401 || bad.Header.Get("X-Auth-Token") != "" {
		t.Errorf("login with a wrong password: %d, token %q", bad.Status, bad.Header.Get("X-Auth-Token"))
	}

	r := c.login()
	loc := r.Header.Get("Location")
	if c.token == "" || !strings.HasPrefix(loc, redfishfake.SessionsURI+"/") {
		t.Fatalf("login: token %q location %q", c.token, loc)
	}
	if r := c.do("GET", redfishfake.SystemPath, nil); r.Status != 200 {
		t.Errorf("GET system with a session: %d", r.Status)
	}
	if r := c.do("DELETE", loc, nil); r.Status != 204 {
		t.Errorf("logout: %d", r.Status)
	}
	if r := c.do("GET", redfishfake.SystemPath, nil); r.Status != 401 {
		t.Errorf("GET system after logout: %d, want 401", r.Status)
	}

	c.login()
	if f.Sessions() != 1 {
		t.Errorf("%d sessions, want 1", f.Sessions())
	}
	f.ExpireSessions()
	if r := c.do("GET", redfishfake.SystemPath, nil); r.Status != 401 {
		t.Errorf("GET system with an expired session: %d, want 401", r.Status)
	}

	c.token, c.basic = "", true
	if r := c.do("GET", redfishfake.SystemPath, nil); r.Status != 200 {
		t.Errorf("GET system with HTTP Basic: %d", r.Status)
	}
	c.basic = false
	if r := c.do("GET", redfishfake.SystemPath, nil, "Authorization", "Basic YWRtaW46d3Jvbmc="); r.Status != 401 { // admin:wrong
		t.Errorf("GET system with a wrong Basic password: %d", r.Status)
	}

	// A TLS client that does not trust the certificate gets nowhere; the
	// service saw the connection, and no request on it.
	conns, reqs := f.Conns(), len(f.Requests())
	if _, err := http.Get(f.URL() + redfishfake.Root); err == nil {
		t.Error("a client with the system roots accepted the self-signed certificate")
	}
	if f.Conns() != conns+1 || len(f.Requests()) != reqs {
		t.Errorf("refused handshake: %d connections (was %d), %d requests (was %d)", f.Conns(), conns, len(f.Requests()), reqs)
	}
	// Its PEM is a usable CA file.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(f.CertificatePEM()) {
		t.Error("CertificatePEM is not PEM")
	}
}

// TestSessionTimeout: a session unused for SessionService.SessionTimeout
// is gone (a nanosecond here: every next request is later than that).
func TestSessionTimeout(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{SessionTimeout: time.Nanosecond})
	c := newClient(t, f)
	c.login()
	if r := c.do("GET", redfishfake.SystemPath, nil); r.Status != 401 {
		t.Errorf("GET with a timed-out session: %d, want 401", r.Status)
	}
	if n := f.Sessions(); n != 0 {
		t.Errorf("%d sessions left", n)
	}
	if r := c.do("GET", "/redfish/v1/odata", nil); r.Status != 200 {
		t.Errorf("OData service document without auth: %d, want 200", r.Status)
	}
}

func TestRefusals(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{BootModes: []string{"UEFI"}})
	c := newClient(t, f)
	c.login()
	boot := func(k, v string) map[string]any { return map[string]any{"Boot": map[string]string{k: v}} }
	tests := map[string]struct {
		method, path string
		body         any
		wantStatus   int
		wantIDs      []string
	}{
		"boot target not allowed": {"PATCH", redfishfake.SystemPath, boot("BootSourceOverrideTarget", "Floppy"), 400, []string{"Base.1.18.PropertyValueNotInList"}},
		"boot mode not allowed":   {"PATCH", redfishfake.SystemPath, boot("BootSourceOverrideMode", "Legacy"), 400, []string{"Base.1.18.PropertyValueNotInList"}},
		"read-only property":      {"PATCH", redfishfake.SystemPath, map[string]string{"PowerState": "On"}, 400, []string{"Base.1.18.PropertyNotWritable"}},
		"unknown property":        {"PATCH", redfishfake.SystemPath, map[string]string{"Turbo": "yes"}, 400, []string{"Base.1.18.PropertyUnknown"}},
		"empty patch":             {"PATCH", redfishfake.SystemPath, map[string]string{}, 400, []string{"Base.1.18.NoOperation"}},
		"reset type not allowed":  {"POST", redfishfake.ResetPath, map[string]string{"ResetType": "Explode"}, 400, []string{"Base.1.18.ActionParameterValueNotInList"}},
		"reset parameter unknown": {"POST", redfishfake.ResetPath, map[string]string{"ResetType": "On", "Force": "1"}, 400, []string{"Base.1.18.ActionParameterNotSupported"}},
		"reset type missing":      {"POST", redfishfake.ResetPath, map[string]string{}, 400, []string{"Base.1.18.ActionParameterMissing"}},
		"delete the system":       {"DELETE", redfishfake.SystemPath, nil, 405, []string{"Base.1.18.OperationNotAllowed"}},
		"put the system":          {"PUT", redfishfake.SystemPath, map[string]string{}, 405, []string{"Base.1.18.OperationNotAllowed"}},
		"get the reset action":    {"GET", redfishfake.ResetPath, nil, 405, []string{"Base.1.18.OperationNotAllowed"}},
		"patch the service root":  {"PATCH", redfishfake.Root, map[string]string{"Name": "x"}, 405, []string{"Base.1.18.OperationNotAllowed"}},
		"no such resource":        {"GET", "/redfish/v1/Managers", nil, 404, []string{"Base.1.18.ResourceMissingAtURI"}},
	}
	before := f.State()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := c.do(tc.method, tc.path, tc.body)
			if diff := cmp.Diff(struct {
				Status int
				IDs    []string
			}{tc.wantStatus, tc.wantIDs}, struct {
				Status int
				IDs    []string
			}{r.Status, r.messageIDs()}); diff != "" {
				t.Errorf("(-want +got):\n%s\n%v", diff, r.Body)
			}
			if tc.wantStatus == 405 && r.Header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
	if diff := cmp.Diff(before, f.State()); diff != "" {
		t.Errorf("a refused request changed the system (-before +after):\n%s", diff)
	}
	if len(f.PowerEvents()) != 0 {
		t.Errorf("power events %v", f.PowerEvents())
	}
}

func TestETags(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{})
	c := newClient(t, f)
	c.login()
	g := c.do("GET", redfishfake.SystemPath, nil)
	tag := g.Header.Get("ETag")
	if tag == "" || g.Body["@odata.etag"] != tag {
		t.Fatalf("ETag header %q, @odata.etag %v", tag, g.Body["@odata.etag"])
	}
	pxe := map[string]any{"Boot": map[string]string{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}
	p := c.do("PATCH", redfishfake.SystemPath, pxe, "If-Match", tag)
	if p.Status != 200 || p.Header.Get("ETag") == tag {
		t.Fatalf("PATCH with the current ETag: %d, ETag %q after %q", p.Status, p.Header.Get("ETag"), tag)
	}
	hdd := map[string]any{"Boot": map[string]string{"BootSourceOverrideTarget": "Hdd"}}
	if r := c.do("PATCH", redfishfake.SystemPath, hdd, "If-Match", tag); r.Status != 412 || !cmp.Equal(r.messageIDs(), []string{"Base.1.18.PreconditionFailed"}) {
		t.Errorf("PATCH with a stale ETag: %d %v, want 412 PreconditionFailed", r.Status, r.Body)
	}
	if got := f.State().BootSourceOverrideTarget; got != "Pxe" {
		t.Errorf("target %q after the refused PATCH, want Pxe", got)
	}
	// Without If-Match the service accepts a PATCH, as DSP0266 allows and
	// BMCs do; gofish sends If-Match whenever a GET gave it an ETag.
	if r := c.do("PATCH", redfishfake.SystemPath, hdd); r.Status != 200 {
		t.Errorf("PATCH without If-Match: %d", r.Status)
	}

	// A BMC that requires If-Match refuses a PATCH or reset without it.
	strict := redfishfake.Start(t, redfishfake.Options{RequireIfMatch: true})
	sc := newClient(t, strict)
	sc.login()
	for _, w := range []struct {
		path string
		body any
	}{{redfishfake.SystemPath, pxe}, {redfishfake.ResetPath, map[string]string{"ResetType": "On"}}} {
		method := "PATCH"
		if w.path == redfishfake.ResetPath {
			method = "POST"
		}
		if r := sc.do(method, w.path, w.body); r.Status != 428 || !cmp.Equal(r.messageIDs(), []string{"Base.1.18.PreconditionRequired"}) {
			t.Errorf("%s %s without If-Match: %d %v, want 428 PreconditionRequired", method, w.path, r.Status, r.Body)
		}
		stag := sc.do("GET", redfishfake.SystemPath, nil).Header.Get("ETag")
		if r := sc.do(method, w.path, w.body, "If-Match", stag); r.Status >= 300 {
			t.Errorf("%s %s with If-Match: %d %v", method, w.path, r.Status, r.Body)
		}
	}

	f.ChangeAfterNextRead()
	tag = c.do("GET", redfishfake.SystemPath, nil).Header.Get("ETag")
	if r := c.do("POST", redfishfake.ResetPath, map[string]string{"ResetType": "On"}, "If-Match", tag); r.Status != 412 {
		t.Errorf("reset with an ETag another client made stale: %d, want 412", r.Status)
	}
	tag = c.do("GET", redfishfake.SystemPath, nil).Header.Get("ETag")
	f.ChangeBeforeNextWrite()
	if r := c.do("PATCH", redfishfake.SystemPath, pxe, "If-Match", tag); r.Status != 412 {
		t.Errorf("PATCH racing another client: %d, want 412", r.Status)
	}
	if st := f.State(); st.PowerState != "Off" || st.BootSourceOverrideTarget != "Hdd" {
		t.Errorf("state %+v after refused writes", st)
	}
}

// TestBootOverride: a Once override is used by the next power-on and then
// reverts to Disabled; Continuous stays.
func TestBootOverride(t *testing.T) {
	var hooked []redfishfake.PowerEvent
	f := redfishfake.Start(t, redfishfake.Options{OnPower: func(e redfishfake.PowerEvent) { hooked = append(hooked, e) }})
	c := newClient(t, f)
	c.login()
	reset := func(rt string) {
		t.Helper()
		if r := c.do("POST", redfishfake.ResetPath, map[string]string{"ResetType": rt}); r.Status != 204 {
			t.Fatalf("reset %s: %d %v", rt, r.Status, r.Body)
		}
	}
	patch := func(target, enabled string) {
		t.Helper()
		if r := c.do("PATCH", redfishfake.SystemPath, map[string]any{"Boot": map[string]string{"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled}}); r.Status != 200 {
			t.Fatalf("PATCH boot %s/%s: %d %v", target, enabled, r.Status, r.Body)
		}
	}
	patch("Pxe", "Once")
	reset("On")
	if st := f.State(); st.BootSourceOverrideEnabled != "Disabled" || st.PowerState != "On" {
		t.Errorf("after a Once boot: %+v", st)
	}
	reset("ForceRestart") // boots from its disk now
	reset("On")           // already on: nothing happens
	patch("Hdd", "Continuous")
	reset("ForceOff")
	reset("ForceOff") // already off: nothing happens
	reset("PowerCycle")
	reset("ForceRestart")
	want := []redfishfake.PowerEvent{
		{ResetType: "On", On: true, BootTarget: "Pxe", BootMode: "UEFI"},
		{ResetType: "ForceRestart", On: true, BootTarget: "Hdd", BootMode: "UEFI"},
		{ResetType: "ForceOff"},
		{ResetType: "PowerCycle", On: true, BootTarget: "Hdd", BootMode: "UEFI"},
		{ResetType: "ForceRestart", On: true, BootTarget: "Hdd", BootMode: "UEFI"},
	}
	if diff := cmp.Diff(want, hooked); diff != "" {
		t.Errorf("hook calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, f.PowerEvents()); diff != "" {
		t.Errorf("PowerEvents (-want +got):\n%s", diff)
	}
	reset("ForceOff")
	if r := c.do("POST", redfishfake.ResetPath, map[string]string{"ResetType": "ForceRestart"}); r.Status != 409 {
		t.Errorf("restart of a system that is off: %d, want 409", r.Status)
	}
}

// TestBootTargets: the allowed targets and the initial one are options.
func TestBootTargets(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{BootTargets: []string{"None", "Pxe", "Hdd", "UefiTarget"}, BootTarget: "UefiTarget"})
	c := newClient(t, f)
	c.login()
	boot := c.do("GET", redfishfake.SystemPath, nil).Body["Boot"].(map[string]any)
	if boot["BootSourceOverrideTarget"] != "UefiTarget" || len(boot["BootSourceOverrideTarget@Redfish.AllowableValues"].([]any)) != 4 {
		t.Errorf("Boot %v", boot)
	}
	if r := c.do("PATCH", redfishfake.SystemPath, map[string]any{"Boot": map[string]string{"BootSourceOverrideTarget": "Cd"}}); r.Status != 400 {
		t.Errorf("PATCH to a target this BMC does not offer: %d", r.Status)
	}
}

// TestAsyncReset: a reset answers 202 with a task monitor; another reset
// is refused while it runs; reads move it to Completed, or to Exception.
func TestAsyncReset(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{AsyncReset: true, TaskReads: 2})
	c := newClient(t, f)
	c.login()
	r := c.do("POST", redfishfake.ResetPath, map[string]string{"ResetType": "On"})
	mon := r.Header.Get("Location")
	if r.Status != 202 || mon != redfishfake.TasksURI+"/1" {
		t.Fatalf("reset: %d, Location %q", r.Status, mon)
	}
	if r := c.do("POST", redfishfake.ResetPath, map[string]string{"ResetType": "ForceOff"}); r.Status != 409 || !cmp.Equal(r.messageIDs(), []string{"Base.1.18.ResourceInUse"}) {
		t.Errorf("second reset while one runs: %d %v, want 409 ResourceInUse", r.Status, r.Body)
	}
	var states []string
	for range 2 {
		states = append(states, c.do("GET", redfishfake.SystemPath, nil).Body["PowerState"].(string))
	}
	if tk := c.do("GET", mon, nil); tk.Body["TaskState"] != "Completed" {
		t.Errorf("task after two reads: %v", tk.Body)
	}
	if diff := cmp.Diff([]string{"PoweringOn", "On"}, states); diff != "" {
		t.Errorf("power states read (-want +got):\n%s", diff)
	}

	f.FailNextReset("power supply fault")
	r = c.do("POST", redfishfake.ResetPath, map[string]string{"ResetType": "ForceOff"})
	mon = r.Header.Get("Location")
	c.do("GET", mon, nil)
	tk := c.do("GET", mon, nil)
	msgs, _ := tk.Body["Messages"].([]any)
	if tk.Body["TaskState"] != "Exception" || len(msgs) != 1 || msgs[0].(map[string]any)["Message"] != "power supply fault" {
		t.Errorf("failed task: %v", tk.Body)
	}
	if st := f.State().PowerState; st != "On" {
		t.Errorf("power %q after a failed reset, want On", st)
	}
	if n := len(f.PowerEvents()); n != 1 {
		t.Errorf("%d power events, want 1", n)
	}
}

// TestRequestLog: the log has every request with its status, and no
// password.
func TestRequestLog(t *testing.T) {
	f := redfishfake.Start(t, redfishfake.Options{})
	c := newClient(t, f)
	c.login()
	c.do("GET", redfishfake.SystemPath, nil)
	var got []string
	for _, r := range f.Requests() {
		got = append(got, r.String()+" "+r.Auth)
		if strings.Contains(r.Body, f.Password) {
			t.Errorf("the log holds the password: %+v", r)
		}
	}
	want := []string{"POST /redfish/v1/SessionService/Sessions 201 ", "GET /redfish/v1/Systems/1 200 session"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
