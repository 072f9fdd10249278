package chef_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/chef"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// fakeChefClient stands in for chef-client on the host's PATH: it checks
// the files the bootstrap wrote, as the real one would need them, and
// prints a run's worth of output.
const fakeChefClient = `#!/bin/sh
[ "$1" = -j ] || { echo "usage: chef-client -j FILE"; exit 64; }
dir=$(dirname "$2")
grep -qx "chef_server_url 'https://chef.lab.example/organizations/lab'" "$dir/client.rb" || { echo "client.rb: no server url"; exit 65; }
grep -qx "validation_key '$dir/validation.pem'" "$dir/client.rb" || { echo "client.rb: no validation key"; exit 65; }
mode=$(stat -c %a "$dir/validation.pem")
[ "$mode" = 600 ] || { echo "validation.pem has mode $mode"; exit 65; }
grep -q "BEGIN OPENSSH PRIVATE KEY" "$dir/validation.pem" || { echo "validation.pem is no key"; exit 65; }
echo "Starting Chef Infra Client, first boot: $(cat "$2")"
i=1; while [ $i -le 30 ]; do echo "resource $i converged"; i=$((i+1)); done
if [ "$3" = --fail ]; then echo "FATAL: Chef::Exceptions::ValidationFailed" >&2; exit 1; fi
echo "Chef Infra Client finished, 30/30 resources updated"
`

type fixture struct {
	login, validator sshd.Key
	bin, dir         string
	acts             *chef.Activities
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{login: sshd.TestKey(t), validator: sshd.TestKey(t), bin: t.TempDir()}
	f.dir = filepath.Join(t.TempDir(), "etc", "chef") // created by the bootstrap
	if err := os.WriteFile(filepath.Join(f.bin, "chef-client"), []byte(fakeChefClient), 0o755); err != nil {
		t.Fatal(err)
	}
	f.acts = &chef.Activities{
		Dialer: &remote.Dialer{Secrets: secrets.Static{
			"ssh/os":         {PrivateKey: f.login.PEM},
			"chef/validator": {PrivateKey: f.validator.PEM, Endpoints: []string{"https://chef.lab.example"}},
			"chef/unbound":   {PrivateKey: f.validator.PEM},
		}},
		Dir: f.dir,
	}
	return f
}

func (f *fixture) input(addr, hostKey string, command string) chef.BootstrapInput {
	return chef.BootstrapInput{
		Host:   "node07",
		Target: remote.Target{Addr: addr, Credential: "ssh/os", HostKey: hostKey},
		Chef: api.Chef{
			ServerURL:           "https://chef.lab.example/organizations/lab",
			RunList:             []string{"role[base]", "recipe[ntp]"},
			Environment:         "lab",
			ValidatorCredential: "chef/validator",
			Command:             command,
		},
	}
}

func bootstrap(t *testing.T, acts *chef.Activities, in chef.BootstrapInput) (chef.BootstrapResult, error) {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	v, err := env.ExecuteActivity(acts.Bootstrap, in)
	if err != nil {
		return chef.BootstrapResult{}, err
	}
	var res chef.BootstrapResult
	if err := v.Get(&res); err != nil {
		t.Fatal(err)
	}
	return res, nil
}

func TestBootstrap(t *testing.T) {
	f := newFixture(t)
	srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{f.login.Public()}, PathPrefix: []string{f.bin}})
	res, err := bootstrap(t, f.acts, f.input(srv.Addr(), srv.HostKeyLine(), "chef-client -j "+f.dir+"/first-boot.json"))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	lines := strings.Split(res.Output, "\n")
	if len(lines) != chef.TailLines || lines[len(lines)-1] != "Chef Infra Client finished, 30/30 resources updated" || lines[0] != "resource 12 converged" {
		t.Errorf("output tail:\n%s\nwant the last %d lines of the run", res.Output, chef.TailLines)
	}

	want := map[string]string{
		"client.rb": `# Written by rackflow.
chef_server_url 'https://chef.lab.example/organizations/lab'
node_name 'node07'
environment 'lab'
validation_client_name 'chef-validator'
validation_key '` + f.dir + `/validation.pem'
client_key '` + f.dir + `/client.pem'
log_location STDOUT
`,
		"first-boot.json": `{"run_list":["role[base]","recipe[ntp]"]}` + "\n",
		"validation.pem":  f.validator.PEM,
	}
	got := map[string]string{}
	entries, _ := os.ReadDir(f.dir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(f.dir, e.Name()))
		got[e.Name()] = string(b)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files in %s (-want +got):\n%s", f.dir, diff)
	}
	if st, err := os.Stat(filepath.Join(f.dir, "validation.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("validation.pem: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
}

func TestBootstrapFails(t *testing.T) {
	f := newFixture(t)
	srv := sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{f.login.Public()}, PathPrefix: []string{f.bin}})
	_, err := bootstrap(t, f.acts, f.input(srv.Addr(), srv.HostKeyLine(), "chef-client -j "+f.dir+"/first-boot.json --fail"))
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != chef.ErrTypeBootstrapFailed || ae.NonRetryable() {
		t.Fatalf("want retryable %s, got %v", chef.ErrTypeBootstrapFailed, err)
	}
	var d chef.Failure
	if err := ae.Details(&d); err != nil {
		t.Fatal(err)
	}
	if d.Exit != 1 || !strings.HasSuffix(d.Output, "resource 30 converged\nFATAL: Chef::Exceptions::ValidationFailed") {
		t.Errorf("failure detail %+v: want exit 1 and the output's tail", d)
	}
	for _, s := range []string{"exited 1", "FATAL: Chef::Exceptions::ValidationFailed", "resource 12 converged"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
	if strings.Contains(err.Error(), "resource 11 converged") {
		t.Errorf("error carries more than the last %d lines: %v", chef.TailLines, err)
	}
}

// TestBootstrapKeepsKeyOffCommandLine runs against the in-process server,
// which records every command it is asked to run.
func TestBootstrapKeepsKeyOffCommandLine(t *testing.T) {
	f := newFixture(t)
	fake := sshd.StartFake(t, sshd.FakeOptions{
		AuthorizedKeys: []ssh.PublicKey{f.login.Public()},
		Env:            []string{"PATH=" + f.bin + ":" + os.Getenv("PATH")},
	})
	res, err := bootstrap(t, f.acts, f.input(fake.Addr(), fake.HostKeyLine(), ""))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	cmds := fake.Commands()
	if len(cmds) != 4 {
		t.Errorf("commands %q: want three file writes and the chef run", cmds)
	}
	keyBody := strings.Split(f.validator.PEM, "\n")[1]
	for _, c := range cmds {
		if strings.Contains(c, keyBody) || strings.Contains(c, "PRIVATE KEY") {
			t.Errorf("command line carries the validator key: %q", c)
		}
	}
	if !strings.Contains(cmds[len(cmds)-1], "chef-client -j '"+f.dir+"/first-boot.json'") {
		t.Errorf("default command %q does not use the chef dir", cmds[len(cmds)-1])
	}
	if strings.Contains(res.Output, keyBody) {
		t.Error("output carries the validator key")
	}
}

func TestBootstrapBadCredential(t *testing.T) {
	f := newFixture(t)
	in := f.input("127.0.0.1:1", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGBkKxqVUEmSDzwsoaVx7Hc+HaNCRbN3Vk8T5h5F1jkc", "")
	in.Chef.ValidatorCredential = "chef/missing"
	_, err := bootstrap(t, f.acts, in)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != activities.ErrTypeCredentialNotFound || !ae.NonRetryable() {
		t.Fatalf("want non-retryable %s, got %v", activities.ErrTypeCredentialNotFound, err)
	}
}

// TestBootstrapValidatorBinding: the input names the chef server and the
// validator key together; the secrets file decides which servers the key
// is handed out for. A refused bootstrap writes nothing on the host.
func TestBootstrapValidatorBinding(t *testing.T) {
	tests := map[string]struct {
		serverURL, credential string
		wantType              string // "" = success
	}{
		"bound server":            {serverURL: "https://chef.lab.example/organizations/lab", credential: "chef/validator"},
		"another server":          {serverURL: "https://chef.attacker.example/organizations/lab", credential: "chef/validator", wantType: activities.ErrTypeCredentialNotAllowed},
		"same host, another port": {serverURL: "https://chef.lab.example:8443/organizations/lab", credential: "chef/validator", wantType: activities.ErrTypeCredentialNotAllowed},
		"plain http":              {serverURL: "http://chef.lab.example/organizations/lab", credential: "chef/validator", wantType: activities.ErrTypeCredentialNotAllowed},
		"key bound to no server":  {serverURL: "https://chef.lab.example/organizations/lab", credential: "chef/unbound", wantType: activities.ErrTypeCredentialNotAllowed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			fake := sshd.StartFake(t, sshd.FakeOptions{
				AuthorizedKeys: []ssh.PublicKey{f.login.Public()},
				Env:            []string{"PATH=" + f.bin + ":" + os.Getenv("PATH")},
			})
			in := f.input(fake.Addr(), fake.HostKeyLine(), "true")
			in.Chef.ServerURL, in.Chef.ValidatorCredential = tc.serverURL, tc.credential
			_, err := bootstrap(t, f.acts, in)
			gotType := ""
			if err != nil {
				var ae *temporal.ApplicationError
				if !errors.As(err, &ae) || !ae.NonRetryable() {
					t.Fatalf("want a non-retryable application error, got %v", err)
				}
				gotType = ae.Type()
			}
			if diff := cmp.Diff(tc.wantType, gotType); diff != "" {
				t.Fatalf("error type (-want +got):\n%s\nerror: %v", diff, err)
			}
			if tc.wantType != "" && len(fake.Commands()) != 0 {
				t.Errorf("refused bootstrap ran %q on the host", fake.Commands())
			}
		})
	}
}
