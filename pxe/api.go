package pxe

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/lease"
	"golang.org/x/net/netutil"
)

// Defaults of APIServer's zero fields.
const (
	// DefaultAddr is where the API listens when APIServer.Addr is empty.
	DefaultAddr = "127.0.0.1:8080"
	// DefaultMaxConns caps each listener's open connections.
	DefaultMaxConns = 1024
	// DefaultWriteTimeout bounds writing one response (but a file's).
	DefaultWriteTimeout = 30 * time.Second
	// DefaultFileMinRate is the slowest rate, in bytes per second, a file
	// under /files/ is given time for: a 100 MB initrd gets 30s plus 26
	// minutes, enough for a boot storm sharing one link.
	DefaultFileMinRate = 64 << 10
	// maxHeaderBytes bounds a request's header: a bearer token or an iPXE
	// request fits in a few hundred bytes.
	maxHeaderBytes = 8 << 10
)

// APIServer serves the lease API (bearer token) and the boot routes a
// booting host uses without credentials. Only Store is required.
//
// Management routes, on Addr:
//
//	PUT|GET|DELETE /v1/leases/{mac}, GET /v1/leases   bearer token
//	GET /metrics                    Prometheus
//
// Boot routes, on BootAddr (or on Addr when BootAddr is unset):
//
//	GET /v1/hostkeys/{token}        one-time private host key (OpenSSH PEM)
//	GET /boot/{mac}.ipxe            the host's iPXE script
//	GET /boot/{mac}/authorized_keys the live system's authorized_keys
//	GET /files/{name...}            kernel, initrd... from BootDir, with ranges
//
// With BootAddr set, each listener answers only its own routes (404 for
// the others), so the boot network, which is untrusted, never reaches the
// lease API. Without it one listener serves both, as before BootAddr
// existed: put that address on a network only the worker reaches.
type APIServer struct {
	// Addr is the TCP listen address of the management routes (and of the
	// boot routes too when BootAddr and BootListener are unset);
	// DefaultAddr when empty.
	Addr string
	// Listener, when set, is used instead of listening on Addr (tests).
	Listener net.Listener
	// BootAddr is the TCP listen address of the boot routes, on the boot
	// network. Empty (and BootListener nil): Addr serves them.
	BootAddr string
	// BootListener, when set, is used instead of listening on BootAddr.
	BootListener net.Listener
	// TLSCertFile and TLSKeyFile, both set, serve the management listener
	// over TLS (PEM files, read once at start). The boot listener stays
	// plain HTTP: iPXE and the live system fetch from it.
	TLSCertFile, TLSKeyFile string
	// MaxConns caps the open connections of each listener; further ones
	// wait in the kernel's accept queue. DefaultMaxConns when 0.
	MaxConns int
	// WriteTimeout bounds writing one response, so a client that stops
	// reading does not hold its connection; DefaultWriteTimeout when 0.
	// A file under /files/ gets WriteTimeout plus its size at FileMinRate.
	WriteTimeout time.Duration
	// FileMinRate is in bytes per second; DefaultFileMinRate when 0.
	FileMinRate int64
	// Token is the bearer token of /v1/leases. Empty denies every request
	// there: the API fails closed.
	Token string
	// Store holds the leases. Required.
	Store *Store
	// Logger gets one line per request; discarded when nil.
	Logger *slog.Logger
	// PublicURL is how booting hosts reach this server, such as
	// "http://10.0.0.2:8080"; it prefixes every URL in iPXE scripts. Empty:
	// "http://" + the Host header of the request.
	PublicURL string
	// BootDir holds the files served under /files/. Empty: /files/ is 404.
	BootDir string
	// Kernel and Initrd name the live system's files in BootDir;
	// "vmlinuz" and "initrd.img" when empty.
	Kernel, Initrd string
	// Cmdline is appended to the live kernel's command line,
	// such as "console=ttyS0,115200".
	Cmdline string
	// Registry receives the metrics and backs /metrics; a private registry
	// when nil.
	Registry *prometheus.Registry
	// Timeline, when set, records the boot routes' requests per MAC and
	// backs GET /v1/leases/{mac}/timeline (which answers an empty timeline
	// without it).
	Timeline *Timeline
}

// split reports whether the boot routes have their own listener.
func (s *APIServer) split() bool { return s.BootAddr != "" || s.BootListener != nil }

// listener is one of the server's listeners with the routes it serves.
type listener struct {
	name string // "api" or "boot", for logs
	ln   net.Listener
	mux  *http.ServeMux
	tls  *tls.Config
}

// Serve listens and serves until ctx is cancelled, then shuts down (giving
// requests in flight 5 seconds) and returns nil.
func (s *APIServer) Serve(ctx context.Context) error {
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		return errors.New("pxe api: TLSCertFile and TLSKeyFile go together")
	}
	var tlsConf *tls.Config
	if s.TLSCertFile != "" {
		pair, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("pxe api: TLS key pair: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	h, err := s.handler()
	if err != nil {
		return err
	}
	if h.bootDir != nil {
		defer h.bootDir.Close()
	}
	ls, err := s.listen(h, tlsConf)
	if err != nil {
		return err
	}
	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	errc := make(chan error, len(ls))
	srvs := make([]*http.Server, len(ls))
	for i, l := range ls {
		srv := &http.Server{
			Handler:           l.mux,
			TLSConfig:         l.tls,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			// The file route sets its own, longer deadline per request.
			WriteTimeout:   h.writeTimeout,
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: maxHeaderBytes,
			ErrorLog:       slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
			BaseContext:    func(net.Listener) context.Context { return ctx },
		}
		srvs[i] = srv
		ln := netutil.LimitListener(l.ln, maxConns)
		h.log.Info("pxe "+l.name+" listening", "addr", l.ln.Addr().String(), "tls", l.tls != nil, "max_conns", maxConns)
		go func() {
			if l.tls != nil {
				errc <- srv.ServeTLS(ln, "", "")
			} else {
				errc <- srv.Serve(ln)
			}
		}()
	}
	running := len(srvs)
	var first error
	select {
	case err := <-errc:
		running--
		first = fmt.Errorf("serve pxe api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range srvs {
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}
	for range running {
		<-errc
	}
	return first
}

// listen opens the management listener and, when split, the boot one. In
// a single-listener setup the management listener carries every route.
func (s *APIServer) listen(h *handler, tlsConf *tls.Config) ([]listener, error) {
	open := func(ln net.Listener, addr, def string) (net.Listener, error) {
		if ln != nil {
			return ln, nil
		}
		if addr == "" {
			addr = def
		}
		return net.Listen("tcp", addr)
	}
	api, err := open(s.Listener, s.Addr, DefaultAddr)
	if err != nil {
		return nil, fmt.Errorf("listen pxe api: %w", err)
	}
	ls := []listener{{name: "api", ln: api, mux: h.api, tls: tlsConf}}
	if !s.split() {
		return ls, nil
	}
	boot, err := open(s.BootListener, s.BootAddr, "")
	if err != nil {
		api.Close()
		return nil, fmt.Errorf("listen pxe boot: %w", err)
	}
	return append(ls, listener{name: "boot", ln: boot, mux: h.boot}), nil
}

type handler struct {
	// api serves the management routes, boot the boot routes; the same
	// mux when one listener serves both.
	api, boot    *http.ServeMux
	store        *Store
	log          *slog.Logger
	tokenHash    [32]byte
	hasToken     bool
	publicURL    string
	bootDir      *os.Root
	kernel       string
	initrd       string
	cmdline      string
	writeTimeout time.Duration
	fileMinRate  int64
	m            *metrics
	timeline     *Timeline
}

func (s *APIServer) handler() (*handler, error) {
	if s.Store == nil {
		return nil, errors.New("pxe api: Store is required")
	}
	h := &handler{
		api:          http.NewServeMux(),
		store:        s.Store,
		writeTimeout: s.WriteTimeout,
		fileMinRate:  s.FileMinRate,
		log:          s.Logger,
		tokenHash:    sha256.Sum256([]byte(s.Token)),
		hasToken:     s.Token != "",
		publicURL:    strings.TrimRight(s.PublicURL, "/"),
		kernel:       s.Kernel,
		initrd:       s.Initrd,
		cmdline:      strings.TrimSpace(s.Cmdline),
		timeline:     s.Timeline,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.boot = h.api
	if s.split() {
		h.boot = http.NewServeMux()
	}
	if h.writeTimeout <= 0 {
		h.writeTimeout = DefaultWriteTimeout
	}
	if h.fileMinRate <= 0 {
		h.fileMinRate = DefaultFileMinRate
	}
	if h.kernel == "" {
		h.kernel = "vmlinuz"
	}
	if h.initrd == "" {
		h.initrd = "initrd.img"
	}
	if s.BootDir != "" {
		root, err := os.OpenRoot(s.BootDir)
		if err != nil {
			return nil, fmt.Errorf("open boot dir: %w", err)
		}
		h.bootDir = root
	}
	reg := s.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, s.Store)
	if err != nil {
		return nil, fmt.Errorf("register pxe metrics: %w", err)
	}
	h.m = m

	h.route(h.api, "PUT /v1/leases/{mac}", h.auth(h.putLease))
	h.route(h.api, "GET /v1/leases/{mac}", h.auth(h.getLease))
	h.route(h.api, "DELETE /v1/leases/{mac}", h.auth(h.deleteLease))
	h.route(h.api, "GET /v1/leases", h.auth(h.listLeases))
	h.route(h.api, "GET /v1/leases/{mac}/timeline", h.auth(h.getTimeline))
	h.route(h.api, "GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP)
	h.route(h.boot, "GET /v1/hostkeys/{token}", h.hostKey)
	h.route(h.boot, "GET /boot/{file}", h.ipxeScript)
	h.route(h.boot, "GET /boot/{mac}/authorized_keys", h.authorizedKeys)
	h.route(h.boot, "GET /files/{name...}", h.file)
	return h, nil
}

// route registers fn on mux with per-request metrics and one log line. The
// log carries the route pattern, never the path: a host key path holds a
// token.
func (h *handler) route(mux *http.ServeMux, pattern string, fn http.HandlerFunc) {
	mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		attrs := &reqAttrs{}
		fn(rec, r.WithContext(context.WithValue(r.Context(), attrsKey{}, attrs)))
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		h.m.httpBytes.WithLabelValues(pattern).Add(float64(rec.bytes))
		h.m.httpRequests.WithLabelValues(pattern, fmt.Sprint(rec.status)).Inc()
		args := []any{"method", r.Method, "route", pattern, "status", rec.status, "bytes", rec.bytes,
			"duration", time.Since(start), "remote", r.RemoteAddr}
		args = append(args, attrs.kv...)
		h.log.Log(r.Context(), levelFor(rec.status), "http request", args...)
		h.record(pattern, r, attrs, rec)
	}))
}

func levelFor(status int) slog.Level {
	if status >= 500 {
		return slog.LevelError
	}
	return slog.LevelInfo
}

type attrsKey struct{}

type reqAttrs struct {
	kv  []any
	mac string // the MAC a boot route served, for the timeline
}

// logKV adds key/value pairs to the request's log line.
func logKV(r *http.Request, kv ...any) {
	if a, ok := r.Context().Value(attrsKey{}).(*reqAttrs); ok {
		a.kv = append(a.kv, kv...)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == "mac" {
				a.mac, _ = kv[i+1].(string)
			}
		}
	}
}

// bootRouteKinds are the boot routes the timeline records.
var bootRouteKinds = map[string]string{
	"GET /v1/hostkeys/{token}":        api.BootHostKey,
	"GET /boot/{file}":                api.BootScript,
	"GET /boot/{mac}/authorized_keys": api.BootAuthorizedKeys,
	"GET /files/{name...}":            api.BootFile,
}

// record adds a boot route's request to the timeline: by the MAC the
// route named, else (files) by the lease whose IP asked.
func (h *handler) record(pattern string, r *http.Request, attrs *reqAttrs, rec *recorder) {
	kind := bootRouteKinds[pattern]
	if h.timeline == nil || kind == "" {
		return
	}
	from := requester(r)
	e := api.BootEvent{Kind: kind, Bytes: rec.bytes, From: from.String(), Status: strconv.Itoa(rec.status)}
	if kind == api.BootFile {
		e.File = r.PathValue("name")
	}
	if attrs.mac != "" {
		h.timeline.Record(attrs.mac, e)
	} else if from.IsValid() {
		h.timeline.RecordByIP(from.AsSlice(), e)
	}
}

// recorder counts the status and body bytes, keeping sendfile through
// ReadFrom.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, r)
	}
	w.bytes += n
	return n, err
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type writerOnly struct{ io.Writer }

// apiError is the JSON body of every 4xx/5xx answer of /v1.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	writeJSON(w, status, apiError{Error: msg, Field: field})
}

func (h *handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		// Comparing hashes keeps the compare constant-time in the length too.
		if !ok || !h.hasToken || subtle.ConstantTimeCompare(sum[:], h.tokenHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rackflow-pxe"`)
			writeError(w, http.StatusUnauthorized, "", "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

// pathMAC parses {mac}, answering 400 itself when it is bad.
func pathMAC(w http.ResponseWriter, r *http.Request) (string, bool) {
	raw := r.PathValue("mac")
	mac, err := lease.NormalizeMAC(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "mac", fmt.Sprintf("mac: %v (got %q)", err, raw))
		return "", false
	}
	logKV(r, "mac", mac)
	return mac, true
}

var unknownFieldRE = regexp.MustCompile(`^json: unknown field "([^"]+)"$`)

func (h *handler) putLease(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var l lease.Lease
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		h.m.leasePuts.WithLabelValues("invalid").Inc()
		field := ""
		var te *json.UnmarshalTypeError
		if m := unknownFieldRE.FindStringSubmatch(err.Error()); m != nil {
			field = m[1]
		} else if errors.As(err, &te) {
			field = te.Field
		}
		writeError(w, http.StatusBadRequest, field, "decode lease: "+err.Error())
		return
	}
	if l.MAC == "" {
		l.MAC = mac
	} else if bodyMAC, err := lease.NormalizeMAC(l.MAC); err == nil && bodyMAC != mac {
		h.m.leasePuts.WithLabelValues("invalid").Inc()
		writeError(w, http.StatusBadRequest, "mac", fmt.Sprintf("mac: body says %s, URL says %s", bodyMAC, mac))
		return
	}
	out, result, err := h.store.Put(r.Context(), l)
	var fe api.FieldErrors
	switch {
	case errors.As(err, &fe) && len(fe) > 0:
		h.m.leasePuts.WithLabelValues("invalid").Inc()
		writeError(w, http.StatusBadRequest, fe[0].Field, fe.Error())
		return
	case errors.Is(err, lease.ErrConflict):
		h.m.leasePuts.WithLabelValues("conflict").Inc()
		writeError(w, http.StatusConflict, "ip", err.Error())
		return
	case err != nil:
		h.m.leasePuts.WithLabelValues("error").Inc()
		logKV(r, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "", "store lease failed")
		return
	}
	h.m.leasePuts.WithLabelValues(string(result)).Inc()
	logKV(r, "ip", out.IP, "profile", string(out.Profile), "boot_id", out.BootID, "result", string(result))
	status := http.StatusOK
	if result == PutCreated {
		status = http.StatusCreated
	}
	writeJSON(w, status, out)
}

func (h *handler) getLease(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	l, found, err := h.store.Lookup(r.Context(), mac)
	if err != nil {
		logKV(r, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "", "read lease failed")
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, "mac", fmt.Sprintf("no lease for %s", mac))
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (h *handler) getTimeline(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	l, found, err := h.store.Lookup(r.Context(), mac)
	if err != nil {
		logKV(r, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "", "read lease failed")
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, "mac", fmt.Sprintf("no lease for %s", mac))
		return
	}
	var t api.BootTimeline
	if h.timeline != nil {
		t = h.timeline.Get(l)
	} else {
		t = api.BootTimeline{MAC: l.MAC, BootID: l.BootID, Events: []api.BootEvent{}, At: time.Now().UTC()}
	}
	writeJSON(w, http.StatusOK, t)
}

func (h *handler) deleteLease(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	hw, _ := net.ParseMAC(mac)
	if err := h.store.Delete(r.Context(), hw); err != nil {
		logKV(r, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "", "delete lease failed")
		return
	}
	h.m.leaseDeletes.Inc()
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) listLeases(w http.ResponseWriter, r *http.Request) {
	ls, err := h.store.List(r.Context())
	if err != nil {
		logKV(r, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "", "list leases failed")
		return
	}
	writeJSON(w, http.StatusOK, lease.List{Leases: ls})
}

var tokenRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (h *handler) hostKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	token := r.PathValue("token")
	if !tokenRE.MatchString(token) {
		h.m.hostKeyFetches.WithLabelValues("not_found").Inc()
		http.Error(w, "no such host key", http.StatusNotFound)
		return
	}
	pemBytes, mac, err := h.store.TakeHostKey(r.Context(), token, requester(r))
	if mac != "" {
		logKV(r, "mac", mac)
	}
	switch {
	case errors.Is(err, ErrWrongRequester):
		// Someone on the boot network other than the host: refused and
		// recorded, so the worker will not trust this boot.
		h.m.hostKeyFetches.WithLabelValues("refused").Inc()
		http.Error(w, "not from this lease's address", http.StatusForbidden)
	case errors.Is(err, ErrHostKeyGone):
		// A second fetch means a retry of the live system or someone else
		// took the key first; either way the worker must boot again.
		h.m.hostKeyFetches.WithLabelValues("gone").Inc()
		http.Error(w, "host key already fetched", http.StatusGone)
	case errors.Is(err, lease.ErrNotFound):
		h.m.hostKeyFetches.WithLabelValues("not_found").Inc()
		http.Error(w, "no such host key", http.StatusNotFound)
	case err != nil:
		h.m.hostKeyFetches.WithLabelValues("error").Inc()
		logKV(r, "error", err.Error())
		http.Error(w, "host key fetch failed", http.StatusInternalServerError)
	default:
		h.m.hostKeyFetches.WithLabelValues("served").Inc()
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(pemBytes)
	}
}

func (h *handler) authorizedKeys(w http.ResponseWriter, r *http.Request) {
	mac, err := lease.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, "bad mac", http.StatusBadRequest)
		return
	}
	logKV(r, "mac", mac)
	l, err := h.store.CheckRequester(r.Context(), mac, "authorized_keys", requester(r))
	if errors.Is(err, ErrWrongRequester) {
		http.Error(w, "not from this lease's address", http.StatusForbidden)
		return
	}
	if err != nil {
		http.Error(w, "no lease", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	for _, k := range l.SSHAuthorizedKeys {
		io.WriteString(w, k+"\n")
	}
}

func (h *handler) ipxeScript(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	raw, ok := strings.CutSuffix(r.PathValue("file"), ".ipxe")
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	mac, err := lease.NormalizeMAC(raw)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, exitScript)
		return
	}
	logKV(r, "mac", mac)
	l, found, err := h.store.Lookup(r.Context(), mac)
	if err != nil {
		logKV(r, "error", err.Error())
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, exitScript)
		return
	}
	if !found {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, exitScript)
		return
	}
	if _, err := h.store.CheckRequester(r.Context(), mac, "ipxe script", requester(r)); err != nil {
		// The script of a live lease carries the host key's one-time URL:
		// only the host itself, at its lease's IP, may read it.
		logKV(r, "refused", "not the lease's IP")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, exitScript)
		return
	}
	logKV(r, "profile", string(l.Profile), "boot_id", l.BootID)
	io.WriteString(w, h.render(l, h.base(r)))
}

// requester is the address a request came from. Boot routes are bound to
// it: the boot network is untrusted, but a host's lease fixes its IP.
func requester(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (h *handler) base(r *http.Request) string {
	if h.publicURL != "" {
		return h.publicURL
	}
	return "http://" + r.Host
}

func (h *handler) render(l lease.Lease, base string) string {
	switch l.Profile {
	case lease.ProfileLive:
		return RenderLive(LiveBoot{
			Lease:        l,
			BaseURL:      base,
			Kernel:       h.kernel,
			Initrd:       h.initrd,
			Cmdline:      h.cmdline,
			HostKeyToken: h.store.hostKeyToken(l.MAC),
		})
	case lease.ProfileDisk:
		return diskScript
	default:
		return exitScript
	}
}

func (h *handler) file(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	logKV(r, "file", name)
	if h.bootDir == nil || !fs.ValidPath(name) {
		// fs.ValidPath refuses "..", absolute and unclean paths; os.Root
		// then refuses symlinks that leave BootDir.
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	f, err := h.bootDir.Open(name)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	// A file may be hundreds of megabytes to a host sharing its link with
	// a rack of others: its deadline grows with its size, at a rate no
	// booting host should fall below.
	d := h.writeTimeout + time.Duration(float64(st.Size())/float64(h.fileMinRate)*float64(time.Second))
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d)); err != nil {
		logKV(r, "error", "set write deadline: "+err.Error())
	}
	http.ServeContent(w, r, st.Name(), st.ModTime(), f)
}
