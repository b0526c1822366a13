//! `(method, target) -> TRoute` for `/v1/` paths and `/alive` (API-topics.md section 3): pure,
//! table-tested. Path names are returned raw; the handlers check them in the contract's order.

use crate::http::query::percent_decode;

/// Where a `/v1/` request goes. Names are the raw path segments, borrowed from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TRoute<'a> {
    Alive,
    Pub {
        topic: &'a str,
        ver: &'a str,
    },
    WsPub {
        topic: &'a str,
        ver: &'a str,
    },
    Sub {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    Bury {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    WsSub {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    Offsets {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
        group: &'a str,
    },
    Seek {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
        group: &'a str,
        partition: &'a str,
    },
    CreateTopic {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    Partitions {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    /// 6: create a group's retry and dead queues.
    Shadow {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
        group: &'a str,
    },
    /// 7: schedule (`POST`) or cancel (`DELETE`) a job.
    JobAdd {
        topic: &'a str,
        ver: &'a str,
    },
    JobCancel {
        topic: &'a str,
        ver: &'a str,
    },
    /// 7: kateway's job-queue creation (admin).
    JobQueue {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    /// 8: status and lag.
    Status,
    TopicStatus {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
    SubStatus,
    Subd {
        topic: &'a str,
        ver: &'a str,
    },
    GroupDelete {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
        group: &'a str,
    },
    Peek {
        appid: &'a str,
        topic: &'a str,
        ver: &'a str,
    },
}

/// Why a `/v1/` request has no route: 404 or 405 with `Allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TRouteError {
    NotFound,
    MethodNotAllowed(&'static str),
}

/// Decoded query parameters, in order; the first of a repeated name wins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, Vec<u8>)>);

impl Params {
    /// Form-decodes the text after `?`; a malformed escape is `None`.
    pub fn parse(raw: &[u8]) -> Option<Params> {
        let mut v = Vec::new();
        for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &b""[..]),
            };
            let name = percent_decode(name, true).ok()?;
            let value = percent_decode(value, true).ok()?;
            v.push((String::from_utf8_lossy(&name).into_owned(), value));
        }
        Some(Params(v))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The value as text (`None` when absent or not UTF-8).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A flag is on only when exactly `1` (section 1).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) == Some(b"1")
    }
}

/// Routes a `/v1/` or `/alive` target.
pub fn route<'a>(method: &str, target: &'a [u8]) -> Result<(TRoute<'a>, Params), TRouteError> {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let path = std::str::from_utf8(path).map_err(|_| TRouteError::NotFound)?;
    // No route has more than 7 segments: a longer path is not found, without a Vec.
    let mut segs = [""; 8];
    let mut n = 0;
    // Split on the byte, not `str::split(char)`'s searcher: a route is a handful of short
    // segments, and `/` is ASCII, so every cut is on a character boundary.
    let mut start = None;
    for (i, b) in path.bytes().chain(std::iter::once(b'/')).enumerate() {
        if b != b'/' {
            continue;
        }
        if let Some(from) = start {
            if n == segs.len() {
                return Err(TRouteError::NotFound);
            }
            segs[n] = &path[from..i];
            n += 1;
        }
        start = Some(i + 1);
    }
    let s = |i: usize| segs[i];
    let (route, allow) = match &segs[..n] {
        ["alive"] => ((method == "GET").then_some(TRoute::Alive), "GET"),
        ["v1", "msgs", _, _] => {
            ((method == "POST").then(|| TRoute::Pub { topic: s(2), ver: s(3) }), "POST")
        }
        ["v1", "ws", "msgs", _, _] => {
            ((method == "GET").then(|| TRoute::WsPub { topic: s(3), ver: s(4) }), "GET")
        }
        ["v1", "msgs", _, _, _] => (
            match method {
                "GET" => Some(TRoute::Sub { appid: s(2), topic: s(3), ver: s(4) }),
                "PUT" => Some(TRoute::Bury { appid: s(2), topic: s(3), ver: s(4) }),
                _ => None,
            },
            "GET, PUT",
        ),
        ["v1", "ws", "msgs", _, _, _] => (
            (method == "GET").then(|| TRoute::WsSub { appid: s(3), topic: s(4), ver: s(5) }),
            "GET",
        ),
        ["v1", "offsets", _, _, _, _] => (
            (method == "PUT").then(|| TRoute::Offsets {
                appid: s(2),
                topic: s(3),
                ver: s(4),
                group: s(5),
            }),
            "PUT",
        ),
        ["v1", "offset", _, _, _, _, _] => (
            (method == "PUT").then(|| TRoute::Seek {
                appid: s(2),
                topic: s(3),
                ver: s(4),
                group: s(5),
                partition: s(6),
            }),
            "PUT",
        ),
        ["v1", "topics", _, _, _] => (
            (method == "POST").then(|| TRoute::CreateTopic { appid: s(2), topic: s(3), ver: s(4) }),
            "POST",
        ),
        ["v1", "partitions", _, _, _] => (
            (method == "GET").then(|| TRoute::Partitions { appid: s(2), topic: s(3), ver: s(4) }),
            "GET",
        ),
        ["v1", "shadow", _, _, _, _] => (
            (method == "POST").then(|| TRoute::Shadow {
                appid: s(2),
                topic: s(3),
                ver: s(4),
                group: s(5),
            }),
            "POST",
        ),
        ["v1", "jobs", _, _] => (
            match method {
                "POST" => Some(TRoute::JobAdd { topic: s(2), ver: s(3) }),
                "DELETE" => Some(TRoute::JobCancel { topic: s(2), ver: s(3) }),
                _ => None,
            },
            "POST, DELETE",
        ),
        ["v1", "jobs", _, _, _] => (
            (method == "POST").then(|| TRoute::JobQueue { appid: s(2), topic: s(3), ver: s(4) }),
            "POST",
        ),
        ["v1", "status"] => ((method == "GET").then_some(TRoute::Status), "GET"),
        ["v1", "status", _, _, _] => (
            (method == "GET").then(|| TRoute::TopicStatus { appid: s(2), topic: s(3), ver: s(4) }),
            "GET",
        ),
        ["v1", "sub", "status"] => ((method == "GET").then_some(TRoute::SubStatus), "GET"),
        ["v1", "subd", _, _] => {
            ((method == "GET").then(|| TRoute::Subd { topic: s(2), ver: s(3) }), "GET")
        }
        ["v1", "groups", _, _, _, _] => (
            (method == "DELETE").then(|| TRoute::GroupDelete {
                appid: s(2),
                topic: s(3),
                ver: s(4),
                group: s(5),
            }),
            "DELETE",
        ),
        ["v1", "peek", _, _, _] => {
            ((method == "GET").then(|| TRoute::Peek { appid: s(2), topic: s(3), ver: s(4) }), "GET")
        }
        _ => return Err(TRouteError::NotFound),
    };
    let route = route.ok_or(TRouteError::MethodNotAllowed(allow))?;
    // A malformed escape in the query: nothing it names can be trusted.
    let params = Params::parse(query).ok_or(TRouteError::NotFound)?;
    Ok((route, params))
}

/// `[A-Za-z0-9_-]{1,max}`.
pub fn valid_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use TRouteError::*;
        fn ok<'a>(m: &str, t: &'a str) -> Result<TRoute<'a>, TRouteError> {
            route(m, t.as_bytes()).map(|(r, _)| r)
        }
        assert_eq!(ok("GET", "/alive"), Ok(TRoute::Alive));
        assert_eq!(ok("POST", "/alive"), Err(MethodNotAllowed("GET")));
        assert_eq!(ok("POST", "/v1/msgs/t/v1?key=k"), Ok(TRoute::Pub { topic: "t", ver: "v1" }));
        assert_eq!(ok("GET", "/v1/msgs/t/v1"), Err(MethodNotAllowed("POST")));
        assert_eq!(
            ok("PUT", "/v1/msgs/a/t/v1"),
            Ok(TRoute::Bury { appid: "a", topic: "t", ver: "v1" })
        );
        assert_eq!(ok("DELETE", "/v1/msgs/a/t/v1"), Err(MethodNotAllowed("GET, PUT")));
        assert_eq!(ok("GET", "/v1/nope"), Err(NotFound));
        assert_eq!(ok("GET", "/v1/msgs/a/t/v1/x"), Err(NotFound));
        // Longer than any route (8 segments and more): not found, however long.
        assert_eq!(ok("GET", "/v1/offset/a/t/v/g/3/x"), Err(NotFound));
        assert_eq!(ok("GET", &"/x".repeat(1000)), Err(NotFound));
        assert_eq!(ok("GET", "/v1/clusters"), Err(NotFound));
        assert_eq!(
            ok("PUT", "/v1/offset/a/t/v/g/3"),
            Ok(TRoute::Seek { appid: "a", topic: "t", ver: "v", group: "g", partition: "3" })
        );
        let (_, p) = route("GET", b"/v1/msgs/a/t/v?group=g&ack=1&batch=&x=%41").unwrap();
        assert_eq!(
            (p.text("group"), p.flag("ack"), p.get("batch")),
            (Some("g"), true, Some(&b""[..]))
        );
        assert_eq!(p.text("x"), Some("A"));
        assert!(valid_name("a-Z_09", 64) && !valid_name("", 64) && !valid_name("a.b", 64));
        assert!(!valid_name(&"a".repeat(17), 16) && valid_name(&"a".repeat(16), 16));
    }
}
