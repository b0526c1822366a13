#!/usr/bin/env bash
# Round trip, long-poll: esub against its peer nchan on this machine, one table.
#
#   bench/run.sh            N in {100, 1000} x M in {1, 4}       (about 2 minutes plus builds)
#   bench/run.sh quick      N=1000 M=4 only                      (under a minute plus builds)
#   bench/run.sh big        the full set plus N=10000, M in {1, 4}
#
# Environment: ESUB_WORKERS (default 1; nchan gets as many worker_processes), REPEAT (runs of
# each scenario, default 1; the table shows medians), ORDER (sequential: all esub runs, then all
# nchan runs, the default; interleaved: both servers up, each scenario on esub then on nchan at
# once, so drifting background load hits both alike), DURATION / WARMUP / GRACE (seconds, default
# 10 / 1 / 2), NCHAN_PORT (default 8091), ESUB_BIN (a prebuilt esub: skips `cargo build` of the
# server), ESUB_REV (a commit: built from `git archive` outside the work tree, so a tree being
# edited does not matter).
#
# Builds esub and the bench, starts esub on a free port, runs the scenarios, stops it with
# SIGTERM; starts nchan with bench/peers/nchan.sh, runs the same scenarios, stops it (or both at
# once with ORDER=interleaved); prints the table and appends it, the command and the machine to
# bench/RESULTS.md. Exits 1 if esub did not start or a run failed (the table is still written).
# Only processes started here are signalled, each by its pid.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=$here/target/release/esub-bench

mode=full
for arg in "$@"; do
    case $arg in
        quick) mode=quick ;;
        big) mode=big ;;
        *) echo "usage: $0 [quick|big]" >&2; exit 2 ;;
    esac
done
case $mode in
    quick) scenarios=("1000 4") ;;
    full) scenarios=("100 1" "100 4" "1000 1" "1000 4") ;;
    big) scenarios=("100 1" "100 4" "1000 1" "1000 4" "10000 1" "10000 4") ;;
esac
workers=${ESUB_WORKERS:-1}
repeat=${REPEAT:-1}
duration=${DURATION:-10}
warmup=${WARMUP:-1}
grace=${GRACE:-2}
nchan_port=${NCHAN_PORT:-8091}
order=${ORDER:-sequential}
case $order in sequential | interleaved) ;; *) echo "ORDER: sequential or interleaved" >&2; exit 2 ;; esac
command="bench/run.sh${*:+ $*}"
for v in ESUB_WORKERS REPEAT ORDER DURATION WARMUP GRACE NCHAN_PORT ESUB_BIN ESUB_REV; do
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

# --- servers and runs --------------------------------------------------------------------------
# run_one TARGET URL PID N M R: one esub-bench run, its JSON line appended to $results.
run_one() {
    local target=$1 url=$2 pid=$3 n=$4 m=$5 r=$6
    log "$target N=$n M=$m (run $r of $repeat)"
    if ! "$bench" --target "$target" --url "$url" --pid "$pid" --subs "$n" --reps "$m" \
        --duration "$duration" --warmup "$warmup" --grace "$grace" \
        --label "$mode run $r" >>"$results" 2> >(tee -a "$tmp/bench.log" >&2); then
        log "$target N=$n M=$m: esub-bench failed (see above)"
        failures=$((failures + 1))
    fi
}

# Sets esub_pid and esub_port, or leaves esub_port empty and says why in esub_note.
start_esub() {
    ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS=$workers "$esub_bin" >"$tmp/esub.out" 2>"$tmp/esub.err" &
    esub_pid=$!
    esub_port=
    local line
    for _ in $(seq 200); do
        line=$(head -n 1 "$tmp/esub.out" 2>/dev/null || true)
        if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
            esub_port=${BASH_REMATCH[1]}
            log "esub pid $esub_pid on 127.0.0.1:$esub_port, ESUB_WORKERS=$workers"
            return
        fi
        kill -0 "$esub_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "esub did not print 'listening on 127.0.0.1:<port>'; stderr:"
    cat "$tmp/esub.err" >&2
    esub_note="esub: did not start"
    failures=$((failures + 1))
}

# SIGTERM, then its exit code into esub_note; its stderr lines other than INFO/DEBUG counted.
stop_esub() {
    local rc=0
    if kill -0 "$esub_pid" 2>/dev/null; then
        kill -TERM "$esub_pid"
        wait "$esub_pid" || rc=$?
        esub_note="esub: exit code $rc after SIGTERM"
    else
        wait "$esub_pid" || rc=$?
        esub_note="${esub_note:-esub: died during the run, exit code $rc}"
    fi
    esub_pid=
    log "$esub_note"
    esub_stderr=$(grep -cvE '^(INFO|DEBUG) ' "$tmp/esub.err" || true)
    if [ "$esub_stderr" != 0 ]; then
        log "esub stderr lines other than INFO/DEBUG: $esub_stderr (first ones below)"
        grep -vE '^(INFO|DEBUG) ' "$tmp/esub.err" | head -n 10 >&2
    fi
}

# Sets nchan_pid, or nchan_note="nchan: not available".
start_nchan() {
    # One worker takes every connection of a run; the shared config's 8192 is too few for N=10000.
    local wc=8192
    [ "$mode" = big ] && wc=16384
    if nchan_pid=$(NCHAN_WORKER_CONNECTIONS=$wc "$here/peers/nchan.sh" start "$workers" "$nchan_port"); then
        nchan_started=1
        nchan_note="nchan: $(nginx -v 2>&1 | sed 's/^nginx version: //'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), worker_processes $workers, worker_connections $wc"
        log "nchan master pid $nchan_pid on 127.0.0.1:$nchan_port"
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

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
esub_note= esub_stderr=0 nchan_note= nchan_pid= failures=0
if [ "$order" = interleaved ]; then
    # Both up at once (an idle one costs nothing); each scenario runs on esub, then at once on
    # nchan, so a change in the machine's other load hits both alike.
    start_esub
    start_nchan
    for r in $(seq "$repeat"); do
        for s in "${scenarios[@]}"; do
            set -- $s
            [ -n "$esub_port" ] && run_one esub "127.0.0.1:$esub_port" "$esub_pid" "$1" "$2" "$r"
            [ -n "$nchan_pid" ] && run_one nchan "127.0.0.1:$nchan_port" "$nchan_pid" "$1" "$2" "$r"
        done
    done
    stop_esub
    stop_nchan
else
    start_esub
    if [ -n "$esub_port" ]; then
        for r in $(seq "$repeat"); do
            for s in "${scenarios[@]}"; do
                set -- $s
                run_one esub "127.0.0.1:$esub_port" "$esub_pid" "$1" "$2" "$r"
            done
        done
    fi
    stop_esub
    start_nchan
    if [ -n "$nchan_pid" ]; then
        for r in $(seq "$repeat"); do
            for s in "${scenarios[@]}"; do
                set -- $s
                run_one nchan "127.0.0.1:$nchan_port" "$nchan_pid" "$1" "$2" "$r"
            done
        done
    fi
    stop_nchan
fi

# --- report ------------------------------------------------------------------------------------
table=$("$bench" table "$results")
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
section=$(cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M:%S UTC') — $mode, ESUB_WORKERS=$workers

Command: \`$command\`
Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), load average before $load_before
Each run: ${warmup} s warm-up, ${duration} s measured, ${grace} s grace; payload 100 B; $repeat run(s) per scenario, order $order.
esub: $esub_rev; $esub_note; stderr lines other than INFO/DEBUG: $esub_stderr
$nchan_note

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
if [ ! -f "$here/RESULTS.md" ]; then
    printf '# esub-bench results\n\nOne section per `bench/run.sh` run, appended by the script: the command, the machine and the\ntable (esub against nchan measured in the same run). Newest last.\n' >"$here/RESULTS.md"
fi
printf '\n%s\n' "$section" >>"$here/RESULTS.md"
log "appended to $here/RESULTS.md; raw files in $tmp"
if [ "$failures" != 0 ]; then
    log "$failures failure(s): esub did not start or esub-bench runs failed"
    exit 1
fi
