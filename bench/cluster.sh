#!/usr/bin/env bash
# Issue 10's performance part: what the cluster on NATS costs, on this machine, in one run.
#
#   bench/cluster.sh        (`make bench-cluster`; about 3.5 minutes plus builds)
#
# Servers, all up for the whole run (an idle one costs nothing), each started and stopped here by
# pid, loopback only:
#   - a cluster: 3 nats-servers joined by routes, 3 esub nodes (A, B, C) in cluster mode, each
#     on its own NATS server, ESUB_WORKERS=1;
#   - 3 independent esub nodes (I0, I1, I2), no cluster, ESUB_WORKERS=1;
#   - the peer: one redis-server (bench/peers/redis.sh, no persistence) and 2 nginx + nchan
#     instances (X, Y) sharing it as their backend (bench/peers/nchan.sh with NCHAN_REDIS_URL,
#     template peers/nchan-redis.conf), worker_processes 1 each.
# Cases, run in turn, REPEAT times (the order repeats, so drifting background load hits all):
#   same       long-poll round trip, N subs parked on A, M rep connections to A
#   cross      the same with the reps posted to B: each rep crosses NATS to A
#   solo       the same on I0 (no cluster at all): what cluster mode costs a same-node trip
#   spread     3N subs over A, B, C (sub i on node i mod 3), 3M rep connections over A, B, C,
#              each rep on any idle connection: 2/3 of reps cross (cross_share in the JSON)
#   indep      the same over I0, I1, I2, each rep on a connection to its sub's node
#   nchan-same N subs on X, M pubs to X (Redis-backed)
#   nchan-cross N subs on X, M pubs to Y: through Redis
#   park-cluster, park-solo: the time to park a sub on A (its claim over NATS: "no responders")
#              and on I0, PARK_SUBS subs one after the other (esub-bench --scenario park)
# Prints and appends to bench/RESULTS.md the machine, the medians of every figure, the ratios
# and the JSON lines. Environment: REPEAT (3), DURATION (5 s), WARMUP (1 s), GRACE (1 s),
# SUBS (N, 100), REPS (M, 4), SIZE (100 B), PARK_SUBS (1000), ESUB_BIN (a prebuilt esub).
# "ghost" counts messages received although the pub was answered "nobody waits": nchan answers
# 202 from the subscriber count it keeps in Redis, which lags a long-poll subscriber's re-park.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=$here/target/release/esub-bench
t_start=$SECONDS
repeat=${REPEAT:-3}
duration=${DURATION:-5}
warmup=${WARMUP:-1}
grace=${GRACE:-1}
subs=${SUBS:-100}
reps=${REPS:-4}
size=${SIZE:-100}
park_subs=${PARK_SUBS:-1000}
command="bench/cluster.sh"
for v in REPEAT DURATION WARMUP GRACE SUBS REPS SIZE PARK_SUBS ESUB_BIN; do
    [ -n "${!v:-}" ] && command="$v=${!v} $command"
done

log() { echo "cluster.sh: $*" >&2; }

# --- install and build -------------------------------------------------------------------------
bash "$root/tests/nats/install.sh"
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
if [ -n "${ESUB_BIN:-}" ]; then
    esub_bin=$ESUB_BIN
else
    log "building esub (cargo build --release in $root)"
    (cd "$root" && cargo build --release --bin esub)
    esub_bin=$root/target/release/esub
fi
log "building the bench"
cargo build --release --manifest-path "$here/Cargo.toml" --bin esub-bench
t_built=$SECONDS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/esub-bench-cluster.XXXXXX")
lines=$tmp/results.jsonl
: >"$lines"
esub_pids=() nats_pids=() nchan_ports=() redis_pid=

cleanup() {
    local p
    # esub first (SIGTERM: leave message, then drain), then NATS, then the peer.
    for p in "${esub_pids[@]}" "${nats_pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${esub_pids[@]}" "${nats_pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    for p in "${nchan_ports[@]}"; do
        "$here/peers/nchan.sh" stop 1 "$p" >/dev/null 2>&1 || true
    done
    [ -n "$redis_pid" ] && "$here/peers/redis.sh" stop "$redis_pid" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nothing listens on (a refused connection means free).
free_port() {
    local p
    for p in $(shuf -i 20000-60999 -n 200); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# One GET on 127.0.0.1:$1, the whole response on stdout (bash's /dev/tcp: no curl needed).
http_get() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
        timeout 5 cat <&3
    ) 2>/dev/null
}

# start_esub NAME ENV...: an esub on a free port; sets started_pid and started_port.
start_esub() {
    local name=$1 out=$tmp/$1.out
    shift
    env ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS=1 ESUB_DATA_DIR="$tmp/data-$name" "$@" \
        "$esub_bin" >"$out" 2>"$tmp/$name.err" &
    started_pid=$!
    esub_pids+=("$started_pid")
    started_port=
    for _ in $(seq 200); do
        if [[ $(head -n 1 "$out" 2>/dev/null) =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
            started_port=${BASH_REMATCH[1]}
            return 0
        fi
        kill -0 "$started_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "esub $name did not start:"
    cat "$tmp/$name.err" >&2
    exit 1
}

# --- the cluster -------------------------------------------------------------------------------
nats_ports=() route_ports=()
for i in 0 1 2; do
    nats_ports+=("$(free_port)")
    route_ports+=("$(free_port)")
done
for i in 0 1 2; do
    routes=()
    for j in 0 1 2; do
        [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:${route_ports[$j]}")
    done
    "$nats_bin" -a 127.0.0.1 -p "${nats_ports[$i]}" --cluster_name esub-bench \
        --cluster "nats://127.0.0.1:${route_ports[$i]}" \
        --routes "$(IFS=,; echo "${routes[*]}")" >"$tmp/nats$i.log" 2>&1 &
    nats_pids+=($!)
done
cl_ports=() cl_pids=()
for i in 0 1 2; do
    start_esub "node$i" ESUB_NODE_NAME="node$i" ESUB_CLUSTER="nats://127.0.0.1:${nats_ports[$i]}"
    cl_ports+=("$started_port")
    cl_pids+=("$started_pid")
done
# Ready when every node lists all three members (NATS routes up, heartbeats heard).
for i in 0 1 2; do
    for try in $(seq 150); do
        body=$(http_get "${cl_ports[$i]}" /members)
        [[ $body == *'"node0"'*'"node1"'*'"node2"'* ]] && break
        [ "$try" = 150 ] && { log "node$i never listed 3 members: $body"; exit 1; }
        sleep 0.1
    done
done
log "cluster: NATS ${nats_ports[*]} (pids ${nats_pids[*]}), esub A B C on ${cl_ports[*]} (pids ${cl_pids[*]})"
cl_all_pids=$(IFS=,; echo "${cl_pids[*]},${nats_pids[*]}")

# --- independent nodes -------------------------------------------------------------------------
ind_ports=() ind_pids=()
for i in 0 1 2; do
    start_esub "solo$i"
    ind_ports+=("$started_port")
    ind_pids+=("$started_pid")
done
log "independent esub I0 I1 I2 on ${ind_ports[*]} (pids ${ind_pids[*]})"

# --- the peer: nchan instances sharing one Redis -----------------------------------------------
nchan_note="nchan: not available"
nchan_pids=()
if redis_out=$("$here/peers/redis.sh" start none); then
    redis_pid=${redis_out% *}
    redis_port=${redis_out#* }
    for i in 0 1; do
        port=$(free_port)
        if pid=$(NCHAN_REDIS_URL="redis://127.0.0.1:$redis_port" "$here/peers/nchan.sh" start 1 "$port"); then
            nchan_ports+=("$port")
            nchan_pids+=("$pid")
        fi
    done
fi
if [ ${#nchan_ports[@]} = 2 ]; then
    nchan_note="nchan: $(nginx -v 2>&1 | sed 's/^nginx version: //'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), 2 instances (X, Y, worker_processes 1) sharing redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (no persistence) through \`nchan_redis_server\`"
    log "nchan X Y on ${nchan_ports[*]} (masters ${nchan_pids[*]}), redis pid $redis_pid on $redis_port"
    nchan_all_pids="${nchan_pids[0]},${nchan_pids[1]},$redis_pid"
else
    log "nchan: not available; its cases are skipped"
fi

# --- runs --------------------------------------------------------------------------------------
failures=0
# one LABEL TARGET PIDS ARGS...: one esub-bench run, its JSON line appended.
one() {
    local label=$1 target=$2 pids=$3
    shift 3
    log "$label (run $r of $repeat)"
    if ! "$bench" --target "$target" --pid "$pids" --label "$label run $r" "$@" >>"$lines" \
        2> >(tee -a "$tmp/bench.log" >&2); then
        log "$label: esub-bench failed"
        failures=$((failures + 1))
    fi
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
A=127.0.0.1:${cl_ports[0]} B=127.0.0.1:${cl_ports[1]} C=127.0.0.1:${cl_ports[2]}
I0=127.0.0.1:${ind_ports[0]} I1=127.0.0.1:${ind_ports[1]} I2=127.0.0.1:${ind_ports[2]}
ind_all_pids=$(IFS=,; echo "${ind_pids[*]}")
trip=(--subs "$subs" --reps "$reps" --size "$size" --warmup "$warmup" --duration "$duration" --grace "$grace")
spread=(--subs $((3 * subs)) --reps $((3 * reps)) --size "$size" --warmup "$warmup" --duration "$duration" --grace "$grace")
park=(--scenario park --subs "$park_subs" --size "$size" --warmup 0.5 --duration 30)
for r in $(seq "$repeat"); do
    one same esub "$cl_all_pids" --url "$A" "${trip[@]}"
    one cross esub "$cl_all_pids" --url "$A" --rep-url "$B" "${trip[@]}"
    one solo esub "${ind_pids[0]}" --url "$I0" "${trip[@]}"
    one spread esub "$cl_all_pids" --url "$A,$B,$C" "${spread[@]}"
    one indep esub "$ind_all_pids" --url "$I0,$I1,$I2" --rep-to home "${spread[@]}"
    if [ ${#nchan_ports[@]} = 2 ]; then
        X=127.0.0.1:${nchan_ports[0]} Y=127.0.0.1:${nchan_ports[1]}
        one nchan-same nchan "$nchan_all_pids" --url "$X" "${trip[@]}"
        one nchan-cross nchan "$nchan_all_pids" --url "$X" --rep-url "$Y" "${trip[@]}"
    fi
    one park-cluster esub "$cl_all_pids" --url "$A" "${park[@]}"
    one park-solo esub "${ind_pids[0]}" --url "$I0" "${park[@]}"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------------
# Values of a numeric field over the runs of one case; their median; a ratio or a difference.
values() { grep "\"label\":\"$1 run " "$lines" | sed -n "s/.*\"$2\":\([-0-9.]*\)[,}].*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
med() { values "$1" "$2" | median; }
sum() { values "$1" "$2" | awk '{s += $1} END {print s + 0}'; }
calc() { awk -v a="$1" -v b="$2" "BEGIN { if (a == \"n/a\" || b == \"n/a\") print \"n/a\"; else printf \"$4\", ($3) }"; }
ratio() { calc "$1" "$2" "(b > 0) ? (a) / (b) : 0" "%.2f"; }
minus() { calc "$1" "$2" "a - b" "%+.0f"; }

row() {
    local c=$1 what=$2 faults
    faults=$(($(sum "$c" lost) + $(sum "$c" duplicated) + $(sum "$c" misdelivered) + $(sum "$c" corrupt) + $(sum "$c" errors)))
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$what" "$(med "$c" msgs_per_s)" \
        "$(med "$c" p50_us)" "$(med "$c" p99_us)" "$(med "$c" server_cpu_us_per_msg)" \
        "$(med "$c" cross_share)" "$faults" "$(sum "$c" ghost)"
}
have_nchan=$([ ${#nchan_ports[@]} = 2 ] && echo 1 || echo 0)
table="| case | what | msgs/s | p50 µs | p99 µs | server CPU µs/msg | share of reps crossing | lost+dup+misdel+corrupt+errors (all runs) | ghost (all runs) |
|---|---|---:|---:|---:|---:|---:|---:|---:|
$(row same "N=$subs subs on A, M=$reps reps to A (cluster)")
$(row cross "N=$subs subs on A, M=$reps reps to B (cluster)")
$(row solo "N=$subs subs on I0, M=$reps reps to I0 (no cluster)")
$(row spread "$((3 * subs)) subs over A,B,C, $((3 * reps)) reps over A,B,C (cluster)")
$(row indep "$((3 * subs)) subs over I0,I1,I2, $((3 * reps)) reps each to its sub's node")"
if [ "$have_nchan" = 1 ]; then
    table+="
$(row nchan-same "N=$subs subs on X, M=$reps pubs to X (Redis)")
$(row nchan-cross "N=$subs subs on X, M=$reps pubs to Y (Redis)")"
fi
park_table="| park time, $park_subs subs one after the other | p50 µs | p90 µs | p99 µs | max µs | errors |
|---|---:|---:|---:|---:|---:|
| cluster node A (claim over NATS, then park) | $(med park-cluster p50_us) | $(med park-cluster p90_us) | $(med park-cluster p99_us) | $(med park-cluster max_us) | $(sum park-cluster errors) |
| single node I0 | $(med park-solo p50_us) | $(med park-solo p90_us) | $(med park-solo p99_us) | $(med park-solo max_us) | $(sum park-solo errors) |"

cross_p50=$(minus "$(med cross p50_us)" "$(med same p50_us)")
cross_p99=$(minus "$(med cross p99_us)" "$(med same p99_us)")
solo_p99=$(minus "$(med same p99_us)" "$(med solo p99_us)")
park_p50=$(minus "$(med park-cluster p50_us)" "$(med park-solo p50_us)")
park_p99=$(minus "$(med park-cluster p99_us)" "$(med park-solo p99_us)")
met() { calc "$1" "$2" "$3" "%d" | sed -e 's/^1$/met/' -e 's/^0$/not met/'; }
ratios="| figure (medians of $repeat runs) | value | target |
|---|---:|---|
| cross − same, p50 | $cross_p50 µs | |
| cross − same, p99 | $cross_p99 µs | ≤ +1000 µs: $(met "$cross_p99" 0 "a <= 1000") |
| cross / same, msgs/s | $(ratio "$(med cross msgs_per_s)" "$(med same msgs_per_s)") | |
| same (cluster) − solo (no cluster), p99 | $solo_p99 µs | |
| same (cluster) / solo, msgs/s | $(ratio "$(med same msgs_per_s)" "$(med solo msgs_per_s)") | |
| spread (cluster) / indep (3 independent nodes), msgs/s | $(ratio "$(med spread msgs_per_s)" "$(med indep msgs_per_s)") | ≥ 0.80: $(met "$(ratio "$(med spread msgs_per_s)" "$(med indep msgs_per_s)")" 0 "a >= 0.8") |
| spread / indep, server CPU µs/msg | $(ratio "$(med spread server_cpu_us_per_msg)" "$(med indep server_cpu_us_per_msg)") | |
| park time, cluster − single node, p50 | $park_p50 µs | |
| park time, cluster − single node, p99 | $park_p99 µs | |"
if [ "$have_nchan" = 1 ]; then
    ratios+="
| esub cross / nchan cross, msgs/s | $(ratio "$(med cross msgs_per_s)" "$(med nchan-cross msgs_per_s)") | |
| esub cross / nchan cross, p50 | $(ratio "$(med cross p50_us)" "$(med nchan-cross p50_us)") | |
| esub cross / nchan cross, p99 | $(ratio "$(med cross p99_us)" "$(med nchan-cross p99_us)") | |
| esub cross / nchan cross, server CPU µs/msg | $(ratio "$(med cross server_cpu_us_per_msg)" "$(med nchan-cross server_cpu_us_per_msg)") | |
| nchan cross − nchan same, p99 | $(minus "$(med nchan-cross p99_us)" "$(med nchan-same p99_us)") µs | |"
fi

if [ -n "${ESUB_BIN:-}" ]; then
    esub_rev="$ESUB_BIN (given)"
else
    esub_rev="work tree at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if [ -n "$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        esub_rev="$esub_rev + uncommitted changes"
    fi
fi
t_end=$SECONDS
section=$(cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M:%S UTC') — cluster on NATS (issue 10)

Command: \`$command\` (\`make bench-cluster\`)
Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), load average before $load_before, after $load_after
Took: $((t_end - t_start)) s in all, $((t_end - t_built)) s after the builds
Each round-trip run: $warmup s warm-up, $duration s measured, $grace s grace, payload $size B, long-poll; $repeat runs of each case, cases in turn. Server CPU sums all the servers of the case (cluster: 3 esub + 3 nats-server; indep: 3 esub; nchan: 2 nginx + redis).
esub: $esub_rev, ESUB_WORKERS=1 per node; $(nats-server --version 2>/dev/null || "$nats_bin" --version), 3 servers joined by routes, one per esub node
$nchan_note

$table

$ratios

Park time: from the sub's \`GET /sub/<new key>\` written to the moment its node's \`GET /keys?local=1\` (asked back to back on a keep-alive connection to the same node) lists the key; then one rep releases it. An upper bound by one \`/keys\` round trip, the same on both.

$park_table

<details><summary>JSON lines</summary>

\`\`\`
$(cat "$lines")
\`\`\`
</details>
EOF
)
echo
echo "$section"
printf '\n%s\n' "$section" >>"$here/RESULTS.md"
log "appended to $here/RESULTS.md; took $((t_end - t_start)) s"
if [ "$failures" != 0 ]; then
    log "$failures esub-bench run(s) failed"
    exit 1
fi
