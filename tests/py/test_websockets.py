#!/usr/bin/env python3
"""Compatibility test of the websocket routes (shared/API.md section 3): /psub and /prep through the
public esub 0.0.6 client (psub, prep) and through the `websockets` library directly.

    python test_websockets.py [/path/to/esub]      # default: $ESUB_BIN, else target/debug/esub

Starts the binary twice with ESUB_PORT=0 ESUB_BIND=127.0.0.1 (the port comes from the first stdout
line `listening on <addr>:<port>`):

* keepalive mode (the default mode), with ESUB_PING_FREQUENCY=2 so that the silence limit is
  reached within the test (the server pings a member silent for 1 s and closes it after 2 s): the
  client, loaded with ESUB_PING_FREQUENCY=1, sends an unsolicited pong every 0.9 s (counted by a
  relay in front of the server) and must stay connected, while a raw-socket member that answers
  nothing is closed with 1001 `keepalive timeout`;
* receipt mode, ESUB_CONFIRM_RECEIPT=1 ESUB_CONFIRM_TIMEOUT_MS=2000, with the client loaded with
  ESUB_CONFIRM_RECEIPT=1 (it then answers every frame with `ok` and reads one reply per prep frame).

The client reads its settings from the environment when it is imported, so it is loaded once per
server, as a separate module object, with that server's settings in the environment; its code is
used unmodified (only `asyncio.coroutine = types.coroutine` is provided for Python 3.11, by
harness.prepare_esub_client as for test_client.py). Each server is stopped with SIGTERM by PID and must exit with code 0. Every wait
is bounded. Prints one line per test and `N passed, M failed`; exits 1 when anything failed. Run it
through tests/py/run.sh, which provides the pinned packages.
"""

import asyncio
import base64
import functools
import json
import os
import queue
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
import warnings

# harness sets NO_PROXY (requests and websockets, which honours proxy variables too, must never
# use a proxy here) before requests loads.
import harness
from harness import (Bg, Failure, Server, Test, default_binary, get_keys, load_esub_client,
                     print_result, print_stderr, run_test, session, summary, test_names)

REP_TIMEOUT = 10.0       # for a rep's answer (receipt mode: up to the 2 s receipt wait, plus slack)
MSG_TIMEOUT = 5.0        # for a delivered rep to reach a psub's callback
JOIN_TIMEOUT = 5.0       # for a psub to show up (GET /keys, /metrics)
PSUB_LIFETIME = 60       # the client psub's own timeout: a safety net, psubs are cancelled earlier
PSUB_STOP_TIMEOUT = 5.0  # for a cancelled client psub to finish
PREP_TIMEOUT = 10        # the client prep's own timeout
STOP_TIMEOUT = 10.0      # for the process to exit after SIGTERM (ESUB_DRAIN_MS is 5000)
SERVER_PING_FREQUENCY = 2    # keepalive server: sweep every 2 s, close members silent for 2 s
CLIENT_PING_FREQUENCY = 1    # client: unsolicited pong every 0.9 s
CONFIRM_TIMEOUT_MS = 2000    # receipt server

# Clears the client's variables (it reads them at import time) and provides asyncio.coroutine.
harness.prepare_esub_client()

# The client calls websocket.close() without awaiting it when a psub or prep ends: harmless noise.
warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import requests  # noqa: E402  (after the proxy settings)
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402


# ---------------------------------------------------------------------------------------------
# small helpers

# A str is shown as a str here: TEXT and BINARY frames must be told apart.
show = functools.partial(harness.show, str_as_bytes=False)


def show_resp(r):
    return harness.show_resp(r, headers=False)


def show_exc(e):
    if isinstance(e, ConnectionClosed):
        return "%s (received close %s, sent close %s)" % (
            type(e).__name__, close_desc(e.rcvd), close_desc(e.sent))
    if isinstance(e, InvalidStatus):
        return "InvalidStatus: HTTP %d %s" % (e.response.status_code, show(e.response.body))
    return harness.show_exc(e, headers=False)


def close_desc(frame):
    return "none" if frame is None else "%d %r" % (frame.code, frame.reason)


def new_key(prefix="ws"):
    return "%s-%s" % (prefix, uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# the server

class RawWs:
    """A websocket client on a plain socket that never sends a frame after the handshake (and so
    never answers a ping): a truly silent member."""

    def __init__(self, srv, path):
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock = socket.create_connection((srv.host, srv.port), timeout=5)
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"
                           % (path, srv.host, srv.port, key)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(4096)
            if not d:
                raise Failure("connection closed during the handshake: %r" % self.buf)
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise Failure("handshake answered %r" % head)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("no close frame in time (buffered %r)" % self.buf[:64])
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not d:
                raise Failure("socket closed without a close frame")
            self.buf += d

    def until_close(self, timeout):
        """[(opcode, payload)] of the server's frames up to and including its close frame."""
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            self._need(2, deadline)
            op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            hdr = 2
            if n == 126:
                self._need(4, deadline)
                n, hdr = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                self._need(10, deadline)
                n, hdr = int.from_bytes(self.buf[2:10], "big"), 10
            self._need(hdr + n, deadline)
            frames.append((op, self.buf[hdr:hdr + n]))
            self.buf = self.buf[hdr + n:]
            if op == 0x8:
                return frames

    def close(self):
        self.sock.close()


class Relay:
    """A TCP relay in front of the server for one websocket connection; counts the opcodes of the
    frames the client sends (to see the client's unsolicited pongs on the wire)."""

    def __init__(self, srv):
        self.srv = srv
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(JOIN_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.opcodes = []
        self.error = None
        self.socks = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            down, _ = self.listener.accept()
            up = socket.create_connection((self.srv.host, self.srv.port), timeout=5)
            up.settimeout(None)
            down.settimeout(None)
            self.socks = [down, up]
            threading.Thread(target=self._copy, args=(up, down), daemon=True).start()
            self._client_to_server(down, up)
        except Exception as e:  # noqa: BLE001
            self.error = e

    @staticmethod
    def _copy(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _client_to_server(self, src, dst):
        buf = b""
        in_head = True
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
                buf += d
                if in_head:
                    if b"\r\n\r\n" not in buf:
                        continue
                    buf = buf.partition(b"\r\n\r\n")[2]
                    in_head = False
                while len(buf) >= 2:  # client frames are masked: 4 mask bytes after the length
                    n, hdr = buf[1] & 0x7F, 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n, hdr = int.from_bytes(buf[2:4], "big"), 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n, hdr = int.from_bytes(buf[2:10], "big"), 10
                    hdr += 4 if buf[1] & 0x80 else 0
                    if len(buf) < hdr + n:
                        break
                    self.opcodes.append(buf[0] & 0x0F)
                    buf = buf[hdr + n:]
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        for x in [self.listener] + self.socks:
            try:
                x.close()
            except OSError:
                pass


def load_client(srv, confirm, port=None):
    """A fresh esub 0.0.6 module configured (through its environment variables, read at import)
    for this server (or for `port`, a relay to it): keepalive mode pongs every 0.9 s, receipt
    mode answers every frame."""
    port = srv.port if port is None else port
    env = dict(ESUB_SERVICE_HOST=srv.host, ESUB_SERVICE_PORT=str(port))
    if confirm:
        env["ESUB_CONFIRM_RECEIPT"] = "1"
    else:
        env["ESUB_PING_FREQUENCY"] = str(CLIENT_PING_FREQUENCY)
    module = load_esub_client(env)
    if module.CONFIRM != confirm or module.PORT != port:
        raise Failure("client configured CONFIRM=%r PORT=%r" % (module.CONFIRM, module.PORT))
    return module


class ClientPsub:
    """client.psub(key, ...) in its own thread and event loop; the callback's messages go to
    self.messages (and, as (name, message), to `sink` when given). stop() cancels the psub's task,
    as a program would on shutdown; the client then closes the websocket."""

    def __init__(self, client, key, token=None, shared=False, name="psub", sink=None):
        self.name = name
        self.key = key
        self.messages = queue.Queue()
        self.error = None
        self.done = threading.Event()
        self.loop = asyncio.new_event_loop()

        def callback(message):
            self.messages.put(message)
            if sink is not None:
                sink.put((name, message))

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                client.psub(key, token=token, shared=shared, callback=callback, loop=self.loop,
                            timeout=PSUB_LIFETIME)
            except BaseException as e:  # noqa: B902
                self.error = e
            finally:
                try:
                    self.loop.run_until_complete(asyncio.sleep(0.05))  # let cancellations settle
                    self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                finally:
                    self.loop.close()
                    self.done.set()

        threading.Thread(target=run, daemon=True).start()

    def ended_msg(self):
        return "client psub %s on %r ended: %s" % (
            self.name, self.key, show_exc(self.error) if self.error else "returned")

    def next(self, timeout=MSG_TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise Failure("client psub %s on %r: no message within %.1f s%s" % (
                self.name, self.key, timeout, "; " + self.ended_msg() if self.done.is_set() else ""))

    def drain(self):
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def stop(self, t):
        """Cancels the psub; notes a failure unless it ends with CancelledError in time."""
        if self.done.is_set():
            t.fail("before stop: " + self.ended_msg())
            return False

        def cancel():
            tasks = [x for x in asyncio.all_tasks(self.loop)
                     if getattr(x.get_coro(), "__qualname__", "") == "wait_for"]
            for task in tasks or asyncio.all_tasks(self.loop):
                task.cancel()

        try:
            self.loop.call_soon_threadsafe(cancel)
        except RuntimeError:  # loop closed meanwhile
            pass
        if not self.done.wait(PSUB_STOP_TIMEOUT):
            t.fail("client psub %s on %r still running %.0f s after its task was cancelled"
                   % (self.name, self.key, PSUB_STOP_TIMEOUT))
            return False
        if not isinstance(self.error, asyncio.CancelledError):
            t.fail("client psub %s on %r: cancelled, but it ended with %s"
                   % (self.name, self.key, show_exc(self.error) if self.error else "no error"))
            return False
        return True


def run_prep(client, key, data, token=None, psub=False):
    """client.prep(key, func=data, ...) on a fresh event loop; returns the (data, reply) pairs
    its callback saw (receipt mode only; the client reads no replies otherwise)."""
    replies = []
    loop = asyncio.new_event_loop()
    try:
        client.prep(key, token=token, psub=psub, func=list(data), timeout=PREP_TIMEOUT,
                    loop=loop, callback=lambda sent, reply: replies.append((sent, reply)))
    finally:
        try:
            loop.run_until_complete(asyncio.sleep(0.05))
        finally:
            loop.close()
    return replies


# ---------------------------------------------------------------------------------------------
# the tests

class Suite:
    def __init__(self, srv, client):
        self.srv = srv
        self.client = client
        self.http = session()

    # -- probes and plain HTTP

    def keys(self):
        return get_keys(self.http, self.srv, REP_TIMEOUT, describe=show_resp)

    def members(self):
        """esub_sub_waiting from /metrics: waiting subs plus psub members."""
        r = self.http.get(self.srv.base + "/metrics", timeout=REP_TIMEOUT)
        m = re.search(r"^esub_sub_waiting(?:\{\})? (\S+)$", r.text, re.M)
        if r.status_code != 200 or not m:
            raise Failure("esub_sub_waiting not found in GET /metrics: %s" % show_resp(r))
        return float(m.group(1))

    def wait_until(self, t, what, pred, timeout=JOIN_TIMEOUT, psub=None):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if psub is not None and psub.done.is_set():
                t.fail("while waiting for %s: %s" % (what, psub.ended_msg()))
                return False
            try:
                ok, last = pred()
                if ok:
                    return True
            except Exception as e:  # noqa: BLE001
                last = show_exc(e)
            time.sleep(0.02)
        t.fail("%s not seen within %.0f s (last: %r)" % (what, timeout, last))
        return False

    def wait_listed(self, t, key, psub=None):
        return self.wait_until(t, "key %r in GET /keys" % key,
                               lambda: (key in self.keys(), self.keys()), psub=psub)

    def wait_gone(self, t, key, timeout=3.0):
        return self.wait_until(t, "key %r gone from GET /keys" % key,
                               lambda: (key not in self.keys(), self.keys()), timeout=timeout)

    def wait_members(self, t, n, psub=None):
        return self.wait_until(t, "esub_sub_waiting >= %d" % n,
                               lambda: (self.members() >= n, self.members()), psub=psub)

    def join(self, t, key, token=None, shared=False, name="psub", sink=None):
        """A client psub, waited for: the key listed and one more member in /metrics."""
        before = self.members()
        p = ClientPsub(self.client, key, token=token, shared=shared, name=name, sink=sink)
        self.wait_listed(t, key, p)
        self.wait_members(t, before + 1, p)
        return p

    def post(self, key, body, token=None, psub=False):
        params = {}
        if token:
            params["token"] = token
        if psub:
            params["psub"] = "1"
        return self.http.post(self.srv.base + "/rep/" + key, params=params, data=body,
                              timeout=REP_TIMEOUT)

    def client_rep(self, t, key, body, token=None, what="client rep"):
        """client.rep(key, body, psub=True): True when it returned (i.e. got a 2xx)."""
        try:
            self.client.rep(key, body, token=token, psub=True, timeout=REP_TIMEOUT)
            return True
        except Exception as e:  # noqa: BLE001
            t.fail("%s: client.rep(%r, %s, psub=True) raised %s" % (what, key, show(body),
                                                                    show_exc(e)))
            return False

    def http_rep(self, t, key, body, token=None, psub=False, what="requests rep"):
        try:
            r = self.post(key, body, token=token, psub=psub)
        except Exception as e:  # noqa: BLE001
            t.fail("%s: POST /rep/%s raised %s" % (what, key, show_exc(e)))
            return False
        return t.check(r.status_code == 200 and r.content == b"OK",
                       "%s: expected 200 OK, got %s" % (what, show_resp(r)))

    def ws(self, path, ping_interval=0.5, **kw):
        """A raw websocket (websockets' sync client). ping_interval keeps it alive in keepalive
        mode (any frame from a member proves it alive)."""
        return ws_connect(self.srv.ws_base + path, proxy=None, open_timeout=5, close_timeout=2,
                          ping_interval=ping_interval, max_size=None, **kw)

    def expect_received(self, t, psub, want, what):
        """The psub's callback gets exactly `want`: str for a TEXT frame, bytes for BINARY."""
        try:
            got = psub.next()
        except Failure as e:
            t.fail("%s: %s" % (what, e))
            return False
        return t.check(type(got) is type(want) and got == want,
                       "%s: callback got %s %s, expected %s %s" % (
                           what, type(got).__name__, show(got), type(want).__name__, show(want)))

    def expect_close(self, t, ws, what, code=None, reason=None, timeout=MSG_TIMEOUT,
                     allow_frames=0):
        """Reads until the server closes ws; checks the close code (and reason)."""
        frames = []
        try:
            while True:
                frames.append(ws.recv(timeout=timeout))
        except TimeoutError:
            t.fail("%s: socket still open after %.1f s (frames %s)" % (
                what, timeout, [show(f) for f in frames]))
            return None
        except ConnectionClosed as e:
            t.check(len(frames) <= allow_frames, "%s: unexpected frames before the close: %s"
                    % (what, [show(f) for f in frames]))
            if code is not None:
                t.check(e.rcvd is not None and e.rcvd.code == code and
                        (reason is None or e.rcvd.reason == reason),
                        "%s: expected close %d %r, got %s" % (what, code, reason, show_exc(e)))
            return e

    # == keepalive mode ===================================================================

    def k_client_psub_bodies(self, t):
        """client psub: text and binary bodies from client.rep(psub=True) and requests."""
        key = new_key("k-bodies")
        p = self.join(t, key)
        text = "client text body ✓"
        binary = bytes(range(0x80, 0x100))
        if self.client_rep(t, key, text.encode("utf-8"), what="client.rep UTF-8"):
            self.expect_received(t, p, text, "client.rep UTF-8 body")
        if self.client_rep(t, key, binary, what="client.rep bytes 0x80-0xff"):
            self.expect_received(t, p, binary, "client.rep bytes 0x80-0xff")
        body = "grüße über requests"
        if self.http_rep(t, key, body.encode("utf-8"), what="POST /rep UTF-8"):
            self.expect_received(t, p, body, "POST /rep UTF-8 body")
        body = b"\x00\x01bin\xfe\xff" + os.urandom(2000)
        if self.http_rep(t, key, body, what="POST /rep binary"):
            self.expect_received(t, p, body, "POST /rep binary body")
        if self.http_rep(t, key, b"", psub=True, what="POST /rep?psub=1 empty body"):
            self.expect_received(t, p, "", "empty body (valid UTF-8: a TEXT frame)")
        big = os.urandom(256 * 1024)
        if self.http_rep(t, key, big, what="POST /rep 256 KiB"):
            self.expect_received(t, p, big, "256 KiB binary body")
        extra = p.drain()
        t.check(not extra, "extra messages: %s" % [show(m) for m in extra])
        if p.stop(t):
            self.wait_gone(t, key)
            r = self.post(key, b"after stop")
            t.check(r.status_code == 404, "rep after the psub stopped: %s" % show_resp(r))

    def k_client_psub_token(self, t):
        key = new_key("k-token")
        token = "tk-" + uuid.uuid4().hex[:8]
        p = self.join(t, key, token=token)
        for tok, what in ((None, "no token"), (token + "x", "wrong token")):
            try:
                self.client.rep(key, b"x", token=tok, psub=True, timeout=REP_TIMEOUT)
                t.fail("client.rep with %s to a token psub succeeded" % what)
            except requests.HTTPError as e:
                t.check(e.response.status_code == 403 and e.response.text == "Invalid token",
                        "client.rep with %s: expected 403 'Invalid token', got %s"
                        % (what, show_exc(e)))
            except Exception as e:  # noqa: BLE001
                t.fail("client.rep with %s: %s" % (what, show_exc(e)))
        if self.client_rep(t, key, b"tokened \xff", token=token, what="client.rep with token"):
            self.expect_received(t, p, b"tokened \xff", "tokened rep")
        extra = p.drain()
        t.check(not extra, "extra messages (rejected reps delivered?): %s" % [show(m) for m in extra])
        p.stop(t)

    def k_client_psub_shared(self, t):
        self.shared_round_robin(t, "k-shared", receipt=False)

    def shared_round_robin(self, t, prefix, receipt):
        """Two client psubs with shared=True on one key: reps alternate between them."""
        key = new_key(prefix)
        sink = queue.Queue()
        a = self.join(t, key, shared=True, name="A", sink=sink)
        b = self.join(t, key, shared=True, name="B", sink=sink)
        order = []
        n = 6
        for i in range(n):
            body = ("shared %d ✓" % i).encode("utf-8") if i % 2 else b"shared \xff %d" % i
            want = body.decode("utf-8") if i % 2 else body
            ok = (self.client_rep(t, key, body, what="rep %d" % i) if i % 3 == 0
                  else self.http_rep(t, key, body, what="rep %d" % i))
            if not ok:
                continue
            try:
                who, got = sink.get_nowait() if receipt else sink.get(timeout=MSG_TIMEOUT)
            except queue.Empty:
                t.fail("rep %d answered 200 but no member's callback %s" % (
                    i, "had seen it yet (receipt mode)" if receipt
                    else "got it within %.0f s" % MSG_TIMEOUT))
                continue
            t.check(type(got) is type(want) and got == want,
                    "rep %d: member %s got %s, expected %s" % (i, who, show(got), show(want)))
            order.append(who)
        t.check(len(order) == n and all(order[i] != order[i + 1] for i in range(n - 1)),
                "reps did not alternate between the two shared members: %s" % order)
        time.sleep(0.1)
        t.check(sink.empty(), "extra messages: %s" % list(sink.queue))
        a.stop(t)
        self.wait_until(t, "key still listed with one member left",
                        lambda: (key in self.keys(), self.keys()), psub=b)
        if self.http_rep(t, key, b"to the last member", what="rep after A left"):
            b.drain()
        b.stop(t)
        self.wait_gone(t, key)

    def k_client_pongs_keep_member(self, t):
        """With ESUB_PING_FREQUENCY=2 the server pings a member silent for 1 s and closes it after
        2 s of silence. The client's unsolicited pongs (every 0.9 s) must not disturb its psub
        across several such periods, while a member that never answers (a raw socket that
        ignores the pings) is closed with 1001 `keepalive timeout`."""
        key_p = new_key("k-pong")
        key_s = new_key("k-silent")
        # The client psub goes through a relay that sees its frames; a client module instance
        # configured for the relay's port.
        relay = Relay(self.srv)
        try:
            self._pongs(t, key_p, key_s, relay, load_client(self.srv, False, port=relay.port))
        finally:
            relay.close()

    def _pongs(self, t, key_p, key_s, relay, client):
        before = self.members()
        p = ClientPsub(client, key_p, name="relayed")
        self.wait_listed(t, key_p, p)
        self.wait_members(t, before + 1, p)
        start = time.monotonic()
        try:
            silent = RawWs(self.srv, "/psub/" + key_s)
        except Exception as e:  # noqa: BLE001
            t.fail("raw silent psub: %s" % show_exc(e))
            p.stop(t)
            return
        try:
            self.wait_listed(t, key_s)
            try:
                frames = silent.until_close(timeout=3 * SERVER_PING_FREQUENCY + 1)
                took = time.monotonic() - start
                ops = [op for op, _ in frames]
                t.check(ops and ops[-1] == 0x8, "silent member: frames %r" % frames)
                if ops and ops[-1] == 0x8:
                    payload = frames[-1][1]
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    reason = payload[2:].decode("utf-8", "replace")
                    t.check((code, reason) == (1001, "keepalive timeout"),
                            "silent member closed with %r %r, expected 1001 'keepalive timeout'"
                            % (code, reason))
                    t.check(took >= SERVER_PING_FREQUENCY * 0.9,
                            "silent member closed after %.2f s, before it was silent for %d s"
                            % (took, SERVER_PING_FREQUENCY))
                t.check(0x9 in ops, "silent member was closed without a ping first: %r" % frames)
            except Failure as e:
                t.fail("silent member: %s" % e)
        finally:
            silent.close()
        self.wait_gone(t, key_s)
        r = self.post(key_s, b"to nobody")
        t.check(r.status_code == 404, "rep to the closed silent member: %s" % show_resp(r))
        # Idle for more than two silence limits: the client psub is still there.
        deadline = start + 2.5 * SERVER_PING_FREQUENCY + 0.5
        while time.monotonic() < deadline and not p.done.is_set():
            time.sleep(0.05)
        if not t.check(not p.done.is_set(), "after %.1f s idle: %s"
                       % (time.monotonic() - start, p.ended_msg())):
            return
        t.check(key_p in self.keys(), "client psub's key no longer listed after %.1f s idle"
                % (time.monotonic() - start))
        if self.http_rep(t, key_p, b"still here \xff", what="rep after the idle period"):
            self.expect_received(t, p, b"still here \xff", "rep after the idle period")
        pongs = relay.opcodes.count(0xA)
        t.check(pongs >= 3, "the client sent %d pong frames in %.1f s (expected one every %.1f s;"
                " client frames %r, relay error %s)" % (
                    pongs, time.monotonic() - start, CLIENT_PING_FREQUENCY * 0.9, relay.opcodes,
                    relay.error))
        if p.stop(t):
            self.wait_gone(t, key_p)

    def k_client_prep_to_psub(self, t):
        key = new_key("k-prep-psub")
        p = self.join(t, key)
        data = ["one", "two ✓", "three"]
        try:
            replies = run_prep(self.client, key, data)
            t.check(replies == [], "the client read replies in keepalive mode: %r" % replies)
        except Exception as e:  # noqa: BLE001
            t.fail("client.prep(%r, func=%r) raised %s" % (key, data, show_exc(e)))
        for d in data:
            self.expect_received(t, p, d, "prep %r" % d)
        # psub=True: only the pool.
        try:
            run_prep(self.client, key, ["pooled"], psub=True)
            self.expect_received(t, p, "pooled", "prep psub=True")
        except Exception as e:  # noqa: BLE001
            t.fail("client.prep(psub=True) raised %s" % show_exc(e))
        p.stop(t)

    def k_client_prep_to_sub(self, t):
        self.prep_to_sub(t, receipt=False)

    def prep_to_sub(self, t, receipt):
        """client.prep to a plain GET /sub waiting in a thread."""
        key = new_key("prep-sub")
        sub = Bg(self.http.get, self.srv.base + "/sub/" + key, timeout=REP_TIMEOUT + 5)
        self.wait_listed(t, key)
        try:
            replies = run_prep(self.client, key, ["to a sub ✓"])
            want = [("to a sub ✓", "ok")] if receipt else []
            t.check(replies == want, "prep replies %r, expected %r" % (replies, want))
        except Exception as e:  # noqa: BLE001
            t.fail("client.prep raised %s" % show_exc(e))
        try:
            r = sub.wait(MSG_TIMEOUT)
            t.check(r.status_code == 200 and r.content == "to a sub ✓".encode("utf-8"),
                    "sub: %s" % show_resp(r))
        except Exception as e:  # noqa: BLE001
            t.fail("sub: %s" % show_exc(e))

    # -- the websockets library directly

    def k_ws_psub_frames(self, t):
        """Raw /psub?shared=1: a TEXT frame for a UTF-8 body, BINARY for bytes 0x80-0xff."""
        key = new_key("k-raw")
        with self.ws("/psub/%s?shared=1" % key) as ws:
            self.wait_listed(t, key)
            cases = [("UTF-8", "grüße ✓ — text".encode("utf-8"), "grüße ✓ — text"),
                     ("ASCII", b"plain ascii", "plain ascii"),
                     ("0x80-0xff", bytes(range(0x80, 0x100)), bytes(range(0x80, 0x100))),
                     ("invalid UTF-8 after valid", "ok ✓".encode() + b"\xc3", "ok ✓".encode() + b"\xc3")]
            for what, body, want in cases:
                if not self.http_rep(t, key, body, what="rep %s" % what):
                    continue
                try:
                    got = ws.recv(timeout=MSG_TIMEOUT)
                except Exception as e:  # noqa: BLE001
                    t.fail("%s: recv: %s" % (what, show_exc(e)))
                    continue
                t.check(type(got) is type(want) and got == want,
                        "%s: got a %s frame %s, expected a %s frame %s" % (
                            what, "TEXT" if isinstance(got, str) else "BINARY", show(got),
                            "TEXT" if isinstance(want, str) else "BINARY", show(want)))
        self.wait_gone(t, key)

    def k_ws_prep_confirm(self, t):
        self.ws_prep(t)

    def ws_prep(self, t):
        """Raw /prep?confirm=1: `ok`, `Unknown key`, `Invalid token`, then 1007 for bad frames."""
        key = new_key("raw-prep")
        tkey = new_key("raw-prep-tok")
        with self.ws("/psub/%s?shared=1" % key) as member, \
                self.ws("/psub/%s?token=sekret" % tkey) as tmember:
            self.wait_listed(t, key)
            self.wait_listed(t, tkey)
            # In receipt mode the members must confirm: answer in background threads.
            stop = threading.Event()
            got = {key: queue.Queue(), tkey: queue.Queue()}

            def answer(ws, k):
                while not stop.is_set():
                    try:
                        m = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    except ConnectionClosed:
                        return
                    got[k].put(m)
                    ws.send("ok")

            threads = [threading.Thread(target=answer, args=(member, key), daemon=True),
                       threading.Thread(target=answer, args=(tmember, tkey), daemon=True)]
            for th in threads:
                th.start()
            try:
                with self.ws("/prep?confirm=1") as prep:
                    steps = [({"key": key, "token": None, "data": "x"}, "ok", key, "x"),
                             ({"key": key, "token": "", "psub": True, "data": "y ✓"}, "ok", key, "y ✓"),
                             ({"key": new_key("nobody"), "token": None, "data": "z"},
                              "Unknown key", None, None),
                             ({"key": tkey, "token": "wrong", "data": "w"}, "Invalid token",
                              None, None),
                             ({"key": tkey, "token": "sekret", "data": "\u00ff"}, "ok", tkey, "\u00ff")]
                    for msg, want, k, body in steps:
                        prep.send(json.dumps(msg))
                        try:
                            reply = prep.recv(timeout=REP_TIMEOUT)
                        except Exception as e:  # noqa: BLE001
                            t.fail("sent %s: no reply: %s" % (json.dumps(msg), show_exc(e)))
                            return
                        t.check(reply == want, "sent %s: reply %r, expected %r"
                                % (json.dumps(msg), reply, want))
                        if k is not None:
                            try:
                                m = got[k].get(timeout=MSG_TIMEOUT)
                                t.check(m == body, "member got %s, expected %s" % (show(m), show(body)))
                            except queue.Empty:
                                t.fail("sent %s: member got nothing" % json.dumps(msg))
                    prep.send("{not json")
                    self.expect_close(t, prep, "invalid JSON on /prep", code=1007)
            finally:
                stop.set()
                for th in threads:
                    th.join(2)
            for k in (key, tkey):
                t.check(got[k].empty(), "extra messages to %r: %s" % (k, list(got[k].queue)))
        bad = [("BINARY frame", b'{"key": "k", "token": null, "data": "x"}'),
               ("missing key", json.dumps({"token": None, "data": "x"})),
               ("non-string data", json.dumps({"key": key, "token": None, "data": 5})),
               ("JSON array", json.dumps([key, None, False, "x"]))]
        for what, frame in bad:
            try:
                with self.ws("/prep?confirm=1") as prep:
                    prep.send(frame)
                    self.expect_close(t, prep, what, code=1007)
            except Exception as e:  # noqa: BLE001
                t.fail("%s: %s" % (what, show_exc(e)))

    def k_ws_pool_rules(self, t):
        """400 without upgrade; 403 on a token or shared-flag mismatch; exclusive takeover."""
        key = new_key("k-pool")
        r = self.http.get(self.srv.base + "/psub/" + key, timeout=REP_TIMEOUT)
        t.check(r.status_code == 400, "GET /psub without upgrade headers: %s" % show_resp(r))
        with self.ws("/psub/%s?token=t1" % key) as first:
            self.wait_listed(t, key)
            for path, what in (("/psub/%s?token=t1&shared=1" % key, "shared join to an exclusive pool"),
                               ("/psub/%s?token=t2" % key, "join with another token"),
                               ("/psub/%s" % key, "join without the token")):
                try:
                    with self.ws(path):
                        t.fail("%s: upgraded, expected 403" % what)
                except InvalidStatus as e:
                    t.check(e.response.status_code == 403, "%s: %s" % (what, show_exc(e)))
                except Exception as e:  # noqa: BLE001
                    t.fail("%s: expected 403, got %s" % (what, show_exc(e)))
            with self.ws("/psub/%s?token=t1" % key) as second:
                self.expect_close(t, first, "displaced exclusive member", code=1001,
                                  reason="taken over")
                if self.http_rep(t, key, b"to the second", token="t1", what="rep after takeover"):
                    try:
                        m = second.recv(timeout=MSG_TIMEOUT)
                        t.check(m == "to the second", "new member got %s" % show(m))
                    except Exception as e:  # noqa: BLE001
                        t.fail("new member: %s" % show_exc(e))
        self.wait_gone(t, key)

    # == receipt mode =====================================================================

    def r_client_psub_receipt(self, t):
        """The client answers `ok`; each rep's 200 comes after it (the callback already ran)."""
        key = new_key("r-bodies")
        p = self.join(t, key)
        cases = [("client.rep UTF-8", True, "receipt text ✓".encode("utf-8"), "receipt text ✓"),
                 ("client.rep bytes 0x80-0xff", True, bytes(range(0x80, 0x100)),
                  bytes(range(0x80, 0x100))),
                 ("POST /rep UTF-8", False, "über".encode("utf-8"), "über"),
                 ("POST /rep binary", False, b"\xff\x00" * 500, b"\xff\x00" * 500)]
        for what, via_client, body, want in cases:
            ok = (self.client_rep(t, key, body, what=what) if via_client
                  else self.http_rep(t, key, body, what=what))
            if not ok:
                continue
            try:
                got = p.messages.get_nowait()
            except queue.Empty:
                t.fail("%s: the rep got 200 before the client's callback had the message" % what)
                continue
            t.check(type(got) is type(want) and got == want, "%s: callback got %s, expected %s"
                    % (what, show(got), show(want)))
        extra = p.drain()
        t.check(not extra, "extra messages: %s" % [show(m) for m in extra])
        if p.stop(t):
            self.wait_gone(t, key)

    def r_client_psub_shared(self, t):
        self.shared_round_robin(t, "r-shared", receipt=True)

    def r_receipt_waits(self, t):
        """A raw member that confirms 0.6 s late: the rep waits for it."""
        key = new_key("r-late")
        with self.ws("/psub/" + key, ping_interval=None) as ws:
            self.wait_listed(t, key)

            def late_ok():
                m = ws.recv(timeout=REP_TIMEOUT)
                time.sleep(0.6)
                ws.send("ok")
                return m

            member = Bg(late_ok)
            start = time.monotonic()
            ok = self.http_rep(t, key, b"late \xff", what="rep to a late confirmer")
            took = time.monotonic() - start
            if ok:
                t.check(took >= 0.55, "rep answered after %.2f s, before the receipt (sent 0.6 s "
                        "after the frame)" % took)
            try:
                m = member.wait(MSG_TIMEOUT)
                t.check(m == b"late \xff", "member got %s" % show(m))
            except Exception as e:  # noqa: BLE001
                t.fail("member: %s" % show_exc(e))

    def r_no_receipt(self, t):
        """No receipt within ESUB_CONFIRM_TIMEOUT_MS: the member is closed, the rep gets 404
        `No listeners remain`."""
        key = new_key("r-silent")
        with self.ws("/psub/" + key, ping_interval=None) as ws:
            self.wait_listed(t, key)
            start = time.monotonic()
            r = self.post(key, b"never confirmed")
            took = time.monotonic() - start
            t.check(r.status_code == 404 and r.content == b"No listeners remain",
                    "rep to a member that never confirms: %s" % show_resp(r))
            t.check(CONFIRM_TIMEOUT_MS / 1000 * 0.9 <= took <= CONFIRM_TIMEOUT_MS / 1000 + 3,
                    "rep answered after %.2f s (ESUB_CONFIRM_TIMEOUT_MS=%d)" % (took, CONFIRM_TIMEOUT_MS))
            self.expect_close(t, ws, "unconfirming member", allow_frames=1)
        self.wait_gone(t, key)

    def r_no_receipt_shared(self, t):
        """Shared pool of a silent raw member and a client psub: a rep that went to the silent
        one moves on to the client after the receipt timeout; both reps get 200."""
        key = new_key("r-silent-shared")
        with self.ws("/psub/%s?shared=1" % key, ping_interval=None) as ws:
            self.wait_listed(t, key)
            p = self.join(t, key, shared=True)
            start = time.monotonic()
            for i in range(2):
                self.http_rep(t, key, b"shared %d \xff" % i, what="rep %d" % i)
            took = time.monotonic() - start
            t.check(took >= CONFIRM_TIMEOUT_MS / 1000 * 0.9,
                    "both reps answered in %.2f s: neither waited for the silent member" % took)
            got = p.drain()
            t.check(got == [b"shared 0 \xff", b"shared 1 \xff"],
                    "client psub got %s" % [show(m) for m in got])
            self.expect_close(t, ws, "unconfirming shared member", allow_frames=1)
            p.stop(t)
        self.wait_gone(t, key)

    def r_client_prep(self, t):
        """The client prep reads one reply per frame: `ok`, `Unknown key`, `Invalid token`."""
        key = new_key("r-prep")
        p = self.join(t, key)
        data = ["p1", "p2 ✓", "p3"]
        try:
            replies = run_prep(self.client, key, data)
            t.check(replies == [(d, "ok") for d in data], "prep replies %r" % replies)
        except Exception as e:  # noqa: BLE001
            t.fail("client.prep(%r, func=%r) raised %s" % (key, data, show_exc(e)))
        got = p.drain()
        t.check(got == data, "psub got %s, expected %s" % (got, data))
        p.stop(t)

        nobody = new_key("r-nobody")
        try:
            replies = run_prep(self.client, nobody, ["lost"])
            t.check(replies == [("lost", "Unknown key")],
                    "prep to an unknown key: replies %r, expected [('lost', 'Unknown key')]"
                    % replies)
        except Exception as e:  # noqa: BLE001
            t.fail("client.prep to an unknown key raised %s" % show_exc(e))

        tkey = new_key("r-prep-tok")
        p = self.join(t, tkey, token="good")
        try:
            replies = run_prep(self.client, tkey, ["bad", "good"], token="bad")
            t.check(replies == [("bad", "Invalid token"), ("good", "Invalid token")],
                    "prep with a wrong token: replies %r" % replies)
            replies = run_prep(self.client, tkey, ["fine"], token="good", psub=True)
            t.check(replies == [("fine", "ok")], "prep with the token: replies %r" % replies)
        except Exception as e:  # noqa: BLE001
            t.fail("client.prep with tokens raised %s" % show_exc(e))
        got = p.drain()
        t.check(got == ["fine"], "token psub got %s, expected ['fine']" % got)
        p.stop(t)

    def r_client_prep_to_sub(self, t):
        self.prep_to_sub(t, receipt=True)

    def r_ws_prep_confirm(self, t):
        self.ws_prep(t)

    # -- shutdown (last)

    def test_sigterm(self, t):
        """SIGTERM with a client psub and a raw psub connected: both closed (1001), exit 0."""
        key_c = new_key("term-client")
        key_r = new_key("term-raw")
        p = self.join(t, key_c)
        raw = None
        try:
            raw = self.ws("/psub/" + key_r)
            self.wait_listed(t, key_r)
        except Exception as e:  # noqa: BLE001
            t.fail("raw psub: %s" % show_exc(e))
        os.kill(self.srv.proc.pid, signal.SIGTERM)
        if raw is not None:
            self.expect_close(t, raw, "raw psub at SIGTERM", code=1001, timeout=STOP_TIMEOUT)
            raw.close()
        if p.done.wait(STOP_TIMEOUT):
            t.check(isinstance(p.error, ConnectionClosed) and p.error.rcvd is not None
                    and p.error.rcvd.code == 1001,
                    "client psub at SIGTERM ended with %s, expected a close 1001"
                    % (show_exc(p.error) if p.error else "no error"))
        else:
            t.fail("client psub still running %.0f s after SIGTERM" % STOP_TIMEOUT)
            p.stop(t)
        self.srv.expect_exit(t, STOP_TIMEOUT, "exit code %r after SIGTERM")


MODES = [
    ("keepalive", dict(ESUB_PING_FREQUENCY=str(SERVER_PING_FREQUENCY)), False, "k_"),
    ("receipt", dict(ESUB_CONFIRM_RECEIPT="1", ESUB_CONFIRM_TIMEOUT_MS=str(CONFIRM_TIMEOUT_MS)),
     True, "r_"),
]


def run_mode(binary, mode, env, confirm, prefix):
    results = []
    srv = Server(binary, prefix="esub-wstest-%s-" % mode, env=env)
    try:
        try:
            srv.start()
            client = load_client(srv, confirm)
        except (Failure, OSError) as e:
            t = Test("%s: server starts, client loads" % mode)
            t.fail(str(e))
            print_result(t)
            return [t], srv
        suite = Suite(srv, client)
        for name in test_names(Suite, prefix) + ["test_sigterm"]:
            t = Test("%s: %s" % (mode, name[len(prefix):] if name.startswith(prefix) else "sigterm"))
            run_test(t, srv, getattr(suite, name), os.path.abspath(__file__), describe=show_exc)
            results.append(t)
            print_result(t)
    finally:
        srv.kill()
    return results, srv


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else default_binary()
    results = []
    servers = []
    for mode, env, confirm, prefix in MODES:
        r, srv = run_mode(binary, mode, env, confirm, prefix)
        results.extend(r)
        servers.append((mode, srv, any(t.problems for t in r)))
    for mode, srv, bad in servers:
        if bad:
            print_stderr(srv, ", %s mode" % mode)
        else:
            shutil.rmtree(srv.workdir, ignore_errors=True)
    return summary(results)


if __name__ == "__main__":
    sys.exit(main())
