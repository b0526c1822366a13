//! Cluster subjects (`API-cluster.md` section 3): keys and node names encoded as one subject
//! token (E: every byte outside `[A-Za-z0-9_~-]` written `%XX`), and the subjects built on them.

use std::fmt::Write;

/// A byte written as itself in E.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'-')
}

/// E of `s`: one subject token whatever `s` holds (no `.`, space, `*` or `>` survives).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The inverse of `encode`; `None` for anything `encode` cannot have produced.
pub fn decode(e: &str) -> Option<String> {
    let bytes = e.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                let b = u8::from_str_radix(hex, 16).ok()?;
                if plain(b) || hex.bytes().any(|h| h.is_ascii_lowercase()) {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Which of a key's subjects a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySubject {
    /// `C.rr.E`: a rep for the waiting sub.
    Rr,
    /// `C.rr.E.claim`: another node's sub wants the key.
    Claim,
    /// `C.rr.E.pool`: a rep for a psub pool.
    Pool,
    /// `C.rr.E.stored`: a `/rsub` (or a `HEAD /rsub`) for stored reps.
    Stored,
}

impl KeySubject {
    fn suffix(self) -> &'static str {
        match self {
            KeySubject::Rr => "",
            KeySubject::Claim => ".claim",
            KeySubject::Pool => ".pool",
            KeySubject::Stored => ".stored",
        }
    }
}

/// The subjects of one cluster (prefix `C` = `ESUB_CLUSTER_NAME`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects { prefix: prefix.to_string() }
    }

    pub fn key(&self, key: &str, which: KeySubject) -> String {
        format!("{}.rr.{}{}", self.prefix, encode(key), which.suffix())
    }

    pub fn heartbeat(&self) -> String {
        format!("{}.hb", self.prefix)
    }

    pub fn leave(&self) -> String {
        format!("{}.leave", self.prefix)
    }

    /// `C.keys`: every node answers a `/keys` scatter with its keys.
    pub fn keys(&self) -> String {
        format!("{}.keys", self.prefix)
    }

    /// Where node `e` (encoded) hears the answers to its scatter `id`; `id` `*` for all.
    pub fn keys_reply(&self, e: &str, id: &str) -> String {
        format!("{}.keysr.{e}.{id}", self.prefix)
    }

    /// Key events of every node (`GET /announce`).
    pub fn events(&self) -> String {
        format!("{}.ev", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}.node.{}", self.prefix, encode(name))
    }

    /// The key and which subject, for a message on one of `key`'s subjects.
    pub fn parse_key(&self, subject: &str) -> Option<(String, KeySubject)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".rr.")?;
        let (e, which) = match rest.split_once('.') {
            None => (rest, KeySubject::Rr),
            Some((e, "claim")) => (e, KeySubject::Claim),
            Some((e, "pool")) => (e, KeySubject::Pool),
            Some((e, "stored")) => (e, KeySubject::Stored),
            Some(_) => return None,
        };
        Some((decode(e)?, which))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_rows() {
        let rows = [
            ("abc", "abc"),
            ("A-z_0~9", "A-z_0~9"),
            ("a.b", "a%2Eb"),
            ("a b*>", "a%20b%2A%3E"),
            ("%", "%25"),
            ("é", "%C3%A9"),
            ("", ""),
        ];
        for (raw, e) in rows {
            assert_eq!(encode(raw), e, "{raw}");
            assert_eq!(decode(e).as_deref(), Some(raw), "{e}");
        }
        for bad in ["%2", "%zz", "%2e", "%41", "a.b", "a b", "%FF"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn subjects_round_trip() {
        let s = Subjects::new("esub.eu");
        assert_eq!(s.key("a.b", KeySubject::Rr), "esub.eu.rr.a%2Eb");
        assert_eq!(s.key("k", KeySubject::Claim), "esub.eu.rr.k.claim");
        assert_eq!(s.key("k", KeySubject::Pool), "esub.eu.rr.k.pool");
        assert_eq!(s.node("h:1"), "esub.eu.node.h%3A1");
        assert_eq!(s.events(), "esub.eu.ev");
        assert_eq!(s.parse_key("esub.eu.ev"), None);
        assert_eq!(s.key("k", KeySubject::Stored), "esub.eu.rr.k.stored");
        for which in [KeySubject::Rr, KeySubject::Claim, KeySubject::Pool, KeySubject::Stored] {
            let subject = s.key("x y.z", which);
            assert_eq!(s.parse_key(&subject), Some(("x y.z".to_string(), which)));
        }
        assert_eq!(s.parse_key("esub.eu.rr.k.other"), None);
        assert_eq!(s.parse_key("other.rr.k"), None);
        assert_eq!(s.parse_key("esub.eu.hb"), None);
    }
}
