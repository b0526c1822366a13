#!/usr/bin/env bash
# Start or stop the Redis peer of the topics benchmark (Redis Streams, `shared/peers/README.md`).
#
#   redis.sh start <everysec|always|none>
#                                      install redis-server if missing, start a private redis on
#                                      a free 127.0.0.1 port with the append-only file on and
#                                      that appendfsync (none: no append-only file, for nchan's
#                                      backend in the cluster benchmark), data in a new
#                                      temporary directory; prints "<pid> <port>"
#   redis.sh stop <pid>                SIGTERM that redis (only one this script started: its pid
#                                      must have a state file and the matching command line),
#                                      wait for it, remove its directory
#
# RDB snapshots are off (`save ''`) and so is the automatic AOF rewrite: both fork a child whose
# CPU the benchmark's probe of the server's pid would not see, and esub does no compaction of
# its topic logs either. Only processes started here are signalled, by pid.
set -euo pipefail

usage() {
    echo "usage: $0 start everysec|always|none | stop <pid>" >&2
    exit 2
}

state_dir="${TMPDIR:-/tmp}"
state() { echo "$state_dir/esub-bench-redis-$1.dir"; }

install_redis() {
    command -v redis-server >/dev/null && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "redis.sh: redis-server missing and not root, cannot install" >&2
        return 1
    fi
    echo "redis.sh: installing redis-server" >&2
    # Keep the package's postinst from starting a system redis on 6379: this script must leave
    # no process behind that it did not start and cannot stop.
    local policy=/usr/sbin/policy-rc.d made_policy= rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; } >&2 || rc=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    [ $rc -eq 0 ] && command -v redis-server >/dev/null
}

# A loopback port nothing listens on: a refused connection means free. redis-server fails if
# another process takes it in between, and `start` then tries another.
free_port() {
    local p
    for p in $(shuf -i 20000-60999 -n 100); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

start() {
    local fsync=$1 dir port pid attempt aof=(--appendonly yes --appendfsync "$1")
    case $fsync in everysec | always) ;; none) aof=(--appendonly no) ;; *) usage ;; esac
    install_redis || { echo "redis: not available" >&2; exit 1; }
    for attempt in 1 2 3; do
        port=$(free_port) || { echo "redis.sh: no free port" >&2; exit 1; }
        dir=$(mktemp -d "${TMPDIR:-/tmp}/esub-bench-redis.XXXXXX")
        if redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --save '' \
            "${aof[@]}" --auto-aof-rewrite-percentage 0 \
            --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" >&2; then
            # Daemonized: the pid file follows the fork, the listening socket just before it.
            pid=
            for _ in $(seq 100); do
                [ -s "$dir/redis.pid" ] && pid=$(cat "$dir/redis.pid") && break
                sleep 0.05
            done
            if [[ $pid =~ ^[0-9]+$ ]] && [ -e "/proc/$pid" ]; then
                echo "$dir" >"$(state "$pid")"
                echo "$pid $port"
                return 0
            fi
        fi
        echo "redis.sh: redis did not start on port $port (attempt $attempt):" >&2
        tail -n 5 "$dir/redis.log" >&2 2>/dev/null || true
        rm -rf "$dir"
    done
    exit 1
}

stop() {
    local pid=$1 file dir
    [[ $pid =~ ^[0-9]+$ ]] || usage
    file=$(state "$pid")
    if [ ! -f "$file" ]; then
        echo "redis.sh: no redis started by this script with pid $pid" >&2
        exit 1
    fi
    dir=$(cat "$file")
    # A recycled pid would not be a redis-server whose pid file is in our directory.
    if [ "$(cat "$dir/redis.pid" 2>/dev/null)" = "$pid" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^redis-server 127\.0\.0\.1:'; then
        kill -TERM "$pid"
        for _ in $(seq 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "redis.sh: redis $pid still running after 10 s" >&2
            exit 1
        fi
    else
        echo "redis.sh: pid $pid is no longer the redis started here; nothing signalled" >&2
    fi
    rm -rf "$dir" "$file"
}

[ $# -eq 2 ] || usage
case $1 in
    start) start "$2" ;;
    stop) stop "$2" ;;
    *) usage ;;
esac
