#!/usr/bin/env bash
# esub's topics against Redis Streams on this machine, each scenario on esub then at once on
# Redis, with the same generator and parameters (issue 8, "Performance"):
#   a. single pubs over 16 and 64 keep-alive connections, 100-byte payloads
#   b. batch pubs over 16 connections: esub 1000 records per request (§4.2), Redis 100 XADDs
#      pipelined per round trip
#   c. end to end: pubs at a fixed 10,000 msgs/s over 16 connections, 4 consumers of one group
#      (esub batch=100&ack=1 with piggy-back acks; Redis XREADGROUP COUNT 100 BLOCK + XACK):
#      pub-to-delivery latency, lost and doubled
#   (a-c with ESUB_FSYNC=interval against appendfsync everysec)
#   d. fsync always on both (ESUB_FSYNC=always, appendfsync always), single pubs, 64 connections
#
#   bench/topics.sh      all of it (`make bench-topics`, part of `make bench`; about 2 minutes
#                        plus builds)
#
# Environment: ESUB_WORKERS (default 1), REPEAT (runs of each scenario, default 1; the table
# shows medians), DURATION / WARMUP / GRACE (seconds, default 10 / 1 / 2), PARTITIONS (default 4),
# RATE (scenario c, default 10000), ESUB_BIN (a prebuilt esub: skips `cargo build` of the server),
# SCENARIOS (the letters to run, default "a b c d"; e.g. SCENARIOS=a REPEAT=5 for single pubs).
#
# Builds esub and the generator, starts esub (data in a temporary ESUB_DATA_DIR, removed at the
# end; ESUB_DEFAULT_PARTITIONS=$PARTITIONS, and the generator also creates each run's topic with
# that many partitions) and Redis (bench/peers/redis.sh, by pid), runs the scenarios, stops both,
# then again with fsync always. Prints the table and appends it, the command, the machine and
# the JSON lines to bench/RESULTS.md; keeps the lines in bench/results/topics-<time>.jsonl, so
# `topics-bench table bench/results/topics-*.jsonl` gives medians over several invocations.
# Exits 1 if a server did not start or a run failed. Only processes started here are signalled,
# by pid.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=$here/target/release/topics-bench
t_start=$SECONDS

[ $# -eq 0 ] || { echo "usage: $0 (no arguments; see the environment variables above)" >&2; exit 2; }
workers=${ESUB_WORKERS:-1}
repeat=${REPEAT:-1}
duration=${DURATION:-10}
warmup=${WARMUP:-1}
grace=${GRACE:-2}
partitions=${PARTITIONS:-4}
rate=${RATE:-10000}
scenarios=" ${SCENARIOS:-a b c d} "
for s in $scenarios; do
    [[ $s =~ ^[abcd]$ ]] || { echo "SCENARIOS: '$s' is not one of a b c d" >&2; exit 2; }
done
want() { [[ $scenarios == *" $1 "* ]]; }
command="bench/topics.sh"
for v in ESUB_WORKERS REPEAT DURATION WARMUP GRACE PARTITIONS RATE ESUB_BIN SCENARIOS; do
    [ -n "${!v:-}" ] && command="$v=${!v} $command"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/esub-bench-topics.XXXXXX")
results=$tmp/results.jsonl
: >"$results"
esub_pid=
redis_pid=

log() { echo "topics.sh: $*" >&2; }

cleanup() {
    if [ -n "$esub_pid" ] && kill -0 "$esub_pid" 2>/dev/null; then
        kill -TERM "$esub_pid" 2>/dev/null || true
        wait "$esub_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ]; then
        "$here/peers/redis.sh" stop "$redis_pid" >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------------------------
if [ -n "${ESUB_BIN:-}" ]; then
    esub_bin=$ESUB_BIN
else
    log "building esub (cargo build --release in $root)"
    (cd "$root" && cargo build --release --bin esub)
    esub_bin=$root/target/release/esub
fi
log "building the generator"
cargo build --release --manifest-path "$here/Cargo.toml" --bin topics-bench
t_built=$SECONDS

# --- servers -----------------------------------------------------------------------------------
failures=0
notes=()
esub_runs=0

# start_esub FSYNC: sets esub_pid and esub_port, or leaves esub_port empty.
start_esub() {
    esub_runs=$((esub_runs + 1))
    local out=$tmp/esub$esub_runs.out err=$tmp/esub$esub_runs.err line
    env ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS="$workers" ESUB_FSYNC="$1" \
        ESUB_DATA_DIR="$tmp/esub-data$esub_runs" ESUB_DEFAULT_PARTITIONS="$partitions" \
        "$esub_bin" >"$out" 2>"$err" &
    esub_pid=$!
    esub_port=
    for _ in $(seq 200); do
        line=$(head -n 1 "$out" 2>/dev/null || true)
        if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
            esub_port=${BASH_REMATCH[1]}
            log "esub pid $esub_pid on 127.0.0.1:$esub_port, ESUB_FSYNC=$1 ESUB_WORKERS=$workers"
            return
        fi
        kill -0 "$esub_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "esub did not print 'listening on 127.0.0.1:<port>'; stderr:"
    cat "$err" >&2
    notes+=("esub did not start (ESUB_FSYNC=$1)")
    failures=$((failures + 1))
}

stop_esub() {
    [ -n "$esub_pid" ] || return 0
    local rc=0 err=$tmp/esub$esub_runs.err n
    if kill -0 "$esub_pid" 2>/dev/null; then
        kill -TERM "$esub_pid"
        wait "$esub_pid" || rc=$?
        notes+=("esub run $esub_runs: exit code $rc after SIGTERM")
    else
        wait "$esub_pid" || rc=$?
        notes+=("esub run $esub_runs: died during the runs, exit code $rc")
        failures=$((failures + 1))
    fi
    esub_pid=
    # Open mode's start-up WARN is expected: the generator is an anonymous appid.
    local quiet='^(INFO|DEBUG) |^WARN topics auth is open'
    n=$(grep -cvE "$quiet" "$err" || true)
    if [ "$n" != 0 ]; then
        log "esub stderr lines other than INFO/DEBUG: $n (first ones below)"
        grep -vE "$quiet" "$err" | head -n 10 >&2
        notes+=("esub run $esub_runs: $n other stderr lines")
    fi
}

# start_redis FSYNC: sets redis_pid and redis_port, or leaves redis_port empty.
start_redis() {
    local got
    redis_port=
    if got=$("$here/peers/redis.sh" start "$1") && [[ $got =~ ^([0-9]+)\ ([0-9]+)$ ]]; then
        redis_pid=${BASH_REMATCH[1]}
        redis_port=${BASH_REMATCH[2]}
        log "redis pid $redis_pid on 127.0.0.1:$redis_port, appendfsync $1"
    else
        notes+=("redis did not start (appendfsync $1)")
        failures=$((failures + 1))
    fi
}

stop_redis() {
    [ -n "$redis_pid" ] || return 0
    "$here/peers/redis.sh" stop "$redis_pid" || failures=$((failures + 1))
    redis_pid=
}

# run_one TARGET PORT PID FSYNC SCENARIO CONNS R: one generator run, its JSON line appended.
run_one() {
    local target=$1 port=$2 pid=$3 fsync=$4 scenario=$5 conns=$6 r=$7
    [ -n "$port" ] || return 0
    log "$target $scenario conns=$conns fsync=$fsync (run $r of $repeat)"
    if ! "$bench" --target "$target" --url "127.0.0.1:$port" --pid "$pid" --scenario "$scenario" \
        --conns "$conns" --partitions "$partitions" --rate "$rate" --fsync "$fsync" \
        --duration "$duration" --warmup "$warmup" --grace "$grace" --label "run $r" \
        >>"$results" 2> >(tee -a "$tmp/bench.log" >&2); then
        log "$target $scenario conns=$conns: topics-bench failed (see above)"
        failures=$((failures + 1))
    fi
}

# both SCENARIO CONNS R: esub then Redis, back to back.
both() {
    run_one esub "$esub_port" "$esub_pid" "$esub_fsync" "$1" "$2" "$3"
    run_one redis "$redis_port" "$redis_pid" "$redis_fsync" "$1" "$2" "$3"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# a-c: interval / everysec. Both servers up at once (an idle one costs nothing), so a change in
# the machine's other load hits both alike.
esub_fsync=interval redis_fsync=everysec
if want a || want b || want c; then
    start_esub "$esub_fsync"
    start_redis "$redis_fsync"
    for r in $(seq "$repeat"); do
        if want a; then both single 16 "$r"; both single 64 "$r"; fi
        if want b; then both batch 16 "$r"; fi
        if want c; then both e2e 16 "$r"; fi
    done
    stop_esub
    stop_redis
fi

# d: fsync always on both.
esub_fsync=always redis_fsync=always
if want d; then
    start_esub "$esub_fsync"
    start_redis "$redis_fsync"
    for r in $(seq "$repeat"); do
        both single 64 "$r"
    done
    stop_esub
    stop_redis
fi

# --- report ------------------------------------------------------------------------------------
table=$("$bench" table "$results")
stamp=$(date -u '+%Y%m%dT%H%M%SZ')
mkdir -p "$here/results"
cp "$results" "$here/results/topics-$stamp.jsonl"
esub_rev="work tree at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -n "${ESUB_BIN:-}" ] && esub_rev="$ESUB_BIN (given)"
if [ -z "${ESUB_BIN:-}" ] && [ -n "$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    esub_rev="$esub_rev + uncommitted changes"
fi
redis_version=$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')
t_end=$SECONDS
took="$((t_end - t_start)) s in all: $((t_built - t_start)) s building, $((t_end - t_built)) s of scenarios"
summary=$(printf '%s; ' "${notes[@]}")
summary=${summary%; }
section=$(cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M:%S UTC') — topics against Redis Streams, ESUB_WORKERS=$workers

Command: \`$command\`
Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), data dir on $(df --output=source "$tmp" | tail -1), load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)
Took: $took
Each run: ${warmup} s warm-up, ${duration} s measured, ${grace} s grace; payload 100 B; $partitions partitions (Redis: streams); $repeat run(s) per scenario, esub then Redis.
esub: $esub_rev; ESUB_FSYNC=interval (every ESUB_FSYNC_MS, default 200 ms) for a-c, always for d; ${summary:-no notes}
Redis: ${redis_version:-?}, appendonly yes, appendfsync everysec for a-c, always for d, no RDB, no AOF rewrite (bench/peers/redis.sh)
JSON lines: results/topics-$stamp.jsonl

$table

<details><summary>JSON lines</summary>

\`\`\`
$(cat "$results")
\`\`\`
</details>
EOF
)
echo
echo "$section"
printf '\n%s\n' "$section" >>"$here/RESULTS.md"
log "appended to $here/RESULTS.md; lines in $here/results/topics-$stamp.jsonl"
if [ "$failures" != 0 ]; then
    log "$failures failure(s): a server did not start or died, or topics-bench runs failed"
    exit 1
fi
