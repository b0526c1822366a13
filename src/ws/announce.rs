//! A websocket announce listener (`GET /announce` upgraded): one TEXT frame per key event,
//! sent when its worker is woken by the feed. A listener that does not keep up is closed.

use super::frame;
use crate::announce::Lease;
use crate::conn::buffer::OutQueue;
use crate::server::mailbox::ConnId;

/// Unsent bytes past which a listener is closed (1008) instead of queueing more: a whole
/// ring of events with the longest keys (1,000 × about 330 bytes) fits three times.
pub const MAX_UNSENT: usize = 1 << 20;

pub struct Listener {
    lease: Lease,
    /// The feed position of the next event to send.
    cursor: u64,
    /// The first fetch sends only events with seq above this (`?since=`).
    since: Option<i64>,
    /// One event's JSON, reused.
    scratch: Vec<u8>,
}

impl Listener {
    pub fn new(lease: Lease, cursor: u64, since: Option<i64>) -> Listener {
        Listener { lease, cursor, since, scratch: Vec::new() }
    }

    /// Queues the events since the last fetch and asks to be woken at the next; `Err` is the
    /// close (code, reason) for a listener that fell behind the ring or stopped reading.
    pub fn fetch(&mut self, out: &mut OutQueue, id: ConnId) -> Result<(), (u16, &'static str)> {
        let events = self
            .lease
            .feed()
            .follow(&mut self.cursor, self.since.take(), id)
            .map_err(|_| (1008, "listener fell behind"))?;
        for e in &events {
            self.scratch.clear();
            e.write_json(&mut self.scratch);
            out.with_bytes(|v| {
                frame::text_header(v, self.scratch.len());
                v.extend_from_slice(&self.scratch);
            });
        }
        if out.pending() > MAX_UNSENT {
            return Err((1008, "listener too slow"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::{Feed, Kind, RING};
    use std::sync::Arc;

    #[test]
    fn frames_then_backlog_and_lag_close() {
        let id = ConnId { worker: 0, token: 1, generation: 1 };
        let feed = Arc::new(Feed::new("me"));
        let key: Arc<str> = Arc::from("k");
        feed.record(&key, Kind::New);
        let mut l = Listener::new(feed.lease(id).unwrap(), 0, Some(0));
        let mut out = OutQueue::default();
        assert_eq!(l.fetch(&mut out, id), Ok(()));
        let json = br#"{"seq":1,"node":"me","key":"k","event":"new"}"#;
        assert_eq!(out.pending(), 2 + json.len());
        // Woken by the next event; a reader that stopped reading is closed, not grown.
        assert_eq!(feed.record(&key, Kind::Gone).0, vec![id]);
        out.with_bytes(|v| v.resize(v.len() + MAX_UNSENT, b'x'));
        assert_eq!(l.fetch(&mut out, id), Err((1008, "listener too slow")));
        // More than the ring between two fetches: events were lost, the listener is closed.
        for _ in 0..RING + 1 {
            feed.record(&key, Kind::New);
        }
        let mut out = OutQueue::default();
        assert_eq!(l.fetch(&mut out, id), Err((1008, "listener fell behind")));
    }
}
