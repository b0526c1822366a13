//! The topics half on a connection (API-topics.md): checks in the contract's order, pubs that
//! wait for the store, fetches that park until their partitions get a message and stream
//! batches, acks and commits. Topic bookkeeping lives in `topics::state`; this is the HTTP side.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use crate::conn::{Conn, ReqMetric, State, Stream};
use crate::http::request::TopicHeaders;
use crate::http::response::{self, Persist};
use crate::metrics::RouteTag;
use crate::server::Ctx;
use crate::server::mailbox::TopicEv;
use crate::store::StoreFail;
use crate::topics::codec::{self, Limits};
use crate::topics::engine::TopicSpec;
use crate::topics::hub::{Hub, Topic};
use crate::topics::route::{Params, TRoute, TRouteError, route, valid_name};
use crate::topics::state::{GroupId, Reset};
use crate::ws::handshake;
use crate::ws::topic::TPub;
use crate::ws::{Role, Ws};

/// A refusal: status and `errmsg` text.
pub(super) type Refuse = (u16, Cow<'static, str>);

pub(super) fn refuse(status: u16, text: &'static str) -> Refuse {
    (status, Cow::Borrowed(text))
}

/// What a topics request waits for.
pub enum TopicWait {
    /// A pub's appends: `left` outstanding; then 201 (or the first failure's status).
    Pub { left: usize, fail: Option<StoreFail>, answer: PubAnswer },
    /// Its topic is being created; the request runs again once it exists.
    Create { method: String, target: Vec<u8>, headers: Box<TopicHeaders>, body: Vec<u8> },
    /// Metadata being stored; then `status` with `{"ok":1}`.
    Done { status: u16 },
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

pub(super) fn text_of(v: &Option<Vec<u8>>) -> &[u8] {
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
        let body = json_err(text);
        let extra = if status == 405 { "Allow: GET\r\n" } else { "" };
        self.respond(ctx, status, response::JSON, body.as_bytes(), extra);
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
        let result = match route(method, target) {
            Err(e) => {
                if let TRouteError::MethodNotAllowed(allow) = e {
                    self.topic_allow = Some(allow);
                }
                Err(route_refusal(e))
            }
            Ok((r, params)) => head_checks(hub, &r, &params, headers, ctx.draining),
        };
        match result {
            Ok(()) => false,
            Err((status, text)) => {
                self.persist = Persist::Close;
                self.topic_refuse(ctx, status, &text);
                true
            }
        }
    }

    fn topic_refuse(&mut self, ctx: &mut Ctx, status: u16, text: &str) {
        if status == 405 {
            let body = json_err(text);
            let allow = self.topic_allow.take().unwrap_or("GET");
            let extra = format!("Allow: {allow}\r\n");
            self.respond(ctx, 405, response::JSON, body.as_bytes(), &extra);
        } else {
            if status == 503 {
                self.persist = Persist::Close;
            }
            self.topic_error(ctx, status, text);
        }
    }

    /// Runs one complete `/v1/` request.
    pub fn topic_dispatch(
        &mut self,
        ctx: &mut Ctx,
        method: String,
        target: Vec<u8>,
        mut headers: Box<TopicHeaders>,
        mut body: Vec<u8>,
    ) {
        let shared = ctx.shared.clone();
        let Some(hub) = shared.hub.as_ref() else {
            return self.respond_text(ctx, 404, "Not Found");
        };
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
            self.req = tag.map(|route| ReqMetric { route, key: None, auth, confirmed: false });
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
        if let Err((status, text)) = head_checks(hub, &r, &params, &headers, ctx.draining) {
            return self.topic_refuse(ctx, status, &text);
        }
        let result = match &r {
            TRoute::Alive => {
                self.respond(ctx, 200, response::JSON, b"{\"ok\":1}", "");
                Ok(())
            }
            TRoute::Pub { topic, ver } => {
                let owner = String::from_utf8_lossy(text_of(&headers.appid)).into_owned();
                let raw = format!("{owner}.{topic}.{ver}");
                self.publish(ctx, &raw, &params, &headers, &mut body)
            }
            TRoute::Sub { appid, topic, ver } => {
                let raw = format!("{appid}.{topic}.{ver}");
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
            Err(Missing) if matches!(self.state, State::Head) && !hub.auth_file => {
                // Open mode creates the topic, then the request runs again.
                let spec = default_spec(hub, &r, &headers);
                hub.create(&ctx.shared, spec, self.id, false);
                self.state =
                    State::Topic(Box::new(TopicWait::Create { method, target, headers, body }));
                self.set_deadline(None, ctx);
            }
            Err(e) => {
                let (status, text) = e.refusal();
                self.topic_refuse(ctx, status, &text);
            }
        }
    }
}

/// A route's failure: a refusal, or "the topic does not exist" (open mode creates it).
pub(super) enum Fail {
    Refused(Refuse),
    Missing,
}
use Fail::Missing;

impl Fail {
    fn refusal(self) -> Refuse {
        match self {
            Fail::Refused(r) => r,
            Fail::Missing => refuse(400, "invalid topic"),
        }
    }
}

impl From<Refuse> for Fail {
    fn from(r: Refuse) -> Fail {
        Fail::Refused(r)
    }
}

fn route_refusal(e: TRouteError) -> Refuse {
    match e {
        TRouteError::NotFound => refuse(404, "Not Found"),
        TRouteError::MethodNotAllowed(_) => refuse(405, "Method Not Allowed"),
    }
}

/// The spec of a topic created on first use in open mode.
fn default_spec(hub: &Hub, r: &TRoute, headers: &TopicHeaders) -> TopicSpec {
    let name = match r {
        TRoute::Pub { topic, ver }
        | TRoute::WsPub { topic, ver }
        | TRoute::JobAdd { topic, ver } => {
            format!("{}.{topic}.{ver}", String::from_utf8_lossy(text_of(&headers.appid)))
        }
        TRoute::Sub { appid, topic, ver } | TRoute::WsSub { appid, topic, ver } => {
            format!("{appid}.{topic}.{ver}")
        }
        _ => String::new(),
    };
    TopicSpec {
        name,
        partitions: hub.cfg.default_partitions,
        retention_hours: hub.cfg.retention_hours,
        retention_bytes: -1,
    }
}

pub(super) fn names(appid: Option<&str>, topic: &str, ver: &str) -> Result<(), Refuse> {
    if appid.is_some_and(|a| !valid_name(a, 64)) {
        return Err(refuse(400, "invalid appid"));
    }
    if !valid_name(topic, 64) {
        return Err(refuse(400, "illegal topic"));
    }
    if !valid_name(ver, 16) {
        return Err(refuse(400, "illegal version"));
    }
    Ok(())
}

pub(super) fn group_name<'a>(
    params: &'a Params,
    headers: &TopicHeaders,
) -> Result<&'a str, Refuse> {
    let g = params.text("group").unwrap_or("");
    if !valid_name(g, 64) {
        return Err(refuse(400, "illegal group"));
    }
    if g == "__smoketest__" && headers.origin.as_deref() != Some(b"smoketest") {
        return Err(refuse(400, "illegal group"));
    }
    Ok(g)
}

/// `batch` for a sub: absent = 1; else an integer >= 1.
pub(super) fn sub_batch(params: &Params) -> Result<usize, Refuse> {
    match params.text("batch") {
        None => Ok(1),
        Some(t) => match t.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n.min(usize::MAX as u64) as usize),
            _ => Err(refuse(400, "illegal batch")),
        },
    }
}

pub(super) fn reset_of(params: &Params) -> Result<Reset, Refuse> {
    match params.get("reset") {
        None | Some(b"oldest") => Ok(Reset::Oldest),
        Some(b"newest") => Ok(Reset::Newest),
        Some(_) => Err(refuse(400, "illegal reset")),
    }
}

/// Every check that needs only the head, in the contract's order (up to the body size).
fn head_checks(
    hub: &Hub,
    r: &TRoute,
    params: &Params,
    h: &TopicHeaders,
    draining: bool,
) -> Result<(), Refuse> {
    if draining && !matches!(r, TRoute::Alive) {
        return Err(refuse(503, "server is shutting down"));
    }
    let auth = hub.auth();
    let (appid, pubkey, subkey) = (text_of(&h.appid), text_of(&h.pubkey), text_of(&h.subkey));
    let cfg = &hub.cfg;
    let length = h.length.unwrap_or(0);
    match r {
        TRoute::Alive => Ok(()),
        TRoute::WsPub { topic, ver } => {
            names(None, topic, ver)?;
            auth.check_pub(appid, pubkey, topic).map_err(|t| refuse(401, t))?;
            key_tag(hub, params, h)
        }
        TRoute::Pub { topic, ver } => {
            names(None, topic, ver)?;
            let batch = match params.get("batch") {
                None | Some(b"") | Some(b"0") => false,
                Some(b"1") => true,
                Some(_) => return Err(refuse(400, "illegal batch")),
            };
            auth.check_pub(appid, pubkey, topic).map_err(|t| refuse(401, t))?;
            let limit = if batch { hub_max_body(hub) } else { cfg.pub_max_bytes };
            if length > limit {
                return Err(refuse(413, "too big message"));
            }
            // With a body still to read; an empty one is `too small message` first (4.1's order),
            // and a chunked one is judged once read.
            if length > 0 { key_tag(hub, params, h) } else { Ok(()) }
        }
        TRoute::Sub { appid: owner, topic, ver } | TRoute::WsSub { appid: owner, topic, ver } => {
            names(Some(owner), topic, ver)?;
            let group = group_name(params, h)?;
            sub_batch(params)?;
            reset_of(params)?;
            let group = (group != "__smoketest__").then_some(group);
            auth.check_sub(appid, subkey, owner, topic, group).map_err(|t| refuse(401, t))
        }
        TRoute::Offsets { appid: owner, topic, ver, group }
        | TRoute::Seek { appid: owner, topic, ver, group, .. } => {
            names(Some(owner), topic, ver)?;
            if !valid_name(group, 64) {
                return Err(refuse(400, "illegal group"));
            }
            auth.check_sub(appid, subkey, owner, topic, Some(group)).map_err(|t| refuse(401, t))?;
            if length > hub_max_body(hub) {
                return Err(refuse(413, "too big message"));
            }
            Ok(())
        }
        TRoute::CreateTopic { appid: owner, topic, ver }
        | TRoute::Partitions { appid: owner, topic, ver } => {
            names(Some(owner), topic, ver)?;
            auth.check_admin(appid, pubkey).map_err(|t| refuse(401, t))
        }
        TRoute::Bury { .. } | TRoute::Shadow { .. } => {
            super::topic_shadow::head_checks(hub, r, params, h, &auth)
        }
        TRoute::JobAdd { .. } | TRoute::JobCancel { .. } | TRoute::JobQueue { .. } => {
            super::topic_jobs::head_checks(hub, r, params, h, &auth)
        }
        TRoute::Status
        | TRoute::TopicStatus { .. }
        | TRoute::SubStatus
        | TRoute::Subd { .. }
        | TRoute::GroupDelete { .. }
        | TRoute::Peek { .. } => super::topic_status::head_checks(hub, r, params, h, &auth),
    }
}

/// 4.1's key and tag limits (the query's `key`, the `X-Tag` header): known from the head.
pub(super) fn key_tag(hub: &Hub, params: &Params, h: &TopicHeaders) -> Result<(), Refuse> {
    if params.get("key").is_some_and(|k| k.len() > hub.cfg.max_key_bytes) {
        return Err(refuse(400, "too big key"));
    }
    if h.tag.as_ref().is_some_and(|t| t.len() > hub.cfg.max_tag_bytes) {
        return Err(refuse(400, "too big tag"));
    }
    Ok(())
}

fn hub_max_body(hub: &Hub) -> usize {
    hub.cfg.max_body
}

impl<S: Stream> Conn<S> {
    /// 4.1 and 4.2 after the head checks.
    fn publish(
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
        let topic = hub.get(raw).ok_or(Missing)?;
        let records = match batch_recs {
            Some(r) => r,
            // The body becomes the message's payload: moved, not copied.
            None => vec![(key.to_vec(), tag.to_vec(), std::mem::take(body))],
        };
        let reply = (!asynch).then_some((self.id, None));
        let (placed, left) = hub.publish(&shared, &topic, records, reply);
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
            self.answer_pub(ctx, 202, answer);
        } else {
            self.state = State::Topic(Box::new(TopicWait::Pub { left, fail: None, answer }));
            self.set_deadline(None, ctx);
        }
        Ok(())
    }

    /// 4.3: the checks of 4.1 up to the topic, then the upgrade.
    fn ws_publish(
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
        let topic = hub.get(raw).ok_or(Missing)?;
        let accept = self.check_upgrade(h)?;
        let role =
            Role::TopicPub(TPub::new(topic, key.to_vec(), tag.to_vec(), params.flag("async")));
        let ws = Ws::with_limit(role, hub.cfg.pub_max_bytes + 4096, ctx);
        self.upgrade(ws, &accept, ctx);
        Ok(())
    }

    /// The websocket handshake's headers; a bad upgrade is 400 naming the version we speak.
    pub(super) fn check_upgrade(&mut self, h: &TopicHeaders) -> Result<String, Fail> {
        handshake::check(&h.upgrade).map_err(|why| Fail::Refused((400, Cow::Borrowed(why))))
    }

    fn answer_pub(&mut self, ctx: &mut Ctx, status: u16, answer: PubAnswer) {
        match answer {
            PubAnswer::Single { partition, offset } => {
                let extra = format!("X-Partition: {partition}\r\nX-Offset: {offset}\r\n");
                self.topic_ok(ctx, status, &extra);
            }
            PubAnswer::Batch { json } => {
                self.respond(ctx, status, response::JSON, json.as_bytes(), "");
            }
        }
    }

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
                (Role::TopicSub(t), TopicEv::Wake) if !closing => {
                    t.parked = false;
                    t.fetch(&mut self.out, self.id, ctx);
                }
                _ => {}
            }
            return;
        }
        let State::Topic(wait) = &mut self.state else { return };
        match (wait.as_mut(), ev) {
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
                let TopicWait::Pub { fail, answer, .. } = *wait else { return };
                match fail {
                    None => self.answer_pub(ctx, 201, answer),
                    Some(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Create { .. }, TopicEv::Created(result)) => {
                let State::Topic(wait) = std::mem::replace(&mut self.state, State::Head) else {
                    return;
                };
                let TopicWait::Create { method, target, headers, body } = *wait else { return };
                match result {
                    Ok(()) => self.topic_dispatch(ctx, method, target, headers, body),
                    Err(f) => self.store_failed(ctx, f),
                }
            }
            (TopicWait::Done { status }, TopicEv::Done(result)) => {
                let status = *status;
                self.state = State::Head;
                match result {
                    Ok(()) => self.topic_ok(ctx, status, ""),
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
