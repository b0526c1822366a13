//! Batch pub bodies: `decode_batch` against a restatement of §4.2 in this file, and
//! `encode_batch_record` round trips. Keys of accepted records also go through `escape_key`
//! (read back with `percent_decode`), and tags through `tag_matches` against its own rule.
//!
//! Input: `[max_records, max_payload, max_key, max_tag, body...]`. The limits are small (at most
//! 255 records, 255 payload bytes, 31 key and tag bytes) so that every error is within reach.
#![no_main]

use esub::http::query::percent_decode;
use esub::topics::codec::{
    BatchError, BatchRecord, Limits, decode_batch, encode_batch_record, escape_key, tag_matches,
    tag_tokens,
};
use libfuzzer_sys::fuzz_target;

/// §4.2 restated: split the whole body into records with no bound, then judge.
fn expected<'a>(body: &'a [u8], limits: &Limits) -> Result<Vec<BatchRecord<'a>>, BatchError> {
    let mut records = Vec::new();
    let mut at = 0;
    let field = |at: &mut usize, n: usize| -> Option<&'a [u8]> {
        let f = body.get(*at..*at + n)?;
        *at += n;
        Some(f)
    };
    while at < body.len() {
        let r = (|| {
            let k = field(&mut at, 2)?;
            let key = field(&mut at, (usize::from(k[0]) << 8) | usize::from(k[1]))?;
            let t = field(&mut at, 2)?;
            let tag = field(&mut at, (usize::from(t[0]) << 8) | usize::from(t[1]))?;
            let l = field(&mut at, 4)?;
            let len = l.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
            let payload = field(&mut at, len)?;
            Some(BatchRecord { key, tag, payload })
        })();
        match r {
            Some(r) => records.push(r),
            None => return Err(BatchError::Illegal),
        }
    }
    if records.is_empty() || records.len() > limits.max_records {
        return Err(BatchError::Illegal);
    }
    for r in &records {
        let e = if r.payload.len() > limits.max_payload {
            BatchError::PayloadTooBig
        } else if r.payload.is_empty() {
            BatchError::PayloadEmpty
        } else if r.key.len() > limits.max_key {
            BatchError::KeyTooBig
        } else if r.tag.len() > limits.max_tag {
            BatchError::TagTooBig
        } else {
            continue;
        };
        return Err(e);
    }
    Ok(records)
}

fn check_key(key: &[u8]) {
    let mut s = String::new();
    escape_key(key, &mut s);
    assert!(s.bytes().all(|b| (0x21..=0x7E).contains(&b)), "X-Key {s:?} is not a header token");
    assert_eq!(percent_decode(s.as_bytes(), false).as_deref(), Ok(key), "X-Key {s:?}");
    let plain = key.iter().all(|&b| (0x21..=0x7E).contains(&b) && b != b'%');
    assert_eq!(s.len() == key.len(), plain, "escapes exactly the bytes outside 0x21-0x7E and %");
}

/// `tag_matches` restated: some non-empty `;`-token of the tag is in the filter.
fn check_tags(filter: &[u8], tag: &[u8]) {
    let f = tag_tokens(filter);
    assert!(f.iter().all(|t| !t.is_empty() && !t.contains(&b';')), "tokens of {filter:?}");
    let want = tag_tokens(tag).iter().any(|t| f.contains(t));
    assert_eq!(tag_matches(&f, tag), want, "{filter:?} vs {tag:?}");
    if tag.is_empty() {
        assert!(!want, "an untagged message never matches");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((limits, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let limits = Limits {
        max_records: usize::from(limits[0]),
        max_payload: usize::from(limits[1]),
        max_key: usize::from(limits[2] % 32),
        max_tag: usize::from(limits[3] % 32),
    };
    let got = decode_batch(body, &limits);
    assert_eq!(got, expected(body, &limits));
    if let Ok(records) = &got {
        assert!(!records.is_empty() && records.len() <= limits.max_records, "record count");
        let mut again = Vec::with_capacity(body.len());
        for r in records {
            encode_batch_record(&mut again, r.key, r.tag, r.payload);
            check_key(r.key);
        }
        assert_eq!(again, body, "re-encoding gives the body back");
        for pair in records.windows(2) {
            check_tags(pair[0].tag, pair[1].tag);
        }
    }
    // Records cut from the input round-trip whatever the limits say about them.
    let pieces: Vec<&[u8]> = body.chunks(7).collect();
    let mut enc = Vec::new();
    for triple in pieces.chunks(3) {
        let part = |i: usize| triple.get(i).copied().unwrap_or_default();
        encode_batch_record(&mut enc, part(0), part(1), part(2));
    }
    let open = Limits { max_records: usize::MAX, max_payload: 7, max_key: 7, max_tag: 7 };
    match decode_batch(&enc, &open) {
        Ok(records) => {
            assert_eq!(records.len(), pieces.len().div_ceil(3));
            for (r, triple) in records.iter().zip(pieces.chunks(3)) {
                assert_eq!(r.key, triple[0]);
                assert_eq!(r.tag, triple.get(1).copied().unwrap_or_default());
                assert_eq!(r.payload, triple.get(2).copied().unwrap_or_default());
            }
        }
        // Only a missing payload (fewer than three pieces in the last record, or no input).
        Err(e) => assert!(
            matches!(e, BatchError::PayloadEmpty) || (e == BatchError::Illegal && enc.is_empty()),
            "{e:?}"
        ),
    }
    check_key(body);
    check_tags(&data[..data.len().min(8)], body);
});
