// Package client is the worker's client of the pxe lease API: PUT, GET,
// DELETE and list leases over HTTPS (or HTTP on loopback) with a bearer
// token. Errors are typed so a
// caller tells bad input (400), conflict (409), not found (404) and a wrong
// token (401) apart with errors.Is, and a transport failure from all of them.
//
// It does not retry: the Temporal activity that calls it owns retries, and
// retries inside it would multiply the wait.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/lease"
)

var (
	// ErrBadInput matches an *APIError with status 400.
	ErrBadInput = errors.New("bad input")
	// ErrUnauthorized matches an *APIError with status 401.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound matches an *APIError with status 404; it is lease.ErrNotFound.
	ErrNotFound = lease.ErrNotFound
	// ErrConflict matches an *APIError with status 409; it is lease.ErrConflict.
	ErrConflict = lease.ErrConflict
	// ErrPlainHTTP is New's refusal of an http URL of another machine:
	// the bearer token would cross the network in clear.
	ErrPlainHTTP = errors.New("plain http to a non-loopback address")
)

// APIError is an answer of the API other than success.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Field names the bad input field (JSON name, such as "ip" or "dns[1]")
	// for 400 and 409, when the server said.
	Field string
	// Message is the server's explanation.
	Message string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("pxe api: %d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is maps the status to the package's sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrBadInput:
		return e.Status == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	}
	return false
}

// Client talks to one pxe service.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Options are New's optional settings; the zero value is the default.
type Options struct {
	// HTTPClient sends the requests. Nil: one with a 30-second overall
	// timeout, no retries, verifying https against CAFile.
	HTTPClient *http.Client
	// CAFile is a PEM bundle of the CAs that sign an https service's
	// certificate, for a private CA; empty: the system's roots. It needs
	// the default HTTPClient.
	CAFile string
}

// New returns a client of the service at baseURL, such as
// "https://pxe.mgmt:8443" or "http://127.0.0.1:8080". It refuses
// (ErrPlainHTTP) an http URL whose host is not a loopback address or
// "localhost": the token would cross the network in clear.
func New(baseURL, token string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("pxe url %q is not an http(s) URL", baseURL)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("pxe url %s: refusing to send the bearer token in clear: %w; use https (with a CA bundle for a private CA) or a loopback address", baseURL, ErrPlainHTTP)
	}
	hc := opts.HTTPClient
	if hc != nil && opts.CAFile != "" {
		return nil, errors.New("pxe client: CAFile needs the default HTTPClient; put the CA in your client's transport")
	}
	if hc == nil {
		tr := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 20 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
		}
		if opts.CAFile != "" {
			pool, err := loadCA(opts.CAFile)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		hc = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: hc}, nil
}

// isLoopback reports whether host names this machine without a network
// in between: a loopback IP literal or "localhost".
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func loadCA(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pxe CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("pxe CA bundle %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Put creates or replaces the lease of l.MAC and returns it as stored, with
// its host key.
func (c *Client) Put(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	body, err := json.Marshal(l)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("put lease %s: %w", l.MAC, err)
	}
	var out lease.Lease
	if err := c.do(ctx, http.MethodPut, "/v1/leases/"+url.PathEscape(l.MAC), body, &out); err != nil {
		return lease.Lease{}, fmt.Errorf("put lease %s: %w", l.MAC, err)
	}
	return out, nil
}

// Get returns the lease of mac; an absent or expired lease is ErrNotFound.
func (c *Client) Get(ctx context.Context, mac string) (lease.Lease, error) {
	var out lease.Lease
	if err := c.do(ctx, http.MethodGet, "/v1/leases/"+url.PathEscape(mac), nil, &out); err != nil {
		return lease.Lease{}, fmt.Errorf("get lease %s: %w", mac, err)
	}
	return out, nil
}

// Timeline returns what rackflow-pxe saw of mac's boot since its lease
// got its boot ID (DHCP answers, TFTP and HTTP fetches); an absent lease
// is ErrNotFound.
func (c *Client) Timeline(ctx context.Context, mac string) (api.BootTimeline, error) {
	var out api.BootTimeline
	if err := c.do(ctx, http.MethodGet, "/v1/leases/"+url.PathEscape(mac)+"/timeline", nil, &out); err != nil {
		return api.BootTimeline{}, fmt.Errorf("boot timeline of %s: %w", mac, err)
	}
	return out, nil
}

// Delete removes the lease of mac; deleting an absent lease succeeds.
func (c *Client) Delete(ctx context.Context, mac string) error {
	if err := c.do(ctx, http.MethodDelete, "/v1/leases/"+url.PathEscape(mac), nil, nil); err != nil {
		return fmt.Errorf("delete lease %s: %w", mac, err)
	}
	return nil
}

// List returns every unexpired lease, sorted by MAC.
func (c *Client) List(ctx context.Context) ([]lease.Lease, error) {
	var out lease.List
	if err := c.do(ctx, http.MethodGet, "/v1/leases", nil, &out); err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return out.Leases, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err // a *url.Error, which names the method and URL, never the token
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		apiErr := &APIError{Status: resp.StatusCode}
		var e struct {
			Error string `json:"error"`
			Field string `json:"field"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			apiErr.Message, apiErr.Field = e.Error, e.Field
		} else {
			apiErr.Message = strings.TrimSpace(string(data[:min(len(data), 200)]))
		}
		return apiErr
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
