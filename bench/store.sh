#!/usr/bin/env bash
# The store (phase 2): the engine in-process (bench/src/bin/store.rs: appends with
# ESUB_FSYNC=interval and always, replays, a reopen over 1 GiB), then end to end over HTTP with
# wrk (stored reps to unknown keys, both fsync modes; /rsub replays; the same load with the store
# off, the HTTP ceiling on this machine). Prints the figures and appends them to bench/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
esub=${ESUB_BIN:-$root/target/release/esub}
[ -n "${ESUB_BIN:-}" ] || (cd "$root" && cargo build --release -q --bin esub)
(cd "$here" && cargo build --release -q --bin store-bench)
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

engine=$("$here/target/release/store-bench" "$work/engine" 2>/dev/null | sed 's/^/    /')

cat >"$work/rep.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 100)
local n = 0
request = function() n = n + 1; return wrk.format(nil, "/rep/k" .. (n % 1000)) end
LUA
cat >"$work/rsub.lua" <<'LUA'
local n = 0
request = function() n = n + 1; return wrk.format("GET", "/rsub/k" .. (n % 1000)) end
LUA
start() { # env assignments...
    rm -rf "$work/data"
    env ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS=2 ESUB_DATA_DIR="$work/data" "$@" "$esub" >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.05; done
    port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$work/out" | head -1)
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }
rate() { wrk -t1 -c64 -d"$1" -s "$2" "http://127.0.0.1:$port" | awk '/Requests\/sec/ {printf "%.0f", $2}'; }
start ESUB_STORE=off; off=$(rate 5s "$work/rep.lua"); stop
start ESUB_STORE=undelivered ESUB_FSYNC=interval; interval=$(rate 5s "$work/rep.lua"); rsub=$(rate 5s "$work/rsub.lua"); stop
start ESUB_STORE=undelivered ESUB_FSYNC=always; always=$(rate 5s "$work/rep.lua"); stop

report="Engine, in-process (\`bench/target/release/store-bench\`):

$engine

End to end over HTTP, \`wrk -t1 -c64\` on the same 2 cores, ESUB_WORKERS=2, 100-byte bodies to 1000 keys:

| what | requests/s |
|---|---|
| reps, store off (the HTTP ceiling here) | $off |
| stored reps, ESUB_FSYNC=interval | $interval |
| /rsub replays (after the interval run) | $rsub |
| stored reps, ESUB_FSYNC=always | $always |"
echo "$report"
{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M:%S') UTC — store"
    echo
    echo "Command: \`bench/store.sh\`. Machine: $(nproc) cores, $(uname -r), data dir on $(df --output=source "$work" | tail -1), load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "$report"
} >>"$here/RESULTS.md"
