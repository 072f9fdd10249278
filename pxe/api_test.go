package pxe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/pxe/lease"
)

const macA = "52:54:00:12:34:56"

func TestPutIsIdempotent(t *testing.T) {
	ts := startServer(t, nil, nil)
	l := liveLease(t, "52-54-00-12-34-56", "10.0.0.7", "boot-1")
	url := ts.URL + "/v1/leases/52:54:00:12:34:56"

	first := do(t, "PUT", url, testToken, l)
	if first.Status != http.StatusCreated {
		t.Fatalf("first PUT: %d %s, want 201", first.Status, first.Body)
	}
	second := do(t, "PUT", url, testToken, l)
	if second.Status != http.StatusOK {
		t.Fatalf("second PUT: %d %s, want 200", second.Status, second.Body)
	}
	a, b := decodeLease(t, first), decodeLease(t, second)
	if !strings.HasPrefix(a.HostKey, "ssh-ed25519 AAAA") {
		t.Fatalf("host_key = %q, want an ssh-ed25519 public key", a.HostKey)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("second PUT answered differently (-first +second):\n%s", diff)
	}
	if a.MAC != macA {
		t.Errorf("mac = %q, want normalised %q", a.MAC, macA)
	}

	got := decodeLease(t, do(t, "GET", ts.URL+"/v1/leases/52:54:00:12:34:56", testToken, nil))
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("GET differs from PUT answer (-put +get):\n%s", diff)
	}
}

func TestNewBootIDGetsNewHostKey(t *testing.T) {
	ts := startServer(t, nil, nil)
	url := ts.URL + "/v1/leases/" + macA
	l := liveLease(t, macA, "10.0.0.7", "boot-1")
	k1 := decodeLease(t, do(t, "PUT", url, testToken, l)).HostKey
	l.BootID = "boot-2"
	k2 := decodeLease(t, do(t, "PUT", url, testToken, l)).HostKey
	if k1 == "" || k2 == "" || k1 == k2 {
		t.Fatalf("host keys for boot-1 and boot-2: %q, %q; want two different keys", k1, k2)
	}
	// A change that is not a new boot keeps the key.
	l.Hostname = "node07-renamed"
	k3 := decodeLease(t, do(t, "PUT", url, testToken, l)).HostKey
	if k3 != k2 {
		t.Errorf("hostname change replaced the host key: %q -> %q", k2, k3)
	}
	// A disk lease has no host key.
	l.Profile = lease.ProfileDisk
	if k := decodeLease(t, do(t, "PUT", url, testToken, l)).HostKey; k != "" {
		t.Errorf("disk lease host_key = %q, want empty", k)
	}
}

func TestIPConflict(t *testing.T) {
	ts := startServer(t, nil, nil)
	a := liveLease(t, macA, "10.0.0.7", "b")
	if r := do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, a); r.Status != http.StatusCreated {
		t.Fatalf("PUT a: %d %s", r.Status, r.Body)
	}
	b := liveLease(t, "52:54:00:00:00:02", "10.0.0.7", "b")
	r := do(t, "PUT", ts.URL+"/v1/leases/52:54:00:00:00:02", testToken, b)
	if r.Status != http.StatusConflict {
		t.Fatalf("PUT b with a's IP: %d %s, want 409", r.Status, r.Body)
	}
	if e := decodeError(t, r); e.Field != "ip" || !strings.Contains(e.Error, macA) {
		t.Errorf("409 body = %+v, want field ip and the owner %s", e, macA)
	}
	// Once a's lease is gone, b may take the address.
	if r := do(t, "DELETE", ts.URL+"/v1/leases/"+macA, testToken, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE a: %d %s", r.Status, r.Body)
	}
	if r := do(t, "PUT", ts.URL+"/v1/leases/52:54:00:00:00:02", testToken, b); r.Status != http.StatusCreated {
		t.Fatalf("PUT b after deleting a: %d %s, want 201", r.Status, r.Body)
	}
}

func TestBadInputNamesField(t *testing.T) {
	ts := startServer(t, nil, nil)
	tests := map[string]struct {
		mac   string // in the URL
		edit  func(*lease.Lease)
		raw   string // body instead of the edited lease
		field string
	}{
		"mac in url":      {mac: "52:54:00:12:34", field: "mac"},
		"multicast mac":   {mac: "01:00:5e:00:00:01", field: "mac"},
		"mac mismatch":    {mac: macA, edit: func(l *lease.Lease) { l.MAC = "52:54:00:00:00:09" }, field: "mac"},
		"ip":              {mac: macA, edit: func(l *lease.Lease) { l.IP = "10.0.0.300" }, field: "ip"},
		"ipv6 ip":         {mac: macA, edit: func(l *lease.Lease) { l.IP = "fd00::7" }, field: "ip"},
		"netmask":         {mac: macA, edit: func(l *lease.Lease) { l.Netmask = "255.0.255.0" }, field: "netmask"},
		"gateway":         {mac: macA, edit: func(l *lease.Lease) { l.Gateway = "gw" }, field: "gateway"},
		"gateway outside": {mac: macA, edit: func(l *lease.Lease) { l.Gateway = "10.9.0.1" }, field: "gateway"},
		"dns":             {mac: macA, edit: func(l *lease.Lease) { l.DNS = []string{"10.0.0.53", "dns.example"} }, field: "dns[1]"},
		"profile":         {mac: macA, edit: func(l *lease.Lease) { l.Profile = "netboot" }, field: "profile"},
		"no profile":      {mac: macA, edit: func(l *lease.Lease) { l.Profile = "" }, field: "profile"},
		"hostname":        {mac: macA, edit: func(l *lease.Lease) { l.Hostname = "bad_host" }, field: "hostname"},
		"boot_id":         {mac: macA, edit: func(l *lease.Lease) { l.BootID = "a b" }, field: "boot_id"},
		"authorized key":  {mac: macA, edit: func(l *lease.Lease) { l.SSHAuthorizedKeys = []string{"ssh-ed25519 notbase64"} }, field: "ssh_authorized_keys[0]"},
		"expired":         {mac: macA, edit: func(l *lease.Lease) { l.ExpiresAt = time.Now().Add(-time.Hour) }, field: "expires_at"},
		"unknown field":   {mac: macA, raw: `{"ip":"10.0.0.7","netmask":"255.255.255.0","profile":"live","ssh_authorized_key":"x"}`, field: "ssh_authorized_key"},
		"wrong type":      {mac: macA, raw: `{"ip":7}`, field: "ip"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var body any = tc.raw
			if tc.raw == "" {
				l := liveLease(t, macA, "10.0.0.7", "b")
				if tc.edit != nil {
					tc.edit(&l)
				}
				body = l
			}
			r := do(t, "PUT", ts.URL+"/v1/leases/"+tc.mac, testToken, body)
			if r.Status != http.StatusBadRequest {
				t.Fatalf("status %d %s, want 400", r.Status, r.Body)
			}
			if e := decodeError(t, r); e.Field != tc.field || e.Error == "" {
				t.Errorf("error body %+v, want field %q and a message", e, tc.field)
			}
		})
	}
	if n := ts.Store.Len(); n != 0 {
		t.Errorf("store holds %d leases after only bad PUTs", n)
	}
}

func TestLeaseRoutesNeedToken(t *testing.T) {
	ts := startServer(t, nil, nil)
	noToken := startServer(t, nil, func(s *APIServer) { s.Token = "" })
	tests := map[string]struct {
		base, method, path, token string
	}{
		"no header":           {ts.URL, "GET", "/v1/leases", ""},
		"wrong token":         {ts.URL, "GET", "/v1/leases", "nope"},
		"token prefix":        {ts.URL, "GET", "/v1/leases", testToken[:5]},
		"put":                 {ts.URL, "PUT", "/v1/leases/" + macA, ""},
		"get":                 {ts.URL, "GET", "/v1/leases/" + macA, "nope"},
		"delete":              {ts.URL, "DELETE", "/v1/leases/" + macA, ""},
		"timeline":            {ts.URL, "GET", "/v1/leases/" + macA + "/timeline", ""},
		"server has no token": {noToken.URL, "GET", "/v1/leases", " "},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := do(t, tc.method, tc.base+tc.path, tc.token, nil)
			if r.Status != http.StatusUnauthorized {
				t.Errorf("status %d %s, want 401", r.Status, r.Body)
			}
		})
	}
	if r := do(t, "GET", ts.URL+"/v1/leases", testToken, nil); r.Status != http.StatusOK {
		t.Errorf("with the token: %d %s, want 200", r.Status, r.Body)
	}
}

func TestGetUnknownAndDeleteTwice(t *testing.T) {
	ts := startServer(t, nil, nil)
	if r := do(t, "GET", ts.URL+"/v1/leases/"+macA, testToken, nil); r.Status != http.StatusNotFound {
		t.Errorf("GET unknown: %d, want 404", r.Status)
	}
	do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, liveLease(t, macA, "10.0.0.7", "b"))
	for i := range 2 {
		if r := do(t, "DELETE", ts.URL+"/v1/leases/"+macA, testToken, nil); r.Status != http.StatusNoContent {
			t.Errorf("DELETE #%d: %d, want 204", i+1, r.Status)
		}
	}
	if r := do(t, "GET", ts.URL+"/v1/leases/"+macA, testToken, nil); r.Status != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d, want 404", r.Status)
	}
}

func TestHostKeyIsServedOnce(t *testing.T) {
	ts := startServer(t, nil, nil)
	lease := decodeLease(t, do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, liveLease(t, macA, "127.0.0.7", "b1")))
	script := doFrom(t, "127.0.0.7", "GET", ts.URL+"/boot/"+macA+".ipxe", "", nil)
	keyURL, err := hostKeyURL(string(script.Body))
	if err != nil {
		t.Fatalf("%v:\n%s", err, script.Body)
	}
	if !strings.HasPrefix(keyURL, ts.URL+"/v1/hostkeys/") {
		t.Fatalf("hostkey_url %q not under %s", keyURL, ts.URL)
	}
	token := strings.TrimPrefix(keyURL, ts.URL+"/v1/hostkeys/")

	first := doFrom(t, "127.0.0.7", "GET", keyURL, "", nil)
	if first.Status != http.StatusOK {
		t.Fatalf("first fetch: %d %s", first.Status, first.Body)
	}
	signer, err := ssh.ParsePrivateKey(first.Body)
	if err != nil {
		t.Fatalf("fetched key does not parse: %v", err)
	}
	if got := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))); got != lease.HostKey {
		t.Errorf("fetched key's public half %q, lease host_key %q", got, lease.HostKey)
	}
	if second := doFrom(t, "127.0.0.7", "GET", keyURL, "", nil); second.Status != http.StatusGone {
		t.Errorf("second fetch: %d %s, want 410", second.Status, second.Body)
	}
	if r := do(t, "GET", ts.URL+"/v1/hostkeys/"+strings.Repeat("ab", 32), "", nil); r.Status != http.StatusNotFound {
		t.Errorf("unknown token: %d, want 404", r.Status)
	}
	// The same PUT again keeps the (now fetched) key and does not re-arm it.
	again := decodeLease(t, do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, liveLease(t, macA, "127.0.0.7", "b1")))
	if again.HostKey != lease.HostKey {
		t.Errorf("PUT with the same boot_id changed host_key")
	}
	if r := doFrom(t, "127.0.0.7", "GET", keyURL, "", nil); r.Status != http.StatusGone {
		t.Errorf("fetch after re-PUT: %d, want 410", r.Status)
	}

	// Neither the API nor the logs ever show the private key or the token.
	list := do(t, "GET", ts.URL+"/v1/leases", testToken, nil)
	for what, text := range map[string]string{"list": string(list.Body), "logs": ts.Logs.String()} {
		if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, token) {
			t.Errorf("%s shows the private key or its token:\n%s", what, text)
		}
	}
	if !strings.Contains(ts.Logs.String(), `"route":"GET /v1/hostkeys/{token}"`) {
		t.Errorf("logs lack the host key fetch:\n%s", ts.Logs.String())
	}
}

func TestIPXEScripts(t *testing.T) {
	ts := startServer(t, nil, func(s *APIServer) {
		s.PublicURL = "http://10.0.0.2:8080/"
		s.Cmdline = "console=ttyS0,115200"
	})
	live := liveLease(t, macA, "127.0.0.7", "boot-42")
	do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, live)
	disk := liveLease(t, "52:54:00:00:00:02", "127.0.0.8", "b")
	disk.Profile = lease.ProfileDisk
	do(t, "PUT", ts.URL+"/v1/leases/52:54:00:00:00:02", testToken, disk)
	none := liveLease(t, "52:54:00:00:00:03", "127.0.0.9", "b")
	none.Profile = lease.ProfileNone
	do(t, "PUT", ts.URL+"/v1/leases/52:54:00:00:00:03", testToken, none)
	token := ts.Store.hostKeyToken(macA)
	if token == "" {
		t.Fatal("live lease has no host key token")
	}

	tests := map[string]struct {
		path   string
		from   string
		status int
		want   string
	}{
		"live": {"/boot/52:54:00:12:34:56.ipxe", "127.0.0.7", 200, "#!ipxe\n" +
			"kernel http://10.0.0.2:8080/files/vmlinuz initrd=initrd.img ip=127.0.0.7::127.0.0.1:255.255.255.0:node07::off " +
			"nameserver=10.0.0.53 nameserver=10.0.0.54 BOOTIF=01-52-54-00-12-34-56 rackflow.boot_id=boot-42 " +
			"rackflow.authorized_keys_url=http://10.0.0.2:8080/boot/52:54:00:12:34:56/authorized_keys " +
			"rackflow.hostkey_url=http://10.0.0.2:8080/v1/hostkeys/" + token + " console=ttyS0,115200\n" +
			"initrd http://10.0.0.2:8080/files/initrd.img\n" +
			"boot\n"},
		"hyphenated mac": {"/boot/52-54-00-12-34-56.ipxe", "127.0.0.7", 200, ""},
		"disk":           {"/boot/52:54:00:00:00:02.ipxe", "127.0.0.8", 200, "#!ipxe\nsanboot --no-describe --drive 0x80\n"},
		"none":           {"/boot/52:54:00:00:00:03.ipxe", "127.0.0.9", 200, "#!ipxe\nexit\n"},
		"unknown":        {"/boot/52:54:00:00:00:04.ipxe", "127.0.0.7", 404, "#!ipxe\nexit\n"},
		"bad mac":        {"/boot/zz.ipxe", "127.0.0.7", 400, "#!ipxe\nexit\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := doFrom(t, tc.from, "GET", ts.URL+tc.path, "", nil)
			if r.Status != tc.status {
				t.Errorf("status %d, want %d", r.Status, tc.status)
			}
			want := tc.want
			if want == "" {
				want = string(doFrom(t, "127.0.0.7", "GET", ts.URL+"/boot/52:54:00:12:34:56.ipxe", "", nil).Body)
			}
			if diff := cmp.Diff(want, string(r.Body)); diff != "" {
				t.Errorf("script (-want +got):\n%s", diff)
			}
		})
	}

	keys := doFrom(t, "127.0.0.7", "GET", ts.URL+"/boot/"+macA+"/authorized_keys", "", nil)
	if keys.Status != 200 || string(keys.Body) != live.SSHAuthorizedKeys[0]+"\n" {
		t.Errorf("authorized_keys: %d %q, want %q", keys.Status, keys.Body, live.SSHAuthorizedKeys[0]+"\n")
	}
}

func TestFilesRangeAndTraversal(t *testing.T) {
	root := t.TempDir()
	bootDir := filepath.Join(root, "boot")
	if err := os.MkdirAll(filepath.Join(bootDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := make([]byte, 100_000)
	for i := range kernel {
		kernel[i] = byte(i * 7)
	}
	writeFile(t, filepath.Join(bootDir, "vmlinuz"), kernel)
	writeFile(t, filepath.Join(bootDir, "sub", "initrd.img"), []byte("initrd"))
	const secret = "TOP-SECRET-OUTSIDE-BOOTDIR"
	writeFile(t, filepath.Join(root, "secret.txt"), []byte(secret))
	if err := os.Symlink(filepath.Join(root, "secret.txt"), filepath.Join(bootDir, "escape")); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, nil, func(s *APIServer) { s.BootDir = bootDir })

	req, _ := http.NewRequest("GET", ts.URL+"/files/vmlinuz", nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("range GET: %d, want 206", resp.StatusCode)
	}
	if cr := resp.Header.Get("Content-Range"); cr != "bytes 1000-1999/100000" {
		t.Errorf("Content-Range %q", cr)
	}
	if !cmp.Equal(got, kernel[1000:2000]) {
		t.Errorf("range body differs from bytes 1000-1999 of the file")
	}
	if r := do(t, "GET", ts.URL+"/files/sub/initrd.img", "", nil); r.Status != 200 || string(r.Body) != "initrd" {
		t.Errorf("file in subdirectory: %d %q", r.Status, r.Body)
	}

	metrics := string(do(t, "GET", ts.URL+"/metrics", "", nil).Body)
	if !strings.Contains(metrics, `rackflow_pxe_http_bytes_served_total{route="GET /files/{name...}"} 1006`) {
		t.Errorf("metrics lack 1006 bytes served under /files:\n%s", grepLines(metrics, "bytes_served"))
	}

	// Raw request lines, so no client cleans the path first.
	for _, path := range []string{
		"/files/../secret.txt",
		"/files/%2e%2e/secret.txt",
		"/files/..%2fsecret.txt",
		"/files/sub/..%2f..%2fsecret.txt",
		"/files/%2fetc%2fpasswd",
		"/files/escape",
		"/files/sub",
		"/files/missing",
	} {
		status, body := rawGET(t, ts.URL, path)
		t.Logf("GET %s: %d", path, status)
		if status == 200 || strings.Contains(body, secret) || strings.Contains(body, "root:") {
			t.Errorf("GET %s: %d %q, want refused", path, status, body)
		}
	}

}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rawGET writes the request line by hand on a TCP connection and follows no
// redirect.
func rawGET(t *testing.T, base, path string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetricsCount(t *testing.T) {
	ts := startServer(t, nil, nil)
	l := liveLease(t, macA, "10.0.0.7", "b")
	do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, l)
	do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, l)
	do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, lease.Lease{Profile: "x"})
	do(t, "DELETE", ts.URL+"/v1/leases/"+macA, testToken, nil)
	do(t, "GET", ts.URL+"/v1/hostkeys/"+strings.Repeat("00", 32), "", nil)
	m := string(do(t, "GET", ts.URL+"/metrics", "", nil).Body)
	for _, want := range []string{
		`rackflow_pxe_lease_puts_total{result="created"} 1`,
		`rackflow_pxe_lease_puts_total{result="unchanged"} 1`,
		`rackflow_pxe_lease_puts_total{result="invalid"} 1`,
		`rackflow_pxe_lease_deletes_total 1`,
		`rackflow_pxe_hostkey_fetches_total{result="not_found"} 1`,
		`rackflow_pxe_leases 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	// After cancel, Serve returns nil and the port no longer accepts.
	store, err := OpenStore(StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&APIServer{Listener: ln, Store: store}).Serve(ctx) }()
	waitListening(t, addr)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("listener still accepts after Serve returned")
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for range 100 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing serving on %s", addr)
}

// TestCurlResumesDownload has a real HTTP client resume an interrupted
// kernel download with a range request.
func TestCurlResumesDownload(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if testing.Short() {
			t.Skip("curl not installed")
		}
		t.Fatal("curl not found: install the Debian package curl")
	}
	bootDir := t.TempDir()
	kernel := make([]byte, 300_000)
	for i := range kernel {
		kernel[i] = byte(i * 13)
	}
	writeFile(t, filepath.Join(bootDir, "vmlinuz"), kernel)
	ts := startServer(t, nil, func(s *APIServer) { s.BootDir = bootDir })

	out := filepath.Join(t.TempDir(), "vmlinuz.part")
	writeFile(t, out, kernel[:123_456])
	cmd := exec.Command(curl, "-sS", "-f", "-C", "-", "-o", out, ts.URL+"/files/vmlinuz")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(got, kernel) {
		t.Errorf("resumed download differs from the file (%d bytes, want %d)", len(got), len(kernel))
	}
	if !strings.Contains(ts.Logs.String(), `"status":206`) {
		t.Errorf("curl did not get a 206 partial answer:\n%s", ts.Logs.String())
	}
}

// TestBootRoutesRefuseAnotherAddress is the host key theft of the security
// review: anyone on the boot network who saw a DHCPDISCOVER could fetch the
// host's iPXE script (which holds the one-time key URL), its authorized_keys
// and its private host key, and the real host's own fetch then failed. Now
// every boot route answers only the lease's IP; what another address asked
// for is refused and recorded in the lease, and the real host still boots.
func TestBootRoutesRefuseAnotherAddress(t *testing.T) {
	ts := startServer(t, nil, nil)
	const hostIP, attacker = "127.0.0.7", "127.0.0.66"
	do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, liveLease(t, macA, hostIP, "b1"))
	token := ts.Store.hostKeyToken(macA)

	for what, path := range map[string]string{
		"script":          "/boot/" + macA + ".ipxe",
		"authorized_keys": "/boot/" + macA + "/authorized_keys",
		"host key":        "/v1/hostkeys/" + token,
	} {
		r := doFrom(t, attacker, "GET", ts.URL+path, "", nil)
		if r.Status != http.StatusForbidden || strings.Contains(string(r.Body), token) || strings.Contains(string(r.Body), "PRIVATE KEY") {
			t.Errorf("%s from %s: %d %q, want 403 with nothing of the host's", what, attacker, r.Status, r.Body)
		}
	}
	l := decodeLease(t, do(t, "GET", ts.URL+"/v1/leases/"+macA, testToken, nil))
	if len(l.Refusals) != 3 || l.Refusals[0].From != attacker || l.Refusals[0].Reason != lease.RefusedOtherIP {
		t.Fatalf("refusals recorded: %+v, want 3 from %s", l.Refusals, attacker)
	}

	// The host itself boots: script, then its key, from its lease's IP.
	script := doFrom(t, hostIP, "GET", ts.URL+"/boot/"+macA+".ipxe", "", nil)
	keyURL, err := hostKeyURL(string(script.Body))
	if script.Status != http.StatusOK || err != nil {
		t.Fatalf("host's script: %d %v", script.Status, err)
	}
	if r := doFrom(t, hostIP, "GET", keyURL, "", nil); r.Status != http.StatusOK {
		t.Fatalf("host's key: %d %s", r.Status, r.Body)
	}
	l = decodeLease(t, do(t, "GET", ts.URL+"/v1/leases/"+macA, testToken, nil))
	if ok, why := l.BootTrusted(); !ok || l.HostKeyFetchedFrom != hostIP {
		t.Fatalf("after the host's own fetch: trusted=%v (%s), fetched from %q", ok, why, l.HostKeyFetchedFrom)
	}

	// Someone at the host's own address (a spoofed MAC that got the lease
	// by DHCP) asking for the key again is refused, and the boot is no
	// longer trusted: one of the two fetches was not the host's.
	if r := doFrom(t, hostIP, "GET", keyURL, "", nil); r.Status != http.StatusGone {
		t.Fatalf("second fetch: %d, want 410", r.Status)
	}
	l = decodeLease(t, do(t, "GET", ts.URL+"/v1/leases/"+macA, testToken, nil))
	if ok, why := l.BootTrusted(); ok || !strings.Contains(why, "second time") {
		t.Fatalf("after a second fetch: trusted=%v (%s), want untrusted", ok, why)
	}

	// A new boot (new boot_id) starts clean.
	l = decodeLease(t, do(t, "PUT", ts.URL+"/v1/leases/"+macA, testToken, liveLease(t, macA, hostIP, "b2")))
	if len(l.Refusals) != 0 || l.HostKeyFetchedFrom != "" {
		t.Fatalf("new boot carries the old one's record: %+v", l)
	}
}
