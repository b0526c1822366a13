//! `(method, target) -> Route`: pure, table-tested and fuzzed. Keys are decoded and bounded here.

use std::borrow::Cow;

use crate::http::query::{Query, param, percent_decode};

/// Longest key after percent-decoding (API.md section 1).
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Ping,
    Info,
    /// `GET /keys`: `local` (`?local=1`) asks for this node's keys alone in cluster mode.
    Keys {
        local: bool,
    },
    Metrics,
    /// `GET /members` (API-cluster.md section 2).
    Members,
    /// `POST /join?nats=<url>` (API-cluster.md section 2).
    Join {
        nats: Option<String>,
    },
    /// `GET /announce?since=N&wait_ms=M` (API-cluster.md section 2).
    Announce {
        since: Option<i64>,
        wait_ms: Option<u64>,
    },
    Sub {
        key: String,
        query: Query,
    },
    Rep {
        key: String,
        query: Query,
    },
    Psub {
        key: String,
        query: Query,
    },
    Prep {
        query: Query,
    },
    Rsub {
        key: String,
        query: Query,
    },
    /// `HEAD /sub|/psub|/rep|/rsub/K` (API-cluster.md section 3): where `of` is held; `path`
    /// is the request's path as received, without its query.
    Head {
        of: Holder,
        key: String,
        path: String,
    },
    /// `/v1/...` and `/alive`: the topics half routes these itself (`topics::route`).
    Topic {
        /// The usual methods are static names: no allocation per request.
        method: Cow<'static, str>,
        target: Vec<u8>,
    },
}

/// What a `HEAD` asks for the node of: a waiting sub, a psub pool, where a rep would go (the
/// sub's node, else a pool's), or stored reps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Sub,
    Psub,
    Rep,
    Rsub,
}

/// Why a request has no route; each variant names the response it becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// 404 `Not Found`.
    NotFound,
    /// 405 with this `Allow` header.
    MethodNotAllowed(&'static str),
    /// 400: bad percent-encoding, a key over 256 bytes or not UTF-8.
    BadRequest(&'static str),
}

/// The routes by first segment: does it take a key, and which method.
const TABLE: &[(&str, bool, &str)] = &[
    ("ping", false, "GET"),
    ("info", false, "GET"),
    ("keys", false, "GET"),
    ("metrics", false, "GET"),
    ("members", false, "GET"),
    ("join", false, "POST"),
    ("announce", false, "GET"),
    ("sub", true, "GET, HEAD"),
    ("rep", true, "POST, HEAD"),
    ("psub", true, "GET, HEAD"),
    ("prep", false, "GET"),
    ("rsub", true, "GET, HEAD"),
];

/// `method` as a static name when it is one of HTTP's usual ones.
fn method_name(method: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    match KNOWN.iter().find(|&&m| m == method) {
        Some(&m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_string()),
    }
}

/// Routes an origin-form request target (`/path?query`).
pub fn route(method: &str, target: &[u8]) -> Result<Route, RouteError> {
    if crate::http::request::is_topic_target(target) {
        return Ok(Route::Topic { method: method_name(method), target: target.to_vec() });
    }
    let (path, raw_query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let rest = path.strip_prefix(b"/").ok_or(RouteError::NotFound)?;
    let (first, key) = match rest.iter().position(|&b| b == b'/') {
        Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
        None => (rest, None),
    };
    let &(name, keyed, allow) =
        TABLE.iter().find(|(name, _, _)| name.as_bytes() == first).ok_or(RouteError::NotFound)?;
    let key = match (keyed, key) {
        (false, None) => None,
        (true, Some(k)) if !k.is_empty() && !k.contains(&b'/') => Some(decode_key(k)?),
        _ => return Err(RouteError::NotFound),
    };
    if !allow.split(", ").any(|m| m == method) {
        return Err(RouteError::MethodNotAllowed(allow));
    }
    if method == "HEAD" {
        let of = match name {
            "sub" => Holder::Sub,
            "psub" => Holder::Psub,
            "rep" => Holder::Rep,
            _ => Holder::Rsub,
        };
        let key = key.ok_or(RouteError::NotFound)?;
        // The answer's `Location` repeats the path as received (API-cluster.md section 3), and
        // a response head here is text: a raw path that is not UTF-8 (bytes that only make text
        // once its escapes are decoded) is refused like a key that is not.
        let path = std::str::from_utf8(path)
            .map_err(|_| RouteError::BadRequest("Key is not UTF-8"))?
            .to_string();
        return Ok(Route::Head { of, key, path });
    }
    let query = || Query::parse(raw_query).map_err(|_| RouteError::BadRequest("Bad query string"));
    Ok(match (name, key) {
        ("ping", _) => Route::Ping,
        ("info", _) => Route::Info,
        ("keys", _) => Route::Keys { local: query()?.local },
        ("metrics", _) => Route::Metrics,
        ("members", _) => Route::Members,
        ("join", _) => Route::Join { nats: query()?.nats },
        ("announce", _) => {
            query()?;
            let since = integer(raw_query, b"since").ok_or(RouteError::BadRequest("Bad since"))?;
            let wait =
                integer(raw_query, b"wait_ms").ok_or(RouteError::BadRequest("Bad wait_ms"))?;
            Route::Announce { since, wait_ms: wait }
        }
        ("sub", Some(key)) => Route::Sub { key, query: query()? },
        ("rep", Some(key)) => Route::Rep { key, query: query()? },
        ("psub", Some(key)) => Route::Psub { key, query: query()? },
        ("prep", None) => Route::Prep { query: query()? },
        ("rsub", Some(key)) => Route::Rsub { key, query: query()? },
        _ => return Err(RouteError::NotFound),
    })
}

/// Parameter `name` as an integer: `Some(None)` when absent, `None` when it is not one.
fn integer<T: std::str::FromStr>(raw_query: &[u8], name: &[u8]) -> Option<Option<T>> {
    match param(raw_query, name) {
        Ok(None) => Some(None),
        Ok(Some(v)) => std::str::from_utf8(&v).ok()?.parse().ok().map(Some),
        Err(_) => None,
    }
}

fn decode_key(raw: &[u8]) -> Result<String, RouteError> {
    let bytes = percent_decode(raw, false).map_err(|_| RouteError::BadRequest("Bad key"))?;
    if bytes.is_empty() {
        return Err(RouteError::NotFound);
    }
    if bytes.len() > MAX_KEY_BYTES {
        return Err(RouteError::BadRequest("Key too long"));
    }
    String::from_utf8(bytes).map_err(|_| RouteError::BadRequest("Key is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(key: &str, token: Option<&str>) -> Result<Route, RouteError> {
        let query = Query { token: token.map(str::to_string), ..Query::default() };
        Ok(Route::Sub { key: key.to_string(), query })
    }

    /// `%E2%82` then a raw 0xA5 decode to the text `₥`, but the path as sent is not text: a
    /// `HEAD`, whose `Location` repeats that path, refuses it (found by fuzz/router); the other
    /// methods route the decoded key.
    #[test]
    fn head_refuses_a_raw_path_that_is_not_text() {
        let target = b"/sub/%E2%82\xA5AC";
        assert_eq!(route("HEAD", target), Err(RouteError::BadRequest("Key is not UTF-8")));
        assert_eq!(route("GET", target), sub("\u{20A5}AC", None));
        assert_eq!(
            route("HEAD", "/sub/\u{20A5}AC".as_bytes()),
            head(Holder::Sub, "\u{20A5}AC", "/sub/\u{20A5}AC")
        );
    }

    fn join(nats: Option<&str>) -> Result<Route, RouteError> {
        Ok(Route::Join { nats: nats.map(str::to_string) })
    }

    fn head(of: Holder, key: &str, path: &str) -> Result<Route, RouteError> {
        Ok(Route::Head { of, key: key.to_string(), path: path.to_string() })
    }

    #[test]
    fn table() {
        use RouteError::*;
        let long = format!("/sub/{}", "k".repeat(257));
        let max = format!("/sub/{}", "k".repeat(256));
        let max_escaped = format!("/sub/{}", "%41".repeat(256));
        let rows: Vec<(&str, &str, Result<Route, RouteError>)> = vec![
            ("GET", "/ping", Ok(Route::Ping)),
            ("GET", "/ping?x=1", Ok(Route::Ping)),
            ("GET", "/info", Ok(Route::Info)),
            ("GET", "/keys", Ok(Route::Keys { local: false })),
            ("GET", "/keys?local=1", Ok(Route::Keys { local: true })),
            ("GET", "/keys?local=0", Ok(Route::Keys { local: false })),
            ("GET", "/members", Ok(Route::Members)),
            ("POST", "/members", Err(MethodNotAllowed("GET"))),
            ("POST", "/join?nats=nats%3A%2F%2Fh%3A1", join(Some("nats://h:1"))),
            ("POST", "/join", join(None)),
            ("GET", "/join", Err(MethodNotAllowed("POST"))),
            ("GET", "/announce", Ok(Route::Announce { since: None, wait_ms: None })),
            (
                "GET",
                "/announce?since=5&wait_ms=0",
                Ok(Route::Announce { since: Some(5), wait_ms: Some(0) }),
            ),
            ("GET", "/announce?since=-1", Ok(Route::Announce { since: Some(-1), wait_ms: None })),
            ("GET", "/announce?since=x", Err(BadRequest("Bad since"))),
            ("GET", "/announce?since=", Err(BadRequest("Bad since"))),
            ("GET", "/announce?wait_ms=1.5", Err(BadRequest("Bad wait_ms"))),
            ("GET", "/announce?wait_ms=-1", Err(BadRequest("Bad wait_ms"))),
            ("POST", "/announce", Err(MethodNotAllowed("GET"))),
            ("GET", "/announce/k", Err(NotFound)),
            ("POST", "/ping", Err(MethodNotAllowed("GET"))),
            ("HEAD", "/keys", Err(MethodNotAllowed("GET"))),
            ("GET", "/ping/x", Err(NotFound)),
            ("GET", "/", Err(NotFound)),
            ("GET", "", Err(NotFound)),
            ("GET", "*", Err(NotFound)),
            ("GET", "/nope", Err(NotFound)),
            ("GET", "/sub", Err(NotFound)),
            ("GET", "/sub/", Err(NotFound)),
            ("GET", "/sub/a/b", Err(NotFound)),
            ("GET", "/sub/a/", Err(NotFound)),
            ("GET", "/sub/abc", sub("abc", None)),
            ("GET", "/sub/a%20b?token=x+y", sub("a b", Some("x y"))),
            ("GET", "/sub/a+b", sub("a+b", None)),
            ("GET", "/sub/%2F", sub("/", None)),
            ("GET", "/sub/k?token=", sub("k", None)),
            ("GET", "/sub/%zz", Err(BadRequest("Bad key"))),
            ("GET", "/sub/%ff", Err(BadRequest("Key is not UTF-8"))),
            ("GET", "/sub/k?token=%z", Err(BadRequest("Bad query string"))),
            ("GET", &long, Err(BadRequest("Key too long"))),
            ("GET", &max, sub(&"k".repeat(256), None)),
            ("GET", &max_escaped, sub(&"A".repeat(256), None)),
            ("POST", "/sub/k", Err(MethodNotAllowed("GET, HEAD"))),
            ("GET", "/rep/k", Err(MethodNotAllowed("POST, HEAD"))),
            ("get", "/ping", Err(MethodNotAllowed("GET"))),
            ("POST", "/psub/k", Err(MethodNotAllowed("GET, HEAD"))),
            ("PUT", "/rsub/k", Err(MethodNotAllowed("GET, HEAD"))),
            ("HEAD", "/prep", Err(MethodNotAllowed("GET"))),
            ("HEAD", "/sub/a%20b?token=t", head(Holder::Sub, "a b", "/sub/a%20b")),
            ("HEAD", "/psub/p", head(Holder::Psub, "p", "/psub/p")),
            ("HEAD", "/rep/r?psub=1", head(Holder::Rep, "r", "/rep/r")),
            ("HEAD", "/rsub/s", head(Holder::Rsub, "s", "/rsub/s")),
            ("HEAD", "/rsub/%zz", Err(BadRequest("Bad key"))),
            ("HEAD", "/rsub/", Err(NotFound)),
            ("GET", "/psub", Err(NotFound)),
            ("GET", "/prep", Ok(Route::Prep { query: Query::default() })),
            ("GET", "/prep/x", Err(NotFound)),
        ];
        for (method, target, want) in rows {
            assert_eq!(route(method, target.as_bytes()), want, "{method} {target}");
        }
        match route("POST", b"/rep/k?token=t&psub=1").unwrap() {
            Route::Rep { key, query } => {
                assert_eq!(key, "k");
                assert_eq!(query.token.as_deref(), Some("t"));
                assert!(query.psub);
            }
            other => panic!("{other:?}"),
        }
    }
}
