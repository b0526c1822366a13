//! Publishing on a connection (API-topics 4.1-4.4): single and batch pubs through the hub,
//! idempotent ids, the websocket pub's upgrade, and the answers.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::PoisonError;

use super::topic::{PubAnswer, TopicWait};
use super::topic_checks::{Fail, charge_appid_cost, msg_id_check, refuse, text_of};
use crate::conn::{Conn, State, Stream};
use crate::http::request::TopicHeaders;
use crate::http::response;
use crate::server::Ctx;
use crate::server::unix_ms;
use crate::topics::codec::{self, Limits};
use crate::topics::dedupe::Claim;
use crate::topics::route::Params;
use crate::ws::handshake;
use crate::ws::topic::TPub;
use crate::ws::{Role, Ws};

impl<S: Stream> Conn<S> {
    /// 4.1 and 4.2 after the head checks.
    pub(super) fn publish(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        params: &Params,
        h: &TopicHeaders,
        body: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let cfg = &hub.cfg;
        let batch = params.get("batch") == Some(b"1");
        let asynch = params.flag("async");
        let key = params.get("key").unwrap_or_default();
        let tag = h.tag.as_deref().unwrap_or_default();
        if !batch {
            if body.len() > cfg.pub_max_bytes {
                return Err(refuse(413, "too big message").into());
            }
            if body.is_empty() {
                return Err(refuse(400, "too small message").into());
            }
        }
        if key.len() > cfg.max_key_bytes {
            return Err(refuse(400, "too big key").into());
        }
        if tag.len() > cfg.max_tag_bytes {
            return Err(refuse(400, "too big tag").into());
        }
        msg_id_check(params, h)?;
        let batch_recs = if batch {
            if body.len() > cfg.max_body {
                return Err(refuse(413, "too big message").into());
            }
            let limits = Limits {
                max_payload: cfg.pub_max_bytes,
                max_key: cfg.max_key_bytes,
                max_tag: cfg.max_tag_bytes,
                max_records: cfg.pub_max_batch,
            };
            let recs = codec::decode_batch(body, &limits)
                .map_err(|e| Fail::Refused((e.status(), Cow::Borrowed(e.text()))))?;
            Some(
                recs.iter()
                    .map(|r| {
                        let key = if r.key.is_empty() { key } else { r.key };
                        let tag = if r.tag.is_empty() { tag } else { r.tag };
                        (key.to_vec(), tag.to_vec(), r.payload.to_vec())
                    })
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let topic = hub.get(raw).ok_or(Fail::Missing)?;
        if let Some(recs) = &batch_recs {
            // Here, once: a missing topic comes back through the dispatch after its creation.
            charge_appid_cost(hub, text_of(&h.appid), recs.len())?;
        }
        let id: Option<Box<[u8]>> = h.msg_id.as_deref().map(Into::into);
        if let Some(id) = &id {
            let now = unix_ms();
            let claim = hub.dedupe.lock().unwrap_or_else(PoisonError::into_inner).claim(
                &topic.name,
                id,
                now,
                (self.id, None),
            );
            match claim {
                Claim::First => {}
                Claim::Stored(p, o) => {
                    self.answer_pub(ctx, 201, PubAnswer::Single { partition: p, offset: o }, true);
                    return Ok(());
                }
                Claim::Waiting => {
                    self.state = State::Topic(TopicWait::Duplicate);
                    self.set_deadline(None, ctx);
                    return Ok(());
                }
            }
        }
        let reply = (!asynch).then_some((self.id, None));
        let (placed, left) = match batch_recs {
            Some(records) => hub.publish(&shared, &topic, records, reply, id, ctx.wall_ms),
            None => {
                // The body becomes the message's payload: moved, not copied.
                let one = (key.to_vec(), tag.to_vec(), std::mem::take(body));
                hub.publish(&shared, &topic, std::iter::once(one), reply, id, ctx.wall_ms)
            }
        };
        let answer = if batch {
            let mut json = String::from("{\"ok\":1,\"msgs\":[");
            for (i, (p, o)) in placed.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(json, "{sep}{{\"partition\":{p},\"offset\":{o}}}");
            }
            json.push_str("]}");
            PubAnswer::Batch { json }
        } else {
            PubAnswer::Single { partition: placed[0].0, offset: placed[0].1 }
        };
        if asynch {
            self.answer_pub(ctx, 202, answer, false);
        } else {
            self.state = State::Topic(TopicWait::Pub { left, fail: None, answer });
            self.set_deadline(None, ctx);
        }
        Ok(())
    }

    /// 4.3: the checks of 4.1 up to the topic, then the upgrade.
    pub(super) fn ws_publish(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        params: &Params,
        h: &TopicHeaders,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let key = params.get("key").unwrap_or_default();
        let tag = h.tag.as_deref().unwrap_or_default();
        if key.len() > hub.cfg.max_key_bytes {
            return Err(refuse(400, "too big key").into());
        }
        if tag.len() > hub.cfg.max_tag_bytes {
            return Err(refuse(400, "too big tag").into());
        }
        let topic = hub.get(raw).ok_or(Fail::Missing)?;
        let accept = self.check_upgrade(h)?;
        let appid = text_of(&h.appid).to_vec();
        let role = Role::TopicPub(TPub::new(
            topic,
            appid,
            key.to_vec(),
            tag.to_vec(),
            params.flag("async"),
        ));
        let ws = Ws::with_limit(role, hub.cfg.pub_max_bytes + 4096, ctx);
        self.upgrade(ws, &accept, ctx);
        Ok(())
    }

    /// The websocket handshake's headers; a bad upgrade is 400 naming the version we speak.
    pub(super) fn check_upgrade(&mut self, h: &TopicHeaders) -> Result<String, Fail> {
        handshake::check(&h.upgrade).map_err(|why| Fail::Refused((400, Cow::Borrowed(why))))
    }

    pub(super) fn answer_pub(
        &mut self,
        ctx: &mut Ctx,
        status: u16,
        answer: PubAnswer,
        duplicate: bool,
    ) {
        match answer {
            PubAnswer::Single { partition, offset } => {
                let dup: &[u8] = if duplicate { b"X-Duplicate: 1\r\n" } else { b"" };
                // On the stack: every pub's answer, no allocation for its two headers.
                let mut buf = [0u8; 96];
                let mut len = 0;
                for part in [
                    &b"X-Partition: "[..],
                    response::decimal(&mut [0; 20], u64::from(partition)),
                    b"\r\nX-Offset: ",
                    response::signed(&mut [0; 20], offset),
                    b"\r\n",
                    dup,
                ] {
                    buf[len..len + part.len()].copy_from_slice(part);
                    len += part.len();
                }
                let extra = std::str::from_utf8(&buf[..len]).expect("written from str");
                self.topic_ok(ctx, status, extra);
            }
            PubAnswer::Batch { json } => {
                self.respond(ctx, status, response::JSON, json.as_bytes(), "");
            }
        }
    }
}
