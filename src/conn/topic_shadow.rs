//! Shadow queues and bury (API-topics 6): a group's `retry` and `dead` queues are topics of
//! their own, one partition each, named `appid.topic.ver.<subscriber>.<group>.retry|dead`;
//! they are read with `q=` like any queue (own offsets), and `PUT /v1/msgs/...` with `X-Bury`
//! moves a message there and commits it on the source.

use std::sync::Arc;

use super::topic::{Fail, Refuse, TopicWait, charge_appid, refuse};
use crate::conn::{Conn, State, Stream};
use crate::http::request::TopicHeaders;
use crate::server::Ctx;
use crate::topics::auth::Auth;
use crate::topics::engine::TopicSpec;
use crate::topics::hub::{Hub, Topic};
use crate::topics::route::{Params, TRoute, valid_name};
use crate::topics::state::GroupId;

/// The raw name of a group's shadow queue.
pub fn shadow_name(raw: &str, subscriber: &str, group: &str, q: &str) -> String {
    format!("{raw}.{subscriber}.{group}.{q}")
}

/// The queue `q` names for `subscriber`'s `group` on topic `raw`: `None` for the topic itself
/// (`q` absent or empty), else the shadow topic and its queue name. `invalid shadow name` for
/// another `q`, `register shadow first` when the group has none.
pub(super) fn shadow_queue(
    hub: &Hub,
    raw: &str,
    subscriber: &str,
    group: &str,
    q: Option<&[u8]>,
) -> Result<Option<(Arc<Topic>, String)>, Refuse> {
    let q = match q {
        None | Some(b"") => return Ok(None),
        Some(b"retry") => "retry",
        Some(b"dead") => "dead",
        Some(_) => return Err(refuse(400, "invalid shadow name")),
    };
    let topic = hub
        .get(&shadow_name(raw, subscriber, group, q))
        .ok_or(refuse(400, "register shadow first"))?;
    Ok(Some((topic, q.to_string())))
}

fn text(v: &Option<Vec<u8>>) -> &[u8] {
    v.as_deref().unwrap_or_default()
}

/// A non-negative integer header value.
fn count(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The head-only checks of these routes, in the contract's order.
pub(super) fn head_checks(
    hub: &Hub,
    r: &TRoute,
    params: &Params,
    h: &TopicHeaders,
    auth: &Auth,
) -> Result<(), Refuse> {
    let (appid, subkey) = (text(&h.appid), text(&h.subkey));
    match r {
        TRoute::Shadow { appid: owner, topic, ver, group } => {
            names(owner, topic, ver, group)?;
            auth.check_sub(appid, subkey, owner, topic, Some(group)).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)
        }
        TRoute::Bury { appid: owner, topic, ver } => {
            let group = params.text("group").unwrap_or("");
            names(owner, topic, ver, group)?;
            if !matches!(h.bury.as_deref(), Some(b"retry" | b"dead")) {
                return Err(refuse(400, "illegal bury"));
            }
            auth.check_sub(appid, subkey, owner, topic, Some(group)).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)?;
            let (Some(p), Some(o)) = (h.partitions.first(), h.offsets.first()) else {
                return Err(refuse(400, "empty offset or partition"));
            };
            if p.is_empty() || o.is_empty() {
                return Err(refuse(400, "empty offset or partition"));
            }
            count(o).ok_or(refuse(400, "bad offset"))?;
            count(p).ok_or(refuse(400, "bad partition"))?;
            if h.length.unwrap_or(0) > hub.cfg.pub_max_bytes {
                return Err(refuse(413, "too big message"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn names(owner: &str, topic: &str, ver: &str, group: &str) -> Result<(), Refuse> {
    if !valid_name(owner, 64) {
        return Err(refuse(400, "invalid appid"));
    }
    if !valid_name(topic, 64) {
        return Err(refuse(400, "illegal topic"));
    }
    if !valid_name(ver, 16) {
        return Err(refuse(400, "illegal version"));
    }
    if !valid_name(group, 64) {
        return Err(refuse(400, "illegal group"));
    }
    Ok(())
}

impl<S: Stream> Conn<S> {
    /// `PUT /v1/msgs/:appid/:topic/:ver?group=G&q=` with `X-Bury` (6).
    pub(super) fn bury(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        params: &Params,
        h: &TopicHeaders,
        body: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        if body.len() > hub.cfg.pub_max_bytes {
            return Err(refuse(413, "too big message").into());
        }
        let group = params.text("group").unwrap_or("").to_string();
        let subscriber = String::from_utf8_lossy(text(&h.appid)).into_owned();
        let target_q = if h.bury.as_deref() == Some(b"dead") { "dead" } else { "retry" };
        let source_q = shadow_queue(hub, raw, &subscriber, &group, params.get("q"))?;
        let (target, _) = shadow_queue(hub, raw, &subscriber, &group, Some(target_q.as_bytes()))?
            .expect("retry or dead");
        let (source, queue) = match source_q {
            Some(s) => s,
            None => (hub.get(raw).ok_or(refuse(400, "invalid topic"))?, String::new()),
        };
        let partition = h.partitions.first().and_then(|p| count(p)).unwrap_or(-1);
        let offset = h.offsets.first().and_then(|o| count(o)).unwrap_or(-1);
        if partition < 0 || partition >= i64::from(source.partitions()) {
            return Err(refuse(400, "bad partition").into());
        }
        let p = partition as u32;
        let (oldest, latest) = {
            let st = source.lock();
            (st.parts[p as usize].oldest, st.parts[p as usize].stored)
        };
        if offset < 0 || offset >= latest {
            return Err(refuse(400, "bad offset").into());
        }
        let record = if body.is_empty() {
            // A copy of the stored message with its key and tag (new in esub).
            if offset < oldest {
                return Err(refuse(400, "bad offset").into());
            }
            let m = source.message_at(p, offset).ok_or(refuse(400, "bad offset"))?;
            (m.key.clone(), m.tag.clone(), m.payload.to_vec())
        } else {
            // As given, with the request's tag and no key (as kateway).
            (Vec::new(), h.tag.clone().unwrap_or_default(), std::mem::take(body))
        };
        let gid = GroupId { app: subscriber, group, queue };
        if source.lock().new_group_refused(&gid, hub.cfg.max_groups) {
            return Err(refuse(507, "too many groups").into());
        }
        let reply = Some((self.id, None));
        hub.publish(&shared, &target, std::iter::once(record), reply, None, ctx.wall_ms);
        let wait = TopicWait::Bury { source, gid, partition: p, offset };
        self.state = State::Topic(wait);
        self.set_deadline(None, ctx);
        Ok(())
    }

    /// `POST /v1/shadow/:appid/:topic/:ver/:group` (6): both queues, 201 (again 201).
    pub(super) fn create_shadow(
        &mut self,
        ctx: &mut Ctx,
        raw: &str,
        group: &str,
        _params: &Params,
        h: &TopicHeaders,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let hub = shared.hub.as_ref().expect("topics on");
        let topic = hub.get(raw).ok_or(refuse(400, "invalid topic"))?;
        let subscriber = String::from_utf8_lossy(text(&h.appid)).into_owned();
        let (hours, bytes) = {
            let st = topic.lock();
            (st.retention_hours, st.retention_bytes)
        };
        let missing = ["retry", "dead"]
            .iter()
            .filter(|q| hub.get(&shadow_name(raw, &subscriber, group, q)).is_none())
            .count();
        if !hub.room_for(missing) {
            return Err(refuse(507, "too many topics").into());
        }
        let mut left = 0;
        for q in ["retry", "dead"] {
            let name = shadow_name(raw, &subscriber, group, q);
            if hub.get(&name).is_some() {
                // Repeating the creation changes nothing.
                continue;
            }
            let spec =
                TopicSpec { name, partitions: 1, retention_hours: hours, retention_bytes: bytes };
            hub.create(&shared, spec, self.id, true);
            left += 1;
        }
        if left == 0 {
            self.respond(ctx, 201, crate::http::response::JSON, b"{\"ok\":1}", "");
            return Ok(());
        }
        let wait = TopicWait::Done { status: 201, left, fail: None };
        self.state = State::Topic(wait);
        self.set_deadline(None, ctx);
        Ok(())
    }
}
