package main

import (
	"testing"

	"github.com/rackflow/rackflow/testsuite/deps"
)

// The starter needs workflow names and api's types, never a vendor SDK:
// it must not link bmclib, cloudstack-go or the NITRO client.
func TestStarterLinksNoVendorClient(t *testing.T) {
	deps.Forbid(t, "github.com/rackflow/rackflow/starter",
		"github.com/bmc-toolbox/bmclib/...",
		"github.com/apache/cloudstack-go/...",
		"github.com/rackflow/rackflow/activities/nitro/...",
		"github.com/rackflow/rackflow/secrets",
	)
}
