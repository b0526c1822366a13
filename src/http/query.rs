//! Percent-decoding of path segments and form-decoding of query strings (`+` is a space there).

use std::borrow::Cow;

/// Malformed percent-encoding (a `%` not followed by two hex digits): the request gets 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (query strings only).
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex).ok_or(DecodeError)?;
                let lo = input.get(i + 2).copied().and_then(hex).ok_or(DecodeError)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Form-decodes, borrowing the input when it holds nothing to decode.
fn decode_cow(input: &[u8]) -> Result<Cow<'_, [u8]>, DecodeError> {
    if input.iter().any(|&b| b == b'%' || b == b'+') {
        percent_decode(input, true).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(input))
    }
}

/// The query parameters esub reads. Unknown parameters are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `None` when absent or empty: both mean "no token".
    pub token: Option<String>,
    /// `psub=1` (or `true`): deliver to the psub pool only.
    pub psub: bool,
    pub shared: bool,
    pub replay: bool,
    pub confirm: bool,
    /// `local=1` on `/keys`: this node's keys, in cluster mode too.
    pub local: bool,
    /// `nats=<url>` on `/join`.
    pub nats: Option<String>,
}

/// `1`, `true`, `yes` and `on` are true; anything else (including absence) is false.
fn truthy(v: &[u8]) -> bool {
    matches!(v, b"1" | b"true" | b"yes" | b"on")
}

impl Query {
    /// Form-decodes `raw` (the text after `?`). A token that is not UTF-8 is a `DecodeError`.
    pub fn parse(raw: &[u8]) -> Result<Query, DecodeError> {
        let mut q = Query::default();
        for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &b""[..]),
            };
            // Every pair is checked (bad escapes are 400 wherever they are), but only escapes cost
            // an allocation: a plain `token=abc` is copied once, into the token itself.
            let name = decode_cow(name)?;
            let value = decode_cow(value)?;
            match &*name {
                b"token" => {
                    let t = String::from_utf8(value.into_owned()).map_err(|_| DecodeError)?;
                    q.token = (!t.is_empty()).then_some(t);
                }
                b"psub" => q.psub = truthy(&value),
                b"shared" => q.shared = truthy(&value),
                b"replay" => q.replay = truthy(&value),
                b"confirm" => q.confirm = truthy(&value),
                b"local" => q.local = truthy(&value),
                b"nats" => {
                    let u = String::from_utf8(value.into_owned()).map_err(|_| DecodeError)?;
                    q.nats = (!u.is_empty()).then_some(u);
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The last value of parameter `name` in `raw` (the text after `?`), form-decoded; `None` when
/// it is absent.
pub fn param(raw: &[u8], name: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
    let mut found = None;
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (n, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        if *decode_cow(n)? == *name {
            found = Some(decode_cow(value)?.into_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_table() {
        type Row<'a> = (&'a str, bool, Result<&'a [u8], DecodeError>);
        let rows: &[Row] = &[
            ("abc", false, Ok(b"abc")),
            ("a%20b", false, Ok(b"a b")),
            ("a+b", false, Ok(b"a+b")),
            ("a+b", true, Ok(b"a b")),
            ("%2B", true, Ok(b"+")),
            ("%ff%00", false, Ok(b"\xff\x00")),
            ("%", false, Err(DecodeError)),
            ("%a", false, Err(DecodeError)),
            ("%zz", false, Err(DecodeError)),
            ("x%g0", false, Err(DecodeError)),
            ("", false, Ok(b"")),
        ];
        for (input, plus, want) in rows {
            let got = percent_decode(input.as_bytes(), *plus);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{input}");
        }
    }

    #[test]
    fn query_table() {
        let q = Query::parse(b"token=a+b&psub=1").unwrap();
        assert_eq!(q.token.as_deref(), Some("a b"));
        assert!(q.psub);
        assert_eq!(Query::parse(b"token=").unwrap().token, None);
        assert_eq!(Query::parse(b"token").unwrap().token, None);
        assert_eq!(Query::parse(b"").unwrap(), Query::default());
        assert_eq!(Query::parse(b"x=1&&token=%41").unwrap().token.as_deref(), Some("A"));
        assert!(!Query::parse(b"psub=0").unwrap().psub);
        assert!(Query::parse(b"shared=true&replay=yes").unwrap().shared);
        assert_eq!(Query::parse(b"token=%zz"), Err(DecodeError));
        assert_eq!(Query::parse(b"token=%ff"), Err(DecodeError));
        assert_eq!(Query::parse(b"other=%zz"), Err(DecodeError));
        assert_eq!(param(b"since=4&x=1", b"since"), Ok(Some(b"4".to_vec())));
        assert_eq!(param(b"since=4&since=%35", b"since"), Ok(Some(b"5".to_vec())));
        assert_eq!(param(b"sinc%65", b"since"), Ok(Some(Vec::new())));
        assert_eq!(param(b"x=1", b"since"), Ok(None));
        assert_eq!(param(b"since=%z", b"since"), Err(DecodeError));
    }
}
