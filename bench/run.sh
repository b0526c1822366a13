#!/usr/bin/env bash
# esub against its peer nchan on this machine, back to back with the same parameters; one table
# (esub, nchan, ratio) and one latency chart.
#
#   bench/run.sh         all scenarios (`make bench`, at most 10 minutes; about 2.5 plus builds):
#                          1. round trip, long-poll   N in {100, 1000} x M in {1, 4}
#                          2. round trip, websocket   N=1000 M=4
#                          3. parked capacity         N=100,000 (or the most RLIMIT_NOFILE allows), M=4
#                          4. HTTP floor              GET /ping vs nginx `return 200`, 16 connections
#   bench/run.sh quick   scenario 1 with N=1000 M=4 only (`make bench-quick`, about 25 s plus
#                        builds)
#   bench/run.sh big     the full set plus scenario 1 with N=10000, M in {1, 4}
#   bench/run.sh ws      scenario 2 only (websocket N=1000 M=4; about 25 s per repeat plus builds)
#
# Environment: ESUB_WORKERS (default 1; nchan gets as many worker_processes), REPEAT (runs of
# each scenario, default 1; the table shows medians), ORDER (sequential: all esub runs, then all
# nchan runs, the default; interleaved: both servers up, each scenario on esub then on nchan at
# once, so drifting background load hits both alike; parked capacity always gets fresh servers
# one after the other), DURATION / WARMUP / GRACE (seconds, default 10 / 1 / 2), CAP_SUBS
# (parked capacity's N, default 100000), FLOOR_CONNS (default 16), NCHAN_PORT (default 8091),
# ESUB_BIN (a prebuilt esub: skips `cargo build` of the server), ESUB_REV (a commit: built from
# `git archive` outside the work tree, so a tree being edited does not matter).
#
# Builds esub and the bench, starts esub on a free port, runs the scenarios, stops it with
# SIGTERM; starts nchan with bench/peers/nchan.sh, runs the same scenarios, stops it. Parked
# capacity runs on a fresh esub and a fresh nchan, so their memory before parking is a clean
# baseline. Prints the table and appends it, the command, the machine and the time taken to
# bench/RESULTS.md; draws bench/results/latency.svg. Exits 1 if esub did not start or a run
# failed (the table is still written). Only processes started here are signalled, by pid.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=$here/target/release/esub-bench
t_start=$SECONDS

mode=full
for arg in "$@"; do
    case $arg in
        quick) mode=quick ;;
        big) mode=big ;;
        ws) mode=ws ;;
        *) echo "usage: $0 [quick|big|ws]" >&2; exit 2 ;;
    esac
done
# Scenario 1 "N M" pairs, scenario 2 pairs, and whether 3 and 4 run.
case $mode in
    quick) longpoll=("1000 4") websocket=() capacity=0 floor=0 budget=60 ;;
    ws) longpoll=() websocket=("1000 4") capacity=0 floor=0 budget=60 ;;
    full) longpoll=("100 1" "100 4" "1000 1" "1000 4") websocket=("1000 4") capacity=1 floor=1 budget=600 ;;
    big) longpoll=("100 1" "100 4" "1000 1" "1000 4" "10000 1" "10000 4") websocket=("1000 4") capacity=1 floor=1 budget=900 ;;
esac
workers=${ESUB_WORKERS:-1}
repeat=${REPEAT:-1}
# The budgets above are per repeat.
budget=$((budget * repeat))
duration=${DURATION:-10}
warmup=${WARMUP:-1}
grace=${GRACE:-2}
nchan_port=${NCHAN_PORT:-8091}
order=${ORDER:-sequential}
floor_conns=${FLOOR_CONNS:-16}
cap_want=${CAP_SUBS:-100000}
# Parked capacity's rep connections, and how long delivering one rep to each may take.
cap_reps=4
cap_limit=60
case $order in sequential | interleaved) ;; *) echo "ORDER: sequential or interleaved" >&2; exit 2 ;; esac
command="bench/run.sh${*:+ $*}"
for v in ESUB_WORKERS REPEAT ORDER DURATION WARMUP GRACE CAP_SUBS FLOOR_CONNS NCHAN_PORT ESUB_BIN ESUB_REV; do
    [ -n "${!v:-}" ] && command="$v=${!v} $command"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/esub-bench-run.XXXXXX")
results=$tmp/results.jsonl
: >"$results"
esub_pid=
nchan_started=

cleanup() {
    if [ -n "$esub_pid" ] && kill -0 "$esub_pid" 2>/dev/null; then
        kill -TERM "$esub_pid" 2>/dev/null || true
    fi
    if [ -n "$nchan_started" ]; then
        "$here/peers/nchan.sh" stop "$workers" "$nchan_port" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "run.sh: $*" >&2; }

# --- parked capacity's N -----------------------------------------------------------------------
# Each side holds one socket per parked sub in one process (esub; the generator; nginx's single
# worker), plus a margin for rep connections, listeners and files. Raise the hard limit where
# allowed (root with CAP_SYS_RESOURCE); otherwise run at the largest N that fits and say so.
cap_subs=0 cap_note=
if [ "$capacity" = 1 ]; then
    margin=1000
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] && hard=$(cat /proc/sys/fs/nr_open)
    if [ "$hard" -lt $((cap_want + margin)) ] && ulimit -Hn $((cap_want + margin)) 2>/dev/null; then
        hard=$((cap_want + margin))
    fi
    ulimit -Sn "$hard" 2>/dev/null || true
    fit=$(((hard - margin) / 1000 * 1000))
    if [ "$fit" -ge "$cap_want" ]; then
        cap_subs=$cap_want
        cap_note="parked capacity: N=$cap_subs (RLIMIT_NOFILE hard limit $hard)"
    else
        cap_subs=$fit
        cap_note="parked capacity: N=$cap_subs, not $cap_want: the RLIMIT_NOFILE hard limit is $hard (ulimit -Hn) and cannot be raised here (no CAP_SYS_RESOURCE), and each of esub, the generator and nginx's worker holds one descriptor per parked sub"
    fi
    # About 28k ephemeral ports per source address and server port; 20k each leaves room for
    # TIME_WAIT from earlier runs.
    cap_sources=$((cap_subs / 20000 + 2))
    log "$cap_note; sources 127.0.0.1..127.0.0.$cap_sources"
fi

# --- build -------------------------------------------------------------------------------------
if [ -n "${ESUB_BIN:-}" ]; then
    esub_bin=$ESUB_BIN
elif [ -n "${ESUB_REV:-}" ]; then
    # A committed revision, built from `git archive` outside the work tree (which someone may be
    # editing); kept per commit so a second run reuses the build.
    sha=$(git -C "$root" rev-parse --verify "$ESUB_REV^{commit}")
    src="${TMPDIR:-/tmp}/esub-bench-rev-$sha"
    if [ ! -x "$src/target/release/esub" ]; then
        log "building esub $ESUB_REV ($sha) in $src"
        rm -rf "$src"
        mkdir -p "$src"
        git -C "$root" archive "$sha" | tar -x -C "$src"
        (cd "$src" && cargo build --release --bin esub)
    fi
    esub_bin=$src/target/release/esub
else
    log "building esub (cargo build --release in $root)"
    (cd "$root" && cargo build --release --bin esub)
    esub_bin=$root/target/release/esub
fi
log "building the bench"
cargo build --release --manifest-path "$here/Cargo.toml"
t_built=$SECONDS

# --- servers and runs --------------------------------------------------------------------------
# run_one TARGET URL PID SCENARIO N M R: one esub-bench run, its JSON line appended to $results.
run_one() {
    local target=$1 url=$2 pid=$3 scenario=$4 n=$5 m=$6 r=$7
    local args=(--scenario "$scenario" --subs "$n" --reps "$m" --duration "$duration"
        --warmup "$warmup" --grace "$grace")
    case $scenario in
        capacity) args=(--scenario capacity --subs "$n" --reps "$m" --sources "$cap_sources"
            --warmup 0 --duration "$cap_limit" --grace "$grace" --ready-timeout 120) ;;
        floor)
            args=(--scenario floor --reps "$m" --duration "$duration" --warmup "$warmup" --grace "$grace")
            log "$target $scenario C=$m (run $r of $repeat)"
            ;;
    esac
    [ "$scenario" = floor ] || log "$target $scenario N=$n M=$m (run $r of $repeat)"
    if ! "$bench" --target "$target" --url "$url" --pid "$pid" "${args[@]}" \
        --label "$mode run $r" >>"$results" 2> >(tee -a "$tmp/bench.log" >&2); then
        log "$target $scenario N=$n M=$m: esub-bench failed (see above)"
        failures=$((failures + 1))
    fi
}

# Sets esub_pid and esub_port, or leaves esub_port empty and notes why. Extra arguments are
# environment assignments for this instance.
esub_runs=0
start_esub() {
    esub_runs=$((esub_runs + 1))
    local out=$tmp/esub$esub_runs.out err=$tmp/esub$esub_runs.err
    env ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS="$workers" "$@" "$esub_bin" >"$out" 2>"$err" &
    esub_pid=$!
    esub_port=
    local line
    for _ in $(seq 200); do
        line=$(head -n 1 "$out" 2>/dev/null || true)
        if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
            esub_port=${BASH_REMATCH[1]}
            log "esub pid $esub_pid on 127.0.0.1:$esub_port, ESUB_WORKERS=$workers $*"
            return
        fi
        kill -0 "$esub_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "esub did not print 'listening on 127.0.0.1:<port>'; stderr:"
    cat "$err" >&2
    esub_notes+=("did not start ($*)")
    failures=$((failures + 1))
}

# SIGTERM, then its exit code into esub_notes; its stderr lines other than INFO/DEBUG counted.
stop_esub() {
    local rc=0 note err=$tmp/esub$esub_runs.err n
    if kill -0 "$esub_pid" 2>/dev/null; then
        kill -TERM "$esub_pid"
        wait "$esub_pid" || rc=$?
        note="exit code $rc after SIGTERM"
    else
        wait "$esub_pid" || rc=$?
        note="died during the runs, exit code $rc"
        failures=$((failures + 1))
    fi
    esub_pid=
    esub_notes+=("$note")
    log "esub: $note"
    n=$(grep -cvE '^(INFO|DEBUG) ' "$err" || true)
    esub_stderr=$((esub_stderr + n))
    if [ "$n" != 0 ]; then
        log "esub stderr lines other than INFO/DEBUG: $n (first ones below)"
        grep -vE '^(INFO|DEBUG) ' "$err" | head -n 10 >&2
    fi
}

# Sets nchan_pid, or nchan_note="nchan: not available". $1: worker_connections.
start_nchan() {
    local wc=$1
    if nchan_pid=$(NCHAN_WORKER_CONNECTIONS=$wc "$here/peers/nchan.sh" start "$workers" "$nchan_port"); then
        nchan_started=1
        nchan_note="nchan: $(nginx -v 2>&1 | sed 's/^nginx version: //'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), worker_processes $workers"
        nchan_wcs+=("$wc")
        log "nchan master pid $nchan_pid on 127.0.0.1:$nchan_port, worker_connections $wc"
    else
        nchan_pid=
        nchan_note="nchan: not available"
        echo "nchan: not available"
    fi
}

stop_nchan() {
    [ -n "$nchan_started" ] || return 0
    "$here/peers/nchan.sh" stop "$workers" "$nchan_port" || log "nchan stop failed"
    nchan_started=
}

# Scenarios 1, 2 and 4 of run R on TARGET at URL, server PID.
scenarios_on() {
    local target=$1 url=$2 pid=$3 r=$4 s
    for s in "${longpoll[@]}"; do
        run_one "$target" "$url" "$pid" longpoll "${s% *}" "${s#* }" "$r"
    done
    for s in "${websocket[@]}"; do
        run_one "$target" "$url" "$pid" websocket "${s% *}" "${s#* }" "$r"
    done
    if [ "$floor" = 1 ]; then
        run_one "$target" "$url" "$pid" floor 0 "$floor_conns" "$r"
    fi
}

# Scenario 4 cross-checked with wrk (another client, one request per connection at a time like
# the generator's): requests/s and server CPU µs/request over its 5 s.
wrk_lines=()
wrk_check() {
    local name=$1 url=$2 pid=$3 t0 t1 out rps
    command -v wrk >/dev/null || return 0
    t0=$(tree_ticks "$pid")
    out=$(wrk -t1 -c"$floor_conns" -d5s "$url" 2>&1) || { log "wrk failed: $out"; return 0; }
    t1=$(tree_ticks "$pid")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    local per
    per=$(awk -v a="$t0" -v b="$t1" -v r="$rps" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (r > 0) printf "%.1f", (b - a) / hz * 1e6 / (r * 5); else print "n/a" }')
    wrk_lines+=("$name: $rps requests/s, server CPU ~$per µs/request")
    log "wrk $name: $rps requests/s, server CPU ~$per µs/request"
}

# utime+stime ticks of PID and its direct children (nginx's workers).
tree_ticks() {
    local p sum=0 t
    for p in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        sum=$((sum + t))
    done
    echo "$sum"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
esub_notes=() esub_stderr=0 nchan_note= nchan_pid= nchan_wcs=() failures=0
# One worker takes every connection of a run; the shared config's 8192 is too few for N=10000.
wc=8192
[ "$mode" = big ] && wc=16384
if [ "$order" = interleaved ]; then
    # Both up at once (an idle one costs nothing); each scenario runs on esub, then at once on
    # nchan, so a change in the machine's other load hits both alike.
    start_esub
    start_nchan "$wc"
    for r in $(seq "$repeat"); do
        for s in "${longpoll[@]}"; do
            [ -n "$esub_port" ] && run_one esub "127.0.0.1:$esub_port" "$esub_pid" longpoll "${s% *}" "${s#* }" "$r"
            [ -n "$nchan_pid" ] && run_one nchan "127.0.0.1:$nchan_port" "$nchan_pid" longpoll "${s% *}" "${s#* }" "$r"
        done
        for s in "${websocket[@]}"; do
            [ -n "$esub_port" ] && run_one esub "127.0.0.1:$esub_port" "$esub_pid" websocket "${s% *}" "${s#* }" "$r"
            [ -n "$nchan_pid" ] && run_one nchan "127.0.0.1:$nchan_port" "$nchan_pid" websocket "${s% *}" "${s#* }" "$r"
        done
        if [ "$floor" = 1 ]; then
            [ -n "$esub_port" ] && run_one esub "127.0.0.1:$esub_port" "$esub_pid" floor 0 "$floor_conns" "$r"
            [ -n "$nchan_pid" ] && run_one nchan "127.0.0.1:$nchan_port" "$nchan_pid" floor 0 "$floor_conns" "$r"
        fi
    done
    if [ "$floor" = 1 ]; then
        [ -n "$esub_port" ] && wrk_check "esub GET /ping" "http://127.0.0.1:$esub_port/ping" "$esub_pid"
        [ -n "$nchan_pid" ] && wrk_check "nginx GET /ok" "http://127.0.0.1:$nchan_port/ok" "$nchan_pid"
    fi
    stop_esub
    stop_nchan
else
    start_esub
    if [ -n "$esub_port" ]; then
        for r in $(seq "$repeat"); do
            scenarios_on esub "127.0.0.1:$esub_port" "$esub_pid" "$r"
        done
        [ "$floor" = 1 ] && wrk_check "esub GET /ping" "http://127.0.0.1:$esub_port/ping" "$esub_pid"
    fi
    stop_esub
    start_nchan "$wc"
    if [ -n "$nchan_pid" ]; then
        for r in $(seq "$repeat"); do
            scenarios_on nchan "127.0.0.1:$nchan_port" "$nchan_pid" "$r"
        done
        [ "$floor" = 1 ] && wrk_check "nginx GET /ok" "http://127.0.0.1:$nchan_port/ok" "$nchan_pid"
    fi
    stop_nchan
fi

if [ "$capacity" = 1 ]; then
    # Fresh servers, so "before parking" is an idle server's memory. esub raises its own
    # RLIMIT_NOFILE to the hard limit; ESUB_MAX_CONNECTIONS must not be what stops it. nginx: one
    # worker_connections slot per socket is not enough, nchan uses more slots than sockets (with
    # N+1000 slots it refused connections at ~18,700 of 19,000 subs), and slots without a
    # descriptor cost nothing until used.
    for r in $(seq "$repeat"); do
        start_esub ESUB_MAX_CONNECTIONS=200000
        [ -n "$esub_port" ] && run_one esub "127.0.0.1:$esub_port" "$esub_pid" capacity "$cap_subs" "$cap_reps" "$r"
        stop_esub
        start_nchan $((2 * cap_subs + 1024))
        [ -n "$nchan_pid" ] && run_one nchan "127.0.0.1:$nchan_port" "$nchan_pid" capacity "$cap_subs" "$cap_reps" "$r"
        stop_nchan
    done
fi

# --- report ------------------------------------------------------------------------------------
table=$("$bench" table "$results")
mkdir -p "$here/results"
chart_note="Chart: [results/latency.svg](results/latency.svg) (redrawn by every run; redraw this one from the JSON lines below with \`esub-bench chart OUT.svg FILE\`)."
if ! "$bench" chart "$here/results/latency.svg" "$results"; then
    chart_note="Chart: not drawn (esub-bench chart failed)."
    failures=$((failures + 1))
fi
if [ -n "${ESUB_BIN:-}" ]; then
    esub_rev="$ESUB_BIN (given)"
elif [ -n "${ESUB_REV:-}" ]; then
    esub_rev="commit $(git -C "$root" rev-parse --short "$sha") (ESUB_REV=$ESUB_REV)"
else
    esub_rev="work tree at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if [ -n "$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        esub_rev="$esub_rev + uncommitted changes"
    fi
fi
t_end=$SECONDS
took="$((t_end - t_start)) s in all: $((t_built - t_start)) s building, $((t_end - t_built)) s of scenarios (budget $budget s)"
if [ $((t_end - t_built)) -gt "$budget" ]; then
    took="$took — OVER BUDGET"
    log "scenarios took $((t_end - t_built)) s, over the $budget s budget of mode $mode"
fi
esub_summary=$(printf '%s; ' "${esub_notes[@]}")
esub_summary=${esub_summary%; }
wcs=$(printf '%s then ' "${nchan_wcs[@]}")
wcs=${wcs% then }
extra=
[ -n "$cap_note" ] && extra+="$cap_note"$'\n'
if [ ${#wrk_lines[@]} -gt 0 ]; then
    wrk_all=$(printf '%s; ' "${wrk_lines[@]}")
    extra+="HTTP floor cross-check with wrk -t1 -c$floor_conns -d5s: ${wrk_all%; }"$'\n'
fi
section=$(cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M:%S UTC') — $mode, ESUB_WORKERS=$workers

Command: \`$command\`
Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), load average before $load_before
Took: $took
Each run: ${warmup} s warm-up, ${duration} s measured, ${grace} s grace; payload 100 B; $repeat run(s) per scenario, order $order.
esub: $esub_rev; ${esub_summary:-not started}; stderr lines other than INFO/DEBUG: $esub_stderr
$nchan_note${wcs:+, worker_connections $wcs}
$extra
$table

$chart_note

<details><summary>JSON lines</summary>

\`\`\`
$(cat "$results")
\`\`\`
</details>
EOF
)
echo
echo "$section"
if [ ! -f "$here/RESULTS.md" ]; then
    printf '# esub-bench results\n\nOne section per `bench/run.sh` run, appended by the script: the command, the machine and the\ntable (esub against nchan measured in the same run). Newest last.\n' >"$here/RESULTS.md"
fi
printf '\n%s\n' "$section" >>"$here/RESULTS.md"
log "appended to $here/RESULTS.md; chart in $here/results/latency.svg; raw files in $tmp"
log "took $took"
if [ "$failures" != 0 ]; then
    log "$failures failure(s): esub did not start, died, or esub-bench runs failed"
    exit 1
fi
