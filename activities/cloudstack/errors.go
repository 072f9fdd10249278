package cloudstack

import (
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/secrets"
)

// Error types of this package's activities, as a workflow's RetryPolicy and
// an operator searching the history see them. Bad input and credentials
// raise the shared activities.ErrTypeInvalidInput, ErrTypeCredentialNotFound
// (the secret reference resolves to nothing) and ErrTypeInvalidCredential
// (the secret lacks the API key, Username, or the secret key, Password).
const (
	// ErrTypeAuthFailed: CloudStack answered 401 (bad key, bad signature,
	// expired request). Not retryable.
	ErrTypeAuthFailed = "CloudStackAuthFailed"
	// ErrTypeNotPermitted: CloudStack answered 401 because the key's role
	// may not run the command ("either does not exist, is not available
	// for user"); the key itself is good. Not retryable: a CloudStack
	// admin has to allow the command for the role.
	ErrTypeNotPermitted = "CloudStackNotPermitted"
	// ErrTypeCredentialNotAllowed: the secrets file does not let the
	// credential go to the target URL (bound to other endpoints, to none,
	// or plain http beyond loopback). Nothing was sent. Not retryable.
	// Same name as activities/nitro's, until the shared vocabulary has it.
	ErrTypeCredentialNotAllowed = "CredentialNotAllowed"
	// ErrTypeTLS: the server's certificate did not verify. Not retryable:
	// fix the certificate (or, in a lab, set verify_ssl: false).
	ErrTypeTLS = "CloudStackTLSVerifyFailed"
	// ErrTypeVMNotRunning: the VM is not Running, so no NIC is added (the
	// guest could not be configured). Not retryable when Stopped or gone
	// for good; retryable in a passing state (Starting, Migrating...).
	ErrTypeVMNotRunning = "CloudStackVMNotRunning"
	// ErrTypeDefaultNetwork: the network asked for is the one of the VM's
	// default NIC, which carries its primary IP and default route; rackflow
	// never configures or removes it. Not retryable.
	ErrTypeDefaultNetwork = "CloudStackDefaultNetwork"
	// ErrTypeInvalidParameter: 430/431, CloudStack rejected a parameter
	// (missing, malformed, or an id of nothing). Not retryable.
	ErrTypeInvalidParameter = "CloudStackInvalidParameter"
	// ErrTypeUnsupported: 432, the command is not available to this key.
	ErrTypeUnsupported = "CloudStackUnsupported"
	// ErrTypeNotFound: no VM or network of that id or name. Not retryable.
	ErrTypeNotFound = "CloudStackNotFound"
	// ErrTypeAmbiguous: several VMs or networks have that name. Not retryable.
	ErrTypeAmbiguous = "CloudStackAmbiguousName"
	// ErrTypeBasicZone: the VM is in a Basic zone, which has no second
	// network to add a NIC on. Not retryable.
	ErrTypeBasicZone = "CloudStackBasicZone"
	// ErrTypeConflict: 537, or the VM's NIC on the network differs from what
	// was asked (another fixed IP). Not retryable.
	ErrTypeConflict = "CloudStackConflict"
	// ErrTypeAccount: 531, the account is disabled or lacks the right.
	ErrTypeAccount = "CloudStackAccountError"
	// ErrTypeLimit: 532/535, an account resource limit. Not retryable: it
	// takes an operator to raise it.
	ErrTypeLimit = "CloudStackLimitExceeded"
	// ErrTypeInternal: 530 and anything unrecognised. Retryable.
	ErrTypeInternal = "CloudStackInternalError"
	// ErrTypeCapacity: 533, no capacity now. Retryable after a long pause.
	ErrTypeCapacity = "CloudStackInsufficientCapacity"
	// ErrTypeUnavailable: 534, a resource (host, router) is unavailable.
	ErrTypeUnavailable = "CloudStackResourceUnavailable"
	// ErrTypeInUse: 536, another operation holds the resource. Retryable.
	ErrTypeInUse = "CloudStackResourceInUse"
	// ErrTypeRateLimited: 429, API rate limit. Retryable after a pause.
	ErrTypeRateLimited = "CloudStackRateLimited"
)

// NonRetryable lists this package's non-retryable types and the shared ones,
// for RetryPolicy.NonRetryableErrorTypes.
var NonRetryable = slices.Concat(activities.NonRetryableTypes, []string{
	ErrTypeAuthFailed, ErrTypeInvalidParameter, ErrTypeUnsupported, ErrTypeNotFound,
	ErrTypeAmbiguous, ErrTypeBasicZone, ErrTypeConflict, ErrTypeAccount, ErrTypeLimit,
	ErrTypeNotPermitted, ErrTypeCredentialNotAllowed, ErrTypeTLS, ErrTypeDefaultNetwork,
})

// CloudStack's HTTP error codes (ApiErrorCode).
const (
	CodeUnauthorized      = 401
	CodeRateLimited       = 429
	CodeMalformedParam    = 430
	CodeParamError        = 431
	CodeUnsupportedAction = 432
	CodeInternalError     = 530
	CodeAccountError      = 531
	CodeAccountLimit      = 532
	CodeInsufficientCap   = 533
	CodeUnavailable       = 534
	CodeAllocation        = 535
	CodeInUse             = 536
	CodeRuleConflict      = 537
)

// Retry pauses asked of Temporal for errors that a quick retry cannot fix.
var (
	CapacityRetryDelay  = 5 * time.Minute
	InUseRetryDelay     = 30 * time.Second
	RateLimitRetryDelay = 30 * time.Second
)

// APIError is an error CloudStack returned, from a call or a failed async
// job. cloudstack-go reports these as plain strings; ParseError recovers them.
type APIError struct {
	// HTTPCode is CloudStack's ApiErrorCode (431, 530, ...).
	HTTPCode int `json:"http_code"`
	// CSCode is the CSExceptionErrorCode (4350 for
	// InvalidParameterValueException, 9999 for ServerApiException), 0 when
	// CloudStack sent none.
	CSCode int `json:"cs_code"`
	// Text is CloudStack's errortext.
	Text string `json:"text"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("CloudStack API error %d (CSExceptionErrorCode: %d): %s", e.HTTPCode, e.CSCode, e.Text)
}

// Retryable reports whether the same call may succeed later.
func (e *APIError) Retryable() bool {
	switch e.HTTPCode {
	case CodeUnauthorized, CodeMalformedParam, CodeParamError, CodeUnsupportedAction,
		CodeAccountError, CodeAccountLimit, CodeAllocation, CodeRuleConflict:
		return false
	}
	return true
}

// NicExists reports CloudStack's refusal to add a second NIC on a network
// ("A NIC already exists for VM:i-2-10-VM in network: <uuid>").
func (e *APIError) NicExists() bool {
	return strings.HasPrefix(e.Text, "A NIC already exists")
}

// entityMissing reports CloudStack's answer to an id of nothing, which it
// words as an invalid parameter.
func (e *APIError) entityMissing() bool {
	return e.HTTPCode == CodeParamError && strings.Contains(e.Text, "entity does not exist")
}

var apiErrRe = regexp.MustCompile(`(?s)CloudStack API error (\d+) \(CSExceptionErrorCode: (-?\d+)\): (.*)`)

// ParseError finds the CloudStack error in err: an *APIError anywhere in
// its chain, or cloudstack-go's "CloudStack API error 431
// (CSExceptionErrorCode: 4350): ..." text.
func ParseError(err error) (*APIError, bool) {
	if err == nil {
		return nil, false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae, true
	}
	m := apiErrRe.FindStringSubmatch(err.Error())
	if m == nil {
		return nil, false
	}
	code, _ := strconv.Atoi(m[1])
	cs, _ := strconv.Atoi(m[2])
	return &APIError{HTTPCode: code, CSCode: cs, Text: m[3]}, true
}

// VMGone reports CloudStack's answer about a VM that no longer exists: a
// 431 for a virtualmachineid of nothing, or the 530 "Virtual machine id does not exist"
// a job or command on a just-expunged VM fails with.
func (e *APIError) VMGone() bool {
	return (e.entityMissing() && strings.Contains(e.Text, "parameter virtualmachineid value=")) ||
		(e.HTTPCode == CodeInternalError && strings.Contains(strings.ToLower(e.Text), "virtual machine id does not exist"))
}

// nicGone reports CloudStack's answer to a nicid of nothing.
func (e *APIError) nicGone() bool {
	return e.entityMissing() && strings.Contains(e.Text, "parameter nicid value=")
}

// notPermitted reports a 401 for a command the key's role may not run: the
// ApiServer's PermissionDeniedException answer, not a bad signature.
func (e *APIError) notPermitted() bool {
	return e.HTTPCode == CodeUnauthorized && strings.Contains(e.Text, "is not available for user")
}

// deterministic530 lists texts of CloudStack's 530 (CloudRuntimeException)
// answers that the same call will meet again: retrying cannot help.
var deterministic530 = []struct{ text, typ string }{
	{"has a NetworkType of Basic", ErrTypeBasicZone},                     // addNicToVirtualMachine, Basic zone
	{"A NIC with this MAC address exists", ErrTypeConflict},              // duplicate MAC on the network
	{"already has a vm with host name", ErrTypeConflict},                 // duplicate hostname on the network
	{"Insufficient capacity when adding NIC", ErrTypeCapacity},           // no address left on the network
	{"A MAC address cannot be generated", ErrTypeLimit},                  // the network's MAC range is used up
	{"permission", ErrTypeAccount},                                       // PermissionDenied wrapped as a runtime error
	{"is in zone:", ErrTypeInvalidParameter},                             // network in another zone
	{"Virtual machine id does not exist", ErrTypeNotFound},               // the VM is gone
	{"NIC cannot be added to VM with VM Snapshots", ErrTypeConflict},     // delete the snapshots first
	{"NIC cannot be removed from VM with VM Snapshots", ErrTypeConflict}, // likewise
}

// appError turns err into the activity error a workflow should see. action
// says what failed ("add NIC to VM x").
func appError(action string, err error) error {
	err = redact(err)
	msg := action + ": " + err.Error()
	switch {
	case errors.Is(err, secrets.ErrNotFound):
		return activities.NonRetryable(msg, activities.ErrTypeCredentialNotFound, err)
	case errors.Is(err, secrets.ErrNotAllowed), errors.Is(err, secrets.ErrUnbound), errors.Is(err, secrets.ErrCleartext):
		return activities.NonRetryable(msg, ErrTypeCredentialNotAllowed, err)
	case errors.Is(err, errBadProject):
		return activities.NonRetryable(msg, activities.ErrTypeInvalidInput, err)
	case errors.Is(err, errBadCredential):
		return activities.NonRetryable(msg, activities.ErrTypeInvalidCredential, err)
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return activities.NonRetryable(msg+" (the certificate does not verify; fix it, or for a lab set verify_ssl: false)", ErrTypeTLS, err)
	}
	ae, ok := ParseError(err)
	if !ok {
		// Transport errors, timeouts, unparseable answers: retry.
		return temporal.NewApplicationErrorWithOptions(msg, ErrTypeInternal, temporal.ApplicationErrorOptions{Cause: err})
	}
	// Details carry the parsed error across Temporal's serialization:
	// a workflow reads it with ApplicationError.Details(&apiErr).
	opts := temporal.ApplicationErrorOptions{Cause: ae, NonRetryable: !ae.Retryable(), Details: []any{*ae}}
	if ae.HTTPCode == CodeInternalError {
		lower := strings.ToLower(ae.Text)
		for _, d := range deterministic530 {
			if strings.Contains(lower, strings.ToLower(d.text)) {
				opts.NonRetryable = true
				return temporal.NewApplicationErrorWithOptions(msg, d.typ, opts)
			}
		}
	}
	var typ string
	switch ae.HTTPCode {
	case CodeUnauthorized:
		typ = ErrTypeAuthFailed
		if ae.notPermitted() {
			typ = ErrTypeNotPermitted
			msg = action + ": not permitted: the API key's role may not run this command; ask a CloudStack admin to allow it (" + ae.Text + ")"
		} else {
			msg = action + ": bad credentials: CloudStack did not accept the API key or signature (" + ae.Text + ")"
		}
	case CodeMalformedParam, CodeParamError:
		typ = ErrTypeInvalidParameter
	case CodeUnsupportedAction:
		typ = ErrTypeUnsupported
	case CodeAccountError:
		typ = ErrTypeAccount
	case CodeAccountLimit, CodeAllocation:
		typ = ErrTypeLimit
	case CodeRuleConflict:
		typ = ErrTypeConflict
	case CodeInsufficientCap:
		typ, opts.NextRetryDelay = ErrTypeCapacity, CapacityRetryDelay
	case CodeUnavailable:
		typ = ErrTypeUnavailable
	case CodeInUse:
		typ, opts.NextRetryDelay = ErrTypeInUse, InUseRetryDelay
	case CodeRateLimited:
		typ, opts.NextRetryDelay = ErrTypeRateLimited, RateLimitRetryDelay
	default:
		typ = ErrTypeInternal
	}
	return temporal.NewApplicationErrorWithOptions(msg, typ, opts)
}

func nonRetryable(typ, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return activities.NonRetryable(err.Error(), typ, err)
}
