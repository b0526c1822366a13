//! Topics status and management (API-topics 8) on a connection: `/v1/status`, the lag rows of
//! `/v1/status/...`, `/v1/sub/status` and `/v1/subd/...`, group deletion and peek.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::topic::{Fail, Refuse, charge_appid, group_name, names, refuse};
use super::topic_shadow::shadow_queue;
use crate::conn::{Conn, Stream};
use crate::http::request::TopicHeaders;
use crate::http::response;
use crate::server::Ctx;
use crate::topics::auth::Auth;
use crate::topics::hub::{Hub, Topic};
use crate::topics::meta::MetaRec;
use crate::topics::route::{Params, TRoute, valid_name};
use crate::topics::status::{self, Extra, PEEK_MAX_BYTES, PEEK_MAX_N};

fn bytes(v: &Option<Vec<u8>>) -> &[u8] {
    v.as_deref().unwrap_or_default()
}

fn unauthorized(text: &'static str) -> Refuse {
    refuse(401, text)
}

/// `?group=` where it is optional: absent or empty is none; else the name rule (and
/// `__smoketest__` only with `X-Origin: smoketest`).
fn optional_group<'a>(params: &'a Params, h: &TopicHeaders) -> Result<Option<&'a str>, Refuse> {
    match params.get("group") {
        None | Some(b"") => Ok(None),
        Some(_) => group_name(params, h).map(Some),
    }
}

/// The group to check registration of: `__smoketest__` needs none.
fn registered(group: Option<&str>) -> Option<&str> {
    group.filter(|g| *g != "__smoketest__")
}

/// A non-negative decimal integer, saturating (a huge one is out of range, not malformed).
fn natural(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// What a peek asks for: `n` (clamped), and a start `(partition, offset)` or the last `n` of
/// every partition.
struct PeekAt {
    n: usize,
    at: Option<(u64, u64)>,
}

/// Peek's query checks, in the contract's order (absent and empty are alike).
fn peek_params(params: &Params) -> Result<PeekAt, Refuse> {
    let n = params
        .get("n")
        .and_then(natural)
        .filter(|&n| n >= 1)
        .ok_or(refuse(400, "invalid n param"))?;
    let n = n.min(PEEK_MAX_N as u64) as usize;
    let given = |name| params.get(name).filter(|v| !v.is_empty());
    let at = match (given("partition"), given("offset")) {
        (None, None) => None,
        (Some(p), Some(o)) => {
            let p = natural(p).ok_or(refuse(400, "invalid partition"))?;
            let o = natural(o).ok_or(refuse(400, "invalid offset"))?;
            Some((p, o))
        }
        _ => return Err(refuse(400, "invalid partition and offset combination settings")),
    };
    Ok(PeekAt { n, at })
}

/// The head-only checks of these routes, in the contract's order: names, auth, then the
/// query (peek).
pub(super) fn head_checks(
    hub: &Hub,
    r: &TRoute,
    params: &Params,
    h: &TopicHeaders,
    auth: &Auth,
) -> Result<(), Refuse> {
    let (appid, pubkey, subkey) = (bytes(&h.appid), bytes(&h.pubkey), bytes(&h.subkey));
    match r {
        TRoute::TopicStatus { appid: owner, topic, ver } => {
            names(Some(owner), topic, ver)?;
            let group = registered(optional_group(params, h)?);
            auth.check_sub(appid, subkey, owner, topic, group).map_err(unauthorized)?;
            charge_appid(hub, appid)
        }
        TRoute::SubStatus => {
            auth.check_app(appid, subkey).map_err(unauthorized)?;
            charge_appid(hub, appid)
        }
        TRoute::Subd { topic, ver } => {
            names(None, topic, ver)?;
            let key = if subkey.is_empty() { pubkey } else { subkey };
            auth.check_owner(appid, key, topic).map_err(unauthorized)?;
            charge_appid(hub, appid)
        }
        TRoute::GroupDelete { appid: owner, topic, ver, group } => {
            names(Some(owner), topic, ver)?;
            if !valid_name(group, 64) {
                return Err(refuse(400, "illegal group"));
            }
            auth.check_sub(appid, subkey, owner, topic, Some(group)).map_err(unauthorized)?;
            charge_appid(hub, appid)
        }
        TRoute::Peek { appid: owner, topic, ver } => {
            names(Some(owner), topic, ver)?;
            // The group matters only to name a shadow queue.
            let group = match params.get("q") {
                None | Some(b"") => None,
                Some(_) => registered(Some(group_name(params, h)?)),
            };
            auth.check_sub(appid, subkey, owner, topic, group).map_err(unauthorized)?;
            charge_appid(hub, appid)?;
            peek_params(params).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// `raw`'s topic and its shadow queues (`raw.<subscriber>.<group>.retry|dead`).
fn family(hub: &Hub, topic: Arc<Topic>) -> Vec<Arc<Topic>> {
    let prefix = format!("{}.", topic.name);
    let mut v = vec![topic];
    v.extend(hub.all().into_iter().filter(|t| t.name.starts_with(&prefix)));
    v
}

impl<S: Stream> Conn<S> {
    pub(super) fn status(
        &mut self,
        ctx: &mut Ctx,
        r: &TRoute,
        params: &Params,
        h: &TopicHeaders,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let caller = String::from_utf8_lossy(bytes(&h.appid)).into_owned();
        let body = match r {
            TRoute::Status => server_status(hub, ctx),
            TRoute::TopicStatus { appid: owner, topic, ver } => {
                let topic = hub.get(&format!("{owner}.{topic}.{ver}"));
                let topic = topic.ok_or(refuse(400, "invalid topic"))?;
                let group = params.text("group").filter(|g| !g.is_empty());
                let keep = |g: &crate::topics::state::GroupId| {
                    g.app == caller && group.is_none_or(|w| g.group == w)
                };
                lag_rows(&family(hub, topic), keep, Extra::Nothing)
            }
            TRoute::SubStatus => lag_rows(&hub.all(), |g| g.app == caller, Extra::Topic),
            TRoute::Subd { topic, ver } => {
                let topic = hub.get(&format!("{caller}.{topic}.{ver}"));
                let topic = topic.ok_or(refuse(400, "invalid topic"))?;
                lag_rows(&family(hub, topic), |_| true, Extra::Appid)
            }
            TRoute::GroupDelete { appid: owner, topic, ver, group } => {
                let topic = hub.get(&format!("{owner}.{topic}.{ver}"));
                let topic = topic.ok_or(refuse(400, "invalid topic"))?;
                let recs = forget_group(hub, topic, &caller, group)?;
                self.store_then_ok(ctx, recs, 200);
                return Ok(());
            }
            TRoute::Peek { appid: owner, topic, ver } => {
                peek(hub, &format!("{owner}.{topic}.{ver}"), &caller, params, h)?
            }
            _ => return Err(refuse(404, "Not Found").into()),
        };
        self.respond_owned(ctx, 200, response::JSON, body.into_bytes());
        Ok(())
    }
}

/// `GET /v1/status`: the server's counts.
fn server_status(hub: &Hub, ctx: &Ctx) -> String {
    let (mut topics, mut groups, mut instances) = (0, 0, 0);
    for t in hub.all() {
        if !status::is_shadow(&t.name) {
            topics += 1;
        }
        let st = t.lock();
        groups += status::listed_count(&st);
        instances += st.groups.values().map(|g| g.instances.len()).sum::<usize>();
    }
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{{\"version\":\"{}\",\"uptime_s\":{},\"auth\":\"{}\",\"topics\":{topics},\
         \"groups\":{groups},\"instances\":{instances},\"ws\":{},\"jobs\":{},\
         \"msgs_in\":{},\"msgs_out\":{}}}",
        env!("CARGO_PKG_VERSION"),
        ctx.now.saturating_duration_since(ctx.shared.started).as_secs(),
        hub.auth().mode(),
        hub.ws.load(Ordering::Relaxed),
        hub.pending_jobs(),
        hub.msgs_in.load(Ordering::Relaxed),
        hub.msgs_out.load(Ordering::Relaxed),
    );
    s
}

/// The sorted lag rows of `topics`' (group, queue)s that `keep` accepts, as JSON. Each topic
/// is locked in turn, only to copy its rows.
fn lag_rows(
    topics: &[Arc<Topic>],
    keep: impl Fn(&crate::topics::state::GroupId) -> bool,
    extra: Extra,
) -> String {
    let mut rows = Vec::new();
    for t in topics {
        status::rows(&t.lock(), &keep, extra, &mut rows);
    }
    status::to_json(&status::sorted(&rows))
}

/// `DELETE /v1/groups/...`: refused while the group has a live instance on the topic or a
/// shadow; else its commits there are forgotten (memory now, the store by the records).
fn forget_group(
    hub: &Hub,
    topic: Arc<Topic>,
    app: &str,
    group: &str,
) -> Result<Vec<MetaRec>, Refuse> {
    let all = family(hub, topic);
    if all.iter().any(|t| t.lock().online(app, group)) {
        return Err(refuse(400, "delete a online group not allowed"));
    }
    let mut recs = Vec::with_capacity(all.len());
    for t in &all {
        let mut st = t.lock();
        st.groups.retain(|gid, g| {
            if gid.app != app || gid.group != group {
                return true;
            }
            // An instance that joined since the check keeps its entry; its starts are fresh.
            g.committed.iter_mut().for_each(|c| *c = None);
            !g.instances.is_empty()
        });
        drop(st);
        recs.push(MetaRec::ForgetGroup {
            topic: t.name.to_string(),
            app: app.to_string(),
            group: group.to_string(),
        });
    }
    Ok(recs)
}

/// `GET /v1/peek/...`: the checks after the head's, then the messages as a JSON array in
/// (partition, offset) order.
fn peek(
    hub: &Hub,
    raw: &str,
    caller: &str,
    params: &Params,
    h: &TopicHeaders,
) -> Result<String, Refuse> {
    let want = peek_params(params)?;
    // The group matters only to name a shadow queue (checked with the head).
    let group = match params.get("q") {
        None | Some(b"") => "",
        Some(_) => group_name(params, h)?,
    };
    let topic = match shadow_queue(hub, raw, caller, group, params.get("q"))? {
        Some((shadow, _)) => shadow,
        None => hub.get(raw).ok_or(refuse(400, "invalid topic"))?,
    };
    // Where each partition's read starts.
    let starts: Vec<(u32, i64)> = {
        let st = topic.lock();
        match want.at {
            Some((p, o)) => {
                let part = usize::try_from(p)
                    .ok()
                    .and_then(|p| st.parts.get(p))
                    .ok_or(refuse(400, "partition out of range"))?;
                let o = i64::try_from(o).unwrap_or(i64::MAX);
                if o < part.oldest || o >= part.stored {
                    return Err(refuse(400, "offset out of range"));
                }
                vec![(p as u32, o)]
            }
            None => st
                .parts
                .iter()
                .enumerate()
                .map(|(p, part)| (p as u32, part.oldest.max(part.stored - want.n as i64)))
                .collect(),
        }
    };
    let mut s = String::from("[");
    let mut budget = PEEK_MAX_BYTES;
    for (p, from) in starts {
        for m in status::peek(&topic, p, from, want.n, budget) {
            budget = budget.saturating_sub(m.payload.len());
            if s.len() > 1 {
                s.push(',');
            }
            status::peek_json(&mut s, p, &m);
        }
    }
    s.push(']');
    Ok(s)
}
