// Package secrets turns credential references ("bmc/node07") into values on
// the worker side. Workflow inputs, results, heartbeats and logs carry only
// references; only activities call a Resolver, and a Secret refuses to print
// itself so a stray log line cannot leak it. It is not a vault: values come
// from a file (or environment variables) the operator provides.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/rackflow/rackflow/api"
)

// ErrNotFound is returned for a reference no source defines.
var ErrNotFound = errors.New("secret not found")

// Secret is a resolved credential. Which fields are set depends on its use:
// BMC credentials use Username and Password, SSH and chef use PrivateKey.
type Secret struct {
	Username   string
	Password   string
	PrivateKey string
	// Endpoints lists where this secret may be sent (see Allows). It is
	// not secret itself; empty means bound to nothing.
	Endpoints []string
}

// String redacts, so fmt and loggers never print a value.
func (Secret) String() string { return "Secret(redacted)" }

// GoString redacts for %#v.
func (Secret) GoString() string { return "secrets.Secret{redacted}" }

// LogValue redacts for slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("redacted") }

// Resolver resolves a reference to its value.
type Resolver interface {
	Resolve(ctx context.Context, ref string) (Secret, error)
}

type fileEntry struct {
	Username       string `yaml:"username"`
	Password       string `yaml:"password"`
	PrivateKey     string `yaml:"private_key"`
	PrivateKeyFile string `yaml:"private_key_file"`
	PasswordEnv    string `yaml:"password_env"`
	// Endpoints binds the secret to the peers it may be sent to.
	Endpoints []string `yaml:"endpoints"`
}

type fileFormat struct {
	Secrets map[string]fileEntry `yaml:"secrets"`
}

// File resolves references from a YAML file of the form
//
//	secrets:
//	  bmc/node07: {username: admin, password_env: NODE07_BMC_PASSWORD}
//	  ssh/provision: {username: root, private_key_file: /etc/rackflow/id_ed25519}
//
// The file is read again when it changes on disk (checked on each Resolve),
// so rotating a credential does not need a worker restart.
type File struct {
	Path string

	mu      sync.Mutex
	stamp   fileStamp
	entries map[string]fileEntry
}

// fileStamp tells a rewritten file from the one loaded: an editor that
// renames a new file over the old one changes the inode, an in-place
// rewrite the size or the modification time.
type fileStamp struct {
	mtime, size int64
	ino         uint64
}

// NewFile loads path once, so a broken file is reported at start-up.
func NewFile(path string) (*File, error) {
	f := &File{Path: path}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) reload() error {
	st, err := os.Stat(f.Path)
	if err != nil {
		return fmt.Errorf("secrets file: %w", err)
	}
	stamp := stampOf(st)
	if stamp == f.stamp && f.entries != nil {
		return nil
	}
	if st.Mode().Perm()&0o077 != 0 {
		// As ssh does for private keys: a file others can read is a leak
		// already, and refusing it is the only way anyone notices.
		return fmt.Errorf("secrets file %s: mode %04o lets others read it; chmod 600 it", f.Path, st.Mode().Perm())
	}
	var ff fileFormat
	if err := api.DecodeFile(f.Path, &ff); err != nil {
		// Never echo the file's content, not even in a YAML error (they
		// quote values): it is full of secrets. Lines are safe.
		var se api.SpecErrors
		if !errors.As(err, &se) {
			return fmt.Errorf("secrets file: %w", err)
		}
		lines := make([]string, len(se))
		for i, e := range se {
			lines[i] = strconv.Itoa(e.Line)
		}
		return fmt.Errorf("secrets file %s: malformed YAML (line %s)", f.Path, strings.Join(lines, ", "))
	}
	for ref, e := range ff.Secrets {
		for _, ep := range e.Endpoints {
			if err := checkPattern(ep); err != nil {
				return fmt.Errorf("secrets file %s: %s: endpoints: %w", f.Path, ref, err)
			}
		}
	}
	f.entries = ff.Secrets
	f.stamp = stamp
	return nil
}

// Resolve implements Resolver.
func (f *File) Resolve(_ context.Context, ref string) (Secret, error) {
	f.mu.Lock()
	err := f.reload()
	e, ok := f.entries[ref]
	f.mu.Unlock()
	if err != nil {
		return Secret{}, err
	}
	if !ok {
		return Secret{}, fmt.Errorf("%w: %q", ErrNotFound, ref)
	}
	s := Secret{Username: e.Username, Password: e.Password, PrivateKey: e.PrivateKey, Endpoints: e.Endpoints}
	if e.PasswordEnv != "" {
		v, ok := os.LookupEnv(e.PasswordEnv)
		if !ok {
			return Secret{}, fmt.Errorf("%w: %q names environment variable %s, which is not set", ErrNotFound, ref, e.PasswordEnv)
		}
		s.Password = v
	}
	if e.PrivateKeyFile != "" {
		p := e.PrivateKeyFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(f.Path), p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %q: read private key file: %w", ref, err)
		}
		s.PrivateKey = string(b)
	}
	return s, nil
}

// Static is an in-memory Resolver, for tests and embedding.
type Static map[string]Secret

// Resolve implements Resolver.
func (s Static) Resolve(_ context.Context, ref string) (Secret, error) {
	v, ok := s[ref]
	if !ok {
		return Secret{}, fmt.Errorf("%w: %q", ErrNotFound, ref)
	}
	return v, nil
}
