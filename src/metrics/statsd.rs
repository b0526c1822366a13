//! DogStatsD, built by hand: lines `name:value|type|#tag,tag`, packed several to a datagram of at
//! most 1432 bytes (a 1500-byte MTU less IP and UDP headers, with room to spare), sent on a
//! non-blocking socket by the metrics thread. A datagram that cannot be sent is counted, never
//! retried.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Write;

/// Largest datagram we send.
pub const MAX_DATAGRAM: usize = 1432;

/// Replaces the characters that would break a line's grammar (`:|@#,` and line breaks).
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| matches!(b, b':' | b'|' | b'@' | b'#' | b',' | b'\n' | b'\r')) {
        Cow::Owned(s.chars().map(|c| if ":|@#,\n\r".contains(c) { '_' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Sanitises one tag: the first `:` separates name and value and is kept.
pub fn sanitize_tag(tag: &str) -> String {
    match tag.split_once(':') {
        Some((name, value)) => format!("{}:{}", sanitize(name), sanitize(value)),
        None => sanitize(tag).into_owned(),
    }
}

/// Writes one line (without the newline). Name and tags must already be sanitised.
pub fn line(out: &mut Vec<u8>, name: &str, value: impl Display, kind: &str, tags: &[&str]) {
    let _ = write!(out, "{name}:{value}|{kind}");
    for (i, tag) in tags.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"|#" } else { b"," });
        out.extend_from_slice(tag.as_bytes());
    }
}

/// Packs lines into datagrams, newline-separated, each at most `MAX_DATAGRAM` bytes. An empty
/// line is no metric and is dropped wherever it comes, so a datagram never holds a blank line.
#[derive(Default)]
pub struct Packer {
    current: Vec<u8>,
    pub datagrams: Vec<Vec<u8>>,
    /// Lines longer than a datagram on their own (dropped, counted).
    pub oversized: u64,
}

impl Packer {
    pub fn push(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        if line.len() > MAX_DATAGRAM {
            self.oversized += 1;
            return;
        }
        if !self.current.is_empty() && self.current.len() + 1 + line.len() > MAX_DATAGRAM {
            self.datagrams.push(std::mem::take(&mut self.current));
        }
        if !self.current.is_empty() {
            self.current.push(b'\n');
        }
        self.current.extend_from_slice(line);
    }

    pub fn finish(mut self) -> (Vec<Vec<u8>>, u64) {
        if !self.current.is_empty() {
            self.datagrams.push(self.current);
        }
        (self.datagrams, self.oversized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_sanitising() {
        let mut v = Vec::new();
        line(&mut v, "esub.requests", 3, "c", &["route:sub", "success:true"]);
        assert_eq!(v, b"esub.requests:3|c|#route:sub,success:true");
        v.clear();
        line(&mut v, "esub.sub.waiting", 0, "g", &[]);
        assert_eq!(v, b"esub.sub.waiting:0|g");
        assert_eq!(sanitize("a:b|c@d#e,f\ng"), "a_b_c_d_e_f_g");
        assert!(matches!(sanitize("plain.name"), Cow::Borrowed(_)));
        assert_eq!(sanitize_tag("key:a:b,c"), "key:a_b_c");
        assert_eq!(sanitize_tag("env|x:prod\n"), "env_x:prod_");
    }

    #[test]
    fn packs_without_exceeding_the_limit() {
        let mut p = Packer::default();
        let lines: Vec<String> =
            (0..500).map(|i| format!("esub.requests:{i}|c|#route:sub,key:k{i}")).collect();
        for l in &lines {
            p.push(l.as_bytes());
        }
        p.push(&[b'x'; MAX_DATAGRAM + 1]);
        let (datagrams, oversized) = p.finish();
        assert_eq!(oversized, 1);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM && !d.is_empty()));
        let joined: Vec<&[u8]> = datagrams.iter().flat_map(|d| d.split(|&b| b == b'\n')).collect();
        assert_eq!(joined, lines.iter().map(|l| l.as_bytes()).collect::<Vec<_>>());
        // A line of exactly the limit fits alone.
        let mut p = Packer::default();
        p.push(&[b'a'; 10]);
        p.push(&[b'b'; MAX_DATAGRAM]);
        let (d, _) = p.finish();
        assert_eq!(d.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, MAX_DATAGRAM]);
    }

    #[test]
    fn empty_lines_are_dropped_wherever_they_come() {
        let rows: &[(&str, &[&str], &[&str])] = &[
            ("alone", &[""], &[]),
            ("first", &["", "a"], &["a"]),
            ("between", &["a", "", "b"], &["a\nb"]),
            ("last", &["a", ""], &["a"]),
            ("several", &["", "a", "", "", "b", ""], &["a\nb"]),
        ];
        for (name, lines, want) in rows {
            let mut p = Packer::default();
            for l in *lines {
                p.push(l.as_bytes());
            }
            let want: Vec<Vec<u8>> = want.iter().map(|d| d.as_bytes().to_vec()).collect();
            assert_eq!(p.finish(), (want, 0), "{name}");
        }
        // After a full datagram, an empty line starts no new one.
        let mut p = Packer::default();
        p.push(&[b'a'; MAX_DATAGRAM]);
        p.push(b"");
        p.push(b"b");
        let (d, _) = p.finish();
        assert_eq!(d, vec![vec![b'a'; MAX_DATAGRAM], b"b".to_vec()]);
    }
}
