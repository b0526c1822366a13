//! Pure codecs of the topics wire (`API-topics.md`): key hashing, names, batch pub bodies, ack
//! headers and JSON, tag filters, `X-Key` escaping, batch sub record heads and ws pub frames.

use serde_json::Value;

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The partition of a keyed message: sarama's classic hash partitioner,
/// `abs(int32(fnv1a32(key)) % P)` with Go's truncating `%`, so kateway's producers and ours agree.
/// `partitions` 0 gives 0 (there is no partition to pick; callers never ask).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    // In i64: `i32::MIN % P` and `abs` cannot overflow there, for any u32 P.
    let h = i64::from(fnv1a32(key) as i32);
    (h % i64::from(partitions)).unsigned_abs() as u32
}

/// `[A-Za-z0-9_-]{1,max}`: appids, topics and groups (max 64), versions (max 16).
pub fn valid_name(s: &[u8], max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The per-record limits of a batch pub (§1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_payload: usize,
    pub max_key: usize,
    pub max_tag: usize,
    pub max_records: usize,
}

/// One record of a batch pub body, borrowed from it. An empty key or tag means "none given"
/// (the caller then applies the query `key` / the `X-Tag` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord<'a> {
    pub key: &'a [u8],
    pub tag: &'a [u8],
    pub payload: &'a [u8],
}

/// Why a batch pub body was refused; `status` and `text` are the response (§4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Bad framing, no record, or more than `max_records`: 400.
    Illegal,
    /// A payload over `max_payload`: 413.
    PayloadTooBig,
    /// An empty payload: 400.
    PayloadEmpty,
    /// A key over `max_key`: 400.
    KeyTooBig,
    /// A tag over `max_tag`: 400.
    TagTooBig,
}

impl BatchError {
    pub fn status(self) -> u16 {
        match self {
            BatchError::PayloadTooBig => 413,
            _ => 400,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            BatchError::Illegal => "illegal batch",
            BatchError::PayloadTooBig => "too big message",
            BatchError::PayloadEmpty => "too small message",
            BatchError::KeyTooBig => "too big key",
            BatchError::TagTooBig => "too big tag",
        }
    }
}

/// Takes `n` bytes off the front of `rest`; `None` when fewer remain.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_record<'a>(rest: &mut &'a [u8]) -> Option<BatchRecord<'a>> {
    let key_len = take(rest, 2)?;
    let key = take(rest, usize::from(u16::from_be_bytes([key_len[0], key_len[1]])))?;
    let tag_len = take(rest, 2)?;
    let tag = take(rest, usize::from(u16::from_be_bytes([tag_len[0], tag_len[1]])))?;
    let len = take(rest, 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    // A length past the input fails `take` before anything is sized by it.
    let payload = take(rest, usize::try_from(len).ok()?)?;
    Some(BatchRecord { key, tag, payload })
}

/// Decodes a batch pub body (§4.2). The whole framing is checked first (a truncated record,
/// bytes after the last one, no record or more than `max_records` → `Illegal`), then each record
/// in order against the limits: payload size, empty payload, key, tag. Records borrow the body.
pub fn decode_batch<'a>(
    body: &'a [u8],
    limits: &Limits,
) -> Result<Vec<BatchRecord<'a>>, BatchError> {
    let mut records = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if records.len() == limits.max_records {
            return Err(BatchError::Illegal);
        }
        records.push(take_record(&mut rest).ok_or(BatchError::Illegal)?);
    }
    if records.is_empty() {
        return Err(BatchError::Illegal);
    }
    for r in &records {
        if r.payload.len() > limits.max_payload {
            return Err(BatchError::PayloadTooBig);
        }
        if r.payload.is_empty() {
            return Err(BatchError::PayloadEmpty);
        }
        if r.key.len() > limits.max_key {
            return Err(BatchError::KeyTooBig);
        }
        if r.tag.len() > limits.max_tag {
            return Err(BatchError::TagTooBig);
        }
    }
    Ok(records)
}

/// Appends one batch pub record (for clients and tests; the server only decodes).
///
/// # Panics
/// If the key or tag is over 65535 bytes or the payload over 4 GiB: the format cannot carry
/// them, and a silently wrapped length would corrupt the body.
pub fn encode_batch_record(out: &mut Vec<u8>, key: &[u8], tag: &[u8], payload: &[u8]) {
    let key_len = u16::try_from(key.len()).expect("batch key over 65535 bytes");
    let tag_len = u16::try_from(tag.len()).expect("batch tag over 65535 bytes");
    let len = u32::try_from(payload.len()).expect("batch payload over 4 GiB");
    out.reserve(8 + key.len() + tag.len() + payload.len());
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&tag_len.to_be_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Why piggy-back ack headers were refused (§5.3); each is a 400 with `text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckError {
    /// Only one of `X-Partition` / `X-Offset`, or lists of different lengths.
    Partial,
    /// A partition item that is not an integer.
    BadPartition,
    /// An offset item that is not an integer.
    BadOffset,
}

impl AckError {
    pub fn text(self) -> &'static str {
        match self {
            AckError::Partial => "partial ack not allowed",
            AckError::BadPartition => "ack with bad partition",
            AckError::BadOffset => "ack with bad offset",
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A decimal i64: optional `-`, then digits; no `+`, no blanks, no overflow.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The items of every header value, in order; values empty after trimming are skipped.
fn ack_items<'a>(values: &[&'a [u8]]) -> Vec<&'a [u8]> {
    values
        .iter()
        .map(|v| trim(v))
        .filter(|v| !v.is_empty())
        .flat_map(|v| v.split(|&b| b == b',').map(trim))
        .collect()
}

/// Parses piggy-back ack headers (§5.3): the raw values of every `X-Partition` and `X-Offset`
/// header, in order. Both absent → no pairs. Pairs with a partition or offset of -1 are dropped
/// (kateway clients send them on their first GET). Ranges are the caller's to check.
pub fn parse_ack_lists(
    partitions: &[&[u8]],
    offsets: &[&[u8]],
) -> Result<Vec<(i64, i64)>, AckError> {
    let ps = ack_items(partitions);
    let os = ack_items(offsets);
    if ps.len() != os.len() {
        return Err(AckError::Partial);
    }
    let ps: Vec<i64> =
        ps.iter().map(|p| parse_i64(p)).collect::<Option<_>>().ok_or(AckError::BadPartition)?;
    let os: Vec<i64> =
        os.iter().map(|o| parse_i64(o)).collect::<Option<_>>().ok_or(AckError::BadOffset)?;
    Ok(ps.into_iter().zip(os).filter(|&(p, o)| p != -1 && o != -1).collect())
}

/// Parses an ack body `[{"partition":p,"offset":o},...]` (PUT /v1/offsets, websocket acks):
/// integer (i64) members, others ignored. Anything else → `None`. `[]` is no pairs.
pub fn parse_ack_json(body: &[u8]) -> Option<Vec<(i64, i64)>> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    items
        .iter()
        .map(|item| {
            let obj = item.as_object()?;
            Some((obj.get("partition")?.as_i64()?, obj.get("offset")?.as_i64()?))
        })
        .collect()
}

/// Escapes a key for the `X-Key` header: bytes outside 0x21–0x7E, and `%`, as `%XX` (upper case).
pub fn escape_key(key: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if (0x21..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// The tokens of an `X-Tag` value: split on `;`, empties dropped.
pub fn tag_tokens(v: &[u8]) -> Vec<&[u8]> {
    v.split(|&b| b == b';').filter(|t| !t.is_empty()).collect()
}

/// Whether a message's tag passes a request's tag filter (§5.2): one of its tokens equals one of
/// the filter's. An untagged message never matches; callers skip filtering for an empty filter.
pub fn tag_matches(filter: &[&[u8]], tag: &[u8]) -> bool {
    tag.split(|&b| b == b';').any(|t| !t.is_empty() && filter.contains(&t))
}

/// The head of one batch sub record: `[partition i32 BE][offset i64 BE][len i32 BE]`.
pub fn sub_record_head(partition: i32, offset: i64, len: i32) -> [u8; 16] {
    let mut h = [0; 16];
    h[..4].copy_from_slice(&partition.to_be_bytes());
    h[4..12].copy_from_slice(&offset.to_be_bytes());
    h[12..].copy_from_slice(&len.to_be_bytes());
    h
}

/// A websocket pub TEXT frame (§4.3, §4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsPub {
    pub data: String,
    pub key: Option<String>,
    pub tag: Option<String>,
    pub id: Option<String>,
}

/// Parses a ws pub TEXT frame: a JSON object with a string `data`; `key`, `tag` and `id` absent
/// or null are `None`, strings are kept as given (even empty). Anything else → `None` (close 1007).
pub fn parse_ws_pub(text: &str) -> Option<WsPub> {
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let mut opt = |name: &str| match obj.remove(name) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(_) => None,
    };
    let (key, tag, id) = (opt("key")?, opt("tag")?, opt("id")?);
    let Some(Value::String(data)) = obj.remove("data") else {
        return None;
    };
    Some(WsPub { data, key, tag, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_and_partitions() {
        for (key, hash) in [
            (&b""[..], 0x811c_9dc5),
            (b"a", 0xe40c_292c),
            (b"foobar", 0xbf9c_f968),
            (b"hello", 0x4f9f_2cab),
        ] {
            assert_eq!(fnv1a32(key), hash, "{key:?}");
        }
        for (key, p, want) in [
            (&b"b"[..], 4, 3),
            (b"k1", 4, 3),
            (b"k3", 4, 1),
            (b"k2", 4, 0),
            (b"hello", 4, 3),
            (b"", 7, 2),
            (b"a", 7, 6),
            (b"k3", 1, 0),
            (b"k3", 0, 0),
            (b"k1", u32::MAX, 1_740_799_807),
        ] {
            assert_eq!(partition_of(key, p), want, "{key:?} % {p}");
        }
    }

    #[test]
    fn names() {
        for (s, max, ok) in [
            (&b"app_1-X"[..], 64, true),
            (b"a", 1, true),
            (b"ab", 1, false),
            (b"", 64, false),
            (b"a.b", 64, false),
            (b"a b", 64, false),
            (b"\xc3\xa9", 64, false),
            (&[b'a'; 64], 64, true),
            (&[b'a'; 65], 64, false),
        ] {
            assert_eq!(valid_name(s, max), ok, "{s:?}");
        }
    }

    const LIMITS: Limits = Limits { max_payload: 8, max_key: 3, max_tag: 4, max_records: 3 };

    fn rec(key: &[u8], tag: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_batch_record(&mut out, key, tag, payload);
        out
    }

    #[test]
    fn batch_encoding() {
        assert_eq!(rec(b"k", b"t;u", b"hey"), b"\x00\x01k\x00\x03t;u\x00\x00\x00\x03hey");
        let body = [rec(b"k", b"", b"one"), rec(b"", b"a=b", b"two!")].concat();
        assert_eq!(
            decode_batch(&body, &LIMITS),
            Ok(vec![
                BatchRecord { key: b"k", tag: b"", payload: b"one" },
                BatchRecord { key: b"", tag: b"a=b", payload: b"two!" },
            ])
        );
    }

    #[test]
    fn batch_errors() {
        use BatchError::*;
        let ok = rec(b"k", b"t", b"p");
        let cases: Vec<(&str, Vec<u8>, Result<usize, BatchError>)> = vec![
            ("empty body", vec![], Err(Illegal)),
            ("three", ok.repeat(3), Ok(3)),
            ("four", ok.repeat(4), Err(Illegal)),
            ("truncated payload", ok[..ok.len() - 1].to_vec(), Err(Illegal)),
            ("truncated head", vec![0], Err(Illegal)),
            ("no length", b"\x00\x00\x00\x00\x00\x00\x00".to_vec(), Err(Illegal)),
            ("trailing byte", [ok.clone(), vec![0]].concat(), Err(Illegal)),
            ("huge length", b"\x00\x00\x00\x00\xff\xff\xff\xffab".to_vec(), Err(Illegal)),
            // Framing first: a bad record's limits are not looked at.
            ("big then broken", [rec(b"", b"", &[1; 9]), vec![0]].concat(), Err(Illegal)),
            ("payload at max", rec(b"", b"", &[1; 8]), Ok(1)),
            ("payload over", rec(b"", b"", &[1; 9]), Err(PayloadTooBig)),
            ("payload empty", rec(b"k", b"t", b""), Err(PayloadEmpty)),
            ("key over", rec(b"kkkk", b"", b"p"), Err(KeyTooBig)),
            ("tag over", rec(b"", b"ttttt", b"p"), Err(TagTooBig)),
            // Per record: payload, then empty, then key, then tag; records in order.
            ("payload before key", rec(b"kkkk", b"ttttt", &[1; 9]), Err(PayloadTooBig)),
            ("empty before key", rec(b"kkkk", b"ttttt", b""), Err(PayloadEmpty)),
            ("key before tag", rec(b"kkkk", b"ttttt", b"p"), Err(KeyTooBig)),
            (
                "first record first",
                [rec(b"", b"ttttt", b"p"), rec(b"", b"", b"")].concat(),
                Err(TagTooBig),
            ),
        ];
        for (name, body, want) in cases {
            assert_eq!(decode_batch(&body, &LIMITS).map(|r| r.len()), want, "{name}");
        }
        for (e, status, text) in [
            (Illegal, 400, "illegal batch"),
            (PayloadTooBig, 413, "too big message"),
            (PayloadEmpty, 400, "too small message"),
            (KeyTooBig, 400, "too big key"),
            (TagTooBig, 400, "too big tag"),
        ] {
            assert_eq!((e.status(), e.text()), (status, text));
        }
    }

    #[test]
    fn ack_lists() {
        use AckError::*;
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Result<Vec<(i64, i64)>, AckError>);
        let cases: &[Case] = &[
            (&[], &[], Ok(vec![])),
            (&["", " "], &["\t"], Ok(vec![])),
            (&["3"], &["17"], Ok(vec![(3, 17)])),
            (&[" 0 , 1\t", "2"], &["5,6", " 7 "], Ok(vec![(0, 5), (1, 6), (2, 7)])),
            (&["-1"], &["-1"], Ok(vec![])),
            (&["0,-1,2"], &["-1,4,-0"], Ok(vec![(2, 0)])),
            (&["0", ""], &["", "9"], Ok(vec![(0, 9)])),
            (&["-5"], &["-9223372036854775808"], Ok(vec![(-5, i64::MIN)])),
            (&["1"], &[], Err(Partial)),
            (&[""], &["1"], Err(Partial)),
            (&["1,2"], &["1"], Err(Partial)),
            (&["x"], &["1,2"], Err(Partial)),
            (&["1,"], &["1,2"], Err(BadPartition)),
            (&["+1"], &["1"], Err(BadPartition)),
            (&["1.0"], &["x"], Err(BadPartition)),
            (&["1 2"], &["1"], Err(BadPartition)),
            (&["-"], &["1"], Err(BadPartition)),
            (&["9223372036854775808"], &["1"], Err(BadPartition)),
            (&["1"], &["0x1"], Err(BadOffset)),
            (&["1"], &["--1"], Err(BadOffset)),
            (&["1,2"], &["1,"], Err(BadOffset)),
        ];
        for (ps, os, want) in cases {
            let p: Vec<&[u8]> = ps.iter().map(|s| s.as_bytes()).collect();
            let o: Vec<&[u8]> = os.iter().map(|s| s.as_bytes()).collect();
            assert_eq!(&parse_ack_lists(&p, &o), want, "{ps:?} / {os:?}");
        }
        assert_eq!(parse_ack_lists(&[b"\xff"], &[b"1"]), Err(BadPartition));
        assert_eq!(Partial.text(), "partial ack not allowed");
        assert_eq!(BadPartition.text(), "ack with bad partition");
        assert_eq!(BadOffset.text(), "ack with bad offset");
    }

    #[test]
    fn ack_json() {
        for (body, want) in [
            (r#"[]"#, Some(vec![])),
            (r#"[{"partition":0,"offset":5}]"#, Some(vec![(0, 5)])),
            (
                r#" [{"offset":-1,"partition":2,"x":[1]},{"partition":-3,"offset":9}] "#,
                Some(vec![(2, -1), (-3, 9)]),
            ),
            (r#"[{"partition":0,"offset":-9223372036854775808}]"#, Some(vec![(0, i64::MIN)])),
            (r#"[{"partition":0,"offset":9223372036854775808}]"#, None),
            (r#"[{"partition":0,"offset":1.0}]"#, None),
            (r#"[{"partition":"0","offset":1}]"#, None),
            (r#"[{"partition":0}]"#, None),
            (r#"[{"partition":0,"offset":1},2]"#, None),
            (r#"{"partition":0,"offset":1}"#, None),
            (r#"[{"partition":0,"offset":1}] x"#, None),
            ("", None),
            ("null", None),
        ] {
            assert_eq!(parse_ack_json(body.as_bytes()), want, "{body}");
        }
    }

    #[test]
    fn key_escaping() {
        for (key, want) in [
            (&b"abc-XYZ_09"[..], "abc-XYZ_09"),
            (b"a b", "a%20b"),
            (b"100%", "100%25"),
            (b"~!\x7f\x00\xff\xc3\xa9", "~!%7F%00%FF%C3%A9"),
            (b"", ""),
        ] {
            let mut out = String::from("x:");
            escape_key(key, &mut out);
            assert_eq!(out, format!("x:{want}"));
        }
    }

    #[test]
    fn tags() {
        assert_eq!(tag_tokens(b";a=b;;c;"), vec![&b"a=b"[..], b"c"]);
        assert!(tag_tokens(b";;").is_empty());
        let filter = tag_tokens(b"t1;t2");
        for (tag, want) in [
            (&b"t1"[..], true),
            (b"x;t2", true),
            (b"t1;t2", true),
            (b"t3", false),
            (b"t", false),
            (b"t1 ", false),
            (b"", false),
            (b";", false),
        ] {
            assert_eq!(tag_matches(&filter, tag), want, "{tag:?}");
        }
        // An empty token in a filter never matches an empty token of a tag.
        assert!(!tag_matches(&[b""], b";x"));
    }

    #[test]
    fn record_head() {
        assert_eq!(
            sub_record_head(2, 0x0102_0304_0506_0708, 5),
            [0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 5]
        );
        assert_eq!(sub_record_head(-1, -1, 0)[..12], [0xff; 12]);
    }

    #[test]
    fn ws_pub() {
        let p = |d: &str, k: Option<&str>, t: Option<&str>, i: Option<&str>| WsPub {
            data: d.into(),
            key: k.map(Into::into),
            tag: t.map(Into::into),
            id: i.map(Into::into),
        };
        for (text, want) in [
            (r#"{"data":"hi"}"#, Some(p("hi", None, None, None))),
            (r#"{"data":"","key":null,"tag":null,"id":null}"#, Some(p("", None, None, None))),
            (
                r#"{"data":"é","key":"k","tag":"a;b","id":"m1","x":1}"#,
                Some(p("é", Some("k"), Some("a;b"), Some("m1"))),
            ),
            (r#"{"data":"d","key":""}"#, Some(p("d", Some(""), None, None))),
            (r#"{"key":"k"}"#, None),
            (r#"{"data":null}"#, None),
            (r#"{"data":1}"#, None),
            (r#"{"data":"d","key":1}"#, None),
            (r#"{"data":"d","tag":["a"]}"#, None),
            (r#"{"data":"d","id":7}"#, None),
            (r#"["data"]"#, None),
            ("", None),
            ("hello", None),
        ] {
            assert_eq!(parse_ws_pub(text), want, "{text}");
        }
    }
}
