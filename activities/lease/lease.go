// Package lease registers bare-metal hosts with rackflow's pxe service through
// its lease API, so the DHCP/TFTP/HTTP boot server answers them. It is the
// worker's only way to reach pxe; it does not talk DHCP itself.
package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/sdk/activity"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/pxe/client"
	pxe "github.com/rackflow/rackflow/pxe/lease"
	"github.com/rackflow/rackflow/secrets"
)

// API is the part of the pxe client the activities use.
type API interface {
	Put(ctx context.Context, l pxe.Lease) (pxe.Lease, error)
	Get(ctx context.Context, mac string) (pxe.Lease, error)
	Delete(ctx context.Context, mac string) error
	Timeline(ctx context.Context, mac string) (api.BootTimeline, error)
}

// Activities registers, switches and removes leases.
type Activities struct {
	PXE     API
	Secrets secrets.Resolver
	// ConsoleDir, when set, is where a console logger keeps each host's
	// serial console as <host>.log (conserver's "logfile .../&.log",
	// `ipmitool sol activate` into a file): BootTimeline adds its last
	// lines to the timeline.
	ConsoleDir string
}

// RegisterInput is a host's lease request.
type RegisterInput struct {
	Host    string      `json:"host"`
	MAC     string      `json:"mac"`
	Network api.Network `json:"network"`
	Profile string      `json:"profile"`
	// BootID changes for every boot rackflow triggers; a new one makes pxe
	// mint a new one-time host key for the live system.
	BootID string `json:"boot_id"`
	// SSHCredential names the private key whose public half the live system
	// must accept.
	SSHCredential string `json:"ssh_credential,omitempty"`
}

// RegisterResult carries the live system's expected host key.
type RegisterResult struct {
	HostKey string `json:"host_key"`
	Profile string `json:"profile"`
}

// RegisterLease puts the host's lease. It is idempotent: the same input returns the
// same host key.
func (a *Activities) RegisterLease(ctx context.Context, in RegisterInput) (RegisterResult, error) {
	l := pxe.Lease{
		MAC:      in.MAC,
		IP:       in.Network.IP,
		Netmask:  in.Network.Netmask,
		Gateway:  in.Network.Gateway,
		DNS:      in.Network.DNS,
		Hostname: in.Host,
		Profile:  pxe.Profile(in.Profile),
		BootID:   in.BootID,
	}
	if in.SSHCredential != "" {
		s, err := a.Secrets.Resolve(ctx, in.SSHCredential)
		if errors.Is(err, secrets.ErrNotFound) {
			return RegisterResult{}, activities.NonRetryable(err.Error(), activities.ErrTypeCredentialNotFound, err)
		}
		if err != nil {
			return RegisterResult{}, fmt.Errorf("resolve ssh credential: %w", err)
		}
		signer, err := ssh.ParsePrivateKey([]byte(s.PrivateKey))
		if err != nil {
			return RegisterResult{}, activities.NonRetryable("ssh credential "+in.SSHCredential+" holds no usable private key", activities.ErrTypeInvalidCredential, nil)
		}
		l.SSHAuthorizedKeys = []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))}
	}
	got, err := a.PXE.Put(ctx, l)
	if err != nil {
		return RegisterResult{}, classify("register lease for "+in.Host, err)
	}
	activity.GetLogger(ctx).Info("lease registered", "host", in.Host, "mac", in.MAC, "profile", in.Profile)
	return RegisterResult{HostKey: got.HostKey, Profile: string(got.Profile)}, nil
}

// RemoveInput names the lease to remove.
type RemoveInput struct {
	Host string `json:"host"`
	MAC  string `json:"mac"`
}

// RemoveLease deletes the lease; removing an absent lease succeeds.
func (a *Activities) RemoveLease(ctx context.Context, in RemoveInput) error {
	if err := a.PXE.Delete(ctx, in.MAC); err != nil {
		return classify("remove lease of "+in.Host, err)
	}
	activity.GetLogger(ctx).Info("lease removed", "host", in.Host, "mac", in.MAC)
	return nil
}

// TimelineInput names the host whose boot timeline is read.
type TimelineInput struct {
	Host string `json:"host"`
	MAC  string `json:"mac"`
}

// BootTimeline reads what rackflow-pxe saw of the host's boot since its
// lease got its boot ID: DHCP answers, TFTP and HTTP fetches, the host
// key fetch. It only reads, so a workflow may call it as often as it
// likes to show where a boot stands.
//
// With a ConsoleDir it adds the end of the host's console log: what the
// firmware, boot loader or kernel said when the network went quiet. A
// console log that cannot be read is logged and left out; it never fails
// the activity.
func (a *Activities) BootTimeline(ctx context.Context, in TimelineInput) (api.BootTimeline, error) {
	t, err := a.PXE.Timeline(ctx, in.MAC)
	if err != nil {
		return api.BootTimeline{}, classify("boot timeline of "+in.Host, err)
	}
	if a.ConsoleDir != "" {
		lines, at, err := readConsole(a.ConsoleDir, in.Host)
		if err != nil {
			activity.GetLogger(ctx).Warn("console log left out of the boot timeline", "host", in.Host, "error", err)
		}
		t.Console, t.ConsoleAt = lines, at
	}
	return t, nil
}

func classify(action string, err error) error {
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case 400:
			return activities.NonRetryable(fmt.Sprintf("%s: %v", action, err), activities.ErrTypeInvalidInput, err)
		case 409:
			return activities.NonRetryable(fmt.Sprintf("%s: %v", action, err), activities.ErrTypeLeaseConflict, err)
		}
	}
	return fmt.Errorf("%s: %w", action, err)
}
