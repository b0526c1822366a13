#!/usr/bin/env python3
"""GET /metrics read by the official Prometheus parser (prometheus_client), shared/API.md section 5.

    python test_prometheus.py [/path/to/esub]     # else $ESUB_BIN, else target/debug/esub

Starts the binary with ESUB_PORT=0 ESUB_BIND=127.0.0.1 (statsd to a UDP socket of this script,
so no datagram is dropped), reads the port from its first stdout line, makes a few requests,
then parses /metrics with prometheus_client.parser.text_string_to_metric_families and checks
the families, their types and a few sample values. Stops the server with SIGTERM. Every wait is
bounded. Prints one line per test and a final `N passed, M failed`; exits 1 when anything
failed. Run it through tests/py/run.sh, which provides the pinned packages.
"""

import os
import signal
import socket
import sys
import threading
import time
import traceback

# harness sets NO_PROXY (requests to this machine never go through a proxy) before requests loads.
from harness import Failure, Server, Test, default_binary, read_response, report, session
from prometheus_client.parser import text_string_to_metric_families

REQUEST_TIMEOUT = 10.0
POLL_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0

PROM_TYPE = "text/plain; version=0.0.4"
FAMILIES = {
    # family name as the parser reports it (counters lose `_total`) -> type
    "esub_requests": "counter",
    "esub_replies": "counter",
    "esub_request_duration_seconds": "histogram",
    "esub_reply_duration_seconds": "histogram",
    "esub_sub_waiting": "gauge",
    "esub_rep_waiting": "gauge",
    "esub_connections": "gauge",
    "esub_statsd_dropped": "counter",
    "esub_uptime_seconds": "gauge",
}


def scrape(srv):
    """(response, {family name: family}) of one GET /metrics."""
    with session() as s:
        r = s.get(srv.base + "/metrics", timeout=REQUEST_TIMEOUT)
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    return r, families


def sample(families, family, name, **labels):
    """The value of the one sample `name` with exactly these labels, else None."""
    f = families.get(family)
    if f is None:
        return None
    found = [s.value for s in f.samples if s.name == name and s.labels == labels]
    return found[0] if len(found) == 1 else None


def samples(families, family, name):
    f = families.get(family)
    return [] if f is None else [s for s in f.samples if s.name == name]


def read_status_body(sock):
    """(status, body) of one response with a Content-Length body."""
    status_line, _, body = read_response(sock)
    return int(status_line.split()[1]), body


def wait_for(srv, what, pred):
    """Scrapes until pred(families) holds; returns the families or raises."""
    deadline = time.monotonic() + POLL_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        _, last = scrape(srv)
        if pred(last):
            return last
        time.sleep(0.02)
    raise Failure("%s not seen in /metrics within %.0f s" % (what, POLL_TIMEOUT))


def req_labels(route, success, auth, confirmed=False):
    b = lambda v: "true" if v else "false"  # noqa: E731
    return dict(route=route, success=b(success), auth=b(auth), confirmed=b(confirmed))


def run(srv):
    results = []

    def test(name):
        t = Test(name)
        results.append(t)
        return t

    # -- a sub parked on `pk` with a token shows in the gauge
    sub_result = {}

    def do_sub():
        # A raw socket, closed as soon as the body is read: the client is done with it.
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=REQUEST_TIMEOUT) as c:
                c.sendall(b"GET /sub/pk?token=t1 HTTP/1.1\r\nHost: esub\r\n\r\n")
                sub_result["r"] = read_status_body(c)
        except Exception as e:  # noqa: BLE001
            sub_result["e"] = e

    th = threading.Thread(target=do_sub, daemon=True)
    th.start()
    t = test("esub_sub_waiting is 1 while a sub is parked")
    try:
        wait_for(srv, "esub_sub_waiting 1",
                 lambda f: sample(f, "esub_sub_waiting", "esub_sub_waiting") == 1)
    except Failure as e:
        t.problems.append(str(e))

    # -- deliver, then a rep nobody waits for, /info, /keys, and unmeasured requests
    s = session()
    r = s.post(srv.base + "/rep/pk", params={"token": "t1"}, data=b"payload",
               timeout=REQUEST_TIMEOUT)
    t = test("the sub is delivered")
    t.check((r.status_code, r.text) == (200, "OK"), "rep: %d %r" % (r.status_code, r.text))
    th.join(REQUEST_TIMEOUT)
    got = sub_result.get("r")
    t.check(got is not None and got[0] == 200 and got[1] == b"payload",
            "sub returned %r" % ((got if got is not None else sub_result),))
    r = s.post(srv.base + "/rep/nobody", data=b"x", timeout=REQUEST_TIMEOUT)
    t.check(r.status_code == 404, "rep to an unknown key: %d" % r.status_code)
    t.check(s.get(srv.base + "/info", timeout=REQUEST_TIMEOUT).status_code == 200, "/info")
    t.check(s.get(srv.base + "/keys", timeout=REQUEST_TIMEOUT).status_code == 204, "/keys")
    t.check(s.get(srv.base + "/ping", timeout=REQUEST_TIMEOUT).status_code == 200, "/ping")
    t.check(s.get(srv.base + "/nope", timeout=REQUEST_TIMEOUT).status_code == 404, "/nope")
    s.close()

    # The sub's own request is counted once it is answered (at the latest once its connection
    # is closed): wait a bounded time for a route=sub counter; "request counters" checks it.
    try:
        wait_for(srv, "a route=sub request counter", lambda f: any(
            x.labels.get("route") == "sub" for x in samples(f, "esub_requests",
                                                            "esub_requests_total")))
    except Failure:
        pass
    t = test("/metrics parses with prometheus_client")
    try:
        resp, fams = scrape(srv)
        t.check(resp.status_code == 200, "/metrics status %d" % resp.status_code)
        t.check(resp.headers.get("Content-Type", "").startswith(PROM_TYPE),
                "/metrics content type %r" % resp.headers.get("Content-Type"))
    except Exception as e:  # noqa: BLE001
        t.problems.append("parse failed: %s: %s" % (type(e).__name__, e))
        return results

    t = test("families and types")
    for name, typ in FAMILIES.items():
        f = fams.get(name)
        if t.check(f is not None, "family %s missing (have %s)" % (name, sorted(fams))):
            t.check(f.type == typ, "family %s is %s, want %s" % (name, f.type, typ))

    t = test("request counters")
    want = [
        (req_labels("info", True, False), 1),
        (req_labels("keys", True, False), 1),
        (req_labels("sub", True, True), 1),
        (req_labels("rep", True, True), 1),
        (req_labels("rep", False, False), 1),
    ]
    got = {tuple(sorted(x.labels.items())): x.value
           for x in samples(fams, "esub_requests", "esub_requests_total")}
    for labels, value in want:
        key = tuple(sorted(labels.items()))
        t.check(got.get(key) == value, "esub_requests_total%s = %r, want %r"
                % (labels, got.get(key), value))
    extra = set(got) - {tuple(sorted(lb.items())) for lb, _ in want}
    t.check(not extra, "unexpected esub_requests_total series: %s"
            % {k: got[k] for k in extra})

    t = test("reply counters")
    for kind in ("sub_reply", "psub_reply", "prep_message"):
        for success in ("true", "false"):
            v = sample(fams, "esub_replies", "esub_replies_total", kind=kind, success=success)
            w = 1 if (kind, success) == ("sub_reply", "true") else 0
            t.check(v == w, "esub_replies_total{kind=%s,success=%s} = %r, want %d"
                    % (kind, success, v, w))

    t = test("histograms are cumulative and +Inf equals _count")
    counts = {}
    for family, label in (("esub_request_duration_seconds", "route"),
                          ("esub_reply_duration_seconds", "kind")):
        series = {}
        for x in samples(fams, family, family + "_bucket"):
            series.setdefault(x.labels[label], []).append(x)
        t.check(series, "%s has no buckets" % family)
        for value, buckets in series.items():
            les = [float(b.labels["le"]) for b in buckets]
            t.check(les == sorted(les) and len(set(les)) == len(les),
                    "%s{%s=%s}: le not ascending: %s" % (family, label, value, les))
            t.check(les[-1] == float("inf"), "%s{%s=%s}: last bucket is not +Inf"
                    % (family, label, value))
            cum = [b.value for b in buckets]
            t.check(cum == sorted(cum), "%s{%s=%s}: buckets not cumulative: %s"
                    % (family, label, value, cum))
            n = sample(fams, family, family + "_count", **{label: value})
            t.check(n == cum[-1], "%s{%s=%s}: _count %r != +Inf bucket %r"
                    % (family, label, value, n, cum[-1]))
            total = sample(fams, family, family + "_sum", **{label: value})
            t.check(total is not None and total >= 0, "%s{%s=%s}: _sum %r"
                    % (family, label, value, total))
            counts[(family, value)] = n

    t = test("histogram _count per route and kind matches the requests made")
    for route, n in (("rep", 2), ("info", 1), ("keys", 1), ("sub", 1), ("psub", 0)):
        got_n = counts.get(("esub_request_duration_seconds", route))
        t.check(got_n == n, "request histogram _count for route %s = %r, want %d"
                % (route, got_n, n))
    got_n = counts.get(("esub_reply_duration_seconds", "sub_reply"))
    t.check(got_n == 1, "reply histogram _count for sub_reply = %r, want 1" % got_n)

    t = test("gauges")
    for name, want_v in (("esub_sub_waiting", 0), ("esub_rep_waiting", 0)):
        v = sample(fams, name, name)
        t.check(v == want_v, "%s = %r, want %d" % (name, v, want_v))
    v = sample(fams, "esub_statsd_dropped", "esub_statsd_dropped_total")
    t.check(v == 0, "esub_statsd_dropped_total = %r, want 0" % v)
    v = sample(fams, "esub_connections", "esub_connections")
    t.check(v is not None and v >= 1, "esub_connections = %r, want >= 1" % v)
    v = sample(fams, "esub_uptime_seconds", "esub_uptime_seconds")
    t.check(v is not None and v >= 0, "esub_uptime_seconds = %r" % v)
    return results


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else default_binary()
    srv = Server(binary, prefix="esub-prom-", statsd=True,
                 env=dict(ESUB_WORKERS="2", ESUB_METRIC_INTERVAL_MS="200"))
    results = []
    try:
        srv.start()
        results = run(srv)
        t = Test("SIGTERM: exit code 0")
        os.kill(srv.proc.pid, signal.SIGTERM)
        srv.expect_exit(t, STOP_TIMEOUT)
        results.append(t)
    except Exception as e:  # noqa: BLE001
        t = Test("run")
        t.problems.append("%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))
        results.append(t)
    finally:
        srv.kill()
    return report(results, srv)


if __name__ == "__main__":
    sys.exit(main())
