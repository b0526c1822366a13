//! Reading one request: the head (parsed, routed, its keep-alive and framing settled) and the
//! body (straight into its final buffer, or through the chunked decoder), then dispatch.

use crate::conn::{BodyRead, Conn, Request, State, Stream};
use crate::http::request::{ChunkedDecoder, Framing, HttpError, parse_head};
use crate::http::response::Persist;
use crate::relay;
use crate::router;
use crate::server::Ctx;

impl<S: Stream> Conn<S> {
    /// Parses and starts one request from the buffer; `true` when one was taken.
    pub(super) fn parse(&mut self, ctx: &mut Ctx) -> bool {
        let config = &ctx.shared.config;
        let (max_head, max_body) = (config.max_header_bytes, config.max_body_bytes);
        let close_all = config.close_connections;
        let head = match parse_head(self.rx.filled(), max_head, max_body) {
            Ok(None) => return false,
            Ok(Some(head)) => head,
            Err(e) => {
                self.reject(e, ctx);
                return true;
            }
        };
        let route = router::route(head.method, head.target);
        let (framing, expect, head_len) = (head.framing, head.expect_continue, head.len);
        self.persist = if !head.keep_alive || close_all || ctx.draining {
            Persist::Close
        } else if head.minor == 0 {
            Persist::KeepAlive10
        } else {
            Persist::KeepAlive
        };
        // The path only: the query may carry a token, and tokens are never logged.
        if crate::log::level() >= 1 {
            let path = head.target.split(|&b| b == b'?').next().unwrap_or_default();
            let path = String::from_utf8_lossy(path);
            crate::debug!(
                "request conn={} method={} path={path} framing={framing:?}",
                self.id.token,
                head.method
            );
        }
        let topic = head.topic;
        self.v1 = topic.is_some();
        self.head_only = head.method == "HEAD";
        self.topic_checked = false;
        let request =
            Request { route, upgrade: head.upgrade, topic, cluster_token: head.cluster_token };
        self.rx.consume(head_len);
        self.started = ctx.now;
        if let (Ok(router::Route::Topic { method, target }), Some(h), false) =
            (&request.route, request.topic.as_deref(), framing == Framing::None)
        {
            // Head-only checks run before the body is read (and before any 100 Continue).
            if self.topic_precheck(ctx, method, target, h) {
                return true;
            }
            if h.length.is_some_and(|n| n > max_body) {
                self.persist = Persist::Close;
                self.topic_error(ctx, 413, "too big message");
                return true;
            }
        }

        if expect && request.route.is_err() {
            // Refuse before the client sends a body nobody will read.
            self.persist = Persist::Close;
            relay::dispatch(self, ctx, request, Vec::new());
            return true;
        }
        let read = match framing {
            Framing::None => {
                relay::dispatch(self, ctx, request, Vec::new());
                return true;
            }
            Framing::Length(n) => {
                // The one copy a body takes in user space is of the bytes that came with its
                // head; the rest is read from the socket straight into its final place.
                let mut body = vec![0; n];
                let take = n.min(self.rx.len());
                body[..take].copy_from_slice(&self.rx.filled()[..take]);
                self.rx.consume(take);
                BodyRead::Length { body, filled: take }
            }
            Framing::Chunked => BodyRead::Chunked {
                body: Vec::new(),
                decoder: ChunkedDecoder::new(max_body, max_head),
            },
        };
        let started = !self.rx.is_empty() || matches!(read, BodyRead::Length { filled: 1.., .. });
        if expect && !started {
            self.out.with_bytes(|v| v.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        self.state = State::Body(request, read);
        let at = ctx.now + ctx.shared.config.header_timeout;
        self.set_deadline(Some(at), ctx);
        self.feed_body(ctx);
        true
    }

    /// Moves buffered bytes into the body being read; dispatches it when complete.
    pub(super) fn feed_body(&mut self, ctx: &mut Ctx) -> bool {
        let State::Body(_, read) = &mut self.state else {
            return false;
        };
        let outcome = match read {
            BodyRead::Length { body, filled } if *filled < body.len() => return false,
            BodyRead::Length { .. } => Ok(true),
            BodyRead::Chunked { .. } if self.rx.is_empty() => return false,
            BodyRead::Chunked { body, decoder } => match decoder.decode(self.rx.filled(), body) {
                Ok((0, false)) => return false,
                Ok((used, done)) => {
                    self.rx.consume(used);
                    Ok(done)
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Err(e) => self.reject(e, ctx),
            Ok(false) => {}
            Ok(true) => {
                let State::Body(request, read) = std::mem::replace(&mut self.state, State::Head)
                else {
                    unreachable!("matched above")
                };
                let (BodyRead::Length { body, .. } | BodyRead::Chunked { body, .. }) = read;
                relay::dispatch(self, ctx, request, body);
            }
        }
        true
    }

    /// Answers a framing error and closes: after one, the stream cannot be trusted.
    fn reject(&mut self, e: HttpError, ctx: &mut Ctx) {
        crate::debug!("bad request conn={} status={}", self.id.token, e.status());
        self.persist = Persist::Close;
        if self.v1 && matches!(self.state, State::Body(..)) {
            let text = if e.status() == 413 { "too big message" } else { e.text() };
            self.state = State::Head;
            return self.topic_error(ctx, e.status(), text);
        }
        self.respond_text(ctx, e.status(), e.text());
    }
}
