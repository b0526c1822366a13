//! DogStatsD lines and datagrams: `sanitize`, `sanitize_tag`, `line` and `Packer` on names and
//! tags taken from the input (which the dictionary fills with `:|@#,` and line breaks).
//!
//! Input: a sequence of records, each `[op, ...]`:
//! - op % 4 == 0, 1: a metric line. `[repeat, kind, value_kind, value(8), ntags]`, then the name
//!   and each tag, each as `[len, bytes...]` (lossy UTF-8). The name is repeated `repeat / 8 + 1`
//!   times so that lines reach the datagram limit. The line is built from the sanitised parts.
//! - op % 4 == 2, 3: a raw line of `[len_hi, len_lo] % 4097` bytes (cycled from the input,
//!   line breaks dropped): lines of any length, empty or past the limit too.
//!
//! Every line is pushed into one `Packer`. An empty line (which `line` never makes) is dropped
//! wherever it comes: no datagram holds a blank line.
#![no_main]

use std::borrow::Cow;

use esub::metrics::statsd::{MAX_DATAGRAM, Packer, line, sanitize, sanitize_tag};
use libfuzzer_sys::fuzz_target;

const SPECIAL: &[char] = &[':', '|', '@', '#', ',', '\n', '\r'];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn string(&mut self) -> String {
        let n = self.byte().unwrap_or(0);
        String::from_utf8_lossy(self.bytes(usize::from(n))).into_owned()
    }
}

/// `sanitize` replaces exactly the special characters, one `_` each, and borrows when there
/// are none.
fn check_sanitize(s: &str) -> String {
    let out = sanitize(s);
    assert!(!out.contains(SPECIAL), "sanitize({s:?}) = {out:?}");
    let had = s.contains(SPECIAL);
    assert_eq!(matches!(out, Cow::Borrowed(_)), !had, "borrows exactly when clean: {s:?}");
    assert_eq!(out.chars().count(), s.chars().count(), "one character for one");
    for (a, b) in s.chars().zip(out.chars()) {
        assert_eq!(b, if SPECIAL.contains(&a) { '_' } else { a }, "in {s:?}");
    }
    out.into_owned()
}

/// `sanitize_tag` keeps the first `:` (name and value) and sanitises both sides.
fn check_tag(t: &str) -> String {
    let out = sanitize_tag(t);
    let want = match t.split_once(':') {
        Some((name, value)) => format!("{}:{}", check_sanitize(name), check_sanitize(value)),
        None => check_sanitize(t),
    };
    assert_eq!(out, want, "sanitize_tag({t:?})");
    let colons = out.matches(':').count();
    assert_eq!(colons, usize::from(t.contains(':')), "{out:?}: one ':' when the tag had one");
    assert!(!out.contains(&SPECIAL[1..]), "{out:?}");
    out
}

/// A line reads back as the parts it was made of.
fn check_line(l: &[u8], name: &str, value: &str, kind: &str, tags: &[String]) {
    let s = std::str::from_utf8(l).expect("a line of UTF-8 parts is UTF-8");
    assert!(!s.contains(['\n', '\r']), "line break in a line: {s:?}");
    let (n, rest) = s.split_once(':').expect("name:value");
    assert_eq!(n, name);
    let mut fields = rest.split('|');
    assert_eq!(fields.next(), Some(value), "{s:?}");
    assert_eq!(fields.next(), Some(kind), "{s:?}");
    match fields.next() {
        None => assert!(tags.is_empty(), "tags missing from {s:?}"),
        Some(t) => {
            let t = t.strip_prefix('#').expect("tags start with #");
            let got: Vec<&str> = t.split(',').collect();
            assert_eq!(got, tags, "{s:?}");
        }
    }
    assert_eq!(fields.next(), None, "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    // What raw lines are cut from: the input without its line breaks.
    let filler: Vec<u8> = data.iter().copied().filter(|&b| b != b'\n').chain([b'x']).collect();
    let mut packer = Packer::default();
    let mut pushed: Vec<Vec<u8>> = Vec::new();
    let mut ops = 0;
    while let Some(op) = input.byte() {
        ops += 1;
        if ops > 256 {
            break;
        }
        let l = match op % 4 {
            0 | 1 => {
                let repeat = usize::from(input.byte().unwrap_or(0) / 8) + 1;
                let kind =
                    ["c", "g", "ms", "h", "d", "s"][usize::from(input.byte().unwrap_or(0) % 6)];
                let value_kind = input.byte().unwrap_or(0);
                let raw: [u8; 8] = input.bytes(8).try_into().unwrap_or_default();
                let value = match value_kind % 4 {
                    0 => u64::from_le_bytes(raw).to_string(),
                    1 => i64::from_le_bytes(raw).to_string(),
                    2 => f64::from_le_bytes(raw).to_string(),
                    _ => format!("{:.3}", f64::from_le_bytes(raw)),
                };
                let ntags = input.byte().unwrap_or(0) % 8;
                // Checked character by character once; the repeated name (long lines, cheaply)
                // must sanitise to the repeated result.
                let base = input.string();
                let clean = check_sanitize(&base).repeat(repeat);
                let name = sanitize(&base.repeat(repeat)).into_owned();
                assert_eq!(name, clean, "sanitize of a repeated name");
                let tags: Vec<String> = (0..ntags).map(|_| check_tag(&input.string())).collect();
                let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
                let mut l = Vec::new();
                line(&mut l, &name, &value, kind, &tag_refs);
                check_line(&l, &name, &value, kind, &tags);
                l
            }
            _ => {
                let hi = input.byte().unwrap_or(0);
                let lo = input.byte().unwrap_or(0);
                let len = (usize::from(hi) << 8 | usize::from(lo)) % 4097;
                let mut l = Vec::with_capacity(len);
                while l.len() < len {
                    let k = (len - l.len()).min(filler.len());
                    l.extend_from_slice(&filler[..k]);
                }
                l
            }
        };
        packer.push(&l);
        pushed.push(l);
    }

    let (datagrams, oversized) = packer.finish();
    assert_eq!(
        oversized,
        pushed.iter().filter(|l| l.len() > MAX_DATAGRAM).count() as u64,
        "oversized count"
    );
    for d in &datagrams {
        assert!(!d.is_empty(), "empty datagram");
        assert!(d.len() <= MAX_DATAGRAM, "datagram of {} bytes", d.len());
    }
    // Every non-empty line that fits arrives, whole and in order.
    let fitting: Vec<&[u8]> = pushed
        .iter()
        .map(Vec::as_slice)
        .filter(|l| !l.is_empty() && l.len() <= MAX_DATAGRAM)
        .collect();
    let got: Vec<&[u8]> = datagrams.iter().flat_map(|d| d.split(|&b| b == b'\n')).collect();
    assert_eq!(got, fitting, "the datagrams' lines");
    assert_eq!(datagrams.join(&b'\n'), fitting.join(&b'\n'), "joined by newlines");
    // Greedy packing: a datagram ends only where its next line would not fit.
    for w in datagrams.windows(2) {
        let next = w[1].split(|&b| b == b'\n').next().unwrap_or_default();
        assert!(
            w[0].len() + 1 + next.len() > MAX_DATAGRAM,
            "a datagram of {} bytes ended before a line of {} that fits",
            w[0].len(),
            next.len()
        );
    }
});
