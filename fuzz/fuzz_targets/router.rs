//! `route(method, target)` on arbitrary request lines. Input: `METHOD SP target`, the method being
//! the bytes before the first space (lossily UTF-8: httparse only hands over ASCII tokens).
//! A routed key is bounded and is exactly what its re-encoded form routes to.
#![no_main]

use esub::http::query::{Query, percent_decode};
use esub::router::{Holder, MAX_KEY_BYTES, Route, RouteError, route};
use libfuzzer_sys::fuzz_target;

/// Where a route comes from and what it carries: the path (for a keyed route, the prefix before
/// the key), the method that routes it, the key and the query (`HEAD` ignores the query). A new
/// route is added here.
struct Parts<'a> {
    path: &'static str,
    method: &'static str,
    key: Option<&'a str>,
    query: Option<&'a Query>,
}

fn parts(r: &Route) -> Parts<'_> {
    let (path, method, key, query) = match r {
        Route::Ping => ("/ping", "GET", None, None),
        Route::Info => ("/info", "GET", None, None),
        Route::Keys { .. } => ("/keys", "GET", None, None),
        Route::Metrics => ("/metrics", "GET", None, None),
        Route::Members => ("/members", "GET", None, None),
        Route::Join { .. } => ("/join", "POST", None, None),
        Route::Announce { .. } => ("/announce", "GET", None, None),
        Route::Prep { query } => ("/prep", "GET", None, Some(query)),
        Route::Sub { key, query } => ("/sub/", "GET", Some(key.as_str()), Some(query)),
        Route::Rep { key, query } => ("/rep/", "POST", Some(key.as_str()), Some(query)),
        Route::Psub { key, query } => ("/psub/", "GET", Some(key.as_str()), Some(query)),
        Route::Rsub { key, query } => ("/rsub/", "GET", Some(key.as_str()), Some(query)),
        Route::Head { of, key, .. } => {
            let path = match of {
                Holder::Sub => "/sub/",
                Holder::Psub => "/psub/",
                Holder::Rep => "/rep/",
                Holder::Rsub => "/rsub/",
            };
            (path, "HEAD", Some(key.as_str()), None)
        }
        Route::Topic { .. } => unreachable!("checked by check_topic"),
    };
    Parts { path, method, key, query }
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The query string a `Query` stands for, in canonical form.
fn encode_query(q: &Query) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &q.token {
        parts.push(format!("token={}", encode(t.as_bytes())));
    }
    if let Some(u) = &q.nats {
        parts.push(format!("nats={}", encode(u.as_bytes())));
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
            parts.push(format!("{name}=1"));
        }
    }
    parts.join("&")
}

fn check_routed(method: &str, target: &[u8], got: &Route) {
    let (path, raw_query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let p = parts(got);
    assert_eq!(method, p.method, "{got:?} by the wrong method");
    if let Some(query) = p.query {
        assert_eq!(Query::parse(raw_query).as_ref(), Ok(query), "the route's query");
        assert!(query.token.as_deref() != Some(""), "empty token");
    }
    let Some(key) = p.key else {
        assert_eq!(path, p.path.as_bytes(), "{got:?} from another path");
        return;
    };
    let raw_key = path.strip_prefix(p.path.as_bytes()).expect("a keyed route's prefix");
    if let Route::Head { path: got_path, .. } = got {
        assert_eq!(got_path.as_bytes(), path, "HEAD keeps the path as received");
    }
    assert!(!key.is_empty(), "empty key");
    assert!(key.len() <= MAX_KEY_BYTES, "key of {} bytes", key.len());
    assert!(!raw_key.contains(&b'/'), "raw key {raw_key:?} has a '/'");
    // A decoded '/' can only come from an escaped one (`%2F`), never split the path.
    if key.contains('/') {
        assert!(
            raw_key.windows(3).any(|w| w.eq_ignore_ascii_case(b"%2f")),
            "key {key:?} has a '/' its raw form {raw_key:?} does not escape"
        );
    }
    assert_eq!(percent_decode(raw_key, false).as_deref(), Ok(key.as_bytes()));

    // Re-encoded, the key routes to the same route and key (and no query: the default one).
    let plain = format!("{}{}", p.path, encode(key.as_bytes()));
    let again = route(method, plain.as_bytes()).expect("re-encoded key routes");
    let q = parts(&again);
    assert_eq!((q.path, q.key), (p.path, p.key), "re-encoded key {plain}");
    let Some(query) = p.query else { return };
    assert_eq!(q.query, Some(&Query::default()), "re-encoded key {plain}");
    // With the query re-encoded too, the very same route.
    let full = format!("{plain}?{}", encode_query(query));
    assert_eq!(route(method, full.as_bytes()).as_ref(), Ok(got), "re-encoded target {full}");
}

/// `/v1/...` and `/alive` go to the topics router whole; it answers 404 by path, and a 405 names
/// methods that route the same target.
fn check_topic(method: &str, target: &[u8], m: &str, t: &[u8]) {
    use esub::topics::route::{TRouteError, route as troute};
    assert!(esub::http::request::is_topic_target(target), "not a topic target");
    assert_eq!((m, t), (method, target), "the topic route carries its request line");
    match troute(method, target) {
        Ok(_) => {}
        Err(TRouteError::NotFound) => {}
        Err(TRouteError::MethodNotAllowed(allow)) => {
            for other in allow.split(", ") {
                assert_ne!(other, method, "{method} refused although allowed");
                assert!(
                    !matches!(troute(other, target), Err(TRouteError::MethodNotAllowed(_))),
                    "{other} is in Allow but refused"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (method, target) = match data.iter().position(|&b| b == b' ') {
        Some(sp) => (String::from_utf8_lossy(&data[..sp]), &data[sp + 1..]),
        None => ("GET".into(), data),
    };
    match route(&method, target) {
        Ok(Route::Topic { method: m, target: t }) => check_topic(&method, target, &m, &t),
        Ok(got) => check_routed(&method, target, &got),
        // 405 is for a path that exists: its own method routes it (or finds its query bad).
        Err(RouteError::MethodNotAllowed(allow)) => {
            for m in allow.split(", ") {
                assert_ne!(&*method, m);
                assert!(
                    !matches!(
                        route(m, target),
                        Err(RouteError::MethodNotAllowed(_) | RouteError::NotFound)
                    ),
                    "{m} is not allowed on the path it was offered for"
                );
            }
        }
        // 404 is decided by the path alone.
        Err(RouteError::NotFound) => {
            for m in ["GET", "POST", "PUT", "HEAD"] {
                assert_eq!(route(m, target), Err(RouteError::NotFound), "{m}");
            }
        }
        Err(RouteError::BadRequest(_)) => {}
    }
});
