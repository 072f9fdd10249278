package image

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// diskScript prints what it learns about $1: kind=, size=, one mounted=
// line per mount or swap that uses it (the device itself, one of its
// partitions, or, for a file, a bind mount onto it), direct=1 when it can
// be opened with O_DIRECT (not on tmpfs, say), and one tool= line per
// program of interest the host has.
const diskScript = `d=$1
if [ -b "$d" ]; then kind=block; size=$(blockdev --getsize64 "$d") || exit 4
elif [ -f "$d" ]; then kind=file; size=$(stat -L -c %s "$d") || exit 4
else echo "kind=none"; exit 0; fi
echo "kind=$kind"; echo "size=$size"
real=$(readlink -f "$d")
used=
while read -r src mnt rest; do
  s=$src
  case "$src" in /*) s=$(readlink -f "$src" 2>/dev/null || echo "$src");; esac
  hit=
  if [ "$mnt" = "$real" ] || [ "$s" = "$real" ]; then hit=1; fi
  if [ "$kind" = block ]; then case "$s" in "$real"[0-9]*|"$real"p[0-9]*) hit=1;; esac; fi
  if [ -n "$hit" ]; then echo "mounted=$src on $mnt"; used=1; fi
done < /proc/mounts
if [ -r /proc/swaps ]; then
  while read -r src rest; do
    case "$src" in /*) s=$(readlink -f "$src" 2>/dev/null || echo "$src");; *) continue;; esac
    if [ "$s" = "$real" ]; then echo "mounted=$src as swap"; used=1; fi
    if [ "$kind" = block ]; then case "$s" in "$real"[0-9]*|"$real"p[0-9]*) echo "mounted=$src as swap"; used=1;; esac; fi
  done < /proc/swaps
fi
[ -n "$used" ] && exit 0
if dd if=/dev/null of="$d" oflag=direct conv=notrunc count=0 status=none 2>/dev/null; then echo direct=1; fi
echo "arch=$(uname -m)"
for t in curl wget gzip zstd xz openssl; do
  if command -v "$t" >/dev/null 2>&1; then echo "tool=$t"; fi
done
`

// diskInfo is what checkDisk learnt about the disk and the host.
type diskInfo struct {
	kind   string // block or file
	direct bool   // dd oflag=direct works on it
	tools  map[string]bool
	arch   string // uname -m
	helper string // path of rackflow-diskhelper on the host, if installed
}

// ioMode is the helper's argument for how to open the disk.
func (d diskInfo) ioMode() string {
	if d.direct {
		return "direct"
	}
	return "buffered"
}

// checkDisk refuses a disk that is missing, in use or too small.
func checkDisk(ctx context.Context, c *ssh.Client, disk string, need int64) (diskInfo, error) {
	out, err := remote.Output(ctx, c, "LC_ALL=C sh -s -- "+remote.Quote(disk), strings.NewReader(diskScript))
	if err != nil {
		return diskInfo{}, fmt.Errorf("check disk %s: %w", disk, err)
	}
	info := diskInfo{tools: map[string]bool{}}
	size := int64(-1)
	var mounts []string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "kind":
			info.kind = v
		case "size":
			size, _ = strconv.ParseInt(v, 10, 64)
		case "mounted":
			mounts = append(mounts, v)
		case "direct":
			info.direct = v == "1"
		case "tool":
			info.tools[v] = true
		case "arch":
			info.arch = v
		}
	}
	switch {
	case info.kind == "none":
		return info, activities.NonRetryable(fmt.Sprintf("disk %s: not a block device on the host", disk), activities.ErrTypeDiskNotFound, nil)
	case info.kind == "" || size < 0:
		return info, fmt.Errorf("check disk %s: unexpected answer %q", disk, remote.TailLines(out, remote.StderrTailLines))
	case len(mounts) > 0:
		return info, activities.NonRetryable(fmt.Sprintf("disk %s is in use: %s", disk, strings.Join(mounts, "; ")), activities.ErrTypeDiskMounted, nil)
	case size < need:
		return info, activities.NonRetryable(fmt.Sprintf("disk %s has %d bytes, the image needs %d", disk, size, need), activities.ErrTypeDiskTooSmall, nil)
	}
	return info, nil
}

// ddError turns a failed dd on the host into the activity's error: a full
// disk is final, anything else may be a passing fault.
func ddError(offset int64, exit int, stderrTail string) error {
	msg := fmt.Sprintf("write image at %d: writer exited %d: %s", offset, exit, stderrTail)
	if strings.Contains(stderrTail, "No space left on device") || strings.Contains(stderrTail, "File too large") {
		return activities.NonRetryable(msg, ErrTypeDiskFull, nil)
	}
	return temporal.NewApplicationError(msg, ErrTypeWriteFailed)
}
