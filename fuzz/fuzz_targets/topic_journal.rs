//! The always-mode journal (`topics::journal`) on arbitrary bytes.
//!
//! Input: `[mode, bytes...]`.
//! - `header(bytes)` and `parse(bytes, generation)` never panic; the entries `parse` returns
//!   re-encode to exactly the prefix they came from.
//! - mode bit 0: `bytes` also describe entries (topic, partition, messages with key, tag and
//!   payload cut from the input), which are encoded and must parse back equal, cleanly, also
//!   when zeros or an earlier generation's entries follow them; every cut of that encoding
//!   parses to the entries wholly before the cut, torn when the cut left a part of one.
//! No allocation may exceed 1 MiB: inputs are at most 8 KiB, so a bigger one would come from a
//! count or length read off the input and not checked against it.
#![no_main]

use std::sync::Arc;

use esub::topics::Message;
use esub::topics::journal::{self, Entry, Parsed};
use libfuzzer_sys::fuzz_target;

#[path = "shared/bounded.rs"]
mod bounded;

const GENERATION: u64 = 7;

fn encode(entries: &[Entry], generation: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (topic, p, msgs) in entries {
        let msgs: Vec<Arc<Message>> = msgs.iter().cloned().map(Arc::new).collect();
        journal::encode_entry(&mut out, generation, topic, *p, &msgs);
    }
    out
}

fn clean(entries: Vec<Entry>, used: usize) -> Parsed {
    Parsed { entries, used, torn: false }
}

/// Entries described by `data`: a few bytes each for the name, partition, count and messages.
fn build(data: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut it = data.chunks(24);
    let mut offset = 0i64;
    while let Some(c) = it.next() {
        let name = String::from_utf8_lossy(&c[..c.len().min(6)]).into_owned();
        let partition = u32::from(c[0]);
        let count = usize::from(c.get(1).copied().unwrap_or(0) % 5);
        let mut msgs = Vec::new();
        for i in 0..count {
            let b = it.next().unwrap_or(&[]);
            let k = b.len().min(usize::from(b.first().copied().unwrap_or(0) % 4));
            msgs.push(Message {
                offset,
                time_ms: i as u64,
                key: b[..k].to_vec(),
                tag: if i % 2 == 0 { Vec::new() } else { b"t=1".to_vec() },
                msg_id: Vec::new(),
                payload: b[k..].to_vec(),
            });
            offset += 1;
        }
        entries.push((name, partition, msgs));
    }
    entries
}

fuzz_target!(|data: &[u8]| {
    let [mode, bytes @ ..] = data else {
        return;
    };
    let _ = journal::header(bytes);
    let parsed = journal::parse(bytes, GENERATION);
    let again = encode(&parsed.entries, GENERATION);
    assert_eq!(again.len(), parsed.used);
    assert_eq!(again[..], bytes[..again.len()], "entries re-encode to what they came from");
    if mode & 1 != 0 {
        let built = build(bytes);
        let enc = encode(&built, GENERATION);
        assert_eq!(journal::parse(&enc, GENERATION), clean(built.clone(), enc.len()));
        let mut zeros = enc.clone();
        zeros.resize(enc.len() + 64, 0);
        assert_eq!(journal::parse(&zeros, GENERATION), clean(built.clone(), enc.len()));
        let mut older = enc.clone();
        older.extend_from_slice(&encode(&built, GENERATION - 1));
        assert_eq!(journal::parse(&older, GENERATION), clean(built.clone(), enc.len()));
        let mut ends = vec![0];
        for e in &built {
            ends.push(ends.last().unwrap() + encode(std::slice::from_ref(e), GENERATION).len());
        }
        for cut in (0..enc.len()).step_by(7) {
            let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
            let got = journal::parse(&enc[..cut], GENERATION);
            assert_eq!(got.entries[..], built[..whole], "cut at {cut}");
            assert_eq!(got.used, ends[whole]);
            let part = &enc[ends[whole]..cut];
            assert_eq!(got.torn, part.iter().take(8).any(|&b| b != 0), "cut at {cut}");
        }
    }
});
