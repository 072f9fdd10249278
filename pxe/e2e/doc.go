// Package e2e holds rackflow's PXE end-to-end tests: the rackflow-pxe
// binary (lease API, DHCP, TFTP, HTTP boot) in one network namespace, a
// QEMU machine with real SeaBIOS + iPXE firmware on a bridge in another,
// booting the live system and taking its one-time host key.
//
// It has no code of its own; the tests are slow (minutes under TCG) and run
// only with RACKFLOW_QEMU=1 (make test-qemu).
package e2e
