// Package pxe is rackflow's PXE boot service: it holds the per-MAC boot leases
// the worker writes through an authenticated HTTP API, renders each booting
// host's iPXE script, serves kernels and initrds over HTTP, and hands the live
// system its per-boot SSH host key exactly once. The DHCP and TFTP servers
// live in pxe/dhcp and pxe/tftp and read leases through Store.Get; the lease
// itself is pxe/lease, and the worker talks to this service only through
// pxe/client, which links neither server.
//
// It is not an IPAM or an inventory: it serves whatever the worker last PUT,
// and it knows nothing of workflows, BMCs or images.
package pxe
