package api

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// RootDevice names a host's target disk by what the disk is rather than by
// the name the kernel happened to give it on this boot (/dev/sda becomes
// /dev/sdb when a controller probes in another order). Every hint given
// must match; the live system resolves them right before the write, and
// the write is refused unless exactly one whole disk matches.
type RootDevice struct {
	// Serial is the disk's serial number, as lsblk's SERIAL column shows it
	// (compared exactly, surrounding spaces aside).
	Serial string `yaml:"serial,omitempty" json:"serial,omitempty"`
	// WWN is the disk's World Wide Name, as lsblk's WWN column shows it
	// ("0x5000c50015ea71ac"); "naa.", "eui." and "0x" prefixes and case are
	// ignored.
	WWN string `yaml:"wwn,omitempty" json:"wwn,omitempty"`
	// Model is the disk's model, as lsblk's MODEL column shows it
	// (compared exactly, surrounding spaces aside).
	Model string `yaml:"model,omitempty" json:"model,omitempty"`
	// ByPath is the disk's /dev/disk/by-path link ("pci-0000:00:1f.2-ata-1"
	// or the full path): the slot it sits in. Needs udev on the live system.
	ByPath string `yaml:"by_path,omitempty" json:"by_path,omitempty"`
	// MinSize and MaxSize bound the disk's size, inclusive: a byte count or
	// a number with a unit ("480GB", "1TiB"; KB, MB, GB, TB are powers of
	// 1000, KiB, MiB, GiB, TiB of 1024).
	MinSize string `yaml:"min_size,omitempty" json:"min_size,omitempty"`
	MaxSize string `yaml:"max_size,omitempty" json:"max_size,omitempty"`
}

// IsZero reports whether no hint is given.
func (r RootDevice) IsZero() bool { return r == RootDevice{} }

// String lists the hints given, as "serial=X wwn=Y", for messages.
func (r RootDevice) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+quoteShort(v))
		}
	}
	add("serial", r.Serial)
	add("wwn", r.WWN)
	add("model", r.Model)
	add("by_path", r.ByPath)
	add("min_size", r.MinSize)
	add("max_size", r.MaxSize)
	return strings.Join(parts, " ")
}

// Sizes returns the size bounds in bytes (0 and math.MaxInt64 when
// unset). Call it on validated hints.
func (r RootDevice) Sizes() (lo, hi int64) {
	lo, hi = 0, math.MaxInt64
	if r.MinSize != "" {
		lo, _ = ParseSize(r.MinSize)
	}
	if r.MaxSize != "" {
		hi, _ = ParseSize(r.MaxSize)
	}
	return lo, hi
}

// ByPathLink returns ByPath as a full path under /dev/disk/by-path.
func (r RootDevice) ByPathLink() string {
	if r.ByPath == "" || strings.HasPrefix(r.ByPath, "/") {
		return r.ByPath
	}
	return "/dev/disk/by-path/" + r.ByPath
}

// NormalizeWWN returns a WWN as lower-case hex without its "0x", "naa."
// or "eui." prefix, so lsblk's and sysfs's spellings compare equal (and
// without the "wwn-" of a /dev/disk/by-id name, which comes before them).
func NormalizeWWN(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "wwn-")
	for _, p := range []string{"0x", "naa.", "eui."} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

var (
	// hintRE is what serial and model hints may hold: printable ASCII a
	// disk reports, without quotes or shell metacharacters to worry about
	// in messages.
	hintRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 _.:/+-]{0,127}$`)
	wwnRE    = regexp.MustCompile(`^(0x|naa\.|eui\.)?[0-9a-fA-F]{16}([0-9a-fA-F]{16})?$`)
	byPathRE = regexp.MustCompile(`^(/dev/disk/by-path/)?[A-Za-z0-9][A-Za-z0-9_.:+-]{0,200}$`)
	sizeRE   = regexp.MustCompile(`^([0-9]{1,19})\s*([KMGT]i?B|B)?$`)
)

// ParseSize reads a byte count: digits, optionally followed by B, KB, MB,
// GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%s is not a size like 480GB or 1TiB", quoteShort(s))
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is too large", quoteShort(s))
	}
	mult := int64(1)
	if u := m[2]; len(u) > 1 {
		base := int64(1000)
		if strings.Contains(u, "i") {
			base = 1024
		}
		for range strings.Index("KMGT", u[:1]) + 1 {
			mult *= base
		}
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%s is too large", quoteShort(s))
	}
	return n * mult, nil
}

// Validate checks the hints on their own, as an activity does with its
// input; it returns FieldErrors or nil.
func (r RootDevice) Validate() error {
	if errs := r.validate("root_device"); len(errs) > 0 {
		return errs
	}
	return nil
}

// validate checks the hints; field names start with prefix.
func (r RootDevice) validate(prefix string) FieldErrors {
	var errs FieldErrors
	add := func(field, value, reason string) {
		errs = append(errs, FieldError{Field: prefix + "." + field, Value: value, Reason: reason})
	}
	if r.IsZero() {
		add("", "", "give at least one hint: serial, wwn, model, by_path, min_size or max_size")
		errs[0].Field = prefix
		return errs
	}
	if r.Serial != "" && !hintRE.MatchString(strings.TrimSpace(r.Serial)) {
		add("serial", r.Serial, "must be the serial as lsblk shows it: letters, digits, space and _ . : / + -")
	}
	if r.Model != "" && !hintRE.MatchString(strings.TrimSpace(r.Model)) {
		add("model", r.Model, "must be the model as lsblk shows it: letters, digits, space and _ . : / + -")
	}
	if r.WWN != "" && !wwnRE.MatchString(r.WWN) {
		add("wwn", r.WWN, `must be 16 or 32 hex digits, optionally after "0x", "naa." or "eui."`)
	}
	if r.ByPath != "" && (!byPathRE.MatchString(r.ByPath) || strings.Contains(r.ByPath, "..")) {
		add("by_path", r.ByPath, "must be a /dev/disk/by-path link name such as pci-0000:00:1f.2-ata-1")
	}
	var lo, hi int64 = -1, -1
	if r.MinSize != "" {
		n, err := ParseSize(r.MinSize)
		if err != nil {
			add("min_size", r.MinSize, "must be a size like 480GB or 1TiB")
		} else {
			lo = n
		}
	}
	if r.MaxSize != "" {
		n, err := ParseSize(r.MaxSize)
		if err != nil || n == 0 {
			add("max_size", r.MaxSize, "must be a size like 480GB or 1TiB, above zero")
		} else {
			hi = n
		}
	}
	if lo >= 0 && hi >= 0 && lo > hi {
		add("max_size", r.MaxSize, "is below min_size "+r.MinSize)
	}
	return errs
}

// ResolvedDisk is the disk a live system resolved a host's target to, as
// recorded in the write's result and shown in the status query.
type ResolvedDisk struct {
	// Path is the device the image went to on that boot, e.g. /dev/sdb.
	Path   string `json:"path"`
	Serial string `json:"serial,omitempty"`
	WWN    string `json:"wwn,omitempty"`
	Model  string `json:"model,omitempty"`
	Size   int64  `json:"size"`
	// ByPath are the disk's /dev/disk/by-path links (none without udev).
	ByPath []string `json:"by_path,omitempty"`
	// Hints are the hints it was resolved from, as RootDevice.String.
	Hints string `json:"hints,omitempty"`
	// Source is what listed the disks: "lsblk" or "rackflow-diskhelper"
	// (sysfs, on live systems without lsblk).
	Source string `json:"source,omitempty"`
}

// String describes the disk in one line for messages and the starter.
func (d ResolvedDisk) String() string {
	s := fmt.Sprintf("%s (%d bytes", d.Path, d.Size)
	if d.Serial != "" {
		s += ", serial " + d.Serial
	}
	if d.WWN != "" {
		s += ", wwn " + d.WWN
	}
	if d.Model != "" {
		s += ", model " + d.Model
	}
	return s + ")"
}
