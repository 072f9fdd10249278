// Package image writes an OS image onto a host's disk through the host's
// live system, over SSH. The image may be raw, gzip, zstd or xz (told by its
// first bytes) at an http(s) URL, a file:// URL or a local path. In push
// mode the worker reads and decompresses it and streams the raw bytes into
// dd on the host, hashing as it goes; in pull mode the host fetches it
// itself with curl or wget and the worker only steers and watches. Either
// way a retried attempt resumes from its last heartbeat and the disk is
// read back and hashed on the host before the activity succeeds. It is not
// an image store or converter, and it never partitions or mounts anything.
//
// Resume. Progress.Offset only ever names bytes that a dd on the host has
// written, fsynced and exited 0 for. A raw image resumes at that offset
// (an HTTP Range request, a seek). A compressed stream cannot be entered
// at a raw offset, so a resumed push reads the image from its start again,
// decompresses and hashes the prefix it discards, and carries on only if
// that prefix hashes to the state the previous attempt saved; otherwise
// the image changed under us and the attempt starts over at 0. A resumed
// pull of a compressed image has the host discard the prefix in the same
// way (without the hash comparison: the host keeps no state). Either way
// the prefix is never written twice with other bytes unnoticed: the final
// read-back covers the whole image, and only its digest decides success.
package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

// Error types only WriteImage raises. It also raises the shared
// activities.ErrTypeInvalidInput, ErrTypeDiskNotFound, ErrTypeDiskMounted,
// ErrTypeDiskTooSmall, ErrTypeImageNotFound, ErrTypeImageUnavailable (401,
// 403 and such), ErrTypeImageTruncated, ErrTypeImageSizeMismatch and
// ErrTypeImageChecksumMismatch. All are non-retryable except where said:
// retrying cannot fix them.
const (
	// ErrTypeImageCorrupt: a compressed image does not decompress.
	ErrTypeImageCorrupt = "ImageCorrupt"
	// ErrTypeDiskFull: dd on the host hit ENOSPC or EFBIG (a file-backed
	// disk on a full file system, a file size limit).
	ErrTypeDiskFull = "DiskFull"
	// ErrTypeWriteFailed: dd failed on the host. Retryable.
	ErrTypeWriteFailed = "DiskWriteFailed"
	// ErrTypeWorkerStopping: the worker is shutting down; the stream
	// stopped at a committed segment boundary. Retryable, resumes there.
	ErrTypeWorkerStopping = "WorkerStopping"
	// ErrTypeFetchFailed: in pull mode the host's curl or wget failed
	// (connection refused or dropped, a 5xx). Retryable.
	ErrTypeFetchFailed = "ImageFetchFailed"
)

// Transfer modes of WriteInput.Mode.
const (
	// ModePush: the worker reads the image and streams it over SSH.
	ModePush = "push"
	// ModePull: the host fetches the image over HTTP itself; the worker
	// stays out of the data path. It falls back to push for an image the
	// host cannot fetch (a path on the worker), a host without curl or
	// wget, or a compressed image the host has no decompressor for.
	ModePull = "pull"
)

// Activities writes images. Dialer is required; the rest have defaults.
type Activities struct {
	Dialer *remote.Dialer
	// HTTPClient fetches http(s) images. Nil: a client with connect and
	// response-header timeouts but no overall timeout (images are big).
	// It should not retry: Temporal retries the activity, which resumes.
	HTTPClient *http.Client
	// SegmentSize is how much one remote dd writes before the progress is
	// recorded: a retry resumes at a segment boundary, and the read-back
	// trails the write by about a segment. 64 MiB when zero.
	SegmentSize int64
	// HeartbeatEvery is how often progress is heartbeated while a segment
	// or the read-back runs; 5s when zero. Keep the activity's
	// HeartbeatTimeout well above both this and a segment's write time.
	HeartbeatEvery time.Duration
	// VerifyAfterWrite reads the whole image back once the write is done,
	// instead of segment by segment while it runs (each segment after its
	// dd has fsynced and exited). Slower; it also catches a write that
	// lands on an earlier, already verified part of the disk.
	VerifyAfterWrite bool
	// MaxBytesPerSecond caps one push stream's rate (of raw bytes), so a
	// provisioning run does not starve the other traffic of a shared boot
	// network. 0: no cap. Pull mode passes it to curl as --limit-rate.
	MaxBytesPerSecond int64
	// PullFetchers are the programs pull mode may fetch with on the host,
	// in order of preference; nil: curl, then wget.
	PullFetchers []string
	// Report, when set, is given the stream's progress every ReportEvery
	// (10s when zero) and when the read-back starts, so the workflow can
	// show it in its status query (the worker signals the activity's run
	// with api.SignalImageProgress). A failed report is logged, never
	// fatal. Heartbeats carry the same progress either way.
	Report      func(ctx context.Context, p api.ImageProgress) error
	ReportEvery time.Duration
	// DiskHelper is the path, on the worker, of a rackflow-diskhelper
	// binary (activities/image/cmd/rackflow-diskhelper), or of a directory of them,
	// one per architecture (rackflow-diskhelper-arm64...). When set and
	// one is built for the host's architecture, it is uploaded into the live system and
	// writes and reads back the disk in place of dd and openssl, with
	// about half the host's CPU per GiB. Empty, or a host it cannot run
	// on: the dd pipeline, which needs nothing but a shell and coreutils.
	DiskHelper string
}

// WriteInput is the input of WriteImage.
type WriteInput struct {
	Host   string        `json:"host"`
	Target remote.Target `json:"target"` // HostKey required
	// Image.Size and Image.SHA256 are those of the raw image, also when
	// the file is compressed.
	Image api.Image `json:"image"`
	// Disk is the target block device (a regular file in tests).
	Disk string `json:"disk"`
	// Mode is ModePush (when empty) or ModePull.
	Mode string `json:"mode,omitempty"`
}

// WriteResult is the output of WriteImage.
type WriteResult struct {
	// Digest is the sha256 (hex) of the image as read back from the disk.
	Digest string `json:"digest"`
	// Bytes is how many raw bytes this attempt wrote.
	Bytes int64 `json:"bytes"`
	// ResumedFrom is the offset this attempt started at (0: from scratch).
	ResumedFrom int64   `json:"resumed_from"`
	Duration    string  `json:"duration"`
	MBps        float64 `json:"mbps"` // raw MB/s (10^6) of this attempt's stream
	// Mode is the transfer mode used (pull may have fallen back to push).
	Mode string `json:"mode,omitempty"`
	// Format is the image file's format: raw, gzip, zstd or xz.
	Format string `json:"format,omitempty"`
	// SourceBytes is how many bytes of the image file the worker read
	// (compressed bytes for a compressed image; 0 in pull mode).
	SourceBytes int64 `json:"source_bytes,omitempty"`
	// Helper says rackflow-diskhelper wrote (push) and read back the
	// disk on the host, rather than dd and openssl or sha256sum.
	Helper bool `json:"helper,omitempty"`
	// VerifyDuration is how long the read-back took.
	VerifyDuration string `json:"verify_duration,omitempty"`
}

// Progress is WriteImage's heartbeat detail. Offset only ever describes
// data the host's dd has written, fsynced and exited 0 for.
type Progress struct {
	Offset int64 `json:"offset"`
	Total  int64 `json:"total"`
	// HashState is the sha256 (or sha512) state over bytes [0, Offset), from
	// encoding.BinaryMarshaler: a resumed push continues the hash. Empty
	// in pull mode, where the host does the hashing.
	HashState []byte  `json:"hash_state"`
	MBps      float64 `json:"mbps"`
	// ETASeconds is the expected time until the write is done, at the
	// current rate (the read-back comes on top); 0 when unknown.
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	// Phase is "write" or "verify" (the read-back).
	Phase string `json:"phase,omitempty"`
	// Mode and Format as in WriteResult.
	Mode   string `json:"mode,omitempty"`
	Format string `json:"format,omitempty"`
}

func (a *Activities) httpClient() *http.Client {
	if a.HTTPClient != nil {
		return a.HTTPClient
	}
	return defaultHTTPClient
}

var defaultHTTPClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   30 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
	DisableCompression:    true, // the digest is of the file's bytes
	ReadBufferSize:        256 << 10,
}}

// tracker holds the committed progress and heartbeats it.
type tracker struct {
	ctx      context.Context
	mu       sync.Mutex
	p        Progress
	start    time.Time // of this attempt's stream
	from     int64     // offset this attempt's stream started at
	onCommit func(offset int64)
}

// started records where this attempt's stream starts.
func (t *tracker) started(offset int64, state []byte, format string) {
	t.mu.Lock()
	t.p.Offset, t.p.HashState, t.p.Format = offset, state, format
	t.from, t.start = offset, time.Now()
	t.mu.Unlock()
	if t.onCommit != nil {
		t.onCommit(offset)
	}
}

func (t *tracker) beat() {
	t.mu.Lock()
	p := t.p
	t.mu.Unlock()
	activity.RecordHeartbeat(t.ctx, p)
}

// commit records that [0, offset) is on the disk, and heartbeats it.
func (t *tracker) commit(offset int64, state []byte) {
	t.mu.Lock()
	t.p.Offset, t.p.HashState = offset, state
	t.p.MBps, t.p.ETASeconds = 0, 0
	if el := time.Since(t.start).Seconds(); el > 0 && offset > t.from {
		rate := float64(offset-t.from) / el
		t.p.MBps = rate / 1e6
		t.p.ETASeconds = float64(t.p.Total-offset) / rate
	}
	t.mu.Unlock()
	if t.onCommit != nil {
		t.onCommit(offset)
	}
	t.beat()
}

func (t *tracker) set(f func(p *Progress)) {
	t.mu.Lock()
	f(&t.p)
	t.mu.Unlock()
}

func (t *tracker) get() Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.p
}

// streamed is what a transfer mode reports back.
type streamed struct {
	from, bytes int64
	sourceBytes int64
	format      string
	digest      string // of the stream, push only
	dur         time.Duration
}

// WriteImage writes in.Image onto in.Disk of the host. See the package
// comment; the error types above say how it fails.
func (a *Activities) WriteImage(ctx context.Context, in WriteInput) (WriteResult, error) {
	log := activity.GetLogger(ctx)
	start := time.Now()
	algo, want := in.Image.Digest()
	if in.Image.Size <= 0 || want == "" {
		return WriteResult{}, activities.InvalidInput(errors.New("image size and sha256 (or sha512) are required"))
	}
	if in.Image.SHA256 != "" && in.Image.SHA512 != "" {
		return WriteResult{}, activities.InvalidInput(errors.New("image: give sha256 or sha512, not both"))
	}
	if b, err := hex.DecodeString(want); err != nil || len(b) != newHash(algo).Size() {
		return WriteResult{}, activities.InvalidInput(fmt.Errorf("image %s %q: want %d hex digits", algo, want, 2*newHash(algo).Size()))
	}
	if !strings.HasPrefix(in.Disk, "/") {
		return WriteResult{}, activities.InvalidInput(fmt.Errorf("disk %q: must be an absolute path", in.Disk))
	}
	mode := in.Mode
	switch mode {
	case "":
		mode = ModePush
	case ModePush, ModePull:
	default:
		return WriteResult{}, activities.InvalidInput(fmt.Errorf("mode %q: must be %q or %q", in.Mode, ModePush, ModePull))
	}
	path, err := imagePath(in.Image.URL)
	if err != nil {
		return WriteResult{}, err
	}
	segSize := a.SegmentSize
	if segSize <= 0 {
		segSize = 64 << 20
	}
	hbEvery := a.HeartbeatEvery
	if hbEvery <= 0 {
		hbEvery = 5 * time.Second
	}
	// Never heartbeat less often than a third of the timeout the workflow
	// set, or a slow read-back would look like a dead worker.
	if hbt := activity.GetInfo(ctx).HeartbeatTimeout; hbt > 0 && hbt/3 < hbEvery {
		hbEvery = hbt / 3
	}

	// The previous attempt's progress, if it fits this image.
	var prev Progress
	if activity.HasHeartbeatDetails(ctx) {
		var p Progress
		if err := activity.GetHeartbeatDetails(ctx, &p); err != nil {
			log.Warn("ignoring unreadable progress of previous attempt", "host", in.Host, "error", err)
		} else if p.Total != in.Image.Size || p.Offset < 0 || p.Offset > p.Total {
			log.Warn("ignoring progress of previous attempt: does not fit this image", "host", in.Host, "offset", p.Offset, "total", p.Total)
		} else {
			prev = p
		}
	}

	client, err := a.Dialer.Dial(ctx, in.Target)
	if err != nil {
		return WriteResult{}, remote.AppError(fmt.Errorf("write image: %w", err))
	}
	defer client.Close()

	disk, err := checkDisk(ctx, client, in.Disk, in.Image.Size)
	if err != nil {
		return WriteResult{}, err
	}
	a.installHelper(ctx, client, in.Host, &disk)

	// Heartbeat the committed progress regularly, even while a segment
	// or the read-back runs, so a live attempt is never timed out.
	tr := &tracker{ctx: ctx, p: Progress{Offset: prev.Offset, Total: in.Image.Size, HashState: prev.HashState, Phase: "write", Mode: mode, Format: prev.Format}}
	tr.beat()
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go func() {
		t := time.NewTicker(hbEvery)
		defer t.Stop()
		reportEvery := a.ReportEvery
		if reportEvery <= 0 {
			reportEvery = 10 * time.Second
		}
		var reported time.Time
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				tr.beat()
				if a.Report != nil && time.Since(reported) >= reportEvery {
					reported = time.Now()
					a.report(hbCtx, in.Host, tr.get())
				}
			}
		}
	}()

	var plan *pullPlan
	if mode == ModePull {
		plan, err = a.planPull(ctx, client, in, path, disk)
		if err != nil {
			return WriteResult{}, err
		}
		if plan.fallback != "" {
			log.Warn("pull mode not possible, pushing instead", "host", in.Host, "reason", plan.fallback)
			mode = ModePush
			tr.set(func(p *Progress) { p.Mode = mode })
		}
	}
	log.Info("writing image", "host", in.Host, "disk", in.Disk, "image", in.Image.URL, "size", in.Image.Size, "mode", mode, "resume_from", prev.Offset)

	var v *verifier
	if !a.VerifyAfterWrite {
		if v, err = startVerifier(client, in.Disk, disk, algo); err != nil {
			return WriteResult{}, err
		}
		defer v.close()
		tr.onCommit = v.advance
	}
	var st streamed
	if mode == ModePull {
		st, err = a.pull(ctx, client, in, plan, disk, prev, segSize, tr)
	} else {
		st, err = a.push(ctx, client, in, disk, prev, segSize, tr)
	}
	if err != nil {
		return WriteResult{}, err
	}
	if st.digest != "" && st.digest != want {
		return WriteResult{}, checksumError("streamed image", algo, want, st.digest)
	}

	tr.set(func(p *Progress) { p.Phase, p.ETASeconds = "verify", 0 })
	tr.beat()
	if a.Report != nil {
		a.report(ctx, in.Host, tr.get())
	}
	verifyStart := time.Now()
	var onDisk string
	if v != nil {
		onDisk, err = v.sum(ctx, in.Image.Size)
	} else {
		onDisk, err = readBack(ctx, client, in.Disk, in.Image.Size, disk, algo)
	}
	if err != nil {
		return WriteResult{}, err
	}
	if onDisk != want {
		return WriteResult{}, checksumError("disk read back", algo, want, onDisk)
	}
	rate := 0.0
	if s := st.dur.Seconds(); s > 0 {
		rate = float64(st.bytes) / s / 1e6
	}
	res := WriteResult{
		Digest:         onDisk,
		Bytes:          st.bytes,
		ResumedFrom:    st.from,
		Duration:       time.Since(start).Round(time.Millisecond).String(),
		MBps:           rate,
		Mode:           mode,
		Format:         st.format,
		SourceBytes:    st.sourceBytes,
		VerifyDuration: time.Since(verifyStart).Round(time.Millisecond).String(),
		Helper:         disk.helper != "",
	}
	log.Info("image written", "host", in.Host, "disk", in.Disk, "mode", mode, "format", st.format, "bytes", st.bytes, "resumed_from", st.from,
		"stream_time", st.dur.Round(time.Millisecond).String(), "verify_time", res.VerifyDuration, "mbps", fmt.Sprintf("%.1f", rate), "helper", res.Helper)
	return res, nil
}

// report hands p to a.Report, bounded in time so a slow Temporal
// frontend never stalls the heartbeats.
func (a *Activities) report(ctx context.Context, host string, p Progress) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := a.Report(rctx, api.ImageProgress{
		Offset: p.Offset, Total: p.Total, MBps: p.MBps, ETASeconds: p.ETASeconds,
		Phase: p.Phase, Mode: p.Mode, Format: p.Format, At: time.Now().UTC(),
	})
	if err != nil && ctx.Err() == nil {
		activity.GetLogger(ctx).Warn("could not report image progress to the workflow", "host", host, "error", err)
	}
}

func checksumError(what, algo, want, got string) error {
	msg := fmt.Sprintf("%s: %s mismatch: want %s, got %s", what, algo, want, got)
	return activities.NonRetryable(msg, activities.ErrTypeImageChecksumMismatch, nil, want, got)
}

// newHash returns a fresh hash of the image's checksum algorithm.
func newHash(algo string) hash.Hash {
	if algo == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// algoOf names h's algorithm, by its size.
func algoOf(h hash.Hash) string {
	if h.Size() == sha512.Size {
		return "sha512"
	}
	return "sha256"
}

// hostHasher is the host's command that prints the digest of its stdin:
// openssl where installed (about three times faster than coreutils).
func hostHasher(info diskInfo, algo string) string {
	if info.tools["openssl"] {
		return "openssl dgst -" + algo + " -r"
	}
	return algo + "sum"
}

func marshalHash(h hash.Hash) []byte {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // sha256 and sha512 always marshal
	}
	return b
}

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
	out, stderr, exit, err := remote.Run(ctx, c, "LC_ALL=C sh -s -- "+remote.Quote(disk), strings.NewReader(diskScript))
	if err != nil {
		return diskInfo{}, fmt.Errorf("check disk %s: %w", disk, err)
	}
	if exit != 0 {
		return diskInfo{}, fmt.Errorf("check disk %s: exit %d: %s", disk, exit, tail(stderr, 500))
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
		return info, fmt.Errorf("check disk %s: unexpected answer %q", disk, tail(out, 200))
	case len(mounts) > 0:
		return info, activities.NonRetryable(fmt.Sprintf("disk %s is in use: %s", disk, strings.Join(mounts, "; ")), activities.ErrTypeDiskMounted, nil)
	case size < need:
		return info, activities.NonRetryable(fmt.Sprintf("disk %s has %d bytes, the image needs %d", disk, size, need), activities.ErrTypeDiskTooSmall, nil)
	}
	return info, nil
}

// readBack hashes the disk's first size bytes on the host. openssl is
// about three times faster than coreutils' sha256sum, so it is used where
// installed. A block device is read with O_DIRECT, so what is hashed is
// what the device returns, not what the page cache still holds.
func readBack(ctx context.Context, c *ssh.Client, disk string, size int64, info diskInfo, algo string) (string, error) {
	want := 2 * newHash(algo).Size()
	if info.helper != "" {
		cmd := fmt.Sprintf("%s verify %s %s %s", remote.Quote(info.helper), remote.Quote(disk), info.ioMode(), algo)
		out, stderr, exit, err := remote.Run(ctx, c, cmd, strings.NewReader(fmt.Sprintf("%d\n", size)))
		if err != nil {
			return "", fmt.Errorf("read back disk %s: %w", disk, err)
		}
		f := strings.Fields(string(out))
		if exit != 0 || len(f) == 0 || len(f[0]) != want {
			return "", fmt.Errorf("read back disk %s: exit %d: %s", disk, exit, tail(stderr, 500))
		}
		return strings.ToLower(f[0]), nil
	}
	iflag := "count_bytes"
	if info.kind == "block" && info.direct {
		iflag += ",direct"
	}
	hasher := hostHasher(info, algo)
	cmd := fmt.Sprintf("LC_ALL=C; export LC_ALL; { dd if=%s bs=4M count=%d iflag=%s status=none || echo \"read-back dd failed: $?\" >&2; } | %s", remote.Quote(disk), size, iflag, hasher)
	out, stderr, exit, err := remote.Run(ctx, c, cmd, nil)
	if err != nil {
		return "", fmt.Errorf("read back disk %s: %w", disk, err)
	}
	f := strings.Fields(string(out))
	if exit != 0 || bytes.Contains(stderr, []byte("read-back dd failed")) || len(f) == 0 || len(f[0]) != want {
		return "", fmt.Errorf("read back disk %s: exit %d: %s", disk, exit, tail(stderr, 500))
	}
	return strings.ToLower(f[0]), nil
}

// ddError turns a failed dd on the host into the activity's error: a full
// disk is final, anything else may be a passing fault.
func ddError(offset int64, exit int, stderr []byte) error {
	msg := fmt.Sprintf("write image at %d: writer exited %d: %s", offset, exit, tail(stderr, 500))
	s := string(stderr)
	if strings.Contains(s, "No space left on device") || strings.Contains(s, "File too large") {
		return activities.NonRetryable(msg, ErrTypeDiskFull, nil)
	}
	return temporal.NewApplicationError(msg, ErrTypeWriteFailed)
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// throttled paces reads to a rate, sleeping when ahead of it.
type throttled struct {
	io.Reader
	ctx   context.Context
	rate  int64
	start time.Time
	read  int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if max := t.rate / 10; max > 0 && int64(len(p)) > max {
		p = p[:max]
	}
	n, err := t.Reader.Read(p)
	t.read += int64(n)
	due := t.start.Add(time.Duration(float64(t.read) / float64(t.rate) * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		select {
		case <-t.ctx.Done():
			return n, t.ctx.Err()
		case <-time.After(wait):
		}
	}
	return n, err
}

// verifyScript hashes the disk on the host as the write commits it: each
// line on stdin is an offset up to which the disk is final, and the bytes
// up to it are read back (from the device, not the page cache, where the
// disk allows O_DIRECT) and fed to one running sha256. Arguments: disk,
// extra iflag ("" or ",direct"), hasher.
const verifyScript = `d=$1 dflag=$2 hasher=$3
pos=0
while read -r end; do
  n=$((end - pos))
  if [ "$n" -gt 0 ]; then
    dd if="$d" bs=4M skip="$pos" count="$n" iflag=skip_bytes,count_bytes$dflag status=none || { echo "read-back dd failed: $?" >&2; exit 3; }
  fi
  pos=$end
done | $hasher
`

// verifier reads the disk back on the host while the write goes on, so
// the read-back costs little more than its last segment's worth of time.
type verifier struct {
	disk   string
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
	sent   int64
	failed error
	hexLen int // of the digest
}

func startVerifier(c *ssh.Client, disk string, info diskInfo, algo string) (*verifier, error) {
	dflag := ""
	if info.kind == "block" && info.direct {
		dflag = ",direct"
	}
	hasher := hostHasher(info, algo)
	sess, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("read back disk %s: open ssh session: %w", disk, err)
	}
	v := &verifier{disk: disk, sess: sess, done: make(chan error, 1), hexLen: 2 * newHash(algo).Size()}
	sess.Stdout, sess.Stderr = &v.stdout, &v.stderr
	if v.stdin, err = sess.StdinPipe(); err != nil {
		sess.Close()
		return nil, fmt.Errorf("read back disk %s: %w", disk, err)
	}
	cmd := fmt.Sprintf("LC_ALL=C sh -c %s sh %s %s %s", remote.Quote(verifyScript), remote.Quote(disk), remote.Quote(dflag), remote.Quote(hasher))
	if info.helper != "" {
		cmd = fmt.Sprintf("%s verify %s %s %s", remote.Quote(info.helper), remote.Quote(disk), info.ioMode(), algo)
	}
	if err := sess.Start(cmd); err != nil {
		sess.Close()
		return nil, fmt.Errorf("read back disk %s: %w", disk, err)
	}
	go func() { v.done <- sess.Wait() }()
	return v, nil
}

// advance lets the read-back go up to end. A failure shows in sum.
func (v *verifier) advance(end int64) {
	if v.failed != nil || end <= v.sent {
		return
	}
	if _, err := fmt.Fprintf(v.stdin, "%d\n", end); err != nil {
		v.failed = err
		return
	}
	v.sent = end
}

// sum waits for the read-back of [0, size) and returns its digest.
func (v *verifier) sum(ctx context.Context, size int64) (string, error) {
	v.advance(size)
	v.stdin.Close()
	var err error
	select {
	case err = <-v.done:
	case <-ctx.Done():
		v.sess.Close()
		return "", fmt.Errorf("read back disk %s: %w", v.disk, ctx.Err())
	}
	v.sess.Close()
	f := strings.Fields(v.stdout.String())
	switch {
	case err == nil && v.sent == size && len(f) > 0 && len(f[0]) == v.hexLen && !bytes.Contains(v.stderr.Bytes(), []byte("read-back dd failed")):
		return strings.ToLower(f[0]), nil
	case v.failed != nil && err == nil:
		err = v.failed
	}
	return "", fmt.Errorf("read back disk %s: %v: %s", v.disk, err, tail(v.stderr.Bytes(), 500))
}

func (v *verifier) close() { v.sess.Close() }
