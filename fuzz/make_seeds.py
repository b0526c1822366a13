#!/usr/bin/env python3
"""Writes the hand-written seeds of the ws_frames, ws_handshake, connection, statsd,
store_record, topic_segment, topic_batch, topic_acks, apps_file and nats_proto targets into fuzz/seeds/<target>/ (the older targets' seeds were written by hand).
Run it again after changing an input format: `python3 fuzz/make_seeds.py`. Files it does not
write (regression seeds) are left alone."""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# --- websocket frames --------------------------------------------------------------------------


def client_frame(first, payload, mask=b"\x01\x02\x03\x04", length=None):
    """A masked client frame; `first` is FIN/RSV/opcode."""
    n = len(payload) if length is None else length
    out = bytearray([first])
    if n < 126:
        out.append(0x80 | n)
    elif n < 65536:
        out.append(0x80 | 126)
        out += struct.pack(">H", n)
    else:
        out.append(0x80 | 127)
        out += struct.pack(">Q", n)
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def text(s, fin=True):
    return client_frame((0x80 if fin else 0) | 1, s.encode() if isinstance(s, str) else s)


def binary(b, fin=True):
    return client_frame((0x80 if fin else 0) | 2, b)


def cont(b, fin=True):
    return client_frame((0x80 if fin else 0) | 0, b)


def ping(b=b""):
    return client_frame(0x89, b)


def pong(b=b""):
    return client_frame(0x8A, b)


def close(code=None, reason=b""):
    return client_frame(0x88, b"" if code is None else struct.pack(">H", code) + reason)


def ws_frames():
    # [max_sel, init, seed, max_step, stream...]; max = 8 * max_sel.
    rows = {
        "messages": (16, 0, 1, 7, text("hello") + binary(b"\xff\x00") + ping(b"p") + pong() + close(1000, b"bye")),
        "fragments": (16, 5, 2, 3, text("he", False) + ping(b"x") + cont(b"ll", False) + cont(b"o") + close()),
        "binary_fragments": (32, 1, 3, 2, binary(b"\x00\x01", False) + cont(b"\x02") + close(4000)),
        "too_big": (2, 0, 4, 5, binary(b"a" * 17)),
        "too_big_fragments": (8, 0, 5, 9, text("a" * 40, False) + cont(b"b" * 40)),
        "len16": (40, 0, 6, 50, binary(bytes(range(256)) + bytes(44))),
        "len64": (255, 0, 7, 200, client_frame(0x82, b"", length=70000)),
        "unmasked": (16, 0, 8, 3, b"\x81\x02hi"),
        "rsv": (16, 0, 9, 3, client_frame(0xC1, b"x")),
        "reserved_opcode": (16, 0, 10, 3, client_frame(0x83, b"x") + client_frame(0x8B, b"")),
        "bad_close": (16, 0, 11, 3, close(1005)),
        "close_one_byte": (16, 0, 12, 3, client_frame(0x88, b"\x03")),
        "close_bad_utf8": (16, 0, 13, 3, close(1000, b"\xff")),
        "bad_utf8": (16, 0, 14, 3, text(b"\xc3\x28")),
        "split_utf8": (16, 0, 15, 1, text(b"\xc3", False) + cont(b"\xa9")),
        "continuation_alone": (16, 0, 16, 3, cont(b"x")),
        "nested_message": (16, 0, 17, 3, text("a", False) + text("b")),
        "fragmented_ping": (16, 0, 18, 3, client_frame(0x09, b"x")),
        "long_ping": (32, 0, 19, 3, ping(b"p" * 126)),
        # A control frame inside a fragmented message is counted against the message's limit.
        "control_in_fragment_near_limit": (13, 0, 20, 4, text("a" * 60, False) + ping(b"p" * 50) + cont(b"b")),
        "zero_mask": (16, 0, 21, 2, client_frame(0x81, b"abc", mask=b"\0\0\0\0")),
        "tiny_buffer": (1, 3, 22, 1, text("") + ping() + binary(b"\x80") + close()),
        "max_zero": (0, 1, 23, 1, text("") + binary(b"") + ping(b"") + close(1000)),
    }
    for name, (m, init, seed, step, stream) in rows.items():
        write("ws_frames", name, bytes([m, init, seed, step]) + stream)


# --- handshake ---------------------------------------------------------------------------------


def ws_handshake():
    rfc_key = b"dGhlIHNhbXBsZSBub25jZQ=="
    # flags: 1 websocket, 2 connection, 4 version, 8 key; bits 4-5 key mode; bits 6-7 version.
    rows = {
        "rfc_example": (0x0F, b"13", rfc_key),
        "raw16_encoded": (0x0F | 0x20, b"13", bytes(range(16))),
        "raw15_encoded": (0x0F | 0x20, b"13", bytes(range(15))),
        "padded_key": (0x0F | 0x30, b"13", bytes(range(16))),
        "version_spaces": (0x0F | 0x80, b"", rfc_key),
        "version_8": (0x0F | 0xC0, b"", rfc_key),
        "no_websocket": (0x0E, b"13", rfc_key),
        "no_connection": (0x0D, b"13", rfc_key),
        "no_key": (0x07, b"13", b""),
        "no_version": (0x0B, b"", rfc_key),
        "unpadded": (0x0F, b"13", rfc_key.rstrip(b"=")),
        "trailing_bits": (0x0F, b"13", b"dGhlIHNhbXBsZSBub25jZR=="),
        "url_safe": (0x0F, b"13", b"dGhlIHNhbXBsZSBub25jZ-_"),
        "tab_key": (0x0F, b"\t13 ", b" \t" + rfc_key + b"\r\n"),
    }
    for name, (flags, version, key) in rows.items():
        write("ws_handshake", name, bytes([flags, len(version)]) + version + key)


# --- connection --------------------------------------------------------------------------------


class Conn:
    """Builds a `connection` input: [flags, op...]."""

    def __init__(self, flags=0):
        self.out = bytearray([flags])

    def op(self, slot, kind, *args):
        self.out.append((slot << 4) | kind)
        self.out += bytes(args)
        return self

    def send(self, slot, data, event=True):
        data = data.encode() if isinstance(data, str) else data
        while data:
            piece, data = data[:8192], data[8192:]
            n = len(piece) - 1
            self.out.append((slot << 4) | (0 if event else 7))
            if n < 0xE0:
                self.out.append(n)
            else:
                self.out += bytes([0xE0 + n // 256, n % 256])
            self.out += piece
        return self

    def eof(self, slot):
        return self.op(slot, 8)

    def writes(self, slot, mode):
        return self.op(slot, 9, mode)

    def time(self, step):
        return self.op(0, 10, step)

    def open(self, slot):
        return self.op(slot, 11)

    def reset(self, slot):
        return self.op(slot | 8, 12)

    def drain(self):
        return self.op(15, 13)

    def flush(self, slot):
        return self.op(slot, 14)

    def bytes(self):
        return bytes(self.out)


KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(path):
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )


def rep(key, body, query=""):
    body = body.encode() if isinstance(body, str) else body
    return f"POST /rep/{key}{query} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def connection():
    rows = {}
    rows["pipelined"] = Conn().send(
        0,
        "GET /ping HTTP/1.1\r\n\r\nGET /info HTTP/1.1\r\n\r\nGET /keys HTTP/1.1\r\n\r\n"
        "GET /metrics HTTP/1.1\r\n\r\nPUT /ping HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
    )
    rows["sub_rep"] = (
        Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\n").open(1).send(1, rep("k", "hello")).send(0, "GET /ping HTTP/1.1\r\n\r\n")
    )
    rows["sub_rep_token"] = (
        Conn()
        .send(0, "GET /sub/k?token=t HTTP/1.1\r\n\r\n")
        .open(1)
        .send(1, rep("k", "x", "?token=bad"))
        .send(1, rep("k", b"\xff\xfe", "?token=t"))
    )
    rows["sub_takeover"] = Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\n").open(1).send(1, "GET /sub/k HTTP/1.1\r\n\r\n").open(2).send(2, rep("k", "b"))
    rows["sub_blocked_write"] = (
        Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\n").writes(0, 1 << 2).open(1).send(1, rep("k", "slow body")).time(6).flush(0)
    )
    rows["psub"] = (
        Conn()
        .send(0, upgrade("/psub/k"))
        .open(1)
        .send(1, rep("k", "to member"))
        .send(1, rep("k", b"\x80bin", "?psub=1"))
        .send(0, ping(b"hi") + text("receipt"))
        .send(0, close(1000))
    )
    rows["psub_shared"] = (
        Conn()
        .send(0, upgrade("/psub/k?shared=1"))
        .open(1)
        .send(1, upgrade("/psub/k?shared=1"))
        .open(2)
        .send(2, rep("k", "one") + rep("k", "two") + rep("k", "three"))
        .reset(0)
        .send(2, rep("k", "four"))
    )
    rows["psub_receipt"] = (
        Conn(flags=1)
        .send(0, upgrade("/psub/k"))
        .open(1)
        .send(1, rep("k", "a"))
        .open(2)
        .send(2, rep("k", "b"))
        .send(0, text("ok"))
        .time(3)
        .send(0, binary(b"ok"))
    )
    rows["psub_exclusive_takeover"] = Conn().send(0, upgrade("/psub/k")).open(1).send(1, upgrade("/psub/k")).open(2).send(2, rep("k", "x"))
    rows["psub_keepalive"] = Conn().send(0, upgrade("/psub/k")).time(9).send(0, pong()).time(9).time(11).time(11)
    rows["psub_backlog"] = (
        Conn(flags=1 << 3)
        .send(0, upgrade("/psub/k?shared=1"))
        .writes(0, 1 << 2)
        .open(1)
        .send(1, upgrade("/psub/k?shared=1"))
        .open(2)
        .send(2, rep("k", "x" * 300) + rep("k", "y" * 300) + rep("k", "z" * 300))
    )
    prep_msg = b'{"key":"k","data":"via prep"}'
    rows["prep"] = (
        Conn()
        .send(0, upgrade("/prep?confirm=1"))
        .send(0, text(prep_msg) + text(b'{"key":"nobody","data":"x"}') + text(b'{"key":"k","token":"t","psub":true,"data":"y"}'))
        .open(1)
        .send(1, "GET /sub/k HTTP/1.1\r\n\r\n")
        .send(0, text(prep_msg))
        .send(0, text(b"not json"))
    )
    rows["prep_to_psub"] = (
        Conn(flags=1)
        .send(0, upgrade("/psub/k"))
        .open(1)
        .send(1, upgrade("/prep"))
        .send(1, text(b'{"key":"k","psub":true,"data":"m1"}') + text(b'{"key":"k","data":"m2"}'))
        .send(0, text("r"))
        .send(1, binary(b"\x00"))
    )
    rows["chunked"] = Conn().send(
        0, "POST /rep/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n"
    )
    rows["expect_continue"] = (
        Conn()
        .send(0, "POST /rep/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .send(0, "abc")
        .send(0, "POST /nope HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    )
    rows["errors"] = Conn().send(0, "GET /ping HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")
    rows["garbage"] = Conn().send(0, "\x00\x01 nonsense\r\n\r\n")
    rows["head_too_large"] = Conn().send(0, "GET /ping HTTP/1.1\r\nX: " + "a" * 1100 + "\r\n\r\n")
    rows["header_timeout"] = Conn().send(0, "GET /pi").time(8).send(0, "ng HTTP/1.1\r\n\r\n").time(8).time(8)
    rows["idle_timeout"] = Conn().send(0, "GET /ping HTTP/1.1\r\n\r\n").time(12).time(12)
    rows["http10"] = Conn().send(0, "GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /ping HTTP/1.0\r\n\r\n")
    rows["close_header"] = Conn().send(0, "GET /ping HTTP/1.1\r\nConnection: close\r\n\r\nGET /ping HTTP/1.1\r\n\r\n")
    rows["close_all"] = Conn(flags=2).send(0, "GET /ping HTTP/1.1\r\n\r\n")
    rows["half_close"] = Conn().send(0, "GET /ping HTTP/1.1\r\n\r\n", event=False).eof(0)
    rows["parked_eof"] = Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\n").eof(0).open(1).send(1, rep("k", "x"))
    rows["parked_pipelined"] = Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n").open(1).send(1, rep("k", "x"))
    rows["drain"] = Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\n").open(1).send(1, upgrade("/psub/j")).open(2).drain()
    rows["backpressure"] = (
        Conn().writes(0, 1 << 2).send(0, "GET /metrics HTTP/1.1\r\n\r\n" * 40).flush(0).writes(0, (3 << 2) | 1).flush(0)
    )
    rows["bad_upgrade"] = Conn().send(0, "GET /psub/k HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /prep HTTP/1.1\r\n\r\n")
    rows["rsub"] = Conn().send(0, "GET /rsub/k HTTP/1.1\r\n\r\n")
    rows["reset_delivering"] = (
        Conn().send(0, "GET /sub/k HTTP/1.1\r\n\r\n").writes(0, 1 << 2).open(1).send(1, rep("k", "x")).reset(0)
    )
    for name, c in rows.items():
        write("connection", name, c.bytes())


# --- statsd ------------------------------------------------------------------------------------


def statsd():
    def metric(name, tags, value=7, kind=0, repeat=0, value_kind=0):
        out = bytearray([0, repeat, kind, value_kind]) + struct.pack("<Q", value) + bytes([len(tags)])
        for s in [name] + tags:
            s = s.encode()
            out += bytes([len(s)]) + s
        return bytes(out)

    def raw(n):
        return bytes([2, n >> 8, n & 0xFF])

    write("statsd", "plain", metric("esub.requests", ["route:sub", "success:true"]))
    write("statsd", "specials", metric("a:b|c@d#e,f\ng\r", ["key:a:b,c", "env|x:prod\n", "#", ":", ""]))
    write("statsd", "unicode", metric("é:ü|", ["k:ñ,\u2028"], value_kind=2, value=0x7FF8000000000000))
    write("statsd", "long_lines", metric("n" * 200, ["t:" + "v" * 100], repeat=255) * 3 + raw(1431) + raw(1432) + raw(1433))
    write("statsd", "many_small", b"".join(metric(f"m{i}", ["a:b"], value=i) for i in range(120)))
    write("statsd", "empty_lines", raw(0) + metric("a", []) + raw(0) + raw(0) + metric("b", []) + raw(0))


# --- store -------------------------------------------------------------------------------------


def record(kind, rid, time_ms, key, token, body):
    payload = bytes([kind]) + struct.pack("<QQH", rid, time_ms, len(key)) + key + struct.pack("<H", len(token)) + token + body
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def store_record():
    a = record(1, 7, 1234, b"key", b"tok", b"hello body")
    t = record(2, 7, 5, b"", b"", b"")
    write("store_record", "two_records", b"\x00" + a + t)
    write("store_record", "torn_tail", b"\x00" + a + a[:11])
    write("store_record", "bad_crc", b"\x00" + a[:6] + b"\x00\x00" + a[8:])
    write("store_record", "crc_fixed_layout", b"\x01" + struct.pack("<II", 21, 0) + b"\x01" + bytes(16) + b"\xc8\x00\x00\x00")
    write("store_record", "bad_kind", b"\x00" + record(3, 1, 1, b"k", b"", b""))
    write("store_record", "length_too_small", b"\x00" + struct.pack("<II", 3, 0) + b"abc")
    write("store_record", "length_huge", b"\x00" + struct.pack("<II", 0xFFFFFFFF, 0))
    header = b"ESUBSEG\x00" + struct.pack("<I", 1) + bytes(4)
    write("store_record", "raw_file", b"\x02" + header + a + t)
    write("store_record", "raw_bad_magic", b"\x02" + b"ESUBSEG\x01" + struct.pack("<I", 1) + bytes(4) + a)
    write("store_record", "raw_bad_version", b"\x02" + b"ESUBSEG\x00" + struct.pack("<I", 2) + bytes(4) + a)
    write("store_record", "raw_short", b"\x02ESUBSEG")


# --- topic segments ----------------------------------------------------------------------------


def topic_record(offset, time_ms, key=b"", tag=b"", msg_id=b"", body=b""):
    payload = (struct.pack("<qQH", offset, time_ms, len(key)) + key + struct.pack("<H", len(tag)) + tag
               + bytes([len(msg_id)]) + msg_id + body)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def topic_segment():
    # Input: [mode, chunk - 1, bytes...]; see the target's header for the mode bits.
    t = "topic_segment"
    recs = [topic_record(i, 1000 + i, b"k%d" % i if i % 2 else b"", b"a=b" if i % 3 == 0 else b"",
                         b"id%d" % i if i % 4 == 0 else b"", bytes([i]) * (i * 131 % 900)) for i in range(12)]
    run = b"".join(recs)
    write(t, "twelve_records", b"\x00\x07" + run)
    write(t, "twelve_records_one_read", b"\x00\xff" + run)
    write(t, "torn_tail", b"\x00\x10" + run + recs[0][:13])
    write(t, "offset_gap", b"\x00\x10" + recs[0] + recs[1] + recs[3])
    write(t, "renumbered_from_own", b"\x0d\x03" + topic_record(40, 1) + topic_record(7, 2) + topic_record(9, 3))
    write(t, "bad_crc", b"\x00\x00" + recs[1][:6] + b"\x00\x00" + recs[1][8:])
    write(t, "crc_fixed_layout", b"\x05\x00" + struct.pack("<II", 21, 0) + bytes(16) + b"\xc8\x00\x00\x00\x00")
    write(t, "length_too_small", b"\x00\x00" + struct.pack("<II", 3, 0) + b"abc")
    write(t, "length_huge", b"\x00\x00" + struct.pack("<II", 0x42000000, 0))
    write(t, "last_offset", b"\x00\x00" + topic_record(2**63 - 1, 5) + topic_record(-2**63, 6))
    header = b"ESUBTSG\x00" + struct.pack("<I", 1) + bytes(4)
    write(t, "raw_file", b"\x02\x20" + header + run)
    write(t, "raw_bad_magic", b"\x02\x20" + b"ESUBSEG\x00" + struct.pack("<I", 1) + bytes(4) + run)
    write(t, "raw_bad_version", b"\x02\x20" + b"ESUBTSG\x00" + struct.pack("<I", 2) + bytes(4) + run)
    write(t, "raw_short", b"\x02\x00ESUBTSG")
# --- topics ------------------------------------------------------------------------------------


def batch_record(key, tag, payload):
    return struct.pack(">H", len(key)) + key + struct.pack(">H", len(tag)) + tag + struct.pack(">I", len(payload)) + payload


def topic_batch():
    # [max_records, max_payload, max_key, max_tag] then the body.
    limits = bytes([4, 64, 16, 16])
    one = batch_record(b"k1", b"a=b;c", b"hello")
    write("topic_batch", "two", limits + one + batch_record(b"", b"", b"world"))
    write("topic_batch", "too_many", limits + one * 5)
    write("topic_batch", "truncated", limits + one[:-1])
    write("topic_batch", "trailing", limits + one + b"\x00")
    write("topic_batch", "huge_length", limits + b"\x00\x00\x00\x00\xff\xff\xff\xff" + b"x" * 8)
    write("topic_batch", "limits", limits + batch_record(b"k" * 17, b"t", b"p") + batch_record(b"", b"", b""))
    write("topic_batch", "odd_key", limits + batch_record(b"a b%\x7f\xc3\xa9", b"t1;;t2", b"x" * 65))
    write("topic_batch", "many", bytes([255, 16, 8, 8]) + batch_record(b"k", b"t", b"p") * 300)


def topic_acks():
    # partition headers, NUL, offset headers; headers split on LF.
    write("topic_acks", "one", b"3\x0017")
    write("topic_acks", "lists", b" 0 , 1\t\n2\x005,6\n 7 ")
    write("topic_acks", "kateway_first", b"-1\x00-1")
    write("topic_acks", "empty_values", b"\n \x00\t")
    write("topic_acks", "partial", b"1,2\x001")
    write("topic_acks", "bad", b"+1\x00x")
    write("topic_acks", "extremes", b"-9223372036854775808\x009223372036854775808")
    write("topic_acks", "json", b'[{"partition":0,"offset":5},{"offset":-1,"partition":2,"x":[1]}]')
    write("topic_acks", "json_bad", b'[{"partition":0,"offset":1.0}]')
    write("topic_acks", "ws_pub", b'{"data":"hi","key":"k","tag":null,"id":"m1"}')


def apps_file():
    write("apps_file", "example", b"""{"admin": {"appid": "ops", "secret": "s0"},
 "apps": [{"appid": "app1", "secret": "s1", "topics": ["orders"],
           "subscriptions": ["app2.events"], "groups": ["billing"]}]}""")
    write("apps_file", "several", b"""{"apps": [
 {"appid": "app1", "secret": "s1", "topics": ["orders", "a-b_C"], "subscriptions": ["app2.events", "app3.x"],
  "groups": ["billing", "g2"]},
 {"appid": "app2", "secret": "s2", "topics": ["events"]},
 {"appid": "ops", "secret": "s0", "groups": []}],
 "admin": {"appid": "ops", "secret": "s0"}}""")
    write("apps_file", "minimal", b'{"apps": []}')
    write("apps_file", "duplicate", b'{"apps": [{"appid": "a", "secret": "s"}, {"appid": "a", "secret": "t"}]}')
    write("apps_file", "unknown_field", b'{"apps": [{"appid": "a", "secret": "s", "topic": ["t"]}]}')
    write("apps_file", "bad_names", b'{"apps": [{"appid": "a", "secret": "s", "subscriptions": ["b.t.v"], "groups": [""]}]}')


# --- NATS protocol -----------------------------------------------------------------------------

# Recorded from nats-server 2.9.10 (see src/cluster/proto/tests.rs).
NATS_INFO = (b'INFO {"server_id":"NAR3RO7754TMCDLWFURIRWYK53EIRGNTUOUMKD5RJBHPM5DTLKR55GKP",'
             b'"version":"2.9.10","proto":1,"go":"go1.19.8","host":"127.0.0.1","port":14999,'
             b'"headers":true,"max_payload":1048576,"client_id":4,"client_ip":"127.0.0.1"} \r\n')
NATS_SESSION = (b"PONG\r\nMSG foo 1 3\r\nabc\r\nHMSG foo 1 _INBOX.x.1 26 29\r\n"
                b"NATS/1.0\r\nA: b\r\nA:  c \r\n\r\nxyz\r\nHMSG _INBOX.x.7 2 16 16\r\n"
                b"NATS/1.0 503\r\n\r\n\r\nMSG q.x 3 0\r\n\r\nPONG\r\n+OK\r\n"
                b"-ERR 'Unknown Protocol Operation'\r\n")


def nats_proto():
    """Input: [limit, max_step, seed, stream]; limit 255 is the 1 MiB default max_payload."""
    write("nats_proto", "recorded_whole", bytes([255, 0, 0]) + NATS_INFO + NATS_SESSION)
    write("nats_proto", "recorded_split", bytes([255, 7, 42]) + NATS_INFO + NATS_SESSION)
    write("nats_proto", "bytewise", bytes([255, 1, 0]) + NATS_SESSION)
    body = bytes(range(256)) * 4
    write("nats_proto", "binary", bytes([255, 50, 3]) + b"MSG C.rr.k%20x 12 _INBOX.a.1 1024\r\n" + body + b"\r\nPING\r\n")
    hdr = b"NATS/1.0\r\nEsub-Op: rep\r\nEsub-Token: t\r\nEsub-Op:where\r\n\r\n"
    write("nats_proto", "headers", bytes([255, 13, 9]) + b"hmsg\tC.rr.k 3  %d %d\r\n" % (len(hdr), len(hdr) + 2) + hdr + b"ok\r\n")
    write("nats_proto", "too_large", bytes([1, 5, 1]) + b"MSG a 1 17\r\n" + b"x" * 17 + b"\r\n")
    write("nats_proto", "at_limit", bytes([1, 5, 1]) + b"MSG a 1 16\r\n" + b"x" * 16 + b"\r\nMSG a 1 0\r\n\r\n")
    write("nats_proto", "bad_end", bytes([255, 3, 3]) + b"MSG a 1 2\r\nabc\r\n")
    write("nats_proto", "info_urls", bytes([255, 4, 4]) + b'INFO {"max_payload":99999999999,"connect_urls":["10.0.0.1:4222"],"ldm":true}\r\nPING\r\n')
    write("nats_proto", "unknown", bytes([255, 2, 2]) + b"PUB a 1\r\nx\r\n")


if __name__ == "__main__":
    ws_frames()
    ws_handshake()
    connection()
    statsd()
    store_record()
    topic_segment()
    topic_batch()
    topic_acks()
    apps_file()
    nats_proto()
