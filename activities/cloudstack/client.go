// Package cloudstack is rackflow's CloudStack side of multi-NIC VM setup:
// activities that look up a VM and a network, make sure the VM has one NIC on
// that network (adding it through an async job whose polling survives a
// worker restart) and remove it again. It talks to CloudStack through
// github.com/apache/cloudstack-go and turns that library's string errors into
// typed ones (APIError) and Temporal error types.
//
// It is not a general CloudStack client: it creates no VMs or networks, and
// it configures nothing inside the guest (see activities/guestnet).
package cloudstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
)

// Target says which CloudStack to talk to and with which key.
type Target struct {
	// URL is the API endpoint, e.g. "https://cloud.example.org/client/api".
	URL string `json:"url"`
	// Credential names a secret whose Username is the API key and whose
	// Password is the secret key.
	Credential string `json:"credential"`
	// VerifySSL checks the server's TLS certificate. Off only for lab
	// installations with self-signed certificates.
	VerifySSL bool `json:"verify_ssl"`
}

// ClientFunc builds a cloudstack-go client for one activity call. ctx is the
// activity's context: cancelling it must end the client's requests.
type ClientFunc func(ctx context.Context, t Target, apiKey, secretKey string) (*cs.CloudStackClient, error)

// ResponseTimeout bounds the wait for one API response's headers.
const ResponseTimeout = 30 * time.Second

var errBadCredential = errors.New("credential lacks the API key (username) or secret key (password)")

// NewClient is the default ClientFunc: a synchronous cloudstack-go client
// (async jobs are polled by the activities, not by the library) whose HTTP
// requests end with ctx.
func NewClient(ctx context.Context, t Target, apiKey, secretKey string) (*cs.CloudStackClient, error) {
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cloudstack URL %q: want http(s)://host/client/api", t.URL)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: !t.VerifySSL},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: ResponseTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	hc := &http.Client{Transport: ctxTransport{ctx: ctx, rt: tr}}
	return cs.NewClient(t.URL, apiKey, secretKey, t.VerifySSL, cs.WithHTTPClient(hc)), nil
}

// ctxTransport gives every request the activity's context, since
// cloudstack-go's calls take none.
type ctxTransport struct {
	ctx context.Context
	rt  http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.rt.RoundTrip(r.WithContext(t.ctx))
}

// client resolves t's credential and builds a client.
func (a *Activities) client(ctx context.Context, t Target) (*cs.CloudStackClient, error) {
	if a.Secrets == nil {
		return nil, errors.New("cloudstack: Activities has no secrets resolver")
	}
	sec, err := a.Secrets.Resolve(ctx, t.Credential)
	if err != nil {
		return nil, fmt.Errorf("resolve credential %q: %w", t.Credential, err)
	}
	if sec.Username == "" || sec.Password == "" {
		return nil, fmt.Errorf("credential %q: %w", t.Credential, errBadCredential)
	}
	f := a.NewClient
	if f == nil {
		f = NewClient
	}
	return f(ctx, t, sec.Username, sec.Password)
}
