#!/usr/bin/env python3
"""Compatibility test of cluster mode (shared/API-cluster.md section 4, last item): the public esub
0.0.6 client doing `sub` on one node and `rep` on another.

    python test_cluster.py [/path/to/esub]      # default: $ESUB_BIN, else target/debug/esub

Starts one nats-server on a free loopback port ($NATS_SERVER_BIN, else nats-server on PATH or in
/usr/sbin, /usr/bin, /usr/local/bin: tests/nats/install.sh installs it) and two esub nodes, A and B,
with ESUB_PORT=0 ESUB_BIND=127.0.0.1 ESUB_CLUSTER=<that server> ESUB_CLUSTER_HEARTBEAT_MS=200
ESUB_TOPICS=off, and waits until both say "cluster":"connected" in /info. The client reads its
node from the environment when it is imported, so it is loaded once per node as a separate module
object (as test_websockets.py does), its code unmodified. Subs go through one node's client and
reps through the other's; bodies must arrive byte for byte. The nodes are stopped with SIGTERM by
PID and must exit with code 0; nats-server is killed by PID. Every wait is bounded. Prints one line
per test and `N passed, M failed`; exits 1 when anything failed. Run it through tests/py/run.sh,
which provides the pinned packages.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

# harness sets NO_PROXY (requests to this machine never go through a proxy) before requests loads.
from harness import (Bg, Failure, Server, Test, default_binary, load_esub_client,
                     prepare_esub_client, print_result, print_stderr, run_test, session, show,
                     show_exc, show_resp, summary, test_names)

import requests  # noqa: E402  (after the proxy settings)

NATS_START_TIMEOUT = 10.0  # for nats-server to accept connections
JOIN_TIMEOUT = 10.0        # for a node's /info to say "connected", /members to list both
PARK_TIMEOUT = 5.0         # for a sub to show in GET /keys?local=1
ROUTE_TIMEOUT = 5.0        # for a sub's NATS interest to reach the other node
SUB_TIMEOUT = 15.0         # client-side read timeout of every parked sub
REP_TIMEOUT = 10.0         # for a rep's answer
DONE_TIMEOUT = 10.0        # for a sub to finish once its rep was answered
STOP_TIMEOUT = 10.0        # for a node to exit after SIGTERM (ESUB_DRAIN_MS is 5000)
HEARTBEAT_MS = 200

# Clears the client's variables (it reads them at import time) and provides asyncio.coroutine.
prepare_esub_client()


# ---------------------------------------------------------------------------------------------
# nats-server

def nats_server_bin():
    """$NATS_SERVER_BIN, else nats-server on PATH or where Debian puts it (as tests/common/nats.rs
    looks); None when there is none."""
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env if os.path.isfile(env) else None
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    dirs += ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
    for d in dirs:
        p = os.path.join(d, "nats-server")
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def free_port():
    """A free loopback port: bound, read, released (nats-server cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nats:
    """One nats-server on a free loopback port, its output in a temporary folder; kill() ends it
    by PID."""

    def __init__(self, binary):
        self.binary = binary
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="esub-pycluster-nats-")
        self.log_path = os.path.join(self.workdir, "nats.log")
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-a", "127.0.0.1", "-p", str(self.port)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + NATS_START_TIMEOUT
        while True:
            code = self.proc.poll()
            if code is not None:
                raise Failure("nats-server on port %d exited with %r: %s"
                              % (self.port, code, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Failure("nats-server did not listen on %d within %.0f s"
                              % (self.port, NATS_START_TIMEOUT))
            time.sleep(0.01)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------------------------------------
# the nodes and their clients

def start_node(binary, nats, name):
    srv = Server(binary, prefix="esub-pycluster-%s-" % name, env=dict(
        ESUB_CLUSTER=nats.url, ESUB_NODE_NAME=name,
        ESUB_CLUSTER_HEARTBEAT_MS=str(HEARTBEAT_MS), ESUB_TOPICS="off"))
    srv.name = name
    srv.start()
    return srv


def load_client(srv):
    """A fresh esub 0.0.6 module configured (through ESUB_SERVICE_HOST/PORT, read at import) for
    this node."""
    module = load_esub_client(dict(ESUB_SERVICE_HOST=srv.host, ESUB_SERVICE_PORT=str(srv.port)))
    if module.CLUSTER != srv.host or module.PORT != srv.port:
        raise Failure("client configured for %r:%r" % (module.CLUSTER, module.PORT))
    return module


def wait_until(what, timeout, probe):
    """Polls probe() until it returns (True, _); Failure naming what and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        ok, last = probe()
        if ok:
            return last
        if time.monotonic() > deadline:
            raise Failure("%s not within %.0f s (last: %s)" % (what, timeout, last))
        time.sleep(0.01)


def expect_http_error(t, what, fn, status, text):
    """fn() must raise requests.HTTPError with this status and plain-text body."""
    try:
        fn()
    except requests.HTTPError as e:
        r = e.response
        t.check(r.status_code == status and r.text == text,
                "%s: expected HTTP %d %r, got %s" % (what, status, text, show_exc(e)))
        t.check(r.headers.get("Content-Type") == "text/plain; charset=utf-8",
                "%s: Content-Type %r" % (what, r.headers.get("Content-Type")))
        return
    except Exception as e:  # noqa: BLE001
        t.fail("%s: expected HTTP %d, got %s" % (what, status, show_exc(e)))
        return
    t.fail("%s: expected HTTP %d, the call succeeded" % (what, status))


# ---------------------------------------------------------------------------------------------
# the tests

class Suite:
    def __init__(self, a, b):
        self.a, self.b = a, b
        self.client = {a.name: load_client(a), b.name: load_client(b)}
        self.plain = session()   # for probes (/info, /members, /keys), separate from the clients'

    # -- probes

    def info(self, srv):
        r = self.plain.get(srv.base + "/info", timeout=REP_TIMEOUT)
        if r.status_code != 200:
            raise Failure("GET /info: %s" % show_resp(r))
        return r.json()

    def members(self, srv):
        r = self.plain.get(srv.base + "/members", timeout=REP_TIMEOUT)
        if r.status_code != 200:
            raise Failure("GET /members: %s" % show_resp(r))
        return [m.get("node") for m in r.json()]

    def local_keys(self, srv):
        """GET /keys?local=1: this node's keys (plain /keys is the node map in cluster mode)."""
        r = self.plain.get(srv.base + "/keys?local=1", timeout=REP_TIMEOUT)
        if r.status_code == 204:
            return []
        if r.status_code != 200:
            raise Failure("GET /keys?local=1: %s" % show_resp(r))
        return r.json()

    def wait_parked(self, srv, key, sub):
        def probe():
            if sub.finished.is_set():
                raise Failure("sub on %r ended before any rep: %s" % (
                    key, show_exc(sub.error) if sub.error else "returned %s" % show(sub.result)))
            keys = self.local_keys(srv)
            return key in keys, keys
        wait_until("sub on %r listed by %s's /keys?local=1" % (key, srv.name), PARK_TIMEOUT, probe)

    def wait_routed(self, via, key):
        """Until a rep posted to `via` reaches key's holder: a probe with a token the holder's sub
        does not have gets its 403 (a 404 means the interest has not crossed yet)."""
        def probe():
            r = self.plain.post(via.base + "/rep/%s?token=__probe__" % key, data=b"probe",
                                timeout=REP_TIMEOUT)
            return r.status_code == 403, show_resp(r, headers=False)
        wait_until("%r routed via %s" % (key, via.name), ROUTE_TIMEOUT, probe)

    def cross(self, t, sub_node, rep_node, body, token=None, what="cross-node"):
        """esub.sub through sub_node's client in a thread, esub.rep through rep_node's; the sub
        must get body exactly."""
        key = str(uuid.uuid4())
        # A str body goes out UTF-8 encoded (requests and urllib3 as pinned).
        want = body.encode("utf-8") if isinstance(body, str) else body
        sub = Bg(self.client[sub_node.name].sub, key, token=token, timeout=SUB_TIMEOUT)
        self.wait_parked(sub_node, key, sub)
        self.wait_routed(rep_node, key)
        try:
            self.client[rep_node.name].rep(key, body, token=token, timeout=REP_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            t.fail("%s: esub.rep(%r, %s) on %s raised %s"
                   % (what, key, show(body), rep_node.name, show_exc(e)))
        try:
            got = sub.wait(DONE_TIMEOUT)
            t.check(got == want, "%s: esub.sub on %s returned %s, expected %s"
                    % (what, sub_node.name, show(got), show(want)))
        except Exception as e:  # noqa: BLE001
            t.fail("%s: esub.sub(%r) on %s raised %s" % (what, key, sub_node.name, show_exc(e)))

    # -- tests

    def test_both_nodes_connected_and_members(self, t):
        for srv in (self.a, self.b):
            info = self.info(srv)
            t.check(info.get("node") == srv.name and info.get("cluster") == "connected",
                    "%s /info: %r" % (srv.name, info))
            want = sorted([self.a.name, self.b.name])
            wait_until("%s /members = %r" % (srv.name, want), JOIN_TIMEOUT,
                       lambda: (self.members(srv) == want, self.members(srv)))

    def test_sub_on_a_rep_on_b_text(self, t):
        self.cross(t, self.a, self.b, "plain text body, caf\xe9 \u0442\u0435\u043b\u043e",
                   what="str body")

    def test_sub_on_a_rep_on_b_binary(self, t):
        self.cross(t, self.a, self.b, bytes(range(256)) + b"\r\n\r\nend\x00", what="binary body")

    def test_sub_on_a_rep_on_b_300_kib(self, t):
        body = bytes((i * 31 + 7) & 0xFF for i in range(300 * 1024))
        self.cross(t, self.a, self.b, body, what="300 KiB body")

    def test_sub_on_b_rep_on_a(self, t):
        self.cross(t, self.b, self.a, b"the other way", what="B to A")

    def test_empty_body_across(self, t):
        self.cross(t, self.a, self.b, b"", what="empty body")

    def test_token_across(self, t):
        key = str(uuid.uuid4())
        sub = Bg(self.client[self.a.name].sub, key, token="s3cret", timeout=SUB_TIMEOUT)
        self.wait_parked(self.a, key, sub)
        self.wait_routed(self.b, key)
        rep = self.client[self.b.name].rep
        expect_http_error(t, "rep with a wrong token on B",
                          lambda: rep(key, b"no", token="other", timeout=REP_TIMEOUT),
                          403, "Invalid token")
        rep(key, b"yes", token="s3cret", timeout=REP_TIMEOUT)
        got = sub.wait(DONE_TIMEOUT)
        t.check(got == b"yes", "sub with a token got %s" % show(got))

    def test_rep_unknown_key_on_each_node(self, t):
        for srv in (self.a, self.b):
            key = "nobody-" + str(uuid.uuid4())
            expect_http_error(t, "esub.rep to an unknown key on %s" % srv.name,
                              lambda: self.client[srv.name].rep(key, b"lost", timeout=REP_TIMEOUT),
                              404, "Unknown key")


# ---------------------------------------------------------------------------------------------

def stop(t, srv):
    """SIGTERM by PID; exit code 0 within STOP_TIMEOUT, else killed."""
    if not srv.running():
        t.fail("%s already gone (exit code %r)" % (srv.name, srv.proc.poll()))
        return
    os.kill(srv.proc.pid, signal.SIGTERM)
    srv.expect_exit(t, STOP_TIMEOUT, what="%s exit code %%r" % srv.name)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else default_binary()
    results = []
    nats_bin = nats_server_bin()
    if nats_bin is None:
        t = Test("nats-server found")
        t.fail("nats-server not found: run `bash tests/nats/install.sh` (run.sh and make test do), "
               "or set NATS_SERVER_BIN")
        print_result(t)
        return summary([t])
    nats = Nats(nats_bin)
    nodes = []
    try:
        setup = Test("nats-server and two esub nodes start and join")
        try:
            nats.start()
            for name in ("A", "B"):
                nodes.append(start_node(binary, nats, name))
            http = session()
            for srv in nodes:
                def probe(srv=srv):
                    r = http.get(srv.base + "/info", timeout=REP_TIMEOUT)
                    return r.status_code == 200 and r.json().get("cluster") == "connected", r.text
                wait_until("%s /info says connected" % srv.name, JOIN_TIMEOUT, probe)
            suite = Suite(*nodes)
        except (Failure, OSError, requests.RequestException) as e:
            setup.fail(show_exc(e))
        results.append(setup)
        print_result(setup)
        if not setup.problems:
            for name in test_names(Suite, "test_"):
                t = Test(name[len("test_"):])
                gone = [srv for srv in nodes if not srv.running()]
                for srv in gone:
                    t.fail("node %s is no longer running (exit code %r)"
                           % (srv.name, srv.proc.poll()))
                if not gone:
                    run_test(t, nodes[0], getattr(suite, name), os.path.abspath(__file__))
                results.append(t)
                print_result(t)
            t = Test("SIGTERM: both nodes exit with code 0")
            for srv in nodes:
                stop(t, srv)
            results.append(t)
            print_result(t)
    finally:
        for srv in nodes:
            srv.kill()
        nats.kill()
    failed = any(t.problems for t in results)
    for srv in nodes:
        if failed:
            print_stderr(srv, ", node %s" % srv.name)
        else:
            shutil.rmtree(srv.workdir, ignore_errors=True)
    if failed:
        print("---- nats-server log (last lines, %s):" % nats.log_path)
        print(nats.log_tail())
    else:
        shutil.rmtree(nats.workdir, ignore_errors=True)
    return summary(results)


if __name__ == "__main__":
    sys.exit(main())
