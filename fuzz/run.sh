#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another on one core.
#   bash fuzz/run.sh [SECONDS] [TARGET...]
# Installs cargo-fuzz when missing. Seeds come from fuzz/seeds/<target>/ (tracked); what libFuzzer
# adds goes to fuzz/corpus/<target>/, crashes to fuzz/artifacts/<target>/, logs to fuzz/logs/
# (all git-ignored). Exits 1 when any target crashed, after running the others.
# KEEP_GOING=1 runs libFuzzer in fork mode with -ignore_crashes=1: each crash is saved and the
# run goes on (for fuzzing past a known, unfixed crash); it still counts as a failure.
set -euo pipefail

seconds="${1:-60}"
shift || true
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    # Non-interactive; builds cargo-fuzz from crates.io with its own lock file (2-3 min).
    cargo install cargo-fuzz --locked
    # Where cargo installs binaries, in case that is not on PATH yet (a fresh CI machine).
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

# cargo-fuzz needs nightly flags (-Zsanitizer); this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_framing router query ws_frames ws_handshake connection statsd store_record
        topic_segment topic_batch topic_acks apps_file nats_proto topic_journal)
fi

# Longest input per target: request_framing needs room for a chunk-size line past the decoder's
# 1024-byte bound plus a pipelined request; keys and queries are short. ws_frames holds frames
# up to its largest limit (2040 bytes) and then some; connection holds a few requests with
# bodies up to its 4096-byte limit, on up to four connections; statsd lines reach the datagram
# limit (1432) through the name's repeat count, not through the input's length. topic_batch
# holds a few hundred small records, enough to pass its 255-record limit. nats_proto holds a few
# messages past its largest small max_payload (4064 bytes).
max_len() {
    case "$1" in
        request_framing | store_record | topic_segment | ws_frames | statsd | topic_batch | nats_proto | topic_journal) echo 8192 ;;
        connection) echo 16384 ;;
        ws_handshake) echo 512 ;;
        *) echo 2048 ;;
    esac
}

mkdir -p "$fuzz_dir/logs"
# The dictionary per target; connection speaks HTTP and websocket frames, so it gets both.
cat "$fuzz_dir/http.dict" "$fuzz_dir/ws.dict" >"$fuzz_dir/logs/connection.dict"
dict() {
    case "$1" in
        connection) echo "$fuzz_dir/logs/connection.dict" ;;
        ws_frames) echo "$fuzz_dir/ws.dict" ;;
        ws_handshake) echo "$fuzz_dir/handshake.dict" ;;
        statsd) echo "$fuzz_dir/statsd.dict" ;;
        store_record) echo "$fuzz_dir/store.dict" ;;
        topic_segment | topic_journal) echo "$fuzz_dir/topic.dict" ;;
        topic_batch | topic_acks | apps_file) echo "$fuzz_dir/topics.dict" ;;
        nats_proto) echo "$fuzz_dir/nats.dict" ;;
        *) echo "$fuzz_dir/http.dict" ;;
    esac
}
# Build first, so a compile error shows here and is not taken for a crash.
cargo fuzz build

mode=()
if [ "${KEEP_GOING:-0}" = 1 ]; then
    mode=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

crashes() {
    find "$fuzz_dir/artifacts/$1" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \
        -o -name 'leak-*' \) | wc -l
}

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$fuzz_dir/corpus/$t" "$fuzz_dir/artifacts/$t"
    log="$fuzz_dir/logs/$t.log"
    before="$(crashes "$t")"
    echo "== $t: ${seconds}s (log: $log)"
    status=ok
    cargo fuzz run "$t" "$fuzz_dir/corpus/$t" "$fuzz_dir/seeds/$t" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -max_len="$(max_len "$t")" \
        -dict="$(dict "$t")" \
        -print_final_stats=1 "${mode[@]}" >"$log" 2>&1 || status=CRASH
    # Fork mode exits 0 past ignored crashes; its status lines count them.
    if [ "$(crashes "$t")" != "$before" ] ||
        grep -aqE 'oom/timeout/crash: ([1-9]|[0-9]+/[1-9]|[0-9]+/[0-9]+/[1-9])' "$log"; then
        status=CRASH
    fi
    if [ "$status" = CRASH ]; then
        failed+=("$t")
    fi
    # libFuzzer's last status line: executions, coverage (cov) and features (ft). `-a`: a log
    # can hold stray bytes (a panic quoting an input, two runs writing one log), and grep then
    # prints only "binary file matches".
    grep -aE '^#[0-9]+' "$log" | tail -n 1 || true
    grep -aE '^stat::number_of_executed_units' "$log" || true
    echo "== $t: $status"
    if [ "$status" = CRASH ]; then
        grep -aE 'panicked at|^SUMMARY|Test unit written' "$log" | head -n 5 || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/, reproduce with" \
        "RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>)" >&2
    exit 1
fi
