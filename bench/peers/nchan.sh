#!/usr/bin/env bash
# Start or stop the nchan peer (nginx + nchan) for the esub benchmarks.
#
#   nchan.sh start <workers> <port>   install nginx + nchan if missing, start nginx from a fresh
#                                     temporary prefix directory, print the master pid
#   nchan.sh stop  <workers> <port>   kill -QUIT the master that `start` left on <port>
#
# Only the nginx started here is ever signalled: `start` records its prefix directory in
# ${TMPDIR:-/tmp}/esub-bench-nchan-<port>.dir, `stop` reads the pid from that directory and checks
# that the process is an nginx master with that prefix before sending anything.
# NCHAN_WORKER_CONNECTIONS (default 8192, as in shared/peers/nchan.conf) caps connections per
# worker; raise it for runs with more parked subs than that. NCHAN_RLIMIT_NOFILE (default: the
# hard RLIMIT_NOFILE of this shell, `ulimit -Hn`) is nginx's worker_rlimit_nofile; nginx cannot
# go past the hard limit without CAP_SYS_RESOURCE. NCHAN_REDIS_URL (redis://127.0.0.1:PORT) starts
# the Redis-backed template nchan-redis.conf instead, for several instances sharing one Redis.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
module=/usr/lib/nginx/modules/ngx_nchan_module.so

usage() {
    echo "usage: $0 start|stop <workers> <port>" >&2
    exit 2
}

[ $# -eq 3 ] || usage
cmd=$1 workers=$2 port=$3
[[ $workers =~ ^[1-9][0-9]*$ ]] || usage
[[ $port =~ ^[1-9][0-9]*$ ]] || usage
state="${TMPDIR:-/tmp}/esub-bench-nchan-$port.dir"

install_nchan() {
    if [ -e "$module" ] && command -v nginx >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "nchan.sh: $module missing and not root, cannot install" >&2
        return 1
    fi
    echo "nchan.sh: installing nginx libnginx-mod-nchan wrk" >&2
    # Keep the package's postinst from starting a system nginx on port 80: this script must
    # leave no process behind that it did not start and cannot stop.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    local rc=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        nginx libnginx-mod-nchan wrk; } >&2 || rc=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    [ $rc -eq 0 ] && [ -e "$module" ]
}

# The pid of the nginx master recorded for $port, if it is still that master; else nothing.
recorded_master() {
    [ -f "$state" ] || return 0
    local dir pid
    dir=$(cat "$state")
    [ -f "$dir/nginx.pid" ] || return 0
    pid=$(cat "$dir/nginx.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # A recycled pid would not carry our prefix on its command line.
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "nginx: master process.*$dir"; then
        echo "$pid"
    fi
}

# worker_rlimit_nofile: NCHAN_RLIMIT_NOFILE, else the hard limit ("unlimited" is capped by the
# kernel's nr_open anyway).
rlimit_nofile() {
    local n=${NCHAN_RLIMIT_NOFILE:-$(ulimit -Hn)}
    [ "$n" = unlimited ] && n=$(cat /proc/sys/fs/nr_open)
    echo "$n"
}

start() {
    install_nchan || { echo "nchan: not available" >&2; exit 1; }
    if [ -n "$(recorded_master)" ]; then
        echo "nchan.sh: an nginx started by this script already runs on port $port" >&2
        exit 1
    fi
    local dir template=nchan.conf
    [ -n "${NCHAN_REDIS_URL:-}" ] && template=nchan-redis.conf
    dir=$(mktemp -d "${TMPDIR:-/tmp}/esub-bench-nchan.XXXXXX")
    mkdir -p "$dir/logs"
    sed -e "s|@PREFIX@|$dir|g" -e "s|@WORKERS@|$workers|g" -e "s|@PORT@|$port|g" \
        -e "s|@WORKER_CONNECTIONS@|${NCHAN_WORKER_CONNECTIONS:-8192}|g" \
        -e "s|@WORKER_RLIMIT_NOFILE@|$(rlimit_nofile)|g" \
        -e "s|@REDIS_URL@|${NCHAN_REDIS_URL:-}|g" \
        "$here/$template" >"$dir/nchan.conf"
    echo "$dir" >"$state"
    if ! nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nchan.conf" >&2; then
        cat "$dir/logs/error.log" >&2 || true
        rm -rf "$state" "$dir"
        exit 1
    fi
    # `daemon on`: nginx returns once the master has forked; the pid file follows shortly.
    local i pid=
    for i in $(seq 100); do
        pid=$(recorded_master)
        [ -n "$pid" ] && break
        sleep 0.05
    done
    if [ -z "$pid" ]; then
        echo "nchan.sh: nginx did not write $dir/nginx.pid" >&2
        cat "$dir/logs/error.log" >&2 || true
        exit 1
    fi
    echo "$pid"
}

stop() {
    local pid dir
    pid=$(recorded_master)
    if [ -z "$pid" ]; then
        echo "nchan.sh: no nginx started by this script on port $port" >&2
        rm -f "$state"
        exit 1
    fi
    dir=$(cat "$state")
    kill -QUIT "$pid"
    # Graceful: workers finish their connections. Parked subs have been closed by the bench.
    local i
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "nchan.sh: nginx $pid still running after 10 s; sending TERM" >&2
        kill -TERM "$pid"
    fi
    if [ -s "$dir/logs/error.log" ]; then
        echo "nchan.sh: $dir/logs/error.log:" >&2
        tail -n 20 "$dir/logs/error.log" >&2
    fi
    rm -rf "$dir" "$state"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
