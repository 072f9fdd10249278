// Package inventory resolves a host name to its validated inventory entry and
// checks, before anything is powered on, that every credential it references
// exists on this worker and may be sent where the entry would send it. It
// reads the inventory file; it never returns a secret value, only the
// references, because its result is recorded in workflow history.
//
// The worker's inventory and secrets file are authoritative: a spec carried
// inline in the workflow input is refused unless the worker allows it, and
// even then its credentials only go where the secrets file binds them.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

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
	// Secrets checks that references exist and are bound to the entry's
	// endpoints.
	Secrets secrets.Resolver
	// AllowInlineSpecs accepts a host spec in the input in place of the
	// inventory entry (worker flag --allow-inline-specs). Off, whoever
	// starts a workflow can only name hosts of the worker's inventory.
	AllowInlineSpecs bool
	// Pod is the pod this worker serves (--pod): it resolves only that
	// pod's hosts, and checks their credentials, which it holds. Empty: a
	// shared worker, which leaves a podded host's credentials to its pod.
	Pod string
	// SharedOnly (--shared-only) says this shared worker has no boot
	// network: it refuses hosts that name no pod.
	SharedOnly bool
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
	case in.Spec != nil && !a.AllowInlineSpecs:
		return api.Host{}, activities.InvalidInputf("the input carries the host's spec inline; this worker provisions only hosts of its own inventory: "+
			"start with {\"host\": %q} and no spec (or run the worker with --allow-inline-specs)", in.Spec.Name)
	case in.Spec != nil:
		h = *in.Spec
		if in.Host != "" && h.Name != in.Host {
			return api.Host{}, activities.InvalidInput(api.FieldErrors{{Field: "spec.name", Value: h.Name, Reason: "differs from host " + in.Host}})
		}
	case in.Host == "":
		return api.Host{}, activities.InvalidInput(api.FieldErrors{{Field: "host", Reason: "required"}})
	default:
		if a.Load == nil {
			return api.Host{}, activities.NonRetryable("this worker has no inventory (--inventory)", activities.ErrTypeUnknownHost, nil)
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
	switch {
	case a.Pod != "" && h.Pod != a.Pod:
		// Routing sends a pod's hosts to its own worker only; anything
		// else is a misconfigured worker or inventory.
		return api.Host{}, activities.NonRetryable(fmt.Sprintf("host %s is in pod %q; this worker serves pod %q (its boot network and secrets)", h.Name, h.Pod, a.Pod), ErrTypeWrongPod, nil)
	case a.Pod == "" && h.Pod != "":
		// The pod's worker holds the host's credentials and checks them
		// when the run asks it to (ProvisionHost resolves the host there
		// too).
		return h, nil
	case a.SharedOnly && h.Pod == "":
		return api.Host{}, activities.NonRetryable(fmt.Sprintf("host %s names no pod, and this site's workers serve pods only (the shared worker runs --shared-only): add pod: to its inventory entry", h.Name), ErrTypeWrongPod, nil)
	}
	if err := a.checkCredentials(ctx, h); err != nil {
		return api.Host{}, err
	}
	return h, nil
}

// ErrTypeWrongPod: the host belongs to another pod's worker, or to none
// where every host must name one.
const ErrTypeWrongPod = "WrongPod"

func (a *Activities) checkCredentials(ctx context.Context, h api.Host) error {
	if a.Secrets == nil {
		return activities.NonRetryable("this worker has no secrets source", activities.ErrTypeCredentialNotFound, nil)
	}
	// Each credential with every place the run will send it (the
	// activities check again, at the moment of use).
	type need struct {
		field, ref string
		key        bool
		uses       []secrets.Use
	}
	ip := h.Network.IP
	needs := []need{
		{"bmc.credential", h.BMC.Credential, false, []secrets.Use{{Dest: h.BMC.CredentialDest(), Discloses: true}}},
		{"ssh.credential", h.SSH.Credential, true, []secrets.Use{
			{Dest: net.JoinHostPort(ip, strconv.Itoa(h.SSH.LivePort))},
			{Dest: net.JoinHostPort(ip, strconv.Itoa(h.SSH.Port))},
		}},
	}
	if h.Chef != nil {
		needs = append(needs, need{"chef.validator_credential", h.Chef.ValidatorCredential, true, []secrets.Use{{Dest: h.Chef.ServerURL, Discloses: true}}})
	}
	if h.SSH.Jump != nil {
		needs = append(needs, need{"ssh.jump.credential", h.SSH.Jump.Credential, true, []secrets.Use{{Dest: h.SSH.Jump.Address}}})
	}
	var missing, notAllowed, bad api.FieldErrors
	for _, n := range needs {
		s, err := a.Secrets.Resolve(ctx, n.ref)
		if errors.Is(err, secrets.ErrNotFound) {
			missing = append(missing, api.FieldError{Field: n.field, Value: n.ref, Reason: "no such secret on this worker"})
			continue
		}
		if err != nil {
			return fmt.Errorf("resolve %s: %w", n.field, err)
		}
		for _, u := range n.uses {
			if err := s.Allows(u); err != nil {
				notAllowed = append(notAllowed, api.FieldError{Field: n.field, Value: n.ref, Reason: fmt.Sprintf("may not go to %s: %v", u.Dest, err)})
				break
			}
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
	if len(notAllowed) > 0 {
		return activities.NonRetryable(notAllowed.Error(), activities.ErrTypeCredentialNotAllowed, notAllowed)
	}
	if len(bad) > 0 {
		return activities.NonRetryable(bad.Error(), activities.ErrTypeInvalidCredential, bad)
	}
	return nil
}

// NetScalers returns the inventory's NetScalers (names, URLs, credential
// references: no secret), for DecommissionHost to ask which servicegroups
// hold a host. An inventory without any is an empty list; a worker without
// an inventory, like a broken inventory file, an error.
func (a *Activities) NetScalers(ctx context.Context) ([]api.NetScalerEntry, error) {
	if a.Load == nil {
		return nil, activities.NonRetryable("this worker has no inventory (--inventory)", activities.ErrTypeUnknownHost, nil)
	}
	inv, err := a.Load()
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	if err := inv.Validate(); err != nil {
		return nil, activities.InvalidInput(err)
	}
	return inv.NetScalers, nil
}
