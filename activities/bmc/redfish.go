package bmc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
)

// What bmclib's Redfish provider does not do, and a BMC needs: gofish
// flattens HTTP statuses into error text, drops a reset's 202 Accepted
// task, and bmclib picks a boot mode for the caller. redfishClient keeps
// bmclib for the calls and notes what the BMC answered underneath, through
// the HTTP transport the worker gives it, so the session can tell a
// rejected login from an expired session or a stale ETag, and follow a
// reset's task to its end.

// answer is one HTTP exchange with a Redfish BMC: its request line and
// status, as the bytes on the connection said.
type answer struct {
	method, path string
	status       int
	login        bool // a POST to the sessions collection
	basic        bool // sent with HTTP Basic auth
}

// redfishTransport watches the HTTP exchanges of one Redfish client. bmclib
// insists on an *http.Transport (it clones it per provider), so the watch
// sits in the TLS dialer, which Clone keeps: each connection carries one
// exchange (no keep-alives), and its response head is parsed before the
// http.Transport hands the response to gofish, so a call's answers are all
// recorded when the call returns.
type redfishTransport struct {
	tls    *tls.Config
	dialer *net.Dialer

	mu      sync.Mutex
	answers []answer
	auth    http.Header // X-Auth-Token or Authorization of the session
	tasks   []string    // Location of 202 Accepted answers to POSTs
}

func (t *redfishTransport) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	raw, err := t.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := t.tls.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return &watchedConn{Conn: tc, t: t}, nil
}

// watchedConn parses the head of the request written to it and of the
// response read from it, and records them.
type watchedConn struct {
	net.Conn
	t          *redfishTransport
	wbuf, rbuf []byte
	req        *http.Request
	seen       bool
}

var headEnd = []byte("\r\n\r\n")

func (c *watchedConn) Write(b []byte) (int, error) {
	if c.req == nil && len(c.wbuf) < 64<<10 {
		c.wbuf = append(c.wbuf, b...)
		if i := bytes.Index(c.wbuf, headEnd); i >= 0 {
			if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(c.wbuf[:i+4]))); err == nil {
				c.req = req
			}
			c.wbuf = nil
		}
	}
	return c.Conn.Write(b)
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.seen && n > 0 && c.req != nil {
		c.rbuf = append(c.rbuf, b[:n]...)
		for !c.seen {
			i := bytes.Index(c.rbuf, headEnd)
			if i < 0 {
				c.seen = len(c.rbuf) > 64<<10 // no head in sight: stop watching
				break
			}
			resp, perr := http.ReadResponse(bufio.NewReader(bytes.NewReader(c.rbuf[:i+4])), c.req)
			switch {
			case perr != nil:
				c.seen = true
			case resp.StatusCode < 200: // 100 Continue: the answer follows
				c.rbuf = c.rbuf[i+4:]
			default:
				c.seen = true
				c.t.record(c.req, resp)
			}
		}
		if c.seen {
			c.rbuf = nil
		}
	}
	return n, err
}

func (t *redfishTransport) record(req *http.Request, resp *http.Response) {
	a := answer{
		method: req.Method, path: req.URL.Path, status: resp.StatusCode,
		login: req.Method == http.MethodPost && strings.HasSuffix(strings.TrimRight(req.URL.Path, "/"), "/SessionService/Sessions"),
		basic: strings.HasPrefix(req.Header.Get("Authorization"), "Basic "),
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.answers = append(t.answers, a)
	switch {
	case a.login && resp.StatusCode < 300 && resp.Header.Get("X-Auth-Token") != "":
		t.auth = http.Header{"X-Auth-Token": {resp.Header.Get("X-Auth-Token")}}
	case req.Header.Get("X-Auth-Token") != "":
		t.auth = http.Header{"X-Auth-Token": {req.Header.Get("X-Auth-Token")}}
	case a.basic:
		t.auth = http.Header{"Authorization": {req.Header.Get("Authorization")}}
	}
	if req.Method == http.MethodPost && resp.StatusCode == http.StatusAccepted && !a.login {
		if loc := resp.Header.Get("Location"); loc != "" {
			t.tasks = append(t.tasks, loc)
		}
	}
}

// extendedInfo is a Redfish error body's messages, as "Id: text; ...".
// text may hold other words around the JSON body (gofish's error text).
func extendedInfo(text string) string {
	i := strings.Index(text, "{")
	if i < 0 {
		return ""
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
			Info    []struct {
				MessageID string `json:"MessageId"`
				Message   string `json:"Message"`
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if json.NewDecoder(strings.NewReader(text[i:])).Decode(&e) != nil {
		return ""
	}
	var parts []string
	for _, m := range e.Error.Info {
		parts = append(parts, strings.TrimSpace(m.MessageID+": "+m.Message))
	}
	if len(parts) == 0 && e.Error.Message != "" {
		parts = append(parts, e.Error.Message)
	}
	return strings.Join(parts, "; ")
}

// redfishClient is bmclib's client for one Redfish BMC and the transport
// under it.
type redfishClient struct {
	*bmclib.Client
	t    *redfishTransport
	hc   *http.Client
	base string // https://host:port
}

// SetBootDevice keeps the system's BootSourceOverrideMode: bmclib sends
// Legacy unless told UEFI, and a UEFI host switched to Legacy does not PXE
// boot. efiBoot counts only when the BMC does not say its mode.
func (c *redfishClient) SetBootDevice(ctx context.Context, device string, persistent, efiBoot bool) (bool, error) {
	if ov, err := c.Client.GetBootDeviceOverride(ctx); err == nil {
		efiBoot = ov.IsEFIBoot
	} else if mode, err := c.bootMode(ctx); err == nil && mode != "" {
		// bmclib cannot read back a target it has no name for (such as
		// UefiTarget, where an OS's one-time boot leaves it).
		efiBoot = mode == "UEFI"
	}
	return c.Client.SetBootDevice(ctx, device, persistent, efiBoot)
}

// bootMode reads the first system's BootSourceOverrideMode itself.
func (c *redfishClient) bootMode(ctx context.Context) (string, error) {
	var systems struct {
		Members []struct {
			ID string `json:"@odata.id"`
		}
	}
	if err := c.getJSON(ctx, "/redfish/v1/Systems", &systems); err != nil {
		return "", err
	}
	if len(systems.Members) == 0 {
		return "", fmt.Errorf("no systems")
	}
	var sys struct {
		Boot struct{ BootSourceOverrideMode string }
	}
	if err := c.getJSON(ctx, systems.Members[0].ID, &sys); err != nil {
		return "", err
	}
	return sys.Boot.BootSourceOverrideMode, nil
}

// getJSON GETs a resource of the BMC with the session's auth.
func (c *redfishClient) getJSON(ctx context.Context, ref string, v any) error {
	resp, err := c.get(ctx, ref)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", ref, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// get GETs ref, resolved against the BMC's URL and refused elsewhere: the
// session's token goes to this BMC only.
func (c *redfishClient) get(ctx context.Context, ref string) (*http.Response, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("location %q: %w", ref, err)
	}
	base, _ := url.Parse(c.base)
	u = base.ResolveReference(u)
	if u.Host != base.Host {
		return nil, fmt.Errorf("location %q is not on the bmc", ref)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	c.t.mu.Lock()
	for k, v := range c.t.auth {
		req.Header[k] = v
	}
	c.t.mu.Unlock()
	req.Header.Set("Accept", "application/json")
	return c.hc.Do(req)
}

// mark is where the answers to the next call start.
func (c *redfishClient) mark() int {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return len(c.t.answers)
}

func (c *redfishClient) since(mark int) []answer {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if mark > len(c.t.answers) {
		return nil
	}
	return append([]answer(nil), c.t.answers[mark:]...)
}

// takeTasks returns and forgets the tasks the BMC started.
func (c *redfishClient) takeTasks() []string {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	tasks := c.t.tasks
	c.t.tasks = nil
	return tasks
}

// taskState reads a task (or a task monitor) once. done is false while it
// runs; err is set, with the task's messages, when it failed.
func (c *redfishClient) taskState(ctx context.Context, loc string) (state string, done bool, err error) {
	resp, err := c.get(ctx, loc)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	switch {
	case resp.StatusCode == http.StatusAccepted:
		// A task monitor answers 202 while the task runs.
		return "Running", false, nil
	case resp.StatusCode >= 300:
		msg := extendedInfo(string(body))
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return "", false, fmt.Errorf("read task %s: HTTP %d: %s", loc, resp.StatusCode, msg)
	}
	var t struct {
		TaskState  string
		TaskStatus string
		Messages   []struct {
			MessageID string `json:"MessageId"`
			Message   string
		}
	}
	if len(body) == 0 || json.Unmarshal(body, &t) != nil || t.TaskState == "" {
		// A monitor's final answer is the operation's own response.
		return "Completed", true, nil
	}
	var msgs []string
	for _, m := range t.Messages {
		msgs = append(msgs, strings.TrimSpace(m.MessageID+": "+m.Message))
	}
	switch t.TaskState {
	case "Completed":
		if t.TaskStatus == "Critical" {
			return t.TaskState, true, &taskError{state: t.TaskState + "/" + t.TaskStatus, msg: strings.Join(msgs, "; ")}
		}
		return t.TaskState, true, nil
	case "Exception", "Killed", "Cancelled":
		return t.TaskState, true, &taskError{state: t.TaskState, msg: strings.Join(msgs, "; ")}
	}
	return t.TaskState, false, nil
}

// taskError is a task that ended without doing its job.
type taskError struct{ state, msg string }

func (e *taskError) Error() string {
	if e.msg == "" {
		return "task ended " + e.state
	}
	return "task ended " + e.state + ": " + e.msg
}
