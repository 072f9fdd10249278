package cloudstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/sdk/activity"

	"github.com/rackflow/rackflow/activities"
)

// SecondaryIPsInput names secondary IPv4 addresses of one NIC.
type SecondaryIPsInput struct {
	Target Target `json:"target"`
	VMID   string `json:"vm_id"`
	NicID  string `json:"nic_id"`
	// IPs are the addresses, on the NIC's network.
	IPs []string `json:"ips"`
}

// SecondaryIP is one of a NIC's secondary addresses and the id
// removeIpFromNic takes.
type SecondaryIP struct {
	ID string `json:"id"`
	IP string `json:"ip"`
}

// SecondaryIPsResult says which of the asked addresses this activity added;
// the rest were on the NIC already. A rollback removes only Added.
type SecondaryIPsResult struct {
	Added []SecondaryIP `json:"added,omitempty"`
}

// secondaryProgress is EnsureSecondaryIPs' heartbeat: the addresses added
// so far and the job of the one being added, which a retried attempt
// resumes instead of asking again.
type secondaryProgress struct {
	JobProgress
	IP    string        `json:"ip,omitempty"`
	Added []SecondaryIP `json:"added,omitempty"`
}

func (in SecondaryIPsInput) validate() error {
	if err := validateIDs(map[string]string{"vm_id": in.VMID, "nic_id": in.NicID}); err != nil {
		return err
	}
	if len(in.IPs) == 0 {
		return activities.InvalidInputf("secondary IPs: none given")
	}
	for _, s := range in.IPs {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
			return activities.InvalidInputf("secondary IP %q is not an IPv4 address", s)
		}
	}
	return nil
}

// listSecondary returns the NIC's secondary IPs; ok is false when the NIC
// (or its VM) is gone.
func (a *Activities) listSecondary(c *cs.CloudStackClient, vmID, nicID string) ([]SecondaryIP, bool, error) {
	p := c.Nic.NewListNicsParams(vmID)
	p.SetNicid(nicID)
	r, err := call(c.Nic.ListNics(p))
	if ae, isAPI := ParseError(err); isAPI && (ae.VMGone() || ae.nicGone()) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for _, n := range r.Nics {
		if n.Id != nicID {
			continue
		}
		var out []SecondaryIP
		for _, x := range n.Secondaryip {
			out = append(out, SecondaryIP{ID: x.Id, IP: x.Ipaddress})
		}
		return out, true, nil
	}
	return nil, false, nil
}

// EnsureSecondaryIPs gives NIC NicID each of IPs as a secondary address
// (addIpToNic, an async job per address), skipping those it has. A retried
// attempt resumes the job its predecessor heartbeated.
func (a *Activities) EnsureSecondaryIPs(ctx context.Context, in SecondaryIPsInput) (SecondaryIPsResult, error) {
	log := activity.GetLogger(ctx)
	if err := in.validate(); err != nil {
		return SecondaryIPsResult{}, err
	}
	action := fmt.Sprintf("add secondary IPs %v to NIC %s of VM %s", in.IPs, in.NicID, in.VMID)
	c, err := a.client(ctx, in.Target)
	if err != nil {
		return SecondaryIPsResult{}, appError(action, err)
	}
	prog, _ := activities.PreviousProgress[secondaryProgress](ctx)
	// The whole progress is heartbeated, not only the job: a retry must
	// know what this activity added, for the rollback.
	beat := func(j JobProgress) {
		p := prog
		p.JobProgress = j
		activity.RecordHeartbeat(ctx, p)
	}
	if prog.JobID != "" {
		log.Info("resuming addIpToNic job of an earlier attempt", "nic_id", in.NicID, "ip", prog.IP, "job_id", prog.JobID)
		if _, err := a.waitJobBeat(ctx, c, &prog.JobProgress, beat); err != nil {
			return SecondaryIPsResult{Added: prog.Added}, appError(fmt.Sprintf("%s: job %s", action, prog.JobID), err)
		}
		prog.JobProgress = JobProgress{}
	}
	for {
		have, ok, err := a.listSecondary(c, in.VMID, in.NicID)
		if err != nil {
			return SecondaryIPsResult{Added: prog.Added}, appError(action, err)
		}
		if !ok {
			return SecondaryIPsResult{Added: prog.Added}, nonRetryable(ErrTypeNotFound, "%s: the NIC no longer exists", action)
		}
		// What an earlier job of this activity added counts as added.
		for _, x := range have {
			if x.IP == prog.IP && !slices.ContainsFunc(prog.Added, func(y SecondaryIP) bool { return y.IP == x.IP }) {
				prog.Added = append(prog.Added, x)
			}
		}
		prog.IP = ""
		next := ""
		for _, ip := range in.IPs {
			if !slices.ContainsFunc(have, func(x SecondaryIP) bool { return x.IP == ip }) {
				next = ip
				break
			}
		}
		if next == "" {
			log.Info("secondary IPs in place", "nic_id", in.NicID, "ips", in.IPs, "added", len(prog.Added))
			return SecondaryIPsResult{Added: prog.Added}, nil
		}
		p := c.Nic.NewAddIpToNicParams(in.NicID)
		p.SetIpaddress(next)
		r, err := call(c.Nic.AddIpToNic(p))
		if err != nil {
			return SecondaryIPsResult{Added: prog.Added}, appError(action, err)
		}
		if r.JobID == "" {
			return SecondaryIPsResult{Added: prog.Added}, appError(action, errors.New("addIpToNic returned no job id"))
		}
		prog.JobProgress, prog.IP = JobProgress{JobID: r.JobID}, next
		activity.RecordHeartbeat(ctx, prog)
		log.Info("adding secondary IP", "nic_id", in.NicID, "ip", next, "job_id", r.JobID)
		if _, err := a.waitJobBeat(ctx, c, &prog.JobProgress, beat); err != nil {
			return SecondaryIPsResult{Added: prog.Added}, appError(fmt.Sprintf("%s: %s: job %s", action, next, prog.JobID), err)
		}
		prog.JobProgress = JobProgress{}
	}
}

// RemoveSecondaryIPs removes each of IPs from NIC NicID's secondary
// addresses (removeIpFromNic, async). Addresses it lacks, and a NIC or VM
// that is gone, are success.
func (a *Activities) RemoveSecondaryIPs(ctx context.Context, in SecondaryIPsInput) error {
	log := activity.GetLogger(ctx)
	if err := in.validate(); err != nil {
		return err
	}
	action := fmt.Sprintf("remove secondary IPs %v from NIC %s of VM %s", in.IPs, in.NicID, in.VMID)
	c, err := a.client(ctx, in.Target)
	if err != nil {
		return appError(action, err)
	}
	prog, _ := activities.PreviousProgress[JobProgress](ctx)
	if prog.JobID != "" {
		if _, err := a.waitJob(ctx, c, &prog); err != nil {
			return appError(fmt.Sprintf("%s: job %s", action, prog.JobID), err)
		}
	}
	have, ok, err := a.listSecondary(c, in.VMID, in.NicID)
	if err != nil {
		return appError(action, err)
	}
	if !ok {
		log.Info("NIC already gone, and its secondary IPs with it", "nic_id", in.NicID)
		return nil
	}
	for _, x := range have {
		if !slices.Contains(in.IPs, x.IP) {
			continue
		}
		r, err := call(c.Nic.RemoveIpFromNic(c.Nic.NewRemoveIpFromNicParams(x.ID)))
		if err != nil {
			return appError(action, err)
		}
		prog = JobProgress{JobID: r.JobID}
		activity.RecordHeartbeat(ctx, prog)
		if _, err := a.waitJob(ctx, c, &prog); err != nil {
			return appError(fmt.Sprintf("%s: %s: job %s", action, x.IP, prog.JobID), err)
		}
		log.Info("secondary IP removed", "nic_id", in.NicID, "ip", x.IP, "job_id", prog.JobID)
	}
	return nil
}
