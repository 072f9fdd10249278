// Package chef bootstraps chef-client on a freshly installed host over SSH:
// it writes client.rb, the validator key and first-boot.json, then runs the
// first chef-client. It is not a chef server client and does not install
// chef: the OS image is expected to carry chef-client already.
package chef

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
)

// ErrTypeBootstrapFailed: the chef run exited non-zero. Retryable; the
// workflow's policy decides how often. Bootstrap also raises the shared
// activities.ErrTypeInvalidInput, ErrTypeCredentialNotFound,
// ErrTypeCredentialNotAllowed and ErrTypeInvalidCredential, and remote's.
const ErrTypeBootstrapFailed = "ChefBootstrapFailed"

// DefaultDir is where chef-client looks for its configuration.
const DefaultDir = "/etc/chef"

// TailLines is how many lines of chef's output a result or error carries.
const TailLines = 20

// Activities bootstraps chef. Dialer is required.
type Activities struct {
	Dialer *remote.Dialer
	// Secrets resolves Chef.ValidatorCredential; Dialer.Secrets when nil.
	Secrets secrets.Resolver
	// Dir is chef's directory on the host; DefaultDir when empty. Tests
	// point it at a temporary directory.
	Dir string
	// HeartbeatEvery is how often a running chef-client is heartbeated;
	// 10s when zero, and at least three times per heartbeat timeout.
	HeartbeatEvery time.Duration
}

// BootstrapInput is the input of Bootstrap.
type BootstrapInput struct {
	Host   string        `json:"host"`
	Target remote.Target `json:"target"` // HostKey required
	Chef   api.Chef      `json:"chef"`
}

// BootstrapResult is the output of Bootstrap.
type BootstrapResult struct {
	// Output is the last TailLines lines of chef-client's output.
	Output   string `json:"output"`
	Duration string `json:"duration"`
}

// Failure is the detail of a ChefBootstrapFailed error.
type Failure struct {
	Exit   int    `json:"exit"`
	Output string `json:"output"` // tail
}

// Bootstrap writes chef's files on the host and runs Chef.Command.
func (a *Activities) Bootstrap(ctx context.Context, in BootstrapInput) (BootstrapResult, error) {
	log := activity.GetLogger(ctx)
	start := time.Now()
	dir := a.Dir
	if dir == "" {
		dir = DefaultDir
	}
	c := in.Chef
	if c.ServerURL == "" || len(c.RunList) == 0 || c.ValidatorCredential == "" {
		err := fmt.Errorf("chef bootstrap of %s: server_url, run_list and validator_credential are required", in.Host)
		return BootstrapResult{}, activities.InvalidInput(err)
	}
	if c.NodeName == "" {
		c.NodeName = in.Host
	}
	if c.ValidatorName == "" {
		c.ValidatorName = "chef-validator"
	}
	if c.Command == "" {
		c.Command = "chef-client -j " + remote.Quote(dir+"/first-boot.json")
	}

	res := a.Secrets
	if res == nil {
		res = a.Dialer.Secrets
	}
	// The validator key is copied to the node, which uses it against
	// server_url: both come from the input, so the secrets file decides
	// which chef servers this key may be handed out for.
	sec, err := secrets.ResolveFor(ctx, res, c.ValidatorCredential, secrets.Use{Dest: c.ServerURL, Discloses: true})
	if e := activities.CredentialError(fmt.Errorf("chef bootstrap of %s: %w", in.Host, err)); e != nil {
		return BootstrapResult{}, e
	}
	switch {
	case err != nil || sec.PrivateKey == "":
		msg := fmt.Sprintf("chef bootstrap of %s: validator credential %q holds no private key", in.Host, c.ValidatorCredential)
		if err != nil {
			msg = fmt.Sprintf("chef bootstrap of %s: %v", in.Host, err)
		}
		return BootstrapResult{}, activities.NonRetryable(msg, activities.ErrTypeInvalidCredential, err)
	}

	client, err := a.Dialer.Dial(ctx, in.Target)
	if err != nil {
		return BootstrapResult{}, remote.AppError(fmt.Errorf("chef bootstrap: %w", err))
	}
	defer client.Close()

	firstBoot, _ := json.Marshal(map[string][]string{"run_list": c.RunList})
	files := []struct {
		name string
		mode string
		data []byte
	}{
		{"client.rb", "0644", clientRB(c, dir)},
		{"validation.pem", "0600", []byte(sec.PrivateKey)},
		{"first-boot.json", "0644", append(firstBoot, '\n')},
	}
	for _, f := range files {
		if err := writeFile(ctx, client, dir, f.name, f.mode, f.data); err != nil {
			return BootstrapResult{}, err
		}
	}
	log.Info("chef files written, running chef", "host", in.Host, "dir", dir, "node", c.NodeName, "run_list", strings.Join(c.RunList, ","))

	out := &remote.Tail{}
	stop := activities.KeepAlive(ctx, activities.OrDefault(a.HeartbeatEvery, 10*time.Second), func() any {
		return time.Since(start).Round(time.Second).String()
	})
	// chef's stderr goes with its stdout so the tail reads in order.
	err = remote.Stream(ctx, client, "exec 2>&1; "+c.Command, nil, out, nil)
	stop()
	tail := out.Lines(TailLines)
	var exit *remote.ExitError
	if errors.As(err, &exit) {
		msg := fmt.Sprintf("chef bootstrap of %s: %q exited %d; last output:\n%s", in.Host, c.Command, exit.Status, tail)
		return BootstrapResult{}, temporal.NewApplicationError(msg, ErrTypeBootstrapFailed, Failure{Exit: exit.Status, Output: tail})
	}
	if err != nil {
		return BootstrapResult{}, fmt.Errorf("chef bootstrap of %s: %w", in.Host, err)
	}
	d := time.Since(start).Round(time.Millisecond).String()
	log.Info("chef bootstrap done", "host", in.Host, "duration", d)
	return BootstrapResult{Output: tail, Duration: d}, nil
}

// writeFile writes data to dir/name through stdin (never the command
// line, which other users of the host can read in ps), atomically.
func writeFile(ctx context.Context, c *ssh.Client, dir, name, mode string, data []byte) error {
	final := remote.Quote(dir + "/" + name)
	tmp := remote.Quote(dir + "/." + name + ".rackflow")
	cmd := fmt.Sprintf("umask 077 && mkdir -p %s && cat > %s && chmod %s %s && mv -f %s %s",
		remote.Quote(dir), tmp, mode, tmp, tmp, final)
	if _, err := remote.Output(ctx, c, cmd, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("write %s/%s: %w", dir, name, err)
	}
	return nil
}

// clientRB renders client.rb. Values go in single-quoted Ruby strings,
// which interpolate nothing.
func clientRB(c api.Chef, dir string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by rackflow.\n")
	fmt.Fprintf(&b, "chef_server_url %s\n", rubyString(c.ServerURL))
	fmt.Fprintf(&b, "node_name %s\n", rubyString(c.NodeName))
	if c.Environment != "" {
		fmt.Fprintf(&b, "environment %s\n", rubyString(c.Environment))
	}
	fmt.Fprintf(&b, "validation_client_name %s\n", rubyString(c.ValidatorName))
	fmt.Fprintf(&b, "validation_key %s\n", rubyString(dir+"/validation.pem"))
	fmt.Fprintf(&b, "client_key %s\n", rubyString(dir+"/client.pem"))
	b.WriteString("log_location STDOUT\n")
	return b.Bytes()
}

func rubyString(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, `'`, `\'`) + "'"
}
