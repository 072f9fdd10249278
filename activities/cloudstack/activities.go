package cloudstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/secrets"
)

// Activities are the CloudStack activities. The zero value needs Secrets.
type Activities struct {
	// Secrets resolves Target.Credential.
	Secrets secrets.Resolver
	// NewClient builds the API client; NewClient when nil.
	NewClient ClientFunc
	// PollInterval is the pause between queryAsyncJobResult calls; 2s when
	// zero. Each poll heartbeats, so keep it well under the heartbeat timeout.
	PollInterval time.Duration
}

// Nic is one of a VM's NICs as CloudStack reports it.
type Nic struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	// MAC is lower case, colon separated, as CloudStack writes it.
	MAC       string `json:"mac"`
	IP        string `json:"ip"`
	Netmask   string `json:"netmask"`
	Gateway   string `json:"gateway"`
	IsDefault bool   `json:"is_default"`
}

// LookupVMInput names a VM.
type LookupVMInput struct {
	Target Target `json:"target"`
	// VM is the VM's id (UUID) or its name.
	VM string `json:"vm"`
}

// VMInfo is what LookupVM found.
type VMInfo struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	ZoneID          string `json:"zone_id"`
	ZoneNetworkType string `json:"zone_network_type"` // "Advanced"
	State           string `json:"state"`
	Nics            []Nic  `json:"nics"`
}

// LookupNetworkInput names a network.
type LookupNetworkInput struct {
	Target Target `json:"target"`
	// Network is the network's id (UUID) or its name.
	Network string `json:"network"`
	// ZoneID, when set, limits a lookup by name to that zone (the VM's):
	// names are unique per zone at best.
	ZoneID string `json:"zone_id,omitempty"`
}

// NetworkInfo is what LookupNetwork found.
type NetworkInfo struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	ZoneID  string `json:"zone_id"`
	CIDR    string `json:"cidr"`
	Gateway string `json:"gateway"`
	Netmask string `json:"netmask"`
	Type    string `json:"type"` // Isolated, Shared, L2
}

// EnsureNicInput asks for a NIC of VM VMID on network NetworkID.
type EnsureNicInput struct {
	Target    Target `json:"target"`
	VMID      string `json:"vm_id"`
	NetworkID string `json:"network_id"`
	// IP is a fixed IPv4 address for the NIC; empty lets CloudStack choose.
	IP string `json:"ip,omitempty"`
}

// NicResult is what EnsureNic left in place.
type NicResult struct {
	Nic Nic `json:"nic"`
	// Added is true only when this activity (this attempt or an earlier
	// attempt of the same activity) added the NIC; the workflow removes the
	// NIC in compensation only then.
	Added bool `json:"added"`
	// JobID is the addNicToVirtualMachine job, when one was run.
	JobID string `json:"job_id,omitempty"`
}

// RemoveNicInput names the NIC to remove.
type RemoveNicInput struct {
	Target Target `json:"target"`
	VMID   string `json:"vm_id"`
	NicID  string `json:"nic_id"`
}

// JobProgress is the heartbeat detail of EnsureNic and RemoveNic. A retried
// attempt that finds a JobID resumes polling that job instead of starting
// another one.
type JobProgress struct {
	JobID string `json:"job_id"`
	Polls int    `json:"polls"`
}

// LookupVM finds a VM by id or name, with its zone's network type and its
// NICs. A VM in a Basic zone is refused (CloudStackBasicZone): it has no
// second network to add.
func (a *Activities) LookupVM(ctx context.Context, in LookupVMInput) (VMInfo, error) {
	if strings.TrimSpace(in.VM) == "" {
		return VMInfo{}, activities.InvalidInputf("lookup VM: no VM id or name given")
	}
	c, err := a.client(ctx, in.Target)
	if err != nil {
		return VMInfo{}, appError("lookup VM "+in.VM, err)
	}
	byID := cs.IsID(in.VM)
	// isvnf=false: VNF appliances are not what a NIC is added to, and
	// cloudstack-go v2.19.0 cannot decode their vnfnics (objects, where it
	// expects strings), so one appliance matching the name would fail the
	// whole list. CloudStack before 4.19 ignores the parameter.
	vms, err := listPages(func(page int) ([]*cs.VirtualMachine, int, error) {
		p := c.VirtualMachine.NewListVirtualMachinesParams()
		p.SetListall(true)
		p.SetIsvnf(false)
		p.SetPage(page)
		p.SetPagesize(PageSize)
		if in.Target.ProjectID != "" {
			p.SetProjectid(in.Target.ProjectID)
		}
		if byID {
			p.SetId(in.VM)
		} else {
			p.SetName(in.VM)
		}
		r, err := call(c.VirtualMachine.ListVirtualMachines(p))
		if err != nil {
			return nil, 0, err
		}
		return r.VirtualMachines, r.Count, nil
	})
	if err != nil {
		if ae, ok := ParseError(err); ok && ae.entityMissing() {
			return VMInfo{}, nonRetryable(ErrTypeNotFound, "lookup VM %s: no such VM", in.VM)
		}
		return VMInfo{}, appError("lookup VM "+in.VM, err)
	}
	// CloudStack's name filter may match more than the exact name.
	var found []*cs.VirtualMachine
	for _, vm := range vms {
		if (byID && vm.Id == in.VM) || (!byID && vm.Name == in.VM) {
			found = append(found, vm)
		}
	}
	switch len(found) {
	case 0:
		return VMInfo{}, nonRetryable(ErrTypeNotFound, "lookup VM %s: no such VM", in.VM)
	case 1:
	default:
		return VMInfo{}, nonRetryable(ErrTypeAmbiguous, "lookup VM %s: %d VMs have that name; use the id", in.VM, len(found))
	}
	vm := found[0]
	info := VMInfo{ID: vm.Id, Name: vm.Name, ZoneID: vm.Zoneid, State: vm.State}
	for _, n := range vm.Nic {
		info.Nics = append(info.Nics, toNic(n))
	}

	zp := c.Zone.NewListZonesParams()
	zp.SetId(vm.Zoneid)
	zr, err := call(c.Zone.ListZones(zp))
	if err != nil {
		return VMInfo{}, appError("lookup zone "+vm.Zoneid+" of VM "+in.VM, err)
	}
	for _, z := range zr.Zones {
		if z.Id == vm.Zoneid {
			info.ZoneNetworkType = z.Networktype
		}
	}
	if info.ZoneNetworkType == "" {
		return VMInfo{}, appError("lookup VM "+in.VM, fmt.Errorf("zone %s of the VM not listed", vm.Zoneid))
	}
	if strings.EqualFold(info.ZoneNetworkType, "Basic") {
		return VMInfo{}, nonRetryable(ErrTypeBasicZone, "VM %s (%s) is in Basic zone %s: a Basic zone has one guest network, no second NIC can be added", vm.Name, vm.Id, vm.Zonename)
	}
	activity.GetLogger(ctx).Info("found VM", "vm", info.Name, "vm_id", info.ID, "zone", info.ZoneID, "state", info.State, "nics", len(info.Nics))
	return info, nil
}

// LookupNetwork finds a network by id or name.
func (a *Activities) LookupNetwork(ctx context.Context, in LookupNetworkInput) (NetworkInfo, error) {
	if strings.TrimSpace(in.Network) == "" {
		return NetworkInfo{}, activities.InvalidInputf("lookup network: no network id or name given")
	}
	c, err := a.client(ctx, in.Target)
	if err != nil {
		return NetworkInfo{}, appError("lookup network "+in.Network, err)
	}
	byID := cs.IsID(in.Network)
	if in.ZoneID != "" && !cs.IsID(in.ZoneID) {
		return NetworkInfo{}, activities.InvalidInputf("lookup network: zone_id %q is not a CloudStack id", in.ZoneID)
	}
	// listNetworks ignores "name" before CloudStack 4.22 (it lists every
	// network); "keyword" is a substring match on name and display text
	// everywhere, so ask by keyword and keep the exact name.
	nets, err := listPages(func(page int) ([]*cs.Network, int, error) {
		p := c.Network.NewListNetworksParams()
		p.SetListall(true)
		p.SetPage(page)
		p.SetPagesize(PageSize)
		if in.ZoneID != "" {
			p.SetZoneid(in.ZoneID)
		}
		if in.Target.ProjectID != "" {
			p.SetProjectid(in.Target.ProjectID)
		}
		if byID {
			p.SetId(in.Network)
		} else {
			p.SetKeyword(in.Network)
		}
		r, err := call(c.Network.ListNetworks(p))
		if err != nil {
			return nil, 0, err
		}
		return r.Networks, r.Count, nil
	})
	if err != nil {
		if ae, ok := ParseError(err); ok && ae.entityMissing() {
			return NetworkInfo{}, nonRetryable(ErrTypeNotFound, "lookup network %s: no such network", in.Network)
		}
		return NetworkInfo{}, appError("lookup network "+in.Network, err)
	}
	var found []*cs.Network
	for _, n := range nets {
		if (byID && n.Id == in.Network) || (!byID && n.Name == in.Network) {
			if in.ZoneID == "" || n.Zoneid == in.ZoneID {
				found = append(found, n)
			}
		}
	}
	where := ""
	if in.ZoneID != "" {
		where = " in zone " + in.ZoneID
	}
	switch len(found) {
	case 0:
		return NetworkInfo{}, nonRetryable(ErrTypeNotFound, "lookup network %s: no such network%s", in.Network, where)
	case 1:
	default:
		return NetworkInfo{}, nonRetryable(ErrTypeAmbiguous, "lookup network %s: %d networks%s have that name; use the id", in.Network, len(found), where)
	}
	n := found[0]
	info := NetworkInfo{ID: n.Id, Name: n.Name, ZoneID: n.Zoneid, CIDR: n.Cidr, Gateway: n.Gateway, Netmask: n.Netmask, Type: n.Type}
	activity.GetLogger(ctx).Info("found network", "network", info.Name, "network_id", info.ID, "cidr", info.CIDR, "type", info.Type)
	return info, nil
}

// EnsureNic makes sure VM VMID has a NIC on network NetworkID and returns
// it. It lists the VM's NICs first and adds one (addNicToVirtualMachine)
// only if there is none, then polls the job, heartbeating JobProgress. A
// retried attempt that finds a JobID in its heartbeat details resumes that
// job and never adds a second NIC. CloudStack's "A NIC already exists"
// answer (someone else added it meanwhile) is success with Added=false.
func (a *Activities) EnsureNic(ctx context.Context, in EnsureNicInput) (NicResult, error) {
	log := activity.GetLogger(ctx)
	if err := validateIDs(map[string]string{"vm_id": in.VMID, "network_id": in.NetworkID}); err != nil {
		return NicResult{}, err
	}
	if in.IP != "" {
		if ip, err := netip.ParseAddr(in.IP); err != nil || !ip.Is4() {
			return NicResult{}, activities.InvalidInputf("ensure NIC: ip %q is not an IPv4 address", in.IP)
		}
	}
	action := fmt.Sprintf("ensure NIC of VM %s on network %s", in.VMID, in.NetworkID)
	c, err := a.client(ctx, in.Target)
	if err != nil {
		return NicResult{}, appError(action, err)
	}

	// A job an earlier attempt started is waited for, not started again.
	prog, _ := activities.PreviousProgress[JobProgress](ctx)
	if prog.JobID != "" {
		log.Info("resuming addNicToVirtualMachine job of an earlier attempt", "vm_id", in.VMID, "network_id", in.NetworkID, "job_id", prog.JobID)
	} else {
		nic, ok, err := a.findNic(c, in.VMID, in.NetworkID, "")
		if ae, isAPI := ParseError(err); isAPI && ae.VMGone() {
			return NicResult{}, nonRetryable(ErrTypeNotFound, "%s: the VM no longer exists", action)
		}
		if err != nil {
			return NicResult{}, appError(action, err)
		}
		if ok && nic.IsDefault {
			return NicResult{}, nonRetryable(ErrTypeDefaultNetwork, "%s: network %s is the VM's default network (NIC %s, IP %s): rackflow adds a second NIC on another network and never reconfigures the primary one", action, in.NetworkID, nic.ID, nic.IP)
		}
		if ok {
			if err := checkIP(nic, in.IP); err != nil {
				return NicResult{}, err
			}
			log.Info("VM already has a NIC on the network", "vm_id", in.VMID, "network_id", in.NetworkID, "nic_id", nic.ID, "mac", nic.MAC, "ip", nic.IP)
			return NicResult{Nic: nic}, nil
		}
		if err := a.requireRunning(c, in.Target, in.VMID, action); err != nil {
			return NicResult{}, err
		}
		p := c.VirtualMachine.NewAddNicToVirtualMachineParams(in.NetworkID, in.VMID)
		if in.IP != "" {
			p.SetIpaddress(in.IP)
		}
		r, err := call(c.VirtualMachine.AddNicToVirtualMachine(p))
		if err != nil {
			return a.nicExistsOr(c, in, "", appError(action, err), err)
		}
		if r.JobID == "" {
			return NicResult{}, appError(action, errors.New("addNicToVirtualMachine returned no job id"))
		}
		prog = JobProgress{JobID: r.JobID}
		activity.RecordHeartbeat(ctx, prog)
		log.Info("adding NIC", "vm_id", in.VMID, "network_id", in.NetworkID, "job_id", r.JobID)
	}

	if _, err := a.waitJob(ctx, c, &prog); err != nil {
		return a.nicExistsOr(c, in, prog.JobID, appError(fmt.Sprintf("%s: job %s", action, prog.JobID), err), err)
	}
	nic, ok, err := a.findNic(c, in.VMID, in.NetworkID, "")
	if err != nil {
		return NicResult{}, appError(action, err)
	}
	if !ok {
		return NicResult{}, appError(action, fmt.Errorf("job %s succeeded but the VM lists no NIC on the network", prog.JobID))
	}
	log.Info("NIC added", "vm_id", in.VMID, "network_id", in.NetworkID, "nic_id", nic.ID, "mac", nic.MAC, "ip", nic.IP, "job_id", prog.JobID)
	return NicResult{Nic: nic, Added: true, JobID: prog.JobID}, nil
}

// nicExistsOr handles a failed add: CloudStack's "A NIC already exists"
// means someone else added it, which is success after a lookup; anything
// else returns actErr.
func (a *Activities) nicExistsOr(c *cs.CloudStackClient, in EnsureNicInput, jobID string, actErr, err error) (NicResult, error) {
	ae, ok := ParseError(err)
	if !ok || !ae.NicExists() {
		return NicResult{}, actErr
	}
	nic, found, lerr := a.findNic(c, in.VMID, in.NetworkID, "")
	if lerr != nil {
		return NicResult{}, appError("list NICs after "+ae.Text, lerr)
	}
	if !found {
		return NicResult{}, actErr
	}
	if err := checkIP(nic, in.IP); err != nil {
		return NicResult{}, err
	}
	return NicResult{Nic: nic, JobID: jobID}, nil
}

func checkIP(n Nic, want string) error {
	if want != "" && n.IP != want {
		return nonRetryable(ErrTypeConflict, "VM's NIC %s on network %s has IP %s, not the requested %s", n.ID, n.NetworkID, n.IP, want)
	}
	return nil
}

// RemoveNic removes NIC NicID from VM VMID through
// removeNicFromVirtualMachine, polling its job like EnsureNic (same resume
// rule). A NIC that is not there, or a VM that no longer exists, is success.
func (a *Activities) RemoveNic(ctx context.Context, in RemoveNicInput) error {
	log := activity.GetLogger(ctx)
	if err := validateIDs(map[string]string{"vm_id": in.VMID, "nic_id": in.NicID}); err != nil {
		return err
	}
	action := fmt.Sprintf("remove NIC %s of VM %s", in.NicID, in.VMID)
	c, err := a.client(ctx, in.Target)
	if err != nil {
		return appError(action, err)
	}
	// A job an earlier attempt started is waited for, not started again.
	prog, _ := activities.PreviousProgress[JobProgress](ctx)
	if prog.JobID == "" {
		nic, ok, err := a.findNic(c, in.VMID, "", in.NicID)
		if ae, isAPI := ParseError(err); isAPI && (ae.VMGone() || ae.nicGone()) {
			log.Info("VM or NIC already gone", "vm_id", in.VMID, "nic_id", in.NicID)
			return nil
		}
		if err != nil {
			return appError(action, err)
		}
		if !ok {
			log.Info("NIC already absent", "vm_id", in.VMID, "nic_id", in.NicID)
			return nil
		}
		if nic.IsDefault {
			return nonRetryable(ErrTypeDefaultNetwork, "%s: it is the VM's default NIC (IP %s): rackflow never removes it", action, nic.IP)
		}
		r, err := call(c.VirtualMachine.RemoveNicFromVirtualMachine(c.VirtualMachine.NewRemoveNicFromVirtualMachineParams(in.NicID, in.VMID)))
		if err != nil {
			return appError(action, err)
		}
		if r.JobID == "" {
			return appError(action, errors.New("removeNicFromVirtualMachine returned no job id"))
		}
		prog = JobProgress{JobID: r.JobID}
		activity.RecordHeartbeat(ctx, prog)
		log.Info("removing NIC", "vm_id", in.VMID, "nic_id", in.NicID, "job_id", r.JobID)
	} else {
		log.Info("resuming removeNicFromVirtualMachine job of an earlier attempt", "vm_id", in.VMID, "nic_id", in.NicID, "job_id", prog.JobID)
	}
	if _, err := a.waitJob(ctx, c, &prog); err != nil {
		if ae, isAPI := ParseError(err); isAPI && ae.VMGone() {
			log.Info("VM is gone, so is its NIC", "vm_id", in.VMID, "nic_id", in.NicID, "job_id", prog.JobID)
			return nil
		}
		// Gone anyway (removed by someone else meanwhile)?
		if _, ok, lerr := a.findNic(c, in.VMID, "", in.NicID); lerr == nil && !ok {
			log.Info("NIC absent after failed removal job", "vm_id", in.VMID, "nic_id", in.NicID, "job_id", prog.JobID, "error", err)
			return nil
		}
		return appError(fmt.Sprintf("%s: job %s", action, prog.JobID), err)
	}
	log.Info("NIC removed", "vm_id", in.VMID, "nic_id", in.NicID, "job_id", prog.JobID)
	return nil
}

// findNic lists the VM's NICs, optionally filtered by network or NIC id.
func (a *Activities) findNic(c *cs.CloudStackClient, vmID, networkID, nicID string) (Nic, bool, error) {
	p := c.Nic.NewListNicsParams(vmID)
	if networkID != "" {
		p.SetNetworkid(networkID)
	}
	if nicID != "" {
		p.SetNicid(nicID)
	}
	r, err := call(c.Nic.ListNics(p))
	if err != nil {
		return Nic{}, false, err
	}
	for _, n := range r.Nics {
		if (networkID == "" || n.Networkid == networkID) && (nicID == "" || n.Id == nicID) {
			return toNic(*n), true, nil
		}
	}
	return Nic{}, false, nil
}

// waitJob polls an async job until it ends, heartbeating prog each poll.
func (a *Activities) waitJob(ctx context.Context, c *cs.CloudStackClient, prog *JobProgress) (json.RawMessage, error) {
	return a.waitJobBeat(ctx, c, prog, func(p JobProgress) { activity.RecordHeartbeat(ctx, p) })
}

// waitJobBeat is waitJob with the heartbeat left to beat, for activities
// whose progress holds more than the job.
func (a *Activities) waitJobBeat(ctx context.Context, c *cs.CloudStackClient, prog *JobProgress, beat func(JobProgress)) (json.RawMessage, error) {
	interval := a.PollInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	for {
		r, err := call(c.Asyncjob.QueryAsyncJobResult(c.Asyncjob.NewQueryAsyncJobResultParams(prog.JobID)))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("query job: %w", err)
		}
		prog.Polls++
		beat(*prog)
		switch r.Jobstatus {
		case 1:
			return r.Jobresult, nil
		case 2:
			return nil, jobError(r)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// jobError reads a failed job's result: {"errorcode":530,"errortext":...}.
func jobError(r *cs.QueryAsyncJobResultResponse) error {
	var body struct {
		ErrorCode   int    `json:"errorcode"`
		CSErrorCode int    `json:"cserrorcode"`
		ErrorText   string `json:"errortext"`
	}
	if r.Jobresulttype == "text" || json.Unmarshal(r.Jobresult, &body) != nil || body.ErrorCode == 0 {
		code := r.Jobresultcode
		if code == 0 {
			code = CodeInternalError
		}
		return &APIError{HTTPCode: code, Text: strings.Trim(string(r.Jobresult), `"`)}
	}
	return &APIError{HTTPCode: body.ErrorCode, CSCode: body.CSErrorCode, Text: body.ErrorText}
}

func toNic(n cs.Nic) Nic {
	return Nic{
		ID: n.Id, NetworkID: n.Networkid, MAC: strings.ToLower(n.Macaddress), IP: n.Ipaddress,
		Netmask: n.Netmask, Gateway: n.Gateway, IsDefault: n.Isdefault,
	}
}

func validateIDs(ids map[string]string) error {
	for name, v := range ids {
		if !cs.IsID(v) {
			return activities.InvalidInputf("%s %q is not a CloudStack id (UUID)", name, v)
		}
	}
	return nil
}

// PageSize is the pagesize of list calls; CloudStack's default.page.size
// is 500 too, and some installations lower it.
const PageSize = 500

// maxPages bounds a listing, so a server that keeps answering full pages
// cannot keep an activity busy for ever.
const maxPages = 100

// listPages calls list for pages 1, 2, ... until it has count items (the
// total CloudStack reports with every page) or a page comes back short.
func listPages[T any](list func(page int) ([]T, int, error)) ([]T, error) {
	var all []T
	for page := 1; page <= maxPages; page++ {
		items, count, err := list(page)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if len(items) < PageSize || len(all) >= count {
			return all, nil
		}
	}
	return nil, fmt.Errorf("more than %d pages of %d", maxPages, PageSize)
}

// requireRunning refuses to add a NIC to a VM that is not Running: the
// guest has to see the NIC hot-plugged and be configured over SSH.
func (a *Activities) requireRunning(c *cs.CloudStackClient, t Target, vmID, action string) error {
	p := c.VirtualMachine.NewListVirtualMachinesParams()
	p.SetId(vmID)
	if t.ProjectID != "" {
		p.SetProjectid(t.ProjectID)
	}
	p.SetListall(true)
	p.SetIsvnf(false)
	r, err := call(c.VirtualMachine.ListVirtualMachines(p))
	if ae, ok := ParseError(err); ok && ae.VMGone() {
		return nonRetryable(ErrTypeNotFound, "%s: the VM no longer exists", action)
	}
	if err != nil {
		return appError(action, err)
	}
	for _, vm := range r.VirtualMachines {
		if vm.Id != vmID {
			continue
		}
		switch vm.State {
		case "Running":
			return nil
		case "Starting", "Migrating", "Stopping":
			err := fmt.Errorf("%s: VM %s is %s, not Running: a NIC is added only to a running VM", action, vm.Name, vm.State)
			return temporal.NewApplicationErrorWithOptions(err.Error(), ErrTypeVMNotRunning, temporal.ApplicationErrorOptions{Cause: err})
		case "Stopped":
			return nonRetryable(ErrTypeVMNotRunning, "%s: VM %s is Stopped: start it first; rackflow adds a NIC only to a running VM, whose guest it then configures over SSH", action, vm.Name)
		default:
			return nonRetryable(ErrTypeVMNotRunning, "%s: VM %s is %s, not Running: a NIC is added only to a running VM", action, vm.Name, vm.State)
		}
	}
	return nonRetryable(ErrTypeNotFound, "%s: the VM no longer exists", action)
}
