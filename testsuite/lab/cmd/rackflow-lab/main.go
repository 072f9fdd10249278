// Command rackflow-lab runs the lab of `make run`: a bare-metal stand-in on
// loopback (testsuite/lab) whose BMC is OpenIPMI's ipmi_sim, and the strict
// fake NetScaler of testsuite/nitrofake for publishing. It writes the
// host's inventory and secrets into its directory for the worker, creates
// DIR/ready when the BMC answers, and runs until interrupted. It is for
// trying rackflow on one machine, never for production.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rackflow/rackflow/testsuite/ipmisim"
	"github.com/rackflow/rackflow/testsuite/lab"
	"github.com/rackflow/rackflow/testsuite/nitrofake"
)

func main() {
	if err := run(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "rackflow-lab:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".run/lab", "lab directory (recreated)")
	pxeURL := flag.String("pxe-url", "http://127.0.0.1:8080", "public URL of the pxe service")
	host := flag.String("host", "lab01", "host name")
	imageMiB := flag.Int("image-mib", 256, "size of the lab image in MiB")
	nsAddr := flag.String("netscaler-addr", "127.0.0.1:9080", "where the lab's fake NetScaler (NITRO over HTTP) listens; empty for none")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(abs); err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	l, err := lab.Prepare(lab.Options{Dir: abs, Host: *host, PXEURL: *pxeURL, ImageSize: int64(*imageMiB) << 20})
	if err != nil {
		return fmt.Errorf("prepare lab: %w", err)
	}
	defer l.StopMachine()
	sim, err := ipmisim.Run(ctx, filepath.Join(abs, "bmc"), ipmisim.Options{
		Username: l.BMCUser, Password: l.BMCPassword, OnPower: l.HookPath,
	})
	if err != nil {
		return fmt.Errorf("start ipmi_sim: %w", err)
	}
	defer sim.Close()
	if err := l.SetBMCPort(sim.Port()); err != nil {
		return err
	}
	if *nsAddr != "" {
		ln, err := net.Listen("tcp", *nsAddr)
		if err != nil {
			return fmt.Errorf("fake netscaler: %w", err)
		}
		ns := nitrofake.New(nitrofake.Options{Username: l.NetScalerUser, Password: l.NetScalerPassword})
		srv := &http.Server{Handler: ns, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("fake netscaler listening", "url", "http://"+ln.Addr().String(), "credential", "netscaler/lab")
	}
	if err := os.WriteFile(filepath.Join(abs, "ready"), []byte(l.InventoryPath+"\n"), 0o644); err != nil {
		return err
	}
	log.Info("lab ready", "host", *host, "bmc", fmt.Sprintf("127.0.0.1:%d", sim.Port()),
		"inventory", l.InventoryPath, "secrets", l.SecretsPath, "disk", l.DiskPath, "machine_log", l.MachineLog)
	<-ctx.Done()
	log.Info("lab stopping")
	return nil
}
