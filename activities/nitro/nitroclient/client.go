// Package nitroclient is a small typed client of the NetScaler (Citrix ADC)
// NITRO configuration API (/nitro/v1/config), written because the vendor's
// Go SDK is not available to us. It logs in (session cookie or per-request
// headers), adds, reads, binds, unbinds and deletes the resources L4
// publishing needs, saves the configuration, and reports NITRO's errorcodes
// as *Error values that errors.Is sorts into kinds.
//
// It is not a general NetScaler library and knows nothing of Temporal or of
// rackflow's ownership rules: those live in the nitro activities that use it.
// It never retries, except for one fresh login when a session expired.
package nitroclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// AuthMode is how the client authenticates.
type AuthMode string

const (
	// AuthSession logs in once (POST /nitro/v1/config/login) and sends the
	// NITRO_AUTH_TOKEN cookie; an expired session is renewed once per call.
	AuthSession AuthMode = "session"
	// AuthHeader sends X-NITRO-USER and X-NITRO-PASS on every request.
	AuthHeader AuthMode = "header"
)

// Config configures a Client. URL, Username and Password are required.
type Config struct {
	// URL of the NetScaler management address, e.g. https://ns1.example.net
	// (no path, no user info).
	URL      string
	Username string
	Password string
	// CAPEM holds the PEM certificates trusted for the NetScaler's HTTPS
	// certificate; empty means the system roots.
	CAPEM []byte
	// ServerName is the name the certificate must be issued for, when it is
	// not the URL's host: the stock appliance certificate names the
	// appliance ("default" or its hostname), not the management IP.
	ServerName string
	// PinSHA256 is the hex SHA-256 of the appliance's certificate (colons
	// allowed). When set, that certificate, and only it, is accepted, with
	// no chain or name check: the way to trust a self-signed appliance
	// certificate without turning verification off.
	PinSHA256 string
	// InsecureSkipVerifyDANGEROUS accepts any certificate: anyone on the path
	// can read the credentials. Only for labs, and only when asked for.
	InsecureSkipVerifyDANGEROUS bool
	// Partition is the admin partition to switch to after login
	// (nspartition?action=Switch); empty stays in the user's default. It
	// needs AuthSession: a switch belongs to a session.
	Partition string
	// Auth is AuthSession when empty.
	Auth AuthMode
	// SessionTimeout is the login's "timeout": an abandoned session (a
	// killed worker) ends after it. DefaultSessionTimeout when zero.
	SessionTimeout time.Duration
	// RequestTimeout bounds each HTTP request; 60s when zero. The context
	// passed to each call bounds it too.
	RequestTimeout time.Duration
	// Transport replaces the HTTP transport (tests); TLS fields are then ignored.
	Transport http.RoundTripper
}

// DefaultSessionTimeout bounds a session when Config.SessionTimeout is zero:
// an activity's session never needs longer, and the appliance's own
// default (30 minutes) would keep a killed worker's sessions counting
// against the session limit.
const DefaultSessionTimeout = 5 * time.Minute

// String redacts the password.
func (c Config) String() string {
	return fmt.Sprintf("nitroclient.Config{URL:%s Username:%s Auth:%s}", c.URL, c.Username, c.Auth)
}

// GoString redacts the password.
func (c Config) GoString() string { return c.String() }

// LogValue redacts the password.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Client talks to one NetScaler's NITRO configuration API. It is safe for
// concurrent use. It never retries, except that a request refused because
// the session expired is sent once more after a fresh login: Temporal owns
// retries. Credentials never appear in its errors.
type Client struct {
	base     *url.URL
	user     string
	pass     string
	part     string
	auth     AuthMode
	session  time.Duration
	hc       *http.Client
	mu       sync.Mutex
	token    string
	loggedIn bool
}

// New checks cfg and returns a client; it does not connect.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("nitro: URL %q is not an http(s) URL", cfg.URL)
	}
	if u.User != nil || u.RawQuery != "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("nitro: URL must be scheme://host[:port] only, without path, query or user info")
	}
	if cfg.Username == "" || cfg.Password == "" {
		return nil, errors.New("nitro: username and password are required")
	}
	auth := cfg.Auth
	if auth == "" {
		auth = AuthSession
	}
	if auth != AuthSession && auth != AuthHeader {
		return nil, fmt.Errorf("nitro: unknown auth mode %q", cfg.Auth)
	}
	if cfg.Partition != "" && auth != AuthSession {
		return nil, errors.New("nitro: a partition needs session auth: a switch belongs to a session")
	}
	var pin []byte
	if cfg.PinSHA256 != "" {
		b, err := hex.DecodeString(strings.ReplaceAll(cfg.PinSHA256, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, errors.New("nitro: PinSHA256 is not a hex SHA-256")
		}
		pin = b
	}
	rt := cfg.Transport
	if rt == nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(cfg.CAPEM) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(cfg.CAPEM) {
				return nil, errors.New("nitro: CA PEM holds no certificate")
			}
			tc.RootCAs = pool
		}
		tc.ServerName = cfg.ServerName
		tc.InsecureSkipVerify = cfg.InsecureSkipVerifyDANGEROUS
		if pin != nil {
			// The pin replaces chain and name checks; VerifyConnection
			// runs whatever InsecureSkipVerify says.
			tc.InsecureSkipVerify = true
			tc.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("nitro: no certificate to check against the pin")
				}
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if !bytes.Equal(sum[:], pin) {
					return fmt.Errorf("nitro: certificate SHA-256 %x does not match the pinned one", sum)
				}
				return nil
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		tr.Proxy = nil // a management API is not reached through a proxy
		rt = tr
	}
	timeout := cfg.RequestTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	session := cfg.SessionTimeout
	if session <= 0 {
		session = DefaultSessionTimeout
	}
	return &Client{
		base:    &url.URL{Scheme: u.Scheme, Host: u.Host},
		user:    cfg.Username,
		pass:    cfg.Password,
		part:    cfg.Partition,
		auth:    auth,
		session: session,
		hc: &http.Client{Transport: rt, Timeout: timeout,
			// NITRO does not redirect; following one could send credentials elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		token: "",
	}, nil
}

// Arg is one ?args= key and value for Delete and Unbind.
type Arg struct{ Key, Value string }

// Login opens a session (AuthSession only; a no-op for AuthHeader).
func (c *Client) Login(ctx context.Context) error {
	if c.auth != AuthSession {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginLocked(ctx)
}

func (c *Client) loginLocked(ctx context.Context) error {
	body := map[string]any{"username": c.user, "password": c.pass}
	if c.timeoutSeconds() > 0 {
		body["timeout"] = c.timeoutSeconds()
	}
	resp, raw, err := c.send(ctx, http.MethodPost, "login", "", map[string]any{"login": body}, "")
	if err != nil {
		return fmt.Errorf("nitro login: %w", err)
	}
	if nerr := parseError("POST login", resp, raw); nerr != nil {
		// Only an errorcode judges the credentials: a redirect or a page
		// that is not NITRO says nothing about them.
		if isSessionCode(nerr.ErrorCode) {
			return fmt.Errorf("%w: %w", ErrAuth, nerr)
		}
		return nerr
	}
	tok := ""
	for _, ck := range resp.Cookies() {
		if ck.Name == "NITRO_AUTH_TOKEN" {
			tok = ck.Value
		}
	}
	if tok == "" {
		var r struct {
			SessionID string `json:"sessionid"`
		}
		_ = json.Unmarshal(raw, &r)
		tok = r.SessionID
	}
	if tok == "" {
		return errors.New("nitro login: answer carried no session token")
	}
	if c.part != "" {
		body := map[string]any{"nspartition": map[string]any{"partitionname": c.part}}
		resp, raw, err := c.send(ctx, http.MethodPost, "nspartition", "action=Switch", body, tok)
		if err == nil {
			if nerr := parseError("POST nspartition?action=Switch", resp, raw); nerr != nil {
				err = nerr
			}
		}
		if err != nil {
			// Never work in the wrong partition; and end the session.
			if _, _, lerr := c.send(ctx, http.MethodPost, "logout", "", map[string]any{"logout": map[string]any{}}, tok); lerr != nil {
				err = errors.Join(err, lerr)
			}
			return fmt.Errorf("nitro switch to partition %q: %w", c.part, err)
		}
	}
	c.token, c.loggedIn = tok, true
	return nil
}

func (c *Client) timeoutSeconds() int64 { return int64(c.session / time.Second) }

// Logout ends the session, if any. Errors are returned but leave the
// client logged out either way.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	tok := c.token
	c.token, c.loggedIn = "", false
	c.mu.Unlock()
	if c.auth != AuthSession || tok == "" {
		return nil
	}
	resp, raw, err := c.send(ctx, http.MethodPost, "logout", "", map[string]any{"logout": map[string]any{}}, tok)
	if err != nil {
		return fmt.Errorf("nitro logout: %w", err)
	}
	if nerr := parseError("POST logout", resp, raw); nerr != nil && !isSessionCode(nerr.ErrorCode) {
		return nerr
	}
	return nil
}

// Close logs out. It is Logout under the name the activities' client seam uses.
func (c *Client) Close(ctx context.Context) error { return c.Logout(ctx) }

// Every change asks for warnings (?warning=yes): without it NITRO reports
// success when an HA peer did not take the change. A warning that says so
// (1028, 1044) is an error matching ErrNotPropagated; other warnings are
// not errors.
const warnQuery = "warning=yes"

// Add creates an object: POST /nitro/v1/config/<type>.
func (c *Client) Add(ctx context.Context, r Resource) error {
	return c.do(ctx, http.MethodPost, r.ResourceType(), warnQuery, wrap(r), nil)
}

// Update changes an object's fields: PUT /nitro/v1/config/<type>.
func (c *Client) Update(ctx context.Context, r Resource) error {
	return c.do(ctx, http.MethodPut, r.ResourceType(), warnQuery, wrap(r), nil)
}

// Bind adds a binding row: PUT /nitro/v1/config/<binding type>.
func (c *Client) Bind(ctx context.Context, r Resource) error {
	return c.do(ctx, http.MethodPut, r.ResourceType(), warnQuery, wrap(r), nil)
}

// Action runs an action on a type: POST /nitro/v1/config/<type>?action=<action>
// with r as the body, e.g. "disable" on a servicegroup member.
func (c *Client) Action(ctx context.Context, action string, r Resource) error {
	return c.do(ctx, http.MethodPost, r.ResourceType(), "action="+url.QueryEscape(action)+"&"+warnQuery, wrap(r), nil)
}

// Get reads one object, or all binding rows of one parent, into out, a
// pointer to a slice of the typed struct: GET /nitro/v1/config/<type>/<name>.
// A missing object is an error matching ErrNotFound; a parent without
// bindings yields an empty slice.
func (c *Client) Get(ctx context.Context, typ, name string, out any) error {
	if name == "" {
		return fmt.Errorf("nitro get %s: empty name", typ)
	}
	return c.do(ctx, http.MethodGet, typ+"/"+url.PathEscape(name), "", nil, &decodeInto{typ: typ, out: out})
}

// List reads all objects of a type into out (pointer to slice). With
// filter, only those whose fields equal every filter's value:
// GET /nitro/v1/config/<type>?filter=k1:v1,k2:v2 (the appliance compares on
// its side; no match is an empty slice, not an error).
func (c *Client) List(ctx context.Context, typ string, out any, filter ...Arg) error {
	q := ""
	if len(filter) > 0 {
		q = "filter=" + strings.TrimPrefix(argsQuery(filter), "args=")
	}
	return c.do(ctx, http.MethodGet, typ, q, nil, &decodeInto{typ: typ, out: out})
}

// Delete removes an object: DELETE /nitro/v1/config/<type>/<name>?args=k:v,...
func (c *Client) Delete(ctx context.Context, typ, name string, args ...Arg) error {
	if name == "" {
		return fmt.Errorf("nitro delete %s: empty name", typ)
	}
	q := warnQuery
	if a := argsQuery(args); a != "" {
		q = a + "&" + q
	}
	return c.do(ctx, http.MethodDelete, typ+"/"+url.PathEscape(name), q, nil, nil)
}

// Unbind removes a binding row: DELETE /nitro/v1/config/<binding type>/<parent>?args=...
func (c *Client) Unbind(ctx context.Context, typ, parent string, args ...Arg) error {
	return c.Delete(ctx, typ, parent, args...)
}

// Save writes the running configuration to disk:
// POST /nitro/v1/config/nsconfig?action=save {"nsconfig":{}}.
func (c *Client) Save(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "nsconfig", "action=save", map[string]any{"nsconfig": map[string]any{}}, nil)
}

// Get reads one object of type T by name.
func Get[T Resource](ctx context.Context, api Getter, name string) (T, error) {
	var zero T
	var rows []T
	if err := api.Get(ctx, zero.ResourceType(), name, &rows); err != nil {
		return zero, err
	}
	if len(rows) == 0 {
		return zero, &Error{Op: "GET " + zero.ResourceType() + "/" + name, ErrorCode: CodeNoSuchResource, Message: "empty answer"}
	}
	return rows[0], nil
}

// Bindings reads the binding rows of type T under parent.
func Bindings[T Resource](ctx context.Context, api Getter, parent string) ([]T, error) {
	var zero T
	var rows []T
	err := api.Get(ctx, zero.ResourceType(), parent, &rows)
	return rows, err
}

// Getter is what Get and Bindings need.
type Getter interface {
	Get(ctx context.Context, typ, name string, out any) error
}

func wrap(r Resource) map[string]any { return map[string]any{r.ResourceType(): r} }

func argsQuery(args []Arg) string {
	if len(args) == 0 {
		return ""
	}
	parts := make([]string, 0, len(args))
	for _, a := range args {
		parts = append(parts, a.Key+":"+url.QueryEscape(a.Value))
	}
	slices.Sort(parts)
	return "args=" + strings.Join(parts, ",")
}

type decodeInto struct {
	typ string
	out any
}

// do sends one request, logging in first if needed and once more if the
// session turned out to be expired.
func (c *Client) do(ctx context.Context, method, path, query string, body any, out *decodeInto) error {
	op := method + " " + path
	for attempt := 0; ; attempt++ {
		tok := ""
		if c.auth == AuthSession {
			c.mu.Lock()
			if !c.loggedIn {
				if err := c.loginLocked(ctx); err != nil {
					c.mu.Unlock()
					return err
				}
			}
			tok = c.token
			c.mu.Unlock()
		}
		resp, raw, err := c.send(ctx, method, path, query, body, tok)
		if err != nil {
			return fmt.Errorf("nitro %s: %w", op, err)
		}
		nerr := parseError(op, resp, raw)
		if nerr != nil && isSessionCode(nerr.ErrorCode) {
			if c.auth == AuthSession && attempt == 0 {
				c.mu.Lock()
				if c.token == tok { // nobody renewed it meanwhile
					c.loggedIn, c.token = false, ""
				}
				c.mu.Unlock()
				continue
			}
			return fmt.Errorf("%w: %w", ErrAuth, nerr)
		}
		if nerr != nil {
			return nerr
		}
		if out != nil {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(raw, &m); err != nil {
				return fmt.Errorf("nitro %s: decode answer: %w", op, err)
			}
			if rows, ok := m[out.typ]; ok {
				// Singletons (nsversion, nsfeature) come as one object.
				if t := bytes.TrimSpace(rows); len(t) > 0 && t[0] == '{' {
					rows = append(append([]byte{'['}, t...), ']')
				}
				if err := json.Unmarshal(rows, out.out); err != nil {
					return fmt.Errorf("nitro %s: decode %s: %w", op, out.typ, err)
				}
			}
		}
		return nil
	}
}

func (c *Client) send(ctx context.Context, method, path, query string, body any, tok string) (*http.Response, []byte, error) {
	u := *c.base
	u.RawPath = "/nitro/v1/config/" + path // path's name part is already escaped
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = query
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.auth == AuthHeader:
		req.Header.Set("X-NITRO-USER", c.user)
		req.Header.Set("X-NITRO-PASS", c.pass)
	case tok != "":
		req.AddCookie(&http.Cookie{Name: "NITRO_AUTH_TOKEN", Value: tok})
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp, raw, nil
}

// parseError returns the *Error an answer carries, or nil on success.
func parseError(op string, resp *http.Response, raw []byte) *Error {
	status := resp.StatusCode
	if status >= 300 && status < 400 {
		return &Error{Op: op, HTTPStatus: status, Message: fmt.Sprintf("redirected to %q, not followed: NITRO does not redirect; point the URL at the address that serves /nitro/v1", resp.Header.Get("Location"))}
	}
	var r struct {
		ErrorCode *int   `json:"errorcode"`
		Message   string `json:"message"`
		Severity  string `json:"severity"`
	}
	perr := json.Unmarshal(raw, &r)
	if perr == nil && r.ErrorCode != nil {
		if status >= 200 && status < 300 {
			switch {
			case *r.ErrorCode == 0:
				return nil
			case r.Severity == "WARNING" && *r.ErrorCode != CodeNotPropagated && *r.ErrorCode != CodeNotPropagatedSync:
				return nil
			}
		}
		return &Error{Op: op, HTTPStatus: status, ErrorCode: *r.ErrorCode, Message: r.Message, Severity: r.Severity}
	}
	if status >= 200 && status < 300 {
		return nil // e.g. an empty 200
	}
	msg := http.StatusText(status)
	if status == http.StatusUnauthorized {
		// Without an errorcode, 401 can only mean the login is not accepted.
		return &Error{Op: op, HTTPStatus: status, ErrorCode: CodeNotLoggedIn, Message: msg + " (no NITRO error body)"}
	}
	return &Error{Op: op, HTTPStatus: status, Message: msg + " (no NITRO error body)"}
}
