//! The consuming side of the topics half on a connection: joining an instance, fetching from
//! the tail or the disk, parking until a partition gets a message, single and streamed batch
//! responses, auto-commit once written, piggy-back acks, `PUT` offsets and seek; and topic
//! management (create, partitions).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::topic::{
    Binding, Fail, Fetch, Refuse, TopicWait, group_name, refuse, reset_of, sub_batch,
};
use super::topic_shadow::shadow_queue;
use crate::conn::{Conn, State, Stream};
use crate::http::request::TopicHeaders;
use crate::http::response::{self, Persist};
use crate::server::Ctx;
use crate::server::mailbox::{Msg, TopicEv};
use crate::topics::codec;
use crate::topics::engine::TopicSpec;
use crate::topics::route::Params;
use crate::topics::state::GroupId;
use crate::ws::topic::TSub;
use crate::ws::{Role, Ws};

/// Header-safe: bytes a header value cannot carry become `%XX` (tags from batch records may
/// hold anything).
fn header_safe(v: &[u8], out: &mut String) {
    for &b in v {
        if b == b'\t' || (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl<S: Stream> Conn<S> {
    /// 5.2 after the head checks.
    pub(super) fn subscribe(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        params: &Params,
        h: &TopicHeaders,
        ws: bool,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let group = group_name(params, h)?.to_string();
        let want = sub_batch(params)?.min(hub.cfg.sub_max_batch);
        let reset = reset_of(params)?;
        let ack = params.flag("ack");
        let pairs = if ack {
            let ps: Vec<&[u8]> = h.partitions.iter().map(Vec::as_slice).collect();
            let os: Vec<&[u8]> = h.offsets.iter().map(Vec::as_slice).collect();
            codec::parse_ack_lists(&ps, &os)
                .map_err(|e| Fail::Refused((400, Cow::Borrowed(e.text()))))?
        } else {
            Vec::new()
        };
        let app = String::from_utf8_lossy(h.appid.as_deref().unwrap_or_default()).into_owned();
        let (topic, queue) = match shadow_queue(hub, raw, &app, &group, params.get("q"))? {
            Some(shadow) => shadow,
            None => (hub.get(raw).ok_or(Fail::Missing)?, String::new()),
        };
        let gid = GroupId { app, group, queue };
        topic.lock().check_ack(&pairs).map_err(|t| refuse(400, t))?;
        let accept = if ws { Some(self.check_upgrade(h)?) } else { None };
        // The instance: this connection's, or a new one (ending the old first).
        let same =
            self.topic.as_ref().is_some_and(|b| Arc::ptr_eq(&b.topic, &topic) && b.gid == gid);
        if !same {
            self.topic_unbind(ctx);
            let id = hub.instance_id();
            let mux = params.flag("mux");
            let ip = self.client_ip(h, hub.cfg.trust_xff);
            let joined = {
                let mut st = topic.lock();
                if st.new_group_refused(&gid, hub.cfg.max_groups) {
                    return Err(refuse(507, "too many groups").into());
                }
                st.join(&gid, self.id, mux, reset, ip, id)
            };
            match joined {
                Err(_) => {
                    return Err(refuse(400, "consumers more than available partitions").into());
                }
                Ok((inst, recs, wake)) => {
                    hub.commit(recs);
                    self.wake_all(ctx, wake);
                    self.topic =
                        Some(Box::new(Binding { topic: topic.clone(), gid: gid.clone(), inst }));
                }
            }
        }
        let inst = self.topic.as_ref().map_or(0, |b| b.inst);
        if !pairs.is_empty() {
            let recs = topic.lock().ack(&gid, &pairs).map_err(|t| refuse(400, t))?;
            hub.commit(recs);
        }
        if let (true, Some(timeout)) = (ack, hub.cfg.ack_timeout) {
            // Checked when a fetch starts, after its piggy-back ack (5.3).
            topic.lock().expire(&gid, inst, ctx.now, timeout);
        }
        let filter = codec::tag_tokens(h.tag.as_deref().unwrap_or_default())
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        if let Some(accept) = accept {
            let sub = TSub::new(topic, gid, inst, ack, params.flag("meta"), filter);
            let ws = Ws::with_limit(Role::TopicSub(sub), hub.cfg.max_body, ctx);
            self.upgrade(ws, &accept, ctx);
            if let State::Ws(ws) = &mut self.state
                && let Role::TopicSub(t) = &mut ws.role
            {
                t.fetch(&mut self.out, self.id, ctx);
            }
            return Ok(());
        }
        let until = ctx.now + hub.cfg.sub_timeout;
        let fetch = Fetch {
            topic,
            gid,
            inst,
            want,
            sent: 0,
            batch: params.get("batch").is_some_and(|b| b != b"1"),
            head_sent: false,
            chunked: false,
            until,
            filter,
            ack,
            written: Vec::new(),
            finished: false,
            parked: false,
        };
        self.state = State::Topic(TopicWait::Fetch(Box::new(fetch)));
        self.fetch_more(ctx);
        Ok(())
    }

    fn wake_all(&mut self, ctx: &mut Ctx, wake: Vec<crate::server::mailbox::ConnId>) {
        for w in wake {
            if w != self.id {
                ctx.post(Msg::Topic { to: w, ev: TopicEv::Wake });
            }
        }
    }

    /// Ends this connection's instance (it closed, or asked for another).
    pub fn topic_unbind(&mut self, ctx: &mut Ctx) {
        let Some(b) = self.topic.take() else { return };
        let (recs, wake) = b.topic.lock().leave(&b.gid, b.inst, self.id);
        if let Some(hub) = &ctx.shared.hub {
            hub.commit(recs);
        }
        self.wake_all(ctx, wake);
    }

    /// Hands out what the instance's partitions hold, up to the request's count; parks when
    /// there is nothing (or more may come for a batch).
    pub(super) fn fetch_more(&mut self, ctx: &mut Ctx) {
        let shared = ctx.shared.clone();
        let Some(hub) = shared.hub.as_ref() else { return };
        let persist = self.persist;
        let id = self.id;
        let State::Topic(w) = &mut self.state else { return };
        let TopicWait::Fetch(f) = w else { return };
        let mut progressed = false;
        for _ in 0..64 {
            if f.finished || f.sent >= f.want {
                break;
            }
            let left = f.want - f.sent;
            let (msgs, recs) = f.topic.take(&f.gid, f.inst, left);
            hub.commit(recs);
            if msgs.is_empty() {
                // Nothing now: wait, unless a message slipped in since the fetch.
                if f.topic.lock().wait(&f.gid, f.inst, id) {
                    f.parked = true;
                    break;
                }
                continue;
            }
            progressed = true;
            let filter: Vec<&[u8]> = f.filter.iter().map(Vec::as_slice).collect();
            let mut chosen = Vec::with_capacity(msgs.len());
            for (p, m) in msgs {
                if filter.is_empty() || codec::tag_matches(&filter, &m.tag) {
                    chosen.push((p, m));
                } else if !f.ack {
                    // Skipped messages are committed like delivered ones.
                    f.written.push((p, m.offset));
                }
            }
            if chosen.is_empty() {
                continue;
            }
            if f.ack {
                let mut st = f.topic.lock();
                for (p, _) in &chosen {
                    st.mark_sent(&f.gid, f.inst, *p, ctx.now);
                }
            }
            hub.msgs_out.fetch_add(chosen.len() as u64, Ordering::Relaxed);
            if !f.batch {
                let (p, m) = &chosen[0];
                let mut extra = format!("X-Partition: {p}\r\nX-Offset: {}\r\n", m.offset);
                if !m.key.is_empty() {
                    extra.push_str("X-Key: ");
                    codec::escape_key(&m.key, &mut extra);
                    extra.push_str("\r\n");
                }
                if !m.tag.is_empty() {
                    extra.push_str("X-Tag: ");
                    header_safe(&m.tag, &mut extra);
                    extra.push_str("\r\n");
                }
                let len = m.payload.len();
                self.out
                    .with_bytes(|v| response::head(v, 200, response::OCTETS, len, persist, &extra));
                self.out.push_message(m);
                if !f.ack {
                    f.written.push((*p, m.offset));
                }
                f.sent = 1;
                f.finished = true;
                break;
            }
            let http10 = persist != Persist::KeepAlive;
            if !f.head_sent {
                f.head_sent = true;
                f.chunked = !http10;
                self.out.with_bytes(|v| {
                    v.extend_from_slice(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n",
                    );
                    if http10 {
                        v.extend_from_slice(b"Connection: close\r\n\r\n");
                    } else {
                        v.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    }
                });
            }
            let total: usize = chosen.iter().map(|(_, m)| 16 + m.payload.len()).sum();
            if !http10 {
                self.out.with_bytes(|v| {
                    let _ = write!(v, "{total:x}\r\n");
                });
            }
            for (p, m) in &chosen {
                let head = codec::sub_record_head(*p as i32, m.offset, m.payload.len() as i32);
                self.out.with_bytes(|v| v.extend_from_slice(&head));
                self.out.push_message(m);
                if !f.ack {
                    f.written.push((*p, m.offset));
                }
            }
            if !http10 {
                self.out.with_bytes(|v| v.extend_from_slice(b"\r\n"));
            }
            f.sent += chosen.len();
        }
        let done = f.finished || f.sent >= f.want;
        if !done && !f.parked {
            // The step budget ran out (messages the tag filter skipped), or a disk read failed:
            // yield to the loop; with progress, come back at once, else at the deadline.
            f.parked = true;
            if progressed {
                ctx.post(Msg::Topic { to: id, ev: TopicEv::Wake });
            }
        }
        let (finished, head_sent, parked, until) = (f.finished, f.head_sent, f.parked, f.until);
        let done = finished || f.sent >= f.want;
        if done && f.batch {
            self.end_batch();
            return;
        }
        if done {
            return;
        }
        if parked {
            let at = if head_sent {
                let idle = ctx.shared.hub.as_ref().map_or(until, |h| ctx.now + h.cfg.batch_idle);
                idle.min(until)
            } else {
                until
            };
            self.set_deadline(Some(at), ctx);
            if let Some(storage) = self.rx.release() {
                ctx.give_buffer(storage);
            }
        }
    }

    /// Ends a streamed batch body; the response completes once the queue drains.
    fn end_batch(&mut self) {
        let State::Topic(w) = &mut self.state else { return };
        let TopicWait::Fetch(f) = w else { return };
        if f.finished {
            return;
        }
        f.finished = true;
        if f.chunked {
            self.out.with_bytes(|v| v.extend_from_slice(b"0\r\n\r\n"));
        }
    }

    /// The fetch's deadline passed (long poll or batch idle), or the server drains; or a
    /// punished error's delay is over.
    pub fn topic_deadline(&mut self, ctx: &mut Ctx) {
        let id = self.id;
        let State::Topic(w) = &mut self.state else { return };
        if let TopicWait::Punished { .. } = w {
            return self.punish_over(ctx);
        }
        let TopicWait::Fetch(f) = w else { return };
        f.topic.lock().unwait(&f.gid, f.inst, id);
        f.parked = false;
        if f.head_sent {
            if !f.chunked {
                // HTTP/1.0: the body ends at the close.
                self.persist = Persist::Close;
            }
            self.end_batch();
            self.topic_written(ctx);
        } else {
            self.state = State::Head;
            self.respond(ctx, 204, response::JSON, b"", "");
        }
    }

    /// The response queue drained: auto mode commits what was written; a complete response
    /// moves on to the next request.
    pub fn topic_written(&mut self, ctx: &mut Ctx) {
        let State::Topic(w) = &mut self.state else { return };
        let TopicWait::Fetch(f) = w else { return };
        if !f.written.is_empty() {
            let mut st = f.topic.lock();
            let recs: Vec<_> =
                f.written.drain(..).filter_map(|(p, o)| st.delivered(&f.gid, p, o)).collect();
            drop(st);
            if let Some(hub) = &ctx.shared.hub {
                hub.commit(recs);
            }
        }
        if f.finished {
            let http10_batch = f.batch && f.head_sent && !f.chunked;
            if http10_batch {
                self.persist = Persist::Close;
            }
            self.state = State::Head;
            self.record(ctx, true);
            self.after_response(ctx);
        }
    }

    /// SIGTERM: a parked GET answers 204 and closes; a streaming batch ends its body.
    pub fn topic_drain(&mut self, ctx: &mut Ctx) {
        if let State::Topic(w) = &self.state
            && let TopicWait::Fetch(_) | TopicWait::Punished { .. } = w
        {
            // A punished error goes now: the drain does not wait out a punishment.
            self.persist = Persist::Close;
            self.topic_deadline(ctx);
        }
    }

    /// `PUT /v1/offsets/...` (5.3).
    pub(super) fn put_offsets(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        group: &str,
        params: &Params,
        h: &TopicHeaders,
        body: &[u8],
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        if body.is_empty() {
            return Err(refuse(400, "too small message").into());
        }
        if body.len() > hub.cfg.max_body {
            return Err(refuse(413, "too big message").into());
        }
        let pairs = codec::parse_ack_json(body).ok_or(refuse(400, "invalid ack json body"))?;
        let app = String::from_utf8_lossy(h.appid.as_deref().unwrap_or_default()).into_owned();
        let (topic, queue) = queue_of(hub, raw, &app, group, params)?;
        let gid = GroupId { app, group: group.to_string(), queue };
        let recs = {
            let mut st = topic.lock();
            if st.new_group_refused(&gid, hub.cfg.max_groups) {
                return Err(refuse(507, "too many groups").into());
            }
            st.ack(&gid, &pairs).map_err(|t| refuse(400, t))?
        };
        self.store_then_ok(ctx, recs, 200);
        Ok(())
    }

    /// `PUT /v1/offset/...` (5.3 seek).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seek(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        group: &str,
        partition: &str,
        params: &Params,
        h: &TopicHeaders,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let offset: i64 = params
            .text("offset")
            .and_then(|t| t.parse().ok())
            .ok_or(refuse(400, "invalid offset"))?;
        let app = String::from_utf8_lossy(h.appid.as_deref().unwrap_or_default()).into_owned();
        let (topic, queue) = queue_of(hub, raw, &app, group, params)?;
        let p = partition
            .parse::<u32>()
            .ok()
            .filter(|&p| p < topic.partitions())
            .ok_or(refuse(400, "partition out of range"))?;
        let gid = GroupId { app, group: group.to_string(), queue };
        let mut st = topic.lock();
        if offset < -1 || offset >= st.parts[p as usize].stored {
            return Err(refuse(400, "offset out of range").into());
        }
        if st.online(&gid.app, &gid.group) {
            return Err(refuse(400, "reset a online group not allowed").into());
        }
        if st.new_group_refused(&gid, hub.cfg.max_groups) {
            return Err(refuse(507, "too many groups").into());
        }
        let rec = st.seek(&gid, p, offset);
        drop(st);
        self.store_then_ok(ctx, vec![rec], 200);
        Ok(())
    }

    pub(super) fn store_then_ok(
        &mut self,
        ctx: &mut Ctx,
        recs: Vec<crate::topics::meta::MetaRec>,
        status: u16,
    ) {
        if recs.is_empty() {
            self.respond(ctx, status, response::JSON, b"{\"ok\":1}", "");
            return;
        }
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        hub.commit_then(&ctx.shared, recs, self.id);
        self.state = State::Topic(TopicWait::Done { status, left: 1, fail: None });
        self.set_deadline(None, ctx);
    }

    /// `POST /v1/topics/...` (8).
    pub(super) fn create_topic(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        params: &Params,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let n = params
            .text("partitions")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|&n| n >= 1)
            .ok_or(refuse(400, "invalid partitions"))?;
        if n > u64::from(hub.cfg.max_partitions) {
            return Err(refuse(400, "too big partitions").into());
        }
        let hours = match params.text("retention.hours") {
            None => None,
            Some(t) => Some(
                t.parse::<f64>()
                    .ok()
                    .filter(|h| *h > 0.0 && h.is_finite())
                    .ok_or(refuse(400, "invalid retention.hours"))?,
            ),
        };
        let bytes = match params.text("retention.bytes") {
            None => None,
            Some(t) => Some(
                t.parse::<i64>()
                    .ok()
                    .filter(|b| *b >= -1)
                    .ok_or(refuse(400, "invalid retention.bytes"))?,
            ),
        };
        let (status, spec) = match hub.get(raw) {
            Some(t) if u64::from(t.partitions()) != n => {
                return Err(refuse(409, "partitions cannot change").into());
            }
            Some(t) => {
                let st = t.lock();
                let spec = TopicSpec {
                    name: raw.to_string(),
                    partitions: n as u32,
                    retention_hours: hours.unwrap_or(st.retention_hours),
                    retention_bytes: bytes.unwrap_or(st.retention_bytes),
                };
                (200, spec)
            }
            None => (
                201,
                TopicSpec {
                    name: raw.to_string(),
                    partitions: n as u32,
                    retention_hours: hours.unwrap_or(hub.cfg.retention_hours),
                    retention_bytes: bytes.unwrap_or(-1),
                },
            ),
        };
        if status == 201 && !hub.room_for(1) {
            return Err(refuse(507, "too many topics").into());
        }
        hub.create(&ctx.shared, spec, self.id, true);
        self.state = State::Topic(TopicWait::Done { status, left: 1, fail: None });
        self.set_deadline(None, ctx);
        Ok(())
    }

    /// `GET /v1/partitions/...` (8).
    pub(super) fn partitions(&mut self, ctx: &mut Ctx, raw: &str) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let topic = hub.get(raw).ok_or(refuse(400, "invalid topic"))?;
        let st = topic.lock();
        let mut json = format!("{{\"num\":{},\"offsets\":{{", st.partitions());
        for (i, p) in st.parts.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ =
                write!(json, "{sep}\"{i}\":{{\"oldest\":{},\"latest\":{}}}", p.oldest, p.stored);
        }
        json.push_str("}}");
        drop(st);
        self.respond(ctx, 200, response::JSON, json.as_bytes(), "");
        Ok(())
    }
}

/// The queue of offsets and seek: the topic, or with `q` the group's shadow.
fn queue_of(
    hub: &crate::topics::hub::Hub,
    raw: &str,
    app: &str,
    group: &str,
    params: &Params,
) -> Result<(Arc<crate::topics::hub::Topic>, String), Refuse> {
    match shadow_queue(hub, raw, app, group, params.get("q"))? {
        Some(shadow) => Ok(shadow),
        None => Ok((hub.get(raw).ok_or(refuse(400, "invalid topic"))?, String::new())),
    }
}
