//! The topics half on a connection (API-topics.md): checks in the contract's order, pubs that
//! wait for the store, fetches that park until their partitions get a message and stream
//! batches, acks and commits. Topic bookkeeping lives in `topics::state`; this is the HTTP side.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

pub(super) use super::topic_checks::*;
use crate::conn::{Conn, ReqMetric, State, Stream};
use crate::http::request::TopicHeaders;
use crate::http::response::{self, Persist};
use crate::metrics::RouteTag;
use crate::server::Ctx;
use crate::server::mailbox::TopicEv;
use crate::store::StoreFail;
use crate::topics::hub::{Hub, Topic};
use crate::topics::route::{TRoute, TRouteError, route};
use crate::topics::state::GroupId;
use crate::ws::Role;

/// What a topics request waits for.
pub enum TopicWait {
    /// A pub's appends: `left` outstanding; then 201 (or the first failure's status).
    Pub { left: usize, fail: Option<StoreFail>, answer: PubAnswer },
    /// Its topic is being created; the request runs again once it exists.
    Create { method: Cow<'static, str>, target: Vec<u8>, headers: Box<TopicHeaders>, body: Vec<u8> },
    /// A pub whose `X-Msg-Id` is in flight on another pub: answered with that one's outcome.
    Duplicate,
    /// Metadata being stored (`left` answers to come); then `status` with `{"ok":1}`, or the
    /// first failure's status.
    Done { status: u16, left: usize, fail: Option<StoreFail> },
    /// A bury's copy is being stored; then `offset` of `partition` is committed for the group
    /// on the source, and the bury answers once that is stored.
    Bury { source: Arc<Topic>, gid: GroupId, partition: u32, offset: i64 },
    /// An error held back by `ESUB_PUNISH_MS`: the whole response (it closes the connection),
    /// queued when the deadline fires.
    Punished { response: Vec<u8> },
    /// A consumer's GET, parked or streaming a batch.
    Fetch(Box<Fetch>),
    /// A job add or cancel being stored (7).
    Job,
}

impl TopicWait {
    pub fn is_fetch(&self) -> bool {
        matches!(self, TopicWait::Fetch(_))
    }
}

pub enum PubAnswer {
    Single { partition: u32, offset: i64 },
    Batch { json: String },
}

/// A consumer's instance, bound to this connection until it closes or asks for another.
pub struct Binding {
    pub topic: Arc<Topic>,
    pub gid: GroupId,
    pub inst: u64,
}

pub struct Fetch {
    pub(super) topic: Arc<Topic>,
    pub(super) gid: GroupId,
    pub(super) inst: u64,
    pub(super) want: usize,
    pub(super) sent: usize,
    pub(super) batch: bool,
    pub(super) head_sent: bool,
    /// The streamed body is chunked (HTTP/1.1); else it ends at the close (HTTP/1.0).
    pub(super) chunked: bool,
    /// The request's long-poll limit.
    pub(super) until: Instant,
    pub(super) filter: Vec<Vec<u8>>,
    pub(super) ack: bool,
    /// Auto mode: handed out, committed once the bytes are written.
    pub(super) written: Vec<(u32, i64)>,
    /// The response is complete once the queue drains.
    pub(super) finished: bool,
    pub(super) parked: bool,
}

fn json_err(text: &str) -> String {
    format!("{{\"errmsg\":{}}}", serde_json::Value::from(text))
}

fn text_of(v: &Option<Vec<u8>>) -> &[u8] {
    v.as_deref().unwrap_or_default()
}

impl<S: Stream> Conn<S> {
    /// The client's IP (1): the socket peer, or the first `X-Forwarded-For` entry with
    /// `ESUB_TRUST_XFF`.
    pub(super) fn client_ip(&self, h: &TopicHeaders, trust_xff: bool) -> String {
        if trust_xff
            && let Some(first) = h
                .forwarded_for
                .as_deref()
                .and_then(|v| v.split(|&b| b == b',').next())
                .map(<[u8]>::trim_ascii)
                .filter(|v| !v.is_empty())
        {
            return String::from_utf8_lossy(first).into_owned();
        }
        self.peer.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// A `/v1/` error: JSON `errmsg`, the connection kept unless the response already says
    /// otherwise.
    pub fn topic_error(&mut self, ctx: &mut Ctx, status: u16, text: &str) {
        let extra = if status == 405 { "Allow: GET\r\n" } else { "" };
        self.error_out(ctx, status, text, extra);
    }

    /// Sends a `/v1/` error, or with `ESUB_PUNISH_MS` holds back a 400, 401, 404 or 405 that
    /// long (a 429 twice that) on the worker's timer, then sends it and closes (1).
    fn error_out(&mut self, ctx: &mut Ctx, status: u16, text: &str, extra: &str) {
        let body = json_err(text);
        let punish = ctx.shared.hub.as_ref().and_then(|h| h.cfg.punish);
        let delay = match (punish, status) {
            (Some(d), 400 | 401 | 404 | 405) => d,
            (Some(d), 429) => d * 2,
            _ => return self.respond(ctx, status, response::JSON, body.as_bytes(), extra),
        };
        self.persist = Persist::Close;
        let mut bytes = Vec::new();
        response::full(&mut bytes, status, response::JSON, body.as_bytes(), Persist::Close, extra);
        self.state = State::Topic(TopicWait::Punished { response: bytes });
        self.set_deadline(Some(ctx.now + delay), ctx);
    }

    /// A punished error's time is up (or the server drains): send it; the connection closes.
    pub(super) fn punish_over(&mut self, ctx: &mut Ctx) {
        let State::Topic(w) = &mut self.state else { return };
        let TopicWait::Punished { response } = w else { return };
        let bytes = std::mem::take(response);
        self.state = State::Head;
        self.record(ctx, false);
        self.out.with_bytes(|v| v.extend_from_slice(&bytes));
        self.after_response(ctx);
    }

    /// Charges the client IP's bucket (1.3): every `/v1/` request, first; `/alive` never.
    fn charge_ip(&self, hub: &Hub, target: &[u8], h: &TopicHeaders) -> Result<(), Refuse> {
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        if hub.rates.ip.is_none() || path == b"/alive" {
            return Ok(());
        }
        let ip = self.client_ip(h, hub.cfg.trust_xff);
        hub.rates.charge_ip(&ip, Instant::now()).map_err(quota)
    }

    pub(super) fn topic_ok(&mut self, ctx: &mut Ctx, status: u16, extra: &str) {
        self.respond(ctx, status, response::JSON, b"{\"ok\":1}", extra);
    }

    /// Before the body is read: refuses what the head alone rules out (no `100 Continue`, and
    /// `Connection: close`, since the body stays unread). `true` when refused.
    pub fn topic_precheck(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        target: &[u8],
        headers: &TopicHeaders,
    ) -> bool {
        let Some(hub) = &ctx.shared.hub else { return false };
        let result =
            self.charge_ip(hub, target, headers).and_then(|()| match route(method, target) {
                Err(e) => {
                    if let TRouteError::MethodNotAllowed(allow) = e {
                        self.topic_allow = Some(allow);
                    }
                    Err(route_refusal(e))
                }
                Ok((r, params)) => head_checks(hub, &r, &params, headers, ctx.draining),
            });
        match result {
            Ok(()) => {
                // Checked and charged: the dispatch after the body does not do either again.
                self.topic_checked = true;
                false
            }
            Err((status, text)) => {
                self.persist = Persist::Close;
                self.topic_refuse(ctx, status, &text);
                true
            }
        }
    }

    fn topic_refuse(&mut self, ctx: &mut Ctx, status: u16, text: &str) {
        match status {
            405 => {
                let allow = self.topic_allow.take().unwrap_or("GET");
                self.error_out(ctx, 405, text, &format!("Allow: {allow}\r\n"));
            }
            429 => self.error_out(ctx, 429, "quota exceeded", &format!("Retry-After: {text}\r\n")),
            _ => {
                if status == 503 {
                    self.persist = Persist::Close;
                }
                self.topic_error(ctx, status, text);
            }
        }
    }

    /// Runs one complete `/v1/` request.
    pub fn topic_dispatch(
        &mut self,
        ctx: &mut Ctx,
        method: Cow<'static, str>,
        target: Vec<u8>,
        mut headers: Box<TopicHeaders>,
        mut body: Vec<u8>,
    ) {
        let shared = ctx.shared.clone();
        let Some(hub) = shared.hub.as_ref() else {
            return self.respond_text(ctx, 404, "Not Found");
        };
        if !self.topic_checked
            && let Err((status, text)) = self.charge_ip(hub, &target, &headers)
        {
            return self.topic_refuse(ctx, status, &text);
        }
        let (r, params) = match route(&method, &target) {
            Ok(x) => x,
            Err(e) => {
                if let TRouteError::MethodNotAllowed(allow) = e {
                    self.topic_allow = Some(allow);
                }
                let (status, text) = route_refusal(e);
                return self.topic_refuse(ctx, status, &text);
            }
        };
        let tag = match &r {
            TRoute::Alive => None,
            TRoute::Pub { .. } if params.get("batch") == Some(b"1") => Some(RouteTag::PubBatch),
            TRoute::Pub { .. } => Some(RouteTag::Pub),
            TRoute::WsPub { .. } => Some(RouteTag::WsPub),
            TRoute::Sub { .. } => Some(RouteTag::Sub),
            TRoute::Bury { .. } => Some(RouteTag::Bury),
            TRoute::WsSub { .. } => Some(RouteTag::WsSub),
            TRoute::Offsets { .. } | TRoute::Seek { .. } => Some(RouteTag::Ack),
            TRoute::CreateTopic { .. } | TRoute::Partitions { .. } => Some(RouteTag::Man),
            TRoute::Shadow { .. } | TRoute::JobQueue { .. } => Some(RouteTag::Man),
            TRoute::JobAdd { .. } | TRoute::JobCancel { .. } => Some(RouteTag::Job),
            TRoute::Status
            | TRoute::TopicStatus { .. }
            | TRoute::SubStatus
            | TRoute::Subd { .. }
            | TRoute::GroupDelete { .. }
            | TRoute::Peek { .. } => Some(RouteTag::Man),
        };
        if self.req.is_none() {
            let auth = headers.appid.is_some();
            // `topic:` and `group:` tags only with ESUB_TAG_KEYS (API-topics 9).
            let topic = ctx.metrics.tag_keys.then(|| metric_topic(&r, &params, &headers)).flatten();
            self.req =
                tag.map(|route| ReqMetric { route, key: None, topic, auth, confirmed: false });
        }
        if matches!(r, TRoute::WsPub { .. } | TRoute::WsSub { .. }) {
            // Browsers cannot set websocket headers: the query may carry the identity.
            for (slot, name) in [
                (&mut headers.appid, "appid"),
                (&mut headers.pubkey, "pubkey"),
                (&mut headers.subkey, "subkey"),
            ] {
                if slot.is_none() {
                    *slot = params.get(name).map(<[u8]>::to_vec);
                }
            }
        }
        // Head-checked (and charged) before the body, or on a first run before a topic's
        // creation: only the drain may have changed since.
        let checked = if self.topic_checked {
            draining_check(&r, ctx.draining)
        } else {
            head_checks(hub, &r, &params, &headers, ctx.draining)
        };
        if let Err((status, text)) = checked {
            return self.topic_refuse(ctx, status, &text);
        }
        self.topic_checked = true;
        let result = match &r {
            TRoute::Alive => {
                self.respond(ctx, 200, response::JSON, b"{\"ok\":1}", "");
                Ok(())
            }
            TRoute::Pub { topic, ver } => {
                let owner = String::from_utf8_lossy(text_of(&headers.appid));
                let mut buf = NameBuf::default();
                let raw = buf.join(&owner, topic, ver);
                self.publish(ctx, &raw, &params, &headers, &mut body)
            }
            TRoute::Sub { appid, topic, ver } => {
                let mut buf = NameBuf::default();
                let raw = buf.join(appid, topic, ver);
                self.subscribe(ctx, &raw, &params, &headers, false)
            }
            TRoute::Offsets { appid, topic, ver, group } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.put_offsets(ctx, &raw, group, &params, &headers, &body)
            }
            TRoute::Seek { appid, topic, ver, group, partition } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.seek(ctx, &raw, group, partition, &params, &headers)
            }
            TRoute::CreateTopic { appid, topic, ver } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.create_topic(ctx, &raw, &params)
            }
            TRoute::Partitions { appid, topic, ver } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.partitions(ctx, &raw)
            }
            TRoute::WsPub { topic, ver } => {
                let owner = String::from_utf8_lossy(text_of(&headers.appid)).into_owned();
                let raw = format!("{owner}.{topic}.{ver}");
                self.ws_publish(ctx, &raw, &params, &headers)
            }
            TRoute::WsSub { appid, topic, ver } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.subscribe(ctx, &raw, &params, &headers, true)
            }
            // Part 2: shadows and bury.
            TRoute::Bury { appid, topic, ver } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.bury(ctx, &raw, &params, &headers, &mut body)
            }
            TRoute::Shadow { appid, topic, ver, group } => {
                let raw = format!("{appid}.{topic}.{ver}");
                self.create_shadow(ctx, &raw, group, &params, &headers)
            }
            TRoute::JobAdd { .. } | TRoute::JobCancel { .. } | TRoute::JobQueue { .. } => {
                self.jobs(ctx, &r, &params, &headers, &mut body)
            }
            TRoute::Status
            | TRoute::TopicStatus { .. }
            | TRoute::SubStatus
            | TRoute::Subd { .. }
            | TRoute::GroupDelete { .. }
            | TRoute::Peek { .. } => self.status(ctx, &r, &params, &headers),
        };
        match result {
            Ok(()) => {}
            Err(Fail::Missing) if matches!(self.state, State::Head) && !hub.auth_file => {
                if !hub.room_for(1) {
                    return self.topic_refuse(ctx, 507, "too many topics");
                }
                // Open mode creates the topic, then the request runs again.
                let spec = default_spec(hub, &r, &headers);
                hub.create(&ctx.shared, spec, self.id, false);
                self.state = State::Topic(TopicWait::Create { method, target, headers, body });
                self.set_deadline(None, ctx);
            }
            Err(e) => {
                let (status, text) = e.refusal();
                self.topic_refuse(ctx, status, &text);
            }
        }
    }
}

impl<S: Stream> Conn<S> {
    /// A store answer or a wake-up.
    pub fn topic_event(&mut self, ctx: &mut Ctx, ev: TopicEv) {
        if let State::Ws(ws) = &mut self.state {
            let closing = ws.closing;
            match (&mut ws.role, ev) {
                (Role::TopicPub(p), TopicEv::Stored { seq: Some(seq), result }) => {
                    if !closing {
                        p.on_stored(seq, result, &mut self.out);
                    }
                    let mut io =
                        crate::ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                    ws.close_if_answered(&mut io, ctx);
                }
                (Role::TopicPub(p), TopicEv::Duplicate { seq: Some(seq), result }) => {
                    if !closing {
                        p.on_duplicate(seq, result, &mut self.out);
                    }
                    let mut io =
                        crate::ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                    ws.close_if_answered(&mut io, ctx);
                }
                (Role::TopicSub(t), TopicEv::Wake) if !closing => {
                    t.parked = false;
                    t.fetch(&mut self.out, self.id, ctx);
                }
                _ => {}
            }
            return;
        }
        let State::Topic(wait) = &mut self.state else { return };
        match (wait, ev) {
            (TopicWait::Pub { left, fail, .. }, TopicEv::Stored { result, .. }) => {
                *left -= 1;
                if let Err(f) = result {
                    fail.get_or_insert(f);
                }
                if *left > 0 {
                    return;
                }
                let State::Topic(wait) = std::mem::replace(&mut self.state, State::Head) else {
                    return;
                };
                let TopicWait::Pub { fail, answer, .. } = wait else { return };
                match fail {
                    None => self.answer_pub(ctx, 201, answer, false),
                    Some(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Create { .. }, TopicEv::Created(result)) => {
                let State::Topic(wait) = std::mem::replace(&mut self.state, State::Head) else {
                    return;
                };
                let TopicWait::Create { method, target, headers, body } = wait else { return };
                match result {
                    Ok(()) => self.topic_dispatch(ctx, method, target, headers, body),
                    Err(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Duplicate, TopicEv::Duplicate { result, .. }) => {
                self.state = State::Head;
                match result {
                    Ok((partition, offset)) => {
                        let answer = PubAnswer::Single { partition, offset };
                        self.answer_pub(ctx, 201, answer, true);
                    }
                    Err(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Done { status, left, fail }, TopicEv::Done(result)) => {
                if let Err(f) = result {
                    fail.get_or_insert(f);
                }
                *left -= 1;
                if *left > 0 {
                    return;
                }
                let (status, fail) = (*status, *fail);
                self.state = State::Head;
                match fail {
                    None => self.topic_ok(ctx, status, ""),
                    Some(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Bury { .. }, TopicEv::Stored { result, .. }) => {
                let State::Topic(wait) = std::mem::replace(&mut self.state, State::Head) else {
                    return;
                };
                let TopicWait::Bury { source, gid, partition, offset } = wait else { return };
                match result {
                    // Forward only, as every commit (5.3).
                    Ok(()) => match source.lock().ack(&gid, &[(i64::from(partition), offset)]) {
                        Ok(recs) => self.store_then_ok(ctx, recs, 200),
                        Err(t) => self.topic_error(ctx, 400, t),
                    },
                    Err(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Job, TopicEv::Job(result)) => {
                self.state = State::Head;
                self.job_answer(ctx, result);
            }
            (TopicWait::Fetch(f), TopicEv::Wake) if f.parked => {
                f.parked = false;
                self.fetch_more(ctx);
            }
            _ => {}
        }
    }

    pub(super) fn store_failed(&mut self, ctx: &mut Ctx, f: StoreFail) {
        match f {
            StoreFail::Full => self.topic_error(ctx, 507, "Insufficient Storage"),
            StoreFail::Io => self.topic_error(ctx, 500, "store error"),
        }
    }

    /// SIGTERM on a topics websocket: frames already received are answered, then 1001.
    pub fn topic_ws_drain(&mut self, ctx: &mut Ctx) -> bool {
        let State::Ws(ws) = &mut self.state else { return false };
        if !matches!(ws.role, Role::TopicPub(_) | Role::TopicSub(_)) {
            return false;
        }
        // A pub with frames unanswered closes once they are (`Ws::close` waits for them).
        let mut io = crate::ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
        ws.close(1001, "going away", &mut io, ctx);
        true
    }
}

/// The raw topic name and group a request's metrics are tagged with.
fn metric_topic(
    r: &TRoute,
    params: &crate::topics::route::Params,
    h: &TopicHeaders,
) -> Option<(Arc<str>, Option<Arc<str>>)> {
    let caller = || String::from_utf8_lossy(h.appid.as_deref().unwrap_or_default()).into_owned();
    let group = params.text("group").filter(|g| !g.is_empty()).map(Arc::from);
    let (raw, group) = match r {
        TRoute::Pub { topic, ver } | TRoute::WsPub { topic, ver } => {
            (format!("{}.{topic}.{ver}", caller()), None)
        }
        TRoute::JobAdd { topic, ver } | TRoute::JobCancel { topic, ver } => {
            (format!("{}.{topic}.{ver}", caller()), None)
        }
        TRoute::Sub { appid, topic, ver }
        | TRoute::WsSub { appid, topic, ver }
        | TRoute::Bury { appid, topic, ver } => (format!("{appid}.{topic}.{ver}"), group),
        TRoute::Offsets { appid, topic, ver, group }
        | TRoute::Seek { appid, topic, ver, group, .. }
        | TRoute::Shadow { appid, topic, ver, group }
        | TRoute::GroupDelete { appid, topic, ver, group } => {
            (format!("{appid}.{topic}.{ver}"), Some(Arc::from(*group)))
        }
        TRoute::CreateTopic { appid, topic, ver }
        | TRoute::Partitions { appid, topic, ver }
        | TRoute::JobQueue { appid, topic, ver }
        | TRoute::TopicStatus { appid, topic, ver }
        | TRoute::Peek { appid, topic, ver } => (format!("{appid}.{topic}.{ver}"), None),
        TRoute::Alive | TRoute::Status | TRoute::SubStatus | TRoute::Subd { .. } => return None,
    };
    Some((Arc::from(raw), group))
}

/// Room for a checked topic's full name (`appid.topic.ver`: 64 + 1 + 64 + 1 + 16 bytes) on
/// the stack, so the hot routes do not allocate it per request.
struct NameBuf([u8; 160]);

impl Default for NameBuf {
    fn default() -> NameBuf {
        NameBuf([0; 160])
    }
}

impl NameBuf {
    /// `appid.topic.ver`, here when it fits, else on the heap.
    fn join(&mut self, appid: &str, topic: &str, ver: &str) -> Cow<'_, str> {
        let parts = [appid, ".", topic, ".", ver];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.0.len() {
            return Cow::Owned(parts.concat());
        }
        let mut at = 0;
        for p in parts {
            self.0[at..at + p.len()].copy_from_slice(p.as_bytes());
            at += p.len();
        }
        Cow::Borrowed(std::str::from_utf8(&self.0[..len]).expect("joined from str"))
    }
}

#[cfg(test)]
mod tests {
    use super::NameBuf;

    #[test]
    fn names_join_on_the_stack_and_longer_ones_on_the_heap() {
        let mut buf = NameBuf::default();
        let name = buf.join("app1", "orders", "v1");
        assert_eq!(name, "app1.orders.v1");
        assert!(matches!(name, std::borrow::Cow::Borrowed(_)));
        let (a, t) = ("a".repeat(64), "t".repeat(64));
        let longest = NameBuf::default().join(&a, &t, &"v".repeat(16)).into_owned();
        assert_eq!(longest.len(), 146);
        let mut buf = NameBuf::default();
        let long = buf.join(&a, &t.repeat(2), "v1");
        assert_eq!(long, format!("{a}.{t}{t}.v1"));
        assert!(matches!(long, std::borrow::Cow::Owned(_)));
    }
}
