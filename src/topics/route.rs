//! `(method, target) -> TRoute` for `/v1/` paths and `/alive` (API-topics.md section 3): pure,
//! table-tested. Path names are returned raw; the handlers check them in the contract's order.

use crate::http::query::percent_decode;

/// Where a `/v1/` request goes. Names are the raw path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TRoute {
    Alive,
    Pub {
        topic: String,
        ver: String,
    },
    WsPub {
        topic: String,
        ver: String,
    },
    Sub {
        appid: String,
        topic: String,
        ver: String,
    },
    Bury {
        appid: String,
        topic: String,
        ver: String,
    },
    WsSub {
        appid: String,
        topic: String,
        ver: String,
    },
    Offsets {
        appid: String,
        topic: String,
        ver: String,
        group: String,
    },
    Seek {
        appid: String,
        topic: String,
        ver: String,
        group: String,
        partition: String,
    },
    CreateTopic {
        appid: String,
        topic: String,
        ver: String,
    },
    Partitions {
        appid: String,
        topic: String,
        ver: String,
    },
    /// 6: create a group's retry and dead queues.
    Shadow {
        appid: String,
        topic: String,
        ver: String,
        group: String,
    },
    /// 7: schedule (`POST`) or cancel (`DELETE`) a job.
    JobAdd {
        topic: String,
        ver: String,
    },
    JobCancel {
        topic: String,
        ver: String,
    },
    /// 7: kateway's job-queue creation (admin).
    JobQueue {
        appid: String,
        topic: String,
        ver: String,
    },
    /// 8: status and lag.
    Status,
    TopicStatus {
        appid: String,
        topic: String,
        ver: String,
    },
    SubStatus,
    Subd {
        topic: String,
        ver: String,
    },
    GroupDelete {
        appid: String,
        topic: String,
        ver: String,
        group: String,
    },
    Peek {
        appid: String,
        topic: String,
        ver: String,
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
pub fn route(method: &str, target: &[u8]) -> Result<(TRoute, Params), TRouteError> {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let path = std::str::from_utf8(path).map_err(|_| TRouteError::NotFound)?;
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let s = |i: usize| segs[i].to_string();
    let (route, allow) = match segs.as_slice() {
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
        let ok = |m: &str, t: &str| route(m, t.as_bytes()).map(|(r, _)| r);
        assert_eq!(ok("GET", "/alive"), Ok(TRoute::Alive));
        assert_eq!(ok("POST", "/alive"), Err(MethodNotAllowed("GET")));
        assert_eq!(
            ok("POST", "/v1/msgs/t/v1?key=k"),
            Ok(TRoute::Pub { topic: "t".into(), ver: "v1".into() })
        );
        assert_eq!(ok("GET", "/v1/msgs/t/v1"), Err(MethodNotAllowed("POST")));
        assert_eq!(
            ok("PUT", "/v1/msgs/a/t/v1"),
            Ok(TRoute::Bury { appid: "a".into(), topic: "t".into(), ver: "v1".into() })
        );
        assert_eq!(ok("DELETE", "/v1/msgs/a/t/v1"), Err(MethodNotAllowed("GET, PUT")));
        assert_eq!(ok("GET", "/v1/nope"), Err(NotFound));
        assert_eq!(ok("GET", "/v1/msgs/a/t/v1/x"), Err(NotFound));
        assert_eq!(ok("GET", "/v1/clusters"), Err(NotFound));
        assert_eq!(
            ok("PUT", "/v1/offset/a/t/v/g/3"),
            Ok(TRoute::Seek {
                appid: "a".into(),
                topic: "t".into(),
                ver: "v".into(),
                group: "g".into(),
                partition: "3".into()
            })
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
