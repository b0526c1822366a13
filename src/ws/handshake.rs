//! The websocket upgrade, done by hand: check the request's headers (RFC 6455 section 4.2.1)
//! and answer `101 Switching Protocols` with `Sec-WebSocket-Accept`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use std::io::Write;

/// The upgrade-related headers of a request head, as sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpgradeHeaders {
    /// `Upgrade` lists `websocket`.
    pub websocket: bool,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    pub version: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
}

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_value(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    STANDARD.encode(sha.finalize())
}

/// Checks an upgrade request; the error is the 400 body.
pub fn check(h: &UpgradeHeaders) -> Result<String, &'static str> {
    if !h.websocket || !h.connection_upgrade {
        return Err("Expected a websocket upgrade");
    }
    if h.version.as_deref().map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err("Unsupported websocket version");
    }
    let key = h.key.as_deref().map(<[u8]>::trim_ascii).ok_or("Missing Sec-WebSocket-Key")?;
    // The key is 16 random bytes, base64-encoded.
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_value(key)),
        _ => Err("Bad Sec-WebSocket-Key"),
    }
}

/// The 101 response. Extensions (compression) are declined by not naming any.
pub fn response(out: &mut Vec<u8>, accept: &str) {
    let _ = write!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ws: bool, conn: bool, version: &str, key: &str) -> UpgradeHeaders {
        UpgradeHeaders {
            websocket: ws,
            connection_upgrade: conn,
            version: Some(version.as_bytes().to_vec()),
            key: Some(key.as_bytes().to_vec()),
        }
    }

    #[test]
    fn rfc_example_and_rejections() {
        // RFC 6455 section 1.3.
        let good = headers(true, true, "13", "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(check(&good).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let rows = [
            (
                headers(false, true, "13", "dGhlIHNhbXBsZSBub25jZQ=="),
                "Expected a websocket upgrade",
            ),
            (
                headers(true, false, "13", "dGhlIHNhbXBsZSBub25jZQ=="),
                "Expected a websocket upgrade",
            ),
            (headers(true, true, "8", "dGhlIHNhbXBsZSBub25jZQ=="), "Unsupported websocket version"),
            (headers(true, true, "13", "short"), "Bad Sec-WebSocket-Key"),
            (headers(true, true, "13", "!!!!"), "Bad Sec-WebSocket-Key"),
        ];
        for (h, want) in rows {
            assert_eq!(check(&h), Err(want));
        }
        let mut no_key = good.clone();
        no_key.key = None;
        assert_eq!(check(&no_key), Err("Missing Sec-WebSocket-Key"));
        assert_eq!(check(&UpgradeHeaders::default()), Err("Expected a websocket upgrade"));
    }
}
