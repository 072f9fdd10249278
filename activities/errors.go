// Package activities holds what rackflow's activity packages share: the error
// type names workflows branch on, and the plumbing every long activity needs
// (a heartbeat loop, the previous attempt's progress, config defaults). Each
// outside system has its own package below (bmc, lease, remote, image, chef,
// cloudstack, guestnet, nitro...); this one imports none of them.
package activities

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/secrets"
)

// Error type names of the application errors more than one package raises,
// or that workflows branch on. Operators search for them in the Web UI;
// workflows list them in RetryPolicy.NonRetryableErrorTypes. A kind only one
// package raises lives in that package, named ErrType… too.
const (
	// ErrTypeInvalidInput: the input cannot work; nothing was touched.
	ErrTypeInvalidInput = "InvalidInput"
	// ErrTypeUnknownHost: the inventory has no such host.
	ErrTypeUnknownHost = "UnknownHost"
	// ErrTypeCredentialNotFound: a secret reference resolves to nothing.
	ErrTypeCredentialNotFound = "CredentialNotFound"
	// ErrTypeInvalidCredential: the secret exists but cannot be used (no
	// key, no password, a key that does not parse).
	ErrTypeInvalidCredential = "InvalidCredential"
	// ErrTypeCredentialNotAllowed: the worker's secrets file does not let
	// this credential go where the input would send it (it is bound to
	// other endpoints, a disclosed one to none, or the way there is plain
	// http beyond loopback). Nothing was sent; the secrets file or the
	// inventory, not a retry, has to change.
	ErrTypeCredentialNotAllowed = "CredentialNotAllowed"
	// ErrTypeLeaseConflict: the boot network already leases the MAC or IP
	// to another host.
	ErrTypeLeaseConflict = "LeaseConflict"
	// ErrTypeHostKeyMismatch: sshd presented another host key than the
	// pinned one.
	ErrTypeHostKeyMismatch = "HostKeyMismatch"

	// ErrTypeImageNotFound: the image URL answers 404 or 410, or the file
	// does not exist.
	ErrTypeImageNotFound = "ImageNotFound"
	// ErrTypeImageUnavailable: the image server refuses it (401, 403...).
	ErrTypeImageUnavailable = "ImageUnavailable"
	// ErrTypeImageTruncated: the image ends before its declared size.
	ErrTypeImageTruncated = "ImageTruncated"
	// ErrTypeImageSizeMismatch: the image is longer than its declared size.
	ErrTypeImageSizeMismatch = "ImageSizeMismatch"
	// ErrTypeImageChecksumMismatch: the image, streamed or read back from
	// the disk, does not hash to the declared digest.
	ErrTypeImageChecksumMismatch = "ImageChecksumMismatch"
	// ErrTypeDiskNotFound: the target disk is not on the host.
	ErrTypeDiskNotFound = "DiskNotFound"
	// ErrTypeDiskMounted: the target disk (or a partition) is in use.
	ErrTypeDiskMounted = "DiskMounted"
	// ErrTypeDiskTooSmall: the target disk is smaller than the image.
	ErrTypeDiskTooSmall = "DiskTooSmall"
)

// Legacy maps error type names older workers raised to today's name for
// the same kind. Their failures may still sit in running workflows'
// histories, and an activity started by an old worker may still fail with
// them, so they are matched (IsType, IsInputError) and never retried
// (NonRetryableTypes). Never remove an entry while such a worker may run.
var Legacy = map[string]string{
	"BadInput":           ErrTypeInvalidInput,      // remote, image, chef
	"CredentialUnusable": ErrTypeInvalidCredential, // remote, chef
}

// NonRetryableTypes is for RetryPolicy.NonRetryableErrorTypes: every shared
// kind above, then the legacy names.
var NonRetryableTypes = []string{
	ErrTypeInvalidInput, ErrTypeUnknownHost, ErrTypeCredentialNotFound, ErrTypeInvalidCredential,
	ErrTypeCredentialNotAllowed, ErrTypeLeaseConflict, ErrTypeImageChecksumMismatch, ErrTypeImageNotFound, ErrTypeImageTruncated,
	ErrTypeImageSizeMismatch, ErrTypeDiskTooSmall, ErrTypeDiskMounted, ErrTypeHostKeyMismatch,
	ErrTypeDiskNotFound, ErrTypeImageUnavailable,
	"BadInput", "CredentialUnusable",
}

// Deprecated names, kept until the nitro package and the publish workflow
// move to the ErrType… ones.
const (
	// Deprecated: use ErrTypeInvalidInput.
	ErrInvalidInput = ErrTypeInvalidInput
	// Deprecated: use ErrTypeCredentialNotFound.
	ErrCredentialNotFound = ErrTypeCredentialNotFound
	// Deprecated: use ErrTypeInvalidCredential.
	ErrInvalidCredential = ErrTypeInvalidCredential
)

// Canonical returns today's name of an error type: typ itself, or the kind
// a legacy name stands for.
func Canonical(typ string) string {
	if c, ok := Legacy[typ]; ok {
		return c
	}
	return typ
}

// IsType reports whether err, or an error it wraps, is an application error
// of kind typ, under its name or a legacy one. The first application error
// in the chain decides: an activity or child workflow failure carries the
// type of the error that ended it.
func IsType(err error, typ string) bool {
	var ae *temporal.ApplicationError
	return errors.As(err, &ae) && Canonical(ae.Type()) == Canonical(typ)
}

// IsInputError reports whether an error type means the input itself is wrong:
// nothing was touched, and retrying the same input cannot help.
func IsInputError(typ string) bool {
	switch Canonical(typ) {
	case ErrTypeInvalidInput, ErrTypeUnknownHost, ErrTypeCredentialNotFound, ErrTypeInvalidCredential,
		ErrTypeCredentialNotAllowed, ErrTypeImageNotFound, ErrTypeImageUnavailable, ErrTypeImageSizeMismatch:
		return true
	}
	return false
}

// NonRetryable is an application error of kind typ that Temporal will not
// retry, whatever the retry policy says.
func NonRetryable(msg, typ string, cause error, details ...any) error {
	return temporal.NewNonRetryableApplicationError(msg, typ, cause, details...)
}

// InvalidInput is err as a non-retryable InvalidInput error.
func InvalidInput(err error) error {
	return NonRetryable(err.Error(), ErrTypeInvalidInput, err)
}

// InvalidInputf is InvalidInput(fmt.Errorf(format, args...)).
func InvalidInputf(format string, args ...any) error {
	return InvalidInput(fmt.Errorf(format, args...))
}

// CredentialError is the activity error for a failed secrets.Resolve or
// secrets.ResolveFor: a missing secret is CredentialNotFound, one the
// secrets file does not let go to that destination CredentialNotAllowed,
// both non-retryable. For any other error (a secrets file that cannot be
// read) it returns nil: the caller wraps it, and Temporal retries.
func CredentialError(err error) error {
	switch {
	// No cause: the message says it all, and a cause would print twice.
	case errors.Is(err, secrets.ErrNotFound):
		return NonRetryable(err.Error(), ErrTypeCredentialNotFound, nil)
	case errors.Is(err, secrets.ErrNotAllowed), errors.Is(err, secrets.ErrUnbound), errors.Is(err, secrets.ErrCleartext):
		return NonRetryable(err.Error(), ErrTypeCredentialNotAllowed, nil)
	}
	return nil
}
