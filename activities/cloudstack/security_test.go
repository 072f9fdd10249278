package cloudstack_test

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/csfake"
)

// errorTexts is every message in err's chain, as a history or log line
// could carry it.
func errorTexts(err error) string {
	var b strings.Builder
	for e := err; e != nil; e = errors.Unwrap(e) {
		b.WriteString(e.Error())
		b.WriteString("\n")
	}
	return b.String()
}

// TestTLSVerifiedByDefault: a CloudStack behind a self-signed certificate
// is refused unless the target opts out.
func TestTLSVerifiedByDefault(t *testing.T) {
	w := newWorld(t, 0)
	ts := httptest.NewTLSServer(w.srv)
	t.Cleanup(ts.Close)
	u := ts.URL + "/client/api"
	w.acts.Secrets.(secrets.Static)["cloudstack/tls"] = secrets.Secret{Username: w.srv.APIKey(), Password: w.srv.SecretKey(), Endpoints: []string{u}}

	tests := map[string]struct {
		insecure bool
		errType  string
	}{
		"verified by default":         {errType: cloudstack.ErrTypeTLS},
		"insecure_skip_verify opt-in": {insecure: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := w.srv.Calls("listVirtualMachines")
			_, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{
				Target: cloudstack.Target{URL: u, Credential: "cloudstack/tls", Insecure: tc.insecure}, VM: "web01",
			})
			if tc.errType == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if ae := appErr(t, err); ae.Type() != tc.errType || !ae.NonRetryable() {
				t.Fatalf("got %s (non-retryable %v), want non-retryable %s: %v", ae.Type(), ae.NonRetryable(), tc.errType, err)
			}
			if w.srv.Calls("listVirtualMachines") != before {
				t.Error("a request reached the server through an unverified TLS connection")
			}
		})
	}
}

// TestTransportErrorCarriesNoSignedURL: cloudstack-go signs GETs in the
// query; a dropped connection must not bring apiKey or signature into the
// activity error (history) or its causes.
func TestTransportErrorCarriesNoSignedURL(t *testing.T) {
	w := newWorld(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan url.Values, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// Read the request, then drop the connection without an answer.
		if r, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			got <- r.URL.Query()
		}
		c.Close()
	}()
	u := "http://" + ln.Addr().String() + "/client/api"
	w.acts.Secrets.(secrets.Static)["cloudstack/drop"] = secrets.Secret{Username: w.srv.APIKey(), Password: w.srv.SecretKey(), Endpoints: []string{u}}

	_, err = run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: cloudstack.Target{URL: u, Credential: "cloudstack/drop"}, VM: "web01"})
	if ae := appErr(t, err); ae.Type() != cloudstack.ErrTypeInternal || ae.NonRetryable() {
		t.Errorf("dropped connection: got %s (non-retryable %v), want retryable %s", ae.Type(), ae.NonRetryable(), cloudstack.ErrTypeInternal)
	}
	q := <-got
	sig := q.Get("signature")
	if sig == "" || q.Get("apiKey") != w.srv.APIKey() {
		t.Fatalf("the request lacked the signed query the test looks for: %v", q)
	}
	text := errorTexts(err)
	for name, secret := range map[string]string{
		"apiKey": w.srv.APIKey(), "signature": sig, "escaped signature": url.QueryEscape(sig), "secret key": w.srv.SecretKey(),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("the error carries the %s:\n%s", name, text)
		}
	}
	if !strings.Contains(text, ln.Addr().String()) {
		t.Errorf("the error no longer says where it failed:\n%s", text)
	}
}

// TestCredentialBoundToEndpoint: a workflow input that points the URL at
// another server (the attack) gets CredentialNotAllowed, and the API key
// never reaches that server.
func TestCredentialBoundToEndpoint(t *testing.T) {
	w := newWorld(t, 0)
	evil := csfake.Start(t, csfake.Options{})
	static := w.acts.Secrets.(secrets.Static)
	static["cloudstack/unbound"] = secrets.Secret{Username: w.srv.APIKey(), Password: w.srv.SecretKey()}
	static["cloudstack/any"] = secrets.Secret{Username: w.srv.APIKey(), Password: w.srv.SecretKey(), Endpoints: []string{"*"}}

	tests := map[string]cloudstack.Target{
		"bound to another URL":  {URL: evil.URL(), Credential: credRef},
		"same host, other path": {URL: strings.TrimSuffix(w.srv.URL(), "/client/api") + "/other/api", Credential: credRef},
		"bound to nothing":      {URL: w.srv.URL(), Credential: "cloudstack/unbound"},
		"cleartext off-host":    {URL: "http://192.0.2.10/client/api", Credential: "cloudstack/any"},
	}
	for name, target := range tests {
		t.Run(name, func(t *testing.T) {
			before := w.srv.Hits()
			_, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: target, VM: "web01"})
			if ae := appErr(t, err); ae.Type() != cloudstack.ErrTypeCredentialNotAllowed || !ae.NonRetryable() {
				t.Fatalf("got %s (non-retryable %v), want non-retryable %s: %v", ae.Type(), ae.NonRetryable(), cloudstack.ErrTypeCredentialNotAllowed, err)
			}
			if strings.Contains(errorTexts(err), w.srv.APIKey()) {
				t.Errorf("the error carries the API key: %v", err)
			}
			if w.srv.Hits() != before {
				t.Error("a request was sent")
			}
		})
	}
	if n := evil.Hits(); n != 0 {
		t.Errorf("the second server got %d requests", n)
	}
	// The bound URL still works.
	if _, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: w.target, VM: "web01"}); err != nil {
		t.Errorf("bound URL: %v", err)
	}
}
