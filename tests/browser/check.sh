#!/usr/bin/env bash
# Browser check: a real Chromium opens a websocket to esub's /psub, receives one rep sent with
# curl, and writes it into the page title; the dumped DOM must contain it.
#   bash tests/browser/check.sh          (needs root for `apt-get install chromium` if missing)
# Not part of `make test`. Exits non-zero on any failure; kills what it started by PID.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
payload='hello from esub ✓ 42'
work="$(mktemp -d)"
esub_pid=""
chrome_pid=""

cleanup() {
    if [ -n "$chrome_pid" ] && kill -0 "$chrome_pid" 2>/dev/null; then
        kill -TERM -- "-$chrome_pid" 2>/dev/null || kill -TERM "$chrome_pid" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$chrome_pid" 2>/dev/null || kill -KILL "$chrome_pid" 2>/dev/null || true
    fi
    if [ -n "$esub_pid" ] && kill -0 "$esub_pid" 2>/dev/null; then
        kill -TERM "$esub_pid" 2>/dev/null || true
        wait "$esub_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    for f in esub.err chrome.err dom.html; do
        if [ -s "$work/$f" ]; then echo "--- $f ---" >&2; tail -n 40 "$work/$f" >&2; fi
    done
    exit 1
}

# 1. Chromium (Debian package), curl.
chrome="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$chrome" ]; then
    echo "installing chromium..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
    chrome="$(command -v chromium)" || fail "chromium not installed"
fi
command -v curl >/dev/null || fail "curl is required"

# 2. esub on a free port, receipt mode so the rep's 200 means the page handled the frame.
bin="${ESUB_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --quiet --bin esub) || fail "cargo build"
    bin="$root/target/debug/esub"
fi
ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_WORKERS=2 ESUB_CONFIRM_RECEIPT=1 \
    ESUB_CONFIRM_TIMEOUT_MS=10000 ESUB_DATA_DIR="$work/data" \
    "$bin" >"$work/esub.out" 2>"$work/esub.err" &
esub_pid=$!
port=""
for _ in $(seq 1 100); do
    line="$(head -n 1 "$work/esub.out" 2>/dev/null || true)"
    if [[ "$line" =~ ^listening\ on\ .*:([0-9]+)$ ]]; then
        port="${BASH_REMATCH[1]}"
        break
    fi
    kill -0 "$esub_pid" 2>/dev/null || fail "esub exited at start-up"
    sleep 0.1
done
[ -n "$port" ] || fail "esub printed no listening line"
base="http://127.0.0.1:$port"
echo "esub pid $esub_pid on port $port"

# 3. Headless Chromium on the page; --dump-dom prints the DOM once the page has loaded, which
#    the parked sub on `holdkey` delays until step 5.
setsid "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --dump-dom "file://$here/page.html?port=$port" \
    >"$work/dom.html" 2>"$work/chrome.err" &
chrome_pid=$!
echo "chromium pid $chrome_pid"

keys=""
for _ in $(seq 1 300); do
    keys="$(curl -s --max-time 2 "$base/keys" || true)"
    if [[ "$keys" == *'"browserkey"'* && "$keys" == *'"holdkey"'* ]]; then
        break
    fi
    kill -0 "$chrome_pid" 2>/dev/null || fail "chromium exited before joining (keys: $keys)"
    sleep 0.1
done
[[ "$keys" == *'"browserkey"'* ]] || fail "the page never joined /psub/browserkey (keys: $keys)"
[[ "$keys" == *'"holdkey"'* ]] || fail "the page's sub on holdkey never parked (keys: $keys)"
echo "keys: $keys"

# 4. The rep; in receipt mode its 200 comes once the page has sent its `ok`.
answer="$(curl -s --max-time 15 -w ' %{http_code}' -X POST --data-binary "$payload" \
    "$base/rep/browserkey")" || fail "rep request failed"
[ "$answer" = "OK 200" ] || fail "rep to browserkey answered: $answer"

# 5. Let the page finish loading, then wait for Chromium to print the DOM and exit.
answer="$(curl -s --max-time 5 -w ' %{http_code}' -X POST --data-binary "done" \
    "$base/rep/holdkey")" || fail "release request failed"
[ "$answer" = "OK 200" ] || fail "rep to holdkey answered: $answer"
for _ in $(seq 1 300); do
    kill -0 "$chrome_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$chrome_pid" 2>/dev/null && fail "chromium still running 30 s after the page loaded"
wait "$chrome_pid" || fail "chromium exited with status $?"
chrome_pid=""

# 6. The received message is in the title and the body.
grep -qF "<title>got:$payload</title>" "$work/dom.html" \
    || fail "title does not hold the payload; DOM title: $(grep -o '<title>[^<]*</title>' "$work/dom.html" || echo none)"
grep -qF "<pre id=\"out\">$payload</pre>" "$work/dom.html" || fail "page body does not hold the payload"
echo "PASS: chromium received '$payload' over ws://127.0.0.1:$port/psub/browserkey"
