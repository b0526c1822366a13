#!/usr/bin/env bash
# `make cluster`: a 3-node NATS cluster (nats-server routes, full mesh) and 3 esub nodes on
# loopback, one NATS server each. Ports are printed; Ctrl-C stops every process by its PID.
#
#   bash scripts/cluster.sh                 # esub on 8091-8093, NATS clients on 4301-4303
#   ESUB_BASE_PORT=9001 NATS_BASE_PORT=5301 ROUTE_BASE_PORT=7301 bash scripts/cluster.sh
#
# Logs and data go to target/cluster/. ESUB_BIN picks a binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

ESUB_BASE_PORT=${ESUB_BASE_PORT:-8091}
NATS_BASE_PORT=${NATS_BASE_PORT:-4301}
ROUTE_BASE_PORT=${ROUTE_BASE_PORT:-6301}
N=3

bash tests/nats/install.sh
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
if [ -z "${ESUB_BIN:-}" ]; then
    cargo build --release --bin esub
    ESUB_BIN=target/release/esub
fi
dir=target/cluster
mkdir -p "$dir"

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping: ${pids[*]}"
    # esub first (SIGTERM: leave message, then drain), then NATS.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Waits (at most 10 s) until something listens on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 1000); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.01
    done
    echo "nothing listens on port $1; see $dir/*.log" >&2
    exit 1
}

nats_pids=()
for i in $(seq 0 $((N - 1))); do
    routes=()
    for j in $(seq 0 $((N - 1))); do
        [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:$((ROUTE_BASE_PORT + j))")
    done
    "$NATS_BIN" -a 127.0.0.1 -p $((NATS_BASE_PORT + i)) --cluster_name esub \
        --cluster "nats://127.0.0.1:$((ROUTE_BASE_PORT + i))" \
        --routes "$(IFS=,; echo "${routes[*]}")" >"$dir/nats$i.log" 2>&1 &
    nats_pids+=($!)
done
for i in $(seq 0 $((N - 1))); do wait_port $((NATS_BASE_PORT + i)); done

esub_pids=()
for i in $(seq 0 $((N - 1))); do
    port=$((ESUB_BASE_PORT + i))
    ESUB_PORT=$port ESUB_BIND=127.0.0.1 ESUB_NODE_NAME="node$i" ESUB_ADVERTISE="127.0.0.1:$port" \
        ESUB_CLUSTER="nats://127.0.0.1:$((NATS_BASE_PORT + i))" ESUB_DATA_DIR="$dir/data$i" \
        "$ESUB_BIN" >"$dir/esub$i.log" 2>&1 &
    esub_pids+=($!)
done
for i in $(seq 0 $((N - 1))); do wait_port $((ESUB_BASE_PORT + i)); done
# esub before NATS in the list, so they stop in that order.
pids=("${esub_pids[@]}" "${nats_pids[@]}")

echo "NATS cluster:"
for i in $(seq 0 $((N - 1))); do
    echo "  nats$i  nats://127.0.0.1:$((NATS_BASE_PORT + i))  pid ${nats_pids[$i]}"
done
echo "esub nodes:"
for i in $(seq 0 $((N - 1))); do
    echo "  node$i  http://127.0.0.1:$((ESUB_BASE_PORT + i))  pid ${esub_pids[$i]}"
done
echo "logs in $dir/; Ctrl-C stops everything"
wait
