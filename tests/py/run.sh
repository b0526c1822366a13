#!/usr/bin/env bash
# Compatibility test: the public Python client esub==0.0.6, python requests and curl against the
# esub binary; then test_prometheus.py: GET /metrics through prometheus_client's parser; then
# test_websockets.py: /psub and /prep through the client's psub/prep and the websockets library,
# in keepalive and in receipt mode; then test_topics.py: the README's topics consumer loop; then
# test_cluster.py: the client's sub on one cluster node and rep on another (needs nats-server,
# installed by tests/nats/install.sh when missing).
#
#   tests/py/run.sh                      # tests target/debug/esub of this checkout
#   ESUB_BIN=/path/to/esub tests/py/run.sh
#
# Builds nothing: run `cargo build --bin esub` first. Needs python3 (3.11); creates a venv under
# target/py-venv (reused while requirements.txt and the interpreter stay the same) and installs
# tests/py/requirements.txt from PyPI. If `python3 -m venv` cannot make a venv with pip (Debian
# without python3-venv), installs with `python3 -m pip install --target` instead; if there is no
# pip either, installs python3-venv with apt-get (root only). curl is installed the same way if
# missing. Exits non-zero when anything fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
req="$here/requirements.txt"
venv="$root/target/py-venv"
bin="${ESUB_BIN:-$root/target/debug/esub}"
py="${PYTHON:-python3}"

log() { echo "run.sh: $*" >&2; }

# Install strictly from the package index, by name: ignore machine-local wheel folders.
unset PIP_FIND_LINKS PIP_NO_INDEX PIP_REQUIRE_VIRTUALENV || true
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

if ! command -v "$py" >/dev/null 2>&1; then
    log "$py not found"; exit 2
fi
if [ ! -x "$bin" ]; then
    log "esub binary not found at $bin (build it: cargo build --bin esub, or set ESUB_BIN)"; exit 2
fi

apt_install() {
    # Last resort for a bare Debian machine; only as root.
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    }
}

pyver="$("$py" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
stamp_want="$( (cat "$req"; echo "$pyver") | sha256sum | cut -d' ' -f1)"
stamp="$venv/.esub-requirements"

venv_ready() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_want" ] || return 1
    case "$(cat "$venv/.esub-mode" 2>/dev/null)" in
        venv) [ -x "$venv/bin/python" ] ;;
        target) [ -d "$venv/site" ] ;;
        *) return 1 ;;
    esac
}

try_venv() {
    if "$py" -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$venv"
    return 1
}

make_venv() {
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    # Debian without python3-venv: the venv module exists but cannot install pip into the venv.
    # With no pip at all (bare Debian), bring python3-venv and python3-pip in with apt-get.
    if try_venv || { ! "$py" -m pip --version >/dev/null 2>&1 \
                     && apt_install python3-venv python3-pip && try_venv; }; then
        log "installing requirements into venv $venv"
        "$venv/bin/python" -m pip install -q -r "$req"
        echo venv > "$venv/.esub-mode"
    else
        log "python3 -m venv unavailable; falling back to pip install --target $venv/site"
        mkdir -p "$venv/site"
        "$py" -m pip install -q --target "$venv/site" -r "$req"
        echo target > "$venv/.esub-mode"
    fi
    echo "$stamp_want" > "$stamp"
}

if venv_ready; then
    log "reusing $venv"
else
    make_venv
fi

if ! command -v curl >/dev/null 2>&1; then
    apt_install curl || log "curl not installed; the curl tests will fail"
fi

run_py() {
    if [ "$(cat "$venv/.esub-mode")" = venv ]; then
        "$venv/bin/python" "$@"
    else
        PYTHONPATH="$venv/site${PYTHONPATH:+:$PYTHONPATH}" "$py" "$@"
    fi
}
# test_cluster.py needs nats-server, as the Rust cluster tests do: install it when missing (a no-op
# when it is there). When it cannot be installed, test_cluster.py fails naming install.sh and the
# other scripts still run.
if [ -z "${NATS_SERVER_BIN:-}" ]; then
    bash "$root/tests/nats/install.sh" || log "nats-server missing: test_cluster.py will fail"
fi

# All scripts run; the exit code is the first failure's.
rc=0
run_py "$here/test_client.py" "$bin" || rc=$?
run_py "$here/test_prometheus.py" "$bin" || { r=$?; [ "$rc" -ne 0 ] || rc=$r; }
run_py "$here/test_websockets.py" "$bin" || { r=$?; [ "$rc" -ne 0 ] || rc=$r; }
run_py "$here/test_topics.py" "$bin" || { r=$?; [ "$rc" -ne 0 ] || rc=$r; }
run_py "$here/test_cluster.py" "$bin" || { r=$?; [ "$rc" -ne 0 ] || rc=$r; }
exit "$rc"
