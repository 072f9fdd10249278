package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/rackflow/rackflow/pxe/tftp/tftptest"
)

// TestWindowSize reads files with RFC 7440 windows, including windows that
// do not divide the file and a file whose size is a multiple of blksize
// (the last block is empty).
func TestWindowSize(t *testing.T) {
	root, content := testRoot(t, 1468*40)
	addr := start(t, &Server{Root: root})
	tests := map[string]struct {
		blksize, window int
		wantWindow      int
	}{
		"window 4, blksize 1468":    {blksize: 1468, window: 4, wantWindow: 4},
		"window 7 does not divide":  {blksize: 1468, window: 7, wantWindow: 7},
		"window 16, blksize 512":    {blksize: 512, window: 16, wantWindow: 16},
		"window 1 is lock-step":     {blksize: 1468, window: 1, wantWindow: 1},
		"window above the cap":      {blksize: 1468, window: 5000, wantWindow: DefaultMaxWindowSize},
		"window larger than a file": {blksize: 8192, window: 64, wantWindow: 64},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			c := &tftptest.Client{BlockSize: tc.blksize, WindowSize: tc.window}
			res, err := c.Get(addr, "undionly.kpxe", &buf)
			if err != nil {
				t.Fatal(err)
			}
			if res.WindowSize != tc.wantWindow || res.BlockSize != tc.blksize {
				t.Errorf("negotiated blksize %d windowsize %d, want %d and %d", res.BlockSize, res.WindowSize, tc.blksize, tc.wantWindow)
			}
			if !bytes.Equal(buf.Bytes(), content) {
				t.Errorf("got %d bytes, want the %d on disk", buf.Len(), len(content))
			}
		})
	}
}

// TestWindowLostACK: ACKs lost mid-transfer (the server times out and
// resends the whole window) and a block lost mid-window (the client ACKs
// the last block it has and the server resends from the next one).
func TestWindowLostACK(t *testing.T) {
	root, content := testRoot(t, 512*100+3)
	addr := start(t, &Server{Root: root})

	t.Run("dropped ACK", func(t *testing.T) {
		var mu sync.Mutex
		dropped := map[int64]bool{}
		c := &tftptest.Client{BlockSize: 512, WindowSize: 8, Timeout: 3 * time.Second, DropACK: func(b int64) bool {
			mu.Lock()
			defer mu.Unlock()
			// Drop the first ACK of blocks 16 and 40, once each.
			if (b == 16 || b == 40) && !dropped[b] {
				dropped[b] = true
				return true
			}
			return false
		}}
		var buf bytes.Buffer
		start := time.Now()
		if _, err := c.Get(addr, "undionly.kpxe", &buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), content) {
			t.Fatalf("got %d bytes, want %d", buf.Len(), len(content))
		}
		if len(dropped) != 2 {
			t.Fatalf("dropped ACKs %v: the client never reached them", dropped)
		}
		// The server's ACK timeout is 1s (start); two of them elapsed.
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("transfer took %s: the dropped ACKs were not waited out", d)
		}
	})

	t.Run("lost block mid-window", func(t *testing.T) {
		// A raw client: take the window, pretend block 5 of 8 never
		// came (ACK 4), and expect blocks 5.. again.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		must(t, err)
		defer c.Close()
		ua, err := net.ResolveUDPAddr("udp4", addr)
		must(t, err)
		_, err = c.WriteTo([]byte("\x00\x01undionly.kpxe\x00octet\x00windowsize\x008\x00"), ua)
		must(t, err)
		buf := make([]byte, 2048)
		read := func() (uint16, uint16, *net.UDPAddr) {
			t.Helper()
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := c.ReadFromUDP(buf)
			must(t, err)
			if n < 4 {
				t.Fatalf("short packet %q", buf[:n])
			}
			return binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:]), from
		}
		op, _, from := read()
		if op != opOACK {
			t.Fatalf("opcode %d, want OACK", op)
		}
		_, _ = c.WriteTo([]byte{0, opACK, 0, 0}, from)
		for want := uint16(1); want <= 8; want++ {
			if op, b, _ := read(); op != opDATA || b != want {
				t.Fatalf("got opcode %d block %d, want DATA %d", op, b, want)
			}
		}
		_, _ = c.WriteTo([]byte{0, opACK, 0, 4}, from)
		for want := uint16(5); want <= 12; want++ {
			op, b, _ := read()
			if op != opDATA || b != want {
				t.Fatalf("after ACK 4: opcode %d block %d, want DATA %d", op, b, want)
			}
			if !bytes.Equal(buf[4:4+512], content[int(want-1)*512:int(want)*512]) {
				t.Fatalf("block %d: wrong data", want)
			}
		}
		_, _ = c.WriteTo([]byte{0, opERROR, 0, 0, 'b', 'y', 'e', 0}, from)
	})
}

// TestBlockRollover: a file of more than 65535 blocks at blksize 512
// (~33 MiB) needs block numbers past 65535; they roll over to 0 as curl,
// iPXE and tftp-hpa expect. Both lock-step (pin/tftp's client) and a
// window that straddles the rollover.
func TestBlockRollover(t *testing.T) {
	if testing.Short() {
		t.Skip("33 MiB transfers: skipped with -short")
	}
	dir := t.TempDir()
	content := make([]byte, 512*70000+100)
	for i := range content {
		content[i] = byte(i * 7)
	}
	must(t, os.WriteFile(filepath.Join(dir, "big"), content, 0o644))
	addr := start(t, &Server{Root: dir})
	want := sha256.Sum256(content)

	t.Run("lock-step", func(t *testing.T) {
		got, _, err := fetch(addr, "big", 512)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != want {
			t.Fatalf("got %d bytes, not the file", len(got))
		}
	})
	t.Run("window 12", func(t *testing.T) {
		var buf bytes.Buffer
		// Drop an ACK right at the rollover: the resent window's numbers
		// wrap too.
		dropped := false
		c := &tftptest.Client{BlockSize: 512, WindowSize: 12, Timeout: 3 * time.Second, DropACK: func(b int64) bool {
			if b >= 65530 && !dropped {
				dropped = true
				return true
			}
			return false
		}}
		if _, err := c.Get(addr, "big", &buf); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(buf.Bytes()) != want {
			t.Fatalf("got %d bytes, not the file", buf.Len())
		}
		if !dropped {
			t.Fatal("no ACK dropped at the rollover")
		}
	})
}

// TestClientVanishes: a client that stops acknowledging is retried
// Retries times, then given up; the transfer is recorded as failed and its
// slot is free for the next client.
func TestClientVanishes(t *testing.T) {
	root, content := testRoot(t, 512*50)
	done := make(chan Transfer, 4)
	addr := start(t, &Server{Root: root, MaxTransfers: 1, OnTransfer: func(tr Transfer) { done <- tr }})
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	ua, err := net.ResolveUDPAddr("udp4", addr)
	must(t, err)
	_, err = c.WriteTo([]byte("\x00\x01undionly.kpxe\x00octet\x00windowsize\x004\x00"), ua)
	must(t, err)
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, from, err := c.ReadFrom(buf)
	must(t, err)
	_, _ = c.WriteTo([]byte{0, opACK, 0, 0}, from) // accept the OACK, then vanish
	// Count the resends of the first window: start sets Timeout 1s,
	// Retries 2: the window, then 2 resends.
	sends := 0
	for {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		if binary.BigEndian.Uint16(buf[:n]) == opDATA && binary.BigEndian.Uint16(buf[2:n]) == 1 {
			sends++
		}
	}
	c.Close()
	if sends != 3 {
		t.Errorf("block 1 sent %d times, want 3 (once, then Retries=2 resends)", sends)
	}
	select {
	case tr := <-done:
		if tr.Err == nil || !errors.Is(tr.Err, errGaveUp) || tr.Bytes != 0 {
			t.Errorf("transfer %+v: want failed with errGaveUp, 0 bytes", tr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("transfer not given up")
	}
	got, _, err := fetch(addr, "undionly.kpxe", 512)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("next client: %v", err)
	}
}

// TestShutdownEndsTransfers: cancelling Serve while a client is stalled
// ends its transfer at the next timeout instead of after all retries.
func TestShutdownEndsTransfers(t *testing.T) {
	root, _ := testRoot(t, 512*50)
	c0, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	s := &Server{Root: root, Conn: c0, Timeout: time.Second, Retries: 100}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer c.Close()
	_, err = c.WriteTo([]byte("\x00\x01undionly.kpxe\x00octet\x00"), c0.LocalAddr())
	must(t, err)
	buf := make([]byte, 1024)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, _, err = c.ReadFrom(buf)
	must(t, err)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still waiting for a stalled transfer 5s after cancel")
	}
}

// BenchmarkTFTPRead: one 4 MiB file per iteration over loopback,
// lock-step with pin/tftp's client and with curl (as PXE ROMs read), and
// with windowsize 16; each on blocking sockets and on Go's netpoller
// (blockingIO). Run with -cpuprofile/-memprofile to see the send loop.
func BenchmarkTFTPRead(b *testing.B) {
	dir := b.TempDir()
	content := make([]byte, 4<<20)
	if err := os.WriteFile(filepath.Join(dir, "f"), content, 0o644); err != nil {
		b.Fatal(err)
	}
	c0, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	enablePktinfo(c0)
	s := &Server{Root: dir, Conn: c0}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Serve(ctx) }()
	addr := c0.LocalAddr().String()
	_, curlErr := exec.LookPath("curl")
	defer func(v bool) { blockingIO = v }(blockingIO)
	for _, blocking := range []bool{true, false} {
		blockingIO = blocking
		io := map[bool]string{true: "blocking", false: "netpoll"}[blocking]
		for _, blk := range []int{512, 1468} {
			b.Run(io+"/lockstep/"+strconv.Itoa(blk), func(b *testing.B) {
				b.SetBytes(int64(len(content)))
				for range b.N {
					cl, err := tftp.NewClient(addr)
					if err != nil {
						b.Fatal(err)
					}
					cl.SetBlockSize(blk)
					wt, err := cl.Receive("f", "octet")
					if err != nil {
						b.Fatal(err)
					}
					if n, err := wt.WriteTo(discard{}); err != nil || n != int64(len(content)) {
						b.Fatalf("%d bytes, %v", n, err)
					}
				}
			})
			if curlErr == nil {
				b.Run(io+"/curl/"+strconv.Itoa(blk), func(b *testing.B) {
					b.SetBytes(int64(len(content)))
					// The server's CPU time (this process; curl is another).
					var ru0, ru1 syscall.Rusage
					_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
					defer func() {
						_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
						cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
						b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "server-cpu-ms/op")
					}()
					for range b.N {
						out, err := exec.Command("curl", "-sS", "-o", "/dev/null", "--tftp-blksize", strconv.Itoa(blk), "tftp://"+addr+"/f").CombinedOutput()
						if err != nil {
							b.Fatalf("curl: %v: %s", err, out)
						}
					}
				})
			}
			b.Run(io+"/window16/"+strconv.Itoa(blk), func(b *testing.B) {
				b.SetBytes(int64(len(content)))
				for range b.N {
					c := &tftptest.Client{BlockSize: blk, WindowSize: 16}
					if res, err := c.Get(addr, "f", discard{}); err != nil || res.Bytes != int64(len(content)) {
						b.Fatalf("%d bytes, %v", res.Bytes, err)
					}
				}
			})
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
