//! Websocket roles of the topics half (API-topics 4.3 and 5.5): a pub socket whose frames are
//! messages, answered in order (pipelining allowed), and a sub socket that is one consumer
//! instance receiving each message as a BINARY frame, committing on write or on the client's
//! TEXT ack frames.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Io;
use super::frame::{self, WsError};
use crate::conn::buffer::OutQueue;
use crate::server::Ctx;
use crate::server::mailbox::ConnId;
use crate::server::unix_ms;
use crate::store::StoreFail;
use crate::topics::hub::Topic;
use crate::topics::state::GroupId;
use crate::topics::{codec, dedupe};

/// Frames answered out of order wait here; past this many unanswered the socket is not read.
const MAX_PENDING: u64 = 1024;
/// A sub socket stops fetching while this much is unsent (a slow reader holds little).
const SUB_BACKLOG: usize = 256 * 1024;
/// Messages fetched per step.
const SUB_STEP: usize = 256;

pub struct TPub {
    topic: Arc<Topic>,
    /// The authenticated appid: each frame is charged to its bucket (1.3).
    appid: Vec<u8>,
    key: Vec<u8>,
    tag: Vec<u8>,
    asynch: bool,
    next_seq: u64,
    next_answer: u64,
    /// Answers by frame number; `None` once written... waiting on the store.
    placed: BTreeMap<u64, (u32, i64)>,
    ready: BTreeMap<u64, String>,
}

impl TPub {
    pub fn new(
        topic: Arc<Topic>,
        appid: Vec<u8>,
        key: Vec<u8>,
        tag: Vec<u8>,
        asynch: bool,
    ) -> TPub {
        TPub {
            topic,
            appid,
            key,
            tag,
            asynch,
            next_seq: 0,
            next_answer: 0,
            placed: BTreeMap::new(),
            ready: BTreeMap::new(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.next_seq - self.next_answer >= MAX_PENDING
    }

    /// Frames still waiting for their answer.
    pub fn pending(&self) -> bool {
        self.next_seq > self.next_answer
    }

    /// One client data frame: a message (BINARY) or a JSON message (TEXT).
    pub fn on_frame(
        &mut self,
        text: bool,
        data: Vec<u8>,
        io: &mut Io,
        ctx: &mut Ctx,
    ) -> Result<(), WsError> {
        let (key, tag, payload, id) = if text {
            let s = std::str::from_utf8(&data).map_err(|_| WsError::InvalidData("not UTF-8"))?;
            let m = codec::parse_ws_pub(s).ok_or(WsError::InvalidData("not a pub message"))?;
            let key = m.key.map(String::into_bytes).unwrap_or_default();
            let tag = m.tag.map(String::into_bytes).unwrap_or_default();
            (key, tag, m.data.into_bytes(), m.id.map(String::into_bytes))
        } else {
            (self.key.clone(), self.tag.clone(), data, None)
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let shared = ctx.shared.clone();
        let Some(hub) = shared.hub.as_ref() else { return Ok(()) };
        let cfg = &hub.cfg;
        let quota = hub.rates.charge_appid(&self.appid, 1, ctx.now).is_err();
        let refused = if quota {
            Some("quota exceeded")
        } else if payload.len() > cfg.pub_max_bytes {
            Some("too big message")
        } else if payload.is_empty() {
            Some("too small message")
        } else if key.len() > cfg.max_key_bytes {
            Some("too big key")
        } else if tag.len() > cfg.max_tag_bytes {
            Some("too big tag")
        } else if id.as_deref().is_some_and(|id| !dedupe::valid_id(id) || self.asynch) {
            Some("illegal msg id")
        } else {
            None
        };
        if let Some(text) = refused {
            self.answer(seq, format!("{{\"errmsg\":{}}}", serde_json::Value::from(text)), io.out);
            return Ok(());
        }
        if let Some(id) = &id {
            let now = unix_ms();
            let claim = hub.dedupe.lock().unwrap_or_else(std::sync::PoisonError::into_inner).claim(
                &self.topic.name,
                id,
                now,
                (io.id, Some(seq)),
            );
            match claim {
                dedupe::Claim::First => {}
                dedupe::Claim::Stored(p, o) => {
                    self.answer(seq, dup_frame(p, o), io.out);
                    return Ok(());
                }
                dedupe::Claim::Waiting => {
                    self.placed.insert(seq, (0, -1));
                    return Ok(());
                }
            }
        }
        let reply = (!self.asynch).then_some((io.id, Some(seq)));
        let id = id.map(Vec::into_boxed_slice);
        let record = std::iter::once((key, tag, payload));
        let (placed, _) = hub.publish(&shared, &self.topic, record, reply, id, ctx.wall_ms);
        let (p, o) = placed[0];
        if self.asynch {
            self.answer(seq, ok_frame(p, o), io.out);
        } else {
            self.placed.insert(seq, (p, o));
        }
        Ok(())
    }

    /// The store's answer for frame `seq`.
    pub fn on_stored(&mut self, seq: u64, result: Result<(), StoreFail>, out: &mut OutQueue) {
        let Some((p, o)) = self.placed.remove(&seq) else { return };
        let text = match result {
            Ok(()) => ok_frame(p, o),
            Err(StoreFail::Full) => "{\"errmsg\":\"Insufficient Storage\"}".to_string(),
            Err(StoreFail::Io) => "{\"errmsg\":\"store error\"}".to_string(),
        };
        self.answer(seq, text, out);
    }

    /// The first pub of the id frame `seq` duplicates was stored (or failed).
    pub fn on_duplicate(
        &mut self,
        seq: u64,
        result: Result<(u32, i64), StoreFail>,
        out: &mut OutQueue,
    ) {
        if self.placed.remove(&seq).is_none() {
            return;
        }
        let text = match result {
            Ok((p, o)) => dup_frame(p, o),
            Err(StoreFail::Full) => "{\"errmsg\":\"Insufficient Storage\"}".to_string(),
            Err(StoreFail::Io) => "{\"errmsg\":\"store error\"}".to_string(),
        };
        self.answer(seq, text, out);
    }

    fn answer(&mut self, seq: u64, text: String, out: &mut OutQueue) {
        self.ready.insert(seq, text);
        while let Some(text) = self.ready.remove(&self.next_answer) {
            out.with_bytes(|v| frame::text(v, &text));
            self.next_answer += 1;
        }
    }
}

fn dup_frame(p: u32, o: i64) -> String {
    format!("{{\"ok\":1,\"partition\":{p},\"offset\":{o},\"duplicate\":1}}")
}

fn ok_frame(p: u32, o: i64) -> String {
    format!("{{\"ok\":1,\"partition\":{p},\"offset\":{o}}}")
}

pub struct TSub {
    topic: Arc<Topic>,
    gid: GroupId,
    inst: u64,
    ack: bool,
    meta: bool,
    filter: Vec<Vec<u8>>,
    /// Auto mode: (out-stream offset the frame ends at, partition, offset).
    written: VecDeque<(u64, u32, i64)>,
    /// Registered as a waiter of the instance.
    pub parked: bool,
}

impl TSub {
    pub fn new(
        topic: Arc<Topic>,
        gid: GroupId,
        inst: u64,
        ack: bool,
        meta: bool,
        filter: Vec<Vec<u8>>,
    ) -> TSub {
        TSub { topic, gid, inst, ack, meta, filter, written: VecDeque::new(), parked: false }
    }

    /// Sends what the instance's partitions hold, while the socket keeps up; parks when
    /// there is nothing.
    pub fn fetch(&mut self, out: &mut OutQueue, id: ConnId, ctx: &mut Ctx) {
        let shared = ctx.shared.clone();
        let Some(hub) = shared.hub.as_ref() else { return };
        let mut progressed = false;
        for _ in 0..64 {
            if out.pending() >= SUB_BACKLOG {
                return;
            }
            if let (true, Some(timeout)) = (self.ack, hub.cfg.ack_timeout) {
                self.topic.lock().expire(&self.gid, self.inst, ctx.now, timeout);
            }
            let (msgs, recs) = self.topic.take(&self.gid, self.inst, SUB_STEP);
            hub.commit(recs);
            if msgs.is_empty() {
                if self.topic.lock().wait(&self.gid, self.inst, id) {
                    self.parked = true;
                    return;
                }
                continue;
            }
            progressed = true;
            let filter: Vec<&[u8]> = self.filter.iter().map(Vec::as_slice).collect();
            let mut sent = 0u64;
            // `ack=1`: the partitions handed out, marked under one lock after the loop.
            let mut handed: Vec<u32> = Vec::new();
            for (p, m) in msgs {
                if !filter.is_empty() && !codec::tag_matches(&filter, &m.tag) {
                    if !self.ack {
                        self.written.push_back((out.total_queued(), p, m.offset));
                    }
                    continue;
                }
                if self.meta {
                    let head = codec::sub_record_head(p as i32, m.offset, m.payload.len() as i32);
                    out.with_bytes(|v| {
                        frame::binary_header(v, 16 + m.payload.len());
                        v.extend_from_slice(&head);
                    });
                } else {
                    out.with_bytes(|v| frame::binary_header(v, m.payload.len()));
                }
                out.push_message(&m);
                sent += 1;
                if self.ack {
                    if !handed.contains(&p) {
                        handed.push(p);
                    }
                } else {
                    self.written.push_back((out.total_queued(), p, m.offset));
                }
            }
            if !handed.is_empty() {
                let mut st = self.topic.lock();
                for p in handed {
                    st.mark_sent(&self.gid, self.inst, p, ctx.now);
                }
            }
            hub.msgs_out.fetch_add(sent, Ordering::Relaxed);
        }
        // The step budget ran out: come back through the loop (a wake-up to ourselves).
        if progressed {
            self.parked = true;
            ctx.post(crate::server::mailbox::Msg::Topic {
                to: id,
                ev: crate::server::mailbox::TopicEv::Wake,
            });
        }
    }

    /// Auto mode: commits what is wholly written.
    pub fn on_written(&mut self, out: &OutQueue, ctx: &mut Ctx) {
        if self.written.front().is_none_or(|(end, _, _)| *end > out.total_written()) {
            return;
        }
        let mut st = self.topic.lock();
        let mut recs = Vec::new();
        while let Some(&(end, p, o)) = self.written.front() {
            if end > out.total_written() {
                break;
            }
            self.written.pop_front();
            recs.extend(st.delivered(&self.gid, p, o));
        }
        drop(st);
        if let Some(hub) = &ctx.shared.hub {
            hub.commit(recs);
        }
    }

    /// A client TEXT frame with `ack=1`: a JSON array of acks (5.3).
    pub fn on_ack(&mut self, data: &[u8], ctx: &mut Ctx) -> Result<(), (u16, &'static str)> {
        if !self.ack {
            return Ok(());
        }
        let pairs = codec::parse_ack_json(data).ok_or((1007, "invalid ack json body"))?;
        let recs = self.topic.lock().ack(&self.gid, &pairs).map_err(|t| (1008, t))?;
        if let Some(hub) = &ctx.shared.hub {
            hub.commit(recs);
        }
        Ok(())
    }
}
