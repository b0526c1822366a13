//! The members table (`API-cluster.md` section 2): heartbeats heard on `C.hb`, leaves on
//! `C.leave`, loss after 3 of a node's own periods of silence. Pure: the cluster thread feeds
//! it messages and the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Periods of silence after which a node is gone.
const MISSED: u32 = 3;

/// One node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub node: String,
    pub addr: String,
    pub since_ms: u64,
    pub subs: u64,
    pub pools: u64,
    pub stored: u64,
    pub heartbeat_ms: u64,
}

impl Beat {
    /// The heartbeat message.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = self.row();
        v["heartbeat_ms"] = json!(self.heartbeat_ms);
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The `/members` row: the first six fields.
    pub fn row(&self) -> Value {
        json!({
            "node": self.node,
            "addr": self.addr,
            "since_ms": self.since_ms,
            "subs": self.subs,
            "pools": self.pools,
            "stored": self.stored,
        })
    }

    /// A heartbeat as received; `None` when it lacks a field or a period.
    pub fn parse(payload: &[u8]) -> Option<Beat> {
        let v: Value = serde_json::from_slice(payload).ok()?;
        let text = |k: &str| v.get(k)?.as_str().map(str::to_string);
        let num = |k: &str| v.get(k)?.as_u64();
        Some(Beat {
            node: text("node").filter(|n| !n.is_empty())?,
            addr: text("addr")?,
            since_ms: num("since_ms")?,
            subs: num("subs").unwrap_or(0),
            pools: num("pools").unwrap_or(0),
            stored: num("stored").unwrap_or(0),
            heartbeat_ms: num("heartbeat_ms").filter(|&p| p > 0)?,
        })
    }
}

/// The other live nodes (this node is not in it).
#[derive(Debug, Default)]
pub struct Members {
    nodes: BTreeMap<String, (Beat, Instant)>,
}

impl Members {
    /// Records a heartbeat; `true` when the node was not known (the caller answers with its
    /// own heartbeat so the newcomer learns it at once).
    pub fn heard(&mut self, beat: Beat, now: Instant) -> bool {
        self.nodes.insert(beat.node.clone(), (beat, now)).is_none()
    }

    /// A node left; `true` when it was known.
    pub fn left(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// Drops the nodes silent for 3 of their own periods; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, (b, seen))| now >= *seen + period(b) * MISSED)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.nodes.remove(n);
        }
        gone
    }

    /// When the next node would expire if it stays silent.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.nodes.values().map(|(b, seen)| *seen + period(b) * MISSED).min()
    }

    /// The known nodes, sorted by name.
    pub fn beats(&self) -> impl Iterator<Item = &Beat> {
        self.nodes.values().map(|(b, _)| b)
    }

    pub fn clear(&mut self) {
        self.nodes.clear();
    }
}

fn period(b: &Beat) -> Duration {
    Duration::from_millis(b.heartbeat_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, heartbeat_ms: u64) -> Beat {
        Beat {
            node: node.into(),
            addr: "127.0.0.1:1".into(),
            since_ms: 5,
            subs: 1,
            pools: 2,
            stored: 3,
            heartbeat_ms,
        }
    }

    #[test]
    fn json_round_trip() {
        let b = beat("n1", 200);
        assert_eq!(Beat::parse(&b.to_json()), Some(b.clone()));
        assert_eq!(b.row().as_object().unwrap().len(), 6);
        for bad in [&b"{}"[..], b"nope", br#"{"node":"a","addr":"x","since_ms":1}"#] {
            assert_eq!(Beat::parse(bad), None);
        }
    }

    #[test]
    fn join_leave_and_loss_after_three_periods() {
        let t0 = Instant::now();
        let mut m = Members::default();
        assert!(m.heard(beat("b", 100), t0));
        assert!(m.heard(beat("a", 1000), t0));
        assert!(!m.heard(beat("b", 100), t0 + Duration::from_millis(100)));
        let names: Vec<_> = m.beats().map(|b| b.node.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m.next_expiry(), Some(t0 + Duration::from_millis(400)));
        assert!(m.expire(t0 + Duration::from_millis(399)).is_empty());
        assert_eq!(m.expire(t0 + Duration::from_millis(400)), ["b"]);
        assert!(m.left("a"));
        assert!(!m.left("a"));
        assert_eq!(m.next_expiry(), None);
    }
}
