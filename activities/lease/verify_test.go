package lease_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/lease"
)

// TestVerifyBootAgainstPXE drives the real pxe service on loopback as a
// booting host (127.0.0.7) and an attacker (127.0.0.66) would, and checks
// what VerifyBoot tells the workflow each time.
func TestVerifyBootAgainstPXE(t *testing.T) {
	a := &lease.Activities{}
	r := startPXE(t, a)
	base, act, rr := r.base, r.act, r.reg
	const mac = testMAC
	verify := func() (lease.VerifyResult, error) {
		v, err := act.ExecuteActivity(a.VerifyBoot, lease.VerifyInput{Host: "node07", MAC: mac, HostKey: rr.HostKey})
		var res lease.VerifyResult
		if err == nil {
			_ = v.Get(&res)
		}
		return res, err
	}
	from := func(ip, path string) int {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	scriptOf := func() string {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}
		hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		resp, err := hc.Get(base + "/boot/" + mac + ".ipxe")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sb strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		for _, f := range strings.Fields(sb.String()) {
			if v, ok := strings.CutPrefix(f, "rackflow.hostkey_url="+base); ok {
				return v
			}
		}
		t.Fatalf("no host key URL in %q", sb.String())
		return ""
	}

	keyPath := scriptOf()
	if _, err := verify(); !activities.IsType(err, lease.ErrTypeBootUntrusted) {
		t.Fatalf("before any fetch: %v, want %s", err, lease.ErrTypeBootUntrusted)
	}
	if code := from("127.0.0.66", keyPath); code != http.StatusForbidden {
		t.Fatalf("attacker's fetch: %d", code)
	}
	if code := from("127.0.0.7", keyPath); code != http.StatusOK {
		t.Fatalf("host's fetch: %d", code)
	}
	res, err := verify()
	if err != nil || res.FetchedFrom != "127.0.0.7" || res.Refused != 1 {
		t.Fatalf("after the host's fetch: %+v, %v; want trusted, fetched from 127.0.0.7, 1 refused", res, err)
	}
	if code := from("127.0.0.7", keyPath); code != http.StatusGone {
		t.Fatalf("second fetch: %d", code)
	}
	if _, err := verify(); !activities.IsType(err, lease.ErrTypeBootUntrusted) || !strings.Contains(err.Error(), "second time") {
		t.Fatalf("after a second fetch: %v, want %s", err, lease.ErrTypeBootUntrusted)
	}
}
