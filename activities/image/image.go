// Package image writes an OS image onto a host's disk through the host's
// live system, over SSH. The image may be raw, gzip, zstd or xz (told by its
// first bytes) at an http(s) URL, or a file:// URL or local path inside the
// worker's image directory. In push mode the worker reads and decompresses
// it and streams the raw bytes into dd on the host (hashing a compressed
// image as it goes, for its resume check); in pull mode the host fetches it
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
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
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
	// ImageDir is the only directory local images (file:// URLs and
	// absolute paths) are read from; ".." and symlinks cannot leave it
	// (relative symlinks inside it are followed, absolute ones refused).
	// Empty: local images are refused, only http(s) ones are streamed.
	ImageDir string
	// DiskHelper is the path, on the worker, of a rackflow-diskhelper
	// binary (activities/image/cmd/rackflow-diskhelper), or of a directory of them,
	// one per architecture (rackflow-diskhelper-arm64...). When set and
	// one is built for the host's architecture, it is uploaded into the live system and
	// writes and reads back the disk in place of dd and openssl, with
	// about half the host's CPU per GiB. Empty, or a host it cannot run
	// on: the dd pipeline, which needs nothing but a shell and coreutils.
	DiskHelper string
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

// WriteImage writes in.Image onto in.Disk of the host. See the package
// comment; the error types say how it fails.
func (a *Activities) WriteImage(ctx context.Context, in WriteInput) (WriteResult, error) {
	start := time.Now()
	j, err := newJob(in)
	if err != nil {
		return WriteResult{}, err
	}
	if j.path != "" {
		// Refuse a path out of ImageDir before touching the host.
		f, err := a.openLocal(j.path)
		if err != nil {
			return WriteResult{}, err
		}
		f.Close()
	}
	prev := previousProgress(ctx, in)
	tr := &tracker{ctx: ctx, p: Progress{Offset: prev.Offset, Total: in.Image.Size, HashState: prev.HashState, Phase: "write", Mode: j.mode, Format: prev.Format}}
	// Heartbeat from the start, carrying the previous attempt's progress
	// on, and regularly after: the dial, the disk check and the helper
	// upload can take longer than a short heartbeat timeout on a busy
	// worker, and later a segment or the read-back runs between commits.
	// A live attempt is never timed out.
	tr.beat()
	defer a.keepAlive(ctx, in.Host, tr)()

	client, err := a.Dialer.Dial(ctx, in.Target)
	if err != nil {
		return WriteResult{}, remote.AppError(fmt.Errorf("write image: %w", err))
	}
	defer client.Close()
	var pre diskInfo
	if in.RootDevice != nil {
		// Resolve right before the write: names change between boots.
		r, err := a.resolveRootDevice(ctx, client, in.Host, *in.RootDevice, &pre)
		if err != nil {
			return WriteResult{}, err
		}
		activity.GetLogger(ctx).Info("root device resolved", "host", in.Host, "hints", r.Hints, "disk", r.Path, "serial", r.Serial, "wwn", r.WWN, "size", r.Size, "source", r.Source)
		if prev.Offset > 0 && !sameDisk(prev.Disk, &r) {
			activity.GetLogger(ctx).Warn("previous attempt wrote another disk: starting over", "host", in.Host, "previous", prev.Disk, "now", r.Path)
			prev = Progress{}
			tr.set(func(p *Progress) { *p = Progress{Total: in.Image.Size, Phase: "write", Mode: j.mode} })
		}
		in.Disk, j.Disk, j.resolved = r.Path, r.Path, &r
		tr.set(func(p *Progress) { p.Disk = &r })
	}
	disk, err := checkDisk(ctx, client, in.Disk, in.Image.Size)
	if err != nil {
		return WriteResult{}, err
	}
	if pre.helper != "" {
		disk.helper = pre.helper
	} else {
		a.installHelper(ctx, client, in.Host, &disk)
	}

	tr.beat()

	plan, err := a.planMode(ctx, client, &j, disk, tr)
	if err != nil {
		return WriteResult{}, err
	}
	activity.GetLogger(ctx).Info("writing image", "host", in.Host, "disk", in.Disk, "image", in.Image.URL, "size", in.Image.Size, "mode", j.mode, "resume_from", prev.Offset)

	var v *verifier
	if !a.VerifyAfterWrite {
		// The read-back trails the write, a segment behind.
		if v, err = startVerifier(client, in.Disk, disk, j.algo); err != nil {
			return WriteResult{}, err
		}
		defer v.close()
		tr.onCommit = v.advance
	}
	st, err := a.stream(ctx, client, j, plan, disk, prev, tr)
	if err != nil {
		return WriteResult{}, err
	}

	a.enterVerify(ctx, in.Host, tr)
	verifyStart := time.Now()
	onDisk, err := readBack(ctx, client, j, disk, v)
	if err != nil {
		return WriteResult{}, err
	}
	res := j.result(st, disk, onDisk, start, verifyStart)
	activity.GetLogger(ctx).Info("image written", "host", in.Host, "disk", in.Disk, "mode", j.mode, "format", st.format, "bytes", st.bytes, "resumed_from", st.from,
		"stream_time", st.dur.Round(time.Millisecond).String(), "verify_time", res.VerifyDuration, "mbps", fmt.Sprintf("%.1f", res.MBps), "helper", res.Helper)
	return res, nil
}

// job is a WriteImage call's input, checked, and what follows from it.
type job struct {
	WriteInput
	algo, want string // the image's checksum algorithm and digest (hex)
	path       string // the image's path on the worker; "" for http(s)
	mode       string // ModePush or ModePull
	resolved   *api.ResolvedDisk
}

// newJob checks in: anything wrong is InvalidInput.
func newJob(in WriteInput) (job, error) {
	j := job{WriteInput: in, mode: in.Mode}
	j.algo, j.want = in.Image.Digest()
	if in.Image.Size <= 0 || j.want == "" {
		return job{}, activities.InvalidInput(errors.New("image size and sha256 (or sha512) are required"))
	}
	if in.Image.SHA256 != "" && in.Image.SHA512 != "" {
		return job{}, activities.InvalidInput(errors.New("image: give sha256 or sha512, not both"))
	}
	if b, err := hex.DecodeString(j.want); err != nil || len(b) != newHash(j.algo).Size() {
		return job{}, activities.InvalidInput(fmt.Errorf("image %s %q: want %d hex digits", j.algo, j.want, 2*newHash(j.algo).Size()))
	}
	switch {
	case in.RootDevice != nil && in.Disk != "":
		return job{}, activities.InvalidInput(errors.New("give disk or root_device, not both"))
	case in.RootDevice != nil:
		if err := in.RootDevice.Validate(); err != nil {
			return job{}, activities.InvalidInput(err)
		}
	case !strings.HasPrefix(in.Disk, "/"):
		return job{}, activities.InvalidInput(fmt.Errorf("disk %q: must be an absolute path", in.Disk))
	}
	switch j.mode {
	case "":
		j.mode = ModePush
	case ModePush, ModePull:
	default:
		return job{}, activities.InvalidInput(fmt.Errorf("mode %q: must be %q or %q", in.Mode, ModePush, ModePull))
	}
	var err error
	j.path, err = imagePath(in.Image.URL)
	return j, err
}

// planMode settles the transfer mode: pull falls back to push where the
// host cannot fetch the image. The plan is nil for push.
func (a *Activities) planMode(ctx context.Context, client *ssh.Client, j *job, disk diskInfo, tr *tracker) (*pullPlan, error) {
	if j.mode != ModePull {
		return nil, nil
	}
	plan, err := a.planPull(ctx, client, j.WriteInput, j.path, disk)
	if err != nil {
		return nil, err
	}
	if plan.fallback != "" {
		activity.GetLogger(ctx).Warn("pull mode not possible, pushing instead", "host", j.Host, "reason", plan.fallback)
		j.mode = ModePush
		tr.set(func(p *Progress) { p.Mode = ModePush })
		return nil, nil
	}
	return plan, nil
}

// stream moves the image onto the disk, resuming at prev, and checks what
// the worker hashed on the way (a compressed push only).
func (a *Activities) stream(ctx context.Context, client *ssh.Client, j job, plan *pullPlan, disk diskInfo, prev Progress, tr *tracker) (streamed, error) {
	segSize := activities.OrDefault(a.SegmentSize, 64<<20)
	var st streamed
	var err error
	if plan != nil {
		st, err = a.pull(ctx, client, j.WriteInput, plan, disk, prev, segSize, tr)
	} else {
		st, err = a.push(ctx, client, j.WriteInput, disk, prev, segSize, tr)
	}
	if err == nil && st.digest != "" && st.digest != j.want {
		err = checksumError("streamed image", j.algo, j.want, st.digest)
	}
	return st, err
}

// result is what WriteImage reports of a write that read back right.
func (j job) result(st streamed, disk diskInfo, onDisk string, start, verifyStart time.Time) WriteResult {
	rate := 0.0
	if s := st.dur.Seconds(); s > 0 {
		rate = float64(st.bytes) / s / 1e6
	}
	return WriteResult{
		Digest:         onDisk,
		Bytes:          st.bytes,
		ResumedFrom:    st.from,
		Duration:       time.Since(start).Round(time.Millisecond).String(),
		MBps:           rate,
		Mode:           j.mode,
		Format:         st.format,
		SourceBytes:    st.sourceBytes,
		VerifyDuration: time.Since(verifyStart).Round(time.Millisecond).String(),
		Helper:         disk.helper != "",
		Disk:           j.resolved,
	}
}

// sameDisk reports whether a previous attempt's resolved disk is now's:
// same node, serial and WWN. A previous attempt with none (an older
// worker) counts as the same only when nothing tells them apart.
func sameDisk(prev, now *api.ResolvedDisk) bool {
	if prev == nil {
		return false
	}
	return prev.Path == now.Path && prev.Serial == now.Serial && prev.WWN == now.WWN && prev.Size == now.Size
}
