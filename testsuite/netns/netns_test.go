package netns

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	Main(map[string]func() error{
		"echo": func() error {
			// A UDP echo server on 10.77.0.1:7 that reports the namespace's
			// interfaces, proving it runs inside the lab.
			c, err := net.ListenPacket("udp4", "10.77.0.1:7")
			if err != nil {
				return err
			}
			Ready()
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return err
				}
				ifs, _ := net.Interfaces()
				var names []string
				for _, i := range ifs {
					names = append(names, i.Name)
				}
				reply := string(buf[:n]) + " from " + strings.Join(names, ",")
				if _, err := c.WriteTo([]byte(reply), from); err != nil {
					return err
				}
			}
		},
	})
	os.Exit(m.Run())
}

func TestLabTwoNamespaces(t *testing.T) {
	Require(t, nil)
	srv := New(t, "srv")
	cli := New(t, "cli")
	Veth(t, srv, "port0", cli, "eth0")
	srv.Bridge("br0", "port0")
	srv.AddAddr("br0", "10.77.0.1/24")
	cli.SetMAC("eth0", "52:54:00:77:00:02")
	cli.AddAddr("eth0", "10.77.0.2/24")

	if out := cli.Run("ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "52:54:00:77:00:02") {
		t.Errorf("client MAC not set: %s", out)
	}
	// The host namespace has none of the lab's interfaces.
	if _, err := net.InterfaceByName("port0"); err == nil {
		t.Error("veth end port0 visible in the host namespace")
	}

	srv.Helper("echo")

	var conn net.PacketConn
	if err := cli.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "10.77.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteTo([]byte("ping"), &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1), Port: 7}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no echo across the veth: %v", err)
	}
	if got := string(buf[:n]); !strings.HasPrefix(got, "ping from ") || !strings.Contains(got, "br0") {
		t.Errorf("echo %q, want it from the server namespace (with br0)", got)
	}

}

func TestLabCleanup(t *testing.T) {
	Require(t, nil)
	var name string
	var pid int
	t.Run("lab", func(t *testing.T) {
		n := New(t, "gone")
		name = n.Name
		p := n.Start("sleep", "600")
		pid = p.Cmd.Process.Pid
	})
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d started in the lab still runs after cleanup", pid)
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still exists after its test ended (stat: %v)", name, err)
	}
}
