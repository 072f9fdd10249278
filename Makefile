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
	$(GO) build -o $(BIN)/rackflow-pxe ./pxe/cmd/rackflow-pxe
	$(GO) build -o $(BIN)/starter ./starter
	$(GO) build -o $(BIN)/rackflow-lab ./testsuite/cmd/rackflow-lab

vet:
	$(GO) vet ./...

test: deps $(BIN)/temporal vet
	$(GO) test -count=1 -timeout 40m ./...

test-unit:
	$(GO) test -count=1 -short ./...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

run: deps $(BIN)/temporal build
	@scripts/run.sh

clean:
	rm -rf $(RUN_DIR)
