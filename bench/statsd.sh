#!/usr/bin/env bash
# Cost of DogStatsD: the quick long-poll scenario (N=1000, M=4) against esub with statsd off
# (an unresolvable DATADOG_SERVICE_HOST) and on (a local UDP sink that reads and discards),
# alternating, REPEAT times each (default 3); prints the medians and the ratio, and appends them
# to bench/RESULTS.md. The target: statsd on delivers at most 3% fewer msgs/s than off.
#
#   bench/statsd.sh            ESUB_BIN to use a built binary, REPEAT, DURATION (default 10)
#   HARSH=1 bench/statsd.sh    statsd at its most expensive: a key tag per request, flush every 1 s
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
repeat=${REPEAT:-3}
duration=${DURATION:-10}
esub=${ESUB_BIN:-$root/target/release/esub}
[ -n "${ESUB_BIN:-}" ] || (cd "$root" && cargo build --release -q --bin esub)
(cd "$here" && cargo build --release -q)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The sink: binds a free UDP port, prints it, then reads and counts datagrams until killed.
python3 -u - >"$work/sink.port" 2>"$work/sink.err" <<'PY' &
import socket, signal, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
n = 0
signal.signal(signal.SIGTERM, lambda *_: (sys.stderr.write(f"datagrams {n}\n"), sys.exit(0)))
while True:
    s.recv(65536)
    n += 1
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.05; done
sink_port=$(cat "$work/sink.port")

run() { # $1 = off|on, $2 = run number
local env=(ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS=1)
    [ -n "${HARSH:-}" ] && env+=(ESUB_METRIC_INTERVAL_MS=1000 ESUB_TAG_KEYS=1)
    if [ "$1" = on ]; then env+=(DATADOG_SERVICE_HOST=127.0.0.1 DATADOG_SERVICE_PORT="$sink_port")
    else env+=(DATADOG_SERVICE_HOST=statsd-off.invalid); fi
    env "${env[@]}" "$esub" >"$work/esub.out" 2>"$work/esub.err" &
    local pid=$!
    for _ in $(seq 100); do grep -q listening "$work/esub.out" 2>/dev/null && break; sleep 0.05; done
    local port; port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$work/esub.out" | head -1)
    "$here/target/release/esub-bench" --target esub --url "127.0.0.1:$port" --pid "$pid" \
        --subs 1000 --reps 4 --duration "$duration" --label "statsd $1 run $2" >>"$work/$1.jsonl" 2>/dev/null
    kill -TERM "$pid"; wait "$pid" || true
}
for i in $(seq "$repeat"); do run off "$i"; run on "$i"; done

median() { python3 -c 'import json,sys,statistics as s; v=[json.loads(l)[sys.argv[2]] for l in open(sys.argv[1])]; print(round(s.median(v),1))' "$@"; }
off=$(median "$work/off.jsonl" msgs_per_s); on=$(median "$work/on.jsonl" msgs_per_s)
off_cpu=$(median "$work/off.jsonl" server_cpu_us_per_msg); on_cpu=$(median "$work/on.jsonl" server_cpu_us_per_msg)
ratio=$(python3 -c "print(round($on/$off, 3))")
config=${HARSH:+ESUB_TAG_KEYS=1, flush every 1 s}
config=${config:-defaults: no key tags, flush every 10 s}
summary="| statsd off | statsd on ($config) | on/off |
|---|---|---|
| $off msgs/s, $off_cpu µs CPU/msg | $on msgs/s, $on_cpu µs CPU/msg | $ratio |"
echo "$summary"
{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M:%S') UTC — DogStatsD cost, ESUB_WORKERS=1"
    echo
    echo "Command: \`${HARSH:+HARSH=1 }REPEAT=$repeat bench/statsd.sh\`; long-poll N=1000 M=4, ${duration} s windows, runs alternating off/on, medians."
    echo "Machine: $(nproc) cores, $(uname -r), load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "$summary"
} >>"$here/RESULTS.md"
