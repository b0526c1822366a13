//! Ack parsers: `parse_ack_lists` (piggy-back `X-Partition` / `X-Offset` headers) against a
//! restatement of §5.3 in this file, and `parse_ack_json` (PUT /v1/offsets, websocket acks) by
//! round trip. `parse_ws_pub` gets the same bytes as text, for panics only.
//!
//! Input: `partition headers \0 offset headers`. Each side is split on `\n` into header values;
//! an empty side means no such header. The whole input is also the JSON body.
#![no_main]

use esub::topics::codec::{AckError, parse_ack_json, parse_ack_lists, parse_ws_pub};
use libfuzzer_sys::fuzz_target;

fn values(side: &[u8]) -> Vec<&[u8]> {
    if side.is_empty() { vec![] } else { side.split(|&b| b == b'\n').collect() }
}

fn trim(s: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !blank(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Rust's own integer parser, minus the `+` it accepts.
fn int(s: &[u8]) -> Option<i64> {
    if s.first() == Some(&b'+') {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// §5.3 restated: non-empty values joined with `,` into one list per header.
fn expected(ps: &[&[u8]], os: &[&[u8]]) -> Result<Vec<(i64, i64)>, AckError> {
    let list = |vs: &[&[u8]]| -> Vec<Vec<u8>> {
        let joined = vs.iter().map(|v| trim(v)).filter(|v| !v.is_empty()).collect::<Vec<_>>();
        if joined.is_empty() {
            return vec![];
        }
        joined.join(&b',').split(|&b| b == b',').map(|i| trim(i).to_vec()).collect()
    };
    let (p, o) = (list(ps), list(os));
    if p.len() != o.len() {
        return Err(AckError::Partial);
    }
    let p: Option<Vec<i64>> = p.iter().map(|i| int(i)).collect();
    let p = p.ok_or(AckError::BadPartition)?;
    let o: Option<Vec<i64>> = o.iter().map(|i| int(i)).collect();
    let o = o.ok_or(AckError::BadOffset)?;
    Ok(p.into_iter().zip(o).filter(|&(p, o)| p != -1 && o != -1).collect())
}

fn json(pairs: &[(i64, i64)]) -> String {
    let items: Vec<String> =
        pairs.iter().map(|(p, o)| format!("{{\"partition\":{p},\"offset\":{o}}}")).collect();
    format!("[{}]", items.join(","))
}

fuzz_target!(|data: &[u8]| {
    let (ps, os) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let (ps, os) = (values(ps), values(os));
    let got = parse_ack_lists(&ps, &os);
    assert_eq!(got, expected(&ps, &os));
    // The headers swapped: the same length check, the other error first.
    let swapped = parse_ack_lists(&os, &ps);
    if got == Err(AckError::Partial) {
        assert_eq!(swapped, Err(AckError::Partial));
    }
    if let Ok(pairs) = &got {
        assert!(pairs.iter().all(|&(p, o)| p != -1 && o != -1), "-1 kept: {pairs:?}");
        // Written back as headers (one or two per side), they read the same.
        let p: Vec<String> = pairs.iter().map(|x| x.0.to_string()).collect();
        let o: Vec<String> = pairs.iter().map(|x| x.1.to_string()).collect();
        let (p, o) = (p.join(" , "), o.join(","));
        assert_eq!(parse_ack_lists(&[p.as_bytes()], &[o.as_bytes(), b" "]).as_ref(), Ok(pairs));
        assert_eq!(parse_ack_json(json(pairs).as_bytes()).as_ref(), Some(pairs), "as JSON");
    }
    if let Some(pairs) = parse_ack_json(data) {
        let again = json(&pairs);
        assert_eq!(parse_ack_json(again.as_bytes()), Some(pairs), "{again}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_ws_pub(text);
    }
});
