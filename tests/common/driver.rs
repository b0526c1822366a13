//! Our NATS client (`esub::cluster::Client`) in a poll of its own, driven by the test thread:
//! the NATS client tests (`nats_client.rs`, `nats_tls.rs`) turn a few of them until a condition
//! holds and then look at what each one reported. Also their payloads and the send-bound check
//! they share.

use std::time::{Duration, Instant};

use esub::cluster::{
    Client, Event, Message, Options, PubError, RequestError, RequestToken, ServerUrl, Sid,
};
use mio::{Events, Poll, Token};

use super::POLL_DEADLINE;

/// A client in a poll of its own; every event it reported is kept in `seen`.
pub struct Driver {
    poll: Poll,
    events: Events,
    pub client: Client,
    /// Everything the client reported, in order.
    pub seen: Vec<Event>,
}

impl Driver {
    /// A client for the one server at `url` (not connected yet: it connects as it is turned).
    pub fn new(url: &str, opts: Options) -> Driver {
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let client = Client::new(vec![ServerUrl::parse(url).unwrap()], opts, registry, Token(0));
        Driver { poll, events: Events::with_capacity(64), client, seen: Vec::new() }
    }

    /// A client for `url` that has seen `Connected`.
    pub fn connected(url: &str, opts: Options) -> Driver {
        let mut d = Driver::new(url, opts);
        wait(&mut [&mut d], "Connected", |d| {
            d[0].count(|e| matches!(e, Event::Connected { .. })) == 1
        });
        d
    }

    /// One poll turn of at most 2 ms.
    pub fn turn(&mut self) {
        let now = Instant::now();
        let wait = self.client.next_deadline().map_or(Duration::from_millis(2), |d| {
            d.saturating_duration_since(now).min(Duration::from_millis(2))
        });
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        let now = Instant::now();
        for ev in self.events.iter() {
            if ev.is_readable() {
                self.seen.extend(self.client.on_readable(now));
            }
            if ev.is_writable() {
                self.seen.extend(self.client.on_writable(now));
            }
        }
        self.seen.extend(self.client.on_timer(now));
    }

    /// How many events so far satisfy `f`.
    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.seen.iter().filter(|e| f(e)).count()
    }

    /// The messages delivered so far on subscription `sid`, in order.
    pub fn msgs(&self, sid: Sid) -> Vec<&Message> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Msg(m) if m.sid == sid => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The outcome of request `token`, once it has one.
    pub fn reply(&self, token: RequestToken) -> Option<&Result<Message, RequestError>> {
        self.seen.iter().find_map(|e| match e {
            Event::Reply { token: t, result } if *t == token => Some(result),
            _ => None,
        })
    }

    /// The reasons of the failed attempts so far, as text.
    pub fn failures(&self) -> Vec<String> {
        let failure = |e: &Event| match e {
            Event::ConnectFailed { reason, .. } => Some(reason.to_string()),
            _ => None,
        };
        self.seen.iter().filter_map(failure).collect()
    }
}

/// Turns every driver until `done` holds, or fails after `POLL_DEADLINE`.
pub fn wait(
    drivers: &mut [&mut Driver],
    what: &str,
    mut done: impl FnMut(&mut [&mut Driver]) -> bool,
) {
    let end = Instant::now() + POLL_DEADLINE;
    while !done(drivers) {
        if Instant::now() >= end {
            let seen: Vec<_> = drivers.iter().map(|d| &d.seen).collect();
            panic!("no {what} within {POLL_DEADLINE:?}; events: {seen:?}");
        }
        for d in drivers.iter_mut() {
            d.turn();
        }
    }
}

/// Every byte value, repeated to `len` bytes.
pub fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

/// Publishes 4 KiB bodies on `subject` from `p` (made with a 64 KiB `max_outgoing` and not
/// turned meanwhile) until its send queue refuses one with `Full`: 15 fit. Returns the body and
/// how many were queued.
pub fn fill_send_queue(p: &mut Driver, subject: &str) -> (Vec<u8>, usize) {
    let body = binary(4096);
    let mut queued = 0;
    let refused = loop {
        match p.client.publish(subject, None, None, &body) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused, PubError::Full);
    assert_eq!(queued, 15, "4 KiB bodies in 64 KiB");
    assert!(p.client.outgoing() <= 64 * 1024);
    (body, queued)
}

/// After `fill_send_queue`: turns `p` until its send queue is empty, publishes `last` on
/// `subject`, and checks that `sub` (subscribed to it as `sid`) gets the `queued` bodies and
/// then `last`, in order.
pub fn drain_send_queue(
    p: &mut Driver,
    sub: &mut Driver,
    sid: Sid,
    subject: &str,
    body: &[u8],
    queued: usize,
) {
    wait(&mut [p], "the queue to drain", |n| n[0].client.outgoing() == 0);
    p.client.publish(subject, None, None, b"last").unwrap();
    wait(&mut [p, sub], "all messages", |n| n[1].msgs(sid).len() == queued + 1);
    let got = sub.msgs(sid);
    assert!(got[..queued].iter().all(|m| m.payload == body));
    assert_eq!(got[queued].payload, b"last");
}
