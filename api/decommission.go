package api

import (
	"fmt"
	"strings"
)

// WorkflowDecommissionHost is DecommissionHost's registered name.
const WorkflowDecommissionHost = "DecommissionHost"

// Steps of DecommissionHost, in order. The live-boot steps share
// ProvisionHost's names: they do the same thing.
const (
	StepUnpublish = "unpublish"
	StepEraseDisk = "erase-disk"
	StepPowerOff  = "power-off"
	StepRemove    = "remove-lease"
	StepRetired   = "decommissioned"
)

// DecommissionSteps lists DecommissionHost's steps in the order they run.
var DecommissionSteps = []string{StepValidate, StepUnpublish, StepLease, StepPowerPXE, StepWaitLive, StepEraseDisk, StepPowerOff, StepRemove}

// DecommissionWorkflowID is the one workflow ID of a host's
// decommissioning: two never overlap.
func DecommissionWorkflowID(host string) string { return "decommission/" + host }

// HostFromDecommissionWorkflowID is the inverse of DecommissionWorkflowID.
func HostFromDecommissionWorkflowID(id string) (string, bool) {
	return strings.CutPrefix(id, "decommission/")
}

// DecommissionInput starts DecommissionHost: {"host":"node07",
// "confirm":"node07"}. The disk and how to reach the host come from the
// worker's inventory, as for ProvisionHost.
type DecommissionInput struct {
	Host string `json:"host"`
	// Confirm must repeat Host: a decommission erases the disk, so a
	// mistyped or copy-pasted input does not wipe the wrong machine.
	Confirm string `json:"confirm"`
	// Spec replaces the inventory entry, only on a worker started with
	// --allow-inline-specs (as ProvisionInput.Spec).
	Spec *Host `json:"spec,omitempty"`
	// FullOverwrite writes zeroes over the whole disk and reads all of it
	// back, instead of discarding it or zeroing its first and last MiB and
	// those of each partition. Hours on a large disk.
	FullOverwrite bool `json:"full_overwrite,omitempty"`
	// DrainSeconds takes the host out of rackflow's servicegroups
	// gracefully: each of its members is disabled with this delay
	// (connections finish, no new ones come) before it is unbound, as
	// UpdateBackends drains. 0: unbound at once.
	DrainSeconds int `json:"drain_seconds,omitempty"`
	// LeaveForeignMembers lets the run go on when the host is also a
	// member of servicegroups rackflow does not own: they are listed in
	// the result and left alone. Without it the unpublish step stops in
	// needs-attention (HostInForeignServiceGroups) once rackflow's
	// members are removed.
	LeaveForeignMembers bool             `json:"leave_foreign_members,omitempty"`
	Options             ProvisionOptions `json:"options,omitempty"`
}

// Validate checks the input's own fields (the host is checked against
// the inventory by the run).
func (in DecommissionInput) Validate() error {
	var errs FieldErrors
	if !ValidName(in.Host) {
		errs = append(errs, FieldError{Field: "host", Value: in.Host, Reason: "must be a host name from the inventory"})
	} else if in.Confirm != in.Host {
		errs = append(errs, FieldError{Field: "confirm", Value: in.Confirm, Reason: "must repeat the host's name: decommissioning erases its disk"})
	}
	if in.DrainSeconds < 0 || in.DrainSeconds > MaxDrainSeconds {
		errs = append(errs, FieldError{Field: "drain_seconds", Value: fmt.Sprint(in.DrainSeconds), Reason: fmt.Sprintf("must be 0-%d", MaxDrainSeconds)})
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Erase methods of EraseReport.Method.
const (
	// EraseDiscard: blkdiscard over the whole disk (its controller drops
	// every block), then the regions read back as zeroes.
	EraseDiscard = "discard"
	// EraseRegions: signatures wiped (wipefs -a) and the first and last
	// MiB of the disk and of every partition zeroed: partition tables,
	// boot sectors, file system and RAID superblocks are gone.
	EraseRegions = "zero-regions"
	// EraseFull: zeroes over the whole disk.
	EraseFull = "full-overwrite"
)

// EraseRegion is one byte range that was zeroed and read back.
type EraseRegion struct {
	// What: "disk start", "disk end", "vda1 start"...
	What   string `json:"what"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// EraseReport is what EraseDisk did to a disk and how it proved it.
type EraseReport struct {
	// Disk is the device erased; Resolved says which disk it was when the
	// inventory names it by root-device hints.
	Disk     string        `json:"disk"`
	Resolved *ResolvedDisk `json:"resolved,omitempty"`
	Size     int64         `json:"size"`
	Method   string        `json:"method"`
	// Partitions are those the disk had (name start+length in bytes).
	Partitions []string `json:"partitions,omitempty"`
	// Wiped says wipefs -a ran on the partitions and the disk.
	Wiped bool `json:"wiped,omitempty"`
	// Regions were zeroed (or discarded) and read back as zeroes.
	Regions []EraseRegion `json:"regions,omitempty"`
	// VerifiedBytes were read back from the disk and were all zero.
	VerifiedBytes int64    `json:"verified_bytes"`
	Notes         []string `json:"notes,omitempty"`
	Duration      string   `json:"duration"`
}

// VIPMember is one membership of a host's address in a servicegroup of
// one of the inventory's NetScalers.
type VIPMember struct {
	// NetScaler is the inventory's name of the appliance.
	NetScaler    string `json:"netscaler"`
	ServiceGroup string `json:"service_group"`
	// Owner is the workflow ID of the publication whose servicegroup it
	// is (publish/<vip>:<port>, from rackflow's marker); empty when the
	// servicegroup is not rackflow's, and Comment says whose it may be.
	Owner   string `json:"owner,omitempty"`
	Comment string `json:"comment,omitempty"`
	Server  string `json:"server"`
	IP      string `json:"ip"`
	Port    int    `json:"port"`
}

func (m VIPMember) String() string {
	return fmt.Sprintf("%s:%s member %s:%d", m.NetScaler, m.ServiceGroup, m.IP, m.Port)
}

// DecommissionResult is what a successful DecommissionHost returns.
type DecommissionResult struct {
	Host string `json:"host"`
	// Unpublished are the memberships of the host in rackflow's
	// servicegroups that the run drained and unbound (the configuration
	// saved after); LeftForeign those in other servicegroups it left
	// alone (LeaveForeignMembers).
	Unpublished []VIPMember  `json:"unpublished,omitempty"`
	LeftForeign []VIPMember  `json:"left_foreign,omitempty"`
	Erase       EraseReport  `json:"erase"`
	Steps       []StepRecord `json:"steps"`
	Notes       []string     `json:"notes,omitempty"`
	Duration    string       `json:"duration"`
}
