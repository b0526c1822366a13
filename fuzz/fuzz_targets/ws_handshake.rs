//! `handshake::check` on arbitrary `UpgradeHeaders`. The verdict is restated independently of
//! the base64 crate (RFC 6455 section 4.2.1: a key is 16 bytes, base64-encoded, which is exactly
//! 22 alphabet characters, `==`, and four zero bits at the end), the accept value is recomputed
//! as base64(SHA-1(key + GUID)), and the 101 response is read back with httparse.
//!
//! Input: `[flags, version_len, version..., key...]`. `flags` bit 0: `Upgrade` lists websocket;
//! bit 1: `Connection` lists upgrade; bit 2: a version header; bit 3: a key header; bits 4-5: how
//! the key is made (0, 1: the raw bytes; 2: base64 of the raw bytes; 3: the same, whitespace
//! around it); bits 6-7: which version (0: the raw bytes; 1: `13`; 2: ` 13\t`; 3: `8`).
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use esub::ws::handshake::{UpgradeHeaders, accept_value, check, response};
use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};

/// RFC 6455 section 1.3, typed in from the RFC rather than taken from esub.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 of exactly 16 bytes, in the canonical form (padding, zero trailing bits).
fn is_key(k: &[u8]) -> bool {
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c);
    k.len() == 24
        && k[..22].iter().all(|&c| value(c).is_some())
        && &k[22..] == b"=="
        // 22 characters carry 132 bits; the last 4 are padding and must be zero.
        && value(k[21]).is_some_and(|v| v & 0x0F == 0)
}

/// What header values look like once their surrounding whitespace is dropped.
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

fn expected_accept(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

fn check_response(accept: &str) {
    let mut out = Vec::new();
    response(&mut out, accept);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(&out) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("101 response does not parse: {other:?}"),
    };
    assert_eq!(len, out.len(), "bytes after the 101 head");
    assert_eq!(
        (resp.version, resp.code, resp.reason),
        (Some(1), Some(101), Some("Switching Protocols"))
    );
    let get = |name: &str| {
        let mut it = resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
        let v = it.next().map(|h| h.value);
        assert!(it.next().is_none(), "{name} twice");
        v
    };
    assert!(get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")));
    assert!(get("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"upgrade")));
    assert_eq!(get("sec-websocket-accept"), Some(accept.as_bytes()));
    // Extensions and subprotocols are declined by not naming any.
    assert!(get("sec-websocket-extensions").is_none() && get("sec-websocket-protocol").is_none());
}

fuzz_target!(|data: &[u8]| {
    let [flags, version_len, ref rest @ ..] = *data else {
        return;
    };
    let split = usize::from(version_len).min(rest.len());
    let (raw_version, raw_key) = rest.split_at(split);
    let version = match flags >> 6 {
        0 => raw_version.to_vec(),
        1 => b"13".to_vec(),
        2 => b" 13\t".to_vec(),
        _ => b"8".to_vec(),
    };
    let key = match (flags >> 4) & 3 {
        0 | 1 => raw_key.to_vec(),
        2 => STANDARD.encode(raw_key).into_bytes(),
        _ => format!(" \t{}  ", STANDARD.encode(raw_key)).into_bytes(),
    };
    let h = UpgradeHeaders {
        websocket: flags & 1 != 0,
        connection_upgrade: flags & 2 != 0,
        version: (flags & 4 != 0).then_some(version),
        key: (flags & 8 != 0).then_some(key),
    };
    let got = check(&h);

    let trimmed_key = h.key.as_deref().map(trim);
    let want: Result<(), &str> = if !h.websocket || !h.connection_upgrade {
        Err("Expected a websocket upgrade")
    } else if h.version.as_deref().map(trim) != Some(b"13") {
        Err("Unsupported websocket version")
    } else {
        match trimmed_key {
            None => Err("Missing Sec-WebSocket-Key"),
            Some(k) if is_key(k) => Ok(()),
            Some(_) => Err("Bad Sec-WebSocket-Key"),
        }
    };
    assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), want, "{h:?}");
    if (flags >> 4) & 3 >= 2 && want.is_ok() {
        assert_eq!(raw_key.len(), 16, "a key made of {} bytes accepted", raw_key.len());
    }
    if let Ok(accept) = &got {
        let k = trimmed_key.expect("accepted with a key");
        assert_eq!(*accept, expected_accept(k), "accept value for {k:?}");
        assert_eq!(accept.len(), 28, "base64 of a 20-byte digest");
        check_response(accept);
    }
    // `accept_value` is a plain function of any bytes.
    if let Some(k) = &h.key {
        assert_eq!(accept_value(k), expected_accept(k));
    }
});
