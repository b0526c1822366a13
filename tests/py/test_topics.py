"""The README's Python consumer loop (requests, ack=1), run exactly as printed there against the
esub binary: it gets every published message once, in order per partition; a consumer that stops
before acknowledging its last message gets that message again, then the new ones (at-least-once).
Also a topic created and published to with requests, and a batch pub.

    python tests/py/test_topics.py [path/to/esub]
"""

import os
import re
import signal
import struct
import sys
import traceback

from harness import Failure, Server, Test, default_binary, report, session

STOP_TIMEOUT = 10.0
HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")


class Enough(Exception):
    """Ends the README's endless loop once the test has seen what it waits for."""


def readme_loop():
    """The first ```python block of the README that consumes a topic."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if "/v1/msgs/" in block and "ack" in block:
            return block
    raise Failure("no python consumer loop in README.md")


def run_loop(code, base, want):
    """Runs the README block with its URL pointed at `base`; `process` collects payloads and
    stops the loop after `want` of them."""
    got = []

    def process(payload):
        got.append(payload)
        if len(got) >= want:
            raise Enough()

    code = code.replace("http://127.0.0.1:8090", base)
    try:
        exec(compile(code, "README.md", "exec"), {"process": process})  # noqa: S102
    except Enough:
        pass
    return got


def publish(http, srv, body, key=None):
    params = {"key": key} if key else {}
    r = http.post(srv.base + "/v1/msgs/orders/v1", params=params, data=body,
                  headers={"Appid": "app1"}, timeout=10)
    if r.status_code != 201:
        raise Failure("pub answered %d %r" % (r.status_code, r.text))
    return int(r.headers["X-Partition"]), int(r.headers["X-Offset"])


def run(srv):
    results = []
    http = session()

    t = Test("topic created with requests: 201, then 200 for the same partitions")
    r = http.post(srv.base + "/v1/topics/app1/orders/v1", params={"partitions": "2"},
                  headers={"Appid": "app1"}, timeout=10)
    t.check(r.status_code == 201 and r.json() == {"ok": 1}, "create: %d %r" % (r.status_code, r.text))
    r = http.post(srv.base + "/v1/topics/app1/orders/v1", params={"partitions": "2"},
                  headers={"Appid": "app1"}, timeout=10)
    t.check(r.status_code == 200, "create again: %d %r" % (r.status_code, r.text))
    results.append(t)

    t = Test("README consumer loop: every message once, in order per partition")
    sent = {}
    for i in range(20):
        p, o = publish(http, srv, b"m%d" % i, key="k%d" % (i % 5))
        sent[(p, o)] = b"m%d" % i
    code = readme_loop()
    got = run_loop(code, srv.base, 20)
    t.check(sorted(got) == sorted(sent.values()), "got %r" % got)
    for p in (0, 1):
        want = [sent[k] for k in sorted(sent) if k[0] == p]
        mine = [g for g in got if g in want]
        t.check(mine == want, "partition %d out of order: %r, want %r" % (p, mine, want))
    results.append(t)

    t = Test("README consumer loop again: the unacknowledged last message comes back, then new ones")
    last = got[-1]
    fresh = [b"n%d" % i for i in range(3)]
    for body in fresh:
        publish(http, srv, body, key="k0")
    again = run_loop(code, srv.base, 4)
    t.check(sorted(again) == sorted([last] + fresh),
            "the new consumer got %r, want %r and %r" % (again, last, fresh))
    t.check([g for g in again if g in fresh] == fresh, "new ones out of order: %r" % again)
    results.append(t)

    t = Test("batch pub through requests: offsets in record order")
    body = b"".join(struct.pack(">HHI", 0, 0, len(x)) + x for x in (b"b1", b"b2", b"b3"))
    r = http.post(srv.base + "/v1/msgs/orders/v1", params={"batch": "1"}, data=body,
                  headers={"Appid": "app1"}, timeout=10)
    t.check(r.status_code == 201, "batch: %d %r" % (r.status_code, r.text))
    msgs = r.json().get("msgs", []) if r.status_code == 201 else []
    t.check(len(msgs) == 3 and len({m["partition"] for m in msgs}) == 1,
            "keyless records of one batch share a partition: %r" % msgs)
    offs = [m["offset"] for m in msgs]
    t.check(offs == sorted(offs) and offs == list(range(offs[0], offs[0] + 3)) if offs else False,
            "offsets %r" % offs)
    results.append(t)
    return results


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else default_binary()
    srv = Server(binary, prefix="esub-topics-",
                 env=dict(ESUB_WORKERS="2", ESUB_SUB_TIMEOUT_MS="300"))
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
