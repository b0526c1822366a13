//! What the status routes show (API-topics 8), built under each topic's lock and rendered
//! outside it: lag rows (listing rule, lag formula, order), the server's counts, and peeks.

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::Message;
use super::hub::Topic;
use super::state::{Group, GroupId, TopicState};

/// Messages a peek returns per partition at most (more is clamped).
pub const PEEK_MAX_N: usize = 100;

/// Payload bytes one peek reads, over all partitions (at least one message of each partition
/// that has one): a peek reads on the worker's thread like a cold fetch step, whose budget this
/// is, and its answer is built in memory at 4/3 of it (base64).
pub const PEEK_MAX_BYTES: usize = 4 << 20;

/// One lag row: a partition of a listed (group, queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub group: String,
    /// `""` (the topic), `retry` or `dead`.
    pub q: String,
    pub partition: u32,
    /// `oldest`.
    pub pold: i64,
    /// `latest`.
    pub pubd: i64,
    /// The committed offset; -1 when the partition has none.
    pub subd: i64,
    pub lag: i64,
    /// The client IP of the instance owning the partition; empty when none does.
    pub realip: String,
    /// What the route adds after the common fields: `("topic", raw)` or `("appid", app)`.
    pub extra: Option<(&'static str, String)>,
}

/// Which field a route adds to its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// `GET /v1/status/:appid/:topic/:ver`.
    Nothing,
    /// `GET /v1/sub/status`: the topic's raw name (a shadow's rows name its topic; `q` says
    /// which queue).
    Topic,
    /// `GET /v1/subd/:topic/:ver`: the subscriber.
    Appid,
}

/// A (group, queue) is listed once it has a commit (a `reset` start counts) or a live instance.
pub fn listed(g: &Group) -> bool {
    !g.instances.is_empty() || g.committed.iter().any(Option::is_some)
}

/// `latest − max(c + 1, oldest)`: what the group has yet to process of what is retained.
pub fn lag(oldest: i64, latest: i64, committed: i64) -> i64 {
    latest - (committed + 1).max(oldest)
}

/// Whether `raw` names a shadow queue (`appid.topic.ver.<subscriber>.<group>.retry|dead`):
/// names have no dots, so a topic's raw name has exactly three parts.
pub fn is_shadow(raw: &str) -> bool {
    raw.bytes().filter(|&b| b == b'.').count() > 2
}

/// The topic a raw name belongs to: itself, or a shadow's first three parts.
pub fn parent(raw: &str) -> &str {
    match raw.match_indices('.').nth(2) {
        Some((i, _)) => &raw[..i],
        None => raw,
    }
}

/// Appends the rows of `st`'s listed (group, queue)s that `keep` accepts, one per partition.
pub fn rows(st: &TopicState, keep: impl Fn(&GroupId) -> bool, extra: Extra, out: &mut Vec<Row>) {
    for (gid, g) in &st.groups {
        if !keep(gid) || !listed(g) {
            continue;
        }
        for (p, part) in st.parts.iter().enumerate() {
            let partition = p as u32;
            let subd = g.committed.get(p).copied().flatten().unwrap_or(-1);
            let realip = g
                .instances
                .iter()
                .find(|i| i.cursors.iter().any(|c| c.partition == partition))
                .map(|i| i.ip.clone())
                .unwrap_or_default();
            out.push(Row {
                group: gid.group.clone(),
                q: gid.queue.clone(),
                partition,
                pold: part.oldest,
                pubd: part.stored,
                subd,
                lag: lag(part.oldest, part.stored, subd),
                realip,
                extra: match extra {
                    Extra::Nothing => None,
                    Extra::Topic => Some(("topic", parent(&st.name).to_string())),
                    Extra::Appid => Some(("appid", gid.app.clone())),
                },
            });
        }
    }
}

/// The listed (group, queue)s of `st` (`GET /v1/status`'s `groups`).
pub fn listed_count(st: &TopicState) -> usize {
    st.groups.values().filter(|g| listed(g)).count()
}

/// The rows in order: by (group, q, partition), bytewise (`""` < `dead` < `retry`); rows equal
/// in those (two topics in `sub/status`, two apps in `subd`) by the added field. References are
/// sorted, not the rows: with a thousand groups, sorting the rows whole cost ~15 % of the route's
/// server CPU.
pub fn sorted(rows: &[Row]) -> Vec<&Row> {
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_unstable_by(|a, b| {
        (&a.group, &a.q, a.partition, &a.extra).cmp(&(&b.group, &b.q, b.partition, &b.extra))
    });
    order
}

/// Rows as a JSON array.
pub fn to_json(rows: &[&Row]) -> String {
    // Sized for the whole answer up front (76 bytes of names and punctuation per row, numbers
    // of up to a dozen digits): grown by doubling, a thousand groups' answer was copied over and
    // over.
    let size = rows.iter().map(|r| {
        let extra = r.extra.as_ref().map_or(0, |(n, v)| n.len() + v.len() + 6);
        136 + r.group.len() + r.q.len() + r.realip.len() + extra
    });
    let mut s = String::with_capacity(2 + size.sum::<usize>());
    s.push('[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"group\":");
        json_str(&mut s, &r.group);
        s.push_str(",\"q\":");
        json_str(&mut s, &r.q);
        // Digit by digit, not `write!`: a thousand groups' rows are the whole cost of the route.
        for (name, v) in [
            (",\"partition\":", i64::from(r.partition)),
            (",\"pold\":", r.pold),
            (",\"pubd\":", r.pubd),
            (",\"subd\":", r.subd),
            (",\"lag\":", r.lag),
        ] {
            s.push_str(name);
            push_i64(&mut s, v);
        }
        s.push_str(",\"realip\":");
        json_str(&mut s, &r.realip);
        if let Some((name, value)) = &r.extra {
            s.push_str(",\"");
            s.push_str(name);
            s.push_str("\":");
            json_str(&mut s, value);
        }
        s.push('}');
    }
    s.push(']');
    s
}

/// `v` in decimal.
fn push_i64(out: &mut String, v: i64) {
    let mut buf = [0; 20];
    let digits = crate::http::response::signed(&mut buf, v);
    out.push_str(std::str::from_utf8(digits).expect("ASCII digits"));
}

/// `v` as a JSON string.
pub fn json_str(out: &mut String, v: &str) {
    out.push('"');
    if !v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Names and addresses: nothing to escape, one copy.
        out.push_str(v);
        out.push('"');
        return;
    }
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends one peeked message as JSON: `{"partition","offset","key","tag","ts","data"}`, key
/// and tag `null` when absent (not UTF-8: replaced), data base64.
pub fn peek_json(out: &mut String, partition: u32, m: &Message) {
    let _ = write!(out, "{{\"partition\":{partition},\"offset\":{},\"key\":", m.offset);
    for (i, v) in [&m.key, &m.tag].into_iter().enumerate() {
        if i == 1 {
            out.push_str(",\"tag\":");
        }
        if v.is_empty() {
            out.push_str("null");
        } else {
            json_str(out, &String::from_utf8_lossy(v));
        }
    }
    let _ = write!(out, ",\"ts\":{},\"data\":\"", m.time_ms);
    STANDARD.encode_string(m.payload.as_slice(), out);
    out.push_str("\"}");
}

/// Up to `n` stored messages of `partition` from `from` on, their payloads within `max_bytes`
/// (but one when there is one): from the in-memory tail when it holds them, else read from
/// disk outside the lock. Moves no cursor and no offset.
pub fn peek(topic: &Topic, partition: u32, from: i64, n: usize, max_bytes: usize) -> Vec<Message> {
    let upto = {
        let st = topic.lock();
        let part = &st.parts[partition as usize];
        let end = part.stored.min(from.saturating_add(n as i64));
        if from >= end {
            return Vec::new();
        }
        // The tail is contiguous: holding both ends, it holds the range.
        if part.get(from).is_some() && part.get(end - 1).is_some() {
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for m in (from..end).filter_map(|o| part.get(o)) {
                if !out.is_empty() && bytes.saturating_add(m.payload.len()) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(m.payload.len());
                out.push(Message::clone(m));
            }
            return out;
        }
        end
    };
    let reader = &topic.readers[partition as usize];
    match reader.read(from, (upto - from) as usize, max_bytes) {
        Ok(v) => v.into_iter().filter(|m| m.offset >= from && m.offset < upto).collect(),
        Err(e) => {
            // Retention overtook the peek, or the disk failed: show nothing of the partition.
            crate::warn!(
                "topic peek failed topic={} partition={partition} offset={from} error={e}",
                topic.name
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::mailbox::ConnId;
    use crate::topics::state::{Cursor, Instance, Part, Reset};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn state(name: &str, parts: &[(i64, i64)]) -> TopicState {
        TopicState {
            name: Arc::from(name),
            retention_hours: 1.0,
            retention_bytes: -1,
            parts: parts.iter().map(|&(o, l)| Part::new(o, l)).collect(),
            rr: 0,
            groups: HashMap::new(),
            skipped: 0,
            redelivered: 0,
        }
    }

    fn gid(app: &str, group: &str, queue: &str) -> GroupId {
        GroupId { app: app.into(), group: group.into(), queue: queue.into() }
    }

    fn instance(ip: &str, partitions: &[u32]) -> Instance {
        Instance {
            id: 1,
            conns: vec![ConnId { worker: 0, token: 1, generation: 1 }],
            cursors: partitions
                .iter()
                .map(|&partition| Cursor { partition, next: 0, busy: false, sent_at: None })
                .collect(),
            turn: 0,
            reset: Reset::Oldest,
            waiters: Vec::new(),
            ip: ip.into(),
        }
    }

    fn group(committed: &[Option<i64>], instances: Vec<Instance>) -> Group {
        Group { committed: committed.to_vec(), instances }
    }

    #[test]
    fn lag_formula() {
        // (oldest, latest, committed) -> lag
        for (o, l, c, want) in [
            (0, 0, -1, 0),   // empty, nothing processed
            (0, 10, -1, 10), // nothing processed
            (0, 10, 4, 5),   // 0..=4 processed
            (0, 10, 9, 0),   // all processed
            (6, 10, 2, 4),   // retention removed 3..6: only what is retained counts
            (6, 10, -1, 4),  // nothing processed, 6..10 retained
            (10, 10, 3, 0),  // all retained gone
        ] {
            assert_eq!(lag(o, l, c), want, "oldest={o} latest={l} committed={c}");
        }
    }

    #[test]
    fn listing_rule_and_rows() {
        let mut st = state("a.t.v1", &[(0, 5), (2, 7)]);
        // A commit on one partition lists the group; the other partition shows -1.
        st.groups.insert(gid("x", "g", ""), group(&[Some(1), None], vec![]));
        // A live instance lists a group without a commit; it owns partition 1 only.
        st.groups
            .insert(gid("x", "live", ""), group(&[None, None], vec![instance("10.0.0.9", &[1])]));
        // Neither: forgotten, not listed.
        st.groups.insert(gid("x", "gone", ""), group(&[None, None], vec![]));
        st.groups.insert(gid("x", "none", ""), Group::default());
        // Another app's group.
        st.groups.insert(gid("y", "g", ""), group(&[Some(4), Some(6)], vec![]));
        assert_eq!(listed_count(&st), 3);
        let mut all = Vec::new();
        rows(&st, |g| g.app == "x", Extra::Nothing, &mut all);
        let out = sorted(&all);
        let row = |group: &str, partition, pold, pubd, subd, lag, realip: &str| Row {
            group: group.into(),
            q: String::new(),
            partition,
            pold,
            pubd,
            subd,
            lag,
            realip: realip.into(),
            extra: None,
        };
        assert_eq!(
            out.iter().map(|r| (*r).clone()).collect::<Vec<_>>(),
            vec![
                row("g", 0, 0, 5, 1, 3, ""),
                row("g", 1, 2, 7, -1, 5, ""),
                row("live", 0, 0, 5, -1, 5, ""),
                row("live", 1, 2, 7, -1, 5, "10.0.0.9"),
            ]
        );
        assert_eq!(
            to_json(&out[..1]),
            r#"[{"group":"g","q":"","partition":0,"pold":0,"pubd":5,"subd":1,"lag":3,"realip":""}]"#
        );
        assert_eq!(
            to_json(&out[1..2]),
            r#"[{"group":"g","q":"","partition":1,"pold":2,"pubd":7,"subd":-1,"lag":5,"realip":""}]"#
        );
        let mut all = Vec::new();
        rows(&st, |g| g.group == "g", Extra::Appid, &mut all);
        let out = sorted(&all);
        let apps: Vec<_> = out.iter().map(|r| (r.partition, r.extra.clone().unwrap().1)).collect();
        assert_eq!(apps, [(0, "x".into()), (0, "y".into()), (1, "x".into()), (1, "y".into())]);
        assert!(to_json(&out[..1]).ends_with(r#""realip":"","appid":"x"}]"#));
    }

    /// Bytewise: upper case before lower, `""` < `dead` < `retry`, partitions numerically.
    #[test]
    fn order() {
        let mut st = state("a.t.v1", &[(0, 1), (0, 1)]);
        for (g, q) in [("b", ""), ("B", "retry"), ("a", "retry"), ("a", ""), ("a", "dead")] {
            st.groups.insert(gid("x", g, q), group(&[Some(0), Some(0)], vec![]));
        }
        let mut all = Vec::new();
        rows(&st, |_| true, Extra::Topic, &mut all);
        let out = sorted(&all);
        let keys: Vec<_> =
            out.iter().map(|r| (r.group.as_str(), r.q.as_str(), r.partition)).collect();
        assert_eq!(
            keys,
            [
                ("B", "retry", 0),
                ("B", "retry", 1),
                ("a", "", 0),
                ("a", "", 1),
                ("a", "dead", 0),
                ("a", "dead", 1),
                ("a", "retry", 0),
                ("a", "retry", 1),
                ("b", "", 0),
                ("b", "", 1),
            ]
        );
        assert!(out.iter().all(|r| r.extra == Some(("topic", "a.t.v1".to_string()))));
    }

    #[test]
    fn shadow_names() {
        for (raw, shadow, topic) in [
            ("a.t.v1", false, "a.t.v1"),
            ("a.t.v1.app2.g.retry", true, "a.t.v1"),
            ("a.t.v1.app2.g.dead", true, "a.t.v1"),
        ] {
            assert_eq!((is_shadow(raw), parent(raw)), (shadow, topic), "{raw}");
        }
    }

    #[test]
    fn json_text() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\u{1}é");
        assert_eq!(s, r#""a\"b\\c\u0001é""#);
        let m = Message {
            offset: 7,
            time_ms: 1234,
            key: b"k".to_vec(),
            tag: Vec::new(),
            msg_id: Vec::new(),
            payload: b"hello".to_vec(),
        };
        let mut s = String::new();
        peek_json(&mut s, 2, &m);
        assert_eq!(
            s,
            r#"{"partition":2,"offset":7,"key":"k","tag":null,"ts":1234,"data":"aGVsbG8="}"#
        );
    }
}
