//! What each route does. Sub parks (or is refused, or takes over), rep claims the sub or a pool
//! member and hands the body to its worker, psub and prep upgrade to websockets; `ping`,
//! `info` and `keys` answer at once. Also how messages from other workers land.

use std::sync::Arc;

use crate::cluster::handle::ClusterMsg;
use crate::config::StoreMode;
use crate::conn::{Conn, Keep, ReqMetric, Request, State, Stream, undeliverable};
use crate::http::response::{self, Persist};
use crate::metrics::RouteTag;
use crate::registry::{Claim, Join, Park};
use crate::router::{Holder, Route, RouteError};
use crate::server::Ctx;
use crate::server::mailbox::{ClaimOutcome, Msg, ReplyTo};
use crate::store::{Req, StoreFail, Taken};
use crate::ws::handshake;
use crate::ws::prep::Prep;
use crate::ws::{Delivery, Member, Role, Ws};

/// Answers one complete request (head routed, body read).
pub fn dispatch<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, request: Request, body: Vec<u8>) {
    conn.req = measure(&request.route, ctx);
    match request.route {
        Ok(Route::Topic { method, target }) => match (&ctx.shared.hub, request.topic) {
            (Some(_), Some(headers)) => conn.topic_dispatch(ctx, method, target, headers, body),
            _ => conn.respond_text(ctx, 404, "Not Found"),
        },
        Err(RouteError::NotFound) => conn.respond_text(ctx, 404, "Not Found"),
        Err(RouteError::MethodNotAllowed(allow)) => {
            let extra = format!("Allow: {allow}\r\n");
            conn.respond(ctx, 405, response::TEXT, b"Method Not Allowed", &extra);
        }
        Err(RouteError::BadRequest(why)) => conn.respond_text(ctx, 400, why),
        Ok(Route::Ping) => conn.respond_text(ctx, 200, "OK"),
        Ok(Route::Info) => {
            let info = ctx.shared.info_json(ctx.now);
            conn.respond(ctx, 200, response::JSON, info.as_bytes(), "");
        }
        Ok(Route::Metrics) => {
            let text = ctx.shared.prometheus(ctx.now);
            let ctype = "text/plain; version=0.0.4; charset=utf-8";
            conn.respond(ctx, 200, ctype, text.as_bytes(), "");
        }
        Ok(Route::Keys { local }) => match ctx.shared.cluster() {
            // Cluster mode: `{node: [keys]}` for every live node (API-cluster.md section 2).
            Some(cluster) if !local => {
                if !cluster_token_ok(ctx, &request) {
                    return conn.respond_text(ctx, 401, "Invalid cluster token");
                }
                if !cluster.joined() {
                    // NATS down: what this node knows, the others unanswered.
                    let others = cluster.others().into_iter().map(|b| (b.node, None));
                    let json = ctx.shared.keys_map_json(others);
                    return conn.respond(ctx, 200, response::JSON, &json, "");
                }
                cluster.post(ClusterMsg::Keys { reply: ReplyTo { conn: conn.id, seq: 0 } });
                conn.state = State::AwaitCluster;
                conn.set_deadline(None, ctx);
            }
            _ => {
                let keys = ctx.shared.registry.keys();
                if keys.is_empty() {
                    conn.respond(ctx, 204, response::JSON, b"", "");
                } else {
                    let json = serde_json::to_vec(&keys).unwrap_or_default();
                    conn.respond(ctx, 200, response::JSON, &json, "");
                }
            }
        },
        Ok(Route::Members) => {
            if !cluster_token_ok(ctx, &request) {
                return conn.respond_text(ctx, 401, "Invalid cluster token");
            }
            let json = ctx.shared.members_json();
            conn.respond(ctx, 200, response::JSON, &json, "");
        }
        Ok(Route::Head { of, key, path }) => locate(conn, ctx, of, key, path),
        Ok(Route::Join { nats }) => {
            let token_ok = token_ok(ctx, request.cluster_token.as_deref());
            join(conn, ctx, token_ok, nats)
        }
        Ok(Route::Announce { since, wait_ms }) => {
            if !cluster_token_ok(ctx, &request) {
                return conn.respond_text(ctx, 401, "Invalid cluster token");
            }
            if ctx.draining {
                conn.persist = Persist::Close;
                return conn.respond_text(ctx, 503, "Shutting down");
            }
            if !request.upgrade.websocket {
                return conn.announce_poll(ctx, since.unwrap_or(0), wait_ms);
            }
            match handshake::check(&request.upgrade) {
                Err(why) => bad_upgrade(conn, ctx, why),
                Ok(accept) => conn.announce_ws(ctx, since, &accept),
            }
        }
        Ok(Route::Sub { key, query }) => sub(conn, ctx, key, query.token.as_deref()),
        Ok(Route::Rsub { key, query }) => rsub(conn, ctx, key, query.token),
        Ok(Route::Rep { key, query }) => {
            rep(conn, ctx, &key, query.token.as_deref(), query.psub, body);
        }
        Ok(Route::Psub { key, query }) => match handshake::check(&request.upgrade) {
            Err(why) => bad_upgrade(conn, ctx, why),
            Ok(accept) => {
                let (token, shared, replay) = (query.token.as_deref(), query.shared, query.replay);
                psub(conn, ctx, key, token, shared, replay, &accept);
            }
        },
        Ok(Route::Prep { query }) => match handshake::check(&request.upgrade) {
            Err(why) => bad_upgrade(conn, ctx, why),
            Ok(accept) => {
                let confirm = query.confirm || ctx.shared.config.confirm_receipt;
                let ws = Ws::new(Role::Prep(Prep::new(confirm)), ctx);
                ctx.shared.prep_sockets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                conn.upgrade(ws, &accept, ctx);
            }
        },
    }
}

/// Whether a cluster route's request carries `ESUB_CLUSTER_TOKEN` (when one is set).
/// Compared in constant time.
fn cluster_token_ok(ctx: &Ctx, request: &Request) -> bool {
    token_ok(ctx, request.cluster_token.as_deref())
}

fn token_ok(ctx: &Ctx, got: Option<&[u8]>) -> bool {
    let Some(want) = ctx.shared.config.cluster.token.as_deref() else { return true };
    crate::topics::auth::ct_eq(got.unwrap_or_default(), want.as_bytes())
}

/// `POST /join?nats=<url>` (API-cluster.md section 2): the cluster thread (started now on a
/// node that has none) joins that NATS, or says whether this node is in it already.
fn join<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, token_ok: bool, nats: Option<String>) {
    if !token_ok {
        return conn.respond_text(ctx, 401, "Invalid cluster token");
    }
    let scheme = |u: &str| {
        let lower = u.get(..7).map(str::to_ascii_lowercase).unwrap_or_default();
        lower == "nats://" || lower.starts_with("tls://")
    };
    let url = nats.filter(|u| scheme(u)).map(|u| crate::cluster::ServerUrl::parse(&u));
    let Some(Ok(url)) = url else {
        return conn.respond_text(ctx, 400, "Bad nats URL");
    };
    let handle = match ctx.shared.cluster_or_start() {
        Ok(h) => h,
        Err(e) => {
            crate::warn!("cluster thread not started error={e}");
            return conn.respond_text(ctx, 500, "Cluster thread not started");
        }
    };
    handle.post(ClusterMsg::Join { url, reply: ReplyTo { conn: conn.id, seq: 0 } });
    conn.state = State::AwaitCluster;
    conn.set_deadline(None, ctx);
}

/// `HEAD /sub|/psub|/rep|/rsub/K`: this node when it holds K, else the holder the cluster
/// finds (API-cluster.md section 3); a single node answers from what it holds.
fn locate<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, of: Holder, key: String, path: String) {
    let s = &ctx.shared;
    let (sub, pool) = s.registry.holders(&key);
    let here = match of {
        Holder::Sub => sub,
        Holder::Psub => pool,
        Holder::Rep => sub || pool,
        Holder::Rsub => s.stored.has(&key),
    };
    if here {
        let addr = Some(Arc::from(s.advertise.as_str()));
        return located(conn, ctx, 200, addr.as_ref(), &path);
    }
    match s.cluster() {
        None => located(conn, ctx, 404, None, &path),
        Some(c) if !c.joined() => located(conn, ctx, 503, None, &path),
        Some(c) => {
            let reply = ReplyTo { conn: conn.id, seq: 0 };
            c.post(ClusterMsg::Where { key: Arc::from(key), of, reply });
            conn.state = State::AwaitWhere { path: path.into_boxed_str() };
            conn.set_deadline(None, ctx);
        }
    }
}

/// A `HEAD`'s answer: no body; `Location` names the holder's node on a 200.
fn located<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    status: u16,
    addr: Option<&Arc<str>>,
    path: &str,
) {
    let extra = match addr.filter(|_| status == 200) {
        Some(a) => format!("Location: http://{a}{path}\r\n"),
        None => String::new(),
    };
    conn.respond(ctx, status, response::TEXT, b"", &extra);
}

/// 400 for a request that is not a valid websocket upgrade; it names the version we speak.
fn bad_upgrade<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, why: &'static str) {
    let extra = "Sec-WebSocket-Version: 13\r\n";
    conn.respond(ctx, 400, response::TEXT, why.as_bytes(), extra);
}

/// What the metrics will say of this request (`None`: not measured, like `/ping` and errors).
fn measure(route: &Result<Route, RouteError>, ctx: &Ctx) -> Option<ReqMetric> {
    let (route, key, token) = match route {
        Ok(Route::Info) => (RouteTag::Info, None, None),
        Ok(Route::Keys { .. }) => (RouteTag::Keys, None, None),
        Ok(Route::Sub { key, query }) => (RouteTag::Sub, Some(key), query.token.as_ref()),
        Ok(Route::Rep { key, query }) => (RouteTag::Rep, Some(key), query.token.as_ref()),
        Ok(Route::Psub { key, query }) => (RouteTag::Psub, Some(key), query.token.as_ref()),
        Ok(Route::Prep { .. }) => (RouteTag::Prep, None, None),
        Ok(Route::Rsub { key, query }) => (RouteTag::Rsub, Some(key), query.token.as_ref()),
        _ => return None,
    };
    // The key is copied only when key tags are on.
    let key = key.filter(|_| ctx.metrics.tag_keys).map(|k| Arc::from(k.as_str()));
    Some(ReqMetric { route, key, topic: None, auth: token.is_some(), confirmed: false })
}

fn sub<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, key: String, token: Option<&str>) {
    if ctx.draining {
        // Parking now would only wait for the drain deadline: answer as parked subs are.
        conn.persist = Persist::Close;
        return conn.respond_text(ctx, 503, "Shutting down");
    }
    let key: Arc<str> = Arc::from(key);
    // Cluster mode: a key with no sub here may have one on another node, which must give it up
    // (or refuse) first; unless a sub waits here or this node still holds the key's subjects
    // (no other node took it since), which the registry decides with the park, under one lock.
    // NATS down: the sub parks here.
    if let Some(cluster) = ctx.shared.cluster().filter(|c| c.joined()) {
        if let Some(park) = ctx.shared.registry.park_held(&key, conn.id, token) {
            return parked(conn, ctx, key, token, park);
        }
        let token: Option<Arc<str>> = token.map(Arc::from);
        cluster.post(ClusterMsg::Claim { key: key.clone(), token: token.clone(), conn: conn.id });
        conn.state = State::AwaitClaim { key, token };
        conn.set_deadline(None, ctx);
        return;
    }
    park_here(conn, ctx, key, token);
}

/// Parks a sub in this node's registry (API.md section 2: 403, takeover or a new key).
fn park_here<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, key: Arc<str>, token: Option<&str>) {
    let park = ctx.shared.registry.park(&key, conn.id, token);
    parked(conn, ctx, key, token, park);
}

/// A sub after the registry's verdict: 403, or parked (taking another sub's place).
fn parked<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    key: Arc<str>,
    token: Option<&str>,
    park: Park,
) {
    match park {
        Park::Forbidden => conn.respond_text(ctx, 403, "Key is used and token does not match."),
        Park::Displaced(old) => {
            ctx.post(Msg::TakenOver { to: old });
            conn.park(key, token.is_some(), ctx);
        }
        Park::Parked => conn.park(key, token.is_some(), ctx),
    }
}

/// The cluster's verdict on a sub's claim of its key.
fn claimed<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, outcome: ClaimOutcome) {
    let State::AwaitClaim { key, token } = &conn.state else { return };
    let (key, token) = (key.clone(), token.clone());
    match outcome {
        ClaimOutcome::Forbidden => {
            conn.respond_text(ctx, 403, "Key is used and token does not match.")
        }
        ClaimOutcome::Timeout => conn.respond_text(ctx, 504, "Cluster timeout"),
        // A client gone meanwhile parks nothing.
        ClaimOutcome::Free if conn.peer_closed() => conn.state = State::Closing,
        ClaimOutcome::Free => park_here(conn, ctx, key, token.as_deref()),
    }
}

fn rep<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    key: &str,
    token: Option<&str>,
    pool_only: bool,
    body: Vec<u8>,
) {
    let claim = ctx.shared.registry.claim(key, token, pool_only);
    if claim == Claim::InvalidToken {
        return conn.respond_text(ctx, 403, "Invalid token");
    }
    let body = Arc::new(body);
    // With a store, the rep keeps what it may have to store once its outcome is known.
    let keep = (ctx.shared.store.is_some()).then(|| {
        Box::new(Keep { key: Arc::from(key), token: token.map(Arc::from), body: body.clone() })
    });
    let (to, pool) = match claim {
        Claim::Sub(to) => (to, None),
        Claim::Member(to, pool) => (to, Some(pool)),
        _ => match ctx.shared.cluster() {
            // No holder here: ask the cluster (API-cluster.md section 3).
            Some(cluster) if cluster.joined() => {
                let reply = ReplyTo { conn: conn.id, seq: 0 };
                let (key, token) = (Arc::from(key), token.map(Arc::from));
                cluster.post(ClusterMsg::Forward { key, token, psub: pool_only, body, reply });
                conn.state = State::AwaitRep(keep);
                conn.set_deadline(None, ctx);
                return;
            }
            Some(_) => return conn.respond_text(ctx, 503, "Cluster unavailable"),
            None => return stored_or(conn, ctx, keep, 404, "Unknown key"),
        },
    };
    conn.state = State::AwaitRep(keep);
    conn.set_deadline(None, ctx);
    let reply = Some(ReplyTo { conn: conn.id, seq: 0 });
    ctx.post(Msg::Deliver { to, reply, body, pool, attempts: 0, arrived: ctx.now, prep: false });
}

/// Answers a rep `status`/`text`, after storing it when the store mode says so: every rep
/// with `all`, the undelivered ones (404) with `undelivered`.
fn stored_or<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    keep: Option<Box<Keep>>,
    status: u16,
    text: &'static str,
) {
    let wanted = match ctx.shared.config.store {
        // 403, 413, 503 and 504 from the cluster are never stored.
        StoreMode::All => matches!(status, 200 | 404),
        StoreMode::Undelivered => status == 404,
        StoreMode::Off => false,
    };
    let (Some(keep), Some(store), true) = (keep, &ctx.shared.store, wanted) else {
        return conn.respond_text(ctx, status, text);
    };
    let reply = ReplyTo { conn: conn.id, seq: 0 };
    let req = Req::Append { key: keep.key, token: keep.token, body: keep.body, reply };
    if store.send(req).is_err() {
        return conn.respond_text(ctx, 500, "Store unavailable");
    }
    conn.state = State::AwaitStore { status, text };
}

fn rsub<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, key: String, token: Option<String>) {
    let reply = ReplyTo { conn: conn.id, seq: 0 };
    // Cluster mode: nothing stored here, so ask a node that has some (API-cluster.md section 3).
    if let Some(cluster) = ctx.shared.cluster()
        && !ctx.shared.stored.has(&key)
    {
        if !cluster.joined() {
            return conn.respond_text(ctx, 503, "Cluster unavailable");
        }
        let (key, token) = (Arc::from(key), token.map(Arc::from));
        cluster.post(ClusterMsg::Rsub { key, token, reply });
        conn.state = State::AwaitTake;
        conn.set_deadline(None, ctx);
        return;
    }
    let Some(store) = &ctx.shared.store else {
        return conn.respond_text(ctx, 404, "Nothing stored");
    };
    if store.send(Req::Take { key, token, reply }).is_err() {
        return conn.respond_text(ctx, 500, "Store unavailable");
    }
    conn.state = State::AwaitTake;
    conn.set_deadline(None, ctx);
}

fn psub<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    key: String,
    token: Option<&str>,
    shared: bool,
    replay: bool,
    accept: &str,
) {
    if ctx.draining {
        conn.persist = Persist::Close;
        return conn.respond_text(ctx, 503, "Shutting down");
    }
    let key: Arc<str> = Arc::from(key);
    match ctx.shared.registry.join(&key, conn.id, token, shared) {
        Join::Forbidden => conn.respond_text(ctx, 403, "Key is used and token does not match."),
        Join::Joined(displaced) => {
            for to in displaced {
                ctx.post(Msg::TakenOver { to });
            }
            let replay = replay && ctx.shared.store.is_some();
            let receipt = ctx.shared.config.confirm_receipt;
            let member = Member::new(key, token, shared, receipt, replay);
            let pool = member.pool.clone();
            let ws = Ws::new(Role::Psub(member), ctx);
            conn.upgrade(ws, accept, ctx);
            if replay {
                crate::ws::replay::request(&pool, conn.id, ctx);
            }
        }
    }
}

/// A message for a connection of this worker. `conn` is `None` when the slot is empty or now
/// holds another connection (the message's generation did not match).
pub fn on_message<S: Stream>(conn: Option<&mut Conn<S>>, ctx: &mut Ctx, msg: Msg) {
    match msg {
        Msg::Deliver { reply, body, pool, attempts, arrived, prep, .. } => {
            let d = Delivery { reply, body, attempts, arrived, prep };
            let result = match conn {
                Some(conn) => conn.deliver(d, ctx),
                None => Err(d),
            };
            if let Err(d) = result {
                undeliverable(d, pool.as_ref(), ctx);
            }
        }
        Msg::Topic { ev, .. } => {
            if let Some(conn) = conn {
                conn.topic_event(ctx, ev);
            }
        }
        Msg::Delivered { reply, confirmed } => {
            if let Some(conn) = conn {
                if let Some(m) = &mut conn.req {
                    m.confirmed = confirmed;
                }
                answer(Some(conn), ctx, reply, 200, "OK", "ok");
            }
        }
        Msg::Failed { reply, why, .. } => answer(conn, ctx, reply, 404, why.text(), why.text()),
        Msg::Answer { reply, status, text } => {
            let frame = if status == 200 { "ok" } else { text };
            answer(conn, ctx, reply, status, text, frame)
        }
        Msg::Json { status, body, .. } => {
            let Some(conn) = conn else { return };
            if matches!(conn.state, State::AwaitCluster) {
                conn.respond(ctx, status, response::JSON, &body, "");
            }
        }
        Msg::Located { status, addr, .. } => {
            let Some(conn) = conn else { return };
            let State::AwaitWhere { path } = &mut conn.state else { return };
            let path = std::mem::take(path);
            located(conn, ctx, status, addr.as_ref(), &path);
        }
        Msg::Claimed { outcome, .. } => {
            if let Some(conn) = conn {
                claimed(conn, ctx, outcome);
            }
        }
        Msg::Stored { result, .. } => {
            let Some(conn) = conn else { return };
            let State::AwaitStore { status, text } = conn.state else { return };
            match result {
                Ok(()) => conn.respond(
                    ctx,
                    status,
                    response::TEXT,
                    text.as_bytes(),
                    "X-Esub-Stored: true\r\n",
                ),
                Err(StoreFail::Full) => conn.respond_text(ctx, 507, "Insufficient Storage"),
                Err(StoreFail::Io) => conn.respond_text(ctx, 500, "Store error"),
            }
        }
        Msg::Taken { reply, taken } => {
            // A replaying psub member takes it, or a /rsub waiting for it; nobody else.
            let (conn, taken) = match conn {
                Some(c) if matches!(c.state, State::Ws(_)) => match c.replay_taken(taken, ctx) {
                    Ok(()) => return,
                    Err(t) => (None, t),
                },
                Some(c) if matches!(c.state, State::AwaitTake) => (Some(c), taken),
                _ => (None, taken),
            };
            match (conn, taken) {
                (Some(conn), Taken::Got { key, id, body, remaining }) => {
                    conn.replay(key, id, body, remaining, ctx)
                }
                (Some(conn), Taken::Remote { key, token, body, remaining }) => {
                    conn.replay_remote(Keep { key, token, body: Arc::new(body) }, remaining, ctx)
                }
                // Another node gave its body up for a client that is gone: it is stored here.
                (None, Taken::Remote { key, token, body, .. }) => {
                    store_back(ctx, reply, Keep { key, token, body: Arc::new(body) })
                }
                // Nobody to write it to: the record stays for the next replay.
                (None, Taken::Got { key, id, .. }) => {
                    if let Some(store) = &ctx.shared.store {
                        let _ = store.send(Req::Done { key, id, delivered: false });
                    }
                }
                (Some(conn), Taken::Nothing) => conn.respond_text(ctx, 404, "Nothing stored"),
                (Some(conn), Taken::InvalidToken) => conn.respond_text(ctx, 403, "Invalid token"),
                (Some(conn), Taken::Failed) => conn.respond_text(ctx, 500, "Store error"),
                (None, _) => {}
            }
        }
        Msg::TakenOver { .. } => {
            if let Some(conn) = conn {
                conn.taken_over(ctx);
            }
        }
        Msg::Announce { .. } => {
            if let Some(conn) = conn {
                conn.announce_wake(ctx);
            }
        }
        Msg::Drain => {}
    }
}

/// Gives a rep its outcome: an HTTP status to a rep connection, a text frame to a prep socket.
fn answer<S: Stream>(
    conn: Option<&mut Conn<S>>,
    ctx: &mut Ctx,
    reply: ReplyTo,
    status: u16,
    text: &'static str,
    frame: &'static str,
) {
    let Some(conn) = conn else { return };
    match &mut conn.state {
        State::AwaitRep(keep) => {
            let keep = keep.take();
            stored_or(conn, ctx, keep, status, text);
        }
        State::Ws(_) => conn.prep_answer(reply.seq, frame),
        // A forwarded `/rsub` that got no body, or a `/join` refused.
        State::AwaitTake | State::AwaitCluster => conn.respond_text(ctx, status, text),
        _ => {}
    }
}

/// Stores a body another node gave up for a `/rsub` whose client is gone (its store answer
/// goes to a connection that no longer exists, and is dropped).
pub fn store_back(ctx: &Ctx, reply: ReplyTo, keep: Keep) {
    let Some(store) = &ctx.shared.store else {
        return crate::warn!("rsub body lost: its client went and ESUB_STORE is off");
    };
    let req = Req::Append { key: keep.key, token: keep.token, body: keep.body, reply };
    if store.send(req).is_err() {
        crate::warn!("rsub body lost: the store is closed");
    }
}

/// Shutdown for one connection.
pub fn on_drain<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx) {
    if matches!(conn.state, State::Parked { .. }) {
        conn.persist = Persist::Close;
    }
    conn.topic_drain(ctx);
    conn.announce_drain(ctx);
    conn.drain(ctx);
}
