// Package redfishfake is a strict Redfish service of our own, for tests and
// the lab: one ComputerSystem whose power and boot source override a client
// drives through the protocol of DMTF DSP0266 and the ComputerSystem,
// SessionService and Task schemas, over TLS on loopback. It refuses what a
// careful BMC refuses (no auth, stale ETags, values outside
// @Redfish.AllowableValues, unknown or read-only properties, wrong methods,
// a reset while one is running) with the status and Base registry message a
// real one sends, and it logs every request so a test can check what a
// client sent. It is not a BMC emulator: no Managers, Chassis, accounts or
// virtual media, one user, and the "machine" is a few fields and a hook.
//
// Resources:
//
//	/redfish/v1/                          ServiceRoot (no auth; nor /redfish, /redfish/v1/odata)
//	/redfish/v1/Systems                   collection of one
//	/redfish/v1/Systems/1                 ComputerSystem: GET, PATCH Boot and AssetTag
//	/redfish/v1/Systems/1/Actions/ComputerSystem.Reset   POST
//	/redfish/v1/SessionService            GET
//	/redfish/v1/SessionService/Sessions   GET, POST (login, no auth)
//	/redfish/v1/SessionService/Sessions/N GET, DELETE (logout)
//	/redfish/v1/TaskService[/Tasks[/N]]   GET (async resets)
//
// The system's ETag (header and @odata.etag) changes with every change of
// it. A PATCH or a reset whose If-Match names an older one gets 412, as
// gofish's common.Entity sends it: the ETag of its last GET of the system,
// on PATCH and on the action's POST alike. No If-Match is accepted unless
// Options.RequireIfMatch.
package redfishfake

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths of the resources.
const (
	Root        = "/redfish/v1/"
	SystemsPath = "/redfish/v1/Systems"
	SystemPath  = "/redfish/v1/Systems/1"
	ResetPath   = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
	SessionSvc  = "/redfish/v1/SessionService"
	SessionsURI = "/redfish/v1/SessionService/Sessions"
	TaskSvc     = "/redfish/v1/TaskService"
	TasksURI    = "/redfish/v1/TaskService/Tasks"
)

// Values the ComputerSystem schema defines and this service allows.
var (
	// ResetTypes are the default ResetType@Redfish.AllowableValues.
	ResetTypes = []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle", "Nmi"}
	// BootTargets are the BootSourceOverrideTarget@Redfish.AllowableValues.
	BootTargets = []string{"None", "Pxe", "Hdd", "Cd", "UefiHttp", "BiosSetup"}
	// BootEnabled are the BootSourceOverrideEnabled@Redfish.AllowableValues.
	BootEnabled = []string{"Disabled", "Once", "Continuous"}
)

// Options configures a service. The zero value is a powered-off UEFI
// machine with no boot override, user "admin" with a random password,
// synchronous resets, 30-minute sessions, on a free loopback port.
type Options struct {
	// Username and Password of the one account. Empty Password: random.
	Username, Password string
	// Addr to listen on; "127.0.0.1:0" when empty.
	Addr string
	// Certificate served; a fresh self-signed one for 127.0.0.1 when nil.
	Certificate *tls.Certificate
	// On is the machine's initial power state.
	On bool
	// BootModes are BootSourceOverrideMode@Redfish.AllowableValues;
	// ["UEFI", "Legacy"] when empty. The first is the initial mode.
	BootModes []string
	// BootTargets are BootSourceOverrideTarget@Redfish.AllowableValues;
	// BootTargets when empty. BootTarget is the initial target ("None"
	// when empty), e.g. "UefiTarget" as an OS's one-time boot leaves it.
	BootTargets []string
	BootTarget  string
	// ResetTypes allowed; ResetTypes when empty.
	ResetTypes []string
	// AsyncReset makes a reset answer 202 Accepted with a task monitor
	// (Location /redfish/v1/TaskService/Tasks/N) instead of 204. The
	// system reads "PoweringOn"/"PoweringOff" and refuses another reset
	// (409) until the task completes, which it does at the next read of
	// the system or the task: progress follows observation, not a clock.
	AsyncReset bool
	// TaskReads is how many reads of the system or of the task a running
	// reset task takes to complete; 1 when zero.
	TaskReads int
	// RequireIfMatch makes a PATCH of the system or a reset without
	// If-Match fail with 428 PreconditionRequired, as some BMCs do.
	RequireIfMatch bool
	// SessionTimeout is SessionService.SessionTimeout: a session unused
	// this long is gone. 30 minutes when zero.
	SessionTimeout time.Duration
	// OnPower, when set, is called after every power change, outside the
	// service's lock, with what the machine did.
	OnPower func(PowerEvent)
}

// PowerEvent is one power change of the machine.
type PowerEvent struct {
	ResetType string // what the client asked for
	On        bool   // the power state after it
	// BootTarget is where the machine boots when it powers on: the
	// override target when enabled, else "Hdd" (its boot order); "" when
	// it powers off.
	BootTarget string
	BootMode   string // "UEFI" or "Legacy" when it powers on
}

// Request is one request the service answered, as a test checks it.
type Request struct {
	Method, Path string
	Status       int
	Auth         string // "session", "basic" or "" (none, or refused)
	IfMatch      string
	// Body of a PATCH or POST, except a login's, which is never kept.
	Body string
}

func (r Request) String() string { return fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status) }

// State is the machine as the service sees it.
type State struct {
	PowerState                                                                  string // "On", "Off", "PoweringOn" or "PoweringOff"
	BootSourceOverrideEnabled, BootSourceOverrideTarget, BootSourceOverrideMode string
	AssetTag                                                                    string
}

type session struct {
	id, token string
	lastUse   time.Time
}

type task struct {
	id        int
	resetType string
	prior     string // the power state before the reset
	reads     int
	done      bool
	failMsg   string // the task ends in Exception with this message
}

// Fake is a running service.
type Fake struct {
	Username, Password string

	opts Options
	ln   net.Listener
	cert *x509.Certificate
	srv  *http.Server

	mu         sync.Mutex
	power      string
	boot       struct{ enabled, target, mode string }
	assetTag   string
	version    int // the system's ETag
	sessions   map[string]*session
	nextID     int
	tasks      []*task
	requests   []Request
	events     []PowerEvent
	conns      int    // TCP connections accepted
	staleAfter bool   // bump the system's version after the next GET of it
	staleWrite bool   // bump it when the next write arrives
	failReset  string // the next async reset's task fails with this message
}

// New listens on opts.Addr with TLS and returns the service; Serve runs it.
func New(opts Options) (*Fake, error) {
	f := &Fake{Username: opts.Username, Password: opts.Password, opts: opts, sessions: map[string]*session{}, power: "Off", version: 1}
	if f.Username == "" {
		f.Username = "admin"
	}
	if f.Password == "" {
		f.Password = randHex(8)
	}
	if len(f.opts.BootModes) == 0 {
		f.opts.BootModes = []string{"UEFI", "Legacy"}
	}
	if len(f.opts.BootTargets) == 0 {
		f.opts.BootTargets = BootTargets
	}
	if f.opts.BootTarget == "" {
		f.opts.BootTarget = "None"
	}
	if len(f.opts.ResetTypes) == 0 {
		f.opts.ResetTypes = ResetTypes
	}
	if f.opts.SessionTimeout == 0 {
		f.opts.SessionTimeout = 30 * time.Minute
	}
	if opts.On {
		f.power = "On"
	}
	f.boot.enabled, f.boot.target, f.boot.mode = "Disabled", f.opts.BootTarget, f.opts.BootModes[0]

	cert := opts.Certificate
	if cert == nil {
		c, err := selfSigned()
		if err != nil {
			return nil, err
		}
		cert = &c
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("redfishfake: certificate: %w", err)
	}
	f.cert = leaf
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("redfishfake: %w", err)
	}
	f.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serveHTTP), ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				f.mu.Lock()
				f.conns++
				f.mu.Unlock()
			}
		},
		// A client that refuses the certificate is what some tests want.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return f, nil
}

// Serve answers requests until ctx is cancelled.
func (f *Fake) Serve(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = f.srv.Close()
		case <-done:
		}
	}()
	err := f.srv.Serve(f.ln)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Start runs a service for the length of a test.
func Start(t testing.TB, opts Options) *Fake {
	t.Helper()
	f, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("redfishfake: %v", err)
		}
	})
	return f
}

// Host and Port are where the service listens.
func (f *Fake) Host() string { h, _, _ := net.SplitHostPort(f.ln.Addr().String()); return h }

// Port is the service's TCP port.
func (f *Fake) Port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// URL is the service's base URL, https://127.0.0.1:PORT.
func (f *Fake) URL() string { return "https://" + f.ln.Addr().String() }

// Certificate is the certificate the service presents.
func (f *Fake) Certificate() *x509.Certificate { return f.cert }

// CertificatePEM is the certificate in PEM, for a bmc.ca_file.
func (f *Fake) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.cert.Raw})
}

// Conns is the number of connections accepted so far, TLS handshakes that
// failed included: a test can tell "never connected" from "refused".
func (f *Fake) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// PinSHA256 is the SHA-256 of the certificate, lower-case hex.
func (f *Fake) PinSHA256() string {
	sum := sha256.Sum256(f.cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Requests returns every request answered so far, in order.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// PowerEvents returns every power change so far, in order.
func (f *Fake) PowerEvents() []PowerEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// State returns the machine's state.
func (f *Fake) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return State{f.power, f.boot.enabled, f.boot.target, f.boot.mode, f.assetTag}
}

// Sessions is the number of live sessions.
func (f *Fake) Sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireLocked()
	return len(f.sessions)
}

// ExpireSessions ends every session, as the BMC's timeout (or an
// administrator) would: their tokens get 401 from now on.
func (f *Fake) ExpireSessions() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.sessions)
}

// ChangeAfterNextRead makes another client change the system right after
// the next GET of it is answered: the ETag that GET returned is stale.
func (f *Fake) ChangeAfterNextRead() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staleAfter = true
}

// ChangeBeforeNextWrite makes another client change the system just
// before the next PATCH of it or reset arrives: whatever ETag the client
// read, its If-Match is stale.
func (f *Fake) ChangeBeforeNextWrite() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staleWrite = true
}

// FailNextReset makes the next asynchronous reset's task end in
// TaskState Exception with message text, leaving the power as it was.
func (f *Fake) FailNextReset(text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failReset = text
}

func (f *Fake) bumpForWrite() {
	if f.staleWrite {
		f.staleWrite = false
		f.assetTag = "changed-by-another-client"
		f.version++
	}
}

func (f *Fake) expireLocked() {
	for k, s := range f.sessions {
		if time.Since(s.lastUse) > f.opts.SessionTimeout {
			delete(f.sessions, k)
		}
	}
}

// reply is a response being built; serveHTTP logs and sends it.
type reply struct {
	status int
	header http.Header
	body   any
	after  []PowerEvent // hooks to run once the lock is released
}

func (f *Fake) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	rep := &reply{header: http.Header{}}
	rec := Request{Method: r.Method, Path: r.URL.Path, IfMatch: r.Header.Get("If-Match")}
	f.mu.Lock()
	if err != nil {
		rep.fail(http.StatusBadRequest, msg("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service."))
	} else {
		rec.Auth = f.route(r, body, rep)
	}
	rec.Status = rep.status
	if r.URL.Path != SessionsURI && (r.Method == http.MethodPatch || r.Method == http.MethodPost) {
		rec.Body = string(body)
	}
	f.requests = append(f.requests, rec)
	f.events = append(f.events, rep.after...)
	f.mu.Unlock()

	for _, ev := range rep.after {
		if f.opts.OnPower != nil {
			f.opts.OnPower(ev)
		}
	}
	for k, v := range rep.header {
		w.Header()[k] = v
	}
	w.Header().Set("OData-Version", "4.0")
	if rep.body == nil {
		w.WriteHeader(rep.status)
		return
	}
	b, _ := json.Marshal(rep.body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(rep.status)
	_, _ = w.Write(b)
}

func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(http.MaxBytesReader(nil, r.Body, 1<<20)); err != nil {
		return nil, err
	}
	if buf.Len() > 0 && !json.Valid(buf.Bytes()) {
		return nil, errors.New("malformed JSON")
	}
	return buf.Bytes(), nil
}

func (rep *reply) ok(status int, body any) { rep.status, rep.body = status, body }

func (rep *reply) fail(status int, infos ...map[string]any) {
	code := Registry + ".GeneralError"
	text := http.StatusText(status)
	if len(infos) > 0 {
		code, text = infos[0]["MessageId"].(string), infos[0]["Message"].(string)
	}
	rep.status = status
	rep.body = map[string]any{"error": map[string]any{"code": code, "message": text, "@Message.ExtendedInfo": infos}}
}

// Registry is the Base message registry the service's messages come from
// (OperationNotAllowed, for a 405, is in Base since 1.11).
const Registry = "Base.1.18"

// msg is a Base registry message for @Message.ExtendedInfo.
func msg(id, text string, args ...string) map[string]any {
	m := map[string]any{
		"@odata.type": "#Message.v1_1_1.Message",
		"MessageId":   Registry + "." + id,
		"Message":     text,
		"Severity":    "Warning",
	}
	if args != nil {
		m["MessageArgs"] = args
	}
	return m
}

// route answers one request under f.mu and says how it was authenticated.
func (f *Fake) route(r *http.Request, body []byte, rep *reply) string {
	p := strings.TrimSuffix(r.URL.Path, "/")
	if p == "/redfish/v1/$metadata" {
		// Must be readable without auth, and this service has no CSDL.
		f.missing(rep, r)
		return ""
	}
	if p == "/redfish/v1/odata" {
		if f.only(rep, r, "GET") {
			rep.ok(http.StatusOK, map[string]any{"@odata.context": "/redfish/v1/$metadata", "value": []map[string]string{
				{"name": "Systems", "kind": "Singleton", "url": SystemsPath},
				{"name": "SessionService", "kind": "Singleton", "url": SessionSvc},
				{"name": "Tasks", "kind": "Singleton", "url": TaskSvc},
			}})
		}
		return ""
	}
	if p == "/redfish/v1" || p == "/redfish" {
		// The service root, the version document, the OData service
		// document and $metadata need no auth (DSP0266, "Authentication
		// requirements"); everything else does.
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			f.notAllowed(rep, r, "GET")
			return ""
		}
		if p == "/redfish" {
			rep.ok(http.StatusOK, map[string]string{"v1": Root})
			return ""
		}
		rep.ok(http.StatusOK, f.serviceRoot())
		return ""
	}
	if p == SessionsURI && r.Method == http.MethodPost {
		// Login needs no auth, but a Basic header, if sent, must be right.
		f.login(body, rep)
		return ""
	}
	auth := f.authenticate(r)
	if auth == "" {
		rep.header.Set("WWW-Authenticate", `Basic realm="redfishfake"`)
		rep.fail(http.StatusUnauthorized, msg("NoValidSession", "There is no valid session established with the implementation."))
		return ""
	}
	f.expireLocked()
	if (r.Method == http.MethodPatch || r.Method == http.MethodPost || r.Method == http.MethodPut) && len(body) > 0 &&
		!strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		rep.fail(http.StatusUnsupportedMediaType, msg("UnsupportedMediaType", "The request specified a media type that is not supported by this service."))
		return auth
	}
	switch {
	case p == SystemsPath:
		if f.only(rep, r, "GET") {
			rep.ok(http.StatusOK, map[string]any{
				"@odata.id": SystemsPath, "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
				"Name": "Computer System Collection", "Members@odata.count": 1,
				"Members": []map[string]string{{"@odata.id": SystemPath}},
			})
		}
	case p == SystemPath:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			f.observeLocked(rep)
			f.systemReply(rep)
			if f.staleAfter {
				f.staleAfter = false
				f.assetTag = "changed-by-another-client"
				f.version++
			}
		case http.MethodPatch:
			f.patchSystem(r, body, rep)
		default:
			f.notAllowed(rep, r, "GET, HEAD, PATCH")
		}
	case p == ResetPath:
		if f.only(rep, r, "POST") {
			f.reset(r, body, rep)
		}
	case p == SessionSvc:
		if f.only(rep, r, "GET") {
			rep.ok(http.StatusOK, map[string]any{
				"@odata.id": SessionSvc, "@odata.type": "#SessionService.v1_1_8.SessionService", "Id": "SessionService",
				"Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": int(f.opts.SessionTimeout / time.Second),
				"Sessions": map[string]string{"@odata.id": SessionsURI},
			})
		}
	case p == SessionsURI:
		if f.only(rep, r, "GET, POST") {
			var members []map[string]string
			for _, id := range slices.Sorted(mapKeys(f.sessions)) {
				members = append(members, map[string]string{"@odata.id": SessionsURI + "/" + f.sessions[id].id})
			}
			rep.ok(http.StatusOK, map[string]any{"@odata.id": SessionsURI, "@odata.type": "#SessionCollection.SessionCollection",
				"Name": "Session Collection", "Members@odata.count": len(members), "Members": members})
		}
	case strings.HasPrefix(p, SessionsURI+"/"):
		f.sessionItem(r, p, rep)
	case p == TaskSvc:
		if f.only(rep, r, "GET") {
			rep.ok(http.StatusOK, map[string]any{"@odata.id": TaskSvc, "@odata.type": "#TaskService.v1_2_0.TaskService",
				"Id": "TaskService", "Name": "Task Service", "ServiceEnabled": true, "Tasks": map[string]string{"@odata.id": TasksURI}})
		}
	case p == TasksURI:
		if f.only(rep, r, "GET") {
			members := []map[string]string{}
			for _, t := range f.tasks {
				members = append(members, map[string]string{"@odata.id": fmt.Sprintf("%s/%d", TasksURI, t.id)})
			}
			rep.ok(http.StatusOK, map[string]any{"@odata.id": TasksURI, "@odata.type": "#TaskCollection.TaskCollection",
				"Name": "Task Collection", "Members@odata.count": len(members), "Members": members})
		}
	case strings.HasPrefix(p, TasksURI+"/"):
		n, err := strconv.Atoi(strings.TrimPrefix(p, TasksURI+"/"))
		if err != nil || n < 1 || n > len(f.tasks) {
			f.missing(rep, r)
			break
		}
		if f.only(rep, r, "GET") {
			f.observeLocked(rep)
			rep.ok(http.StatusOK, taskJSON(f.tasks[n-1]))
		}
	default:
		f.missing(rep, r)
	}
	return auth
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// authenticate checks X-Auth-Token, then HTTP Basic.
func (f *Fake) authenticate(r *http.Request) string {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		f.expireLocked()
		for _, s := range f.sessions {
			if subtle.ConstantTimeCompare([]byte(s.token), []byte(tok)) == 1 {
				s.lastUse = time.Now()
				return "session"
			}
		}
		return ""
	}
	if u, pw, ok := r.BasicAuth(); ok && f.credsOK(u, pw) {
		return "basic"
	}
	return ""
}

func (f *Fake) credsOK(u, pw string) bool {
	return subtle.ConstantTimeCompare([]byte(u), []byte(f.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pw), []byte(f.Password)) == 1
}

func (f *Fake) only(rep *reply, r *http.Request, allow string) bool {
	for _, m := range strings.Split(allow, ", ") {
		if r.Method == m || (m == "GET" && r.Method == http.MethodHead) {
			return true
		}
	}
	f.notAllowed(rep, r, allow)
	return false
}

func (f *Fake) notAllowed(rep *reply, r *http.Request, allow string) {
	rep.header.Set("Allow", allow)
	rep.fail(http.StatusMethodNotAllowed, msg("OperationNotAllowed",
		fmt.Sprintf("The HTTP method %s is not allowed on %s.", r.Method, r.URL.Path)))
}

func (f *Fake) missing(rep *reply, r *http.Request) {
	rep.fail(http.StatusNotFound, msg("ResourceMissingAtURI", fmt.Sprintf("The resource at the URI %s was not found.", r.URL.Path), r.URL.Path))
}

func (f *Fake) serviceRoot() map[string]any {
	return map[string]any{
		"@odata.id": Root, "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "Id": "RootService",
		"Name": "Root Service", "RedfishVersion": "1.17.0", "UUID": "92384634-2938-2342-8820-489239905423",
		"Systems":        map[string]string{"@odata.id": SystemsPath},
		"SessionService": map[string]string{"@odata.id": SessionSvc},
		"Tasks":          map[string]string{"@odata.id": TaskSvc},
		"Links":          map[string]any{"Sessions": map[string]string{"@odata.id": SessionsURI}},
	}
}

func (f *Fake) login(body []byte, rep *reply) {
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil || len(body) == 0 {
		rep.fail(http.StatusBadRequest, msg("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service."))
		return
	}
	for _, k := range []string{"UserName", "Password"} {
		if _, ok := in[k].(string); !ok {
			rep.fail(http.StatusBadRequest, msg("PropertyMissing", fmt.Sprintf("The property %s is a required property and must be included in the request.", k), k))
			return
		}
	}
	for k := range in {
		if k != "UserName" && k != "Password" {
			rep.fail(http.StatusBadRequest, msg("PropertyUnknown", fmt.Sprintf("The property %s is not in the list of valid properties for the resource.", k), k))
			return
		}
	}
	if !f.credsOK(in["UserName"].(string), in["Password"].(string)) {
		rep.fail(http.StatusUnauthorized, msg("ResourceAtUriUnauthorized",
			fmt.Sprintf("While accessing the resource at %s, the service received an authorization error: invalid username or password.", SessionsURI), SessionsURI))
		return
	}
	f.nextID++
	s := &session{id: strconv.Itoa(f.nextID), token: randHex(16), lastUse: time.Now()}
	f.sessions[s.id] = s
	loc := SessionsURI + "/" + s.id
	rep.header.Set("X-Auth-Token", s.token)
	rep.header.Set("Location", loc)
	rep.ok(http.StatusCreated, f.sessionJSON(s))
}

func (f *Fake) sessionJSON(s *session) map[string]any {
	return map[string]any{"@odata.id": SessionsURI + "/" + s.id, "@odata.type": "#Session.v1_6_0.Session",
		"Id": s.id, "Name": "User Session", "UserName": f.Username}
}

func (f *Fake) sessionItem(r *http.Request, p string, rep *reply) {
	s, ok := f.sessions[strings.TrimPrefix(p, SessionsURI+"/")]
	if !ok {
		f.missing(rep, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		rep.ok(http.StatusOK, f.sessionJSON(s))
	case http.MethodDelete:
		delete(f.sessions, s.id)
		rep.ok(http.StatusNoContent, nil)
	default:
		f.notAllowed(rep, r, "GET, DELETE")
	}
}

func (f *Fake) etag() string { return fmt.Sprintf(`"%d"`, f.version) }

func (f *Fake) systemReply(rep *reply) {
	rep.header.Set("ETag", f.etag())
	rep.ok(http.StatusOK, map[string]any{
		"@odata.id": SystemPath, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "@odata.etag": f.etag(),
		"Id": "1", "Name": "System", "SystemType": "Physical", "AssetTag": f.assetTag,
		"PowerState": f.power,
		"Boot": map[string]any{
			"BootSourceOverrideEnabled":                         f.boot.enabled,
			"BootSourceOverrideEnabled@Redfish.AllowableValues": BootEnabled,
			"BootSourceOverrideTarget":                          f.boot.target,
			"BootSourceOverrideTarget@Redfish.AllowableValues":  f.opts.BootTargets,
			"BootSourceOverrideMode":                            f.boot.mode,
			"BootSourceOverrideMode@Redfish.AllowableValues":    f.opts.BootModes,
		},
		"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
			"target": ResetPath, "ResetType@Redfish.AllowableValues": f.opts.ResetTypes,
		}},
	})
}

// ifMatch answers 412 when the client's If-Match names another version of
// the system. No If-Match is accepted, as DSP0266 lets a service do,
// unless RequireIfMatch. A reset is checked against the system's ETag too:
// gofish sends the ETag of its last GET of the system with the action's
// POST (common.Entity.Post), and a BMC that checks it compares it with the
// system's.
func (f *Fake) ifMatch(r *http.Request, rep *reply) bool {
	im := r.Header.Get("If-Match")
	if im == "" && f.opts.RequireIfMatch {
		rep.fail(http.StatusPreconditionRequired, msg("PreconditionRequired", "A precondition header or annotation is required to change this resource."))
		return false
	}
	if im == "" || im == "*" {
		return true
	}
	for _, tag := range strings.Split(im, ",") {
		if strings.TrimPrefix(strings.TrimSpace(tag), "W/") == f.etag() {
			return true
		}
	}
	rep.header.Set("ETag", f.etag())
	rep.fail(http.StatusPreconditionFailed, msg("PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource."))
	return false
}

func (f *Fake) patchSystem(r *http.Request, body []byte, rep *reply) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(body, &in); err != nil || len(in) == 0 {
		rep.fail(http.StatusBadRequest, msg("NoOperation", "The request body submitted contain no data to act upon and no changes to the resource took place."))
		return
	}
	f.bumpForWrite()
	if !f.ifMatch(r, rep) {
		return
	}
	var infos []map[string]any
	readOnly := func(k string) {
		infos = append(infos, msg("PropertyNotWritable", fmt.Sprintf("The property %s is a read only property and cannot be assigned a value.", k), k))
	}
	unknown := func(k string) {
		infos = append(infos, msg("PropertyUnknown", fmt.Sprintf("The property %s is not in the list of valid properties for the resource.", k), k))
	}
	notInList := func(k, v string) {
		infos = append(infos, msg("PropertyValueNotInList", fmt.Sprintf("The value %s for the property %s is not in the list of acceptable values.", v, k), v, k))
	}
	next := f.boot
	tag := f.assetTag
	for k, raw := range in {
		switch k {
		case "AssetTag":
			if json.Unmarshal(raw, &tag) != nil {
				infos = append(infos, msg("PropertyValueTypeError", "The value for the property AssetTag is of a different type than the property can accept.", string(raw), k))
			}
		case "Boot":
			var b map[string]json.RawMessage
			if json.Unmarshal(raw, &b) != nil {
				infos = append(infos, msg("PropertyValueTypeError", "The value for the property Boot is of a different type than the property can accept.", string(raw), k))
				continue
			}
			for bk, bv := range b {
				var s string
				var allowed []string
				var dst *string
				switch bk {
				case "BootSourceOverrideEnabled":
					allowed, dst = BootEnabled, &next.enabled
				case "BootSourceOverrideTarget":
					allowed, dst = f.opts.BootTargets, &next.target
				case "BootSourceOverrideMode":
					allowed, dst = f.opts.BootModes, &next.mode
				case "BootOptions", "BootOrder", "AliasBootOrder", "UefiTargetBootSourceOverride", "BootNext", "HttpBootUri":
					// Real properties this machine does not have.
					unknown("Boot/" + bk)
					continue
				default:
					if strings.Contains(bk, "@") {
						readOnly("Boot/" + bk)
					} else {
						unknown("Boot/" + bk)
					}
					continue
				}
				if json.Unmarshal(bv, &s) != nil || !slices.Contains(allowed, s) {
					notInList("Boot/"+bk, strings.Trim(string(bv), `"`))
					continue
				}
				*dst = s
			}
		case "Id", "Name", "PowerState", "SystemType", "Actions", "UUID":
			readOnly(k)
		default:
			if strings.HasPrefix(k, "@") {
				readOnly(k)
			} else {
				unknown(k)
			}
		}
	}
	if len(infos) > 0 {
		// All or nothing: a refused PATCH changes nothing.
		rep.fail(http.StatusBadRequest, infos...)
		return
	}
	if next != f.boot || tag != f.assetTag {
		f.boot, f.assetTag = next, tag
		f.version++
	}
	f.systemReply(rep)
}

func (f *Fake) reset(r *http.Request, body []byte, rep *reply) {
	var in map[string]json.RawMessage
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			rep.fail(http.StatusBadRequest, msg("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service."))
			return
		}
	}
	for k := range in {
		if k != "ResetType" {
			rep.fail(http.StatusBadRequest, msg("ActionParameterNotSupported",
				fmt.Sprintf("The parameter %s for the action ComputerSystem.Reset is not supported on the target resource.", k), k, "ComputerSystem.Reset"))
			return
		}
	}
	var rt string
	if raw, ok := in["ResetType"]; !ok {
		rep.fail(http.StatusBadRequest, msg("ActionParameterMissing",
			"The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.", "ComputerSystem.Reset", "ResetType"))
		return
	} else if json.Unmarshal(raw, &rt) != nil || !slices.Contains(f.opts.ResetTypes, rt) {
		v := strings.Trim(string(raw), `"`)
		rep.fail(http.StatusBadRequest, msg("ActionParameterValueNotInList",
			fmt.Sprintf("The value %s for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values.", v), v, "ResetType", "ComputerSystem.Reset"))
		return
	}
	f.bumpForWrite()
	if !f.ifMatch(r, rep) {
		return
	}
	for _, t := range f.tasks {
		if !t.done {
			rep.fail(http.StatusConflict, msg("ResourceInUse", "The change to the requested resource failed because the resource is in use or in transition."))
			return
		}
	}
	on := f.power == "On"
	var want bool
	switch rt {
	case "On":
		want = true
	case "ForceOff", "GracefulShutdown":
		want = false
	case "ForceRestart", "GracefulRestart":
		if !on {
			rep.fail(http.StatusConflict, msg("ResourceInStandby", "The request could not be performed because the resource is in standby.")) // a restart needs a running system
			return
		}
		want = true
	case "PowerCycle":
		want = true
	case "Nmi":
		rep.ok(http.StatusNoContent, nil)
		return
	}
	if (rt == "On" && on) || ((rt == "ForceOff" || rt == "GracefulShutdown") && !on) {
		// Already there: nothing happens, as on OpenBMC's bmcweb.
		rep.ok(http.StatusNoContent, nil)
		return
	}
	if !f.opts.AsyncReset {
		f.applyLocked(rep, rt, want)
		rep.ok(http.StatusNoContent, nil)
		return
	}
	t := &task{id: len(f.tasks) + 1, resetType: rt, prior: f.power, failMsg: f.failReset}
	f.failReset = ""
	f.tasks = append(f.tasks, t)
	if want {
		f.power = "PoweringOn"
	} else {
		f.power = "PoweringOff"
	}
	f.version++
	loc := fmt.Sprintf("%s/%d", TasksURI, t.id)
	rep.header.Set("Location", loc)
	rep.ok(http.StatusAccepted, taskJSON(t))
}

// applyLocked switches the machine; a power-on consumes a Once override.
func (f *Fake) applyLocked(rep *reply, rt string, on bool) {
	ev := PowerEvent{ResetType: rt, On: on}
	if on {
		ev.BootTarget, ev.BootMode = "Hdd", f.boot.mode
		if f.boot.enabled != "Disabled" && f.boot.target != "None" {
			ev.BootTarget = f.boot.target
		}
		if f.boot.enabled == "Once" {
			f.boot.enabled = "Disabled"
		}
		f.power = "On"
	} else {
		f.power = "Off"
	}
	f.version++
	rep.after = append(rep.after, ev)
}

// observeLocked moves running tasks on: a read is what makes progress.
func (f *Fake) observeLocked(rep *reply) {
	for _, t := range f.tasks {
		if t.done {
			continue
		}
		t.reads++
		if t.reads < max(f.opts.TaskReads, 1) {
			continue
		}
		t.done = true
		if t.failMsg != "" {
			f.power = t.prior
			f.version++
			continue
		}
		f.applyLocked(rep, t.resetType, f.power == "PoweringOn")
	}
}

func taskJSON(t *task) map[string]any {
	state, status, pct := "Running", "OK", 50
	msgs := []map[string]any{}
	switch {
	case t.done && t.failMsg != "":
		state, status = "Exception", "Critical"
		msgs = append(msgs, map[string]any{"MessageId": "TaskEvent.1.0.TaskAborted", "Message": t.failMsg, "Severity": "Critical"})
	case t.done:
		state, pct = "Completed", 100
		msgs = append(msgs, map[string]any{"MessageId": "TaskEvent.1.0.TaskCompletedOK", "Message": "The task completed successfully.", "Severity": "OK"})
	}
	return map[string]any{
		"@odata.id": fmt.Sprintf("%s/%d", TasksURI, t.id), "@odata.type": "#Task.v1_7_0.Task",
		"Id": strconv.Itoa(t.id), "Name": "ComputerSystem.Reset " + t.resetType,
		"TaskState": state, "TaskStatus": status, "PercentComplete": pct, "Messages": msgs,
		"TaskMonitor": fmt.Sprintf("%s/%d", TasksURI, t.id),
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// selfSigned is a BMC's stock certificate: self-signed, for 127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "redfishfake BMC"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
