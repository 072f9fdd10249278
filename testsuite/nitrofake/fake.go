// Package nitrofake is a strict fake of the NetScaler (Citrix ADC) NITRO REST
// configuration API, for tests of rackflow's NITRO client and activities. It
// serves /nitro/v1/config/ on a loopback port (plain HTTP or TLS), requires
// authentication (X-NITRO-USER/X-NITRO-PASS headers or a login session), checks
// every object and binding against the fields, types and values the NITRO
// reference documents for the resources rackflow uses, and answers in NITRO's
// shape with NITRO's error codes. It keeps the object graph, a call log and
// the last saved configuration so tests assert what a NetScaler would hold.
//
// It is not a NetScaler: it knows servicegroup, lbvserver, lbmonitor, server,
// inat, rnat and their bindings only, has no data plane, and where releases differ
// it is stricter than the appliance (see Server). Not for production use.
package nitrofake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a fake. The zero value works: user nsroot, password
// "nsroot-fake", 30 minute sessions, plain HTTP.
type Options struct {
	Username, Password string
	// SessionTimeout bounds every session; a login's own "timeout" (seconds)
	// shortens it. 30 minutes (NetScaler's default) when zero.
	SessionTimeout time.Duration
	// TLS serves HTTPS with a self-signed certificate; CAPEM returns it.
	TLS bool
	// Now is the clock sessions expire by; time.Now when nil. A test that
	// passes a clock it moves expires sessions without sleeping.
	Now func() time.Time
	// Version is the release nsversion reports, "major.minor" (e.g.
	// "12.0"); "13.1" when empty. Below 12.1 there is no named RNAT: rnat
	// with a name and rnat_nsip_binding are refused as that release does.
	Version string
	// NSIP is the appliance's own management address (nsip type NSIP);
	// 192.0.2.1 when empty. Other owned addresses (VIPs, SNIPs) are added
	// with Seed("nsip", ...).
	NSIP string
	// HA places the node in a high-availability pair; the zero value is a
	// standalone appliance, which hanode reports as a Primary node 0.
	HA HA
	// LBDisabled reports the load-balancing feature as disabled in nsfeature.
	LBDisabled bool
	// Partitions are the admin partitions besides "default" that
	// nspartition?action=Switch can enter; each has its own configuration.
	Partitions []string
}

// HA is the node's place in a high-availability pair.
type HA struct {
	// PeerIP is the other node's address; empty means standalone.
	PeerIP string
	// Secondary makes this node the secondary; the peer is the primary.
	Secondary bool
	// NotPropagated: the peer does not take the changes made here. Every
	// configuration change still succeeds (as on the appliance), and a
	// request that asked ?warning=yes is told so with warning 1028. A
	// secondary node answers the same way.
	NotPropagated bool
}

// Call is one request the fake answered.
type Call struct {
	Method, Path, Query string
	// Auth is "header", "session" or "none".
	Auth string
	// Body is the request body; a login's password is replaced by "REDACTED".
	Body      string
	Status    int
	ErrorCode int
}

// Mutating reports whether the call asked to change the configuration
// (anything but GET, login, logout and save), whether or not it succeeded.
func (c Call) Mutating() bool {
	if c.Method == http.MethodGet {
		return false
	}
	switch c.Path {
	case "/nitro/v1/config/login", "/nitro/v1/config/logout", "/nitro/v1/config/nsconfig":
		return false
	}
	return true
}

func (c Call) String() string {
	q := ""
	if c.Query != "" {
		q = "?" + c.Query
	}
	return fmt.Sprintf("%s %s%s -> %d/%d", c.Method, c.Path, q, c.Status, c.ErrorCode)
}

// Config is a copy of the object graph: Objects[type][name] holds an object's
// fields as the client set them; Bindings[type] holds binding rows.
type Config struct {
	Objects  map[string]map[string]map[string]any
	Bindings map[string][]map[string]any
}

// Server is a running fake. Deviations from the appliance, all on the strict
// side: a servicegroup still bound to an lbvserver, a monitor still bound
// to a servicegroup and a server still a member cannot be removed (315
// "Resource in use"; unbind first, which is right on every release);
// X-NITRO-USER headers and a session cookie on one request are refused (the
// NITRO reference says not to send both); bulk (array) payloads are refused;
// numbers must be JSON numbers; ?filter= is answered on the GET of a
// collection of objects only, matching values exactly, and a property the
// type does not have is 278.
type Server struct {
	opts Options
	srv  *httptest.Server

	mu       sync.Mutex
	cfg      Config
	sessions map[string]time.Time
	calls    []Call
	faults   []fault
	saveBusy int
	saved    *Config
	logins   int
	// attempts counts every request that presented a password (login
	// bodies and X-NITRO-PASS headers), accepted or not; presented holds
	// the passwords themselves, so a test can prove one never arrived.
	attempts  int
	presented map[string]bool
	// parts are the configurations of the admin partitions; sessPart the
	// partition each session switched to ("" is default).
	parts    map[string]*Config
	sessPart map[string]string
	down     map[string]bool
	disabled []Disable
}

// Disable records one servicegroup?action=disable of a member.
type Disable struct {
	ServiceGroup, ServerName string
	Port                     int
	Delay                    int
	Graceful                 string
}

type fault struct {
	method, path string
	code         int
}

// Start runs a fake on 127.0.0.1 until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	if opts.TLS {
		s.srv = httptest.NewTLSServer(s)
	} else {
		s.srv = httptest.NewServer(s)
	}
	t.Cleanup(s.srv.Close)
	return s
}

// New returns a fake that is not listening; serve it with any http.Server
// (Start is the usual way).
func New(opts Options) *Server {
	if opts.Username == "" {
		opts.Username = "nsroot"
	}
	if opts.Password == "" {
		opts.Password = "nsroot-fake"
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 30 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Version == "" {
		opts.Version = "13.1"
	}
	if opts.NSIP == "" {
		opts.NSIP = "192.0.2.1"
	}
	s := &Server{opts: opts, sessions: map[string]time.Time{}, presented: map[string]bool{},
		parts: map[string]*Config{}, sessPart: map[string]string{}, down: map[string]bool{}}
	s.cfg = newConfig(opts.NSIP)
	for _, p := range opts.Partitions {
		c := newConfig(opts.NSIP)
		s.parts[p] = &c
	}
	return s
}

func newConfig(nsip string) Config {
	c := Config{Objects: map[string]map[string]map[string]any{}, Bindings: map[string][]map[string]any{}}
	for t := range objects {
		c.Objects[t] = map[string]map[string]any{}
	}
	for name, typ := range builtinMonitors {
		c.Objects["lbmonitor"][name] = map[string]any{"monitorname": name, "type": typ}
	}
	c.Objects["nsip"][nsip] = map[string]any{"ipaddress": nsip, "netmask": "255.255.255.0", "type": "NSIP"}
	return c
}

// Partition is a copy of an admin partition's running configuration.
func (s *Server) Partition(name string) Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.parts[name]; ok {
		return cloneConfig(*p)
	}
	return Config{}
}

// SetBackendDown makes the monitors of every member with this IP fail (or
// pass again), so an lbvserver whose members are all down reports
// curstate DOWN. Members are up by default: the fake has no data plane.
func (s *Server) SetBackendDown(ip string, down bool) {
	s.mu.Lock()
	s.down[ip] = down
	s.mu.Unlock()
}

// Disabled lists the member disables (servicegroup?action=disable) so far.
func (s *Server) Disabled() []Disable {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.disabled)
}

// CertSHA256 is the hex SHA-256 of a TLS fake's certificate, as an
// operator pins it (empty for plain HTTP).
func (s *Server) CertSHA256() string {
	if s.srv.TLS == nil || s.srv.Certificate() == nil {
		return ""
	}
	sum := sha256.Sum256(s.srv.Certificate().Raw)
	return hex.EncodeToString(sum[:])
}

// URL is the base URL to give a client, e.g. http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.srv.URL }

// Username and Password are the credentials the fake accepts.
func (s *Server) Username() string { return s.opts.Username }
func (s *Server) Password() string { return s.opts.Password }

// CAPEM is the PEM certificate of a TLS fake (nil for plain HTTP).
func (s *Server) CAPEM() []byte {
	if s.srv.TLS == nil || s.srv.Certificate() == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Objects returns a copy of all objects of a type by name.
func (s *Server) Objects(typ string) map[string]map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]any{}
	for n, o := range s.cfg.Objects[typ] {
		out[n] = maps.Clone(o)
	}
	return out
}

// Bindings returns a copy of the binding rows of a type under one parent
// (all parents when parent is "").
func (s *Server) Bindings(typ, parent string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	bs := bindings[typ]
	for _, r := range s.cfg.Bindings[typ] {
		if parent == "" || r[bs.parentField] == parent {
			out = append(out, maps.Clone(r))
		}
	}
	return out
}

// Calls returns every call answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// ResetCalls forgets the call log.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	s.calls = nil
	s.mu.Unlock()
}

// Logins counts successful logins.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// LoginAttempts counts requests that presented a password, whether the
// fake accepted it or not.
func (s *Server) LoginAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// SawPassword reports whether any request presented pw, in a login body or
// an X-NITRO-PASS header.
func (s *Server) SawPassword(pw string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.presented[pw]
}

func (s *Server) recordPassword(pw string) {
	s.mu.Lock()
	s.attempts++
	s.presented[pw] = true
	s.mu.Unlock()
}

// Sessions counts sessions that are open (not logged out, not expired).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, exp := range s.sessions {
		if s.opts.Now().Before(exp) {
			n++
		}
	}
	return n
}

// FailNext makes the next authenticated request whose method matches and
// whose path starts with pathPrefix (e.g. "/nitro/v1/config/lbvserver")
// answer errorcode without touching the configuration. An empty method
// matches any.
func (s *Server) FailNext(method, pathPrefix string, errorcode int) {
	s.mu.Lock()
	s.faults = append(s.faults, fault{method: method, path: pathPrefix, code: errorcode})
	s.mu.Unlock()
}

// ExpireSessions ends every session: the next request with one gets 444.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	for k := range s.sessions {
		s.sessions[k] = time.Time{}
	}
	s.mu.Unlock()
}

// SaveInProgress makes the next n saves answer 293 "Operation already in
// progress", as a NetScaler does while another save runs.
func (s *Server) SaveInProgress(n int) {
	s.mu.Lock()
	s.saveBusy = n
	s.mu.Unlock()
}

// SavedConfig is a copy of what the last successful save persisted, and
// false if nothing was saved yet.
func (s *Server) SavedConfig() (Config, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved == nil {
		return Config{}, false
	}
	return cloneConfig(*s.saved), true
}

// Running is a copy of the running configuration.
func (s *Server) Running() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneConfig(s.cfg)
}

// Seed adds an object or binding row as if someone else had configured it,
// with the same checks as the API. Values are strings or ints.
func (s *Server) Seed(typ string, obj map[string]any) error {
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	m, err := decodeObject(raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var e *nitroErr
	if _, ok := objects[typ]; ok {
		e = s.add(typ, m)
	} else if _, ok := bindings[typ]; ok {
		e = s.bind(typ, m)
	} else {
		return fmt.Errorf("unknown type %q", typ)
	}
	if e != nil {
		return fmt.Errorf("seed %s: errorcode %d: %s", typ, e.code, e.msg)
	}
	return nil
}

func cloneConfig(c Config) Config {
	out := Config{Objects: map[string]map[string]map[string]any{}, Bindings: map[string][]map[string]any{}}
	for t, objs := range c.Objects {
		out.Objects[t] = map[string]map[string]any{}
		for n, o := range objs {
			out.Objects[t][n] = maps.Clone(o)
		}
	}
	for t, rows := range c.Bindings {
		for _, r := range rows {
			out.Bindings[t] = append(out.Bindings[t], maps.Clone(r))
		}
	}
	return out
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	call := Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body), Auth: "none"}
	status, code, resp, hdr := s.handle(r, body, &call)
	if status == 0 {
		status = statusFor(code, r.Method)
	}
	call.Status, call.ErrorCode = status, code
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	for k, v := range hdr {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

func statusFor(code int, method string) int {
	switch code {
	case codeOK:
		if method == http.MethodPost {
			return http.StatusCreated
		}
		return http.StatusOK
	case codeBadLogin, codeSessionExpired, codeNotLoggedIn:
		return http.StatusUnauthorized
	case codeNoEnt, codeNoVserver, codeNoSvcGroup, codeBadObjectName:
		return http.StatusNotFound
	case codeExist:
		return http.StatusConflict
	case codePerm:
		return http.StatusForbidden
	case codeInval, codeInvalidName, codeArgPrereq, codeArgMissing, codeArgValBad, codeIntMax, codeIntMin,
		codeInvalidIP, codeInvalidNetmask, codeBadJSON, codeBadJSONDatatype:
		return http.StatusBadRequest
	}
	return 599 // "NetScaler specific error"
}

func errBody(e *nitroErr) map[string]any {
	return map[string]any{"errorcode": e.code, "message": e.msg, "severity": "ERROR"}
}

func done() map[string]any {
	return map[string]any{"errorcode": 0, "message": "Done", "severity": "NONE"}
}

const prefix = "/nitro/v1/config/"

func (s *Server) handle(r *http.Request, body []byte, call *Call) (int, int, any, http.Header) {
	fail := func(e *nitroErr) (int, int, any, http.Header) { return 0, e.code, errBody(e), nil }
	if !strings.HasPrefix(r.URL.Path, prefix) {
		return http.StatusNotFound, codeBadObjectName, errBody(errf(codeBadObjectName, "Invalid object name [%s]", r.URL.Path)), nil
	}
	rest := strings.TrimPrefix(r.URL.Path, prefix)
	typ, name, _ := strings.Cut(rest, "/")
	if name != "" {
		var err error
		if name, err = url.PathUnescape(name); err != nil {
			return fail(errf(codeBadObjectName, "Invalid object name"))
		}
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "application/vnd.com.citrix.netscaler") {
			return fail(errf(codeBadJSON, "Invalid JSON input (Content-Type %q)", ct))
		}
	}
	if pw, ok := r.Header["X-Nitro-Pass"]; ok {
		s.recordPassword(strings.Join(pw, ","))
	}
	if typ == "login" && r.Method == http.MethodPost && name == "" {
		call.Body = redactLogin(body)
		return s.login(body)
	}
	auth, e := s.authenticate(r)
	call.Auth = auth
	if e != nil {
		return fail(e)
	}
	if e := s.fault(r); e != nil {
		return fail(e)
	}
	session := ""
	if c, err := r.Cookie("NITRO_AUTH_TOKEN"); err == nil && auth == "session" {
		session = c.Value
	}
	q := r.URL.Query()
	switch {
	case typ == "logout" && r.Method == http.MethodPost:
		if auth != "session" {
			return fail(errf(codeNotLoggedIn, "Not logged in or connection timed out"))
		}
		s.mu.Lock()
		delete(s.sessions, session)
		delete(s.sessPart, session)
		s.mu.Unlock()
		return 0, 0, done(), nil
	case typ == "nsconfig":
		if r.Method != http.MethodPost || q.Get("action") != "save" {
			return http.StatusNotFound, codeBadObjectName, errBody(errf(codeBadObjectName, "the fake supports only POST nsconfig?action=save")), nil
		}
		if _, e := decodeBody("nsconfig", body); e != nil {
			return fail(e)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.saveBusy > 0 {
			s.saveBusy--
			return fail(errf(codeAlready, "Operation already in progress"))
		}
		c := cloneConfig(s.cfg)
		s.saved = &c
		return 0, 0, done(), nil
	case typ == "nspartition" && r.Method == http.MethodPost && q.Get("action") == "Switch":
		// Switching is a property of the session: header auth has none.
		if auth != "session" {
			return fail(errf(codeNotLoggedIn, "Not logged in or connection timed out"))
		}
		obj, e := decodeBody("nspartition", body)
		if e != nil {
			return fail(e)
		}
		name, _ := obj["partitionname"].(string)
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.parts[name]; !ok && name != "default" {
			return fail(errf(codeNoEnt, "No such resource [partitionname, %s]", name))
		}
		if name == "default" {
			name = ""
		}
		s.sessPart[session] = name
		return 0, 0, done(), nil
	case r.Method == http.MethodGet && readOnly[typ] != nil:
		s.mu.Lock()
		defer s.mu.Unlock()
		defer s.enter(session)()
		rows, e := readOnly[typ](s, name)
		if e != nil {
			return fail(e)
		}
		out := done()
		if rows != nil {
			out[typ] = rows
		}
		return 0, 0, out, nil
	}
	_, isObj := objects[typ]
	_, isBind := bindings[typ]
	if typ == "rnat_nsip_binding" && !s.atLeast(12, 1) {
		isBind = false // no such resource before 12.1
	}
	if !isObj && !isBind {
		return http.StatusNotFound, codeBadObjectName, errBody(errf(codeBadObjectName, "Invalid object name [%s]", typ)), nil
	}
	args, e := parseArgs(r.URL.RawQuery)
	if e != nil {
		return fail(e)
	}
	for k := range q {
		if k != "args" && k != "warning" && k != "action" && k != "filter" {
			return fail(errf(codeInval, "Invalid argument [%s]", k))
		}
	}
	var filter map[string]string
	if _, ok := q["filter"]; ok {
		if r.Method != http.MethodGet || name != "" || !isObj {
			// The fake filters collections of objects only (GET <type>?filter=).
			return fail(errf(codeInval, "Invalid argument [filter]"))
		}
		if filter, e = parseFilter(objects[typ], r.URL.RawQuery); e != nil {
			return fail(e)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.enter(session)()
	if filter != nil {
		return 0, 0, s.list(typ, filter), nil
	}
	status, code, out, hdr := s.apply(r.Method, typ, name, q.Get("action"), args, body, isObj, isBind)
	if code == 0 && r.Method != http.MethodGet && q.Get("warning") == "yes" && (s.opts.HA.NotPropagated || s.opts.HA.Secondary) {
		// The change is made here; the warning says the peer did not get it.
		code = codeNotPropagated
		out = map[string]any{"errorcode": code, "message": "Warning: the command was not propagated to the HA peer node", "severity": "WARNING"}
		status = http.StatusOK
		if r.Method == http.MethodPost {
			status = http.StatusCreated
		}
	}
	return status, code, out, hdr
}

// enter switches the configuration to the session's partition until the
// returned function runs. Callers hold s.mu.
func (s *Server) enter(session string) func() {
	p := s.sessPart[session]
	if p == "" {
		return func() {}
	}
	saved := s.cfg
	s.cfg = *s.parts[p]
	return func() {
		*s.parts[p] = s.cfg
		s.cfg = saved
	}
}

func (s *Server) apply(method, typ, name, action string, args map[string]string, body []byte, isObj, isBind bool) (int, int, any, http.Header) {
	fail := func(e *nitroErr) (int, int, any, http.Header) { return 0, e.code, errBody(e), nil }
	switch method {
	case http.MethodGet:
		rows, e := s.get(typ, name)
		if e != nil {
			return fail(e)
		}
		out := done()
		if len(rows) > 0 {
			out[typ] = rows
		}
		return 0, 0, out, nil
	case http.MethodPost:
		if typ == "servicegroup" && action == "disable" && name == "" {
			obj, e := decodeBody(typ, body)
			if e != nil {
				return fail(e)
			}
			if e := s.disableMember(obj); e != nil {
				return fail(e)
			}
			return 0, 0, done(), nil
		}
		if name != "" || action != "" || !isObj {
			return http.StatusNotFound, codeBadObjectName, errBody(errf(codeBadObjectName, "unsupported POST %s?action=%s", typ, action)), nil
		}
		obj, e := decodeBody(typ, body)
		if e != nil {
			return fail(e)
		}
		if e := s.add(typ, obj); e != nil {
			return fail(e)
		}
		return 0, 0, done(), nil
	case http.MethodPut:
		if name != "" {
			return http.StatusNotFound, codeBadObjectName, errBody(errf(codeBadObjectName, "PUT takes the object in the body, not the URL")), nil
		}
		obj, e := decodeBody(typ, body)
		if e != nil {
			return fail(e)
		}
		if isBind {
			e = s.bind(typ, obj)
		} else {
			e = s.update(typ, obj)
		}
		if e != nil {
			return fail(e)
		}
		return 0, 0, done(), nil
	case http.MethodDelete:
		if name == "" {
			return fail(errf(codeArgMissing, "Required argument missing [name]"))
		}
		var e *nitroErr
		if isBind {
			e = s.unbind(typ, name, args)
		} else {
			e = s.remove(typ, name, args)
		}
		if e != nil {
			return fail(e)
		}
		return 0, 0, done(), nil
	}
	return http.StatusMethodNotAllowed, 1237, errBody(errf(1237, "Invalid method name. It should be either post, put, get, stat or delete")), nil
}

// disableMember takes one member out of service, as "disable servicegroup
// SG SERVER PORT -delay N -graceful YES" does: the fake marks it DISABLED
// at once and records the request.
func (s *Server) disableMember(obj map[string]any) *nitroErr {
	fields := map[string]field{
		"servicegroupname": {kind: kName, required: true},
		"servername":       {kind: kName, required: true},
		"port":             {kind: kInt, min: 1, max: 65535, required: true},
		"delay":            {kind: kInt, min: 0, max: 4294967295},
		"graceful":         {kind: kEnum, enum: yesNo},
	}
	if e := checkFields(fields, obj, true); e != nil {
		return e
	}
	sg := obj["servicegroupname"].(string)
	if _, ok := s.cfg.Objects["servicegroup"][sg]; !ok {
		return errf(codeNoEnt, "No such resource [servicegroupname, %s]", sg)
	}
	port, _ := obj["port"].(json.Number).Int64()
	for _, r := range s.cfg.Bindings["servicegroup_servicegroupmember_binding"] {
		rp, _ := r["port"].(json.Number).Int64()
		if r["servicegroupname"] == sg && r["servername"] == obj["servername"] && rp == port {
			r["state"] = "DISABLED"
			d := Disable{ServiceGroup: sg, ServerName: obj["servername"].(string), Port: int(port)}
			if n, ok := obj["delay"].(json.Number); ok {
				v, _ := n.Int64()
				d.Delay = int(v)
			}
			d.Graceful, _ = obj["graceful"].(string)
			s.disabled = append(s.disabled, d)
			return nil
		}
	}
	return errf(codeNoEnt, "No such resource [member %v:%v]", obj["servername"], port)
}

func redactLogin(body []byte) string {
	var m map[string]map[string]any
	if json.Unmarshal(body, &m) != nil || m["login"] == nil {
		return "(unparsable login body)"
	}
	if _, ok := m["login"]["password"]; ok {
		m["login"]["password"] = "REDACTED"
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (s *Server) login(body []byte) (int, int, any, http.Header) {
	obj, e := decodeBody("login", body)
	if e != nil {
		return 0, e.code, errBody(e), nil
	}
	for k, v := range obj {
		switch k {
		case "username", "password":
			if _, ok := v.(string); !ok {
				e = errf(codeBadJSONDatatype, "Invalid JSON data type [%s]", k)
			}
		case "timeout":
			if _, ok := v.(json.Number); !ok {
				e = errf(codeBadJSONDatatype, "Invalid JSON data type [timeout]")
			}
		default:
			e = errf(codeInval, "Invalid argument [%s]", k)
		}
	}
	if pw, ok := obj["password"].(string); ok {
		s.recordPassword(pw)
	}
	if e == nil && (obj["username"] == nil || obj["password"] == nil) {
		e = errf(codeArgMissing, "Required argument missing [username, password]")
	}
	if e == nil && (obj["username"] != s.opts.Username || obj["password"] != s.opts.Password) {
		e = errf(codeBadLogin, "Invalid username or password")
	}
	if e != nil {
		return 0, e.code, errBody(e), nil
	}
	life := s.opts.SessionTimeout
	if n, ok := obj["timeout"].(json.Number); ok {
		if sec, err := n.Int64(); err == nil && sec > 0 && time.Duration(sec)*time.Second < life {
			life = time.Duration(sec) * time.Second
		}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := "##" + strings.ToUpper(hex.EncodeToString(b))
	s.mu.Lock()
	s.sessions[tok] = s.opts.Now().Add(life)
	s.logins++
	s.mu.Unlock()
	out := done()
	out["sessionid"] = tok
	h := http.Header{}
	h.Add("Set-Cookie", (&http.Cookie{Name: "NITRO_AUTH_TOKEN", Value: tok, Path: "/nitro/v1", HttpOnly: true}).String())
	return http.StatusCreated, 0, out, h
}

func (s *Server) authenticate(r *http.Request) (string, *nitroErr) {
	user, hasUser := r.Header["X-Nitro-User"]
	cookie, cerr := r.Cookie("NITRO_AUTH_TOKEN")
	if hasUser {
		if cerr == nil {
			return "header", errf(codeInval, "Invalid argument [X-NITRO-USER and NITRO_AUTH_TOKEN must not both be sent]")
		}
		if len(user) != 1 || user[0] != s.opts.Username || r.Header.Get("X-NITRO-PASS") != s.opts.Password {
			return "header", errf(codeBadLogin, "Invalid username or password")
		}
		return "header", nil
	}
	if cerr != nil {
		return "none", errf(codeNotLoggedIn, "Not logged in or connection timed out")
	}
	s.mu.Lock()
	exp, ok := s.sessions[cookie.Value]
	s.mu.Unlock()
	if !ok || !s.opts.Now().Before(exp) {
		return "session", errf(codeSessionExpired, "Session expired or killed. Please login again")
	}
	return "session", nil
}

func (s *Server) fault(r *http.Request) *nitroErr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.method == "" || f.method == r.Method) && strings.HasPrefix(r.URL.Path, f.path) {
			s.faults = slices.Delete(s.faults, i, i+1)
			return errf(f.code, "injected error %d", f.code)
		}
	}
	return nil
}

func decodeObject(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeBody parses {"<typ>": {...}}.
func decodeBody(typ string, body []byte) (map[string]any, *nitroErr) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	var outer map[string]json.RawMessage
	if err := dec.Decode(&outer); err != nil {
		return nil, errf(codeBadJSON, "Invalid JSON input")
	}
	if len(outer) != 1 || outer[typ] == nil {
		return nil, errf(codeBadJSON, "Invalid JSON input: expected one %q object", typ)
	}
	obj, err := decodeObject(outer[typ])
	if err != nil {
		return nil, errf(codeBadJSON, "Invalid JSON input: %q must be an object (bulk arrays are not supported by the fake)", typ)
	}
	return obj, nil
}

// parseArgs parses NITRO's ?args=k1:v1,k2:v2 (values URL-encoded).
func parseArgs(rawQuery string) (map[string]string, *nitroErr) {
	return parsePairs(rawQuery, "args")
}

// parseFilter parses GET <type>?filter=k1:v1,k2:v2, in the same form as
// args. A property the type does not have is refused (the fake's
// strictness).
func parseFilter(os objSchema, rawQuery string) (map[string]string, *nitroErr) {
	out, e := parsePairs(rawQuery, "filter")
	if e != nil {
		return nil, e
	}
	for k := range out {
		if _, known := os.fields[k]; !known {
			return nil, errf(codeInval, "Invalid argument [filter %s]", k)
		}
	}
	return out, nil
}

// parsePairs parses the query parameter param's k1:v1,k2:v2.
func parsePairs(rawQuery, param string) (map[string]string, *nitroErr) {
	out := map[string]string{}
	for _, part := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k != param {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			ak, av, ok := strings.Cut(kv, ":")
			if !ok {
				return nil, errf(codeInval, "Invalid argument [%s=%s]", param, v)
			}
			dv, err := url.QueryUnescape(av)
			if err != nil {
				return nil, errf(codeInval, "Invalid argument [%s=%s]", param, v)
			}
			out[ak] = dv
		}
	}
	return out, nil
}

// list answers GET <type>?filter=: the objects whose fields equal every
// filter value. No match is success without the array, as for an empty
// collection.
func (s *Server) list(typ string, filter map[string]string) map[string]any {
	rows, _ := s.get(typ, "")
	var match []map[string]any
	for _, r := range rows {
		ok := true
		for k, v := range filter {
			if r[k] == nil || fmt.Sprint(r[k]) != v {
				ok = false
			}
		}
		if ok {
			match = append(match, r)
		}
	}
	out := done()
	if len(match) > 0 {
		out[typ] = match
	}
	return out
}

func (s *Server) get(typ, name string) ([]map[string]any, *nitroErr) {
	if os, ok := objects[typ]; ok {
		render := func(o map[string]any) map[string]any {
			out := maps.Clone(o)
			for k, v := range os.defaults {
				if _, set := out[k]; !set {
					out[k] = v
				}
			}
			if typ == "lbvserver" {
				out["curstate"] = s.curstate(o)
				out["effectivestate"] = out["curstate"]
			}
			return out
		}
		if name == "" {
			names := slices.Sorted(maps.Keys(s.cfg.Objects[typ]))
			var rows []map[string]any
			for _, n := range names {
				rows = append(rows, render(s.cfg.Objects[typ][n]))
			}
			return rows, nil
		}
		o, ok := s.cfg.Objects[typ][name]
		if !ok {
			return nil, errf(codeNoEnt, "No such resource [%s, %s]", os.key, name)
		}
		return []map[string]any{render(o)}, nil
	}
	bs := bindings[typ]
	if name == "" {
		return nil, errf(codeArgMissing, "Required argument missing [%s]", bs.parentField)
	}
	if _, ok := s.cfg.Objects[bs.parentType][name]; !ok {
		return nil, errf(codeNoEnt, "No such resource [%s, %s]", bs.parentField, name)
	}
	var rows []map[string]any
	for _, r := range s.cfg.Bindings[typ] {
		if r[bs.parentField] != name {
			continue
		}
		out := maps.Clone(r)
		for k, v := range bs.defaults {
			if _, set := out[k]; !set {
				out[k] = v
			}
		}
		for k, f := range bs.fields {
			if n, ok := out[k].(json.Number); ok && f.asString {
				out[k] = string(n)
			}
		}
		rows = append(rows, out)
	}
	return rows, nil
}

// tlsTerminating are the service types that need a certificate bound.
var tlsTerminating = []any{"SSL", "SSL_TCP", "DTLS", "SIP_SSL", "SSL_DIAMETER", "MONGO_TLS", "USER_SSL_TCP", "QUIC", "SSL_FIX", "HTTP_QUIC"}

// curstate is what a monitor would make of an lbvserver: OUT OF SERVICE
// when disabled, UP when an enabled member of a bound servicegroup is not
// marked down (SetBackendDown), DOWN otherwise.
func (s *Server) curstate(vs map[string]any) string {
	if vs["state"] == "DISABLED" {
		return "OUT OF SERVICE"
	}
	if slices.Contains(tlsTerminating, vs["servicetype"]) {
		// No sslvserver_sslcertkey_binding in the fake: no certificate,
		// so the vserver never comes UP, as on the appliance.
		return "DOWN"
	}
	for _, b := range s.cfg.Bindings["lbvserver_servicegroup_binding"] {
		if b["name"] != vs["name"] {
			continue
		}
		for _, m := range s.cfg.Bindings["servicegroup_servicegroupmember_binding"] {
			if m["servicegroupname"] == b["servicegroupname"] && m["state"] != "DISABLED" && !s.down[fmt.Sprint(m["ip"])] {
				return "UP"
			}
		}
	}
	return "DOWN"
}

func (s *Server) add(typ string, obj map[string]any) *nitroErr {
	os := objects[typ]
	if e := checkFields(os.fields, obj, true); e != nil {
		return e
	}
	name := obj[os.key].(string)
	if _, ok := s.cfg.Objects[typ][name]; ok {
		return errf(codeExist, "Resource already exists")
	}
	switch typ {
	case "lbvserver":
		_, ip := obj["ipv46"]
		_, port := obj["port"]
		if ip != port {
			return errf(codeArgPrereq, "Argument pre-requisite missing [ipv46 and port go together]")
		}
	case "rnat":
		if !s.atLeast(12, 1) {
			// Before 12.1 an RNAT rule has no name: "set rnat NETWORK NETMASK".
			return errf(codeInval, "Invalid argument [name]")
		}
		_, nw := obj["network"]
		_, nm := obj["netmask"]
		_, acl := obj["aclname"]
		if nw != nm || nw == acl {
			return errf(codeArgPrereq, "Argument pre-requisite missing [network with netmask, or aclname]")
		}
		for _, o := range s.cfg.Objects["rnat"] {
			if nw && o["network"] == obj["network"] && o["netmask"] == obj["netmask"] {
				return errf(codeRNATExists, "RNAT to the target network already exists [%s]", o["name"])
			}
		}
	case "inat":
		if !s.owned(obj["publicip"].(string)) {
			return errf(codeNATIPNotOwned, "The IP address is not a NetScaler-owned IP [publicip, %s]", obj["publicip"])
		}
	}
	s.cfg.Objects[typ][name] = obj
	return nil
}

func (s *Server) update(typ string, obj map[string]any) *nitroErr {
	os := objects[typ]
	if e := checkFields(os.fields, obj, false); e != nil {
		return e
	}
	name, _ := obj[os.key].(string)
	if name == "" {
		return errf(codeArgMissing, "Required argument missing [%s]", os.key)
	}
	cur, ok := s.cfg.Objects[typ][name]
	if !ok {
		return errf(codeNoEnt, "No such resource [%s, %s]", os.key, name)
	}
	for k, v := range obj {
		if os.fields[k].fixed && k != os.key && cur[k] != v {
			return errf(codeInval, "Invalid argument [%s cannot be changed]", k)
		}
	}
	for k, v := range obj {
		cur[k] = v
	}
	return nil
}

func (s *Server) remove(typ, name string, args map[string]string) *nitroErr {
	os := objects[typ]
	o, ok := s.cfg.Objects[typ][name]
	if !ok {
		return errf(codeNoEnt, "No such resource [%s, %s]", os.key, name)
	}
	for _, a := range os.deleteArgs {
		v, ok := args[a]
		if !ok {
			return errf(codeArgMissing, "Required argument missing [%s]", a)
		}
		if v != o[a] {
			return errf(codeNoEnt, "No such resource [%s, %s]", a, v)
		}
	}
	for k := range args {
		if !slices.Contains(os.deleteArgs, k) {
			return errf(codeInval, "Invalid argument [%s]", k)
		}
	}
	if typ == "lbmonitor" {
		if _, builtin := builtinMonitors[name]; builtin {
			return errf(codePerm, "Operation not permitted")
		}
	}
	if typ == "server" {
		for _, r := range s.cfg.Bindings["servicegroup_servicegroupmember_binding"] {
			if r["ip"] == o["ipaddress"] {
				return errf(codeInUse, "Resource in use [server %s is a member of servicegroup %s]", name, r["servicegroupname"])
			}
		}
	}
	if typ == "servicegroup" {
		for _, r := range s.cfg.Bindings["lbvserver_servicegroup_binding"] {
			if r["servicegroupname"] == name {
				return errf(codeInUse, "Resource in use [servicegroup %s is bound to lbvserver %s]", name, r["name"])
			}
		}
	}
	if typ == "lbmonitor" {
		for _, r := range s.cfg.Bindings["servicegroup_lbmonitor_binding"] {
			if r["monitor_name"] == name {
				return errf(codeInUse, "Resource in use [monitor %s is bound to servicegroup %s]", name, r["servicegroupname"])
			}
		}
	}
	delete(s.cfg.Objects[typ], name)
	// Removing an object removes the bindings it is the parent of.
	for bt, bs := range bindings {
		if bs.parentType == typ {
			s.cfg.Bindings[bt] = slices.DeleteFunc(s.cfg.Bindings[bt], func(r map[string]any) bool { return r[bs.parentField] == name })
		}
	}
	return nil
}

func (s *Server) bind(typ string, row map[string]any) *nitroErr {
	bs := bindings[typ]
	if e := checkFields(bs.fields, row, true); e != nil {
		return e
	}
	parent := row[bs.parentField].(string)
	p, ok := s.cfg.Objects[bs.parentType][parent]
	if !ok {
		if bs.missingParent == codeNoEnt {
			return errf(codeNoEnt, "No such resource [%s, %s]", bs.parentField, parent)
		}
		return errf(bs.missingParent, "%s", map[int]string{codeNoVserver: "No such Vserver"}[bs.missingParent])
	}
	for _, rf := range bs.refs {
		target := row[rf.field].(string)
		if _, ok := s.cfg.Objects[rf.typ][target]; !ok {
			if rf.code == codeNoSvcGroup {
				return errf(codeNoSvcGroup, "No such service/serviceGroup")
			}
			return errf(rf.code, "No such resource [%s, %s]", rf.field, target)
		}
	}
	if typ == "lbvserver_servicegroup_binding" {
		sg := s.cfg.Objects["servicegroup"][row["servicegroupname"].(string)]
		vt, st := p["servicetype"], sg["servicetype"]
		if vt != st && !(vt == "SSL" && st == "HTTP") {
			return errf(codeSvcTypeMismatch, "Service type mismatch between the vserver and service")
		}
	}
	for _, r := range s.cfg.Bindings[typ] {
		if sameRow(bs, r, row) {
			return errf(codeExist, "Resource already exists")
		}
	}
	if typ == "rnat_nsip_binding" && !s.owned(row["natip"].(string)) {
		return errf(codeNATIPNotOwned, "The IP address is not a NetScaler-owned IP [natip, %s]", row["natip"])
	}
	if typ == "servicegroup_servicegroupmember_binding" {
		// Binding by IP uses the server with that address, or creates one
		// named after it, as NetScaler does; the row names the server.
		ip := row["ip"].(string)
		server := ""
		for n, srv := range s.cfg.Objects["server"] {
			if srv["ipaddress"] == ip {
				server = n
			}
		}
		if server == "" {
			if _, taken := s.cfg.Objects["server"][ip]; taken {
				return errf(codeExist, "Resource already exists [server %s]", ip)
			}
			s.cfg.Objects["server"][ip] = map[string]any{"name": ip, "ipaddress": ip}
			server = ip
		}
		row["servername"] = server
	}
	s.cfg.Bindings[typ] = append(s.cfg.Bindings[typ], row)
	return nil
}

func sameRow(bs bindSchema, r, row map[string]any) bool {
	if r[bs.parentField] != row[bs.parentField] {
		return false
	}
	for _, k := range bs.keyFields {
		if fmt.Sprint(r[k]) != fmt.Sprint(row[k]) {
			return false
		}
	}
	return true
}

func (s *Server) unbind(typ, parent string, args map[string]string) *nitroErr {
	bs := bindings[typ]
	if _, ok := s.cfg.Objects[bs.parentType][parent]; !ok {
		return errf(codeNoEnt, "No such resource [%s, %s]", bs.parentField, parent)
	}
	for k := range args {
		if _, ok := bs.fields[k]; !ok || k == bs.parentField {
			return errf(codeInval, "Invalid argument [%s]", k)
		}
	}
	want := map[string]any{bs.parentField: parent}
	for _, k := range bs.keyFields {
		v, ok := args[k]
		if !ok {
			return errf(codeArgMissing, "Required argument missing [%s]", k)
		}
		want[k] = v
	}
	for i, r := range s.cfg.Bindings[typ] {
		if sameRow(bs, r, want) {
			s.cfg.Bindings[typ] = slices.Delete(s.cfg.Bindings[typ], i, i+1)
			return nil
		}
	}
	switch typ {
	case "servicegroup_lbmonitor_binding":
		return errf(codeMonitorNotBound, "Monitor is not bound [%s]", args["monitor_name"])
	case "lbvserver_servicegroup_binding":
		return errf(codeNotBound, "The service/servicegroup is not bound to the vserver [%s]", args["servicegroupname"])
	}
	return errf(codeNoEnt, "No such resource [binding %s]", errors.New(fmt.Sprint(args)))
}

// owned reports whether ip is one of the appliance's own addresses (nsip).
func (s *Server) owned(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, o := range s.cfg.Objects["nsip"] {
		if b, err := netip.ParseAddr(fmt.Sprint(o["ipaddress"])); err == nil && a == b {
			return true
		}
	}
	return false
}

// atLeast compares Options.Version with major.minor.
func (s *Server) atLeast(major, minor int) bool {
	var ma, mi int
	fmt.Sscanf(s.opts.Version, "%d.%d", &ma, &mi)
	return ma > major || (ma == major && mi >= minor)
}

// readOnly are the resources the fake computes rather than stores: a GET
// answers them; anything else on them is refused like an unknown type.
var readOnly = map[string]func(s *Server, name string) (any, *nitroErr){
	// hanode lists node 0 (this node) and, in a pair, node 1 (the peer).
	"hanode": func(s *Server, name string) (any, *nitroErr) {
		self := map[string]any{"id": "0", "ipaddress": s.opts.NSIP, "state": "Primary", "hastatus": "UP", "hasync": "ENABLED"}
		rows := []map[string]any{self}
		if h := s.opts.HA; h.PeerIP != "" {
			peer := map[string]any{"id": "1", "ipaddress": h.PeerIP, "state": "Secondary", "hastatus": "UP", "hasync": "ENABLED"}
			if h.Secondary {
				self["state"], peer["state"] = "Secondary", "Primary"
			}
			rows = append(rows, peer)
		}
		if name != "" {
			for _, r := range rows {
				if r["id"] == name {
					return []map[string]any{r}, nil
				}
			}
			return nil, errf(codeNoEnt, "No such resource [id, %s]", name)
		}
		return rows, nil
	},
	// nsversion is a single object, not an array, as on the appliance.
	"nsversion": func(s *Server, _ string) (any, *nitroErr) {
		return map[string]any{"version": fmt.Sprintf("NetScaler NS%s: Build 1.1.nc, Date: Jan  1 2024, 00:00:00   (64-bit)", s.opts.Version), "mode": "1"}, nil
	},
	// nsfeature is a single object of booleans.
	"nsfeature": func(s *Server, _ string) (any, *nitroErr) {
		return map[string]any{"lb": !s.opts.LBDisabled, "cs": false, "ssl": true, "wl": false}, nil
	},
	// server_servicegroup_binding: the servicegroups a server is a member of.
	"server_servicegroup_binding": func(s *Server, name string) (any, *nitroErr) {
		if _, ok := s.cfg.Objects["server"][name]; !ok {
			return nil, errf(codeNoEnt, "No such resource [name, %s]", name)
		}
		var rows []map[string]any
		for _, r := range s.cfg.Bindings["servicegroup_servicegroupmember_binding"] {
			if r["servername"] == name {
				rows = append(rows, map[string]any{"name": name, "servicegroupname": r["servicegroupname"], "port": r["port"]})
			}
		}
		return rows, nil
	},
}
