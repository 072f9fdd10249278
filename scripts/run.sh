#!/usr/bin/env bash
# make run: the whole stack on this machine, on loopback only.
#   Temporal dev server  127.0.0.1:7233, Web UI http://127.0.0.1:8233 (state in .run/temporal.db)
#   pxe lease API        127.0.0.1:8080 (token in .run/pxe.token)
#   lab host "lab01"     ipmi_sim BMC + sshd live system / installed OS (testsuite/lab)
#   worker               metrics on 127.0.0.1:9464
# Ctrl-C stops everything. Logs: .run/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${RUN_DIR:-$ROOT/.run}
BIN=$ROOT/bin
mkdir -p "$RUN"
# The lab host is rebuilt on every start (a blank disk), so the dev server's
# record of it starts over too; KEEP_STATE=1 keeps .run/temporal.db.
if [ -z "${KEEP_STATE:-}" ]; then rm -f "$RUN/temporal.db" "$RUN/leases.json"; fi
PORT=${TEMPORAL_PORT:-7233}
UI_PORT=${TEMPORAL_UI_PORT:-8233}
PXE_ADDR=${PXE_ADDR:-127.0.0.1:8080}

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# rackflow-pxe refuses a token file group or others may read.
if [ ! -s "$RUN/pxe.token" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/pxe.token")
fi
chmod 600 "$RUN/pxe.token"

echo "starting Temporal dev server (log: $RUN/temporal.log)"
"$BIN/temporal" server start-dev --ip 127.0.0.1 --port "$PORT" --ui-port "$UI_PORT" \
  --db-filename "$RUN/temporal.db" --log-level warn \
  --search-attribute RackflowHost=Keyword --search-attribute RackflowStep=Keyword \
  --search-attribute RackflowState=Keyword >"$RUN/temporal.log" 2>&1 &
pids+=($!)

# One listener for the lease API and the boot routes: all on loopback here
# (on a real boot network, give the boot routes -boot-addr).
echo "starting pxe (log: $RUN/pxe.log)"
"$BIN/rackflow-pxe" -api-addr "$PXE_ADDR" -token-file "$RUN/pxe.token" \
  -state-file "$RUN/leases.json" -public-url "http://$PXE_ADDR" >"$RUN/pxe.log" 2>&1 &
pids+=($!)

rm -f "$RUN/lab/ready"
echo "preparing lab host lab01 and a fake NetScaler on 127.0.0.1:9080 (log: $RUN/lab.log)"
"$BIN/rackflow-lab" -dir "$RUN/lab" -pxe-url "http://$PXE_ADDR" >"$RUN/lab.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$RUN/lab/ready" ] && break; sleep 0.2; done
[ -s "$RUN/lab/ready" ] || { echo "lab did not start; see $RUN/lab.log"; exit 1; }

for _ in $(seq 1 150); do
  "$BIN/temporal" operator cluster health --address "127.0.0.1:$PORT" >/dev/null 2>&1 && break
  sleep 0.2
done

echo "starting worker (log: $RUN/worker.log)"
TEMPORAL_ADDRESS=127.0.0.1:$PORT \
RACKFLOW_INVENTORY=$RUN/lab/inventory.yaml RACKFLOW_SECRETS=$RUN/lab/secrets.yaml \
RACKFLOW_PXE_URL=http://$PXE_ADDR RACKFLOW_PXE_TOKEN_FILE=$RUN/pxe.token \
RACKFLOW_CHEF_DIR=$RUN/lab/chef RACKFLOW_IMAGE_DIR=$RUN/lab/images \
  "$BIN/rackflow-worker" >"$RUN/worker.log" 2>&1 &
pids+=($!)

cat <<MSG

rackflow is running.
  Web UI:     http://127.0.0.1:$UI_PORT
  inventory:  $RUN/lab/inventory.yaml (host lab01, a lab machine on loopback)
  provision:  $BIN/temporal workflow start --task-queue rackflow --type ProvisionHost \\
                --workflow-id provision/lab01 --input '{"host":"lab01"}'
         or:  $BIN/starter provision lab01 --wait
  status:     $BIN/starter status lab01
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
echo "a component exited; see $RUN/*.log"
