//! The parser against protocol text recorded from nats-server 2.9.10 (and written by hand from
//! the protocol docs), whole and in every split; the encoders byte for byte.

use super::*;

/// Recorded: the INFO a `nats-server -a 127.0.0.1 -p 14999` sends (note the blank before CR LF).
const INFO: &[u8] = b"INFO {\"server_id\":\"NAR3RO7754TMCDLWFURIRWYK53EIRGNTUOUMKD5RJBHPM5DTLKR55GKP\",\
\"server_name\":\"NAR3RO7754TMCDLWFURIRWYK53EIRGNTUOUMKD5RJBHPM5DTLKR55GKP\",\"version\":\"2.9.10\",\
\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":14999,\"headers\":true,\
\"max_payload\":1048576,\"client_id\":4,\"client_ip\":\"127.0.0.1\"} \r\n";

/// Recorded: after `SUB foo 1`, `SUB _INBOX.x.* 2`, `sub q.x grp 3` and a PING, the answers to
/// a PUB, an HPUB with a reply, a request nobody listens to, an empty PUB and a PING.
const SESSION: &[u8] = b"PONG\r\nMSG foo 1 3\r\nabc\r\nHMSG foo 1 _INBOX.x.1 26 29\r\n\
NATS/1.0\r\nA: b\r\nA:  c \r\n\r\nxyz\r\nHMSG _INBOX.x.7 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
MSG q.x 3 0\r\n\r\nPONG\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n";

fn msg<'a>(
    subject: &'a str,
    sid: u64,
    reply: Option<&'a str>,
    headers: Option<&'a [u8]>,
    payload: &'a [u8],
) -> Op<'a> {
    Op::Msg(Msg {
        subject: subject.as_bytes(),
        sid,
        reply: reply.map(str::as_bytes),
        headers,
        payload,
    })
}

/// Every operation in `buf`, parsed one after the other; the error that stopped them, if any.
fn parse_all(buf: &[u8], max: usize) -> (Vec<Op<'_>>, Result<usize, ProtoError>) {
    let mut ops = Vec::new();
    let mut at = 0;
    loop {
        match parse(&buf[at..], max) {
            Ok(Some((op, n))) => {
                ops.push(op);
                at += n;
            }
            Ok(None) => return (ops, Ok(at)),
            Err(e) => return (ops, Err(e)),
        }
    }
}

#[test]
fn parses_the_recorded_info() {
    let (op, n) = parse(INFO, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
    assert_eq!(n, INFO.len());
    let Op::Info(info) = op else { panic!("{op:?}") };
    assert_eq!(info.server_id, "NAR3RO7754TMCDLWFURIRWYK53EIRGNTUOUMKD5RJBHPM5DTLKR55GKP");
    assert_eq!(info.version, "2.9.10");
    assert_eq!(info.max_payload, 1_048_576);
    assert_eq!(info.proto, 1);
    assert!(info.headers && !info.tls_required && !info.auth_required && !info.lame_duck);
    assert!(info.connect_urls.is_empty());
}

#[test]
fn parses_the_recorded_session() {
    let want = vec![
        Op::Pong,
        msg("foo", 1, None, None, b"abc"),
        msg("foo", 1, Some("_INBOX.x.1"), Some(b"NATS/1.0\r\nA: b\r\nA:  c \r\n\r\n"), b"xyz"),
        msg("_INBOX.x.7", 2, None, Some(b"NATS/1.0 503\r\n\r\n"), b""),
        msg("q.x", 3, None, None, b""),
        Op::Pong,
        Op::Ok,
        Op::Err(b"Unknown Protocol Operation"),
    ];
    assert_eq!(parse_all(SESSION, DEFAULT_MAX_PAYLOAD), (want.clone(), Ok(SESSION.len())));
    // Every prefix: the operations complete within it, and the rest waits (never an error).
    for end in 0..SESSION.len() {
        let (ops, rest) = parse_all(&SESSION[..end], DEFAULT_MAX_PAYLOAD);
        assert_eq!(ops[..], want[..ops.len()], "prefix of {end}");
        assert!(rest.is_ok(), "prefix of {end}: {rest:?}");
    }
}

#[test]
fn parses_hand_written_operations() {
    let info_urls = b"INFO {\"max_payload\":99999999999,\"connect_urls\":[\"10.0.0.1:4222\",7],\"ldm\":true}\r\n";
    let Ok(Some((Op::Info(info), _))) = parse(info_urls, 0) else { panic!() };
    assert_eq!(info.max_payload, HARD_MAX_PAYLOAD);
    assert_eq!(info.connect_urls, ["10.0.0.1:4222"]);
    assert!(info.lame_duck);

    type Row = (&'static [u8], Op<'static>);
    let rows: &[Row] = &[
        // Operation names are case-insensitive; fields split on runs of blanks and tabs.
        (b"ping\r\n", Op::Ping),
        (b"PiNg \t \r\n", Op::Ping),
        (b"pong\r\n", Op::Pong),
        (b"+ok\r\n", Op::Ok),
        (b"-err 'Authorization Violation'\r\n", Op::Err(b"Authorization Violation")),
        (b"-ERR\r\n", Op::Err(b"")),
        (b"-ERR unquoted text \r\n", Op::Err(b"unquoted text")),
        (b"msg  a.b\t9   2\r\nhi\r\n", msg("a.b", 9, None, None, b"hi")),
        (b"MSG a 1 r.1 0\r\n\r\n", msg("a", 1, Some("r.1"), None, b"")),
        // A payload holding CR LF and bytes that are not UTF-8.
        (b"MSG a 1 4\r\n\r\n\xff\x00\r\n", msg("a", 1, None, None, b"\r\n\xff\x00")),
        (
            b"hmsg a 2 12 14\r\nNATS/1.0\r\n\r\nok\r\n",
            msg("a", 2, None, Some(b"NATS/1.0\r\n\r\n"), b"ok"),
        ),
        (b"HMSG a 2 0 0\r\n\r\n", msg("a", 2, None, Some(b""), b"")),
    ];
    for (text, want) in rows {
        let got = parse(text, DEFAULT_MAX_PAYLOAD);
        assert_eq!(
            got,
            Ok(Some((want.clone(), text.len()))),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn refuses_bad_operations() {
    let long = [b"MSG ".as_slice(), &[b'a'; MAX_LINE]].concat();
    let rows: &[(&[u8], ProtoError)] = &[
        (b"PING\n", ProtoError::BadLineEnd),
        (b"MSG a\rb 1 0\r\n\r\n", ProtoError::BadLineEnd),
        (b"PING\r\r\n", ProtoError::BadLineEnd),
        (b"PUB a 1\r\n", ProtoError::UnknownOp),
        (b" PING\r\n", ProtoError::UnknownOp),
        (b"\r\n", ProtoError::UnknownOp),
        (b"PINGX\r\n", ProtoError::UnknownOp),
        (b"PING x\r\n", ProtoError::BadArgs),
        (b"+OK 1\r\n", ProtoError::BadArgs),
        (b"MSG a 1\r\n", ProtoError::BadArgs),
        (b"MSG a 1 r x 2\r\n", ProtoError::BadArgs),
        (b"MSG a x 1\r\n", ProtoError::BadArgs),
        (b"MSG a 1 -1\r\n", ProtoError::BadArgs),
        (b"MSG a 1 +1\r\n", ProtoError::BadArgs),
        (b"MSG a 99999999999999999999 1\r\n", ProtoError::BadArgs),
        (b"MSG a 1 r 1x\r\n", ProtoError::BadArgs),
        (b"HMSG a 1 3 2\r\n", ProtoError::BadArgs),
        (b"HMSG a 1 2\r\n", ProtoError::BadArgs),
        (b"MSG a 1 1048577\r\n", ProtoError::PayloadTooLarge),
        (b"HMSG a 1 0 1048577\r\n", ProtoError::PayloadTooLarge),
        (b"MSG a 1 18446744073709551615\r\n", ProtoError::PayloadTooLarge),
        (b"MSG a 1 18446744073709551616\r\n", ProtoError::BadArgs),
        (b"MSG a 1 2\r\nabc\r\n", ProtoError::BadPayloadEnd),
        (b"MSG a 1 2\r\nab\n\r", ProtoError::BadPayloadEnd),
        (b"INFO\r\n", ProtoError::BadInfo),
        (b"INFO [1]\r\n", ProtoError::BadInfo),
        (b"INFO {\"a\":\r\n", ProtoError::BadInfo),
        (&long, ProtoError::LineTooLong),
    ];
    for &(text, want) in rows {
        let shown = String::from_utf8_lossy(&text[..text.len().min(40)]);
        assert_eq!(parse(text, DEFAULT_MAX_PAYLOAD), Err(want), "{shown:?}");
    }
}

#[test]
fn waits_within_its_bounds() {
    // A line without its end waits up to MAX_LINE bytes, then it is an error.
    let almost = vec![b'x'; MAX_LINE - 1];
    assert_eq!(parse(&almost, 10), Ok(None));
    assert_eq!(parse(&[almost.as_slice(), b"x"].concat(), 10), Err(ProtoError::LineTooLong));
    // A line ending just inside the window is read.
    let mut edge = b"-ERR ".to_vec();
    edge.resize(MAX_LINE - 2, b'e');
    edge.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&edge, 10), Ok(Some((Op::Err(_), n))) if n == MAX_LINE));
    // The payload limit is the caller's (the INFO's), clamped to the hard cap.
    assert_eq!(parse(b"MSG a 1 11\r\n", 10), Err(ProtoError::PayloadTooLarge));
    assert_eq!(parse(b"MSG a 1 10\r\n", 10), Ok(None));
    assert_eq!(parse(b"MSG a 1 67108865\r\n", usize::MAX), Err(ProtoError::PayloadTooLarge));
    assert_eq!(parse(b"MSG a 1 67108864\r\n", usize::MAX), Ok(None));
}

#[test]
fn validates_subjects_and_queues() {
    let rows: &[(&str, bool, bool)] = &[
        // (subject, as a PUB subject, as a SUB subject)
        ("foo", true, true),
        ("esub.rr.a%2Fb", true, true),
        ("_INBOX.abc.*", false, true),
        ("foo.>", false, true),
        ("foo.>.bar", false, false),
        ("f*o.b>r", true, true),
        ("*", false, true),
        ("", false, false),
        ("foo..bar", false, false),
        (".foo", false, false),
        ("foo.", false, false),
        ("foo bar", false, false),
        ("foo\tbar", false, false),
        ("foo\r\nPUB x 1", false, false),
        ("k\u{e9}y", true, true),
    ];
    for &(s, publish, sub) in rows {
        assert_eq!(valid_subject(s, false), publish, "{s:?} as a PUB subject");
        assert_eq!(valid_subject(s, true), sub, "{s:?} as a SUB subject");
    }
    assert!(valid_queue("pool") && !valid_queue("") && !valid_queue("a b") && !valid_queue("a\r"));
}

#[test]
fn encodes_client_operations() {
    let mut out = Vec::new();
    publish(&mut out, "a.b", None, None, b"hi").unwrap();
    publish(&mut out, "a.b", Some("_INBOX.x.1"), None, b"").unwrap();
    publish(&mut out, "a", None, Some(b"NATS/1.0\r\n\r\n"), b"xyz").unwrap();
    publish(&mut out, "a", Some("r"), Some(b"NATS/1.0\r\n\r\n"), b"").unwrap();
    subscribe(&mut out, "a.*", None, 1).unwrap();
    subscribe(&mut out, "C.rr.k", Some("sub"), 22).unwrap();
    unsubscribe(&mut out, 22, None);
    unsubscribe(&mut out, 3, Some(1));
    ping(&mut out);
    pong(&mut out);
    let want: &[u8] = b"PUB a.b 2\r\nhi\r\nPUB a.b _INBOX.x.1 0\r\n\r\n\
HPUB a 12 15\r\nNATS/1.0\r\n\r\nxyz\r\nHPUB a r 12 12\r\nNATS/1.0\r\n\r\n\r\n\
SUB a.* 1\r\nSUB C.rr.k sub 22\r\nUNSUB 22\r\nUNSUB 3 1\r\nPING\r\nPONG\r\n";
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
    let longest = publish_overhead("a", Some("r"));
    assert!(longest >= b"HPUB a r 12 12\r\n\r\n".len());

    let mut none = Vec::new();
    assert_eq!(publish(&mut none, "a b", None, None, b""), Err(EncodeError::BadSubject));
    assert_eq!(publish(&mut none, "a.*", None, None, b""), Err(EncodeError::BadSubject));
    assert_eq!(publish(&mut none, "a", Some("r\r\n"), None, b""), Err(EncodeError::BadSubject));
    assert_eq!(subscribe(&mut none, "a..b", None, 1), Err(EncodeError::BadSubject));
    assert_eq!(subscribe(&mut none, "a", Some("q q"), 1), Err(EncodeError::BadQueue));
    assert!(none.is_empty(), "a refused operation writes nothing");
}

#[test]
fn connect_says_what_we_rely_on() {
    let mut out = Vec::new();
    let c = Connect { name: "n\"1", user: Some("u"), pass: Some("p"), token: None, echo: false };
    connect(&mut out, &c);
    let line = out.strip_prefix(b"CONNECT ").and_then(|l| l.strip_suffix(b"\r\n")).unwrap();
    let v: Value = serde_json::from_slice(line).unwrap();
    for (k, want) in [
        ("verbose", Value::from(false)),
        ("pedantic", false.into()),
        ("headers", true.into()),
        ("no_responders", true.into()),
        ("protocol", 1.into()),
        ("name", "n\"1".into()),
        ("user", "u".into()),
        ("pass", "p".into()),
        ("echo", false.into()),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    assert!(v.get("auth_token").is_none());
    out.clear();
    let c = Connect { name: "n", user: None, pass: None, token: Some("t"), echo: true };
    connect(&mut out, &c);
    let v: Value = serde_json::from_slice(&out[8..out.len() - 2]).unwrap();
    assert_eq!((&v["auth_token"], &v["echo"]), (&Value::from("t"), &Value::from(true)));
    assert!(v.get("user").is_none() && v.get("pass").is_none());
}
