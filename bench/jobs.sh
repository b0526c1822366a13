#!/usr/bin/env bash
# Delayed jobs (issue 9, "Performance"): memory per pending job and start-up time with 100,000
# pending, then firing lateness (due time to delivery at a consumer, p50/p99) while 10,000 jobs
# a second fire for 5 s beside them. jobs-bench starts and stops its own esub (by pid) on a
# temporary ESUB_DATA_DIR, ESUB_JOB_TICK_MS=100, 100-byte payloads, a 4-partition topic.
#
#   bench/jobs.sh [PENDING] [SECONDS] [PER_SECOND]      (`make bench-jobs`, part of `make bench`)
#
# ESUB_BIN: a prebuilt esub (skips `cargo build` of the server).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -z "${ESUB_BIN:-}" ]; then
    (cd "$root" && cargo build --release --quiet)
    ESUB_BIN=$root/target/release/esub
fi
(cd "$here" && cargo build --release --quiet --bin jobs-bench)
"$here/target/release/jobs-bench" "$ESUB_BIN" "$@"
