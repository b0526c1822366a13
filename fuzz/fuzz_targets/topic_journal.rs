//! The always-mode journal (`topics::journal`) on arbitrary bytes.
//!
//! Input: `[mode, bytes...]`.
//! - `parse(bytes)` never panics; the entries it returns re-encode to exactly the prefix they
//!   came from, and that prefix plus the torn tail it reports is the whole input.
//! - mode bit 0: `bytes` also describe entries (topic, partition, messages with key, tag and
//!   payload cut from the input), which are encoded and must parse back equal, cleanly; every
//!   cut of that encoding parses to the entries wholly before the cut.
//! No allocation may exceed 1 MiB: inputs are at most 8 KiB, so a bigger one would come from a
//! count or length read off the input and not checked against it.
#![no_main]

use std::sync::Arc;

use esub::topics::Message;
use esub::topics::journal::{self, Entry};
use libfuzzer_sys::fuzz_target;

#[path = "shared/bounded.rs"]
mod bounded;

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (topic, p, msgs) in entries {
        let msgs: Vec<Arc<Message>> = msgs.iter().cloned().map(Arc::new).collect();
        journal::encode_entry(&mut out, topic, *p, &msgs);
    }
    out
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
                payload: Arc::new(b[k..].to_vec()),
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
    let (entries, torn) = journal::parse(bytes);
    let again = encode(&entries);
    assert_eq!(again.len() as u64 + torn, bytes.len() as u64);
    assert_eq!(again[..], bytes[..again.len()], "entries re-encode to what they came from");
    if mode & 1 != 0 {
        let built = build(bytes);
        let enc = encode(&built);
        assert_eq!(journal::parse(&enc), (built.clone(), 0));
        let mut ends = Vec::new();
        let mut at = 0;
        for e in &built {
            at += encode(std::slice::from_ref(e)).len();
            ends.push(at);
        }
        for cut in (0..enc.len()).step_by(7) {
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            let (got, rest) = journal::parse(&enc[..cut]);
            assert_eq!(got[..], built[..whole], "cut at {cut}");
            assert_eq!(rest, (cut - ends.get(whole.wrapping_sub(1)).map_or(0, |e| *e)) as u64);
        }
    }
});
