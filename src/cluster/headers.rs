//! NATS message headers (ADR-4): `NATS/1.0[ <status>[ <description>]]\r\n`, then `Name: value`
//! lines, then an empty line. Names are case-sensitive and may repeat; values are trimmed.

use super::proto::EncodeError;

/// Why a header block was refused. The frame around it was fine, so the caller drops the one
/// message, not the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The block does not end with an empty line (`\r\n\r\n`).
    Unterminated,
    /// The first line is not `NATS/1.0`, optionally with a three-digit status and a text
    /// (without CR or LF).
    BadVersion,
    /// A line without `:`, an empty or non-printable name, or a value that is not UTF-8.
    BadField,
}

/// A parsed header block. `status` is set on server statuses such as `503` (no responders).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub status: Option<u16>,
    pub description: String,
    fields: Vec<(String, String)>,
}

/// The version line's prefix.
const VERSION: &[u8] = b"NATS/1.0";

/// A header name: printable ASCII other than `:` (RFC 822 3.1.2, which ADR-4 adopts).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// The status a server attaches to a request nobody listens to (`no_responders`).
    pub fn is_no_responders(&self) -> bool {
        self.status == Some(503)
    }

    /// Adds a field after the others with the same name (names may repeat).
    pub fn append(&mut self, name: &str, value: &str) -> &mut Headers {
        self.fields.push((name.to_string(), value.to_string()));
        self
    }

    /// The first value of `name` (exact case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (exact case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// Parses a whole block as `HMSG` delivers it (its exact length).
    pub fn parse(block: &[u8]) -> Result<Headers, HeaderError> {
        let body = block.strip_suffix(b"\r\n\r\n").ok_or(HeaderError::Unterminated)?;
        let mut lines = LineSplit(Some(body));
        let first = lines.next().unwrap_or_default();
        let mut h = Headers::new();
        let rest = first.strip_prefix(VERSION).ok_or(HeaderError::BadVersion)?;
        let rest = std::str::from_utf8(rest).map_err(|_| HeaderError::BadVersion)?;
        if rest.contains(['\r', '\n']) {
            return Err(HeaderError::BadVersion);
        }
        if !rest.is_empty() {
            // " 503" or " 503 No Responders": a blank, three digits, then an optional text.
            let rest = rest.strip_prefix([' ', '\t']).ok_or(HeaderError::BadVersion)?.trim_start();
            let (code, text) = rest.split_at(rest.find([' ', '\t']).unwrap_or(rest.len()));
            if !code.is_empty() {
                if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HeaderError::BadVersion);
                }
                h.status = code.parse().ok();
                h.description = trim(text).to_string();
            }
        }
        for line in lines {
            let colon = line.iter().position(|&b| b == b':').ok_or(HeaderError::BadField)?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if !valid_name(name) || value.contains(&b'\r') || value.contains(&b'\n') {
                return Err(HeaderError::BadField);
            }
            let value = std::str::from_utf8(value).map_err(|_| HeaderError::BadField)?;
            // `valid_name` admitted ASCII only, so this cannot fail.
            let name = std::str::from_utf8(name).map_err(|_| HeaderError::BadField)?;
            h.fields.push((name.to_string(), trim(value).to_string()));
        }
        Ok(h)
    }

    /// Writes the block for `HPUB`. Names must be printable ASCII without `:`, values and the
    /// description free of CR and LF; a value's surrounding blanks do not survive a round trip.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let clean = |v: &str| !v.contains(['\r', '\n']);
        if !clean(&self.description)
            || self.fields.iter().any(|(n, v)| !valid_name(n.as_bytes()) || !clean(v))
            || self.status.is_some_and(|s| s > 999)
        {
            return Err(EncodeError::BadHeader);
        }
        out.extend_from_slice(VERSION);
        if let Some(s) = self.status {
            // Three digits, as `parse` wants them (a status below 100 keeps its zeros).
            out.extend_from_slice(format!(" {s:03}").as_bytes());
            if !self.description.is_empty() {
                out.push(b' ');
                out.extend_from_slice(self.description.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.fields {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Splits on CR LF (a lone CR or LF stays inside a line, where the field check refuses it).
struct LineSplit<'a>(Option<&'a [u8]>);

impl<'a> Iterator for LineSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.0?;
        match s.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                self.0 = Some(&s[i + 2..]);
                Some(&s[..i])
            }
            None => {
                self.0 = None;
                Some(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks() {
        type Row =
            (&'static [u8], Option<u16>, &'static str, &'static [(&'static str, &'static str)]);
        let rows: &[Row] = &[
            (b"NATS/1.0\r\n\r\n", None, "", &[]),
            // Recorded from nats-server 2.9.10: a request to a subject nobody listens to.
            (b"NATS/1.0 503\r\n\r\n", Some(503), "", &[]),
            (b"NATS/1.0 408 Request Timeout\r\n\r\n", Some(408), "Request Timeout", &[]),
            // Recorded: an HPUB relayed as the publisher wrote it; values trimmed, names repeat.
            (b"NATS/1.0\r\nA: b\r\nA:  c \r\n\r\n", None, "", &[("A", "b"), ("A", "c")]),
            (b"NATS/1.0\r\nEsub-Op:rep\r\nX:\r\n\r\n", None, "", &[("Esub-Op", "rep"), ("X", "")]),
            (b"NATS/1.0\r\nK: a:b: c\r\n\r\n", None, "", &[("K", "a:b: c")]),
            (b"NATS/1.0\r\nUtf: h\xc3\xa9\r\n\r\n", None, "", &[("Utf", "h\u{e9}")]),
        ];
        for &(block, status, desc, fields) in rows {
            let h = Headers::parse(block).unwrap_or_else(|e| panic!("{block:?}: {e:?}"));
            assert_eq!(h.status, status, "{block:?}");
            assert_eq!(h.description, desc, "{block:?}");
            let got: Vec<(&str, &str)> =
                h.fields().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_eq!(got, fields, "{block:?}");
        }
    }

    #[test]
    fn refuses_bad_blocks() {
        let rows: &[(&[u8], HeaderError)] = &[
            (b"", HeaderError::Unterminated),
            (b"NATS/1.0\r\n", HeaderError::Unterminated),
            (b"NATS/1.0\r\nA: b\r\n", HeaderError::Unterminated),
            (b"NATS/2.0\r\n\r\n", HeaderError::BadVersion),
            (b"nats/1.0\r\n\r\n", HeaderError::BadVersion),
            (b"NATS/1.0 50\r\n\r\n", HeaderError::BadVersion),
            (b"NATS/1.0 5033\r\n\r\n", HeaderError::BadVersion),
            (b"NATS/1.0x\r\n\r\n", HeaderError::BadVersion),
            (b"NATS/1.0 503 a\nb\r\n\r\n", HeaderError::BadVersion),
            (b"NATS/1.0\r\nno colon\r\n\r\n", HeaderError::BadField),
            (b"NATS/1.0\r\n: v\r\n\r\n", HeaderError::BadField),
            (b"NATS/1.0\r\nA b: v\r\n\r\n", HeaderError::BadField),
            (b"NATS/1.0\r\nA: v\nB: w\r\n\r\n", HeaderError::BadField),
            (b"NATS/1.0\r\n\r\nA: b\r\n\r\n", HeaderError::BadField),
            (b"NATS/1.0\r\nA: \xff\r\n\r\n", HeaderError::BadField),
        ];
        for &(block, want) in rows {
            assert_eq!(Headers::parse(block), Err(want), "{block:?}");
        }
    }

    #[test]
    fn case_is_kept_and_matters() {
        let h = Headers::parse(b"NATS/1.0\r\nEsub-Op: rep\r\nesub-op: claim\r\n\r\n").unwrap();
        assert_eq!(h.get("Esub-Op"), Some("rep"));
        assert_eq!(h.get("esub-op"), Some("claim"));
        assert_eq!(h.get("ESUB-OP"), None);
    }

    #[test]
    fn encodes_and_reads_back() {
        let mut h = Headers::new();
        h.append("Esub-Op", "rep").append("Esub-Token", "a%20b").append("Esub-Op", "where");
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        assert_eq!(
            out,
            b"NATS/1.0\r\nEsub-Op: rep\r\nEsub-Token: a%20b\r\nEsub-Op: where\r\n\r\n".as_slice()
        );
        assert_eq!(Headers::parse(&out).unwrap(), h);
        assert_eq!(h.get_all("Esub-Op").collect::<Vec<_>>(), ["rep", "where"]);

        let status = Headers { status: Some(503), ..Headers::default() };
        out.clear();
        status.encode(&mut out).unwrap();
        assert_eq!(out, b"NATS/1.0 503\r\n\r\n");
        assert!(Headers::parse(&out).unwrap().is_no_responders());

        // Found by fuzzing: a status below 100 parsed but did not encode.
        let odd = Headers::parse(b"NATS/1.0 006\r\n\r\n").unwrap();
        assert_eq!(odd.status, Some(6));
        out.clear();
        odd.encode(&mut out).unwrap();
        assert_eq!(out, b"NATS/1.0 006\r\n\r\n");
        let too_big = Headers { status: Some(1000), ..Headers::default() };
        assert_eq!(too_big.encode(&mut Vec::new()), Err(EncodeError::BadHeader));
    }

    #[test]
    fn refuses_to_encode_what_would_break_the_block() {
        let bad = [("A:b", "v"), ("", "v"), ("A b", "v"), ("A", "v\r\nB: w"), ("A", "v\n")];
        for (n, v) in bad {
            let mut h = Headers::new();
            h.append(n, v);
            assert_eq!(h.encode(&mut Vec::new()), Err(EncodeError::BadHeader), "{n:?}: {v:?}");
        }
    }
}
