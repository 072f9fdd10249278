// Package image writes a raw OS image onto a host's disk over SSH: the
// worker reads the image (http(s), file:// or a local path) and streams it
// into dd on the host's live system, hashing as it goes, resuming a retried
// attempt from its last heartbeat, and reading the disk back to verify. It
// is not an image store or converter: images are raw for now (openRaw is
// where a decompressor goes), and it never partitions or mounts anything.
package image

import (
	"context"
	"crypto/sha256"
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

	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/spec"
)

// Error types of WriteImage and CheckImage. All are non-retryable except
// where said: retrying cannot fix them.
const (
	ErrTypeBadInput              = "BadInput"
	ErrTypeDiskNotFound          = "DiskNotFound"
	ErrTypeDiskMounted           = "DiskMounted"
	ErrTypeDiskTooSmall          = "DiskTooSmall"
	ErrTypeImageNotFound         = "ImageNotFound"
	ErrTypeImageUnavailable      = "ImageUnavailable" // 401, 403 and such
	ErrTypeImageTruncated        = "ImageTruncated"
	ErrTypeImageSizeMismatch     = "ImageSizeMismatch"
	ErrTypeImageChecksumMismatch = "ImageChecksumMismatch"
	// ErrTypeWriteFailed: dd failed on the host. Retryable.
	ErrTypeWriteFailed = "DiskWriteFailed"
)

// Activities writes images. Dialer is required; the rest have defaults.
type Activities struct {
	Dialer *remote.Dialer
	// HTTPClient fetches http(s) images. Nil: a client with connect and
	// response-header timeouts but no overall timeout (images are big).
	// It should not retry: Temporal retries the activity, which resumes.
	HTTPClient *http.Client
	// SegmentSize is how much one remote dd writes before the progress is
	// recorded: a retry resumes at a segment boundary. 128 MiB when zero.
	SegmentSize int64
	// HeartbeatEvery is how often progress is heartbeated while a segment
	// or the read-back runs; 5s when zero. Keep the activity's
	// HeartbeatTimeout well above both this and a segment's write time.
	HeartbeatEvery time.Duration
	// MaxBytesPerSecond caps one stream's rate, so a provisioning run does
	// not starve the other traffic of a shared boot network. 0: no cap.
	MaxBytesPerSecond int64
}

// WriteInput is the input of WriteImage.
type WriteInput struct {
	Host   string        `json:"host"`
	Target remote.Target `json:"target"` // HostKey required
	Image  spec.Image    `json:"image"`
	// Disk is the target block device (a regular file in tests).
	Disk string `json:"disk"`
}

// WriteResult is the output of WriteImage.
type WriteResult struct {
	// Digest is the sha256 (hex) of the image as read back from the disk.
	Digest string `json:"digest"`
	// Bytes is how many bytes this attempt streamed.
	Bytes int64 `json:"bytes"`
	// ResumedFrom is the offset this attempt started at (0: from scratch).
	ResumedFrom int64   `json:"resumed_from"`
	Duration    string  `json:"duration"`
	MBps        float64 `json:"mbps"` // MB/s (10^6) of this attempt's stream
}

// Progress is WriteImage's heartbeat detail. It only ever describes data
// the host's dd has written, fsynced and exited 0 for.
type Progress struct {
	Offset int64 `json:"offset"`
	Total  int64 `json:"total"`
	// HashState is the sha256 state over bytes [0, Offset), from
	// encoding.BinaryMarshaler: a resumed attempt continues the hash.
	HashState []byte  `json:"hash_state"`
	MBps      float64 `json:"mbps"`
}

func badInput(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, err)
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
	DisableCompression:    true, // the digest is of the raw bytes
}}

// WriteImage writes in.Image onto in.Disk of the host. See the package
// comment; the error types above say how it fails.
func (a *Activities) WriteImage(ctx context.Context, in WriteInput) (WriteResult, error) {
	log := activity.GetLogger(ctx)
	start := time.Now()
	if in.Image.Size <= 0 || len(in.Image.SHA256) != 64 {
		return WriteResult{}, badInput(errors.New("image size and sha256 are required"))
	}
	if want := strings.ToLower(in.Image.SHA256); want != in.Image.SHA256 {
		in.Image.SHA256 = want
	}
	if !strings.HasPrefix(in.Disk, "/") {
		return WriteResult{}, badInput(fmt.Errorf("disk %q: must be an absolute path", in.Disk))
	}
	segSize := a.SegmentSize
	if segSize <= 0 {
		segSize = 128 << 20
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

	// Resume from the last attempt's progress, if it is usable.
	h := sha256.New()
	var offset int64
	if activity.HasHeartbeatDetails(ctx) {
		var p Progress
		if err := activity.GetHeartbeatDetails(ctx, &p); err != nil {
			log.Warn("ignoring unreadable progress of previous attempt", "host", in.Host, "error", err)
		} else if p.Total != in.Image.Size || p.Offset < 0 || p.Offset > p.Total {
			log.Warn("ignoring progress of previous attempt: does not fit this image", "host", in.Host, "offset", p.Offset, "total", p.Total)
		} else if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(p.HashState); err != nil {
			log.Warn("ignoring progress of previous attempt: bad hash state", "host", in.Host, "error", err)
			h.Reset()
		} else {
			offset = p.Offset
		}
	}
	resumedFrom := offset
	log.Info("writing image", "host", in.Host, "disk", in.Disk, "image", in.Image.URL, "size", in.Image.Size, "resume_from", offset)

	client, err := a.Dialer.Dial(ctx, in.Target)
	if err != nil {
		return WriteResult{}, remote.AppError(fmt.Errorf("write image: %w", err))
	}
	defer client.Close()

	if err := checkDisk(ctx, client, in.Disk, in.Image.Size); err != nil {
		return WriteResult{}, err
	}

	// Heartbeat the committed progress regularly, even while a segment
	// or the read-back runs, so a live attempt is never timed out.
	var mu sync.Mutex
	committed := Progress{Offset: offset, Total: in.Image.Size, HashState: marshalHash(h)}
	beat := func() {
		mu.Lock()
		p := committed
		mu.Unlock()
		activity.RecordHeartbeat(ctx, p)
	}
	beat()
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go func() {
		t := time.NewTicker(hbEvery)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				beat()
			}
		}
	}()

	var streamed int64
	var src io.ReadCloser
	if offset < in.Image.Size {
		src, err = a.openRaw(ctx, in.Image, offset)
		if err != nil {
			return WriteResult{}, err
		}
		defer src.Close()
		if a.MaxBytesPerSecond > 0 {
			src = &throttled{ReadCloser: src, ctx: ctx, rate: a.MaxBytesPerSecond, start: time.Now()}
		}
	}
	streamStart := time.Now()
	mbps := func() float64 {
		el := time.Since(streamStart).Seconds()
		if el <= 0 {
			return 0
		}
		return float64(streamed) / el / 1e6
	}
	for offset < in.Image.Size {
		n := min(segSize, in.Image.Size-offset)
		seg := &segmentReader{r: io.LimitReader(src, n), h: h}
		cmd := fmt.Sprintf("dd of=%s bs=4M seek=%d oflag=seek_bytes conv=notrunc,fsync iflag=fullblock status=none", remote.Quote(in.Disk), offset)
		_, stderr, exit, err := remote.Run(ctx, client, cmd, seg)
		if seg.err != nil {
			return WriteResult{}, fmt.Errorf("read image at %d: %w", offset+seg.n, seg.err) // retryable
		}
		if err != nil {
			return WriteResult{}, fmt.Errorf("write image at %d: %w", offset, err)
		}
		if exit != 0 {
			msg := fmt.Sprintf("write image at %d: dd exited %d: %s", offset, exit, tail(stderr, 500))
			return WriteResult{}, temporal.NewApplicationError(msg, ErrTypeWriteFailed)
		}
		if seg.n < n {
			msg := fmt.Sprintf("image %s ended at byte %d, expected %d bytes", in.Image.URL, offset+seg.n, in.Image.Size)
			return WriteResult{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeImageTruncated, nil)
		}
		offset += n
		streamed += n
		mu.Lock()
		committed = Progress{Offset: offset, Total: in.Image.Size, HashState: marshalHash(h), MBps: mbps()}
		mu.Unlock()
		beat()
		log.Debug("segment written", "host", in.Host, "offset", offset, "total", in.Image.Size)
	}
	streamDur := time.Since(streamStart)
	rate := mbps()
	if src != nil {
		var one [1]byte
		if k, _ := io.ReadFull(src, one[:]); k > 0 {
			msg := fmt.Sprintf("image %s is longer than its declared %d bytes", in.Image.URL, in.Image.Size)
			return WriteResult{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeImageSizeMismatch, nil)
		}
	}

	got := hex.EncodeToString(h.Sum(nil))
	if got != in.Image.SHA256 {
		return WriteResult{}, checksumError("streamed image", in.Image.SHA256, got)
	}
	onDisk, err := readBack(ctx, client, in.Disk, in.Image.Size)
	if err != nil {
		return WriteResult{}, err
	}
	if onDisk != in.Image.SHA256 {
		return WriteResult{}, checksumError("disk read back", in.Image.SHA256, onDisk)
	}
	res := WriteResult{
		Digest:      onDisk,
		Bytes:       streamed,
		ResumedFrom: resumedFrom,
		Duration:    time.Since(start).Round(time.Millisecond).String(),
		MBps:        rate,
	}
	log.Info("image written", "host", in.Host, "disk", in.Disk, "bytes", streamed, "resumed_from", resumedFrom, "stream_time", streamDur.Round(time.Millisecond).String(), "mbps", fmt.Sprintf("%.1f", rate))
	return res, nil
}

func checksumError(what, want, got string) error {
	msg := fmt.Sprintf("%s: sha256 mismatch: want %s, got %s", what, want, got)
	return temporal.NewNonRetryableApplicationError(msg, ErrTypeImageChecksumMismatch, nil, want, got)
}

func marshalHash(h hash.Hash) []byte {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // sha256 always marshals
	}
	return b
}

// segmentReader hashes and counts what it hands to the remote dd, and
// keeps the source's error apart from the transport's.
type segmentReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error // a source error other than EOF
}

func (s *segmentReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.h.Write(p[:n])
		s.n += int64(n)
	}
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// diskScript prints what it learns about $1: kind=, size=, and one
// mounted= line per mount or swap that uses it (the device itself, one of
// its partitions, or, for a file, a bind mount onto it).
const diskScript = `d=$1
if [ -b "$d" ]; then kind=block; size=$(blockdev --getsize64 "$d") || exit 4
elif [ -f "$d" ]; then kind=file; size=$(stat -L -c %s "$d") || exit 4
else echo "kind=none"; exit 0; fi
echo "kind=$kind"; echo "size=$size"
real=$(readlink -f "$d")
while read -r src mnt rest; do
  s=$src
  case "$src" in /*) s=$(readlink -f "$src" 2>/dev/null || echo "$src");; esac
  hit=
  if [ "$mnt" = "$real" ] || [ "$s" = "$real" ]; then hit=1; fi
  if [ "$kind" = block ]; then case "$s" in "$real"[0-9]*|"$real"p[0-9]*) hit=1;; esac; fi
  if [ -n "$hit" ]; then echo "mounted=$src on $mnt"; fi
done < /proc/mounts
if [ -r /proc/swaps ]; then
  while read -r src rest; do
    case "$src" in /*) s=$(readlink -f "$src" 2>/dev/null || echo "$src");; *) continue;; esac
    if [ "$s" = "$real" ]; then echo "mounted=$src as swap"; fi
    if [ "$kind" = block ]; then case "$s" in "$real"[0-9]*|"$real"p[0-9]*) echo "mounted=$src as swap";; esac; fi
  done < /proc/swaps
fi
`

// checkDisk refuses a disk that is missing, in use or too small.
func checkDisk(ctx context.Context, c *ssh.Client, disk string, need int64) error {
	out, stderr, exit, err := remote.Run(ctx, c, "sh -s -- "+remote.Quote(disk), strings.NewReader(diskScript))
	if err != nil {
		return fmt.Errorf("check disk %s: %w", disk, err)
	}
	if exit != 0 {
		return fmt.Errorf("check disk %s: exit %d: %s", disk, exit, tail(stderr, 500))
	}
	var kind string
	size := int64(-1)
	var mounts []string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "kind":
			kind = v
		case "size":
			size, _ = strconv.ParseInt(v, 10, 64)
		case "mounted":
			mounts = append(mounts, v)
		}
	}
	switch {
	case kind == "none":
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("disk %s: not a block device on the host", disk), ErrTypeDiskNotFound, nil)
	case kind == "" || size < 0:
		return fmt.Errorf("check disk %s: unexpected answer %q", disk, tail(out, 200))
	case len(mounts) > 0:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("disk %s is in use: %s", disk, strings.Join(mounts, "; ")), ErrTypeDiskMounted, nil)
	case size < need:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("disk %s has %d bytes, the image needs %d", disk, size, need), ErrTypeDiskTooSmall, nil)
	}
	return nil
}

// readBack hashes the disk's first size bytes on the host; openssl is
// faster than coreutils' sha256sum where it is installed.
func readBack(ctx context.Context, c *ssh.Client, disk string, size int64) (string, error) {
	q := remote.Quote(disk)
	cmd := fmt.Sprintf(`if command -v openssl >/dev/null 2>&1; then head -c %d %s | openssl dgst -sha256 -r; else head -c %d %s | sha256sum; fi`, size, q, size, q)
	out, stderr, exit, err := remote.Run(ctx, c, cmd, nil)
	if err != nil {
		return "", fmt.Errorf("read back disk %s: %w", disk, err)
	}
	f := strings.Fields(string(out))
	if exit != 0 || len(f) == 0 || len(f[0]) != 64 {
		return "", fmt.Errorf("read back disk %s: exit %d: %s", disk, exit, tail(stderr, 500))
	}
	return strings.ToLower(f[0]), nil
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
	io.ReadCloser
	ctx   context.Context
	rate  int64
	start time.Time
	read  int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if max := t.rate / 10; max > 0 && int64(len(p)) > max {
		p = p[:max]
	}
	n, err := t.ReadCloser.Read(p)
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
