// Package inventory resolves a host name to its validated inventory entry and
// checks, before anything is powered on, that every credential it references
// exists on this worker. It reads the inventory file; it never returns a
// secret value, only the references, because its result is recorded in
// workflow history.
package inventory

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
)

// Activities resolves hosts.
type Activities struct {
	// Load returns the current inventory; it is called on each resolution so
	// an edited inventory file is picked up without a restart.
	Load func() (*api.Inventory, error)
	// Secrets checks that references exist.
	Secrets secrets.Resolver
}

// ResolveInput names a host, or carries its spec inline.
type ResolveInput struct {
	Host string    `json:"host"`
	Spec *api.Host `json:"spec,omitempty"`
}

// ResolveHost returns the host's validated spec with defaults applied.
func (a *Activities) ResolveHost(ctx context.Context, in ResolveInput) (api.Host, error) {
	var h api.Host
	switch {
	case in.Spec != nil:
		h = *in.Spec
		if in.Host != "" && h.Name != in.Host {
			return api.Host{}, activities.InvalidInput(api.FieldErrors{{Field: "spec.name", Value: h.Name, Reason: "differs from host " + in.Host}})
		}
	case in.Host == "":
		return api.Host{}, activities.InvalidInput(api.FieldErrors{{Field: "host", Reason: "required"}})
	default:
		if a.Load == nil {
			return api.Host{}, activities.NonRetryable("this worker has no inventory; pass the host's spec in the input", activities.ErrTypeUnknownHost, nil)
		}
		inv, err := a.Load()
		if err != nil {
			// A broken inventory file is an operator problem a retry may fix.
			return api.Host{}, fmt.Errorf("load inventory: %w", err)
		}
		h, err = inv.Lookup(in.Host)
		if err != nil {
			return api.Host{}, activities.NonRetryable(err.Error(), activities.ErrTypeUnknownHost, err)
		}
	}
	h.Defaults()
	if err := h.Validate(); err != nil {
		return api.Host{}, activities.InvalidInput(err)
	}
	if err := a.checkCredentials(ctx, h); err != nil {
		return api.Host{}, err
	}
	return h, nil
}

func (a *Activities) checkCredentials(ctx context.Context, h api.Host) error {
	if a.Secrets == nil {
		return activities.NonRetryable("this worker has no secrets source", activities.ErrTypeCredentialNotFound, nil)
	}
	type need struct {
		field, ref string
		key        bool
	}
	needs := []need{{"bmc.credential", h.BMC.Credential, false}, {"ssh.credential", h.SSH.Credential, true}}
	if h.Chef != nil {
		needs = append(needs, need{"chef.validator_credential", h.Chef.ValidatorCredential, true})
	}
	if h.SSH.Jump != nil {
		needs = append(needs, need{"ssh.jump.credential", h.SSH.Jump.Credential, true})
	}
	var missing api.FieldErrors
	var bad api.FieldErrors
	for _, n := range needs {
		s, err := a.Secrets.Resolve(ctx, n.ref)
		if errors.Is(err, secrets.ErrNotFound) {
			missing = append(missing, api.FieldError{Field: n.field, Value: n.ref, Reason: "no such secret on this worker"})
			continue
		}
		if err != nil {
			return fmt.Errorf("resolve %s: %w", n.field, err)
		}
		if n.key {
			if _, err := ssh.ParseRawPrivateKey([]byte(s.PrivateKey)); err != nil {
				// The parse error never contains key material.
				bad = append(bad, api.FieldError{Field: n.field, Value: n.ref, Reason: "secret holds no usable private key"})
			}
		} else if s.Username == "" || s.Password == "" {
			bad = append(bad, api.FieldError{Field: n.field, Value: n.ref, Reason: "secret needs username and password"})
		}
	}
	if len(missing) > 0 {
		return activities.NonRetryable(missing.Error(), activities.ErrTypeCredentialNotFound, missing)
	}
	if len(bad) > 0 {
		return activities.NonRetryable(bad.Error(), activities.ErrTypeInvalidCredential, bad)
	}
	return nil
}
