package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// PostgresOptions configure a private PostgreSQL instance.
type PostgresOptions struct {
	// Dir holds the instance: Dir/data (the cluster), Dir/password (the
	// superuser's password), Dir/postgres.log. It is created when missing
	// and reused when it holds an initialised cluster.
	Dir string
	// Port on 127.0.0.1; 0 picks a free one. A reused cluster keeps the
	// port it was started with last time unless Port is set.
	Port int
	// BinDir holds initdb and pg_ctl; empty means $RACKFLOW_PG_BIN or the
	// newest /usr/lib/postgresql/*/bin (Debian's layout).
	BinDir string
}

// Postgres is a running private PostgreSQL instance. Its only role is the
// superuser User, reached over TCP on 127.0.0.1 with a password; the Unix
// socket lives inside the data directory, which only its owner can enter.
type Postgres struct {
	opts     PostgresOptions
	password string
	cred     *syscall.Credential // run as the postgres user when we are root
}

// User is the database superuser's name.
const User = "temporal"

// StartPostgres initialises the instance when Dir is new, then starts it
// and waits until it accepts connections.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.BinDir == "" {
		dir, err := PostgresBinDir()
		if err != nil {
			return nil, err
		}
		opts.BinDir = dir
	}
	p := &Postgres{opts: opts}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the instance belongs to Debian's
		// postgres user, as the packaged clusters do.
		cred, err := postgresCredential()
		if err != nil {
			return nil, err
		}
		p.cred = cred
	}
	if err := p.init(ctx); err != nil {
		return nil, err
	}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// PostgresBinDir finds initdb and pg_ctl.
func PostgresBinDir() (string, error) {
	if d := os.Getenv("RACKFLOW_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server not found in /usr/lib/postgresql/*/bin: install Debian's postgresql (make deps) or set RACKFLOW_PG_BIN")
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres user (Debian's postgresql package creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// DataDir is the cluster's data directory.
func (p *Postgres) DataDir() string { return filepath.Join(p.opts.Dir, "data") }

// Addr is host:port on 127.0.0.1.
func (p *Postgres) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.opts.Port) }

// Port is the TCP port.
func (p *Postgres) Port() int { return p.opts.Port }

// Password is the superuser's password.
func (p *Postgres) Password() string { return p.password }

// LogFile is the server's log.
func (p *Postgres) LogFile() string { return filepath.Join(p.opts.Dir, "postgres.log") }

func (p *Postgres) pwFile() string { return filepath.Join(p.opts.Dir, "password") }

func (p *Postgres) confFile() string { return filepath.Join(p.DataDir(), "rackflow.conf") }

// own hands a path to the user PostgreSQL runs as.
func (p *Postgres) own(path string) error {
	if p.cred == nil {
		return nil
	}
	return os.Chown(path, int(p.cred.Uid), int(p.cred.Gid))
}

func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.opts.BinDir, name), args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	return cmd
}

func (p *Postgres) run(ctx context.Context, name string, args ...string) error {
	out, err := p.command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (p *Postgres) init(ctx context.Context) error {
	if err := os.MkdirAll(p.opts.Dir, 0o700); err != nil {
		return err
	}
	// The instance's directory is the postgres user's: it holds the
	// password and the data directory.
	if err := p.own(p.opts.Dir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(p.DataDir(), "PG_VERSION")); err == nil {
		pw, err := os.ReadFile(p.pwFile())
		if err != nil {
			return fmt.Errorf("reuse PostgreSQL in %s: %w", p.opts.Dir, err)
		}
		p.password = strings.TrimSpace(string(pw))
		if p.opts.Port == 0 {
			p.opts.Port = readPort(p.confFile())
		}
		return p.writeConf()
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	p.password = hex.EncodeToString(b)
	if err := os.WriteFile(p.pwFile(), []byte(p.password+"\n"), 0o600); err != nil {
		return err
	}
	if err := p.own(p.pwFile()); err != nil {
		return err
	}
	// Password (SCRAM) for every connection, TCP and socket alike.
	if err := p.run(ctx, "initdb", "-D", p.DataDir(), "-U", User, "--pwfile", p.pwFile(),
		"--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8"); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(p.DataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "\n# rackflow: the settings of this private instance\ninclude_if_exists = 'rackflow.conf'\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return p.writeConf()
}

// writeConf pins the instance to loopback, its port and a socket inside
// its own data directory (never /var/run/postgresql, the packaged
// clusters' place).
func (p *Postgres) writeConf() error {
	if p.opts.Port == 0 {
		port, err := FreePort()
		if err != nil {
			return err
		}
		p.opts.Port = port
	}
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nmax_connections = 200\n",
		p.opts.Port, p.DataDir())
	if err := os.WriteFile(p.confFile(), []byte(conf), 0o600); err != nil {
		return err
	}
	return p.own(p.confFile())
}

func readPort(conf string) int {
	b, err := os.ReadFile(conf)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "port = "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func (p *Postgres) start(ctx context.Context) error {
	return p.run(ctx, "pg_ctl", "start", "-D", p.DataDir(), "-l", p.LogFile(), "-w", "-t", "60", "-s")
}

// Pid is the postmaster's process id, 0 when unknown.
func (p *Postgres) Pid() int {
	b, err := os.ReadFile(filepath.Join(p.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return n
}

// Stop shuts the instance down (fast mode: open sessions are ended).
func (p *Postgres) Stop() error {
	return p.run(context.Background(), "pg_ctl", "stop", "-D", p.DataDir(), "-m", "fast", "-w", "-s")
}
