package api

import "strings"

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
	FullOverwrite bool             `json:"full_overwrite,omitempty"`
	Options       ProvisionOptions `json:"options,omitempty"`
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

// DecommissionResult is what a successful DecommissionHost returns.
type DecommissionResult struct {
	Host     string       `json:"host"`
	Erase    EraseReport  `json:"erase"`
	Steps    []StepRecord `json:"steps"`
	Notes    []string     `json:"notes,omitempty"`
	Duration string       `json:"duration"`
}
