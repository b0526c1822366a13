//! `percent_decode` and `Query::parse` on arbitrary bytes, both `+` modes. Decoding is checked
//! against an independent statement of validity and by re-encoding; a parsed query re-encodes to
//! the same query and never carries an empty token.
#![no_main]

use esub::http::query::{DecodeError, Query, percent_decode};
use libfuzzer_sys::fuzz_target;

/// Percent-encodes every byte outside RFC 3986's unreserved set (so never a `+`).
fn encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Valid percent-encoding, stated without scanning: hex digits are never `%`, so every `%` in
/// the input must open an escape.
fn valid(input: &[u8]) -> bool {
    input.iter().enumerate().all(|(i, &b)| {
        b != b'%' || input.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

fn check_decode(input: &[u8]) {
    let plain = percent_decode(input, false);
    let form = percent_decode(input, true);
    assert_eq!(plain.is_ok(), valid(input), "validity");
    assert_eq!(form.is_ok(), valid(input), "validity does not depend on '+'");
    let (Ok(plain), Ok(form)) = (plain, form) else {
        return;
    };
    let escapes = input.iter().filter(|&&b| b == b'%').count();
    assert_eq!(plain.len(), input.len() - 2 * escapes, "one byte per escape or byte");
    if escapes == 0 {
        assert_eq!(plain, input, "nothing to decode");
    }
    // `+` is a space in form mode, and only a literal `+` is.
    let mut spaced = Vec::with_capacity(input.len() * 3);
    for &b in input {
        match b {
            b'+' => spaced.extend_from_slice(b"%20"),
            b => spaced.push(b),
        }
    }
    assert_eq!(percent_decode(&spaced, false).as_deref(), Ok(&form[..]), "'+' as space");
    for decoded in [&plain, &form] {
        let enc = encode(decoded);
        assert_eq!(percent_decode(&enc, false).as_ref(), Ok(decoded), "round trip");
        assert_eq!(percent_decode(&enc, true).as_ref(), Ok(decoded), "round trip, form");
    }
}

/// What `Query::parse` should say, pair by pair.
fn expected_query(raw: &[u8]) -> Result<Query, DecodeError> {
    let mut q = Query::default();
    for pair in raw.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let mut it = pair.splitn(2, |&b| b == b'=');
        let name = it.next().unwrap_or_default();
        let value = it.next().unwrap_or_default();
        let name = percent_decode(name, true)?;
        let value = percent_decode(value, true)?;
        let on = matches!(&value[..], b"1" | b"true" | b"yes" | b"on");
        match &name[..] {
            b"token" => {
                let t = String::from_utf8(value).map_err(|_| DecodeError)?;
                q.token = Some(t).filter(|t| !t.is_empty());
            }
            b"psub" => q.psub = on,
            b"shared" => q.shared = on,
            b"replay" => q.replay = on,
            b"confirm" => q.confirm = on,
            b"local" => q.local = on,
            b"nats" => {
                let u = String::from_utf8(value).map_err(|_| DecodeError)?;
                q.nats = Some(u).filter(|u| !u.is_empty());
            }
            _ => {}
        }
    }
    Ok(q)
}

fn encode_query(q: &Query) -> Vec<u8> {
    let mut parts = Vec::new();
    if let Some(t) = &q.token {
        parts.push([&b"token="[..], &encode(t.as_bytes())].concat());
    }
    if let Some(u) = &q.nats {
        parts.push([&b"nats="[..], &encode(u.as_bytes())].concat());
    }
    let flags = [
        ("psub", q.psub),
        ("shared", q.shared),
        ("replay", q.replay),
        ("confirm", q.confirm),
        ("local", q.local),
    ];
    for (name, on) in flags {
        if on {
            parts.push(format!("{name}=1").into_bytes());
        }
    }
    parts.join(&b'&')
}

fuzz_target!(|data: &[u8]| {
    check_decode(data);
    let q = Query::parse(data);
    assert_eq!(q, expected_query(data));
    if let Ok(q) = q {
        assert!(q.token.as_deref() != Some(""), "empty token");
        assert!(q.nats.as_deref() != Some(""), "empty nats URL");
        let again = encode_query(&q);
        assert_eq!(Query::parse(&again), Ok(q), "re-encoded {:?}", String::from_utf8_lossy(&again));
    }
});
