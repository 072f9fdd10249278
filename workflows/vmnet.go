package workflows

import (
	"fmt"
	"net"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/activities/guestnet"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

var (
	csA    *cloudstack.Activities
	guestA *guestnet.Activities
)

func csCtx(ctx workflow.Context, summary string, long bool) workflow.Context {
	o := workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		Summary:             summary,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 2 * time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute,
			MaximumAttempts: 10, NonRetryableErrorTypes: cloudstack.NonRetryable,
		},
	}
	if long {
		// Async jobs: the activity heartbeats while polling, and its
		// heartbeat carries the job id a retry resumes.
		o.StartToCloseTimeout = 30 * time.Minute
		o.HeartbeatTimeout = 20 * time.Second
	}
	return workflow.WithActivityOptions(ctx, o)
}

func guestCtx(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// A handful of ip/ss commands over SSH: a hung session is retried
		// rather than waited on.
		StartToCloseTimeout: time.Minute,
		Summary:             summary,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 2 * time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			MaximumAttempts: 6, NonRetryableErrorTypes: guestnet.NonRetryable,
		},
	})
}

type vmnetPlan struct {
	target cloudstack.Target
	guest  remote.Target
	vm     cloudstack.VMInfo
	net    cloudstack.NetworkInfo
}

func (p vmnetPlan) configure(in api.VMNetInput, nic cloudstack.Nic) (guestnet.ConfigureInput, error) {
	mask := nic.Netmask
	if mask == "" {
		mask = p.net.Netmask
	}
	ones, bits := net.IPMask(net.ParseIP(mask).To4()).Size()
	if bits == 0 {
		return guestnet.ConfigureInput{}, activities.InvalidInputf("NIC %s on %s has no usable netmask (%q)", nic.ID, p.net.Name, mask)
	}
	gw := in.Gateway
	if gw == "" {
		gw = nic.Gateway
	}
	if gw == "" {
		gw = p.net.Gateway
	}
	ci := guestnet.ConfigureInput{
		Target: p.guest, MAC: nic.MAC, Address: fmt.Sprintf("%s/%d", nic.IP, ones), Gateway: gw,
		CIDRs: in.CIDRs, PolicyRouting: in.PolicyRouting, Table: in.Table, Persist: true,
		SecondaryIPs: in.SecondaryIPs,
	}
	// The guest side refuses to touch the interface carrying these.
	if pn, ok := p.primary(); ok {
		ci.PrimaryMAC, ci.PrimaryIP = pn.MAC, pn.IP
	}
	return ci, nil
}

func (p *vmnetPlan) lookup(ctx workflow.Context, in api.VMNetInput) error {
	p.target = cloudstack.Target{URL: in.CloudStack.URL, Credential: in.CloudStack.Credential, Insecure: in.CloudStack.Insecure(), ProjectID: in.Project}
	user := in.Guest.User
	if user == "" {
		user = "root"
	}
	p.guest = remote.Target{Addr: in.Guest.Address, User: user, Credential: in.Guest.Credential, HostKey: in.Guest.HostKey}
	vmF := workflow.ExecuteActivity(csCtx(ctx, "look up VM "+in.VM, false), csA.LookupVM, cloudstack.LookupVMInput{Target: p.target, VM: in.VM})
	netIn := cloudstack.LookupNetworkInput{Target: p.target, Network: in.Network}
	// Version 1 looks the network up in the VM's zone, after the VM:
	// network names are unique per zone at best. Runs started before
	// looked both up at once.
	if workflow.GetVersion(ctx, versionNetworkInVMZone, workflow.DefaultVersion, 1) >= 1 {
		if err := vmF.Get(ctx, &p.vm); err != nil {
			return err
		}
		netIn.ZoneID = p.vm.ZoneID
	}
	netF := workflow.ExecuteActivity(csCtx(ctx, "look up network "+in.Network, false), csA.LookupNetwork, netIn)
	if err := vmF.Get(ctx, &p.vm); err != nil {
		return err
	}
	if err := netF.Get(ctx, &p.net); err != nil {
		return err
	}
	if p.vm.ZoneID != p.net.ZoneID {
		return activities.InvalidInputf("VM %s is in zone %s but network %s is in zone %s", p.vm.Name, p.vm.ZoneID, p.net.Name, p.net.ZoneID)
	}
	return nil
}

// versionSecondaryIPs is the GetVersion change ID of the secondary IPs
// step.
const versionSecondaryIPs = "vmnet-secondary-ips"

// versionNetworkInVMZone is the GetVersion change ID of the zone-scoped
// network lookup.
const versionNetworkInVMZone = "vmnet-network-in-vm-zone"

// primary is the VM's default NIC: it carries the primary IP and the
// default route, and nothing here configures or removes it.
func (p vmnetPlan) primary() (cloudstack.Nic, bool) {
	for _, n := range p.vm.Nics {
		if n.IsDefault {
			return n, true
		}
	}
	return cloudstack.Nic{}, false
}

// refuseDefaultNetwork fails when the network asked for is the one of the
// VM's default NIC: "ensuring" that NIC would find it, and configuring it
// would strip the guest's default route and primary address.
func (p vmnetPlan) refuseDefaultNetwork() error {
	if n, ok := p.primary(); ok && n.NetworkID == p.net.ID {
		err := fmt.Errorf("network %s is VM %s's default network (NIC %s, primary IP %s): rackflow adds a NIC on another network and never reconfigures or removes the primary one",
			p.net.Name, p.vm.Name, n.ID, n.IP)
		return activities.NonRetryable(err.Error(), cloudstack.ErrTypeDefaultNetwork, err)
	}
	return nil
}

// SetupVMNetwork gives a CloudStack VM a NIC on another area's network and
// routes that area's CIDRs through it inside the guest, persistently, then
// verifies the path. Every step is idempotent; if a step fails, what this
// run did is undone in reverse (routes, persistent config, and the NIC only
// if this run added it).
func SetupVMNetwork(ctx workflow.Context, in api.VMNetInput) (api.VMNetResult, error) {
	if err := in.Validate(); err != nil {
		return api.VMNetResult{}, activities.InvalidInput(err)
	}
	var p vmnetPlan
	var res api.VMNetResult
	var undo saga
	err := func() error {
		if err := p.lookup(ctx, in); err != nil {
			return err
		}
		res.VMID, res.NetworkID = p.vm.ID, p.net.ID
		if err := p.refuseDefaultNetwork(); err != nil {
			return err
		}

		var nr cloudstack.NicResult
		if err := workflow.ExecuteActivity(csCtx(ctx, fmt.Sprintf("NIC for %s on %s", p.vm.Name, p.net.Name), true), csA.EnsureNic,
			cloudstack.EnsureNicInput{Target: p.target, VMID: p.vm.ID, NetworkID: p.net.ID, IP: in.IP}).Get(ctx, &nr); err != nil {
			return err
		}
		res.NicID, res.MAC, res.IP, res.NicAdded = nr.Nic.ID, nr.Nic.MAC, nr.Nic.IP, nr.Added
		if nr.Added {
			undo.add("remove NIC", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(csCtx(ctx, "undo: remove NIC "+nr.Nic.ID, true), csA.RemoveNic,
					cloudstack.RemoveNicInput{Target: p.target, VMID: p.vm.ID, NicID: nr.Nic.ID}).Get(ctx, nil)
			})
		}

		// Version 1 adds the secondary IPs the input asks for; only such
		// inputs schedule the activity, and runs before it had none.
		if len(in.SecondaryIPs) > 0 && workflow.GetVersion(ctx, versionSecondaryIPs, workflow.DefaultVersion, 1) >= 1 {
			var sr cloudstack.SecondaryIPsResult
			sin := cloudstack.SecondaryIPsInput{Target: p.target, VMID: p.vm.ID, NicID: nr.Nic.ID, IPs: in.SecondaryIPs}
			if err := workflow.ExecuteActivity(csCtx(ctx, fmt.Sprintf("secondary IPs %v on NIC %s", in.SecondaryIPs, nr.Nic.ID), true),
				csA.EnsureSecondaryIPs, sin).Get(ctx, &sr); err != nil {
				return err
			}
			if len(sr.Added) > 0 {
				added := sin
				added.IPs = nil
				for _, x := range sr.Added {
					added.IPs = append(added.IPs, x.IP)
				}
				undo.add("remove secondary IPs", func(ctx workflow.Context) error {
					return workflow.ExecuteActivity(csCtx(ctx, fmt.Sprintf("undo: remove secondary IPs %v", added.IPs), true), csA.RemoveSecondaryIPs, added).Get(ctx, nil)
				})
			}
		}

		ci, err := p.configure(in, nr.Nic)
		if err != nil {
			return err
		}
		var cr guestnet.ConfigureResult
		if err := workflow.ExecuteActivity(guestCtx(ctx, fmt.Sprintf("routes %v via %s on %s", in.CIDRs, ci.Gateway, nr.Nic.MAC)), guestA.ConfigureRoutes, ci).Get(ctx, &cr); err != nil {
			return err
		}
		res.Interface, res.RoutesChanged, res.Persisted = cr.Interface, cr.Changed, cr.Persisted
		if cr.Changed {
			undo.add("remove routes", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(guestCtx(ctx, "undo: remove routes"), guestA.RemoveRoutes, ci).Get(ctx, nil)
			})
		}

		if in.Verify != "" {
			var vr guestnet.VerifyResult
			if err := workflow.ExecuteActivity(guestCtx(ctx, "verify "+in.Verify+" goes out "+cr.Interface), guestA.VerifyPath,
				guestnet.VerifyInput{Target: p.guest, Dest: in.Verify, MAC: nr.Nic.MAC}).Get(ctx, &vr); err != nil {
				return err
			}
			res.VerifiedSource = vr.Source
		}
		return nil
	}()
	if err != nil {
		if cerr := undo.compensate(ctx); cerr != nil {
			return res, failWith(fmt.Sprintf("set up %s on %s failed and the rollback failed too (%v)", in.VM, in.Network, cerr), err)
		}
		return res, failWith(fmt.Sprintf("set up %s on %s failed and was rolled back", in.VM, in.Network), err)
	}
	return res, nil
}

// TeardownVMNetwork undoes SetupVMNetwork: routes and persistent config
// removed in the guest, then the VM's NIC on the network removed. Missing
// pieces count as removed.
func TeardownVMNetwork(ctx workflow.Context, in api.VMNetInput) (api.VMNetResult, error) {
	if err := in.Validate(); err != nil {
		return api.VMNetResult{}, activities.InvalidInput(err)
	}
	var p vmnetPlan
	if err := p.lookup(ctx, in); err != nil {
		return api.VMNetResult{}, failWith("teardown lookup", err)
	}
	res := api.VMNetResult{VMID: p.vm.ID, NetworkID: p.net.ID}
	var nic *cloudstack.Nic
	for i := range p.vm.Nics {
		if p.vm.Nics[i].NetworkID == p.net.ID {
			nic = &p.vm.Nics[i]
		}
	}
	if nic == nil {
		return res, nil // nothing to tear down
	}
	if err := p.refuseDefaultNetwork(); err != nil {
		return res, err
	}
	res.NicID, res.MAC, res.IP = nic.ID, nic.MAC, nic.IP
	ci, err := p.configure(in, *nic)
	if err != nil {
		return res, err
	}
	if err := workflow.ExecuteActivity(guestCtx(ctx, "remove routes via "+nic.MAC), guestA.RemoveRoutes, ci).Get(ctx, nil); err != nil {
		return res, failWith("remove routes", err)
	}
	if err := workflow.ExecuteActivity(csCtx(ctx, "remove NIC "+nic.ID, true), csA.RemoveNic,
		cloudstack.RemoveNicInput{Target: p.target, VMID: p.vm.ID, NicID: nic.ID}).Get(ctx, nil); err != nil {
		return res, failWith("remove NIC", err)
	}
	return res, nil
}
