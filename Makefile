# rackflow — see README.md. `make run` runs the whole stack locally,
# `make test` runs everything CI runs. Both install what they need.
GO            ?= go
TEMPORAL_CLI  := github.com/temporalio/cli/cmd/temporal@v1.5.1
BIN           := $(CURDIR)/bin
RUN_DIR       ?= $(CURDIR)/.run
export PATH   := $(BIN):$(PATH):/usr/local/go/bin:/usr/sbin:/sbin

.PHONY: all build deps test test-unit test-integration vet bench run clean

all: build

deps:
	@scripts/deps.sh

# The temporal CLI (dev server + Web UI), built from the module proxy once and
# reused: a cold build takes about 10 minutes on 2 cores.
$(BIN)/temporal:
	@mkdir -p $(BIN)
	@echo "building the temporal CLI into bin/ (first time only, ~10 min)"
	GOBIN=$(BIN) $(GO) install $(TEMPORAL_CLI)

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/rackflow-worker ./worker
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/rackflow-diskhelper ./activities/image/cmd/rackflow-diskhelper
	$(GO) build -o $(BIN)/rackflow-pxe ./pxe/cmd/rackflow-pxe
	$(GO) build -o $(BIN)/starter ./starter
	$(GO) build -o $(BIN)/rackflow-lab ./testsuite/lab/cmd/rackflow-lab

vet:
	$(GO) vet ./...

# Everything CI runs: unit, workflow, lab (netns, ipmi_sim, sshd) and
# integration tests on the real dev server, then the QEMU PXE boot.
test: deps $(BIN)/temporal vet
	$(GO) test -count=1 -timeout 40m ./...
	$(MAKE) test-qemu

# The fast path, no root needed: unit and workflow tests (replays
# included); everything needing root, sshd, ipmi_sim, network namespaces,
# the dev server or QEMU skips itself under -short.
test-unit:
	$(GO) test -count=1 -short ./...

# The integration tests alone (real dev server, worker process, ipmi_sim,
# sshd); needs root.
test-integration: deps $(BIN)/temporal
	$(GO) test -count=1 -timeout 30m ./testsuite/integration/

# Speed goals, each measured against its baseline in the same run; then
# one table of every ratio and its goal, saved as
# $(BENCH_RESULTS)/<date>-<host>.json (compare two runs with
# `go run ./testsuite/benchreport compare OLD.json NEW.json`).
BENCH_RESULTS ?= bench-results
bench: deps
	@mkdir -p $(BENCH_RESULTS)/raw
	bash -o pipefail -c '$(MAKE) --no-print-directory bench-image 2>&1 | tee $(BENCH_RESULTS)/raw/image.txt'
	$(MAKE) --no-print-directory bench-pxe BENCH_PXE_JSON=$(abspath $(BENCH_RESULTS))/raw/pxe.json
	bash -o pipefail -c '$(MAKE) --no-print-directory bench-fleet 2>&1 | tee $(BENCH_RESULTS)/raw/fleet.txt'
	$(GO) run ./testsuite/benchreport combine -dir $(BENCH_RESULTS) \
		-image $(BENCH_RESULTS)/raw/image.txt -pxe $(BENCH_RESULTS)/raw/pxe.json -fleet $(BENCH_RESULTS)/raw/fleet.txt

run: deps $(BIN)/temporal build
	@scripts/run.sh

clean:
	rm -rf $(RUN_DIR)

# QEMU machines (SeaBIOS + iPXE, and UEFI/OVMF with EDK2's own PXE and HTTP
# boot clients, under TCG) booting through rackflow-pxe in network
# namespaces (testsuite/qemu's lab): the PXE boots themselves (pxe/e2e),
# then WriteImage, root-device hints (serial and WWN) and ProvisionHost on
# them: behind ipmi_sim, behind the Redfish fake on a UEFI machine, and on
# the dev server with the worker killed mid-stream (testsuite/integration).
# The installed OS image boots on both firmware (syslinux, and a unified
# kernel image built with systemd-boot-efi's stub). Needs root. The
# kernel and busybox are fetched with apt-get download into
# $XDG_CACHE_HOME/rackflow or /var/cache/rackflow on first run. One package
# at a time (-p 1): two TCG machines at once would starve each other.
.PHONY: test-qemu
test-qemu: $(BIN)/temporal
	@if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || [ ! -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || [ ! -e /usr/lib/ipxe/ipxe.efi ] || [ ! -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || ! command -v ip >/dev/null 2>&1 || ! command -v syslinux >/dev/null 2>&1 || ! command -v mcopy >/dev/null 2>&1 || ! command -v mkfs.fat >/dev/null 2>&1 || ! command -v objcopy >/dev/null 2>&1 || [ ! -e /usr/lib/systemd/boot/efi/linuxx64.efi.stub ]; then \
		echo "test-qemu: installing qemu-system-x86 ipxe-qemu ipxe ovmf iproute2 syslinux mtools dosfstools binutils systemd-boot-efi"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		apt-cache show qemu-system-x86 >/dev/null 2>&1 || $$SUDO apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends qemu-system-x86 ipxe-qemu ipxe ovmf iproute2 syslinux syslinux-common mtools dosfstools binutils systemd-boot-efi >/dev/null; \
	fi
	@apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-' || { SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; $$SUDO apt-get update -qq; }
	RACKFLOW_QEMU=1 $(GO) test -count=1 -p 1 -run TestQEMU -timeout 30m -v ./pxe/e2e/ ./testsuite/integration/

# One run, one table: rackflow's image push and pull (1 GiB, raw and
# compressed) against OpenSSH's ssh | dd, a local dd and sha256sum, with
# the worker's peak memory. Loopback only; needs ~3 GiB in $(BENCH_DIR).
BENCH_DIR ?= $(or $(TMPDIR),/tmp)
.PHONY: bench-image
bench-image:
	$(GO) run ./testsuite/imagebench -dir $(BENCH_DIR)
	@echo; echo "the same rows for push and pull, as two machines (host pinned to CPU 1, sender to CPU 0):"
	$(GO) run ./testsuite/imagebench -dir $(BENCH_DIR) -pin -rows 'raw \(verified\)'

# rackflow-pxe against dnsmasq (DHCP with perfdhcp, TFTP with curl) and
# busybox httpd (HTTP), same leases, files and clients, in network
# namespaces; prints one table. Needs root; installs the tools on first run.
.PHONY: bench-pxe
bench-pxe:
	@if ! command -v perfdhcp >/dev/null 2>&1 || ! command -v dnsmasq >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
		echo "bench-pxe: installing kea-admin (perfdhcp) dnsmasq-base busybox curl iproute2"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		apt-cache show kea-admin >/dev/null 2>&1 || $$SUDO apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends kea-admin dnsmasq-base busybox curl iproute2 >/dev/null; \
	fi
	RACKFLOW_BENCH_PXE=1 RACKFLOW_BENCH_JSON=$(BENCH_PXE_JSON) $(GO) test -count=1 -run '^TestBenchPXE$$' -timeout 30m -v ./testsuite/pxebench/

# One worker (a child process) carries FLEET_HOSTS concurrent ProvisionHost
# runs against in-process fakes (BMCs over HTTP, FLEET_HOSTS_PER_BMC hosts
# behind each, SSH servers, the pxe API) on loopback addresses, on each
# engine of FLEET_ENGINES in turn: the dev server, then the two-node cluster
# on PostgreSQL (testsuite/cluster). Prints one table, a column per engine:
# runs/minute, activity latency and history sizes from every run's history,
# the most calls any BMC served at once, memory of worker, server and
# PostgreSQL. Fails if a run fails, the worker's peak RSS passes 300 MiB, or
# a BMC saw more calls at once than the worker's limit (1).
FLEET_HOSTS ?= 1000
FLEET_HOSTS_PER_BMC ?= 4
FLEET_ENGINES ?= dev,cluster
.PHONY: bench-fleet
bench-fleet: $(BIN)/temporal $(BIN)/temporal-server cluster-deps
	$(GO) run ./testsuite/fleetbench -hosts $(FLEET_HOSTS) -hosts-per-bmc $(FLEET_HOSTS_PER_BMC) -engines $(FLEET_ENGINES) -dir $(BENCH_DIR)

# A production-shaped Temporal cluster (issue #14): the Temporal server at
# the version the CLI embeds, on a private PostgreSQL, as two processes on
# loopback (frontend+matching+worker, history). Not part of `make test`.
# The server, its SQL schema tool and schema files are built from the
# module proxy once into bin/ and reused.
TEMPORAL_SERVER_VERSION := v1.29.1
.PHONY: cluster test-cluster cluster-deps temporal-server
temporal-server: $(BIN)/temporal-server
$(BIN)/temporal-server:
	@GO=$(GO) scripts/build-temporal-server.sh $(TEMPORAL_SERVER_VERSION) $(BIN)

cluster-deps:
	@scripts/deps.sh cluster

# Foreground; prints the frontend's address; Ctrl-C stops everything.
cluster: cluster-deps $(BIN)/temporal-server
	@scripts/cluster.sh

# The integration suite on a fresh cluster per test instead of the dev
# server; the server-restart test SIGKILLs and restarts the history node.
test-cluster: deps cluster-deps $(BIN)/temporal $(BIN)/temporal-server
	RACKFLOW_TEMPORAL_CLUSTER=1 $(GO) test -count=1 -p 1 -timeout 40m ./testsuite/cluster/ ./testsuite/integration/
