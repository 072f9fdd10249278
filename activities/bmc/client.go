package bmc

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/bmclib/v2/providers/ipmitool"
	"github.com/bmc-toolbox/bmclib/v2/providers/redfish"
)

// Client is what the activities need of a BMC. *bmclib.Client has these
// methods; tests may pass a hand-written fake for what a real BMC will not
// do on demand.
type Client interface {
	Open(ctx context.Context) error
	Close(ctx context.Context) error
	// GetPowerState returns the provider's text: "Chassis Power is on" from
	// ipmitool, "On" from Redfish.
	GetPowerState(ctx context.Context) (string, error)
	// SetPowerState takes "on", "off", "cycle" or "reset".
	SetPowerState(ctx context.Context, state string) (bool, error)
	SetBootDevice(ctx context.Context, device string, persistent, efiBoot bool) (bool, error)
}

// ClientFunc builds a Client for one BMC. It must not contact the BMC (the
// activity calls Open) and must not retry: Temporal owns retries.
type ClientFunc func(ctx context.Context, host string, port int, user, pass, provider string) (Client, error)

// BMCLib is the default ClientFunc: a bmclib client restricted to one
// provider, ipmitool for "ipmi" (the ipmitool binary must be installed) and
// gofish for "redfish". bmclib's Redfish client does not verify the BMC's
// TLS certificate, as most BMCs ship self-signed ones.
func BMCLib(_ context.Context, host string, port int, user, pass, provider string) (Client, error) {
	var opts []bmclib.Option
	var driver string
	switch provider {
	case "ipmi":
		// bmclib registers no ipmitool provider, silently, without it.
		if _, err := exec.LookPath("ipmitool"); err != nil {
			return nil, fmt.Errorf("ipmitool is not installed on this worker (Debian package ipmitool): %w", err)
		}
		opts = append(opts, bmclib.WithIpmitoolPort(strconv.Itoa(port)))
		driver = ipmitool.ProviderName
	case "redfish":
		opts = append(opts, bmclib.WithRedfishPort(strconv.Itoa(port)))
		driver = redfish.ProviderName
	default:
		return nil, fmt.Errorf("unknown bmc provider %q", provider)
	}
	c := bmclib.NewClient(host, user, pass, opts...)
	c.Registry.Drivers = c.Registry.For(driver)
	if len(c.Registry.Drivers) == 0 {
		return nil, fmt.Errorf("bmclib has no %s provider", driver)
	}
	return c, nil
}
