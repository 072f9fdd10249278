package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

// Error types of root-device resolution; both non-retryable: the disks
// will not change while the live system runs.
const (
	// ErrTypeRootDeviceNotFound: no whole disk matches the hints.
	ErrTypeRootDeviceNotFound = "RootDeviceNotFound"
	// ErrTypeRootDeviceAmbiguous: more than one whole disk matches.
	ErrTypeRootDeviceAmbiguous = "RootDeviceAmbiguous"
)

// LsblkColumns are the columns the live system's lsblk is asked for;
// rackflow-diskhelper's `disks` prints the same JSON from sysfs.
const LsblkColumns = "NAME,SERIAL,WWN,SIZE,MODEL,TYPE,TRAN,RO"

// listDisksScript prints arch=, then the disks as lsblk JSON between
// "lsblk<" and ">lsblk" lines when lsblk is there (else "lsblk=none"),
// then one "bypath=LINK TARGET" line per /dev/disk/by-path link.
const listDisksScript = `echo "arch=$(uname -m)"
if command -v lsblk >/dev/null 2>&1; then
  echo "lsblk<"
  lsblk -J -b -d -o ` + LsblkColumns + ` || echo "lsblk failed: $?"
  echo ">lsblk"
else echo "lsblk=none"; fi
if [ -d /dev/disk/by-path ]; then
  for l in /dev/disk/by-path/*; do
    [ -L "$l" ] && echo "bypath=$l $(readlink -f "$l")"
  done
fi
`

// Disk is one whole disk a live system lists.
type Disk struct {
	Name   string // kernel name: sda, nvme0n1, vda
	Serial string
	WWN    string
	Model  string
	Size   int64
	Type   string // disk, rom, loop...
	Tran   string
	RO     bool
	ByPath []string
}

// Path is the disk's device node.
func (d Disk) Path() string { return "/dev/" + d.Name }

func (d Disk) String() string {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	s := fmt.Sprintf("%s (serial %s, wwn %s, model %s, %d bytes", d.Path(), dash(d.Serial), dash(d.WWN), dash(d.Model), d.Size)
	if len(d.ByPath) > 0 {
		s += ", by-path " + strings.Join(d.ByPath, " ")
	}
	return s + ")"
}

func (d Disk) resolved(h api.RootDevice, source string) api.ResolvedDisk {
	return api.ResolvedDisk{Path: d.Path(), Serial: d.Serial, WWN: d.WWN, Model: d.Model, Size: d.Size,
		ByPath: d.ByPath, Hints: h.String(), Source: source}
}

// lsblkOutput is `lsblk -J -b`'s document. Older lsblk (before 2.33 or
// so) prints every value as a string, newer ones numbers and booleans;
// flexible reads both.
type lsblkOutput struct {
	BlockDevices []struct {
		Name   flexible `json:"name"`
		Serial flexible `json:"serial"`
		WWN    flexible `json:"wwn"`
		Size   flexible `json:"size"`
		Model  flexible `json:"model"`
		Type   flexible `json:"type"`
		Tran   flexible `json:"tran"`
		RO     flexible `json:"ro"`
	} `json:"blockdevices"`
}

// flexible is a JSON string, number, boolean or null, kept as text.
type flexible string

func (f *flexible) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*f = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexible(strings.TrimSpace(s))
	default:
		*f = flexible(b)
	}
	return nil
}

// ParseLsblk reads lsblk's JSON (or rackflow-diskhelper's, the same
// shape) into the whole disks it lists: partitions, loop devices,
// optical drives and zram are left out, they are never a root device.
func ParseLsblk(doc []byte) ([]Disk, error) {
	var out lsblkOutput
	if err := json.Unmarshal(doc, &out); err != nil {
		return nil, fmt.Errorf("parse lsblk output: %w", err)
	}
	var disks []Disk
	for _, b := range out.BlockDevices {
		d := Disk{Name: string(b.Name), Serial: string(b.Serial), WWN: string(b.WWN), Model: string(b.Model),
			Type: string(b.Type), Tran: string(b.Tran), RO: b.RO == "true" || b.RO == "1"}
		if d.Name == "" || strings.ContainsAny(d.Name, "/ \t\n") {
			return nil, fmt.Errorf("parse lsblk output: a device named %q", d.Name)
		}
		var err error
		if d.Size, err = strconv.ParseInt(string(b.Size), 10, 64); err != nil {
			return nil, fmt.Errorf("parse lsblk output: %s: size %q is not a byte count (lsblk without -b?)", d.Name, b.Size)
		}
		if d.Type != "disk" || strings.HasPrefix(d.Name, "zram") {
			continue
		}
		disks = append(disks, d)
	}
	return disks, nil
}

// matches reports whether d satisfies every hint in h.
func matches(h api.RootDevice, d Disk) bool {
	lo, hi := h.Sizes()
	switch {
	case h.Serial != "" && strings.TrimSpace(h.Serial) != d.Serial:
		return false
	case h.WWN != "" && (d.WWN == "" || api.NormalizeWWN(h.WWN) != api.NormalizeWWN(d.WWN)):
		return false
	case h.Model != "" && strings.TrimSpace(h.Model) != d.Model:
		return false
	case h.ByPath != "" && !slices.Contains(d.ByPath, h.ByPathLink()):
		return false
	case d.Size < lo || d.Size > hi:
		return false
	}
	return true
}

// MatchRootDevice returns the one disk that satisfies every hint, or a
// non-retryable RootDeviceNotFound or RootDeviceAmbiguous error listing
// the candidates, so the operator sees what the host has.
func MatchRootDevice(h api.RootDevice, disks []Disk) (Disk, error) {
	var hit []Disk
	for _, d := range disks {
		if matches(h, d) {
			hit = append(hit, d)
		}
	}
	list := func(ds []Disk) string {
		if len(ds) == 0 {
			return "none"
		}
		s := make([]string, len(ds))
		for i, d := range ds {
			s[i] = d.String()
		}
		return strings.Join(s, "; ")
	}
	switch len(hit) {
	case 1:
		return hit[0], nil
	case 0:
		msg := fmt.Sprintf("root device hints %s match no disk; the live system has: %s", h, list(disks))
		if h.ByPath != "" && !slices.ContainsFunc(disks, func(d Disk) bool { return len(d.ByPath) > 0 }) {
			msg += " (no /dev/disk/by-path links at all: the live system runs no udev)"
		}
		return Disk{}, activities.NonRetryable(msg, ErrTypeRootDeviceNotFound, nil, candidates(disks))
	default:
		return Disk{}, activities.NonRetryable(fmt.Sprintf("root device hints %s match %d disks, refusing to guess: %s", h, len(hit), list(hit)),
			ErrTypeRootDeviceAmbiguous, nil, candidates(hit))
	}
}

func candidates(ds []Disk) []api.ResolvedDisk {
	out := make([]api.ResolvedDisk, len(ds))
	for i, d := range ds {
		out[i] = d.resolved(api.RootDevice{}, "")
	}
	return out
}

// parseListing reads listDisksScript's answer: the host's architecture,
// lsblk's JSON when it ran, and the by-path links by target.
func parseListing(out []byte) (arch string, lsblk []byte, byPath map[string][]string, err error) {
	byPath = map[string][]string{}
	var in bool
	var doc bytes.Buffer
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "lsblk<":
			in = true
		case line == ">lsblk":
			in = false
			lsblk = doc.Bytes()
		case in:
			doc.WriteString(line + "\n")
		case strings.HasPrefix(line, "arch="):
			arch = strings.TrimPrefix(line, "arch=")
		case strings.HasPrefix(line, "bypath="):
			link, target, ok := strings.Cut(strings.TrimPrefix(line, "bypath="), " ")
			if ok && strings.HasPrefix(target, "/dev/") {
				byPath[target] = append(byPath[target], link)
			}
		}
	}
	if in {
		return "", nil, nil, fmt.Errorf("list disks: lsblk's output was cut short: %q", remote.TailLines(out, remote.StderrTailLines))
	}
	return arch, lsblk, byPath, nil
}

// resolveRootDevice lists the host's disks (lsblk, else the disk
// helper's sysfs reading) and picks the one the hints name. info gets
// the host's architecture and, when it had to be installed, the helper.
func (a *Activities) resolveRootDevice(ctx context.Context, c *ssh.Client, host string, h api.RootDevice, info *diskInfo) (api.ResolvedDisk, error) {
	out, err := remote.Output(ctx, c, "LC_ALL=C sh -s", strings.NewReader(listDisksScript))
	if err != nil {
		return api.ResolvedDisk{}, fmt.Errorf("list disks: %w", err)
	}
	arch, doc, byPath, err := parseListing(out)
	if err != nil {
		return api.ResolvedDisk{}, err
	}
	info.arch = arch
	source := "lsblk"
	if doc == nil {
		// No lsblk (a busybox live system): the helper reads sysfs.
		a.installHelper(ctx, c, host, info)
		if info.helper == "" {
			return api.ResolvedDisk{}, activities.NonRetryable(
				"root device hints need lsblk or rackflow-diskhelper on the live system, and it has neither", ErrTypeRootDeviceNotFound, nil)
		}
		if doc, err = remote.Output(ctx, c, remote.Quote(info.helper)+" disks", nil); err != nil {
			return api.ResolvedDisk{}, fmt.Errorf("list disks with %s: %w", info.helper, err)
		}
		source = "rackflow-diskhelper"
	}
	disks, err := ParseLsblk(doc)
	if err != nil {
		return api.ResolvedDisk{}, err
	}
	for i := range disks {
		disks[i].ByPath = byPath[disks[i].Path()]
		slices.Sort(disks[i].ByPath)
	}
	d, err := MatchRootDevice(h, disks)
	if err != nil {
		return api.ResolvedDisk{}, err
	}
	return d.resolved(h, source), nil
}
