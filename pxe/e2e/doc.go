// Package e2e holds the pxe service's end-to-end tests, all on the real
// rackflow-pxe binary in network namespaces: a 200-host boot storm and a
// restart in the middle of a lease renewal (busybox udhcpc), run by every
// `go test`, and a QEMU machine with real SeaBIOS + iPXE firmware booting
// the live system and taking its one-time host key, which is slow (TCG) and
// runs only with RACKFLOW_QEMU=1 (make test-qemu, part of make test).
//
// Tests that run workflows or activities on QEMU machines live in
// testsuite/integration; both use the QEMU lab of testsuite/qemu. This
// package has no code of its own.
package e2e
