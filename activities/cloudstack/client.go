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
	"go.temporal.io/sdk/activity"

	"github.com/rackflow/rackflow/secrets"
)

// Target says which CloudStack to talk to and with which key.
type Target struct {
	// URL is the API endpoint, e.g. "https://cloud.example.org/client/api".
	// The secrets file, not this field, decides whether Credential may be
	// sent there (its endpoints:).
	URL string `json:"url"`
	// Credential names a secret whose Username is the API key and whose
	// Password is the secret key.
	Credential string `json:"credential"`
	// Insecure skips the TLS certificate check. Labs with self-signed
	// certificates only; the zero value verifies. (Targets of older workers
	// carried "verify_ssl", false by default: it is ignored, so an activity
	// they scheduled verifies too.)
	Insecure bool `json:"insecure_skip_verify,omitempty"`
	// ProjectID, when set, is the CloudStack project (its UUID) the VM and
	// network belong to. CloudStack lists a project's VMs and networks only
	// when asked with its projectid, so every listVirtualMachines and
	// listNetworks carries it; the calls on ids (listNics, the NIC and IP
	// jobs) need none.
	ProjectID string `json:"project_id,omitempty"`
}

// ClientFunc builds a cloudstack-go client for one activity call. ctx is the
// activity's context: cancelling it must end the client's requests.
type ClientFunc func(ctx context.Context, t Target, apiKey, secretKey string) (*cs.CloudStackClient, error)

// ResponseTimeout bounds the wait for one API response's headers.
const ResponseTimeout = 30 * time.Second

var errBadProject = errors.New("not a CloudStack project id (UUID)")

var errBadCredential = errors.New("credential lacks the API key (username) or secret key (password)")

// NewClient is the default ClientFunc: a synchronous cloudstack-go client
// (async jobs are polled by the activities, not by the library) whose HTTP
// requests end with ctx. TLS certificates are verified unless t.Insecure.
func NewClient(ctx context.Context, t Target, apiKey, secretKey string) (*cs.CloudStackClient, error) {
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cloudstack URL %q: want http(s)://host/client/api", t.URL)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: t.Insecure, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: ResponseTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	// No redirects: a signed GET would be replayed, apiKey and all, to
	// wherever the Location header points.
	hc := &http.Client{
		Transport:     ctxTransport{ctx: ctx, rt: tr},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return cs.NewClient(t.URL, apiKey, secretKey, !t.Insecure, cs.WithHTTPClient(hc)), nil
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

// call passes a cloudstack-go call's result through and redacts its error:
// cloudstack-go signs GET requests in the query (apiKey=…&signature=…), and
// net/http's *url.Error prints the whole URL. Every call's error goes
// through here before anything wraps or logs it, so neither key nor
// signature reaches a log line or the workflow history.
func call[T any](r T, err error) (T, error) {
	return r, redact(err)
}

// redact returns err with the query of any *url.Error in its chain removed.
func redact(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: stripQuery(ue.URL), Err: ue.Err}
}

func stripQuery(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

// client resolves t's credential, if the secrets file lets it go to t.URL,
// and builds a client.
func (a *Activities) client(ctx context.Context, t Target) (*cs.CloudStackClient, error) {
	if a.Secrets == nil {
		return nil, errors.New("cloudstack: Activities has no secrets resolver")
	}
	if t.ProjectID != "" && !cs.IsID(t.ProjectID) {
		return nil, fmt.Errorf("project %q: %w", t.ProjectID, errBadProject)
	}
	// The input names the URL and the credential together: the secrets
	// file, not the input, decides whether this key may go there. The API
	// key travels in every request and a signed request can be replayed
	// until it expires, so the use discloses.
	sec, err := secrets.ResolveFor(ctx, a.Secrets, t.Credential, secrets.Use{Dest: t.URL, Discloses: true})
	if err != nil {
		return nil, fmt.Errorf("resolve credential %q: %w", t.Credential, err)
	}
	if sec.Username == "" || sec.Password == "" {
		return nil, fmt.Errorf("credential %q: %w", t.Credential, errBadCredential)
	}
	if t.Insecure {
		activity.GetLogger(ctx).Warn("CloudStack TLS verification disabled", "url", t.URL)
	}
	f := a.NewClient
	if f == nil {
		f = NewClient
	}
	return f(ctx, t, sec.Username, sec.Password)
}
