package image

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// pullPlan is what the host found out about the image before a pull.
type pullPlan struct {
	fallback string // why the host cannot pull; "" when it can
	fetcher  string // curl or wget
	format   string
	ranges   bool // the server answered a Range request with 206
}

// probeScript fetches the image's first 16 bytes on the host with $2
// (curl or wget) and prints rc=, code=, range=, length= and magic= (hex).
// A server that ignores Range sends the whole file: head cuts it off.
const probeScript = `u=$1 f=$2
t=$(mktemp -d) || exit 70
trap 'rm -rf "$t"' EXIT
case $f in
curl) { curl -sS -L --connect-timeout 30 -r 0-15 -D "$t/h" "$u" 2>"$t/e"; echo $? > "$t/rc"; } | head -c 16 > "$t/b";;
wget) { wget -S -q -O - --header='Range: bytes=0-15' "$u" 2>"$t/h"; echo $? > "$t/rc"; } | head -c 16 > "$t/b"
      grep -v '^ ' "$t/h" > "$t/e";;
esac
hdr() { tr -d '\r' < "$t/h" | sed -n "s/^ *$1: *//Ip" | tail -n 1; }
echo "rc=$(cat "$t/rc")"
echo "code=$(tr -d '\r' < "$t/h" | sed -n 's/^ *HTTP\/[^ ]* \([0-9][0-9]*\).*/\1/p' | tail -n 1)"
echo "range=$(hdr content-range)"
echo "length=$(hdr content-length)"
echo "magic=$(od -An -tx1 "$t/b" | tr -d ' \n')"
echo "err=$(tail -c 300 "$t/e" | tr '\n' ' ')"
`

// planPull decides whether the host can pull the image, and how.
func (a *Activities) planPull(ctx context.Context, c *ssh.Client, in WriteInput, path string, disk diskInfo) (*pullPlan, error) {
	if path != "" {
		return &pullPlan{fallback: "the image is a file on the worker"}, nil
	}
	fetchers := a.PullFetchers
	if fetchers == nil {
		fetchers = []string{"curl", "wget"}
	}
	p := &pullPlan{}
	for _, f := range fetchers {
		if (f == "curl" || f == "wget") && disk.tools[f] {
			p.fetcher = f
			break
		}
	}
	if p.fetcher == "" {
		p.fallback = fmt.Sprintf("the host has none of %s", strings.Join(fetchers, ", "))
		return p, nil
	}
	cmd := fmt.Sprintf("LC_ALL=C sh -c %s sh %s %s", remote.Quote(probeScript), remote.Quote(in.Image.URL), p.fetcher)
	out, err := remote.Output(ctx, c, cmd, nil)
	if err != nil {
		return nil, fmt.Errorf("probe image from the host: %w", err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	code, _ := strconv.Atoi(kv["code"])
	if code == 0 {
		msg := fmt.Sprintf("host could not fetch image %s with %s (exit %s): %s", in.Image.URL, p.fetcher, kv["rc"], kv["err"])
		return nil, temporal.NewApplicationError(msg, ErrTypeFetchFailed)
	}
	if err := statusError(code, in.Image.URL); err != nil {
		return nil, err
	}
	magic, _ := hex.DecodeString(kv["magic"])
	p.format = DetectFormat(magic)
	p.ranges = code == 206
	total := int64(-1)
	if code == 206 {
		if _, t, ok := parseContentRange(kv["range"]); ok {
			total = t
		}
	} else if n, err := strconv.ParseInt(kv["length"], 10, 64); err == nil {
		total = n
	}
	if p.format == FormatRaw && total >= 0 {
		if err := checkSize(in.Image, total); err != nil {
			return nil, err
		}
	}
	if tool := decompressTool(p.format); tool != "" && !disk.tools[tool] {
		p.fallback = fmt.Sprintf("the image is %s and the host has no %s", p.format, tool)
	}
	return p, nil
}

// pullScript fetches the image on the host and writes it with one dd per
// segment out of the same pipe, printing "committed N" once a segment is
// written and fsynced; then "status fetch=F decompress=D write=W" with the
// exit codes of the pipeline's parts. Arguments: url disk offset size
// segment fetcher decompressor ranged limit oflag helper helper-mode (with
// a helper path, rackflow-diskhelper writes in place of the dd loop, with
// the same output). With ranged=1 the fetch
// starts at offset; otherwise the image is fetched from its start and the
// first offset raw bytes are discarded.
const pullScript = `u=$1 disk=$2 off=$3 size=$4 seg=$5 fetcher=$6 dec=$7 rng=$8 limit=$9 oflag=${10} helper=${11} hmode=${12}
t=$(mktemp -d) || exit 70
trap 'rm -rf "$t"' EXIT
fetch() {
  from=0; if [ "$rng" = 1 ]; then from=$off; fi
  case $fetcher in
  curl) set -- -fsS -L --connect-timeout 30
        if [ "$from" -gt 0 ]; then set -- "$@" -r "$from-"; fi
        if [ "$limit" -gt 0 ]; then set -- "$@" --limit-rate "$limit"; fi
        curl "$@" "$u";;
  wget) wget -q -O - "$u";;
  esac
}
bytes() { n=$(printf '%s\n' "$1" | sed -n 's/^\([0-9][0-9]*\) bytes\{0,1\}.*/\1/p' | tail -n 1); echo "${n:-0}"; }
write() {
  pos=$off
  if [ "$rng" != 1 ] && [ "$off" -gt 0 ]; then
    r=$(dd of=/dev/null bs=4M count="$off" iflag=count_bytes,fullblock 2>&1) || { printf '%s\n' "$r" >&2; exit 3; }
    n=$(bytes "$r"); if [ "$n" -lt "$off" ]; then echo "short $n"; exit 5; fi
  fi
  if [ -n "$helper" ]; then
    "$helper" write "$disk" "$off" "$size" "$seg" "$hmode" pull
    return
  fi
  while [ "$pos" -lt "$size" ]; do
    n=$((size - pos)); if [ "$n" -gt "$seg" ]; then n=$seg; fi
    r=$(dd of="$disk" bs=4M seek="$pos" count="$n" iflag=count_bytes,fullblock oflag="$oflag" conv=notrunc,fsync 2>&1) || { printf '%s\n' "$r" >&2; exit 3; }
    w=$(bytes "$r"); pos=$((pos + w))
    if [ "$w" -lt "$n" ]; then echo "short $pos"; exit 5; fi
    echo "committed $pos"
  done
  if [ "$(head -c 1 | wc -c)" -gt 0 ]; then echo long; exit 6; fi
}
if [ -z "$dec" ]; then
  { fetch; echo $? > "$t/f"; } | write; w=$?; echo 0 > "$t/d"
else
  { fetch; echo $? > "$t/f"; } | { $dec; echo $? > "$t/d"; } | write; w=$?
fi
echo "status fetch=$(cat "$t/f") decompress=$(cat "$t/d") write=$w"
`

// pullDecompressor is the host's command that decompresses format from
// stdin to stdout.
func pullDecompressor(format string) string {
	switch format {
	case FormatGzip:
		return "gzip -dc"
	case FormatZstd:
		return "zstd -dcq"
	case FormatXZ:
		return "xz -dc"
	}
	return ""
}

// pullOutput parses the pull script's stdout as it comes, committing
// progress.
type pullOutput struct {
	mu      sync.Mutex
	partial []byte
	commit  func(int64)
	short   int64
	long    bool
	status  map[string]int
}

func (o *pullOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.line(string(o.partial[:i]))
		o.partial = o.partial[i+1:]
	}
	return len(p), nil
}

func (o *pullOutput) line(l string) {
	f := strings.Fields(l)
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "committed", "short":
		if len(f) == 2 {
			if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				if f[0] == "committed" {
					o.commit(n)
				} else {
					o.short = n
				}
			}
		}
	case "long":
		o.long = true
	case "status":
		o.status = map[string]int{}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			o.status[k], _ = strconv.Atoi(v)
		}
	}
}

// pull has the host fetch and write the image.
func (a *Activities) pull(ctx context.Context, client *ssh.Client, in WriteInput, plan *pullPlan, disk diskInfo, prev Progress, segSize int64, tr *tracker) (streamed, error) {
	log := activity.GetLogger(ctx)
	offset := prev.Offset
	if prev.Format != "" && prev.Format != plan.format {
		log.Warn("image format changed since the previous attempt: starting over", "host", in.Host, "was", prev.Format, "now", plan.format)
		offset = 0
	}
	start := time.Now()
	tr.started(offset, nil, plan.format)
	if offset == in.Image.Size {
		return streamed{from: offset, format: plan.format}, nil
	}
	ranged := "0"
	if plan.format == FormatRaw && plan.ranges && plan.fetcher == "curl" {
		ranged = "1"
	}
	oflag := "seek_bytes"
	if disk.direct {
		oflag += ",direct"
	}
	args := []string{in.Image.URL, in.Disk, fmt.Sprint(offset), fmt.Sprint(in.Image.Size), fmt.Sprint(segSize),
		plan.fetcher, pullDecompressor(plan.format), ranged, fmt.Sprint(a.MaxBytesPerSecond), oflag, disk.helper, disk.ioMode()}
	cmd := "LC_ALL=C sh -c " + remote.Quote(pullScript) + " sh"
	for _, arg := range args {
		cmd += " " + remote.Quote(arg)
	}
	out := &pullOutput{commit: func(n int64) { tr.commit(n, nil) }}
	stderr := &remote.Tail{}
	exit := 0
	err := remote.Stream(ctx, client, cmd, nil, out, stderr)
	var ee *remote.ExitError
	if errors.As(err, &ee) {
		exit = ee.Status // the status line below says which part failed
	} else if err != nil {
		return streamed{}, fmt.Errorf("pull image on the host: %w", err)
	}
	if err := pullError(in, plan, out, exit, stderr.Bytes(), tr.get().Offset); err != nil {
		return streamed{}, err
	}
	return streamed{from: offset, bytes: in.Image.Size - offset, format: plan.format, dur: time.Since(start)}, nil
}

// pullError reads how the pull script ended (its status line, its exit and
// stderr, committed up to pos) and says why it failed; nil when it wrote
// the whole image.
func pullError(in WriteInput, plan *pullPlan, out *pullOutput, exit int, errText []byte, pos int64) error {
	errTail := remote.TailLines(errText, remote.StderrTailLines)
	out.mu.Lock()
	defer out.mu.Unlock()
	st := out.status
	switch {
	case st == nil:
		return fmt.Errorf("pull image on the host: exit %d: %s", exit, errTail)
	case st["write"] == 3:
		return ddError(pos, 1, errTail)
	case st["write"] == 6 || out.long:
		msg := fmt.Sprintf("image %s is longer than its declared %d bytes", in.Image.URL, in.Image.Size)
		return activities.NonRetryable(msg, activities.ErrTypeImageSizeMismatch, nil)
	case st["fetch"] != 0:
		msg := fmt.Sprintf("host's %s failed fetching image %s at %d (exit %d): %s", plan.fetcher, in.Image.URL, pos, st["fetch"], errTail)
		s := string(errText)
		if strings.Contains(s, "error: 404") || strings.Contains(s, "error: 410") {
			return activities.NonRetryable(msg, activities.ErrTypeImageNotFound, nil)
		}
		return temporal.NewApplicationError(msg, ErrTypeFetchFailed)
	case st["decompress"] != 0:
		msg := fmt.Sprintf("image %s: host's %s failed (exit %d): %s", in.Image.URL, pullDecompressor(plan.format), st["decompress"], errTail)
		s := strings.ToLower(string(errText))
		if strings.Contains(s, "unexpected end") || strings.Contains(s, "premature end") || strings.Contains(s, "truncated") {
			return activities.NonRetryable(msg, activities.ErrTypeImageTruncated, nil)
		}
		return activities.NonRetryable(msg, ErrTypeImageCorrupt, nil)
	case st["write"] == 5:
		msg := fmt.Sprintf("image %s ended at byte %d, expected %d bytes", in.Image.URL, out.short, in.Image.Size)
		return activities.NonRetryable(msg, activities.ErrTypeImageTruncated, nil)
	case st["write"] != 0 || exit != 0:
		return fmt.Errorf("pull image on the host: exit %d (write %d): %s", exit, st["write"], errTail)
	case pos != in.Image.Size:
		return fmt.Errorf("pull image on the host: committed %d of %d bytes", pos, in.Image.Size)
	}
	return nil
}
