//! HTTP in general (API.md section 1) and the simple routes of section 2: framing, keep-alive,
//! pipelining, bodies, limits, timeouts, malformed input, key decoding.

mod common;

use common::{Client, Json, Server, keys_of, parse_json, percent_encode_all};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Simple routes
// ---------------------------------------------------------------------------------------------

#[test]
fn ping_answers_ok() {
    let s = Server::start(&[]);
    let r = s.get("/ping");
    r.assert(200, b"OK");
    assert_eq!(r.header("content-length"), Some("2"));
    assert_eq!(r.version, "HTTP/1.1");
}

#[test]
fn ping_ignores_query_string() {
    let s = Server::start(&[]);
    s.get("/ping?x=1&y").assert(200, b"OK");
}

#[test]
fn info_starts_with_name_and_has_ip() {
    let s = Server::start(&[]);
    let r = s.get("/info");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.body_str();
    assert!(text.starts_with("{\"name\":"), "info must start with {{\"name\": got {text:?}");
    let j = parse_json(&text).unwrap_or_else(|e| panic!("info is not JSON ({e}): {text:?}"));
    assert_eq!(j.object_keys().first().copied(), Some("name"), "{text}");
    let name = j.get("name").and_then(Json::as_str).expect("name is a string");
    assert!(!name.is_empty(), "empty host name: {text}");
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        assert_eq!(name, host.trim(), "name is the host name");
    }
    let ip = j.get("ip").and_then(Json::as_str).unwrap_or_else(|| panic!("no ip: {text}"));
    ip.parse::<std::net::Ipv4Addr>().unwrap_or_else(|_| panic!("ip {ip:?} is not IPv4"));
}

#[test]
fn info_ip_comes_from_esub_node_ip() {
    let s = Server::start(&[("ESUB_NODE_IP", "10.9.8.7")]);
    let r = s.get("/info");
    assert_eq!(r.status, 200, "{r:?}");
    let j = parse_json(&r.body_str()).expect("info is JSON");
    assert_eq!(j.get("ip").and_then(Json::as_str), Some("10.9.8.7"), "{}", r.body_str());
}

#[test]
fn keys_is_204_when_empty_then_sorted_distinct_keys() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let r = c.get("/keys");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    assert!(!r.has_header("content-length"), "204 must not carry Content-Length: {r:?}");
    // The same connection still parses: the 204 carried no stray body bytes.
    c.get("/ping").assert(200, b"OK");

    let mut subs = Vec::new();
    for k in ["b", "aa", "c", "A", "a"] {
        subs.push(s.sub(&format!("/sub/{k}")));
    }
    s.wait_for_keys(&["b", "aa", "c", "A", "a"]);
    let r = c.get("/keys");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(keys_of(&r), vec!["A", "a", "aa", "b", "c"], "{}", r.body_str());

    // A taken-over key is listed once.
    let mut again = s.sub("/sub/b");
    subs[0].read_response().assert_text(409, "Sub taken over");
    let r = c.get("/keys");
    assert_eq!(keys_of(&r), vec!["A", "a", "aa", "b", "c"], "{}", r.body_str());
    drop(subs);
    s.post("/rep/b", b"x").assert(200, b"OK");
    again.read_response().assert_delivered(b"x");
}

#[test]
fn unknown_paths_are_404_not_found() {
    let s = Server::start(&[]);
    let cases: &[(&str, &str)] = &[
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/pingx"),
        ("GET", "/ping/x"),
        ("GET", "/keys/x"),
        ("GET", "/sub"),
        ("GET", "/sub/"),
        ("GET", "/sub/a/b"),
        ("GET", "/sub/a/"),
        ("GET", "/sub//a"),
        ("POST", "/rep"),
        ("POST", "/rep/"),
        ("POST", "/rep/a/b"),
        ("GET", "/nope?token=x"),
    ];
    let mut c = s.client();
    for (method, path) in cases {
        c.send(
            format!("{method} {path} HTTP/1.1\r\nHost: esub\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!((r.status, r.body_str().as_str()), (404, "Not Found"), "{method} {path}: {r:?}");
        assert_eq!(r.header("content-type"), Some(common::TEXT_PLAIN), "{method} {path}");
    }
}

#[test]
fn wrong_method_is_405_with_allow() {
    let s = Server::start(&[]);
    // (method, path, method that Allow must list, method it must not list)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("POST", "/ping", "GET", "POST"),
        ("POST", "/info", "GET", "POST"),
        ("POST", "/keys", "GET", "POST"),
        ("DELETE", "/keys", "GET", "DELETE"),
        ("GET", "/rep/x", "POST", "GET"),
        ("PUT", "/rep/x", "POST", "PUT"),
        ("POST", "/sub/x", "GET", "POST"),
        ("DELETE", "/sub/x", "GET", "DELETE"),
    ];
    let mut c = s.client();
    for (method, path, allowed, refused) in cases {
        c.send(
            format!("{method} {path} HTTP/1.1\r\nHost: esub\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.header("content-type"), Some(common::TEXT_PLAIN), "{method} {path}");
        let allow = r.allow();
        assert!(allow.iter().any(|m| m == allowed), "{method} {path}: Allow {allow:?}");
        assert!(!allow.iter().any(|m| m == refused), "{method} {path}: Allow {allow:?}");
    }
    // A 405 did not leave a sub behind.
    assert_eq!(s.keys(), Vec::<String>::new());
}

#[test]
fn wrong_method_with_body_keeps_connection_in_sync() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let r = c.post("/ping", b"some body the server must skip");
    assert_eq!(r.status, 405, "{r:?}");
    c.expect_closed_or_ping_ok();
}

// ---------------------------------------------------------------------------------------------
// Connection management
// ---------------------------------------------------------------------------------------------

#[test]
fn keep_alive_serves_several_requests_on_one_socket() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for _ in 0..5 {
        let r = c.get("/ping");
        r.assert(200, b"OK");
        assert!(!r.connection_has("close"), "keep-alive response says close: {r:?}");
    }
    assert_eq!(c.get("/keys").status, 204);
    c.post("/rep/nobody", b"abc").assert_text(404, "Unknown key");
    c.get("/nope").assert_text(404, "Not Found");
    c.get("/ping").assert(200, b"OK");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(
        b"GET /ping HTTP/1.1\r\nHost: esub\r\n\r\n\
          POST /rep/nobody HTTP/1.1\r\nHost: esub\r\nContent-Length: 3\r\n\r\nabc\
          GET /nope HTTP/1.1\r\nHost: esub\r\n\r\n\
          GET /keys HTTP/1.1\r\nHost: esub\r\n\r\n\
          POST /ping HTTP/1.1\r\nHost: esub\r\nContent-Length: 0\r\n\r\n\
          GET /ping HTTP/1.1\r\nHost: esub\r\n\r\n",
    );
    c.read_response().assert(200, b"OK");
    c.read_response().assert_text(404, "Unknown key");
    c.read_response().assert_text(404, "Not Found");
    assert_eq!(c.read_response().status, 204);
    assert_eq!(c.read_response().status, 405);
    c.read_response().assert(200, b"OK");
}

#[test]
fn pipelined_rep_after_parked_sub_elsewhere() {
    // Pipelined reps on one connection each reach their own sub, in order.
    let s = Server::start(&[]);
    let mut a = s.sub("/sub/p1");
    let mut b = s.sub("/sub/p2");
    s.wait_for_keys(&["p1", "p2"]);
    let mut c = s.client();
    c.send(
        b"POST /rep/p1 HTTP/1.1\r\nHost: esub\r\nContent-Length: 3\r\n\r\none\
          POST /rep/p2 HTTP/1.1\r\nHost: esub\r\nContent-Length: 3\r\n\r\ntwo\
          POST /rep/p1 HTTP/1.1\r\nHost: esub\r\nContent-Length: 5\r\n\r\nthree",
    );
    a.read_response().assert_delivered(b"one");
    b.read_response().assert_delivered(b"two");
    c.read_response().assert(200, b"OK");
    c.read_response().assert(200, b"OK");
    c.read_response().assert_text(404, "Unknown key");
}

#[test]
fn request_pipelined_behind_parked_sub_is_answered_after_delivery() {
    let s = Server::start(&[]);
    let mut sub = s.client();
    sub.send(
        b"GET /sub/first HTTP/1.1\r\nHost: esub\r\n\r\nGET /ping HTTP/1.1\r\nHost: esub\r\n\r\n",
    );
    s.wait_for_key("first");
    s.post("/rep/first", b"one").assert(200, b"OK");
    sub.read_response().assert_delivered(b"one");
    sub.read_response().assert(200, b"OK");
}

#[test]
fn header_names_and_chunked_coding_are_case_insensitive() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/case");
    s.wait_for_key("case");
    s.client()
        .send(b"POST /rep/case HTTP/1.1\r\nhost: esub\r\nTRANSFER-ENCODING: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    sub.read_response().assert_delivered(b"ok");
    let mut sub = s.sub("/sub/case");
    s.wait_for_key("case");
    let mut rep = s.client();
    rep.send(b"POST /rep/case HTTP/1.1\r\nhost: esub\r\ncontent-LENGTH: 3\r\n\r\nabc");
    sub.read_response().assert_delivered(b"abc");
    rep.read_response().assert(200, b"OK");
}

#[test]
fn http10_closes_after_response() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(b"GET /ping HTTP/1.0\r\n\r\n");
    c.read_response().assert(200, b"OK");
    c.expect_closed();
}

#[test]
fn http10_with_keep_alive_stays_open() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for _ in 0..3 {
        c.send(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        r.assert(200, b"OK");
        assert!(r.connection_has("keep-alive"), "1.0 keep-alive must be confirmed: {r:?}");
    }
    c.send(b"GET /ping HTTP/1.0\r\n\r\n");
    c.read_response().assert(200, b"OK");
    c.expect_closed();
}

#[test]
fn connection_close_is_honoured() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(b"GET /ping HTTP/1.1\r\nHost: esub\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    r.assert(200, b"OK");
    assert!(r.connection_has("close"), "{r:?}");
    c.expect_closed();

    // Also after an error response.
    let mut c = s.client();
    c.send(b"GET /nope HTTP/1.1\r\nHost: esub\r\nConnection: close\r\n\r\n");
    c.read_response().assert_text(404, "Not Found");
    c.expect_closed();
}

#[test]
fn connection_close_on_delivered_sub_and_rep() {
    let s = Server::start(&[]);
    let mut sub = s.client();
    sub.send(b"GET /sub/cc HTTP/1.1\r\nHost: esub\r\nConnection: close\r\n\r\n");
    s.wait_for_key("cc");
    let mut rep = s.client();
    rep.send(
        b"POST /rep/cc HTTP/1.1\r\nHost: esub\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    );
    let r = sub.read_response();
    r.assert_delivered(b"hi");
    assert!(r.connection_has("close"), "{r:?}");
    sub.expect_closed();
    let r = rep.read_response();
    r.assert(200, b"OK");
    assert!(r.connection_has("close"), "{r:?}");
    rep.expect_closed();
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

#[test]
fn request_in_one_byte_writes_is_parsed() {
    let s = Server::start(&[]);
    let mut sub = s.client();
    sub.send_bytewise(b"GET /sub/bytes HTTP/1.1\r\nHost: esub\r\n\r\n");
    s.wait_for_key("bytes");
    let body: Vec<u8> = (0..200u8).collect();
    let mut rep = s.client();
    let mut req =
        format!("POST /rep/bytes HTTP/1.1\r\nHost: esub\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    req.extend_from_slice(&body);
    rep.send_bytewise(&req);
    sub.read_response().assert_delivered(&body);
    rep.read_response().assert(200, b"OK");
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_delivered() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/chunky");
    s.wait_for_key("chunky");
    let mut rep = s.client();
    rep.send(
        b"POST /rep/chunky HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n\
          1 ; quoted=\"x;y\"\r\n \r\n\
          A\r\n0123456789\r\n\
          c\r\n\r\nabc\r\n\x00\xff\r\n!\r\n\
          0;last\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n\
          GET /ping HTTP/1.1\r\nHost: esub\r\n\r\n",
    );
    sub.read_response().assert_delivered(b"hello 0123456789\r\nabc\r\n\x00\xff\r\n!");
    rep.read_response().assert(200, b"OK");
    // The trailers were consumed: the pipelined request after them is parsed.
    rep.read_response().assert(200, b"OK");
}

#[test]
fn chunked_body_in_one_byte_writes_is_delivered() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/slowchunks");
    s.wait_for_key("slowchunks");
    let mut rep = s.client();
    rep.send_bytewise(
        b"POST /rep/slowchunks HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
    );
    sub.read_response().assert_delivered(b"abc0123456789abcdef");
    rep.read_response().assert(200, b"OK");
}

#[test]
fn empty_chunked_body_is_delivered_empty() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/nothing");
    s.wait_for_key("nothing");
    let mut rep = s.client();
    rep.send(
        b"POST /rep/nothing HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    let r = sub.read_response();
    r.assert_delivered(b"");
    assert_eq!(r.header("content-length"), Some("0"));
    rep.read_response().assert(200, b"OK");
}

#[test]
fn expect_100_continue_gets_interim_response_before_body() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/cont");
    s.wait_for_key("cont");
    let mut rep = s.client();
    rep.send(
        b"POST /rep/cont HTTP/1.1\r\nHost: esub\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    // Nothing of the body has been sent: the server must answer 100 first.
    let interim = rep.read_response();
    assert_eq!((interim.version.as_str(), interim.status), ("HTTP/1.1", 100), "{interim:?}");
    assert!(interim.body.is_empty());
    rep.send(b"hello");
    sub.read_response().assert_delivered(b"hello");
    rep.read_response().assert(200, b"OK");
    // And the connection goes on.
    rep.get("/ping").assert(200, b"OK");
}

#[test]
fn expect_100_continue_with_chunked_body() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/cont2");
    s.wait_for_key("cont2");
    let mut rep = s.client();
    rep.send(
        b"POST /rep/cont2 HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(rep.read_response().status, 100);
    rep.send(b"4\r\nwxyz\r\n0\r\n\r\n");
    sub.read_response().assert_delivered(b"wxyz");
    rep.read_response().assert(200, b"OK");
}

#[test]
fn expect_100_continue_over_body_limit_gets_413_without_continue() {
    let s = Server::start(&[("ESUB_MAX_BODY_BYTES", "1000")]);
    let mut rep = s.client();
    rep.send(
        b"POST /rep/big HTTP/1.1\r\nHost: esub\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = rep.read_response();
    r.assert_status_text(413);
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

fn head_with_filler(path: &str, filler: usize) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: esub\r\nX-Fill: {}\r\n\r\n", "f".repeat(filler))
        .into_bytes()
}

#[test]
fn head_over_max_header_bytes_is_431_and_closes() {
    let s = Server::start(&[("ESUB_MAX_HEADER_BYTES", "1024")]);
    // Well under the limit: served.
    let mut c = s.client();
    c.send(&head_with_filler("/ping", 600));
    c.read_response().assert(200, b"OK");
    // Over it.
    let mut c = s.client();
    c.send(&head_with_filler("/ping", 2000));
    c.read_response().assert_status_text(431);
    c.expect_closed();
}

#[test]
fn unterminated_head_over_limit_is_431_without_waiting_for_its_end() {
    let s = Server::start(&[("ESUB_MAX_HEADER_BYTES", "1024"), ("ESUB_HEADER_TIMEOUT_MS", "5000")]);
    let mut c = s.client();
    let head = format!("GET /ping HTTP/1.1\r\nHost: esub\r\nX-Fill: {}", "f".repeat(1500));
    c.send(head.as_bytes());
    // The server knows the head is too big without seeing its end; a close at the header
    // timeout instead of a 431 fails here.
    let t = Instant::now();
    c.read_response().assert_status_text(431);
    assert!(t.elapsed() < Duration::from_secs(4), "431 took {:?}", t.elapsed());
    c.expect_closed();
}

#[test]
fn many_small_headers_count_towards_header_limit() {
    let s = Server::start(&[("ESUB_MAX_HEADER_BYTES", "1024")]);
    let mut c = s.client();
    let mut head = String::from("GET /ping HTTP/1.1\r\nHost: esub\r\n");
    // 40 headers (few enough for any header table), 30 bytes each: over 1024 in total.
    for i in 0..40 {
        head.push_str(&format!("X-Header-{i:02}: {}\r\n", "v".repeat(14)));
    }
    head.push_str("\r\n");
    assert!(head.len() > 1024);
    c.send(head.as_bytes());
    c.read_response().assert_status_text(431);
    c.expect_closed();
}

#[test]
fn content_length_over_max_body_is_413() {
    let s = Server::start(&[("ESUB_MAX_BODY_BYTES", "1000")]);
    // Exactly at the limit: accepted (no sub, so 404 Unknown key).
    let mut c = s.client();
    c.post("/rep/k", &[b'x'; 1000]).assert_text(404, "Unknown key");
    // One over: refused.
    let mut c = s.client();
    let r = c.post("/rep/k", &[b'x'; 1001]);
    r.assert_status_text(413);
    c.expect_closed_or_ping_ok();
    // Refused from the head alone, before any body byte.
    let mut c = s.client();
    c.send(b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nContent-Length: 99999999999\r\n\r\n");
    c.read_response().assert_status_text(413);
}

#[test]
fn content_length_at_limit_is_delivered() {
    let s = Server::start(&[("ESUB_MAX_BODY_BYTES", "1000")]);
    let mut sub = s.sub("/sub/lim");
    s.wait_for_key("lim");
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let mut rep = s.client();
    rep.send_post("/rep/lim", &body);
    sub.read_response().assert_delivered(&body);
    rep.read_response().assert(200, b"OK");
}

#[test]
fn chunked_body_over_max_body_is_413_and_closes() {
    let s = Server::start(&[("ESUB_MAX_BODY_BYTES", "1000")]);
    let mut sub = s.sub("/sub/ck");
    s.wait_for_key("ck");
    let mut c = s.client();
    let mut req =
        b"POST /rep/ck HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n"
            .to_vec();
    req.extend_from_slice(&[b'a'; 600]);
    req.extend_from_slice(b"\r\n191\r\n");
    req.extend_from_slice(&[b'b'; 401]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    c.send(&req);
    c.read_response().assert_status_text(413);
    c.expect_closed();

    // The sub was not touched; exactly at the limit in chunks is delivered.
    let mut c = s.client();
    let mut req =
        b"POST /rep/ck HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n"
            .to_vec();
    req.extend_from_slice(&[b'a'; 600]);
    req.extend_from_slice(b"\r\n190\r\n");
    req.extend_from_slice(&[b'b'; 400]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    c.send(&req);
    let mut want = vec![b'a'; 600];
    want.extend_from_slice(&[b'b'; 400]);
    sub.read_response().assert_delivered(&want);
    c.read_response().assert(200, b"OK");
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_framing_is_400_and_closes() {
    let s = Server::start(&[]);
    // A waiting sub on `k`, so a rep's body must really be read before anything is answered.
    let mut sub = s.sub("/sub/k");
    s.wait_for_key("k");
    let cases: &[(&str, &[u8])] = &[
        ("garbage request line", b"HELLO\r\n\r\n"),
        ("binary garbage", b"\x01\x02\x03\x04 \xff\xfe\r\n\r\n"),
        ("header without colon", b"GET /ping HTTP/1.1\r\nHost: esub\r\nBad Header\r\n\r\n"),
        ("space before colon", b"GET /ping HTTP/1.1\r\nHost : esub\r\n\r\n"),
        ("bad content length", b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nContent-Length: abc\r\n\r\n"),
        (
            "conflicting content lengths",
            b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "bad chunk size",
            b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "chunk without CRLF after data",
            b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let mut c = s.client();
        c.send(bytes);
        let r = c.try_read_response().unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_eq!(r.header("content-type"), Some(common::TEXT_PLAIN), "{what}: {r:?}");
        assert!(!r.body.is_empty(), "{what}: empty 400 body");
        assert!(c.closed_within(common::IO_TIMEOUT), "{what}: connection not closed after 400");
    }
    // The server is still fine and none of the broken reps reached the sub.
    s.get("/ping").assert(200, b"OK");
    s.post("/rep/k", b"intact").assert(200, b"OK");
    sub.read_response().assert_delivered(b"intact");
}

#[test]
fn malformed_percent_encoding_is_400() {
    let s = Server::start(&[]);
    let cases: &[(&str, &str)] = &[
        ("GET", "/sub/%zz"),
        ("GET", "/sub/ab%2"),
        ("GET", "/sub/%"),
        ("POST", "/rep/%g1"),
        ("GET", "/sub/k?token=%zz"),
        ("POST", "/rep/k?token=a%2"),
    ];
    for (method, path) in cases {
        let mut c = s.client();
        c.send(
            format!("{method} {path} HTTP/1.1\r\nHost: esub\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(r.status, 400, "{method} {path}: {r:?}");
        assert_eq!(r.header("content-type"), Some(common::TEXT_PLAIN), "{method} {path}");
        c.expect_closed_or_ping_ok();
    }
    // No sub was registered by any of them.
    assert_eq!(s.keys(), Vec::<String>::new());
}

#[test]
fn key_longer_than_256_bytes_is_400() {
    let s = Server::start(&[]);
    let raw = "a".repeat(257);
    let encoded = percent_encode_all(raw.as_bytes());
    for path in [format!("/sub/{raw}"), format!("/sub/{encoded}")] {
        let r = s.get(&path);
        assert_eq!(r.status, 400, "GET {} bytes path: {r:?}", path.len());
        assert_eq!(r.header("content-type"), Some(common::TEXT_PLAIN));
    }
    for path in [format!("/rep/{raw}"), format!("/rep/{encoded}")] {
        let r = s.post(&path, b"x");
        assert_eq!(r.status, 400, "POST {} bytes path: {r:?}", path.len());
    }
    // Multi-byte characters count in bytes: 129 × 2 bytes = 258.
    let wide = percent_encode_all("é".repeat(129).as_bytes());
    assert_eq!(s.get(&format!("/sub/{wide}")).status, 400);
    assert_eq!(s.keys(), Vec::<String>::new());
}

#[test]
fn key_of_exactly_256_bytes_is_accepted() {
    let s = Server::start(&[]);
    let key = "a".repeat(256);
    // Sent encoded (768 bytes on the wire), 256 once decoded.
    let mut sub = s.sub(&format!("/sub/{}", percent_encode_all(key.as_bytes())));
    s.wait_for_key(&key);
    s.post(&format!("/rep/{key}"), b"long key").assert(200, b"OK");
    sub.read_response().assert_delivered(b"long key");
}

#[test]
fn percent_decoded_keys_and_literal_plus_in_path() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/a%20b");
    s.wait_for_key("a b");
    assert_eq!(s.keys(), vec!["a b"]);
    // `+` is a space only in the query; in the path it is a literal plus.
    s.post("/rep/a+b", b"wrong").assert_text(404, "Unknown key");
    s.post("/rep/a%20b", b"right").assert(200, b"OK");
    sub.read_response().assert_delivered(b"right");

    // And the other way round: a key with a plus.
    let mut sub = s.sub("/sub/x+y");
    s.wait_for_key("x+y");
    s.post("/rep/x%20y", b"wrong").assert_text(404, "Unknown key");
    s.post("/rep/x%2By", b"plus").assert(200, b"OK");
    sub.read_response().assert_delivered(b"plus");
}

#[test]
fn encoded_slash_is_part_of_the_key() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/a%2Fb");
    s.wait_for_key("a/b");
    s.post("/rep/a%2fb", b"slash").assert(200, b"OK");
    sub.read_response().assert_delivered(b"slash");
}

#[test]
fn utf8_keys_are_listed_decoded() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/caf%C3%A9");
    s.wait_for_key("café");
    s.post("/rep/caf%c3%a9", b"ok").assert(200, b"OK");
    sub.read_response().assert_delivered(b"ok");
}

#[test]
fn keys_json_escapes_quotes_backslashes_and_controls() {
    let s = Server::start(&[]);
    let key = "q\"b\\s\u{1}t\t";
    let mut sub = s.sub(&format!("/sub/{}", percent_encode_all(key.as_bytes())));
    // `wait_for_key` parses the JSON: a raw quote or control byte would not parse.
    s.wait_for_key(key);
    s.post(&format!("/rep/{}", percent_encode_all(key.as_bytes())), b"esc").assert(200, b"OK");
    sub.read_response().assert_delivered(b"esc");
}

#[test]
fn max_connections_makes_extra_accepts_wait() {
    let s = Server::start(&[("ESUB_MAX_CONNECTIONS", "2")]);
    let mut a = s.client();
    a.get("/ping").assert(200, b"OK");
    let mut b = s.client();
    b.get("/ping").assert(200, b"OK");
    // The kernel completes the handshake, but the server does not take the third connection.
    let mut c = s.client();
    c.send_get("/ping");
    c.expect_silence(Duration::from_millis(300));
    // A slot frees: the waiting connection is accepted and served.
    a.close();
    c.read_response().assert(200, b"OK");
    b.get("/ping").assert(200, b"OK");
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

const SHORT: &str = "300";
const SHORT_MS: Duration = Duration::from_millis(300);
/// Timers may round down to their tick; anything well below the setting is a premature close.
const EARLIEST: Duration = Duration::from_millis(200);
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn header_timeout_closes_silent_connection() {
    let s = Server::start(&[("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    let took = c.expect_closed_within(CLOSE_DEADLINE);
    assert!(took >= EARLIEST, "closed after {took:?}, before the {SHORT_MS:?} timeout");
}

#[test]
fn header_timeout_closes_half_sent_head() {
    let s = Server::start(&[("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    c.send(b"GET /ping HTTP/1.1\r\nHost: esub\r\n");
    let took = c.expect_closed_within(CLOSE_DEADLINE);
    assert!(took >= EARLIEST, "closed after {took:?}");
}

#[test]
fn header_timeout_is_not_reset_by_trickled_bytes() {
    let s = Server::start(&[("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    let start = Instant::now();
    let trickle =
        b"GET /ping HTTP/1.1\r\nHost: esub\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'z'));
    for b in trickle {
        if c.try_send(std::slice::from_ref(b)).is_err() {
            break; // closed under us
        }
        if c.closed_within(Duration::from_millis(50)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "slow-loris connection still open after {:?}",
            start.elapsed()
        );
    }
    assert!(start.elapsed() >= EARLIEST, "closed after {:?}", start.elapsed());
}

#[test]
fn header_timeout_applies_per_head_not_per_connection() {
    let s = Server::start(&[("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    let start = Instant::now();
    // Requests keep coming well past the header timeout counted from the connection's start.
    while start.elapsed() < SHORT_MS * 2 {
        c.get("/ping").assert(200, b"OK");
        thread::sleep(Duration::from_millis(60)); // pacing, not synchronisation
    }
}

#[test]
fn header_timeout_applies_to_a_later_head_on_keep_alive() {
    let s = Server::start(&[("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    c.get("/ping").assert(200, b"OK");
    // Idle for now (the idle timeout is long), then a head begins and stalls.
    c.send(b"GET /ping HTTP/1.1\r\n");
    let took = c.expect_closed_within(CLOSE_DEADLINE);
    assert!(took >= EARLIEST, "closed after {took:?}");
}

#[test]
fn idle_timeout_closes_keep_alive_connection() {
    let s = Server::start(&[("ESUB_IDLE_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    c.get("/ping").assert(200, b"OK");
    let took = c.expect_closed_within(CLOSE_DEADLINE);
    assert!(took >= EARLIEST, "idle close after {took:?}");
}

#[test]
fn idle_timeout_restarts_after_each_request() {
    let s = Server::start(&[("ESUB_IDLE_TIMEOUT_MS", SHORT)]);
    let mut c = s.client();
    let start = Instant::now();
    while start.elapsed() < SHORT_MS * 3 {
        c.get("/ping").assert(200, b"OK");
        thread::sleep(Duration::from_millis(100)); // pacing, not synchronisation
    }
}

#[test]
fn parked_sub_is_never_idle() {
    let s = Server::start(&[("ESUB_IDLE_TIMEOUT_MS", SHORT), ("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut sub = s.client();
    // A request first, so the connection has been idle-timed once before it parks.
    sub.get("/ping").assert(200, b"OK");
    sub.send_get("/sub/patient");
    s.wait_for_key("patient");
    sub.expect_silence(SHORT_MS * 3);
    s.post("/rep/patient", b"still here").assert(200, b"OK");
    sub.read_response().assert_delivered(b"still here");
}

// ---------------------------------------------------------------------------------------------
// ESUB_CLOSE_CONNECTIONS
// ---------------------------------------------------------------------------------------------

#[test]
fn close_connections_closes_after_every_response() {
    let s = Server::start(&[("ESUB_CLOSE_CONNECTIONS", "1")]);
    for path in ["/ping", "/nope", "/keys", "/info"] {
        let mut c = s.client();
        let r = c.get(path);
        assert!(r.connection_has("close"), "{path}: {r:?}");
        c.expect_closed();
    }
    // Pipelined: only the first is answered.
    let mut c = s.client();
    c.send(b"GET /ping HTTP/1.1\r\nHost: esub\r\n\r\nGET /ping HTTP/1.1\r\nHost: esub\r\n\r\n");
    let r = c.read_response();
    r.assert(200, b"OK");
    assert!(r.connection_has("close"));
    c.expect_closed();
    // A delivered sub and its rep.
    let mut sub = s.sub("/sub/cc");
    s.wait_for_key("cc");
    let mut rep = s.client();
    rep.send_post("/rep/cc", b"bye");
    let r = sub.read_response();
    r.assert_delivered(b"bye");
    assert!(r.connection_has("close"), "{r:?}");
    sub.expect_closed();
    let r = rep.read_response();
    r.assert(200, b"OK");
    assert!(r.connection_has("close"), "{r:?}");
    rep.expect_closed();
}

#[test]
fn close_connections_with_http10_keep_alive_still_closes() {
    let s = Server::start(&[("ESUB_CLOSE_CONNECTIONS", "1")]);
    let mut c: Client = s.client();
    c.send(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    r.assert(200, b"OK");
    assert!(r.connection_has("close"), "{r:?}");
    c.expect_closed();
}

// ---------------------------------------------------------------------------------------------
// Choices README.md documents where API.md is silent
// ---------------------------------------------------------------------------------------------

#[test]
fn key_that_is_not_utf8_once_decoded_is_400() {
    let s = Server::start(&[]);
    for path in ["/sub/%FF", "/sub/a%C3", "/sub/%C0%AF"] {
        let r = s.get(path);
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.header("content-type"), Some(common::TEXT_PLAIN), "{path}");
    }
    assert_eq!(s.post("/rep/%FF", b"x").status, 400);
    assert_eq!(s.keys(), Vec::<String>::new());
}

#[test]
fn content_length_with_chunked_is_400_and_closes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(
        b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    c.read_response().assert_status_text(400);
    c.expect_closed();
}

#[test]
fn unknown_transfer_coding_is_501_and_closes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nTransfer-Encoding: gzip\r\n\r\n");
    c.read_response().assert_status_text(501);
    c.expect_closed();
}

#[test]
fn unknown_expectation_is_400_and_closes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(b"POST /rep/k HTTP/1.1\r\nHost: esub\r\nContent-Length: 1\r\nExpect: teapot\r\n\r\nx");
    c.read_response().assert_status_text(400);
    c.expect_closed();
}

#[test]
fn expect_100_continue_on_failing_request_gets_error_at_once_and_closes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(
        b"POST /nope HTTP/1.1\r\nHost: esub\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    c.read_response().assert_text(404, "Not Found");
    c.expect_closed();
    let mut c = s.client();
    c.send(
        b"POST /ping HTTP/1.1\r\nHost: esub\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.read_response().status, 405);
    c.expect_closed();
}

#[test]
fn stalled_body_is_closed_after_header_timeout() {
    let s = Server::start(&[("ESUB_HEADER_TIMEOUT_MS", SHORT)]);
    let mut sub = s.sub("/sub/stall");
    s.wait_for_key("stall");
    let mut c = s.client();
    c.send(b"POST /rep/stall HTTP/1.1\r\nHost: esub\r\nContent-Length: 10\r\n\r\n01234");
    let took = c.expect_closed_within(CLOSE_DEADLINE);
    assert!(took >= EARLIEST, "closed after {took:?}");
    // The sub got nothing and still waits.
    s.post("/rep/stall", b"whole").assert(200, b"OK");
    sub.read_response().assert_delivered(b"whole");
}
