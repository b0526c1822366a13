//! Flat JSON objects (string, number and null values), written and read back by hand: the
//! result line of a run and the table built from many of them.

use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Null,
}

impl Value {
    pub fn num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Builds one object in insertion order.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    fn key(&mut self, k: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        push_str(&mut self.out, k);
        self.out.push(':');
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(&mut self.out, v);
        self
    }

    pub fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    /// A number with `decimals` digits after the point; `None` or a non-finite value is null.
    pub fn num(&mut self, k: &str, v: Option<f64>, decimals: usize) -> &mut Self {
        self.key(k);
        match v {
            Some(v) if v.is_finite() => {
                let _ = write!(self.out, "{v:.decimals$}");
            }
            _ => self.out.push_str("null"),
        }
        self
    }

    pub fn finish(&mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        std::mem::take(&mut self.out)
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses an object whose values are strings, numbers, booleans (as numbers 1/0) or null.
pub fn parse_flat(line: &str) -> Result<BTreeMap<String, Value>, String> {
    let mut p = Parser { s: line.trim().as_bytes(), i: 0 };
    let mut out = BTreeMap::new();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        return Ok(out);
    }
    loop {
        p.ws();
        let k = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let v = match p.peek() {
            Some(b'"') => Value::Str(p.string()?),
            Some(b'n') => p.word("null", Value::Null)?,
            Some(b't') => p.word("true", Value::Num(1.0))?,
            Some(b'f') => p.word("false", Value::Num(0.0))?,
            _ => Value::Num(p.number()?),
        };
        out.insert(k, v);
        p.ws();
        match p.next() {
            Some(b',') => continue,
            Some(b'}') => return Ok(out),
            _ => return Err(format!("expected , or }} at byte {}", p.i)),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value, String> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad number at byte {start}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next().ok_or("unterminated string")? {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let c = match self.next().ok_or("unterminated escape")? {
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            self.i += 4;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        c => c as char,
                    };
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let line = Writer::default()
            .str("target", "es\"ub\n")
            .int("subs", 1000)
            .num("rate", Some(123.456), 1)
            .num("cpu", None, 2)
            .num("nan", Some(f64::NAN), 2)
            .finish();
        assert_eq!(line, r#"{"target":"es\"ub\n","subs":1000,"rate":123.5,"cpu":null,"nan":null}"#);
        let m = parse_flat(&line).unwrap();
        assert_eq!(m["target"], Value::Str("es\"ub\n".into()));
        assert_eq!(m["subs"].num(), Some(1000.0));
        assert_eq!(m["rate"].num(), Some(123.5));
        assert_eq!(m["cpu"], Value::Null);
    }

    #[test]
    fn parses_foreign_spacing_and_literals() {
        let m = parse_flat(r#" { "a" : true , "b":-1.5e3, "c":"\u00e9", "d": false } "#).unwrap();
        assert_eq!(
            (m["a"].num(), m["b"].num(), m["c"].str(), m["d"].num()),
            (Some(1.0), Some(-1500.0), Some("é"), Some(0.0))
        );
        assert!(parse_flat("{}").unwrap().is_empty());
        for bad in ["", "[1]", r#"{"a":1"#, r#"{"a" 1}"#, r#"{"a":"x}"#, r#"{"a":nul}"#] {
            assert!(parse_flat(bad).is_err(), "{bad}");
        }
    }
}
