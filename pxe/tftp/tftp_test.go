package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackflow/rackflow/testsuite/netns"
)

// testRoot makes a served directory and a secret file beside it:
//
//	DIR/secret.txt
//	DIR/root/undionly.kpxe       (random bytes, size given)
//	DIR/root/sub/ipxe.efi
//	DIR/root/inside -> undionly.kpxe
//	DIR/root/escape -> ../secret.txt
//	DIR/root/escape-dir -> ..
func testRoot(t *testing.T, size int) (root string, content []byte) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	content = make([]byte, size)
	_, _ = rand.Read(content)
	must(t, os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "undionly.kpxe"), content, 0o644))
	must(t, os.WriteFile(filepath.Join(root, "sub", "ipxe.efi"), []byte("efi"), 0o644))
	must(t, os.Symlink("undionly.kpxe", filepath.Join(root, "inside")))
	must(t, os.Symlink("../secret.txt", filepath.Join(root, "escape")))
	must(t, os.Symlink("..", filepath.Join(root, "escape-dir")))
	return root, content
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// start runs s on 127.0.0.1 and returns its address.
func start(t *testing.T, s *Server) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	// As a listening Serve does before any request can arrive: without
	// pktinfo the server does not know the MTU and caps blksize at 512.
	enablePktinfo(c)
	s.Conn = c
	s.Timeout = time.Second
	s.Retries = 2
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return c.LocalAddr().String()
}

func fetch(addr, name string, blksize int) ([]byte, int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size, _ := wt.(tftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), size, err
}

func TestReadFiles(t *testing.T) {
	root, content := testRoot(t, 3*1468+17)
	var mu sync.Mutex
	var seen []Transfer
	reg := prometheus.NewPedanticRegistry()
	srv := &Server{Root: root, Registerer: reg, OnTransfer: func(tr Transfer) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, tr)
	}}
	addr := start(t, srv)

	tests := map[string]struct {
		name    string
		blksize int
		want    []byte
	}{
		"default 512-byte blocks":   {name: "undionly.kpxe", want: content},
		"blksize 1468 like curl":    {name: "undionly.kpxe", blksize: 1468, want: content},
		"subdirectory":              {name: "sub/ipxe.efi", want: []byte("efi")},
		"symlink inside root":       {name: "inside", blksize: 1468, want: content},
		"dot segments inside root":  {name: "./sub/../undionly.kpxe", want: nil}, // ".." refused even when it stays inside
		"redundant slashes cleaned": {name: "sub//ipxe.efi", want: []byte("efi")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, size, err := fetch(addr, tc.name, tc.blksize)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("fetch %q succeeded, want refusal", tc.name)
				}
				return
			}
			if err != nil {
				t.Fatalf("fetch %q: %v", tc.name, err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("fetch %q: got %d bytes, want %d bytes exactly as on disk", tc.name, len(got), len(tc.want))
			}
			if size != int64(len(tc.want)) {
				t.Errorf("fetch %q: tsize %d, want %d", tc.name, size, len(tc.want))
			}
		})
	}

	// The server records a transfer once the last ACK is in, which may be
	// after the client has returned.
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= len(tests) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(tests) {
		t.Fatalf("OnTransfer called %d times, want %d", len(seen), len(tests))
	}
	for _, tr := range seen {
		if !tr.Remote.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Errorf("OnTransfer remote %v, want 127.0.0.1", tr.Remote)
		}
	}
	if got := testutil.ToFloat64(srv.metrics.transfers.WithLabelValues("ok")); got != float64(len(tests)-1) {
		t.Errorf("ok transfers = %v, want %d", got, len(tests)-1)
	}
	if got := testutil.ToFloat64(srv.metrics.transfers.WithLabelValues("forbidden")); got != 1 {
		t.Errorf("forbidden transfers = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "rackflow_pxe_tftp_bytes_sent_total"); err != nil || n != 1 {
		t.Errorf("bytes metric not registered: n=%d err=%v", n, err)
	}
}

func TestRefusedNames(t *testing.T) {
	root, _ := testRoot(t, 100)
	var mu sync.Mutex
	results := map[string]error{}
	addr := start(t, &Server{Root: root, OnTransfer: func(tr Transfer) {
		mu.Lock()
		defer mu.Unlock()
		results[tr.Filename] = tr.Err
	}})
	tests := map[string]struct {
		name string
		want error
	}{
		"parent directory":          {name: "../secret.txt", want: ErrForbidden},
		"parent inside path":        {name: "sub/../../secret.txt", want: ErrForbidden},
		"absolute path":             {name: "/etc/passwd", want: ErrForbidden},
		"absolute path to the root": {name: root + "/undionly.kpxe", want: ErrForbidden},
		"symlink out of root":       {name: "escape", want: ErrForbidden},
		"through symlinked parent":  {name: "escape-dir/secret.txt", want: ErrForbidden},
		"directory":                 {name: "sub", want: ErrForbidden},
		"backslash traversal":       {name: `..\secret.txt`, want: ErrForbidden},
		"missing file":              {name: "pxelinux.0", want: ErrNotFound},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _, err := fetch(addr, tc.name, 0)
			if err == nil {
				t.Fatalf("fetch %q returned %q, want an error", tc.name, got)
			}
			if !strings.Contains(err.Error(), tc.want.Error()) {
				t.Errorf("client error %q, want it to carry %q", err, tc.want)
			}
			if strings.Contains(err.Error(), root) {
				t.Errorf("client error %q reveals the server path", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !errors.Is(results[tc.name], tc.want) {
				t.Errorf("OnTransfer error %v, want %v", results[tc.name], tc.want)
			}
		})
	}
}

func TestWriteRefused(t *testing.T) {
	root, _ := testRoot(t, 10)
	addr := start(t, &Server{Root: root})
	c, err := tftp.NewClient(addr)
	must(t, err)
	c.SetTimeout(time.Second)
	c.SetRetries(1)
	rf, err := c.Send("new.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("payload"))
	}
	if err == nil {
		t.Fatal("write request accepted")
	}
	if _, err := os.Stat(filepath.Join(root, "new.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new.bin exists after refused write (stat err %v)", err)
	}
}

// rrq sends a raw read request with options and returns the options of the
// server's OACK, or the ERROR message.
func rrq(t *testing.T, addr, name string, opts ...string) (oack map[string]string, errMsg string) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer c.Close()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	must(t, err)
	pkt := []byte{0, 1}
	for _, f := range append([]string{name, "octet"}, opts...) {
		pkt = append(append(pkt, f...), 0)
	}
	_, err = c.WriteTo(pkt, ua)
	must(t, err)
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := c.ReadFrom(buf)
	must(t, err)
	buf = buf[:n]
	op := binary.BigEndian.Uint16(buf)
	switch op {
	case 6: // OACK
		fields := strings.Split(strings.TrimSuffix(string(buf[2:]), "\x00"), "\x00")
		oack = map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			oack[fields[i]] = fields[i+1]
		}
		// Say goodbye so the server does not retry into the test's end.
		_, _ = c.WriteTo([]byte{0, 5, 0, 0, 'b', 'y', 'e', 0}, from)
		return oack, ""
	case 5: // ERROR
		return nil, strings.TrimSuffix(string(buf[4:]), "\x00")
	}
	t.Fatalf("unexpected opcode %d", op)
	return nil, ""
}

func TestOptionNegotiation(t *testing.T) {
	root, content := testRoot(t, 10000)
	addr := start(t, &Server{Root: root})
	capped := start(t, &Server{Root: root, MaxBlockSize: 1024, MaxWindowSize: 16})
	size := strconv.Itoa(len(content))

	tests := map[string]struct {
		addr    string
		opts    []string
		want    map[string]string
		wantErr string
	}{
		"blksize and tsize": {addr: addr, opts: []string{"blksize", "1468", "tsize", "0"},
			want: map[string]string{"blksize": "1468", "tsize": size}},
		"windowsize acknowledged (RFC 7440)": {addr: addr,
			opts: []string{"blksize", "1468", "windowsize", "8"},
			want: map[string]string{"blksize": "1468", "windowsize": "8"}},
		"windowsize capped by MaxWindowSize": {addr: capped,
			opts: []string{"windowsize", "1000", "timeout", "3"},
			want: map[string]string{"windowsize": "16", "timeout": "3"}},
		"unknown and invalid options left out": {addr: addr,
			opts: []string{"blksize", "4", "multicast", "", "tsize", "0"},
			want: map[string]string{"tsize": size}},
		"blksize capped by MaxBlockSize": {addr: capped, opts: []string{"blksize", "8192", "tsize", "0"},
			want: map[string]string{"blksize": "1024", "tsize": size}},
		"refusal is an ERROR, not an OACK": {addr: addr, opts: []string{"tsize", "0"}, wantErr: "access violation"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			file := "undionly.kpxe"
			if tc.wantErr != "" {
				file = "../secret.txt"
			}
			got, errMsg := rrq(t, tc.addr, file, tc.opts...)
			if errMsg != tc.wantErr {
				t.Errorf("error %q, want %q", errMsg, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("OACK options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServeConfigErrors(t *testing.T) {
	tests := map[string]*Server{
		"no root":      {},
		"missing root": {Root: filepath.Join(t.TempDir(), "nope")},
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			if err := s.Serve(context.Background()); !errors.Is(err, ErrConfig) {
				t.Errorf("Serve = %v, want ErrConfig", err)
			}
		})
	}
}

// TestSpecialFilesRefusedWithoutBlocking: a FIFO in the served directory
// used to hang its transfer in open(2) until a writer came; a device node
// was opened before it was refused. Both are refused at once now, and the
// server still serves regular files afterwards.
func TestSpecialFilesRefusedWithoutBlocking(t *testing.T) {
	root, content := testRoot(t, 1000)
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	names := []string{"fifo"}
	if err := syscall.Mknod(filepath.Join(root, "null"), syscall.S_IFCHR|0o644, 1<<8|3); err == nil {
		names = append(names, "null")
	} else {
		t.Logf("mknod (needs root): %v; testing the FIFO only", err)
	}
	addr := start(t, &Server{Root: root})
	for _, name := range names {
		if _, errMsg := rrq(t, addr, name); errMsg != "access violation" {
			t.Errorf("%s: error %q, want access violation", name, errMsg)
		}
	}
	got, _, err := fetch(addr, "undionly.kpxe", 512)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("after the refusals: %v", err)
	}
}

// TestTransfersCapped: with MaxTransfers 1, a client that asks for a file
// and never acknowledges holds the only slot; the next request is told the
// server is busy instead of taking another goroutine and socket.
func TestTransfersCapped(t *testing.T) {
	root, content := testRoot(t, 100000)
	addr := start(t, &Server{Root: root, MaxTransfers: 1})
	stall, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer stall.Close()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	must(t, err)
	_, err = stall.WriteTo(append([]byte{0, 1}, "undionly.kpxe\x00octet\x00"...), ua)
	must(t, err)
	// The first DATA block proves the transfer holds its slot.
	buf := make([]byte, 1024)
	_ = stall.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := stall.ReadFrom(buf)
	if err != nil || n < 4 || binary.BigEndian.Uint16(buf) != 3 {
		t.Fatalf("first transfer: no DATA block (%d bytes, %v)", n, err)
	}
	if _, errMsg := rrq(t, addr, "undionly.kpxe"); errMsg != ErrBusy.Error() {
		t.Fatalf("second transfer: error %q, want %q", errMsg, ErrBusy.Error())
	}
	// Once the stalled client gives up, the slot is free again.
	_, _ = stall.WriteTo([]byte{0, 5, 0, 0, 'b', 'y', 'e', 0}, ua)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _, err := fetch(addr, "undionly.kpxe", 1468)
		if err == nil && bytes.Equal(got, content) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %v", err)
		}
	}
}

// TestListenBindsToInterface: a socket bound to the boot interface does not
// hear a request that arrives on another one, even on 0.0.0.0.
func TestListenBindsToInterface(t *testing.T) {
	netns.Require(t, nil)
	ns := netns.New(t, "tftpif")
	ns.Run("ip", "link", "add", "boot0", "type", "veth", "peer", "name", "boot1")
	ns.Run("ip", "link", "set", "boot0", "up")
	ns.AddAddr("boot0", "192.0.2.1/24")
	err := ns.Do(func() error {
		ctx := context.Background()
		onBoot, err := listen(ctx, "0.0.0.0:0", "boot0")
		if err != nil {
			return err
		}
		defer onBoot.Close()
		onLo, err := listen(ctx, "0.0.0.0:0", "lo")
		if err != nil {
			return err
		}
		defer onLo.Close()
		client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer client.Close()
		port := func(c net.PacketConn) int { return c.LocalAddr().(*net.UDPAddr).Port }
		// Loopback delivers inside sendto: once onLo has its packet, a
		// packet for onBoot would be queued already.
		if _, err := client.WriteTo([]byte("to boot0"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port(onBoot)}); err != nil {
			return err
		}
		if _, err := client.WriteTo([]byte("to lo"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port(onLo)}); err != nil {
			return err
		}
		buf := make([]byte, 64)
		_ = onLo.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, _, err := onLo.ReadFrom(buf); err != nil {
			return fmt.Errorf("socket bound to lo: %w", err)
		}
		_ = onBoot.SetReadDeadline(time.Now())
		if n, _, err := onBoot.ReadFrom(buf); err == nil {
			return fmt.Errorf("socket bound to boot0 received %q from lo", buf[:n])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen(context.Background(), "127.0.0.1:0", "no-such-if0"); err == nil {
		t.Error("listen on a missing interface succeeded")
	}
}

// UEFI firmware (EDK2) reads a boot file's size first: a read request with
// tsize, then TFTP error 8 in answer to the OACK, then the real read. The
// probe is logged and counted as such, not as a failed transfer (an
// operator would chase a warning on every UEFI boot).
func TestSizeProbeIsNotAFailure(t *testing.T) {
	root, content := testRoot(t, 5000)
	var logBuf bytes.Buffer
	var mu sync.Mutex
	var got []Transfer
	done := make(chan struct{}, 2)
	addr := start(t, &Server{Root: root, Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logBuf, mu: &mu}, nil)),
		OnTransfer: func(tr Transfer) {
			mu.Lock()
			got = append(got, tr)
			mu.Unlock()
			done <- struct{}{}
		}})

	// The probe, as EDK2 sends it.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer c.Close()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	must(t, err)
	_, err = c.WriteTo([]byte("\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00"), ua)
	must(t, err)
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := c.ReadFrom(buf)
	must(t, err)
	if op := binary.BigEndian.Uint16(buf[:n]); op != 6 || !strings.Contains(string(buf[:n]), "tsize\x00"+strconv.Itoa(len(content))+"\x00") {
		t.Fatalf("answer to the probe %q, want an OACK with tsize %d", buf[:n], len(content))
	}
	_, err = c.WriteTo([]byte("\x00\x05\x00\x08User aborted the transfer\x00"), from)
	must(t, err)
	<-done

	// The real read that follows.
	data, _, err := fetch(addr, "undionly.kpxe", 1468)
	must(t, err)
	if !bytes.Equal(data, content) {
		t.Fatal("second read: wrong content")
	}
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !errors.Is(got[0].Err, ErrSizeProbe) || got[0].Bytes != 0 || got[1].Err != nil || got[1].Bytes != int64(len(content)) {
		t.Fatalf("transfers %+v: want a size probe, then the file", got)
	}
	logs := logBuf.String()
	if !strings.Contains(logs, "result=size_probe") || strings.Contains(logs, "level=WARN") {
		t.Errorf("log:\n%s\nwant the probe logged as result=size_probe, no warning", logs)
	}
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
