package lease

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/activity"

	"github.com/rackflow/rackflow/activities"
)

// ErrTypeBootUntrusted: the live system's one-time host key was taken by
// someone other than the host (a second fetch, or from another address).
// Not retryable: the boot network needs a look, then a new boot.
const ErrTypeBootUntrusted = "BootUntrusted"

// VerifyInput names the boot to check: the lease and the host key the
// worker pinned for it when it registered the lease.
type VerifyInput struct {
	Host    string `json:"host"`
	MAC     string `json:"mac"`
	HostKey string `json:"host_key"`
}

// VerifyResult says who took the key, and how many requests for this
// boot's files pxe refused (someone reaching from another address).
type VerifyResult struct {
	FetchedFrom string `json:"fetched_from"`
	Refused     int    `json:"refused,omitempty"`
}

// VerifyBoot checks, after the live system answered SSH with the pinned key
// and before the worker sends it anything, that the key reached the host
// itself: pxe recorded that it was fetched once, from the lease's IP. The
// boot network is untrusted; this is what makes a stolen key useless.
func (a *Activities) VerifyBoot(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	l, err := a.PXE.Get(ctx, in.MAC)
	if err != nil {
		return VerifyResult{}, classify("read lease of "+in.Host, err)
	}
	if l.HostKey != in.HostKey {
		return VerifyResult{}, activities.NonRetryable(fmt.Sprintf(
			"lease of %s carries another host key than the one this run pinned: the lease was re-registered by someone else", in.Host),
			ErrTypeBootUntrusted, nil)
	}
	res := VerifyResult{FetchedFrom: l.HostKeyFetchedFrom, Refused: len(l.Refusals)}
	if ok, why := l.BootTrusted(); !ok {
		return res, activities.NonRetryable(fmt.Sprintf("boot of %s is not trusted: %s; check the boot network, then provision again (abort this run)", in.Host, why),
			ErrTypeBootUntrusted, nil)
	}
	if res.Refused > 0 {
		last := l.Refusals[len(l.Refusals)-1]
		activity.GetLogger(ctx).Warn("pxe refused boot requests for this host from another address",
			"host", in.Host, "refused", res.Refused, "last_from", last.From, "last_route", last.Route)
	}
	return res, nil
}
