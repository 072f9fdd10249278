// Package activities holds what rackflow's activity packages share: the error
// type names workflows branch on. Each outside system has its own package
// below (bmc, lease, remote, image, chef, inventory); this one imports none
// of them.
package activities

// Error type names of non-retryable application errors. Operators search
// for them in the Web UI; workflows list them in RetryPolicy.NonRetryableErrorTypes.
const (
	ErrInvalidInput       = "InvalidInput"
	ErrUnknownHost        = "UnknownHost"
	ErrCredentialNotFound = "CredentialNotFound"
	ErrInvalidCredential  = "InvalidCredential"
	ErrLeaseConflict      = "LeaseConflict"
	ErrImageChecksum      = "ImageChecksumMismatch"
	ErrImageNotFound      = "ImageNotFound"
	ErrImageTruncated     = "ImageTruncated"
	ErrImageSizeMismatch  = "ImageSizeMismatch"
	ErrDiskTooSmall       = "DiskTooSmall"
	ErrDiskMounted        = "DiskMounted"
	ErrHostKeyMismatch    = "HostKeyMismatch"
	ErrBMCAuthFailed      = "BMCAuthFailed"
	// Names used by the remote and image packages for the same kinds.
	ErrBadInput           = "BadInput"
	ErrCredentialUnusable = "CredentialUnusable"
	ErrDiskNotFound       = "DiskNotFound"
	ErrImageUnavailable   = "ImageUnavailable"
)

// NonRetryable lists every type above, for RetryPolicy.NonRetryableErrorTypes.
var NonRetryable = []string{
	ErrInvalidInput, ErrUnknownHost, ErrCredentialNotFound, ErrInvalidCredential,
	ErrLeaseConflict, ErrImageChecksum, ErrImageNotFound, ErrImageTruncated,
	ErrImageSizeMismatch, ErrDiskTooSmall, ErrDiskMounted, ErrHostKeyMismatch,
	ErrBMCAuthFailed, ErrBadInput, ErrCredentialUnusable, ErrDiskNotFound, ErrImageUnavailable,
}

// IsInputError reports whether an error type means the input itself is wrong:
// nothing was touched, and retrying the same input cannot help.
func IsInputError(typ string) bool {
	switch typ {
	case ErrInvalidInput, ErrUnknownHost, ErrCredentialNotFound, ErrInvalidCredential,
		ErrBadInput, ErrCredentialUnusable, ErrImageNotFound, ErrImageUnavailable, ErrImageSizeMismatch:
		return true
	}
	return false
}
