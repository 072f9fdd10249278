#!/usr/bin/env bash
# make cluster: a production-shaped Temporal cluster on this machine, on
# loopback only, in the foreground (Ctrl-C stops it all):
#   PostgreSQL   private instance in .run/cluster/pg (Debian's server binaries,
#                run as the postgres user when root), 127.0.0.1, a free port
#   node 1       temporal-server: frontend (127.0.0.1:$CLUSTER_PORT, default
#                7233), matching, worker
#   node 2       temporal-server: history
# Databases temporal and temporal_visibility are created afresh with
# temporal-sql-tool on every start; KEEP_STATE=1 keeps them (schemas are
# upgraded in place). Logs: .run/cluster/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${RUN_DIR:-$ROOT/.run}
mkdir -p "$RUN/cluster" "$ROOT/bin"
chmod 755 "$RUN" "$RUN/cluster"   # the postgres user must reach .run/cluster/pg
go build -o "$ROOT/bin/rackflow-cluster" ./testsuite/cluster/cmd/rackflow-cluster
args=(-dir "$RUN/cluster" -port "${CLUSTER_PORT:-7233}")
if [ -n "${KEEP_STATE:-}" ]; then args+=(-keep); fi
exec "$ROOT/bin/rackflow-cluster" "${args[@]}"
