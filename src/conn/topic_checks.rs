//! The topics half's checks, in the contract's order (API-topics 1, 4.1, 5.2): what a request
//! head alone decides (names, auth, the appid bucket, sizes, keys, tags, ids), before the body
//! is read and again at dispatch; and the refusals they produce.

use std::borrow::Cow;
use std::time::Instant;

use crate::http::request::TopicHeaders;
use crate::topics::dedupe;
use crate::topics::engine::TopicSpec;
use crate::topics::hub::Hub;
use crate::topics::route::{Params, TRoute, TRouteError, valid_name};
use crate::topics::state::Reset;

/// A refusal: status and `errmsg` text. A 429's errmsg is always `quota exceeded`, so its text
/// carries the `Retry-After` seconds instead (made by `quota`).
pub(super) type Refuse = (u16, Cow<'static, str>);

pub(super) fn refuse(status: u16, text: &'static str) -> Refuse {
    (status, Cow::Borrowed(text))
}

/// 429 `quota exceeded`, to be retried after `secs` seconds (1.3).
pub(super) fn quota(secs: u64) -> Refuse {
    (429, Cow::Owned(secs.to_string()))
}

/// Charges an authenticated appid one request against its bucket (1.3). Every route calls it
/// right after its auth succeeds, in its head checks, so a stranger whose auth fails never
/// spends an app's budget; a request is head-checked once, so it is charged once.
pub(super) fn charge_appid(hub: &Hub, appid: &[u8]) -> Result<(), Refuse> {
    charge_appid_cost(hub, appid, 1)
}

/// `charge_appid` for `cost` units: a batch pub's record count (the bucket caps it at the burst).
pub(super) fn charge_appid_cost(hub: &Hub, appid: &[u8], cost: usize) -> Result<(), Refuse> {
    let cost = u32::try_from(cost).unwrap_or(u32::MAX);
    hub.rates.charge_appid(appid, cost, Instant::now()).map_err(quota)
}

/// A route's failure: a refusal, or "the topic does not exist" (open mode creates it).
pub(super) enum Fail {
    Refused(Refuse),
    Missing,
}

impl Fail {
    pub(super) fn refusal(self) -> Refuse {
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

pub(super) fn route_refusal(e: TRouteError) -> Refuse {
    match e {
        TRouteError::NotFound => refuse(404, "Not Found"),
        TRouteError::MethodNotAllowed(_) => refuse(405, "Method Not Allowed"),
    }
}

/// The spec of a topic created on first use in open mode.
pub(super) fn default_spec(hub: &Hub, r: &TRoute, headers: &TopicHeaders) -> TopicSpec {
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

/// 503 while the server drains (`/alive` still answers).
pub(super) fn draining_check(r: &TRoute, draining: bool) -> Result<(), Refuse> {
    if draining && !matches!(r, TRoute::Alive) {
        return Err(refuse(503, "server is shutting down"));
    }
    Ok(())
}

/// Every check that needs only the head, in the contract's order (up to the body size), with
/// the appid's charge right after its auth. Runs once per request: it charges.
pub(super) fn head_checks(
    hub: &Hub,
    r: &TRoute,
    params: &Params,
    h: &TopicHeaders,
    draining: bool,
) -> Result<(), Refuse> {
    draining_check(r, draining)?;
    let auth = hub.auth();
    let (appid, pubkey, subkey) = (text_of(&h.appid), text_of(&h.pubkey), text_of(&h.subkey));
    let cfg = &hub.cfg;
    let length = h.length.unwrap_or(0);
    match r {
        TRoute::Alive => Ok(()),
        TRoute::WsPub { topic, ver } => {
            names(None, topic, ver)?;
            auth.check_pub(appid, pubkey, topic).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)?;
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
            if !batch {
                // A batch is charged its record count once its body is read (`publish`).
                charge_appid(hub, appid)?;
            }
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
            auth.check_sub(appid, subkey, owner, topic, group).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)
        }
        TRoute::Offsets { appid: owner, topic, ver, group }
        | TRoute::Seek { appid: owner, topic, ver, group, .. } => {
            names(Some(owner), topic, ver)?;
            if !valid_name(group, 64) {
                return Err(refuse(400, "illegal group"));
            }
            auth.check_sub(appid, subkey, owner, topic, Some(group)).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)?;
            if length > hub_max_body(hub) {
                return Err(refuse(413, "too big message"));
            }
            Ok(())
        }
        TRoute::CreateTopic { appid: owner, topic, ver }
        | TRoute::Partitions { appid: owner, topic, ver } => {
            names(Some(owner), topic, ver)?;
            auth.check_admin(appid, pubkey).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)
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
    msg_id_check(params, h)
}

/// 4.4: `X-Msg-Id` is 1..128 printable ASCII bytes, and neither async nor on a batch.
pub(super) fn msg_id_check(params: &Params, h: &TopicHeaders) -> Result<(), Refuse> {
    match h.msg_id.as_deref() {
        None => Ok(()),
        Some(id)
            if dedupe::valid_id(id)
                && !params.flag("async")
                && params.get("batch") != Some(b"1") =>
        {
            Ok(())
        }
        Some(_) => Err(refuse(400, "illegal msg id")),
    }
}

pub(super) fn hub_max_body(hub: &Hub) -> usize {
    hub.cfg.max_body
}

pub(super) fn text_of(v: &Option<Vec<u8>>) -> &[u8] {
    v.as_deref().unwrap_or_default()
}
