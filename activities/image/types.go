package image

import (
	"time"

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

// WriteInput is the input of WriteImage.
type WriteInput struct {
	Host   string        `json:"host"`
	Target remote.Target `json:"target"` // HostKey required
	// Image.Size and Image.SHA256 are those of the raw image, also when
	// the file is compressed.
	Image api.Image `json:"image"`
	// Disk is the target block device (a regular file in tests). Give it
	// or RootDevice.
	Disk string `json:"disk,omitempty"`
	// RootDevice names the target disk by hints instead; it is resolved
	// on the host (lsblk, else the disk helper) right before the write,
	// and the write is refused unless exactly one whole disk matches.
	RootDevice *api.RootDevice `json:"root_device,omitempty"`
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
	// Disk is the disk the root-device hints resolved to (nil when the
	// input named a path).
	Disk *api.ResolvedDisk `json:"disk,omitempty"`
}

// Progress is WriteImage's heartbeat detail. Offset only ever describes
// data the host's dd has written, fsynced and exited 0 for.
type Progress struct {
	Offset int64 `json:"offset"`
	Total  int64 `json:"total"`
	// HashState is the sha256 (or sha512) state over bytes [0, Offset) of
	// a compressed image (a raw one is hashed only by the read-back), from
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
	// Disk is the resolved disk this progress was written to: a retry
	// whose hints resolve to another disk starts over.
	Disk *api.ResolvedDisk `json:"disk,omitempty"`
}

// streamed is what a transfer mode reports back.
type streamed struct {
	from, bytes int64
	sourceBytes int64
	format      string
	digest      string // of the stream, push only
	dur         time.Duration
}
