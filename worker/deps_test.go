package main

import (
	"testing"

	"github.com/rackflow/rackflow/testsuite/deps"
)

// The worker reaches the pxe service through its lease API only: it links
// the lease type and the client, never the DHCP or TFTP server.
func TestWorkerLinksNoBootServer(t *testing.T) {
	deps.Forbid(t, "github.com/rackflow/rackflow/worker",
		"github.com/rackflow/rackflow/pxe",
		"github.com/rackflow/rackflow/pxe/dhcp/...",
		"github.com/rackflow/rackflow/pxe/tftp/...",
		"github.com/insomniacslk/dhcp/...",
		"github.com/pin/tftp/...",
	)
}
