package nitroclient

import (
	"errors"
	"fmt"
)

// Kinds of NITRO failure, for errors.Is. An *Error matches the kind its
// errorcode belongs to; decisions never look at the HTTP status or message.
var (
	// ErrExists: the object or binding is already configured (273; RNAT 773, 774, 976).
	ErrExists = errors.New("nitro: resource already exists")
	// ErrNotFound: the object, its parent or a referenced object does not
	// exist (258; 461 no such vserver, 462 no such service, 463 no such
	// service/servicegroup; RNAT 775, 776).
	ErrNotFound = errors.New("nitro: no such resource")
	// ErrNotBound: the binding to remove is not there (2170 monitor not
	// bound, 1303 servicegroup not bound to the vserver). An unbind that
	// meets it has nothing to do.
	ErrNotBound = errors.New("nitro: not bound")
	// ErrInvalidArgument: the request itself is wrong (278 and the CLI
	// argument codes: 1075 invalid name, 1090–1099, 1106–1112, 1232–1236;
	// the NAT argument codes 3888–3902).
	ErrInvalidArgument = errors.New("nitro: invalid argument")
	// ErrBusy: try again later (293 operation already in progress, 603 and
	// 1461 configuration being saved, 445 too many sessions).
	ErrBusy = errors.New("nitro: operation in progress")
	// ErrAuth: the credentials were refused (354, 355, 1025, 1244), or the
	// session ended again right after a fresh login.
	ErrAuth = errors.New("nitro: authentication failed")
	// ErrNotPermitted: the user logged in but may not do this (257
	// operation not permitted, 2138 not authorized to execute the command).
	ErrNotPermitted = errors.New("nitro: not permitted")
	// ErrRedirected: the address answered with an HTTP redirect instead of
	// NITRO (e.g. http to https, or a login page): the URL is wrong, the
	// credentials were never judged. The client does not follow it.
	ErrRedirected = errors.New("nitro: redirected")
	// ErrNotPropagated: the change was made on this node but NITRO warned
	// (with ?warning=yes) that it did not reach the HA peer (1028, 1044).
	ErrNotPropagated = errors.New("nitro: change not propagated to the HA peer")
	// ErrSessionExpired: the session is gone (444, 471, 1026, 1027). The
	// client logs in again once by itself; callers see ErrAuth if that fails.
	ErrSessionExpired = errors.New("nitro: session expired")
	// ErrInUse: the object is still referenced (315).
	ErrInUse = errors.New("nitro: resource in use")
)

// NITRO error codes this package names (NSERR_* in the NetScaler error reference).
const (
	CodeNoSuchResource     = 258 // NSERR_NOENT
	CodeExists             = 273 // NSERR_EXIST
	CodeInvalidArgument    = 278 // NSERR_INVAL
	CodeInProgress         = 293 // NSERR_ALREADY
	CodeResourceInUse      = 315 // NSERR_TOOMANYREFS
	CodeBadCredentials     = 354 // NSERR_NOUSER
	CodeSessionExpired     = 444 // NSERR_SESSION_EXPIRED
	CodeNoSuchVServer      = 461 // NSERR_NOENT_VSERVER
	CodeNoSuchService      = 462 // NSERR_NOENT_SVC
	CodeNoSuchServiceGroup = 463 // NSERR_NOENT_SVC_SVCGRP
	CodeRNATNATIPExists    = 773 // NSERR_RNAT_NATIP_EXISTS: RNAT to the network with this NAT IP exists
	CodeRNATExists         = 774 // NSERR_RNAT_EXISTS: RNAT to the target network already exists
	CodeRNATNotExists      = 775 // NSERR_RNAT_NOT_EXISTS: RNAT to the target network does not exist
	CodeRNATNATIPNotExists = 776 // NSERR_RNAT_NATIP_NOT_EXISTS: no RNAT to the network with this NAT IP
	CodeNotLoggedIn        = 1027
	CodeMonitorNotBound    = 2170 // NSERR_MONITOR_NOT_BOUND
	CodeNotBoundToVServer  = 1303 // the servicegroup is not bound to the vserver
	CodeNotPermitted       = 257  // NSERR_PERM
	CodeNotAuthorized      = 2138 // not authorized to execute this command
	CodeSessionLimit       = 445  // too many sessions
	CodeSaveInProgress     = 603  // configuration being saved
	CodeNotPropagated      = 1028 // warning: the command did not propagate to the HA peer
	CodeNotPropagatedSync  = 1044 // warning: the HA peer is out of sync; not propagated
)

// Error is a failure NITRO reported: its errorcode, message and severity,
// and the HTTP status it came with (informational only).
type Error struct {
	// Op is what was asked, e.g. "POST lbvserver" or "DELETE servicegroup/web".
	Op         string
	HTTPStatus int
	ErrorCode  int
	Message    string
	Severity   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("nitro %s: errorcode %d: %s (HTTP %d)", e.Op, e.ErrorCode, e.Message, e.HTTPStatus)
}

// Is matches the kinds above.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrExists:
		return e.ErrorCode == 273 || e.ErrorCode == 773 || e.ErrorCode == 774 || e.ErrorCode == 976
	case ErrNotFound:
		switch e.ErrorCode {
		case 258, 461, 462, 463, 775, 776:
			return true
		}
	case ErrNotBound:
		return e.ErrorCode == CodeMonitorNotBound || e.ErrorCode == CodeNotBoundToVServer
	case ErrInvalidArgument:
		c := e.ErrorCode
		return c == 278 || c == 1075 || (c >= 1090 && c <= 1099) || (c >= 1106 && c <= 1112) || (c >= 1232 && c <= 1236) ||
			(c >= 3888 && c <= 3902)
	case ErrBusy:
		switch e.ErrorCode {
		case 293, CodeSaveInProgress, 1461, CodeSessionLimit:
			return true
		}
	case ErrNotPermitted:
		return e.ErrorCode == CodeNotPermitted || e.ErrorCode == CodeNotAuthorized
	case ErrRedirected:
		return e.HTTPStatus >= 300 && e.HTTPStatus < 400
	case ErrNotPropagated:
		return e.ErrorCode == CodeNotPropagated || e.ErrorCode == CodeNotPropagatedSync
	case ErrAuth:
		switch e.ErrorCode {
		case 354, 355, 1025, 1244:
			return true
		}
	case ErrSessionExpired:
		return isSessionCode(e.ErrorCode)
	case ErrInUse:
		return e.ErrorCode == 315
	}
	return false
}

func isSessionCode(c int) bool {
	return c == 444 || c == 471 || c == 1026 || c == 1027
}

// Code returns the NITRO errorcode of err, or 0 if err is not an *Error.
func Code(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.ErrorCode
	}
	return 0
}

// IsNotFound reports whether err means the thing does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsExists reports whether err means the thing already exists.
func IsExists(err error) bool { return errors.Is(err, ErrExists) }
