#!/usr/bin/env bash
# Issue 9's cost of idempotent pubs: esub single pubs (16 keep-alive connections, 100-byte
# payloads) with a unique X-Msg-Id on every message against the same without, interleaved
# REPEAT times (default 3) on one server, and the ratio of the medians (target: at least 0.9).
#   bench/dedupe.sh            (`make bench-dedupe`, part of `make bench`; about 1 minute)
# Environment: REPEAT, DURATION (seconds per run, default 5), ESUB_BIN (a prebuilt esub).
# Appends the figures and the command to bench/RESULTS.md. Stops only the esub it started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
repeat=${REPEAT:-3}
duration=${DURATION:-5}
bin=${ESUB_BIN:-}
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --bin esub >&2)
    bin=$root/target/release/esub
fi
(cd "$here" && cargo build --release --bin topics-bench >&2)
gen=$here/target/release/topics-bench
tmp=$(mktemp -d "${TMPDIR:-/tmp}/esub-bench-dedupe.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS=1 ESUB_DATA_DIR="$tmp/data" ESUB_DEFAULT_PARTITIONS=4 \
    "$bin" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$tmp/out" 2>/dev/null && break
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$tmp/out" | head -1)
[ -n "$addr" ] || { echo "dedupe.sh: esub did not start" >&2; cat "$tmp/err" >&2; exit 1; }
lines=$tmp/lines.jsonl
for i in $(seq "$repeat"); do
    for id in off on; do
        "$gen" --target esub --url "$addr" --pid "$pid" --scenario single --conns 16 \
            --duration "$duration" --warmup 1 --msg-id "$id" --label "run $i" >>"$lines"
    done
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { grep "\"msg_id\":\"$1\"" "$lines" | sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p"; }
off=$(field off msgs_per_s | median)
on=$(field on msgs_per_s | median)
off_cpu=$(field off server_cpu_us_per_msg | median)
on_cpu=$(field on server_cpu_us_per_msg | median)
ratio=$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.2f", a / b}')
table="| esub single pubs, 16 conns, medians of $repeat | msgs/s | server CPU µs/msg |
|---|---:|---:|
| without X-Msg-Id | $off | $off_cpu |
| a unique X-Msg-Id on every pub | $on | $on_cpu |
| ratio (target ≥ 0.90) | $ratio | |"
echo "$table"
{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M:%S UTC') — idempotent pubs (X-Msg-Id) cost, ESUB_WORKERS=1"
    echo
    echo "Command: \`REPEAT=$repeat DURATION=$duration bench/dedupe.sh\` (runs interleaved on one server)."
    echo "Machine: $(nproc) cores, $(uname -r)."
    echo
    echo "$table"
} >>"$here/RESULTS.md"
