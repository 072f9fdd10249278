package image

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

// ErrTypeEraseNotVerified: a region read back with bytes that are not
// zero after it was erased. Non-retryable: the disk does not do what it
// was told, a human must look.
const ErrTypeEraseNotVerified = "EraseNotVerified"

// EraseInput is the input of EraseDisk.
type EraseInput struct {
	Host   string        `json:"host"`
	Target remote.Target `json:"target"` // HostKey required
	// Disk or RootDevice names the disk, as in WriteInput.
	Disk       string          `json:"disk,omitempty"`
	RootDevice *api.RootDevice `json:"root_device,omitempty"`
	// Full zeroes the whole disk and reads all of it back.
	Full bool `json:"full,omitempty"`
}

// eraseProbeScript prints size=, one part=NAME START LENGTH line (bytes)
// per partition the kernel knows of, discard=1 when the device takes
// discards, and one tool= line per erase tool the host has.
const eraseProbeScript = `d=$1
if [ -b "$d" ]; then size=$(blockdev --getsize64 "$d") || exit 4
  name=$(basename "$(readlink -f "$d")")
  sys=/sys/class/block/$name
  if [ -d "$sys" ]; then
    for p in "$sys"/"$name"*; do
      [ -f "$p/partition" ] || continue
      echo "part=$(basename "$p") $(( $(cat "$p/start") * 512 )) $(( $(cat "$p/size") * 512 ))"
    done
    dm=$(cat "$sys/queue/discard_max_bytes" 2>/dev/null || echo 0)
    [ "$dm" != 0 ] && echo "discard=1"
  fi
elif [ -f "$d" ]; then size=$(stat -L -c %s "$d") || exit 4
else echo "size=none"; exit 0; fi
echo "size=$size"
for t in blkdiscard wipefs; do command -v "$t" >/dev/null 2>&1 && echo "tool=$t"; done
exit 0
`

// zeroScript writes zeroes over regions: its arguments are the disk
// followed by START COUNT pairs in 512-byte sectors; then it syncs.
const zeroScript = `d=$1; shift
while [ $# -ge 2 ]; do
  dd if=/dev/zero of="$d" bs=512 seek="$1" count="$2" conv=notrunc 2>/tmp/rackflow-erase.err || { cat /tmp/rackflow-erase.err >&2; exit 3; }
  shift 2
done
sync
`

// fullZeroScript writes zeroes over the whole disk: DISK and its size in
// 64 KiB blocks and the 512-byte sectors past them.
const fullZeroScript = `d=$1
dd if=/dev/zero of="$d" bs=65536 count="$2" conv=notrunc 2>/tmp/rackflow-erase.err || { cat /tmp/rackflow-erase.err >&2; exit 3; }
if [ "$3" -gt 0 ]; then dd if=/dev/zero of="$d" bs=512 seek="$(( $2 * 128 ))" count="$3" conv=notrunc 2>/dev/null || exit 3; fi
sync
`

// verifyZeroScript reads regions back (DISK, then START COUNT pairs in
// 512-byte sectors, or "all") and prints, per region, how many of its
// bytes are not zero. Caches are dropped first where the host lets us,
// so the bytes come from the device.
const verifyZeroScript = `d=$1; shift
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
if [ "$1" = all ]; then
  echo "nonzero=$(dd if="$d" bs=65536 2>/dev/null | tr -d '\000' | wc -c)"; exit 0
fi
while [ $# -ge 2 ]; do
  echo "nonzero=$(dd if="$d" bs=512 skip="$1" count="$2" 2>/dev/null | tr -d '\000' | wc -c)"
  shift 2
done
`

// probe is what eraseProbeScript found.
type probe struct {
	size    int64
	parts   []partition
	discard bool
	tools   map[string]bool
}

type partition struct {
	name          string
	start, length int64
}

func parseProbe(out []byte) (probe, error) {
	p := probe{size: -1, tools: map[string]bool{}}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "size":
			if v == "none" {
				return p, errNoDisk
			}
			p.size, _ = strconv.ParseInt(v, 10, 64)
		case "part":
			f := strings.Fields(v)
			if len(f) != 3 {
				return p, fmt.Errorf("erase probe: partition line %q", line)
			}
			s, err1 := strconv.ParseInt(f[1], 10, 64)
			l, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil || s < 0 || l < 0 {
				return p, fmt.Errorf("erase probe: partition line %q", line)
			}
			p.parts = append(p.parts, partition{name: f[0], start: s, length: l})
		case "discard":
			p.discard = v == "1"
		case "tool":
			p.tools[v] = true
		}
	}
	if p.size < 0 {
		return p, fmt.Errorf("erase probe: unexpected answer %q", remote.TailLines(out, remote.StderrTailLines))
	}
	return p, nil
}

var errNoDisk = errors.New("no such disk")

// eraseRegions are the first and last MiB of the disk and of each
// partition, clipped to what each holds, in 512-byte sectors.
func eraseRegions(size int64, parts []partition) []api.EraseRegion {
	const mib = 1 << 20
	var out []api.EraseRegion
	add := func(what string, start, length int64) {
		n := min(length, mib)
		if n <= 0 {
			return
		}
		out = append(out, api.EraseRegion{What: what + " start", Offset: start, Length: n})
		if length > mib {
			out = append(out, api.EraseRegion{What: what + " end", Offset: start + length - n, Length: n})
		}
	}
	add("disk", 0, size)
	for _, p := range parts {
		add(p.name, p.start, p.length)
	}
	return out
}

// sectorArgs turns regions into the scripts' START COUNT arguments.
func sectorArgs(rs []api.EraseRegion) []string {
	var a []string
	for _, r := range rs {
		a = append(a, strconv.FormatInt(r.Offset/512, 10), strconv.FormatInt(r.Length/512, 10))
	}
	return a
}

// EraseDisk erases the host's disk so nothing on it can boot, mount or
// assemble again: a discard of the whole disk when the device takes them,
// else wipefs -a and zeroes over the first and last MiB of the disk and
// of each partition (partition tables, boot sectors, file system and RAID
// superblocks), or zeroes over all of it when in.Full. Then it reads the
// erased bytes back from the device and fails unless every one is zero.
// A disk named by root-device hints is resolved first, as WriteImage does.
func (a *Activities) EraseDisk(ctx context.Context, in EraseInput) (api.EraseReport, error) {
	start := time.Now()
	switch {
	case in.RootDevice != nil && in.Disk != "":
		return api.EraseReport{}, activities.InvalidInput(errors.New("give disk or root_device, not both"))
	case in.RootDevice != nil:
		if err := in.RootDevice.Validate(); err != nil {
			return api.EraseReport{}, activities.InvalidInput(err)
		}
	case !strings.HasPrefix(in.Disk, "/"):
		return api.EraseReport{}, activities.InvalidInput(fmt.Errorf("disk %q: must be an absolute path", in.Disk))
	}
	var phase string
	stop := activities.KeepAlive(ctx, activities.OrDefault(a.HeartbeatEvery, 5*time.Second), func() any { return phase })
	defer stop()
	c, err := a.Dialer.Dial(ctx, in.Target)
	if err != nil {
		return api.EraseReport{}, remote.AppError(fmt.Errorf("erase disk: %w", err))
	}
	defer c.Close()
	rep := api.EraseReport{Disk: in.Disk}
	if in.RootDevice != nil {
		var info diskInfo
		r, err := a.resolveRootDevice(ctx, c, in.Host, *in.RootDevice, &info)
		if err != nil {
			return api.EraseReport{}, err
		}
		rep.Disk, rep.Resolved = r.Path, &r
	}
	// Refuse a disk that is missing or in use, as a write would.
	if _, err := checkDisk(ctx, c, rep.Disk, 0); err != nil {
		return api.EraseReport{}, err
	}
	out, err := remote.Output(ctx, c, "LC_ALL=C sh -s -- "+remote.Quote(rep.Disk), strings.NewReader(eraseProbeScript))
	if err != nil {
		return api.EraseReport{}, fmt.Errorf("erase disk %s: probe: %w", rep.Disk, err)
	}
	pr, err := parseProbe(out)
	if errors.Is(err, errNoDisk) {
		return api.EraseReport{}, activities.NonRetryable(fmt.Sprintf("disk %s: not on the host", rep.Disk), activities.ErrTypeDiskNotFound, nil)
	} else if err != nil {
		return api.EraseReport{}, err
	}
	if pr.size%512 != 0 {
		return api.EraseReport{}, activities.NonRetryable(fmt.Sprintf("disk %s is %d bytes, not whole 512-byte sectors", rep.Disk, pr.size), activities.ErrTypeInvalidInput, nil)
	}
	rep.Size = pr.size
	for _, p := range pr.parts {
		rep.Partitions = append(rep.Partitions, fmt.Sprintf("%s %d+%d", p.name, p.start, p.length))
	}
	log := activity.GetLogger(ctx)
	log.Info("erasing disk", "host", in.Host, "disk", rep.Disk, "size", rep.Size, "partitions", len(pr.parts), "discard", pr.discard, "full", in.Full)

	if in.Full {
		phase = "overwrite"
		rep.Method = api.EraseFull
		blocks, rest := pr.size/65536, (pr.size%65536)/512
		if err := runErase(ctx, c, fullZeroScript, rep.Disk, strconv.FormatInt(blocks, 10), strconv.FormatInt(rest, 10)); err != nil {
			return api.EraseReport{}, err
		}
		phase = "verify"
		bad, err := verifyZero(ctx, c, rep.Disk, []string{"all"})
		if err != nil {
			return api.EraseReport{}, err
		}
		if bad[0] != 0 {
			return api.EraseReport{}, activities.NonRetryable(fmt.Sprintf("disk %s: %d bytes read back non-zero after a full overwrite", rep.Disk, bad[0]), ErrTypeEraseNotVerified, nil)
		}
		rep.VerifiedBytes = pr.size
		rep.Regions = []api.EraseRegion{{What: "whole disk", Offset: 0, Length: pr.size}}
		rep.Duration = time.Since(start).Round(time.Millisecond).String()
		return rep, nil
	}

	regions := eraseRegions(pr.size, pr.parts)
	rep.Regions = regions
	if pr.discard && pr.tools["blkdiscard"] {
		phase = "discard"
		rep.Method = api.EraseDiscard
		if _, stderr, code, err := remote.Run(ctx, c, "blkdiscard "+remote.Quote(rep.Disk), nil); err != nil {
			return api.EraseReport{}, fmt.Errorf("erase disk %s: blkdiscard: %w", rep.Disk, err)
		} else if code != 0 {
			// A device that advertises discard and refuses it: zero instead.
			rep.Notes = append(rep.Notes, "blkdiscard failed ("+strings.TrimSpace(remote.TailLines(stderr, 2))+"): zeroed the regions instead")
			rep.Method = api.EraseRegions
		}
	} else {
		rep.Method = api.EraseRegions
		if pr.discard {
			rep.Notes = append(rep.Notes, "the disk takes discards but the live system has no blkdiscard")
		}
	}
	if rep.Method == api.EraseDiscard {
		// Discarded blocks need not read back as zeroes on every device:
		// where they do not, zero the regions that matter.
		phase = "verify"
		bad, err := verifyZero(ctx, c, rep.Disk, sectorArgs(regions))
		if err != nil {
			return api.EraseReport{}, err
		}
		if sum(bad) == 0 {
			rep.VerifiedBytes = total(regions)
			rep.Duration = time.Since(start).Round(time.Millisecond).String()
			return rep, nil
		}
		rep.Notes = append(rep.Notes, "discarded blocks did not read back as zeroes: zeroed the regions as well")
	}
	if pr.tools["wipefs"] {
		phase = "wipefs"
		// Partitions first: their signatures are gone once the table is.
		var args []string
		for _, p := range pr.parts {
			args = append(args, remote.Quote("/dev/"+p.name))
		}
		args = append(args, remote.Quote(rep.Disk))
		if _, stderr, code, err := remote.Run(ctx, c, "wipefs -a "+strings.Join(args, " "), nil); err != nil {
			return api.EraseReport{}, fmt.Errorf("erase disk %s: wipefs: %w", rep.Disk, err)
		} else if code != 0 {
			rep.Notes = append(rep.Notes, "wipefs -a failed ("+strings.TrimSpace(remote.TailLines(stderr, 2))+"); the zeroed regions cover the usual signatures")
		} else {
			rep.Wiped = true
		}
	} else {
		rep.Notes = append(rep.Notes, "no wipefs on the live system: the zeroed regions cover partition tables and the usual signatures")
	}
	phase = "zero"
	if err := runErase(ctx, c, zeroScript, rep.Disk, sectorArgs(regions)...); err != nil {
		return api.EraseReport{}, err
	}
	phase = "verify"
	bad, err := verifyZero(ctx, c, rep.Disk, sectorArgs(regions))
	if err != nil {
		return api.EraseReport{}, err
	}
	for i, n := range bad {
		if n != 0 {
			r := regions[i]
			return api.EraseReport{}, activities.NonRetryable(fmt.Sprintf("disk %s: %s (%d bytes at %d) read back with %d non-zero bytes after zeroing", rep.Disk, r.What, r.Length, r.Offset, n),
				ErrTypeEraseNotVerified, nil, rep)
		}
	}
	rep.VerifiedBytes = total(regions)
	rep.Duration = time.Since(start).Round(time.Millisecond).String()
	log.Info("disk erased", "host", in.Host, "disk", rep.Disk, "method", rep.Method, "verified_bytes", rep.VerifiedBytes)
	return rep, nil
}

func runErase(ctx context.Context, c *ssh.Client, script, disk string, args ...string) error {
	cmd := "LC_ALL=C sh -c " + remote.Quote(script) + " sh " + remote.Quote(disk) + " " + strings.Join(args, " ")
	_, stderr, code, err := remote.Run(ctx, c, cmd, nil)
	if err != nil {
		return fmt.Errorf("erase disk %s: %w", disk, err)
	}
	if code != 0 {
		return fmt.Errorf("erase disk %s: writer exited %d: %s", disk, code, remote.TailLines(stderr, remote.StderrTailLines))
	}
	return nil
}

// verifyZero returns, per region, how many bytes read back non-zero.
func verifyZero(ctx context.Context, c *ssh.Client, disk string, args []string) ([]int64, error) {
	cmd := "LC_ALL=C sh -c " + remote.Quote(verifyZeroScript) + " sh " + remote.Quote(disk) + " " + strings.Join(args, " ")
	out, err := remote.Output(ctx, c, cmd, nil)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", disk, err)
	}
	var got []int64
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "nonzero="); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("read back %s: %q", disk, line)
			}
			got = append(got, n)
		}
	}
	want := len(args) / 2
	if len(args) == 1 {
		want = 1
	}
	if len(got) != want {
		return nil, fmt.Errorf("read back %s: %d answers for %d regions: %q", disk, len(got), want, remote.TailLines(out, remote.StderrTailLines))
	}
	return got, nil
}

func sum(v []int64) (n int64) {
	for _, x := range v {
		n += x
	}
	return n
}

func total(rs []api.EraseRegion) (n int64) {
	for _, r := range rs {
		n += r.Length
	}
	return n
}
