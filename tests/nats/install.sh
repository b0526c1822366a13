#!/usr/bin/env bash
# Installs nats-server (the Debian package, 2.9.x) for tests/nats_client.rs and the cluster
# tests; `make test` runs it before `cargo test`. The tests install nothing themselves: without
# nats-server they fail and name this script.
#
#   bash tests/nats/install.sh        # no-op when nats-server is already there
#
# Installs with apt-get as root, or through `sudo -n` (never a password prompt). Exits non-zero
# when it cannot install.
set -euo pipefail

log() { echo "install.sh: $*" >&2; }

# Debian puts it in /usr/sbin, which is not on every user's PATH.
for bin in "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server \
    /usr/bin/nats-server /usr/local/bin/nats-server; do
    if [ -n "$bin" ] && [ -x "$bin" ]; then
        exit 0
    fi
done

if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    log "nats-server is missing; install it as root: apt-get install -y nats-server"
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "nats-server is missing and there is no apt-get; install nats-server 2.9 or later by hand"
    exit 1
fi

log "apt-get install -y nats-server"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be stale or absent (a fresh container): update once if the first try fails.
"${sudo[@]}" apt-get install -y -q nats-server >/dev/null 2>&1 || {
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q nats-server >/dev/null
}
# The package may also enable a system service on port 4222; the tests start their own servers on free
# ports and never use it.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || {
    log "apt-get ran but nats-server is still missing"
    exit 1
}
