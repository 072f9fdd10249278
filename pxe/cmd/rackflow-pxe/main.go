// Command rackflow-pxe runs rackflow's PXE boot service: the lease API the
// worker writes to, the HTTP boot routes (iPXE scripts, kernel and initrd,
// one-time host keys) booting hosts read, and, when configured, the DHCP
// server (dhcp-interface set) that answers registered MACs and the TFTP
// server (tftp-root set) that hands PXE ROMs the iPXE binaries. Without
// those two settings it serves HTTP only, which is what a laptop needs.
//
// Settings come from, lowest precedence first: defaults, a YAML file
// (-config or RACKFLOW_PXE_CONFIG), RACKFLOW_PXE_* environment variables,
// flags. Run with -h for the list. The lease API's token comes from a file
// readable by its owner only (token-file) or RACKFLOW_PXE_TOKEN, never from
// a flag (ps shows those) or the YAML file.
//
// The lease API and /metrics listen on api-addr, the boot routes on
// boot-addr: put api-addr on the management network (with tls-cert and
// tls-key) and boot-addr on the boot network. Without boot-addr, api-addr
// serves every route, as before boot-addr existed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe"
	"github.com/rackflow/rackflow/pxe/dhcp"
	"github.com/rackflow/rackflow/pxe/tftp"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	switch {
	case err == nil, errors.Is(err, context.Canceled):
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("rackflow-pxe failed", "error", err.Error())
		os.Exit(1)
	}
}

// config holds every setting; all are strings so flags, environment and
// YAML share one table.
type config struct {
	APIAddr       string `yaml:"api_addr"`
	BootAddr      string `yaml:"boot_addr"`
	TLSCert       string `yaml:"tls_cert"`
	TLSKey        string `yaml:"tls_key"`
	MaxConns      string `yaml:"max_conns"`
	TokenFile     string `yaml:"token_file"`
	StateFile     string `yaml:"state_file"`
	BootDir       string `yaml:"boot_dir"`
	PublicURL     string `yaml:"public_url"`
	Kernel        string `yaml:"kernel"`
	Initrd        string `yaml:"initrd"`
	Cmdline       string `yaml:"cmdline"`
	PruneInterval string `yaml:"prune_interval"`
	LogLevel      string `yaml:"log_level"`

	DHCPInterface     string `yaml:"dhcp_interface"`
	DHCPAddr          string `yaml:"dhcp_addr"`
	DHCPServerIP      string `yaml:"dhcp_server_ip"`
	DHCPLeaseTime     string `yaml:"dhcp_lease_time"`
	DHCPProxy         string `yaml:"dhcp_proxy"`
	DHCPProxyAddr     string `yaml:"dhcp_proxy_addr"`
	DHCPRelays        string `yaml:"dhcp_relays"`
	BootFileBIOS      string `yaml:"boot_file_bios"`
	BootFileUEFI      string `yaml:"boot_file_uefi"`
	BootFileUEFIARM64 string `yaml:"boot_file_uefi_arm64"`
	BootFileHTTP      string `yaml:"boot_file_http"`
	IPXEScriptURL     string `yaml:"ipxe_script_url"`
	TFTPRoot          string `yaml:"tftp_root"`
	TFTPAddr          string `yaml:"tftp_addr"`
	TFTPInterface     string `yaml:"tftp_interface"`
	TFTPMaxTransfers  string `yaml:"tftp_max_transfers"`

	// Token is the lease API's bearer token, from RACKFLOW_PXE_TOKEN or
	// TokenFile.
	Token string `yaml:"-"`
	// YAMLToken is a "token:" key of the YAML file, which is refused: a
	// config file is rarely kept secret.
	YAMLToken string `yaml:"token"`
}

type setting struct {
	flag, usage string
	ptr         *string
}

func (c *config) settings() []setting {
	return []setting{
		{"api-addr", "listen address of the lease API and /metrics (management network), and of the boot routes too when boot-addr is empty", &c.APIAddr},
		{"boot-addr", `listen address of the boot routes (/boot/, /v1/hostkeys/, /files/) on the boot network, e.g. "10.0.0.2:8080"; empty: api-addr serves them`, &c.BootAddr},
		{"tls-cert", "PEM certificate (chain) of api-addr, which then speaks HTTPS; with tls-key", &c.TLSCert},
		{"tls-key", "PEM private key of tls-cert", &c.TLSKey},
		{"max-conns", "open connections per listener at most; more wait to be accepted (default 1024)", &c.MaxConns},
		{"token-file", "file holding the lease API's bearer token, mode 0600 (or the token itself in RACKFLOW_PXE_TOKEN)", &c.TokenFile},
		{"state-file", "JSON file the leases persist to (mode 0600)", &c.StateFile},
		{"boot-dir", "directory served under /files/ (kernel, initrd)", &c.BootDir},
		{"public-url", `how booting hosts reach this service, e.g. "http://10.0.0.2:8080"`, &c.PublicURL},
		{"kernel", "live kernel's file name in boot-dir", &c.Kernel},
		{"initrd", "live initrd's file name in boot-dir", &c.Initrd},
		{"cmdline", `extra live kernel arguments, e.g. "console=ttyS0,115200"`, &c.Cmdline},
		{"prune-interval", "how often expired leases are dropped", &c.PruneInterval},
		{"log-level", "debug, info, warn or error", &c.LogLevel},
		{"dhcp-interface", `interface the DHCP server binds to, e.g. "br-mgmt"; empty disables DHCP`, &c.DHCPInterface},
		{"dhcp-addr", `UDP listen address of the DHCP server (default "0.0.0.0:67")`, &c.DHCPAddr},
		{"dhcp-server-ip", "this server's IPv4 address on the DHCP segment (default: dhcp-interface's first IPv4 address)", &c.DHCPServerIP},
		{"dhcp-lease-time", "DHCP lease time offered", &c.DHCPLeaseTime},
		{"dhcp-proxy", "true: run as proxyDHCP beside another DHCP server (boot info only, no addresses)", &c.DHCPProxy},
		{"dhcp-proxy-addr", `UDP listen address of the proxyDHCP boot-server port (default "0.0.0.0:4011")`, &c.DHCPProxyAddr},
		{"dhcp-relays", "comma-separated IPv4 addresses of the DHCP relay agents (giaddr) to answer; others are ignored (default: none)", &c.DHCPRelays},
		{"boot-file-bios", `TFTP file for legacy BIOS PXE ROMs (default "undionly.kpxe")`, &c.BootFileBIOS},
		{"boot-file-uefi", `TFTP file for x86 UEFI PXE (default "ipxe.efi")`, &c.BootFileUEFI},
		{"boot-file-uefi-arm64", "TFTP file for ARM64 UEFI PXE (default: none)", &c.BootFileUEFIARM64},
		{"boot-file-http", `iPXE URL for UEFI HTTP boot clients, e.g. "http://10.0.0.2:8080/files/ipxe.efi" (default: none)`, &c.BootFileHTTP},
		{"ipxe-script-url", `boot script URL given to iPXE clients, "{mac}" replaced by the MAC (default "<public-url>/boot/{mac}.ipxe")`, &c.IPXEScriptURL},
		{"tftp-root", "directory the TFTP server serves (iPXE binaries); empty disables TFTP", &c.TFTPRoot},
		{"tftp-addr", `UDP listen address of the TFTP server (default "0.0.0.0:69")`, &c.TFTPAddr},
		{"tftp-interface", "interface the TFTP server binds to (default: dhcp-interface), so no other network reaches it", &c.TFTPInterface},
		{"tftp-max-transfers", "TFTP transfers in flight at most; more are told the server is busy (default 256)", &c.TFTPMaxTransfers},
	}
}

func envName(flagName string) string {
	return "RACKFLOW_PXE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

var errUsage = errors.New("usage")

// loadConfig merges defaults, the YAML file, the environment and the flags.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	if err := refuseTokenFlag(args); err != nil {
		return config{}, err
	}
	cfg := config{
		APIAddr:       pxe.DefaultAddr,
		MaxConns:      strconv.Itoa(pxe.DefaultMaxConns),
		StateFile:     "/var/lib/rackflow-pxe/leases.json",
		Kernel:        "vmlinuz",
		Initrd:        "initrd.img",
		PruneInterval: "1m",
		LogLevel:      "info",
		DHCPLeaseTime: "1h",
		DHCPProxy:     "false",
	}
	var flagVals config
	fs := flag.NewFlagSet("rackflow-pxe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file (env RACKFLOW_PXE_CONFIG)")
	for _, s := range flagVals.settings() {
		fs.StringVar(s.ptr, s.flag, "", fmt.Sprintf("%s (env %s)", s.usage, envName(s.flag)))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}

	path := *configPath
	if path == "" {
		path = getenv("RACKFLOW_PXE_CONFIG")
	}
	if path != "" {
		if err := api.DecodeFile(path, &cfg); err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cur, fromFlags := cfg.settings(), flagVals.settings()
	for i, s := range cur {
		if v := getenv(envName(s.flag)); v != "" {
			*s.ptr = v
		}
		if set[s.flag] {
			*s.ptr = *fromFlags[i].ptr
		}
	}

	if cfg.YAMLToken != "" {
		return cfg, errors.New("config: the YAML key token is no longer read (a config file is rarely secret): put the token in a file of mode 0600 named by token_file, or in RACKFLOW_PXE_TOKEN")
	}
	if v := getenv("RACKFLOW_PXE_TOKEN"); v != "" {
		if cfg.Token = strings.TrimSpace(v); cfg.Token == "" {
			return cfg, errors.New("config: RACKFLOW_PXE_TOKEN holds only blanks")
		}
	} else if cfg.TokenFile != "" {
		tok, err := readTokenFile(cfg.TokenFile)
		if err != nil {
			return cfg, err
		}
		cfg.Token = tok
	}
	if cfg.Token == "" {
		return cfg, errors.New("config: a token is required: token-file (RACKFLOW_PXE_TOKEN_FILE) naming a file of mode 0600, or RACKFLOW_PXE_TOKEN")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return cfg, errors.New("config: tls-cert and tls-key go together")
	}
	if cfg.BootAddr != "" && cfg.BootAddr == cfg.APIAddr {
		return cfg, fmt.Errorf("config: boot-addr and api-addr are both %s: give the boot routes their own address, or leave boot-addr empty", cfg.BootAddr)
	}
	if n, err := strconv.Atoi(cfg.MaxConns); err != nil || n < 1 {
		return cfg, fmt.Errorf("config: max-conns %q: want a whole number above 0", cfg.MaxConns)
	}
	if cfg.StateFile == "" {
		return cfg, errors.New("config: state-file is required")
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(cfg.PublicURL, " \t\n") {
			return cfg, fmt.Errorf("config: public-url %q is not an http(s) URL", cfg.PublicURL)
		}
	}
	if d, err := time.ParseDuration(cfg.PruneInterval); err != nil || d <= 0 {
		return cfg, fmt.Errorf("config: prune-interval %q is not a positive duration", cfg.PruneInterval)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return cfg, fmt.Errorf("config: log-level %q: %w", cfg.LogLevel, err)
	}
	if err := cfg.checkDHCP(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// refuseTokenFlag stops a command line that still passes -token: a token
// on the command line shows in ps to every user of the machine.
func refuseTokenFlag(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "token" {
			return fmt.Errorf("%w: -token is gone (ps shows the command line to every user): use -token-file with a file of mode 0600, or RACKFLOW_PXE_TOKEN", errUsage)
		}
	}
	return nil
}

// readTokenFile reads the token from path, which only its owner may read.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config: read token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("config: read token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("config: token file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("config: token file %s is mode %04o, readable by group or others: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("config: read token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("config: token file %s is empty", path)
	}
	return tok, nil
}

// checkDHCP checks the DHCP settings and fills ipxe-script-url's default.
// They are checked only when DHCP is enabled.
func (c *config) checkDHCP() error {
	if c.DHCPInterface == "" {
		return nil
	}
	if d, err := time.ParseDuration(c.DHCPLeaseTime); err != nil || d < time.Minute {
		return fmt.Errorf("config: dhcp-lease-time %q is not a duration of at least 1m", c.DHCPLeaseTime)
	}
	if _, err := strconv.ParseBool(c.DHCPProxy); err != nil {
		return fmt.Errorf("config: dhcp-proxy %q is not true or false", c.DHCPProxy)
	}
	if c.DHCPServerIP != "" {
		if ip := net.ParseIP(c.DHCPServerIP); ip.To4() == nil || ip.IsUnspecified() || strings.Contains(c.DHCPServerIP, ":") {
			return fmt.Errorf("config: dhcp-server-ip %q is not an IPv4 address", c.DHCPServerIP)
		}
	}
	if c.IPXEScriptURL == "" {
		if c.PublicURL == "" {
			return errors.New("config: dhcp-interface is set but iPXE would get no script: set public-url (or ipxe-script-url)")
		}
		c.IPXEScriptURL = strings.TrimSuffix(c.PublicURL, "/") + "/boot/{mac}.ipxe"
	}
	for _, u := range []struct{ name, val string }{{"ipxe-script-url", c.IPXEScriptURL}, {"boot-file-http", c.BootFileHTTP}} {
		if u.val == "" {
			continue
		}
		p, err := url.Parse(u.val)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || strings.ContainsAny(u.val, " \t\n") {
			return fmt.Errorf("config: %s %q is not an http(s) URL", u.name, u.val)
		}
	}
	return nil
}

// serverIP is the DHCP server identifier: dhcp-server-ip, or else the
// first IPv4 address of dhcp-interface.
func (c *config) serverIP() (net.IP, error) {
	if c.DHCPServerIP != "" {
		return net.ParseIP(c.DHCPServerIP).To4(), nil
	}
	ifi, err := net.InterfaceByName(c.DHCPInterface)
	if err != nil {
		return nil, fmt.Errorf("dhcp-interface %q: %w", c.DHCPInterface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of dhcp-interface %q: %w", c.DHCPInterface, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("dhcp-interface %q has no IPv4 address: set dhcp-server-ip", c.DHCPInterface)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	store, err := pxe.OpenStore(pxe.StoreConfig{Path: cfg.StateFile})
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("lease store loaded", "path", cfg.StateFile, "leases", store.Len())
	if cfg.PublicURL == "" {
		log.Warn("public-url not set: iPXE URLs follow each request's Host header")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.BootAddr == "" {
		log.Warn("boot-addr not set: api-addr serves the lease API and the boot routes alike; keep it off the boot network or set boot-addr", "api_addr", cfg.APIAddr)
	}
	maxConns, _ := strconv.Atoi(cfg.MaxConns)
	// What each leased MAC's boot fetched, for GET /v1/leases/{mac}/timeline.
	timeline := &pxe.Timeline{Leases: store}
	api := &pxe.APIServer{
		Addr:        cfg.APIAddr,
		BootAddr:    cfg.BootAddr,
		TLSCertFile: cfg.TLSCert,
		TLSKeyFile:  cfg.TLSKey,
		MaxConns:    maxConns,
		Token:       cfg.Token,
		Store:       store,
		Logger:      log.With("server", "http"),
		PublicURL:   cfg.PublicURL,
		BootDir:     cfg.BootDir,
		Kernel:      cfg.Kernel,
		Initrd:      cfg.Initrd,
		Cmdline:     cfg.Cmdline,
		Registry:    reg,
		Timeline:    timeline,
	}
	prune, _ := time.ParseDuration(cfg.PruneInterval)
	dhcpSrv, err := newDHCPServer(cfg, store, log.With("server", "dhcp"), reg)
	if err != nil {
		return err
	}
	if dhcpSrv != nil {
		dhcpSrv.OnAnswer = timeline.OnDHCPAnswer
	}
	var tftpSrv *tftp.Server
	if cfg.TFTPRoot != "" {
		iface := cfg.TFTPInterface
		if iface == "" {
			iface = cfg.DHCPInterface
		}
		maxT := 0
		if cfg.TFTPMaxTransfers != "" {
			if maxT, err = strconv.Atoi(cfg.TFTPMaxTransfers); err != nil || maxT < 1 {
				return fmt.Errorf("tftp-max-transfers %q: want a whole number above 0", cfg.TFTPMaxTransfers)
			}
		}
		tftpSrv = &tftp.Server{
			Root:         cfg.TFTPRoot,
			ListenAddr:   cfg.TFTPAddr,
			Interface:    iface,
			MaxTransfers: maxT,
			Logger:       log.With("server", "tftp"),
			Registerer:   reg,
			OnTransfer:   timeline.OnTFTPTransfer,
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return api.Serve(gctx) })
	g.Go(func() error { return pruneLoop(gctx, store, prune, log) })
	if dhcpSrv != nil {
		g.Go(func() error { return dhcpSrv.Serve(gctx) })
	} else {
		log.Info("dhcp disabled: dhcp-interface not set")
	}
	if tftpSrv != nil {
		g.Go(func() error { return tftpSrv.Serve(gctx) })
	} else {
		log.Info("tftp disabled: tftp-root not set")
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("rackflow-pxe stopped")
	return err
}

// newDHCPServer returns the configured DHCP server, or nil when DHCP is
// disabled.
func newDHCPServer(cfg config, store *pxe.Store, log *slog.Logger, reg prometheus.Registerer) (*dhcp.Server, error) {
	if cfg.DHCPInterface == "" {
		return nil, nil
	}
	ip, err := cfg.serverIP()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	leaseTime, _ := time.ParseDuration(cfg.DHCPLeaseTime)
	proxy, _ := strconv.ParseBool(cfg.DHCPProxy)
	var relays []net.IP
	for _, f := range strings.FieldsFunc(cfg.DHCPRelays, func(r rune) bool { return r == ',' || r == ' ' }) {
		ip := net.ParseIP(f).To4()
		if ip == nil {
			return nil, fmt.Errorf("config: dhcp-relays: %q is not an IPv4 address", f)
		}
		relays = append(relays, ip)
	}
	return &dhcp.Server{
		Relays:          relays,
		Interface:       cfg.DHCPInterface,
		ListenAddr:      cfg.DHCPAddr,
		ServerIP:        ip,
		Backend:         pxe.DHCPBackend{Leases: store},
		LeaseTime:       leaseTime,
		IPXEScriptURL:   cfg.IPXEScriptURL,
		ProxyDHCP:       proxy,
		ProxyListenAddr: cfg.DHCPProxyAddr,
		BootFiles: dhcp.BootFiles{
			BIOS:      cfg.BootFileBIOS,
			UEFI:      cfg.BootFileUEFI,
			UEFIARM64: cfg.BootFileUEFIARM64,
			HTTP:      cfg.BootFileHTTP,
		},
		Logger:     log,
		Registerer: reg,
	}, nil
}

// pruneLoop drops expired leases (and their unfetched keys) from disk.
func pruneLoop(ctx context.Context, store *pxe.Store, every time.Duration, log *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			n, err := store.Prune(ctx)
			if err != nil {
				// Not fatal: expired leases are already not served.
				log.Error("prune leases", "error", err.Error())
			} else if n > 0 {
				log.Info("pruned expired leases", "count", n)
			}
		}
	}
}
