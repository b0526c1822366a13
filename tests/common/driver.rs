//! Our NATS client (`esub::cluster::Client`) in a poll of its own, driven by the test thread:
//! the NATS client tests (`nats_client.rs`, `nats_tls.rs`) turn a few of them until a condition
//! holds and then look at what each one reported.

use std::time::{Duration, Instant};

use esub::cluster::{Client, Event, Message, Options, RequestError, RequestToken, ServerUrl, Sid};
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
