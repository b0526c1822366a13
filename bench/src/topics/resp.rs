//! RESP2, the Redis protocol, as far as the topics generator needs it: commands written as arrays
//! of bulk strings into a reused buffer, and replies parsed in place, `Ok(None)` while incomplete.

use crate::http::push_decimal;

/// Deepest nesting accepted in a reply: `XREADGROUP` needs four levels (streams, entries, an
/// entry, its fields); more means a broken stream.
const MAX_DEPTH: usize = 8;
/// Longest bulk string accepted: a payload plus room; Redis's own limit is 512 MB.
const MAX_BULK: usize = 16 << 20;

/// One reply, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None`: the null bulk string (`$-1`).
    Bulk(Option<&'a [u8]>),
    /// `None`: the null array (`*-1`), what `XREADGROUP ... BLOCK` answers on a timeout.
    Array(Option<Vec<Value<'a>>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// An unknown type byte, a bad number or a missing CRLF.
    Syntax,
    TooDeep,
    TooLong,
}

/// Appends one command: `*<n>` then each argument as `$<len>` and its bytes.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_decimal(out, a.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the first reply in `buf`: the value and the bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Value<'_>, usize)>, RespError> {
    let mut pos = 0;
    Ok(value(buf, &mut pos, 0)?.map(|v| (v, pos)))
}

/// The line at `*pos` without its CRLF, moving `pos` past it.
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = &buf[*pos..];
    let eol = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += eol + 2;
    Some(&rest[..eol])
}

fn int(s: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match s {
        [b'-', d @ ..] => (true, d),
        d => (false, d),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::Syntax);
    }
    let n = digits.iter().fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    Ok(if neg { -n } else { n })
}

fn value<'a>(buf: &'a [u8], pos: &mut usize, depth: usize) -> Result<Option<Value<'a>>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::TooDeep);
    }
    let Some(&kind) = buf.get(*pos) else { return Ok(None) };
    let mut at = *pos + 1;
    let Some(head) = line(buf, &mut at) else { return Ok(None) };
    let v = match kind {
        b'+' => Value::Simple(head),
        b'-' => Value::Error(head),
        b':' => Value::Int(int(head)?),
        b'$' => match int(head)? {
            -1 => Value::Bulk(None),
            n if n < 0 => return Err(RespError::Syntax),
            n if n as usize > MAX_BULK => return Err(RespError::TooLong),
            n => {
                let n = n as usize;
                if buf.len() < at + n + 2 {
                    return Ok(None);
                }
                if &buf[at + n..at + n + 2] != b"\r\n" {
                    return Err(RespError::Syntax);
                }
                let s = &buf[at..at + n];
                at += n + 2;
                Value::Bulk(Some(s))
            }
        },
        b'*' => match int(head)? {
            -1 => Value::Array(None),
            n if n < 0 => return Err(RespError::Syntax),
            n => {
                // Each element takes at least 3 bytes, so a count past the input is only waiting
                // for bytes; capping the allocation keeps a huge count from reserving memory.
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    let Some(item) = value(buf, &mut at, depth + 1)? else { return Ok(None) };
                    items.push(item);
                }
                Value::Array(Some(items))
            }
        },
        _ => return Err(RespError::Syntax),
    };
    *pos = at;
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"XADD", b"s0", b"*", b"d", b"a\r\nb"]);
        assert_eq!(out, b"*5\r\n$4\r\nXADD\r\n$2\r\ns0\r\n$1\r\n*\r\n$1\r\nd\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn replies_in_place() {
        let rows: Vec<(&[u8], Value)> = vec![
            (b"+OK\r\n", Value::Simple(b"OK")),
            (b"-ERR no\r\n", Value::Error(b"ERR no")),
            (b":-42\r\n", Value::Int(-42)),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"$0\r\n\r\n", Value::Bulk(Some(b""))),
            (b"$4\r\na\r\nb\r\n", Value::Bulk(Some(b"a\r\nb"))),
            (b"*-1\r\n", Value::Array(None)),
            (b"*0\r\n", Value::Array(Some(vec![]))),
            (
                b"*2\r\n$15\r\n1700000000000-0\r\n*1\r\n:7\r\n",
                Value::Array(Some(vec![
                    Value::Bulk(Some(b"1700000000000-0")),
                    Value::Array(Some(vec![Value::Int(7)])),
                ])),
            ),
        ];
        for (bytes, want) in rows {
            let mut two = bytes.to_vec();
            two.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(parse(&two), Ok(Some((want.clone(), bytes.len()))), "{bytes:?}");
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{bytes:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn broken_replies() {
        let rows: &[(&[u8], RespError)] = &[
            (b"?x\r\n", RespError::Syntax),
            (b":1x\r\n", RespError::Syntax),
            (b"$-2\r\n", RespError::Syntax),
            (b"$3\r\nabcd\r\n", RespError::Syntax),
            (b"$99999999999\r\n", RespError::TooLong),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", RespError::TooDeep),
        ];
        for (bytes, want) in rows {
            assert_eq!(parse(bytes), Err(*want), "{bytes:?}");
        }
    }
}
