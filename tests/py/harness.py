"""Shared pieces of the Python compatibility checks in this folder (test_client.py,
test_prometheus.py, test_websockets.py, test_topics.py, test_cluster.py): Test and Failure, body
and error descriptions, Bg, the esub Server started on port 0, a raw HTTP response reader, the
esub client module loaded with its settings, and the result printing.

The scripts import it as `harness`: run as `python tests/py/test_x.py`, a script's own folder is
first on sys.path. Importing it sets NO_PROXY for this machine before it imports requests.
"""

import asyncio
import importlib.util
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
import types
import warnings

STARTUP_TIMEOUT = 10.0  # for the "listening on" line

# Requests to this machine must never go through a proxy from the environment (requests and
# websockets honour the proxy variables).
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import requests  # noqa: E402  (after the proxy settings)

# The esub client reads these at import time; a stray one would change what it sends.
CLIENT_VARS = ("ESUB_TOKEN", "ESUB_PROTOCOL", "ESUB_WEBSOCKET_PROTOCOL", "ESUB_REQUEST_RETRIES",
               "ESUB_CONFIRM_RECEIPT", "ESUB_PING_FREQUENCY", "ESUB_SERVICE_HOST",
               "ESUB_SERVICE_PORT")


def prepare_esub_client():
    """Clears CLIENT_VARS from the environment, and lets the esub 0.0.6 client load on Python
    3.11: it decorates one function with @asyncio.coroutine, which 3.11 removed."""
    if not hasattr(asyncio, "coroutine"):
        asyncio.coroutine = types.coroutine
    for var in CLIENT_VARS:
        os.environ.pop(var, None)


def load_esub_client(env):
    """A fresh esub 0.0.6 module (a new one each call), imported with `env` (its ESUB_* settings,
    which it reads at import) in the environment for the import only. Failure when the package is
    missing or another version; the caller checks the settings took."""
    spec = importlib.util.find_spec("esub")
    if spec is None:
        raise Failure("the esub package is not installed")
    os.environ.update(env)
    try:
        module = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation
            spec.loader.exec_module(module)
    finally:
        for k in env:
            os.environ.pop(k, None)
    if module.__version__ != "0.0.6":
        raise Failure("esub client version %r, expected 0.0.6" % module.__version__)
    return module


# ---------------------------------------------------------------------------------------------
# tests and descriptions

class Failure(Exception):
    pass


class Test:
    """Collects the failed checks of one test; a test passes when none failed."""

    def __init__(self, name):
        self.name = name
        self.problems = []

    def check(self, cond, msg):
        if not cond:
            self.problems.append(msg)
        return cond

    def fail(self, msg):
        self.problems.append(msg)


def show(data, limit=80, str_as_bytes=True):
    """Short description of a body. A str is shown as its UTF-8 bytes, or with
    str_as_bytes=False as a str (where a str and bytes must be told apart)."""
    if data is None:
        return "None"
    if isinstance(data, str):
        if str_as_bytes:
            data = data.encode("utf-8", "backslashreplace")
        elif len(data) <= limit:
            return repr(data)
        else:
            return "%d chars %r..." % (len(data), data[:24])
    if len(data) <= limit:
        return repr(data)
    return "%d bytes %r...%r" % (len(data), data[:24], data[-8:])


def show_resp(r, headers=True):
    """A requests response: request, status, body (and headers)."""
    s = "%s %s -> %d %s" % (r.request.method, r.request.url, r.status_code, show(r.content))
    return s + ", headers %s" % dict(r.headers) if headers else s


def show_exc(e, headers=True):
    """An exception, with the request and response when requests raised it."""
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return "HTTPError: " + show_resp(e.response, headers)
    return "%s: %s" % (type(e).__name__, e)


def session():
    """A requests session that ignores proxy settings (and .netrc) from the environment."""
    s = requests.Session()
    s.trust_env = False
    return s


def get_keys(http, srv, timeout, describe=show_resp):
    """GET /keys through the session http: the listed keys, [] on 204; Failure on another status
    (the response described by describe)."""
    r = http.get(srv.base + "/keys", timeout=timeout)
    if r.status_code == 204:
        return []
    if r.status_code != 200:
        raise Failure("GET /keys: %s" % describe(r))
    return r.json()


class Bg:
    """Runs fn(*args, **kwargs) in a daemon thread; wait() returns its result or raises."""

    def __init__(self, fn, *args, **kwargs):
        self.result = None
        self.error = None
        self.finished = threading.Event()

        def run():
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: B902 - reported to the waiter
                self.error = e
            finally:
                self.finished.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait(self, timeout):
        if not self.finished.wait(timeout):
            raise Failure("still waiting after %.1f s" % timeout)
        if self.error is not None:
            raise self.error
        return self.result


def read_response(s):
    """(status line, {lowercase header: value}, body) of one HTTP response with a Content-Length
    body from a socket; no bytes may follow it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise Failure("connection closed inside a response head: %r" % buf)
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if b"content-length" not in headers:
        raise Failure("response without Content-Length: %r" % head)
    n = int(headers[b"content-length"])
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            raise Failure("connection closed inside a body")
        rest += d
    if len(rest) > n:
        raise Failure("extra bytes after a response: %r" % rest[n:])
    return lines[0], headers, rest


# ---------------------------------------------------------------------------------------------
# the server

def default_binary():
    """$ESUB_BIN, else target/debug/esub of this checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("ESUB_BIN") or os.path.join(root, "target", "debug", "esub")


class Server:
    """The esub binary, started by start() with ESUB_PORT=0 ESUB_BIND=127.0.0.1 plus `env` (no
    other ESUB_ or DATADOG_ variable of ours) in a fresh temporary folder named `prefix`...; the
    port comes from its first stdout line `listening on 127.0.0.1:<port>`. With statsd=True, the
    server's statsd datagrams go to a UDP socket of this process, kept drained by a thread (so
    none is dropped)."""

    def __init__(self, binary, prefix="esub-pytest-", env=None, statsd=False):
        self.binary = os.path.abspath(binary)
        self.env = dict(env or {})
        self.workdir = tempfile.mkdtemp(prefix=prefix)
        self.stderr_path = os.path.join(self.workdir, "esub.stderr")
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None
        self.stdout_lines = queue.Queue()
        self.stopping = False
        self.udp = None
        if statsd:
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.udp.settimeout(0.2)
            self.env.update(DATADOG_SERVICE_HOST="127.0.0.1",
                            DATADOG_SERVICE_PORT=str(self.udp.getsockname()[1]))
            threading.Thread(target=self._drain_udp, daemon=True).start()

    def _drain_udp(self):
        while not self.stopping:
            try:
                self.udp.recv(65536)
            except OSError:
                pass

    def start(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ESUB_", "DATADOG_"))}
        env.update(ESUB_PORT="0", ESUB_BIND="127.0.0.1", **self.env)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.binary], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                cwd=self.workdir, env=env, start_new_session=True)

        def pump():
            for line in self.proc.stdout:
                self.stdout_lines.put(line)
            self.stdout_lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = self.stdout_lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            raise Failure("no stdout line within %.0f s (pid %d)" % (STARTUP_TIMEOUT, self.proc.pid))
        if first is None:
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = "still running"
            raise Failure("stdout closed before the listening line; exit code %s; stderr: %s"
                          % (code, self.stderr_tail()))
        m = re.fullmatch(rb"listening on (\S+):(\d+)\r?\n?", first)
        if not m:
            raise Failure("first stdout line is %r, expected 'listening on <addr>:<port>'" % first)
        addr = m.group(1).decode()
        if addr.strip("[]") != "127.0.0.1":
            raise Failure("listening on %r although ESUB_BIND=127.0.0.1" % first)
        self.port = int(m.group(2))
        if not 0 < self.port < 65536:
            raise Failure("bad port in %r" % first)

    @property
    def base(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def ws_base(self):
        return "ws://%s:%d" % (self.host, self.port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, n=40):
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no stderr file)"
        return "\n".join(lines[-n:]) if lines else "(empty)"

    def expect_exit(self, t, timeout, what="exit code %r"):
        """After a SIGTERM: the process must exit with code 0 within timeout; else it is killed."""
        try:
            code = self.proc.wait(timeout=timeout)
            t.check(code == 0, what % code)
        except subprocess.TimeoutExpired:
            t.fail("still running %.0f s after SIGTERM; killed" % timeout)
            self.kill()

    def kill(self):
        """Last resort: SIGKILL our own child (and its process group, which it leads)."""
        self.stopping = True
        if self.running():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                os.kill(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------------------------------------
# running tests and reporting

def test_names(cls, prefix, exclude=()):
    """The methods of cls named prefix..., in the order they are written."""
    names = [n for n in dir(cls) if n.startswith(prefix) and n not in exclude]
    names.sort(key=lambda n: cls.__dict__[n].__code__.co_firstlineno)
    return names


def run_test(t, srv, fn, script, describe=show_exc):
    """fn(t), unless the server is gone; an exception fails t, naming the lines of `script` (the
    test file's absolute path) it went through."""
    if not srv.running():
        t.fail("server is no longer running (exit code %r)" % srv.proc.poll())
        return
    try:
        fn(t)
    except Exception as e:  # noqa: BLE001
        here = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == script]
        t.fail("%s (at %s)" % (describe(e), ", ".join(
            "line %d: %s" % (f.lineno, f.line) for f in here)))


def print_result(t):
    if t.problems:
        print("FAIL %s" % t.name)
        for p in t.problems:
            print("     - " + p.replace("\n", "\n       "))
    else:
        print("ok   %s" % t.name)
    sys.stdout.flush()


def print_stderr(srv, label=""):
    print("---- esub stderr%s (last lines, %s):" % (label, srv.stderr_path))
    print(srv.stderr_tail())


def summary(results):
    """The last line, `N passed, M failed`; returns the exit code."""
    failed = sum(1 for t in results if t.problems)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


def report(results, srv, printed=False):
    """Prints the results (unless printed already), the server's stderr when anything failed,
    and the summary; returns the exit code."""
    if not printed:
        for t in results:
            print_result(t)
    if any(t.problems for t in results):
        print_stderr(srv)
    return summary(results)
