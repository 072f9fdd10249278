package nitro

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities/nitro/nitroclient"
)

// What the activities check about the appliance itself before they change
// anything: its place in an HA pair, its release, its features and the
// addresses it owns.

// haNode is a row of "hanode": node 0 is the node answering.
type haNode struct {
	ID        string `json:"id"`
	IPAddress string `json:"ipaddress"`
	// State is the node's HA role: Primary, Secondary, Claiming, Force
	// Change or UNKNOWN. A standalone appliance reports node 0 Primary.
	State string `json:"state"`
}

func (haNode) ResourceType() string { return "hanode" }

type nsVersion struct {
	// Version reads like "NetScaler NS13.1: Build 37.38.nc, Date: ...".
	Version string `json:"version"`
}

func (nsVersion) ResourceType() string { return "nsversion" }

type nsFeature struct {
	LB bool `json:"lb"`
}

func (nsFeature) ResourceType() string { return "nsfeature" }

type nsIP struct {
	IPAddress string `json:"ipaddress"`
	Type      string `json:"type,omitempty"`
}

func (nsIP) ResourceType() string { return "nsip" }

// HAPrimary is the hanode state of the node configuration must go to.
const HAPrimary = "Primary"

// requirePrimary refuses to work on a node that is not the primary: what is
// configured on a secondary is overwritten by the next sync.
func requirePrimary(ctx context.Context, c API) error {
	var nodes []haNode
	if err := c.List(ctx, haNode{}.ResourceType(), &nodes); err != nil {
		return classify(op(opRead, "hanode"), err)
	}
	self, primary := "", ""
	for _, n := range nodes {
		if n.ID == "0" {
			self = n.State
		} else if strings.EqualFold(n.State, HAPrimary) {
			primary = n.IPAddress
		}
	}
	if strings.EqualFold(self, HAPrimary) {
		return nil
	}
	where := "no node of the pair reports Primary"
	if primary != "" {
		where = "the primary is " + primary + ": point the URL at it (or at the pair's floating management address)"
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("this NetScaler is %q in its HA pair, not Primary; changes made here would be lost: %s", self, where),
		ErrTypeNotPrimary, nil)
}

// requireLB refuses when the load-balancing feature is disabled: NetScaler
// accepts LB objects then, and they never serve.
func requireLB(ctx context.Context, c API) error {
	f, err := singleton[nsFeature](ctx, c)
	if err != nil {
		return classify(op(opRead, "nsfeature"), err)
	}
	if !f.LB {
		return temporal.NewNonRetryableApplicationError(
			"the load-balancing feature is disabled on this NetScaler: enable it (enable ns feature LB) before publishing",
			ErrTypeUnsupported, nil)
	}
	return nil
}

var versionRE = regexp.MustCompile(`NS(\d+)\.(\d+)`)

// releaseAtLeast reads nsversion and compares its major.minor.
func releaseAtLeast(ctx context.Context, c API, major, minor int) (bool, string, error) {
	v, err := singleton[nsVersion](ctx, c)
	if err != nil {
		return false, "", classify(op(opRead, "nsversion"), err)
	}
	m := versionRE.FindStringSubmatch(v.Version)
	if m == nil {
		return false, v.Version, fmt.Errorf("nsversion %q: no release number", v.Version)
	}
	ma, _ := strconv.Atoi(m[1])
	mi, _ := strconv.Atoi(m[2])
	return ma > major || (ma == major && mi >= minor), m[1] + "." + m[2], nil
}

// requireNSIP refuses an address the appliance does not own: NAT to it
// would never see a packet.
func requireNSIP(ctx context.Context, c API, f, ip string) error {
	_, err := nitroclient.Get[nsIP](ctx, c, ip)
	if nitroclient.IsNotFound(err) {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s %s is not an address of this NetScaler; add it first (add ns ip %s 255.255.255.255 -type VIP)", f, ip, ip),
			ErrTypeNotOwnedIP, nil)
	}
	if err != nil {
		return classify(op(opRead, "nsip/"+ip), err)
	}
	return nil
}

// ensureLB is ensure for the load-balancing objects: it checks the LB
// feature first.
func ensureLB[T nitroclient.Resource](ctx context.Context, a *Activities, t Target, want T, differ func(T) []string) (Result, error) {
	var res Result
	err := a.with(ctx, t, func(c API) error {
		if err := requireLB(ctx, c); err != nil {
			return err
		}
		var err error
		res, err = ensureIn(ctx, c, t, want, differ)
		return err
	})
	return res, err
}

// singleton reads a resource NITRO answers as one object (nsversion, nsfeature).
func singleton[T nitroclient.Resource](ctx context.Context, c API) (T, error) {
	var rows []T
	var zero T
	if err := c.List(ctx, zero.ResourceType(), &rows); err != nil {
		return zero, err
	}
	if len(rows) == 0 {
		return zero, fmt.Errorf("nitro GET %s: empty answer", zero.ResourceType())
	}
	return rows[0], nil
}
