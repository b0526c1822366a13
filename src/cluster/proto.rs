//! The NATS core text protocol: a parser of server operations (`INFO`, `MSG`, `HMSG`, `PING`,
//! `PONG`, `+OK`, `-ERR`) over whatever bytes have arrived, and encoders of client operations
//! (`CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`). Pure: the client owns the buffers.

use serde_json::{Map, Value};

/// Longest control line we wait for. The server caps its own lines at 4 KiB (`max_control_line`),
/// but INFO is not bound by it and grows with a cluster's `connect_urls`.
pub const MAX_LINE: usize = 64 * 1024;
/// The largest `max_payload` nats-server accepts in its configuration (64 MB); an INFO claiming
/// more is clamped, so no announced length can make us buffer more than this.
pub const HARD_MAX_PAYLOAD: usize = 64 << 20;
/// nats-server's default `max_payload`, used until an INFO says otherwise.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// `connect_urls` kept from one INFO: a cluster is a handful of servers; more is a broken peer.
const MAX_CONNECT_URLS: usize = 64;

/// Why the byte stream cannot be read on. Every variant means the stream is out of step: drop
/// the connection and reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// No line end within `MAX_LINE` bytes.
    LineTooLong,
    /// A line ended in LF without the CR before it, or held a CR elsewhere.
    BadLineEnd,
    /// An operation name we do not know (or a client-only one).
    UnknownOp,
    /// Wrong number of arguments, a size or sid that is not a decimal number, or a header size
    /// larger than the total.
    BadArgs,
    /// A payload announced larger than the server's `max_payload` (or `HARD_MAX_PAYLOAD`).
    PayloadTooLarge,
    /// The bytes after a payload are not CR LF.
    BadPayloadEnd,
    /// INFO whose argument is not a JSON object.
    BadInfo,
}

/// What the client must not send: a subject or queue group that would break the line's grammar,
/// or a header that would break the header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    BadSubject,
    BadQueue,
    BadHeader,
}

/// One server operation, borrowing from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    Info(Box<Info>),
    Msg(Msg<'a>),
    Ping,
    Pong,
    Ok,
    /// `-ERR`'s text without the quotes around it.
    Err(&'a [u8]),
}

/// A `MSG` or an `HMSG` (then `headers` holds the raw header block, parsed by `Headers::parse`).
/// Subjects are bytes: the server passes on whatever a publisher sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub subject: &'a [u8],
    pub sid: u64,
    pub reply: Option<&'a [u8]>,
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// The INFO fields the client acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub server_id: String,
    pub version: String,
    /// Clamped to `HARD_MAX_PAYLOAD`; `DEFAULT_MAX_PAYLOAD` when absent.
    pub max_payload: usize,
    pub headers: bool,
    pub proto: i64,
    pub auth_required: bool,
    pub tls_required: bool,
    /// Other servers of the cluster, `host:port`, at most `MAX_CONNECT_URLS`.
    pub connect_urls: Vec<String>,
    /// Lame duck mode: the server is about to go away.
    pub lame_duck: bool,
}

impl Info {
    pub fn parse(json: &[u8]) -> Result<Info, ProtoError> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(json) else {
            return Err(ProtoError::BadInfo);
        };
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
        let max_payload = match m.get("max_payload").and_then(Value::as_u64) {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(HARD_MAX_PAYLOAD),
            None => DEFAULT_MAX_PAYLOAD,
        };
        let connect_urls = match m.get("connect_urls") {
            Some(Value::Array(urls)) => urls
                .iter()
                .filter_map(Value::as_str)
                .take(MAX_CONNECT_URLS)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Info {
            server_id: text("server_id"),
            version: text("version"),
            max_payload,
            headers: flag("headers"),
            proto: m.get("proto").and_then(Value::as_i64).unwrap_or(0),
            auth_required: flag("auth_required"),
            tls_required: flag("tls_required"),
            connect_urls,
            lame_duck: flag("ldm"),
        })
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = s
        && is_blank(*b)
    {
        s = rest;
    }
    while let [rest @ .., b] = s
        && is_blank(*b)
    {
        s = rest;
    }
    s
}

/// A decimal number of 1 to 20 digits that fits a `u64`.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None }
    })
}

/// Splits `rest` into at most `N` fields; `None` when there are more.
fn fields<const N: usize>(rest: &[u8]) -> Option<([&[u8]; N], usize)> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    for f in rest.split(|&b| is_blank(b)).filter(|f| !f.is_empty()) {
        *out.get_mut(n)? = f;
        n += 1;
    }
    Some((out, n))
}

/// Parses the operation at the front of `buf`: `Ok(Some((op, consumed)))`, or `Ok(None)` when
/// more bytes are needed. Waits for at most `MAX_LINE` bytes of control line and then at most
/// `max_payload` (clamped to `HARD_MAX_PAYLOAD`) bytes of payload and 2 of line end; a length
/// announced past that is an error at once, so a receive buffer bounded by
/// `MAX_LINE + max_payload + 2` always suffices. A verdict does not change with more bytes.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(Op<'_>, usize)>, ProtoError> {
    let max_payload = max_payload.min(HARD_MAX_PAYLOAD);
    let window = &buf[..buf.len().min(MAX_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE { Err(ProtoError::LineTooLong) } else { Ok(None) };
    };
    let line = match window[..lf].strip_suffix(b"\r") {
        Some(line) if !line.contains(&b'\r') => line,
        _ => return Err(ProtoError::BadLineEnd),
    };
    let after = lf + 1;
    let name_end = line.iter().position(|&b| is_blank(b)).unwrap_or(line.len());
    let (name, rest) = line.split_at(name_end);
    let bare = |op: Op<'static>| {
        if trim(rest).is_empty() { Ok(Some((op, after))) } else { Err(ProtoError::BadArgs) }
    };
    if name.eq_ignore_ascii_case(b"MSG") {
        let (f, n) = fields::<4>(rest).ok_or(ProtoError::BadArgs)?;
        let (subject, sid, reply, size) = match n {
            3 => (f[0], f[1], None, f[2]),
            4 => (f[0], f[1], Some(f[2]), f[3]),
            _ => return Err(ProtoError::BadArgs),
        };
        let sid = number(sid).ok_or(ProtoError::BadArgs)?;
        let total = size_arg(size, max_payload)?;
        Ok(payload(buf, after, 0, total)?.map(|(headers, payload, used)| {
            debug_assert!(headers.is_empty());
            (Op::Msg(Msg { subject, sid, reply, headers: None, payload }), used)
        }))
    } else if name.eq_ignore_ascii_case(b"HMSG") {
        let (f, n) = fields::<5>(rest).ok_or(ProtoError::BadArgs)?;
        let (subject, sid, reply, hdr, total) = match n {
            4 => (f[0], f[1], None, f[2], f[3]),
            5 => (f[0], f[1], Some(f[2]), f[3], f[4]),
            _ => return Err(ProtoError::BadArgs),
        };
        let sid = number(sid).ok_or(ProtoError::BadArgs)?;
        let total = size_arg(total, max_payload)?;
        let hdr = number(hdr).ok_or(ProtoError::BadArgs)?;
        let hdr = usize::try_from(hdr).ok().filter(|&h| h <= total).ok_or(ProtoError::BadArgs)?;
        Ok(payload(buf, after, hdr, total)?.map(|(headers, payload, used)| {
            (Op::Msg(Msg { subject, sid, reply, headers: Some(headers), payload }), used)
        }))
    } else if name.eq_ignore_ascii_case(b"PING") {
        bare(Op::Ping)
    } else if name.eq_ignore_ascii_case(b"PONG") {
        bare(Op::Pong)
    } else if name.eq_ignore_ascii_case(b"+OK") {
        bare(Op::Ok)
    } else if name.eq_ignore_ascii_case(b"-ERR") {
        let text = trim(rest);
        let text = match text {
            [b'\'', inner @ .., b'\''] => inner,
            _ => text,
        };
        Ok(Some((Op::Err(text), after)))
    } else if name.eq_ignore_ascii_case(b"INFO") {
        Ok(Some((Op::Info(Box::new(Info::parse(trim(rest))?)), after)))
    } else {
        Err(ProtoError::UnknownOp)
    }
}

fn size_arg(s: &[u8], max_payload: usize) -> Result<usize, ProtoError> {
    let n = number(s).ok_or(ProtoError::BadArgs)?;
    usize::try_from(n).ok().filter(|&n| n <= max_payload).ok_or(ProtoError::PayloadTooLarge)
}

/// The `total` bytes after the control line, split at `hdr`, and the bytes consumed with CR LF.
type Body<'a> = (&'a [u8], &'a [u8], usize);

fn payload(
    buf: &[u8],
    at: usize,
    hdr: usize,
    total: usize,
) -> Result<Option<Body<'_>>, ProtoError> {
    let end = at + total;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtoError::BadPayloadEnd);
    }
    Ok(Some((&buf[at..at + hdr], &buf[at + hdr..end], end + 2)))
}

/// A subject the client may send: dot-separated non-empty tokens of bytes above space (no
/// control bytes, no DEL). With `wildcards`, a token `*` matches one token and a last token `>`
/// the rest (SUB); without, neither may appear as a token (PUB, reply subjects).
pub fn valid_subject(s: &str, wildcards: bool) -> bool {
    if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return false;
    }
    let count = s.split('.').count();
    s.split('.').enumerate().all(|(i, t)| match t {
        "" => false,
        "*" => wildcards,
        ">" => wildcards && i + 1 == count,
        _ => true,
    })
}

/// A queue group name: one non-empty token of bytes above space.
pub fn valid_queue(q: &str) -> bool {
    !q.is_empty() && q.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// Credentials and identity sent in CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// Shown by the server's monitoring (`connz`); the node name.
    pub name: &'a str,
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
    pub token: Option<&'a str>,
    /// `false`: the server does not deliver this connection's messages to its own
    /// subscriptions (NATS's `echo`).
    pub echo: bool,
}

/// `CONNECT {json}`: terse (`verbose:false`, so no `+OK` per operation), headers on, and
/// `no_responders` so a request nobody listens to is answered with a 503 status at once.
/// `protocol:1` is what lets the server send those statuses and asynchronous INFO.
pub fn connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    let mut m = Map::new();
    m.insert("verbose".into(), false.into());
    m.insert("pedantic".into(), false.into());
    m.insert("tls_required".into(), false.into());
    m.insert("name".into(), c.name.into());
    m.insert("lang".into(), "rust-esub".into());
    m.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    m.insert("protocol".into(), 1.into());
    m.insert("echo".into(), c.echo.into());
    m.insert("headers".into(), true.into());
    m.insert("no_responders".into(), true.into());
    for (k, v) in [("user", c.user), ("pass", c.pass), ("auth_token", c.token)] {
        if let Some(v) = v {
            m.insert(k.into(), v.into());
        }
    }
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(Value::Object(m).to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Bytes `publish` writes besides `headers` and `payload`: the longest control line plus CR LF.
pub fn publish_overhead(subject: &str, reply: Option<&str>) -> usize {
    // "HPUB " + subject + " " + reply + " " + 20 digits + " " + 20 digits + CRLF, then CRLF.
    5 + subject.len() + reply.map_or(0, |r| r.len() + 1) + 1 + 20 + 1 + 20 + 2 + 2
}

/// `PUB <subject> [reply] <#bytes>` or, with a header block (from `Headers::encode`),
/// `HPUB <subject> [reply] <#header bytes> <#total bytes>`, then the bytes and CR LF.
pub fn publish(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), EncodeError> {
    publish_head(out, subject, reply, headers, payload.len())?;
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `publish` up to the payload: the control line and the header block. The caller sends
/// `payload_len` bytes and CR LF after it (a shared body is queued without a copy).
pub fn publish_head(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload_len: usize,
) -> Result<(), EncodeError> {
    if !valid_subject(subject, false) || reply.is_some_and(|r| !valid_subject(r, false)) {
        return Err(EncodeError::BadSubject);
    }
    out.extend_from_slice(if headers.is_some() { b"HPUB " } else { b"PUB " });
    out.extend_from_slice(subject.as_bytes());
    if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r.as_bytes());
    }
    let line = match headers {
        Some(h) => format!(" {} {}\r\n", h.len(), h.len() + payload_len),
        None => format!(" {payload_len}\r\n"),
    };
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(headers.unwrap_or_default());
    Ok(())
}

/// `SUB <subject> [queue group] <sid>`.
pub fn subscribe(
    out: &mut Vec<u8>,
    subject: &str,
    queue: Option<&str>,
    sid: u64,
) -> Result<(), EncodeError> {
    if !valid_subject(subject, true) {
        return Err(EncodeError::BadSubject);
    }
    if queue.is_some_and(|q| !valid_queue(q)) {
        return Err(EncodeError::BadQueue);
    }
    let line = match queue {
        Some(q) => format!("SUB {subject} {q} {sid}\r\n"),
        None => format!("SUB {subject} {sid}\r\n"),
    };
    out.extend_from_slice(line.as_bytes());
    Ok(())
}

/// `UNSUB <sid> [max_msgs]`: with `max`, the server ends the subscription after that many more.
pub fn unsubscribe(out: &mut Vec<u8>, sid: u64, max: Option<u64>) {
    let line = match max {
        Some(m) => format!("UNSUB {sid} {m}\r\n"),
        None => format!("UNSUB {sid}\r\n"),
    };
    out.extend_from_slice(line.as_bytes());
}

pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

#[cfg(test)]
mod tests;
