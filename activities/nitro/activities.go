// Package nitro holds the Temporal activities that publish services on a
// NetScaler (Citrix ADC), one object at a time, for the PublishService,
// UpdateBackends and UnpublishService sagas. They speak NITRO through the
// typed client in nitroclient, behind the API seam below (DecommissionHost
// uses them too, to find and remove a leaving host's members). Every activity is
// idempotent and ownership-aware: objects it creates carry the workflow ID
// (a "rackflow:<owner>" comment, or the owner in the name for types without
// a comment), an existing object is accepted only if it is ours and equal,
// and deletes touch only our objects. It does not retry (Temporal does),
// and it is not a general NetScaler library: it knows the resources L4
// publishing needs.
package nitro

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
)

// Error types of this package's activity failures. Non-retryable: the
// shared activities.ErrInvalidInput, ErrCredentialNotFound,
// ErrInvalidCredential, and ErrTypeConflict, ErrTypeInvalidArgument,
// ErrTypeAuthFailed, ErrTypeNotFound. Retryable: ErrTypeBusy, ErrTypeInUse,
// ErrTypeNitro, ErrTypeUnreachable.
const (
	// ErrTypeConflict: an object with our name exists but is not ours or
	// differs from what was asked; the message names it and the fields.
	ErrTypeConflict = "NitroConflict"
	// ErrTypeBusy: NITRO answered 293 (operation in progress), e.g. a save
	// already running.
	ErrTypeBusy = "NitroBusy"
	// ErrTypeInvalidArgument: NITRO refused an argument (278 and kin); a
	// retry would send the same request.
	ErrTypeInvalidArgument = "NitroInvalidArgument"
	// ErrTypeAuthFailed: the NetScaler refused the credentials.
	ErrTypeAuthFailed = "NitroAuthFailed"
	// ErrTypeNotFound: an object this step depends on does not exist (e.g.
	// binding to a servicegroup that is not there, or an unknown monitor).
	ErrTypeNotFound = "NitroNotFound"
	// ErrTypeInUse: the object is still referenced (315); remove the
	// reference first.
	ErrTypeInUse = "NitroInUse"
	// ErrTypeNitro: any other NITRO error.
	ErrTypeNitro = "NitroError"
	// ErrTypeUnreachable: no NITRO answer (connection, TLS, timeout).
	ErrTypeUnreachable = "NitroUnreachable"
	// Deprecated: use activities.ErrTypeCredentialNotAllowed, the same name.
	ErrTypeCredentialNotAllowed = activities.ErrTypeCredentialNotAllowed
	// ErrTypeNotPrimary: the node is not the primary of its HA pair; the
	// message names the primary's address. Changes made on a secondary are
	// lost at the next sync.
	ErrTypeNotPrimary = "NitroNotPrimary"
	// ErrTypeNotPropagated: NITRO warned (1028, 1044) that a change did not
	// reach the HA peer. Not retried: a retry would find the object made
	// and report success while the peer still lacks it.
	ErrTypeNotPropagated = "NitroNotPropagated"
	// ErrTypeNotPermitted: the user may not do this (257, 2138).
	ErrTypeNotPermitted = "NitroNotPermitted"
	// ErrTypeRedirected: the URL answered with a redirect, not NITRO.
	ErrTypeRedirected = "NitroRedirected"
	// ErrTypeNotOwnedIP: an INAT public IP or RNAT NAT IP is not an address
	// of the appliance (nsip); the message says how to add it.
	ErrTypeNotOwnedIP = "NitroNotOwnedIP"
	// ErrTypeUnsupported: the appliance's release or configuration cannot
	// do what was asked (named RNAT before 12.1, the LB feature disabled).
	ErrTypeUnsupported = "NitroUnsupported"
)

// NonRetryable lists the error types a RetryPolicy should not retry.
var NonRetryable = []string{
	activities.ErrInvalidInput, activities.ErrCredentialNotFound, activities.ErrInvalidCredential,
	ErrTypeConflict, ErrTypeInvalidArgument, ErrTypeAuthFailed, ErrTypeNotFound, activities.ErrTypeCredentialNotAllowed,
	ErrTypeNotPrimary, ErrTypeNotPropagated, ErrTypeNotPermitted, ErrTypeRedirected, ErrTypeNotOwnedIP, ErrTypeUnsupported,
}

// Target names a NetScaler.
type Target struct {
	// URL of the management address: https://host[:port].
	URL string `json:"url"`
	// Credential is a secrets reference whose Username and Password log in.
	Credential string `json:"credential"`
	// CA is the PEM CA (or self-signed certificate) to trust; empty means
	// the system roots.
	CA string `json:"ca,omitempty"`
	// Insecure skips TLS verification. Labs only.
	Insecure bool `json:"insecure,omitempty"`
	// Auth is "session" (default) or "header".
	Auth string `json:"auth,omitempty"`
	// ServerName is the name the certificate must carry when it is not the
	// URL's host (the stock certificate does not name the management IP).
	ServerName string `json:"server_name,omitempty"`
	// PinSHA256 is the hex SHA-256 of the appliance certificate to accept
	// instead of a CA check: trusts a self-signed certificate safely.
	PinSHA256 string `json:"pin_sha256,omitempty"`
	// Partition is the admin partition to work in (session auth only).
	Partition string `json:"partition,omitempty"`
}

// API is the part of the NITRO client the activities use;
// *nitroclient.Client implements it, and tests may fake it.
type API interface {
	Get(ctx context.Context, typ, name string, out any) error
	List(ctx context.Context, typ string, out any, filter ...nitroclient.Arg) error
	Add(ctx context.Context, r nitroclient.Resource) error
	Update(ctx context.Context, r nitroclient.Resource) error
	Bind(ctx context.Context, r nitroclient.Resource) error
	Action(ctx context.Context, action string, r nitroclient.Resource) error
	Delete(ctx context.Context, typ, name string, args ...nitroclient.Arg) error
	Save(ctx context.Context) error
	Close(ctx context.Context) error
}

// ClientFunc builds the client for one activity run.
type ClientFunc func(ctx context.Context, t Target, cred secrets.Secret) (API, error)

// Dial is the default ClientFunc: a *nitroclient.Client for t.
func Dial(_ context.Context, t Target, cred secrets.Secret) (API, error) {
	return nitroclient.New(nitroclient.Config{
		URL: t.URL, Username: cred.Username, Password: cred.Password,
		CAPEM: []byte(t.CA), InsecureSkipVerifyDANGEROUS: t.Insecure, Auth: nitroclient.AuthMode(t.Auth),
		ServerName: t.ServerName, PinSHA256: t.PinSHA256, Partition: t.Partition,
	})
}

// Activities configure NetScalers. Secrets is required; NewClient nil means Dial.
type Activities struct {
	Secrets   secrets.Resolver
	NewClient ClientFunc
}

// Result says what an Ensure or Delete activity did.
type Result struct {
	// Object is "type/name" (bindings: "type/parent/child").
	Object string `json:"object"`
	// Changed is false when the object already was as asked (or already gone).
	Changed bool `json:"changed"`
	// Skipped explains why a Delete left an object alone; it starts with
	// SkippedNotOurs.
	Skipped string `json:"skipped,omitempty"`
}

// SkippedNotOurs starts Result.Skipped when a Delete found the object, or
// the parent of a binding, without this owner's marker and left it alone.
const SkippedNotOurs = "not ours"

// What an activity does to an object. "<op> <object>" is its heartbeat
// detail while it does it, and the start of the error if that fails.
const (
	opRead   = "read"
	opAdd    = "add"
	opBind   = "bind"
	opUnbind = "unbind"
	opDelete = "delete"
	opSave   = "save"
)

func op(verb, object string) string { return verb + " " + object }

// progress tells Temporal, and whoever looks at the pending activity, what
// the activity is doing now.
func progress(ctx context.Context, verb, object string) {
	activity.RecordHeartbeat(ctx, op(verb, object))
}

// Conflict is the detail of a NitroConflict error.
type Conflict struct {
	Object string   `json:"object"`
	Fields []string `json:"fields"`
}

// ServiceGroupInput asks for a servicegroup.
type ServiceGroupInput struct {
	Target Target `json:"target"`
	// Owner is the workflow ID; it goes into the object's comment.
	Owner       string `json:"owner"`
	Name        string `json:"name"`
	ServiceType string `json:"service_type"`
}

// Member is one backend of a servicegroup.
type Member struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Weight is 1–100; 0 means NetScaler's default, 1.
	Weight int `json:"weight,omitempty"`
}

// MembersInput asks for a servicegroup's members.
type MembersInput struct {
	Target       Target `json:"target"`
	Owner        string `json:"owner"`
	ServiceGroup string `json:"service_group"`
	// Members must be bound; those missing are added.
	Members []Member `json:"members"`
	// Previous are the members this owner asked for last time. Those not
	// in Members are removed; members neither here nor in Members (added by
	// someone else) are left alone and reported as Foreign.
	Previous []Member `json:"previous,omitempty"`
	// DrainSeconds removes members gracefully: each is first disabled
	// with this delay (existing connections finish, no new ones come), the
	// activity waits it out, then unbinds. 0 unbinds at once.
	DrainSeconds int `json:"drain_seconds,omitempty"`
}

// MaxDrainSeconds bounds MembersInput.DrainSeconds.
const MaxDrainSeconds = 3600

// MembersResult says what EnsureMembers did.
type MembersResult struct {
	Added     []Member `json:"added,omitempty"`
	Removed   []Member `json:"removed,omitempty"`
	Unchanged int      `json:"unchanged"`
	Foreign   []Member `json:"foreign,omitempty"`
}

// MonitorBindingInput binds an existing monitor (e.g. the built-in "tcp") to
// one of our servicegroups.
type MonitorBindingInput struct {
	Target       Target `json:"target"`
	Owner        string `json:"owner"`
	ServiceGroup string `json:"service_group"`
	Monitor      string `json:"monitor"`
}

// LBVServerInput asks for a load-balancing virtual server.
type LBVServerInput struct {
	Target      Target `json:"target"`
	Owner       string `json:"owner"`
	Name        string `json:"name"`
	ServiceType string `json:"service_type"`
	VIP         string `json:"vip"`
	Port        int    `json:"port"`
	// LBMethod is LEASTCONNECTION (NetScaler's default) when empty.
	LBMethod string `json:"lb_method,omitempty"`
}

// VServerBindingInput binds one of our servicegroups to one of our vservers.
type VServerBindingInput struct {
	Target       Target `json:"target"`
	Owner        string `json:"owner"`
	VServer      string `json:"vserver"`
	ServiceGroup string `json:"service_group"`
}

// INATInput asks for an inbound NAT rule. Name must start with NamePrefix(Owner).
type INATInput struct {
	Target    Target `json:"target"`
	Owner     string `json:"owner"`
	Name      string `json:"name"`
	PublicIP  string `json:"public_ip"`
	PrivateIP string `json:"private_ip"`
}

// RNATInput asks for a named RNAT rule for Network/Netmask with one NAT IP.
// Name must start with NamePrefix(Owner).
type RNATInput struct {
	Target  Target `json:"target"`
	Owner   string `json:"owner"`
	Name    string `json:"name"`
	Network string `json:"network"`
	Netmask string `json:"netmask"`
	NATIP   string `json:"nat_ip"`
}

// DeleteInput names one object to remove if it is ours.
type DeleteInput struct {
	Target Target `json:"target"`
	Owner  string `json:"owner"`
	Name   string `json:"name"`
}

// SaveInput names the NetScaler whose running configuration to save.
type SaveInput struct {
	Target Target `json:"target"`
}

// DefaultLBMethod is used when LBVServerInput.LBMethod is empty.
const DefaultLBMethod = "LEASTCONNECTION"

// ---- activities ----

// EnsureServiceGroup creates the servicegroup with our marker, or accepts
// an existing one that carries our marker and the same service type.
func (a *Activities) EnsureServiceGroup(ctx context.Context, in ServiceGroupInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("name", in.Name),
		checkEnum("service_type", in.ServiceType, serviceTypes)); err != nil {
		return Result{}, err
	}
	want := nitroclient.ServiceGroup{Name: in.Name, ServiceType: in.ServiceType, Comment: Marker(in.Owner)}
	return ensureLB(ctx, a, in.Target, want, func(have nitroclient.ServiceGroup) []string {
		return diff(field("servicetype", have.ServiceType, want.ServiceType), owned(have.Comment, in.Owner))
	})
}

// EnsureLBVServer creates the vserver with our marker, or accepts an
// existing one that carries our marker and equal service type, VIP, port
// and LB method.
func (a *Activities) EnsureLBVServer(ctx context.Context, in LBVServerInput) (Result, error) {
	method := in.LBMethod
	if method == "" {
		method = DefaultLBMethod
	}
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("name", in.Name),
		checkEnum("service_type", in.ServiceType, serviceTypes), checkIP("vip", in.VIP, false),
		checkPort("port", in.Port), checkEnum("lb_method", method, api.LBMethods)); err != nil {
		return Result{}, err
	}
	want := nitroclient.LBVServer{Name: in.Name, ServiceType: in.ServiceType, IPv46: in.VIP, Port: nitroclient.Int(in.Port),
		LBMethod: method, Comment: Marker(in.Owner)}
	return ensureLB(ctx, a, in.Target, want, func(have nitroclient.LBVServer) []string {
		return diff(
			field("servicetype", have.ServiceType, want.ServiceType),
			field("ipv46", normIP(have.IPv46), normIP(want.IPv46)),
			field("port", fmt.Sprint(have.Port), fmt.Sprint(want.Port)),
			field("lbmethod", have.LBMethod, want.LBMethod),
			owned(have.Comment, in.Owner))
	})
}

// EnsureINAT creates the inbound NAT rule, or accepts an existing one with
// our name and the same public and private IPs. INAT has no comment: the
// name carries the owner.
func (a *Activities) EnsureINAT(ctx context.Context, in INATInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkOwnedName("name", in.Name, in.Owner),
		checkIP("public_ip", in.PublicIP, false), checkIP("private_ip", in.PrivateIP, false)); err != nil {
		return Result{}, err
	}
	want := nitroclient.INAT{Name: in.Name, PublicIP: in.PublicIP, PrivateIP: in.PrivateIP}
	var res Result
	err := a.with(ctx, in.Target, func(c API) error {
		if err := requireNSIP(ctx, c, "public_ip", in.PublicIP); err != nil {
			return err
		}
		var err error
		res, err = ensureIn(ctx, c, in.Target, want, func(have nitroclient.INAT) []string {
			return diff(field("publicip", normIP(have.PublicIP), normIP(want.PublicIP)),
				field("privateip", normIP(have.PrivateIP), normIP(want.PrivateIP)))
		})
		return err
	})
	return res, err
}

// EnsureMembers binds the missing Members to our servicegroup, then
// removes the Previous members no longer wanted. Members bound by someone
// else are left alone. A member bound with another weight is a conflict.
func (a *Activities) EnsureMembers(ctx context.Context, in MembersInput) (MembersResult, error) {
	errs := []error{checkTarget(in.Target), checkOwner(in.Owner), checkName("service_group", in.ServiceGroup)}
	if in.DrainSeconds < 0 || in.DrainSeconds > MaxDrainSeconds {
		errs = append(errs, fmt.Errorf("drain_seconds: %d is not 0-%d", in.DrainSeconds, MaxDrainSeconds))
	}
	seen := map[string]bool{}
	for i, m := range append(append([]Member{}, in.Members...), in.Previous...) {
		list, idx := "members", i
		if i >= len(in.Members) {
			list, idx = "previous", i-len(in.Members)
		}
		f := fmt.Sprintf("%s[%d]", list, idx)
		errs = append(errs, checkIP(f+".ip", m.IP, false), checkPort(f+".port", m.Port), checkWeight(f+".weight", m.Weight))
		if list == "members" && m.IP != "" {
			k := memberKey(m.IP, nitroclient.Int(m.Port))
			if seen[k] {
				errs = append(errs, fmt.Errorf("%s: %s listed twice", f, k))
			}
			seen[k] = true
		}
	}
	if err := validate(errs...); err != nil {
		return MembersResult{}, err
	}
	var out MembersResult
	var gone []nitroclient.ServiceGroupMember
	var goneAsked []Member
	err := a.with(ctx, in.Target, func(c API) error {
		rows, err := readMembers(ctx, c, in.ServiceGroup, in.Owner)
		if err != nil {
			return err
		}
		have := map[string]nitroclient.ServiceGroupMember{}
		for _, r := range rows {
			have[memberKey(r.IP, r.Port)] = r
		}
		wanted, previous := map[string]bool{}, map[string]bool{}
		obj := "servicegroup_servicegroupmember_binding/" + in.ServiceGroup
		for _, m := range in.Members {
			k := memberKey(m.IP, nitroclient.Int(m.Port))
			wanted[k] = true
			w := m.Weight
			if w == 0 {
				w = 1
			}
			if r, ok := have[k]; ok {
				if int(r.Weight) != w && r.Weight != 0 {
					return conflict(obj+"/"+k, []string{fmt.Sprintf("weight: have %d, want %d", r.Weight, w)})
				}
				out.Unchanged++
				continue
			}
			if err := bindMember(ctx, c, in.ServiceGroup, in.Owner, m); err != nil {
				return err
			}
			out.Added = append(out.Added, m)
			activity.GetLogger(ctx).Info("nitro member bound", "servicegroup", in.ServiceGroup, "member", k)
		}
		for _, m := range in.Previous {
			k := memberKey(m.IP, nitroclient.Int(m.Port))
			previous[k] = true
			if wanted[k] {
				continue
			}
			r, ok := have[k]
			if !ok {
				continue
			}
			gone, goneAsked = append(gone, r), append(goneAsked, m)
		}
		if err := drain(ctx, c, in.ServiceGroup, gone, in.DrainSeconds); err != nil {
			return err
		}
		for i, r := range gone {
			k := memberKey(r.IP, r.Port)
			m := goneAsked[i]
			progress(ctx, opUnbind, obj+"/"+k)
			err := c.Delete(ctx, nitroclient.ServiceGroupMember{}.ResourceType(), in.ServiceGroup,
				nitroclient.Arg{Key: "ip", Value: r.IP}, nitroclient.Arg{Key: "port", Value: fmt.Sprint(int(r.Port))})
			if err != nil && !nitroclient.IsNotFound(err) {
				return classify(op(opUnbind, obj+"/"+k), err)
			}
			out.Removed = append(out.Removed, m)
			activity.GetLogger(ctx).Info("nitro member unbound", "servicegroup", in.ServiceGroup, "member", k)
			if err := removeServerIfOurs(ctx, c, r.ServerName, in.Owner); err != nil {
				return err
			}
		}
		for k, r := range have {
			if !wanted[k] && !previous[k] {
				out.Foreign = append(out.Foreign, Member{IP: r.IP, Port: int(r.Port), Weight: int(r.Weight)})
			}
		}
		return nil
	})
	return out, err
}

// EnsureMonitorBinding binds an existing monitor to our servicegroup.
func (a *Activities) EnsureMonitorBinding(ctx context.Context, in MonitorBindingInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("service_group", in.ServiceGroup),
		checkName("monitor", in.Monitor)); err != nil {
		return Result{}, err
	}
	var res Result
	err := a.with(ctx, in.Target, func(c API) error {
		if err := requireOwned[nitroclient.ServiceGroup](ctx, c, in.ServiceGroup, in.Owner, func(sg nitroclient.ServiceGroup) string { return sg.Comment }); err != nil {
			return err
		}
		var err error
		res, err = bindOnce(ctx, c, nitroclient.ServiceGroupMonitorBinding{ServiceGroup: in.ServiceGroup, Monitor: in.Monitor},
			func(r nitroclient.ServiceGroupMonitorBinding) bool { return r.Monitor == in.Monitor }, in.ServiceGroup+"/"+in.Monitor)
		return err
	})
	return res, err
}

// EnsureVServerBinding binds our servicegroup to our vserver.
func (a *Activities) EnsureVServerBinding(ctx context.Context, in VServerBindingInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("vserver", in.VServer),
		checkName("service_group", in.ServiceGroup)); err != nil {
		return Result{}, err
	}
	var res Result
	err := a.with(ctx, in.Target, func(c API) error {
		if err := requireOwned[nitroclient.LBVServer](ctx, c, in.VServer, in.Owner, func(v nitroclient.LBVServer) string { return v.Comment }); err != nil {
			return err
		}
		if err := requireOwned[nitroclient.ServiceGroup](ctx, c, in.ServiceGroup, in.Owner, func(sg nitroclient.ServiceGroup) string { return sg.Comment }); err != nil {
			return err
		}
		var err error
		res, err = bindOnce(ctx, c, nitroclient.LBVServerServiceGroupBinding{VServer: in.VServer, ServiceGroup: in.ServiceGroup},
			func(r nitroclient.LBVServerServiceGroupBinding) bool { return r.ServiceGroup == in.ServiceGroup }, in.VServer+"/"+in.ServiceGroup)
		return err
	})
	return res, err
}

// SaveConfig saves the running configuration. A save already in progress
// is a retryable NitroBusy.
func (a *Activities) SaveConfig(ctx context.Context, in SaveInput) error {
	if err := validate(checkTarget(in.Target)); err != nil {
		return err
	}
	return a.with(ctx, in.Target, func(c API) error {
		progress(ctx, opSave, "config")
		if err := c.Save(ctx); err != nil {
			return classify(op(opSave, "config"), err)
		}
		activity.GetLogger(ctx).Info("nitro config saved", "target", in.Target.URL)
		return nil
	})
}

// DeleteLBVServer removes our vserver (and with it its bindings). Gone
// already: done. Not ours: left alone, Result.Skipped says why.
func (a *Activities) DeleteLBVServer(ctx context.Context, in DeleteInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("name", in.Name)); err != nil {
		return Result{}, err
	}
	return deleteOwned[nitroclient.LBVServer](ctx, a, in, func(v nitroclient.LBVServer) string { return v.Comment })
}

// DeleteServiceGroup removes our servicegroup (and its members and monitor
// bindings). Unbind it from vservers first: NitroInUse otherwise.
func (a *Activities) DeleteServiceGroup(ctx context.Context, in DeleteInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("name", in.Name)); err != nil {
		return Result{}, err
	}
	res, err := deleteOwned[nitroclient.ServiceGroup](ctx, a, in, func(sg nitroclient.ServiceGroup) string { return sg.Comment })
	if err != nil || !res.Changed {
		return res, err
	}
	// The members went with the group; the servers NetScaler made for
	// them, and we marked, stay unless removed here.
	return res, a.with(ctx, in.Target, func(c API) error { return removeOurServers(ctx, c, in.Owner) })
}

// DeleteINAT removes our inbound NAT rule (the name carries the owner).
func (a *Activities) DeleteINAT(ctx context.Context, in DeleteInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkOwnedName("name", in.Name, in.Owner)); err != nil {
		return Result{}, err
	}
	return deleteOwned[nitroclient.INAT](ctx, a, in, nil)
}

// DeleteVServerBinding unbinds the servicegroup from our vserver.
func (a *Activities) DeleteVServerBinding(ctx context.Context, in VServerBindingInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("vserver", in.VServer),
		checkName("service_group", in.ServiceGroup)); err != nil {
		return Result{}, err
	}
	return unbindOwned(ctx, a, in.Target, in.Owner, in.VServer, func(v nitroclient.LBVServer) string { return v.Comment },
		nitroclient.Arg{Key: "servicegroupname", Value: in.ServiceGroup}, in.ServiceGroup,
		func(b nitroclient.LBVServerServiceGroupBinding) bool { return b.ServiceGroup == in.ServiceGroup })
}

// DeleteMonitorBinding unbinds the monitor from our servicegroup.
func (a *Activities) DeleteMonitorBinding(ctx context.Context, in MonitorBindingInput) (Result, error) {
	if err := validate(checkTarget(in.Target), checkOwner(in.Owner), checkName("service_group", in.ServiceGroup),
		checkName("monitor", in.Monitor)); err != nil {
		return Result{}, err
	}
	return unbindOwned(ctx, a, in.Target, in.Owner, in.ServiceGroup, func(sg nitroclient.ServiceGroup) string { return sg.Comment },
		nitroclient.Arg{Key: "monitor_name", Value: in.Monitor}, in.Monitor,
		func(b nitroclient.ServiceGroupMonitorBinding) bool { return b.Monitor == in.Monitor })
}

// ---- shared steps ----

// with resolves the credential, builds a client, runs fn and logs out.
func (a *Activities) with(ctx context.Context, t Target, fn func(API) error) error {
	if a.Secrets == nil {
		return temporal.NewNonRetryableApplicationError("nitro activities have no secrets resolver", activities.ErrCredentialNotFound, nil)
	}
	// The input names the URL and the credential together: the secrets
	// file, not the input, decides whether this password may go there.
	cred, err := secrets.ResolveFor(ctx, a.Secrets, t.Credential, secrets.Use{Dest: t.URL, Discloses: true})
	if errors.Is(err, secrets.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("credential %q not found", t.Credential), activities.ErrCredentialNotFound, nil)
	}
	if e := activities.CredentialError(err); e != nil {
		return e
	}
	if err != nil {
		return fmt.Errorf("resolve credential %q: %w", t.Credential, err)
	}
	if cred.Username == "" || cred.Password == "" {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("credential %q lacks a username or password", t.Credential), activities.ErrInvalidCredential, nil)
	}
	if t.Insecure {
		activity.GetLogger(ctx).Warn("nitro TLS verification disabled", "target", t.URL)
	}
	newClient := a.NewClient
	if newClient == nil {
		newClient = Dial
	}
	c, err := newClient(ctx, t, cred)
	if err != nil {
		return temporal.NewNonRetryableApplicationError("nitro client for "+t.URL+": "+err.Error(), activities.ErrInvalidInput, nil)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := c.Close(cctx); err != nil {
			activity.GetLogger(ctx).Warn("nitro logout failed", "target", t.URL, "error", err)
		}
	}()
	stop := keepAlive(ctx, 3*time.Second, "waiting for "+t.URL)
	defer stop()
	if err := requirePrimary(ctx, c); err != nil {
		return err
	}
	return fn(c)
}

// keepAlive heartbeats details every interval until stop is called or ctx
// ends: a liveness heartbeat while the device answers, so a short
// HeartbeatTimeout detects a dead worker without failing a slow device.
// stop returns once the loop has ended, so no heartbeat follows the
// activity's result. It is the nitro copy of the heartbeat loop the shared
// activities package is getting; replace the one call above with that.
func keepAlive(ctx context.Context, every time.Duration, details any) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				activity.RecordHeartbeat(ctx, details)
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

func objName(r nitroclient.Resource, name string) string { return r.ResourceType() + "/" + name }

func nameOf(r nitroclient.Resource) string {
	switch v := r.(type) {
	case nitroclient.ServiceGroup:
		return v.Name
	case nitroclient.LBVServer:
		return v.Name
	case nitroclient.INAT:
		return v.Name
	case nitroclient.RNAT:
		return v.Name
	case rnatUsers:
		return v.Name
	}
	panic(fmt.Sprintf("nitro: no name for %T", r))
}

// ensure opens a client and runs ensureIn.
func ensure[T nitroclient.Resource](ctx context.Context, a *Activities, t Target, want T, differ func(T) []string) (Result, error) {
	var res Result
	err := a.with(ctx, t, func(c API) error {
		var err error
		res, err = ensureIn(ctx, c, t, want, differ)
		return err
	})
	return res, err
}

// ensureIn reads the object; absent: adds it; present: accepts it when
// differ finds nothing.
func ensureIn[T nitroclient.Resource](ctx context.Context, c API, t Target, want T, differ func(T) []string) (Result, error) {
	name := nameOf(want)
	res := Result{Object: objName(want, name)}
	check := func() error {
		have, err := nitroclient.Get[T](ctx, c, name)
		if err != nil {
			return err
		}
		if d := differ(have); len(d) > 0 {
			return conflict(res.Object, d)
		}
		return nil
	}
	err := check()
	if err == nil || !nitroclient.IsNotFound(err) {
		return res, classifyKeep(op(opRead, res.Object), err)
	}
	progress(ctx, opAdd, res.Object)
	if err := c.Add(ctx, want); err != nil {
		if !nitroclient.IsExists(err) {
			return res, classify(op(opAdd, res.Object), err)
		}
		// Someone added it meanwhile, or another object holds what this one needs.
		if err := check(); err != nil {
			if nitroclient.IsNotFound(err) {
				return res, conflict(res.Object, []string{"NetScaler says it conflicts with an existing object of another name (" + err.Error() + ")"})
			}
			return res, classifyKeep(op(opRead, res.Object), err)
		}
		return res, nil
	}
	res.Changed = true
	activity.GetLogger(ctx).Info("nitro object created", "object", res.Object, "target", t.URL)
	return res, nil
}

// bindOnce binds want unless a row under its parent matches already.
func bindOnce[T nitroclient.Resource](ctx context.Context, c API, want T, match func(T) bool, label string) (Result, error) {
	res := Result{Object: want.ResourceType() + "/" + label}
	parent := strings.SplitN(label, "/", 2)[0]
	rows, err := nitroclient.Bindings[T](ctx, c, parent)
	if err != nil {
		return res, classify(op(opRead, res.Object), err)
	}
	for _, r := range rows {
		if match(r) {
			return res, nil
		}
	}
	progress(ctx, opBind, res.Object)
	if err := c.Bind(ctx, want); err != nil && !nitroclient.IsExists(err) {
		return res, classify(op(opBind, res.Object), err)
	}
	res.Changed = true
	activity.GetLogger(ctx).Info("nitro binding created", "object", res.Object)
	return res, nil
}

// requireOwned fails unless the object exists and carries owner's marker.
func requireOwned[T nitroclient.Resource](ctx context.Context, c API, name, owner string, comment func(T) string) error {
	var zero T
	obj := objName(zero, name)
	have, err := nitroclient.Get[T](ctx, c, name)
	if err != nil {
		return classify(op(opRead, obj), err)
	}
	if d := diff(owned(comment(have), owner)); len(d) > 0 {
		return conflict(obj, d)
	}
	return nil
}

// readMembers reads the member rows of owner's servicegroup; a servicegroup
// that is not owner's is a conflict.
func readMembers(ctx context.Context, c API, sg, owner string) ([]nitroclient.ServiceGroupMember, error) {
	if err := requireOwned[nitroclient.ServiceGroup](ctx, c, sg, owner, func(g nitroclient.ServiceGroup) string { return g.Comment }); err != nil {
		return nil, err
	}
	rows, err := nitroclient.Bindings[nitroclient.ServiceGroupMember](ctx, c, sg)
	if err != nil {
		return nil, classify(op(opRead, "members of servicegroup/"+sg), err)
	}
	return rows, nil
}

// deleteOwned removes the object if it exists and is ours. comment nil:
// the name carries the owner (checked by the caller).
func deleteOwned[T nitroclient.Resource](ctx context.Context, a *Activities, in DeleteInput, comment func(T) string) (Result, error) {
	var zero T
	res := Result{Object: objName(zero, in.Name)}
	err := a.with(ctx, in.Target, func(c API) error {
		have, err := nitroclient.Get[T](ctx, c, in.Name)
		if nitroclient.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return classify(op(opRead, res.Object), err)
		}
		if comment != nil && comment(have) != Marker(in.Owner) {
			res.Skipped = fmt.Sprintf("%s: comment %q, want %q", SkippedNotOurs, comment(have), Marker(in.Owner))
			activity.GetLogger(ctx).Warn("nitro delete skipped: object is not ours", "object", res.Object, "comment", comment(have), "owner", in.Owner)
			return nil
		}
		progress(ctx, opDelete, res.Object)
		if err := c.Delete(ctx, zero.ResourceType(), in.Name); err != nil && !nitroclient.IsNotFound(err) {
			return classify(op(opDelete, res.Object), err)
		}
		res.Changed = true
		activity.GetLogger(ctx).Info("nitro object deleted", "object", res.Object, "target", in.Target.URL)
		return nil
	})
	return res, err
}

// unbindOwned removes a binding row under a parent we own, if bound is
// true of it: NITRO refuses to unbind what is not bound (2170, 1303), so
// the rows are read first and only a bound one is removed.
func unbindOwned[P nitroclient.Resource, B nitroclient.Resource](ctx context.Context, a *Activities, t Target, owner, parent string, comment func(P) string, arg nitroclient.Arg, child string, bound func(B) bool) (Result, error) {
	var zeroB B
	typ := zeroB.ResourceType()
	var zero P
	res := Result{Object: typ + "/" + parent + "/" + child}
	err := a.with(ctx, t, func(c API) error {
		have, err := nitroclient.Get[P](ctx, c, parent)
		if nitroclient.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return classify(op(opRead, objName(zero, parent)), err)
		}
		if comment(have) != Marker(owner) {
			res.Skipped = fmt.Sprintf("%s: parent %s has comment %q, want %q", SkippedNotOurs, objName(zero, parent), comment(have), Marker(owner))
			activity.GetLogger(ctx).Warn("nitro unbind skipped: parent is not ours", "object", res.Object, "comment", comment(have), "owner", owner)
			return nil
		}
		rows, err := nitroclient.Bindings[B](ctx, c, parent)
		if err != nil {
			return classify(op(opRead, res.Object), err)
		}
		if !slices.ContainsFunc(rows, bound) {
			return nil
		}
		progress(ctx, opUnbind, res.Object)
		if err := c.Delete(ctx, typ, parent, arg); err != nil {
			if nitroclient.IsNotFound(err) || errors.Is(err, nitroclient.ErrNotBound) {
				return nil
			}
			return classify(op(opUnbind, res.Object), err)
		}
		res.Changed = true
		activity.GetLogger(ctx).Info("nitro binding removed", "object", res.Object)
		return nil
	})
	return res, err
}

// ---- errors ----

func conflict(obj string, fields []string) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("%s exists and is not what rackflow asked for: %s", obj, strings.Join(fields, "; ")),
		ErrTypeConflict, nil, Conflict{Object: obj, Fields: fields})
}

// classifyKeep passes Temporal errors through and classifies the rest.
func classifyKeep(op string, err error) error {
	var ae *temporal.ApplicationError
	if err == nil || errors.As(err, &ae) {
		return err
	}
	return classify(op, err)
}

// classify turns a client error into a Temporal error by its NITRO errorcode.
func classify(op string, err error) error {
	var ae *temporal.ApplicationError
	if err == nil || errors.As(err, &ae) {
		return err
	}
	msg := op + ": " + err.Error()
	var ne *nitroclient.Error
	switch {
	case errors.Is(err, nitroclient.ErrAuth):
		return temporal.NewNonRetryableApplicationError(msg, ErrTypeAuthFailed, err)
	case errors.Is(err, nitroclient.ErrRedirected):
		return temporal.NewNonRetryableApplicationError(msg, ErrTypeRedirected, err)
	case errors.Is(err, nitroclient.ErrNotPermitted):
		return temporal.NewNonRetryableApplicationError(msg+" (the NetScaler user lacks the command policy for this)", ErrTypeNotPermitted, err)
	case errors.Is(err, nitroclient.ErrNotPropagated):
		return temporal.NewNonRetryableApplicationError(msg+" (the change is on this node only: check the HA pair's sync, then run again)", ErrTypeNotPropagated, err)
	case errors.Is(err, nitroclient.ErrBusy):
		return temporal.NewApplicationError(msg, ErrTypeBusy, err)
	case errors.Is(err, nitroclient.ErrInvalidArgument):
		return temporal.NewNonRetryableApplicationError(msg, ErrTypeInvalidArgument, err)
	case errors.Is(err, nitroclient.ErrNotFound):
		return temporal.NewNonRetryableApplicationError(msg, ErrTypeNotFound, err)
	case errors.Is(err, nitroclient.ErrInUse):
		return temporal.NewApplicationError(msg, ErrTypeInUse, err)
	case errors.As(err, &ne):
		return temporal.NewApplicationError(msg, ErrTypeNitro, err)
	case errors.Is(err, context.Canceled):
		// The activity was cancelled: the SDK reports it as such. A
		// deadline (the client's RequestTimeout) is no answer in time:
		// NitroUnreachable, below.
		return err
	}
	return temporal.NewApplicationError(msg, ErrTypeUnreachable, err)
}

// ---- comparisons ----

type fieldDiff struct{ name, have, want string }

func field(name, have, want string) *fieldDiff {
	if have == want {
		return nil
	}
	return &fieldDiff{name, have, want}
}

func owned(comment, owner string) *fieldDiff {
	if comment == Marker(owner) {
		return nil
	}
	if strings.HasPrefix(comment, MarkerPrefix) {
		return &fieldDiff{"comment (owned by another rackflow workflow)", comment, Marker(owner)}
	}
	return &fieldDiff{"comment (not created by rackflow)", comment, Marker(owner)}
}

func diff(ds ...*fieldDiff) []string {
	var out []string
	for _, d := range ds {
		if d != nil {
			out = append(out, fmt.Sprintf("%s: have %q, want %q", d.name, d.have, d.want))
		}
	}
	return out
}

func normIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}

func mustAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

func memberKey(ip string, port nitroclient.Int) string {
	return netip.AddrPortFrom(mustAddr(normIP(ip)), uint16(port)).String()
}
