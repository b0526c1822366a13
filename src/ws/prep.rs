//! `/prep`: reps sent as JSON messages over one websocket, each handled like `POST /rep`, with
//! answers (`ok`, `Unknown key`, ...) sent back in order when confirmation is on.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::cluster::handle::ClusterMsg;
use crate::conn::buffer::OutQueue;
use crate::registry::{Claim, PoolRef};
use crate::router::MAX_KEY_BYTES;
use crate::server::Ctx;
use crate::server::mailbox::{ConnId, Msg, ReplyTo};
use crate::ws::frame::{self, WsError};
use crate::ws::{Io, MAX_QUEUED};

/// Reps one prep socket may have unanswered; past it we stop reading its frames until answers
/// go out (backpressure instead of unbounded memory).
const MAX_INFLIGHT: usize = MAX_QUEUED;

pub struct Prep {
    confirm: bool,
    next_seq: u64,
    /// The sequence number of `answers[0]`.
    first: u64,
    /// Answers in message order; `None` while a rep is under way.
    answers: VecDeque<Option<&'static str>>,
}

/// One message: `{"key": str, "token": str|null, "psub": bool, "data": str}`.
struct Message {
    key: String,
    token: Option<String>,
    psub: bool,
    data: String,
}

fn parse(text: &[u8]) -> Result<Message, WsError> {
    let bad = |why| WsError::InvalidData(why);
    let mut v: serde_json::Value = serde_json::from_slice(text).map_err(|_| bad("invalid JSON"))?;
    let obj = v.as_object_mut().ok_or(bad("not a JSON object"))?;
    let key = match obj.remove("key") {
        Some(serde_json::Value::String(k)) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => k,
        _ => return Err(bad("key must be a string of 1 to 256 bytes")),
    };
    let token = match obj.remove("token") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => (!t.is_empty()).then_some(t),
        Some(_) => return Err(bad("token must be a string or null")),
    };
    let psub = match obj.remove("psub") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => return Err(bad("psub must be a boolean")),
    };
    let data = match obj.remove("data") {
        Some(serde_json::Value::String(d)) => d,
        _ => return Err(bad("data must be a string")),
    };
    Ok(Message { key, token, psub, data })
}

impl Prep {
    pub fn new(confirm: bool) -> Prep {
        Prep { confirm, next_seq: 1, first: 1, answers: VecDeque::new() }
    }

    pub fn is_full(&self) -> bool {
        self.answers.len() >= MAX_INFLIGHT
    }

    /// Handles one TEXT message; an error closes the socket with its code.
    pub fn on_message(&mut self, text: &[u8], io: &mut Io, ctx: &mut Ctx) -> Result<(), WsError> {
        let m = parse(text)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        // Every rep is tracked, with or without confirmation: that bounds what one socket can
        // have in flight (and queued in other workers' mailboxes) to MAX_INFLIGHT.
        self.answers.push_back(None);
        match ctx.shared.registry.claim(&m.key, m.token.as_deref(), m.psub) {
            Claim::Unknown => match ctx.shared.cluster() {
                // Routed like a rep (API-cluster.md section 3); the answer comes back by seq.
                Some(cluster) if cluster.joined() => {
                    let reply = ReplyTo { conn: io.id, seq };
                    let (key, token) =
                        (Arc::from(m.key.as_str()), m.token.as_deref().map(Arc::from));
                    let body = Arc::new(m.data.into_bytes());
                    cluster.post(ClusterMsg::Forward { key, token, psub: m.psub, body, reply });
                }
                Some(_) => self.answer(seq, "Cluster unavailable", io.out),
                None => self.answer(seq, "Unknown key", io.out),
            },
            Claim::InvalidToken => self.answer(seq, "Invalid token", io.out),
            Claim::Sub(to) => self.send(to, None, seq, m.data, io, ctx),
            Claim::Member(to, pool) => self.send(to, Some(pool), seq, m.data, io, ctx),
        }
        Ok(())
    }

    fn send(
        &self,
        to: ConnId,
        pool: Option<PoolRef>,
        seq: u64,
        data: String,
        io: &Io,
        ctx: &mut Ctx,
    ) {
        let reply = Some(ReplyTo { conn: io.id, seq });
        let body = Arc::new(data.into_bytes());
        ctx.post(Msg::Deliver { to, reply, body, pool, attempts: 0, arrived: ctx.now, prep: true });
    }

    /// Records the answer for `seq` and sends (with confirmation) every answer that is now next
    /// in order; without confirmation the answers only free their slots.
    pub fn answer(&mut self, seq: u64, text: &'static str, out: &mut OutQueue) {
        let Some(slot) = seq.checked_sub(self.first).and_then(|i| self.answers.get_mut(i as usize))
        else {
            return;
        };
        *slot = Some(text);
        while let Some(Some(text)) = self.answers.front() {
            if self.confirm {
                out.with_bytes(|v| frame::text(v, text));
            }
            self.answers.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let m = parse(br#"{"key":"k","token":null,"psub":true,"data":"hi"}"#).ok().unwrap();
        assert_eq!((m.key.as_str(), m.token, m.psub, m.data.as_str()), ("k", None, true, "hi"));
        let m = parse(br#"{"key":"k","token":"","data":""}"#).ok().unwrap();
        assert_eq!((m.token, m.psub), (None, false));
        let m = parse(br#"{"key":"k","token":"t","data":"x","extra":1}"#).ok().unwrap();
        assert_eq!(m.token.as_deref(), Some("t"));
        for bad in [
            &br#"not json"#[..],
            br#"[1,2]"#,
            br#"{"token":"t","data":"x"}"#,
            br#"{"key":"","data":"x"}"#,
            br#"{"key":5,"data":"x"}"#,
            br#"{"key":"k","data":5}"#,
            br#"{"key":"k"}"#,
            br#"{"key":"k","token":1,"data":"x"}"#,
            br#"{"key":"k","psub":"yes","data":"x"}"#,
        ] {
            assert_eq!(
                parse(bad).err().map(WsError::code),
                Some(1007),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn without_confirmation_answers_free_their_slots_silently() {
        let mut p = Prep::new(false);
        let mut out = OutQueue::default();
        p.answers.extend([None, None]);
        p.answer(2, "ok", &mut out);
        assert_eq!(p.answers.len(), 2, "answer 1 is still pending: its slot stays");
        p.answer(1, "Unknown key", &mut out);
        assert!(p.answers.is_empty());
        assert!(out.is_empty(), "nothing is sent without confirmation");
        assert!(!p.is_full());
    }

    #[test]
    fn answers_go_out_in_order() {
        let mut p = Prep::new(true);
        let mut out = OutQueue::default();
        for _ in 0..3 {
            p.answers.push_back(None);
        }
        p.answer(2, "Unknown key", &mut out);
        p.answer(3, "ok", &mut out);
        assert!(out.is_empty(), "answer 1 is still pending");
        p.answer(1, "ok", &mut out);
        let mut w = Vec::new();
        while !out.is_empty() {
            out.write_to(&mut w);
        }
        let mut want = Vec::new();
        for t in ["ok", "Unknown key", "ok"] {
            frame::text(&mut want, t);
        }
        assert_eq!(w, want);
        assert!(p.answers.is_empty());
    }
}
