//! Phase 1: what each route does. Sub parks (or is refused, or takes over), rep claims the sub
//! and hands the body to the sub's worker; `ping`, `info` and `keys` answer at once.

use std::sync::Arc;

use crate::conn::{Conn, State, Stream};
use crate::http::response;
use crate::registry::{Claim, Park};
use crate::router::{Route, RouteError};
use crate::server::Ctx;
use crate::server::mailbox::Msg;

/// Answers one complete request (head routed, body read).
pub fn dispatch<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    route: Result<Route, RouteError>,
    body: Vec<u8>,
) {
    match route {
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
        Ok(Route::Keys) => {
            let keys = ctx.shared.registry.keys();
            if keys.is_empty() {
                conn.respond(ctx, 204, response::JSON, b"", "");
            } else {
                let json = serde_json::to_vec(&keys).unwrap_or_default();
                conn.respond(ctx, 200, response::JSON, &json, "");
            }
        }
        Ok(Route::Sub { key, query }) => sub(conn, ctx, key, query.token),
        Ok(Route::Rep { key, query }) => {
            rep(conn, ctx, &key, query.token.as_deref(), query.psub, body)
        }
    }
}

fn sub<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx, key: String, token: Option<String>) {
    let key: Arc<str> = Arc::from(key);
    match ctx.shared.registry.park(&key, conn.id, token.as_deref()) {
        Park::Forbidden => conn.respond_text(ctx, 403, "Key is used and token does not match."),
        Park::Displaced(old) => {
            ctx.post(Msg::TakenOver { sub: old });
            conn.park(key, ctx);
        }
        Park::Parked => conn.park(key, ctx),
    }
}

fn rep<S: Stream>(
    conn: &mut Conn<S>,
    ctx: &mut Ctx,
    key: &str,
    token: Option<&str>,
    psub_only: bool,
    body: Vec<u8>,
) {
    // Psub pools come with phase 1.5; until then `psub=1` finds nothing.
    let claim = if psub_only {
        Claim::Unknown
    } else {
        ctx.shared.registry.claim(key, token)
    };
    match claim {
        Claim::Unknown => conn.respond_text(ctx, 404, "Unknown key"),
        Claim::InvalidToken => conn.respond_text(ctx, 403, "Invalid token"),
        Claim::Sub(sub) => {
            conn.state = State::AwaitRep;
            conn.set_deadline(None, ctx);
            ctx.post(Msg::Deliver {
                sub,
                rep: conn.id,
                body: Arc::new(body),
                arrived: ctx.now,
            });
        }
    }
}

/// A message for a connection of this worker. `conn` is `None` when the slot is empty or now
/// holds another connection (the message's generation did not match).
pub fn on_message<S: Stream>(conn: Option<&mut Conn<S>>, ctx: &mut Ctx, msg: Msg) {
    match msg {
        Msg::Deliver { sub, rep, body, .. } => {
            let result = match conn {
                Some(conn) => conn.deliver(rep, body, ctx),
                None => Err(body),
            };
            if let Err(body) = result {
                ctx.post(Msg::Gone { rep, body });
            }
            let _ = sub;
        }
        Msg::Delivered { .. } => {
            if let Some(conn) = conn.filter(|c| matches!(c.state, State::AwaitRep)) {
                conn.respond_text(ctx, 200, "OK");
            }
        }
        Msg::Gone { .. } => {
            if let Some(conn) = conn.filter(|c| matches!(c.state, State::AwaitRep)) {
                conn.respond_text(ctx, 404, "Unknown key");
            }
        }
        Msg::TakenOver { .. } => {
            if let Some(conn) = conn.filter(|c| matches!(c.state, State::Parked { .. })) {
                conn.respond_text(ctx, 409, "Sub taken over");
            }
        }
        Msg::Drain => {}
    }
}

/// Shutdown: a parked sub gets 503 and its connection closes.
pub fn on_drain<S: Stream>(conn: &mut Conn<S>, ctx: &mut Ctx) {
    if let State::Parked { key } = &conn.state {
        ctx.shared.registry.unpark(key, conn.id);
        conn.persist = response::Persist::Close;
        conn.respond_text(ctx, 503, "Shutting down");
    }
}
