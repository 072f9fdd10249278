package nitrofake_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

// These tests speak raw HTTP, not rackflow's client, so the fake is checked
// against the NITRO wire format on its own.

type answer struct {
	Status    int
	ErrorCode int
	Body      map[string]any
	Cookies   []*http.Cookie
}

func call(t *testing.T, hc *http.Client, s *nitrofake.Server, method, path, body string, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
	}
	code, ok := m["errorcode"].(float64)
	if !ok {
		t.Fatalf("%s %s: answer has no errorcode: %q", method, path, raw)
	}
	if _, ok := m["severity"]; !ok {
		t.Fatalf("%s %s: answer has no severity: %q", method, path, raw)
	}
	return answer{Status: resp.StatusCode, ErrorCode: int(code), Body: m, Cookies: resp.Cookies()}
}

func hdrAuth(s *nitrofake.Server) map[string]string {
	return map[string]string{"X-NITRO-USER": s.Username(), "X-NITRO-PASS": s.Password()}
}

func TestStrictness(t *testing.T) {
	s := nitrofake.Start(t, nitrofake.Options{})
	if err := s.Seed("servicegroup", map[string]any{"servicegroupname": "sg1", "servicetype": "TCP"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed("lbvserver", map[string]any{"name": "vs1", "servicetype": "TCP", "ipv46": "203.0.113.10", "port": 443}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		method, path, body   string
		wantStatus, wantCode int
	}{
		"missing required servicetype": {"POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"x"}}`, 400, 1095},
		"unknown servicetype":          {"POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"x","servicetype":"TCPX"}}`, 400, 1097},
		"unknown field":                {"POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"x","servicetype":"TCP","colour":"red"}}`, 400, 278},
		"bad name":                     {"POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"a/b","servicetype":"TCP"}}`, 400, 1075},
		"port as string":               {"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"v","servicetype":"TCP","ipv46":"203.0.113.1","port":"80"}}`, 400, 1234},
		"port zero":                    {"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"v","servicetype":"TCP","ipv46":"203.0.113.1","port":0}}`, 400, 1109},
		"port too big":                 {"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"v","servicetype":"TCP","ipv46":"203.0.113.1","port":65536}}`, 400, 1108},
		"bad ipv46":                    {"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"v","servicetype":"TCP","ipv46":"203.0.113","port":80}}`, 400, 1110},
		"bad lbmethod":                 {"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"v","servicetype":"TCP","lbmethod":"RANDOM"}}`, 400, 1097},
		"ipv46 without port":           {"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"v","servicetype":"TCP","ipv46":"203.0.113.1"}}`, 400, 1093},
		"duplicate servicegroup":       {"POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"sg1","servicetype":"TCP"}}`, 409, 273},
		"wrong wrapper key":            {"POST", "/nitro/v1/config/servicegroup", `{"lbvserver":{"name":"x","servicetype":"TCP"}}`, 400, 1233},
		"member on missing sg":         {"PUT", "/nitro/v1/config/servicegroup_servicegroupmember_binding", `{"servicegroup_servicegroupmember_binding":{"servicegroupname":"nope","ip":"10.0.0.1","port":80}}`, 404, 258},
		"member without port":          {"PUT", "/nitro/v1/config/servicegroup_servicegroupmember_binding", `{"servicegroup_servicegroupmember_binding":{"servicegroupname":"sg1","ip":"10.0.0.1"}}`, 400, 1095},
		"bind missing sg to vserver":   {"PUT", "/nitro/v1/config/lbvserver_servicegroup_binding", `{"lbvserver_servicegroup_binding":{"name":"vs1","servicegroupname":"nope"}}`, 404, 463},
		"bind sg to missing vserver":   {"PUT", "/nitro/v1/config/lbvserver_servicegroup_binding", `{"lbvserver_servicegroup_binding":{"name":"nope","servicegroupname":"sg1"}}`, 404, 461},
		"bind missing monitor":         {"PUT", "/nitro/v1/config/servicegroup_lbmonitor_binding", `{"servicegroup_lbmonitor_binding":{"servicegroupname":"sg1","monitor_name":"nope"}}`, 404, 258},
		"get missing":                  {"GET", "/nitro/v1/config/lbvserver/nope", "", 404, 258},
		"delete missing":               {"DELETE", "/nitro/v1/config/servicegroup/nope", "", 404, 258},
		"delete monitor without type":  {"DELETE", "/nitro/v1/config/lbmonitor/tcp", "", 400, 1095},
		"delete builtin monitor":       {"DELETE", "/nitro/v1/config/lbmonitor/tcp?args=type:TCP", "", 403, 257},
		"unknown resource type":        {"GET", "/nitro/v1/config/lbvservers", "", 404, 1232},
		"unknown endpoint":             {"GET", "/nitro/v2/whatever", "", 404, 1232},
		"update fixed servicetype":     {"PUT", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"sg1","servicetype":"UDP"}}`, 400, 278},
		"rnat without network or acl":  {"POST", "/nitro/v1/config/rnat", `{"rnat":{"name":"r"}}`, 400, 1093},
		"rnat bad netmask":             {"POST", "/nitro/v1/config/rnat", `{"rnat":{"name":"r","network":"10.0.0.0","netmask":"255.0.255.0"}}`, 400, 1111},
		"inat missing privateip":       {"POST", "/nitro/v1/config/inat", `{"inat":{"name":"i","publicip":"203.0.113.5"}}`, 400, 1095},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := s.Running()
			got := call(t, nil, s, tc.method, tc.path, tc.body, hdrAuth(s))
			if got.Status != tc.wantStatus || got.ErrorCode != tc.wantCode {
				t.Errorf("got HTTP %d errorcode %d (%v), want %d/%d", got.Status, got.ErrorCode, got.Body["message"], tc.wantStatus, tc.wantCode)
			}
			if diff := cmp.Diff(before, s.Running()); diff != "" {
				t.Errorf("a refused request changed the configuration (-before +after):\n%s", diff)
			}
		})
	}
}

func TestGraphAndBindings(t *testing.T) {
	s := nitrofake.Start(t, nitrofake.Options{})
	h := hdrAuth(s)
	steps := []struct{ method, path, body string }{
		{"POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"sg1","servicetype":"TCP","comment":"c"}}`},
		{"PUT", "/nitro/v1/config/servicegroup_servicegroupmember_binding", `{"servicegroup_servicegroupmember_binding":{"servicegroupname":"sg1","ip":"10.0.0.1","port":8080,"weight":5}}`},
		{"PUT", "/nitro/v1/config/servicegroup_lbmonitor_binding", `{"servicegroup_lbmonitor_binding":{"servicegroupname":"sg1","monitor_name":"tcp"}}`},
		{"POST", "/nitro/v1/config/lbvserver", `{"lbvserver":{"name":"vs1","servicetype":"TCP","ipv46":"203.0.113.10","port":443}}`},
		{"PUT", "/nitro/v1/config/lbvserver_servicegroup_binding", `{"lbvserver_servicegroup_binding":{"name":"vs1","servicegroupname":"sg1"}}`},
	}
	for _, st := range steps {
		if a := call(t, nil, s, st.method, st.path, st.body, h); a.ErrorCode != 0 || a.Status/100 != 2 {
			t.Fatalf("%s %s: %d/%d %v", st.method, st.path, a.Status, a.ErrorCode, a.Body["message"])
		}
	}
	// A duplicate binding is 273.
	if a := call(t, nil, s, steps[4].method, steps[4].path, steps[4].body, h); a.ErrorCode != 273 {
		t.Errorf("duplicate vserver binding: errorcode %d, want 273", a.ErrorCode)
	}
	// GET returns NITRO's shape with defaults, and the member weight as a string.
	a := call(t, nil, s, "GET", "/nitro/v1/config/servicegroup_servicegroupmember_binding/sg1", "", h)
	rows, _ := a.Body["servicegroup_servicegroupmember_binding"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["weight"] != "5" || rows[0].(map[string]any)["port"] != float64(8080) {
		t.Errorf("member rows = %v", a.Body)
	}
	a = call(t, nil, s, "GET", "/nitro/v1/config/lbvserver/vs1", "", h)
	vs, _ := a.Body["lbvserver"].([]any)
	if len(vs) != 1 || vs[0].(map[string]any)["lbmethod"] != "LEASTCONNECTION" {
		t.Errorf("lbvserver = %v", a.Body)
	}
	// A servicegroup bound to a vserver cannot be removed.
	if a := call(t, nil, s, "DELETE", "/nitro/v1/config/servicegroup/sg1", "", h); a.ErrorCode != 315 {
		t.Errorf("delete bound servicegroup: errorcode %d, want 315", a.ErrorCode)
	}
	// Unbinding needs the key args; wrong args are refused.
	if a := call(t, nil, s, "DELETE", "/nitro/v1/config/lbvserver_servicegroup_binding/vs1", "", h); a.ErrorCode != 1095 {
		t.Errorf("unbind without args: errorcode %d, want 1095", a.ErrorCode)
	}
	if a := call(t, nil, s, "DELETE", "/nitro/v1/config/lbvserver_servicegroup_binding/vs1?args=servicegroupname:sg1", "", h); a.ErrorCode != 0 {
		t.Errorf("unbind: errorcode %d", a.ErrorCode)
	}
	if a := call(t, nil, s, "DELETE", "/nitro/v1/config/servicegroup_servicegroupmember_binding/sg1?args=ip:10.0.0.1,port:8080", "", h); a.ErrorCode != 0 {
		t.Errorf("unbind member: errorcode %d", a.ErrorCode)
	}
	if a := call(t, nil, s, "DELETE", "/nitro/v1/config/servicegroup/sg1", "", h); a.ErrorCode != 0 {
		t.Errorf("delete servicegroup: errorcode %d %v", a.ErrorCode, a.Body["message"])
	}
	if got := s.Bindings("servicegroup_lbmonitor_binding", "sg1"); len(got) != 0 {
		t.Errorf("monitor binding outlived its servicegroup: %v", got)
	}
	if _, ok := s.Objects("lbvserver")["vs1"]; !ok {
		t.Error("vs1 vanished")
	}
}

func TestAuth(t *testing.T) {
	s := nitrofake.Start(t, nitrofake.Options{TLS: true})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM()) {
		t.Fatal("CAPEM")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(h map[string]string) answer {
		return call(t, hc, s, "GET", "/nitro/v1/config/lbmonitor/tcp", "", h)
	}
	if a := get(nil); a.Status != 401 || a.ErrorCode != 1027 {
		t.Errorf("no auth: %d/%d, want 401/1027", a.Status, a.ErrorCode)
	}
	if a := get(map[string]string{"X-NITRO-USER": s.Username(), "X-NITRO-PASS": "wrong"}); a.Status != 401 || a.ErrorCode != 354 {
		t.Errorf("bad header password: %d/%d, want 401/354", a.Status, a.ErrorCode)
	}
	if a := get(hdrAuth(s)); a.ErrorCode != 0 {
		t.Errorf("header auth: %d/%d", a.Status, a.ErrorCode)
	}
	if a := call(t, hc, s, "POST", "/nitro/v1/config/login", `{"login":{"username":"nsroot","password":"bad"}}`, nil); a.ErrorCode != 354 {
		t.Errorf("bad login: errorcode %d, want 354", a.ErrorCode)
	}
	a := call(t, hc, s, "POST", "/nitro/v1/config/login", `{"login":{"username":"`+s.Username()+`","password":"`+s.Password()+`","timeout":900}}`, nil)
	if a.Status != 201 || a.ErrorCode != 0 || a.Body["sessionid"] == nil {
		t.Fatalf("login: %d/%d %v", a.Status, a.ErrorCode, a.Body)
	}
	cookie := map[string]string{"Cookie": "NITRO_AUTH_TOKEN=" + a.Body["sessionid"].(string)}
	if len(a.Cookies) != 1 || a.Cookies[0].Name != "NITRO_AUTH_TOKEN" {
		t.Errorf("login cookies = %v", a.Cookies)
	}
	if a := get(cookie); a.ErrorCode != 0 {
		t.Errorf("session auth: %d/%d", a.Status, a.ErrorCode)
	}
	s.ExpireSessions()
	if a := get(cookie); a.Status != 401 || a.ErrorCode != 444 {
		t.Errorf("expired session: %d/%d, want 401/444", a.Status, a.ErrorCode)
	}
	for _, c := range s.Calls() {
		if strings.Contains(c.Body, s.Password()) {
			t.Errorf("call log holds the password: %v", c.Body)
		}
	}
}

func TestSaveAndFaults(t *testing.T) {
	s := nitrofake.Start(t, nitrofake.Options{})
	h := hdrAuth(s)
	if err := s.Seed("servicegroup", map[string]any{"servicegroupname": "sg1", "servicetype": "UDP"}); err != nil {
		t.Fatal(err)
	}
	s.SaveInProgress(1)
	save := func() answer {
		return call(t, nil, s, "POST", "/nitro/v1/config/nsconfig?action=save", `{"nsconfig":{}}`, h)
	}
	if a := save(); a.ErrorCode != 293 {
		t.Errorf("busy save: errorcode %d, want 293", a.ErrorCode)
	}
	if _, ok := s.SavedConfig(); ok {
		t.Error("a refused save persisted something")
	}
	if a := save(); a.ErrorCode != 0 {
		t.Errorf("save: errorcode %d", a.ErrorCode)
	}
	saved, ok := s.SavedConfig()
	if !ok || saved.Objects["servicegroup"]["sg1"]["servicetype"] != "UDP" {
		t.Errorf("saved config = %v", saved.Objects["servicegroup"])
	}
	s.FailNext("POST", "/nitro/v1/config/servicegroup", 293)
	if a := call(t, nil, s, "POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"sg2","servicetype":"TCP"}}`, h); a.ErrorCode != 293 {
		t.Errorf("injected fault: errorcode %d", a.ErrorCode)
	}
	if _, ok := s.Objects("servicegroup")["sg2"]; ok {
		t.Error("a failed request created sg2")
	}
	if a := call(t, nil, s, "POST", "/nitro/v1/config/servicegroup", `{"servicegroup":{"servicegroupname":"sg2","servicetype":"TCP"}}`, h); a.ErrorCode != 0 {
		t.Errorf("fault fired twice: errorcode %d", a.ErrorCode)
	}
}

// TestFilter: GET <type>?filter=k:v answers the objects whose property
// equals the value (a server found by its address, whatever its name);
// no match is errorcode 0 without the array; a property the type does not
// have, or a filter anywhere but a collection GET, is 278.
func TestFilter(t *testing.T) {
	s := nitrofake.Start(t, nitrofake.Options{})
	h := hdrAuth(s)
	for _, srv := range []map[string]any{
		{"name": "web01", "ipaddress": "10.0.0.5"},
		{"name": "10.0.0.6", "ipaddress": "10.0.0.6"},
	} {
		if err := s.Seed("server", srv); err != nil {
			t.Fatal(err)
		}
	}
	a := call(t, nil, s, "GET", "/nitro/v1/config/server?filter=ipaddress:10.0.0.5", "", h)
	rows, _ := a.Body["server"].([]any)
	if a.ErrorCode != 0 || len(rows) != 1 || rows[0].(map[string]any)["name"] != "web01" {
		t.Errorf("filter by ipaddress: %d %v", a.ErrorCode, a.Body)
	}
	a = call(t, nil, s, "GET", "/nitro/v1/config/server?filter=ipaddress:10.0.0.9", "", h)
	if _, has := a.Body["server"]; a.Status != 200 || a.ErrorCode != 0 || has {
		t.Errorf("no match: HTTP %d errorcode %d %v, want 200/0 without the array", a.Status, a.ErrorCode, a.Body)
	}
	for name, path := range map[string]string{
		"unknown property":   "/nitro/v1/config/server?filter=colour:red",
		"no value separator": "/nitro/v1/config/server?filter=ipaddress",
		"on one object":      "/nitro/v1/config/server/web01?filter=ipaddress:10.0.0.5",
		"on bindings":        "/nitro/v1/config/servicegroup_servicegroupmember_binding/sg1?filter=ip:10.0.0.5",
	} {
		if a := call(t, nil, s, "GET", path, "", h); a.Status != 400 || a.ErrorCode != 278 {
			t.Errorf("%s: HTTP %d errorcode %d, want 400/278", name, a.Status, a.ErrorCode)
		}
	}
}
