//! Phase 4 on the cluster thread (`API-cluster.md` section 3): a key's subjects follow its
//! waiting sub (kept 500 ms after it goes, answering misses); reps and claims for keys held
//! here are answered through the workers; reps and claims from here go out as NATS requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Client, Message, Payload, PubError, RequestError, RequestToken, Sid};
use super::handle::CLUSTER_WORKER;
use super::headers::Headers;
use super::subject::{self, KeySubject, Subjects};
use crate::conn::buffer::Body;
use crate::registry::{Claim, POOL_SUBJECT, SUB_SUBJECTS, TakeOver};
use crate::router::Holder;
use crate::server::Shared;
use crate::server::mailbox::{ClaimOutcome, ConnId, Msg, ReplyTo};

/// How long a key's subjects outlive its sub at least: NATS drops a message that crossed a
/// route just as its subscriber left, without "no responders"; a lingering subscription
/// answers a miss. A sweep every `LINGER` lets subjects without holders go after one to two
/// of these (the departure of a holder costs no message to this thread: a sub that re-parks
/// at once, the common case, finds its subjects in place).
const LINGER: Duration = Duration::from_millis(500);

/// When a claimed key is verified a second time (see `Routing::reverify`): interest crosses a
/// NATS route in well under a millisecond on a LAN; 100 ms leaves room for a loaded server.
const REVERIFY: Duration = Duration::from_millis(100);

/// The `stored` subject in a sweep's bits (the store, not the registry, says when it is wanted).
const STORED: u8 = 4;

/// One of a key's subscriptions on this node.
struct Held {
    sid: Sid,
    /// A sweep found it without a holder at this time (`None`: held, or not swept yet).
    linger: Option<Instant>,
}

/// A key's subscriptions on this node: `rr` and `claim` follow its waiting sub, `pool` its
/// psub pool, `stored` its stored reps.
#[derive(Default)]
struct KeySubs {
    rr: Option<Held>,
    claim: Option<Held>,
    pool: Option<Held>,
    stored: Option<Held>,
}

impl KeySubs {
    fn slot(&mut self, which: KeySubject) -> &mut Option<Held> {
        match which {
            KeySubject::Rr => &mut self.rr,
            KeySubject::Claim => &mut self.claim,
            KeySubject::Pool => &mut self.pool,
            KeySubject::Stored => &mut self.stored,
        }
    }

    fn is_empty(&self) -> bool {
        self.rr.is_none() && self.claim.is_none() && self.pool.is_none() && self.stored.is_none()
    }

    /// The registry's view of these subscriptions (`rr` and `claim` go together).
    fn registry_bits(&self) -> u8 {
        let sub = if self.rr.is_some() && self.claim.is_some() { SUB_SUBJECTS } else { 0 };
        sub | if self.pool.is_some() { POOL_SUBJECT } else { 0 }
    }
}

/// A rep asked over NATS, waiting for the holder's answer.
pub(super) struct Forward {
    pub key: Arc<str>,
    pub token: Option<Arc<str>>,
    /// Asking the pool subject (after no responders on the sub's, or with `psub=1`).
    pub pool: bool,
    pub body: Body,
    pub reply: ReplyTo,
}

/// A `HEAD` asked over NATS: which node holds `key` as `of` says.
struct Where {
    key: Arc<str>,
    of: Holder,
    /// The pool subject is being asked (a rep's second question).
    pool: bool,
    reply: ReplyTo,
}

/// A `/rsub` asked over NATS, waiting for a body.
struct RsubAsk {
    key: Arc<str>,
    token: Option<Arc<str>>,
    reply: ReplyTo,
}

/// A `/keys` scatter: the answers so far, by node; done when every expected node answered, or
/// at `deadline` (the silent ones are `null`).
struct Scatter {
    reply: ReplyTo,
    expected: Vec<String>,
    got: BTreeMap<String, Option<Vec<String>>>,
    deadline: Instant,
}

/// Keys one node lists in its answer to a scatter: an answer must fit NATS's `max_payload`.
const MAX_SCATTER_KEYS: usize = 100_000;

pub(super) struct Routing {
    subjects: Subjects,
    from: String,
    timeout: Duration,
    keys: HashMap<Arc<str>, KeySubs>,
    next_sweep: Instant,
    forwards: HashMap<RequestToken, Forward>,
    claims: HashMap<RequestToken, (ConnId, Arc<str>)>,
    /// Keys whose sub parked here after a claim over NATS, until their subjects are in place
    /// and a `verify` has asked the other nodes whether one of them parked a sub for the key at
    /// the same moment (each claim then found the key free): the node whose encoded name sorts
    /// first keeps it, the other's sub gets 409.
    unverified: HashMap<Arc<str>, Instant>,
    verifies: HashMap<RequestToken, Arc<str>>,
    /// Verifies to send again: interest crosses NATS routes a moment after it is in place on
    /// our server, so an immediate verify can miss a sub parked on a node behind a route.
    reverify: VecDeque<(Instant, Arc<str>)>,
    wheres: HashMap<RequestToken, Where>,
    rsubs: HashMap<RequestToken, RsubAsk>,
    /// Reply subjects of `/rsub`s other nodes forwarded here, by store request id.
    takes: HashMap<usize, String>,
    scatters: BTreeMap<u64, Scatter>,
    next_scatter: u64,
    /// Reply subjects of reps delivered here for other nodes, by delivery id.
    deliveries: HashMap<usize, String>,
    next_delivery: usize,
}

impl Routing {
    pub fn new(subjects: Subjects, node: &str, timeout: Duration) -> Routing {
        Routing {
            subjects,
            from: subject::encode(node),
            timeout,
            keys: HashMap::new(),
            next_sweep: Instant::now() + LINGER,
            forwards: HashMap::new(),
            claims: HashMap::new(),
            unverified: HashMap::new(),
            verifies: HashMap::new(),
            reverify: VecDeque::new(),
            wheres: HashMap::new(),
            rsubs: HashMap::new(),
            takes: HashMap::new(),
            scatters: BTreeMap::new(),
            next_scatter: 0,
            deliveries: HashMap::new(),
            next_delivery: 0,
        }
    }

    /// `key`'s holders need subjects this node does not hold (a sub or pool arrived), or its
    /// stored reps came or went: subscribe what is wanted now; what is not goes at a sweep.
    pub fn key_changed(&mut self, c: &mut Client, s: &Shared, key: Arc<str>) {
        let (sub, pool) = s.registry.holders(&key);
        let stored = s.stored.has(&key);
        if !sub && !pool && !stored && !self.keys.contains_key(&key) {
            return;
        }
        let wanted = [
            (KeySubject::Rr, sub),
            (KeySubject::Claim, sub),
            (KeySubject::Pool, pool),
            (KeySubject::Stored, stored),
        ];
        let subs = self.keys.entry(key.clone()).or_default();
        for (which, want) in wanted {
            match (want, subs.slot(which)) {
                (true, Some(h)) => h.linger = None,
                (true, slot @ None) => {
                    let queue = match which {
                        KeySubject::Rr => Some("sub"),
                        KeySubject::Claim => None,
                        KeySubject::Pool => Some("pool"),
                        KeySubject::Stored => Some("stored"),
                    };
                    match c.subscribe(&self.subjects.key(&key, which), queue) {
                        Ok(sid) => *slot = Some(Held { sid, linger: None }),
                        Err(e) => crate::warn!("cluster subscribe refused error={e:?}"),
                    }
                }
                _ => {}
            }
        }
        let claim_held = subs.claim.is_some();
        s.registry.add_subscribed(&key, subs.registry_bits());
        if subs.is_empty() {
            self.keys.remove(&key);
        }
        // The claim subject is in place (NATS handles our SUB before this request): now any
        // other node's claim of the key reaches us, and ours reaches any sub it parked.
        if sub && claim_held && self.unverified.remove(&key).is_some() {
            self.verify(c, key.clone());
            self.reverify.push_back((Instant::now() + REVERIFY, key));
        }
    }

    /// Asks the other nodes whether one holds `key` too (see `unverified`).
    fn verify(&mut self, c: &mut Client, key: Arc<str>) {
        let subject = self.subjects.key(&key, KeySubject::Claim);
        let h = self.headers("verify", None, false);
        if let Ok(t) = c.request(&subject, Some(&h), Payload::Bytes(b""), self.timeout) {
            self.verifies.insert(t, key);
        }
    }

    /// The second verifies that are due, for subs still parked here.
    fn reverify_due(&mut self, c: &mut Client, s: &Shared, now: Instant) {
        while self.reverify.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, key)) = self.reverify.pop_front() else { break };
            let held = self.keys.get(&key).is_some_and(|k| k.claim.is_some());
            if held && s.registry.has_sub(&key) {
                self.verify(c, key);
            }
        }
    }

    /// Every `LINGER`: subjects found without a holder at the last sweep too go now (for the
    /// registry's subjects, only if no holder came meanwhile, decided under its lock).
    fn sweep(&mut self, c: &mut Client, s: &Shared, now: Instant) {
        // A claim whose sub never parked (its client went) leaves an entry: forget it.
        self.unverified.retain(|_, at| now.duration_since(*at) < self.timeout + LINGER);
        let keys: Vec<Arc<str>> = self.keys.keys().cloned().collect();
        for key in keys {
            let (sub, pool) = s.registry.holders(&key);
            let stored = s.stored.has(&key);
            let Some(subs) = self.keys.get_mut(&key) else { continue };
            let mut expired = 0u8;
            for (which, want, bit) in [
                (KeySubject::Rr, sub, SUB_SUBJECTS),
                (KeySubject::Claim, sub, SUB_SUBJECTS),
                (KeySubject::Pool, pool, POOL_SUBJECT),
                (KeySubject::Stored, stored, STORED),
            ] {
                let Some(h) = subs.slot(which) else { continue };
                match (want, h.linger) {
                    (true, _) => h.linger = None,
                    (false, None) => h.linger = Some(now),
                    (false, Some(since)) if now.duration_since(since) >= LINGER => expired |= bit,
                    (false, Some(_)) => {}
                }
            }
            let registry_bits = expired & (SUB_SUBJECTS | POOL_SUBJECT);
            let released = match registry_bits {
                0 => 0,
                bits => s.registry.release_subscribed(&key, bits, false),
            } | (expired & STORED);
            for (which, bit) in [
                (KeySubject::Rr, SUB_SUBJECTS),
                (KeySubject::Claim, SUB_SUBJECTS),
                (KeySubject::Pool, POOL_SUBJECT),
                (KeySubject::Stored, STORED),
            ] {
                let slot = subs.slot(which);
                if released & bit != 0 {
                    if let Some(h) = slot.take() {
                        c.unsubscribe(h.sid);
                    }
                } else if expired & bit != 0
                    && let Some(h) = slot
                {
                    // A holder came back between the look and the registry's lock.
                    h.linger = None;
                }
            }
            if subs.is_empty() {
                self.keys.remove(&key);
            }
        }
    }

    /// The node leaves the cluster: the registry forgets which subjects were held.
    pub fn forget_all(&mut self, s: &Shared) {
        for key in self.keys.keys() {
            s.registry.release_subscribed(key, SUB_SUBJECTS | POOL_SUBJECT, true);
        }
        self.keys.clear();
    }

    /// Sweeps when due; answers the scatters that are late.
    pub fn expire(&mut self, c: &mut Client, s: &Shared, now: Instant) {
        self.expire_scatters(s, now);
        self.reverify_due(c, s, now);
        if now >= self.next_sweep {
            self.sweep(c, s, now);
            self.next_sweep = now + LINGER;
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let scatter = self.scatters.values().map(|s| s.deadline).min();
        let sweep = (!self.keys.is_empty()).then_some(self.next_sweep);
        let reverify = self.reverify.front().map(|(t, _)| *t);
        sweep.into_iter().chain(scatter).chain(reverify).min()
    }

    /// The subscriptions every joined node keeps: `C.keys` and its own scatter answers.
    pub fn subscribe_fixed(&mut self, c: &mut Client) -> bool {
        let keys = c.subscribe(&self.subjects.keys(), None);
        let answers = c.subscribe(&self.subjects.keys_reply(&self.from, "*"), None);
        keys.is_ok() && answers.is_ok()
    }

    /// `GET /keys`: ask every node for its keys; `expected` are the other live nodes.
    pub fn scatter_keys(
        &mut self,
        c: &mut Client,
        s: &Shared,
        reply: ReplyTo,
        expected: Vec<String>,
    ) {
        let id = self.next_scatter;
        self.next_scatter += 1;
        let answers = self.subjects.keys_reply(&self.from, &id.to_string());
        if c.publish(&self.subjects.keys(), Some(&answers), None, &b""[..]).is_err() {
            let others = expected.into_iter().map(|n| (n, None));
            return keys_answer(s, reply, others);
        }
        let deadline = Instant::now() + self.timeout;
        let sc = Scatter { reply, expected, got: BTreeMap::new(), deadline };
        self.scatters.insert(id, sc);
        self.finish_scatter(s, id);
    }

    /// Sends a scatter's answer when every expected node has answered.
    fn finish_scatter(&mut self, s: &Shared, id: u64) {
        let Some(sc) = self.scatters.get(&id) else { return };
        if sc.expected.iter().all(|n| sc.got.contains_key(n))
            && let Some(sc) = self.scatters.remove(&id)
        {
            keys_answer(s, sc.reply, scatter_rows(sc));
        }
    }

    /// Scatters past their deadline answer with what they have.
    fn expire_scatters(&mut self, s: &Shared, now: Instant) {
        let late: Vec<u64> =
            self.scatters.iter().filter(|(_, sc)| sc.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            if let Some(sc) = self.scatters.remove(&id) {
                keys_answer(s, sc.reply, scatter_rows(sc));
            }
        }
    }

    /// A message on `C.keys` (answer with this node's keys) or on our scatter answers.
    fn on_keys_msg(&mut self, c: &mut Client, s: &Shared, m: &Message) -> bool {
        if m.subject == self.subjects.keys() {
            if let Some(reply) = &m.reply {
                let mut keys = s.registry.keys();
                keys.truncate(MAX_SCATTER_KEYS);
                let body = serde_json::json!({ "node": s.node_name, "keys": keys }).to_string();
                if let Err(e) = c.publish(reply, None, None, body.as_bytes()) {
                    crate::warn!("cluster keys answer not sent error={e:?}");
                }
            }
            return true;
        }
        let prefix = self.subjects.keys_reply(&self.from, "");
        let Some(id) = m.subject.strip_prefix(&prefix) else { return false };
        let Ok(id) = id.parse::<u64>() else { return true };
        let Some(sc) = self.scatters.get_mut(&id) else { return true };
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        let node = v.get("node").and_then(|n| n.as_str());
        let keys = v.get("keys").and_then(|k| k.as_array()).map(|ks| {
            ks.iter().filter_map(|k| k.as_str().map(str::to_string)).collect::<Vec<String>>()
        });
        if let (Some(node), Some(keys)) = (node, keys)
            && node != s.node_name
        {
            sc.got.insert(node.to_string(), Some(keys));
        }
        self.finish_scatter(s, id);
        true
    }

    /// Another node took the key's sub over, or claimed it free: its sub subjects go at once
    /// (a pool's stay), so that a sub here asks NATS again.
    fn drop_sub(&mut self, c: &mut Client, s: &Shared, key: &str) {
        let Some(subs) = self.keys.get_mut(key) else { return };
        s.registry.release_subscribed(key, SUB_SUBJECTS, true);
        for h in [subs.rr.take(), subs.claim.take()].into_iter().flatten() {
            c.unsubscribe(h.sid);
        }
        if subs.is_empty() {
            self.keys.remove(key);
        }
    }

    /// A request on one of the subjects of a key held here, or a `/keys` scatter message.
    pub fn on_msg(&mut self, c: &mut Client, s: &Shared, m: Message) {
        if self.on_keys_msg(c, s, &m) {
            return;
        }
        let (Some((key, which)), Some(reply)) = (self.subjects.parse_key(&m.subject), m.reply)
        else {
            return;
        };
        let h = m.headers.unwrap_or_default();
        let token = match h.get("Esub-Token") {
            Some(e) => match subject::decode(e) {
                Some(t) => Some(t),
                None => return respond(c, &reply, 400, "Bad token", false),
            },
            None => None,
        };
        let psub = h.get("Esub-Psub") == Some("1");
        if h.get("Esub-Op") == Some("where") {
            let (sub, pool) = s.registry.holders(&key);
            let here = match which {
                KeySubject::Rr => sub,
                KeySubject::Pool => pool,
                KeySubject::Stored => s.stored.has(&key),
                KeySubject::Claim => false,
            };
            return match here {
                true => respond(c, &reply, 200, &s.advertise, false),
                false => respond(c, &reply, 404, "Unknown key", true),
            };
        }
        if which == KeySubject::Stored {
            return self.take_for(c, s, key, token, reply);
        }
        if which == KeySubject::Claim && h.get("Esub-Op") == Some("verify") {
            let from = h.get("Esub-From").unwrap_or_default();
            if !s.registry.has_sub(&key) {
                return respond(c, &reply, 404, "Unknown key", true);
            }
            // Two subs parked at once: the node whose encoded name sorts first keeps the key.
            if self.from.as_str() < from {
                return respond(c, &reply, 409, "Keep", false);
            }
            if let Some(old) = s.registry.evict_sub(&key) {
                s.mailboxes[old.worker].post(Msg::TakenOver { to: old });
            }
            self.drop_sub(c, s, &key);
            return respond(c, &reply, 200, "OK", false);
        }
        if which == KeySubject::Claim {
            return match s.registry.take_over(&key, token.as_deref()) {
                TakeOver::Forbidden => {
                    respond(c, &reply, 403, "Key is used and token does not match.", false)
                }
                TakeOver::Taken(old) => {
                    s.mailboxes[old.worker].post(Msg::TakenOver { to: old });
                    self.drop_sub(c, s, &key);
                    respond(c, &reply, 200, "OK", false)
                }
                // The key is free here and moves to the asker: this node's lingering
                // subjects go at once, so that its own next sub asks again.
                TakeOver::Free => {
                    self.drop_sub(c, s, &key);
                    respond(c, &reply, 404, "Unknown key", true)
                }
            };
        }
        let pool_only = which == KeySubject::Pool || psub;
        let (to, pool) = match s.registry.claim(&key, token.as_deref(), pool_only) {
            Claim::InvalidToken => return respond(c, &reply, 403, "Invalid token", false),
            Claim::Unknown => return respond(c, &reply, 404, "Unknown key", true),
            Claim::Sub(to) => (to, None),
            Claim::Member(to, pool) => (to, Some(pool)),
        };
        let id = self.next_delivery;
        self.next_delivery = self.next_delivery.wrapping_add(1);
        self.deliveries.insert(id, reply);
        let conn = ConnId { worker: CLUSTER_WORKER, token: id, generation: 0 };
        let body = Arc::new(m.payload);
        let arrived = Instant::now();
        let reply = Some(ReplyTo { conn, seq: 0 });
        let msg = Msg::Deliver { to, reply, body, pool, attempts: 0, arrived, prep: false };
        s.mailboxes[to.worker].post(msg);
    }

    /// A worker's outcome for a delivery made here for another node.
    pub fn outcome(&mut self, c: &mut Client, id: usize, status: u16, text: &str) {
        if let Some(reply) = self.deliveries.remove(&id) {
            respond(c, &reply, status, text, false);
        }
    }

    /// A rep with no local holder: ask the sub's subject, or the pool's with `psub=1`.
    pub fn forward(&mut self, c: &mut Client, s: &Shared, f: Forward) {
        let psub = f.pool;
        self.ask(c, s, f, psub);
    }

    fn ask(&mut self, c: &mut Client, s: &Shared, f: Forward, psub: bool) {
        let which = if f.pool { KeySubject::Pool } else { KeySubject::Rr };
        let subject = self.subjects.key(&f.key, which);
        let h = self.headers("rep", f.token.as_deref(), psub);
        match c.request(&subject, Some(&h), Payload::Shared(f.body.clone()), self.timeout) {
            Ok(t) => {
                self.forwards.insert(t, f);
            }
            Err(PubError::TooLarge) => answer(s, f.reply, 413, "Payload Too Large"),
            Err(_) => answer(s, f.reply, 503, "Cluster unavailable"),
        }
    }

    /// Another node's `/rsub` for stored reps here: lease the oldest from the store (`taken`
    /// answers it).
    fn take_for(
        &mut self,
        c: &mut Client,
        s: &Shared,
        key: String,
        token: Option<String>,
        reply: String,
    ) {
        let Some(store) = &s.store else {
            return respond(c, &reply, 404, "Nothing stored", true);
        };
        let id = self.next_delivery;
        self.next_delivery = self.next_delivery.wrapping_add(1);
        let conn = ConnId { worker: CLUSTER_WORKER, token: id, generation: 0 };
        let req = crate::store::Req::Take { key, token, reply: ReplyTo { conn, seq: 0 } };
        if store.send(req).is_err() {
            return respond(c, &reply, 500, "Store error", false);
        }
        self.takes.insert(id, reply);
    }

    /// The store's answer to another node's `/rsub`: the body goes out, and is removed here
    /// once it is on its way (a publish refused leaves it stored).
    pub fn taken(&mut self, c: &mut Client, s: &Shared, id: usize, taken: crate::store::Taken) {
        use crate::store::{Req, Taken};
        let Some(reply) = self.takes.remove(&id) else {
            // Not ours (cannot happen): a leased record must not stay leased.
            if let (Taken::Got { key, id, .. }, Some(store)) = (taken, &s.store) {
                let _ = store.send(Req::Done { key, id, delivered: false });
            }
            return;
        };
        match taken {
            Taken::Got { key, id, body, remaining } => {
                let mut h = Headers::new();
                h.append("Esub-Status", "200");
                h.append("Esub-Remaining", &remaining.to_string());
                let sent = c.publish(&reply, None, Some(&h), Payload::Shared(Arc::new(body)));
                if let Some(store) = &s.store {
                    let _ = store.send(Req::Done { key, id, delivered: sent.is_ok() });
                }
            }
            Taken::Nothing | Taken::Remote { .. } => {
                respond(c, &reply, 404, "Nothing stored", false)
            }
            Taken::InvalidToken => respond(c, &reply, 403, "Invalid token", false),
            Taken::Failed => respond(c, &reply, 500, "Store error", false),
        }
    }

    /// A `/rsub` with nothing stored here: ask a node with stored reps for `key`.
    pub fn rsub(
        &mut self,
        c: &mut Client,
        s: &Shared,
        key: Arc<str>,
        token: Option<Arc<str>>,
        reply: ReplyTo,
    ) {
        let subject = self.subjects.key(&key, KeySubject::Stored);
        let h = self.headers("rsub", token.as_deref(), false);
        match c.request(&subject, Some(&h), Payload::Bytes(b""), self.timeout) {
            Ok(t) => {
                self.rsubs.insert(t, RsubAsk { key, token, reply });
            }
            Err(_) => answer(s, reply, 503, "Cluster unavailable"),
        }
    }

    /// A `HEAD` with no local holder: ask the subject `of` names (a rep: the sub's, then the
    /// pool's).
    pub fn locate(
        &mut self,
        c: &mut Client,
        s: &Shared,
        key: Arc<str>,
        of: Holder,
        reply: ReplyTo,
    ) {
        let pool = of == Holder::Psub;
        self.ask_where(c, s, Where { key, of, pool, reply });
    }

    fn ask_where(&mut self, c: &mut Client, s: &Shared, w: Where) {
        let which = match w.of {
            Holder::Rsub => KeySubject::Stored,
            _ if w.pool => KeySubject::Pool,
            _ => KeySubject::Rr,
        };
        let subject = self.subjects.key(&w.key, which);
        let h = self.headers("where", None, false);
        match c.request(&subject, Some(&h), Payload::Bytes(b""), self.timeout) {
            Ok(t) => {
                self.wheres.insert(t, w);
            }
            Err(_) => located(s, w.reply, 503, None),
        }
    }

    /// A sub with no local sub for its key asks the holder (if any) to give it up.
    pub fn claim(
        &mut self,
        c: &mut Client,
        s: &Shared,
        key: &str,
        token: Option<&str>,
        conn: ConnId,
    ) {
        // This node still holds the key's claim subject (its sub just went, or one waits and
        // the registry settles it), and no other node claimed the key since (that drops the
        // subject): NATS would route the claim back here, so the answer is known.
        if self.keys.get(key).is_some_and(|k| k.claim.is_some()) {
            return claimed(s, conn, ClaimOutcome::Free);
        }
        let subject = self.subjects.key(key, KeySubject::Claim);
        let h = self.headers("claim", token, false);
        match c.request(&subject, Some(&h), Payload::Bytes(b""), self.timeout) {
            Ok(t) => {
                self.claims.insert(t, (conn, Arc::from(key)));
            }
            // NATS is down: the sub parks here.
            Err(_) => claimed(s, conn, ClaimOutcome::Free),
        }
    }

    fn headers(&self, op: &str, token: Option<&str>, psub: bool) -> Headers {
        let mut h = Headers::new();
        h.append("Esub-Op", op);
        if let Some(t) = token {
            h.append("Esub-Token", &subject::encode(t));
        }
        h.append("Esub-Psub", if psub { "1" } else { "0" });
        h.append("Esub-From", &self.from);
        h
    }

    /// The answer to one of our requests; `false` when the token is not one of ours.
    pub fn on_reply(
        &mut self,
        c: &mut Client,
        s: &Shared,
        token: RequestToken,
        result: Result<Message, RequestError>,
    ) -> bool {
        if let Some((conn, key)) = self.claims.remove(&token) {
            let outcome = match result {
                Ok(m) if status_of(&m).0 == 403 => ClaimOutcome::Forbidden,
                Err(RequestError::Timeout) => ClaimOutcome::Timeout,
                _ => ClaimOutcome::Free,
            };
            if outcome == ClaimOutcome::Free {
                self.unverified.insert(key, Instant::now());
            }
            claimed(s, conn, outcome);
            return true;
        }
        if let Some(key) = self.verifies.remove(&token) {
            // The other node holds the key too and sorts first: ours yields.
            if let Ok(m) = result
                && status_of(&m) == (409, false)
                && let Some(old) = s.registry.evict_sub(&key)
            {
                s.mailboxes[old.worker].post(Msg::TakenOver { to: old });
                self.drop_sub(c, s, &key);
            }
            return true;
        }
        if let Some(r) = self.rsubs.remove(&token) {
            match result {
                Ok(m) if !status_of(&m).1 && status_of(&m).0 == 200 => {
                    let h = m.headers.as_ref();
                    let remaining = h.and_then(|h| h.get("Esub-Remaining"));
                    let remaining = remaining.and_then(|v| v.parse().ok()).unwrap_or(0);
                    let (key, token, body) = (r.key, r.token, m.payload);
                    let taken = crate::store::Taken::Remote { key, token, body, remaining };
                    s.post(Msg::Taken { reply: r.reply, taken });
                }
                Ok(m) if !status_of(&m).1 => match status_of(&m).0 {
                    403 => answer(s, r.reply, 403, "Invalid token"),
                    404 => answer(s, r.reply, 404, "Nothing stored"),
                    _ => answer(s, r.reply, 500, "Store error"),
                },
                Ok(_) | Err(RequestError::NoResponders) => {
                    answer(s, r.reply, 404, "Nothing stored")
                }
                Err(RequestError::Timeout) => answer(s, r.reply, 504, "Cluster timeout"),
                Err(RequestError::Disconnected) => answer(s, r.reply, 503, "Cluster unavailable"),
            }
            return true;
        }
        if let Some(mut w) = self.wheres.remove(&token) {
            match result {
                Ok(m) if !status_of(&m).1 => {
                    let addr = std::str::from_utf8(&m.payload).ok().map(Arc::from);
                    match status_of(&m).0 {
                        200 if addr.is_some() => located(s, w.reply, 200, addr),
                        _ => located(s, w.reply, 404, None),
                    }
                }
                Ok(_) | Err(RequestError::NoResponders) if w.of == Holder::Rep && !w.pool => {
                    w.pool = true;
                    self.ask_where(c, s, w);
                }
                Ok(_) | Err(RequestError::NoResponders) => located(s, w.reply, 404, None),
                Err(RequestError::Timeout) => located(s, w.reply, 504, None),
                Err(RequestError::Disconnected) => located(s, w.reply, 503, None),
            }
            return true;
        }
        let Some(mut f) = self.forwards.remove(&token) else { return false };
        let miss = match result {
            Ok(m) => {
                let (status, miss) = status_of(&m);
                if !miss {
                    answer(s, f.reply, status, text_of(status, &m.payload));
                    return true;
                }
                true
            }
            Err(RequestError::NoResponders) => true,
            Err(RequestError::Timeout) => {
                answer(s, f.reply, 504, "Cluster timeout");
                return true;
            }
            Err(RequestError::Disconnected) => {
                answer(s, f.reply, 503, "Cluster unavailable");
                return true;
            }
        };
        if miss && !f.pool {
            f.pool = true;
            self.ask(c, s, f, false);
        } else {
            answer(s, f.reply, 404, "Unknown key");
        }
        true
    }
}

/// `Esub-Status` of an answer, and whether it is a miss (`Esub-Miss: 1`: as no responders).
fn status_of(m: &Message) -> (u16, bool) {
    let h = m.headers.as_ref();
    let status = h.and_then(|h| h.get("Esub-Status")).and_then(|v| v.parse().ok()).unwrap_or(502);
    (status, h.and_then(|h| h.get("Esub-Miss")) == Some("1"))
}

/// The text a forwarded rep's client gets for the holder's status.
fn text_of(status: u16, body: &[u8]) -> &'static str {
    match status {
        200 => "OK",
        403 => "Invalid token",
        404 if body == b"No listeners remain" => "No listeners remain",
        404 => "Unknown key",
        413 => "Payload Too Large",
        503 => "Cluster unavailable",
        504 => "Cluster timeout",
        _ => "Cluster error",
    }
}

fn respond(c: &mut Client, reply: &str, status: u16, text: &str, miss: bool) {
    let mut h = Headers::new();
    h.append("Esub-Status", &status.to_string());
    if miss {
        h.append("Esub-Miss", "1");
    }
    if let Err(e) = c.publish(reply, None, Some(&h), text.as_bytes()) {
        crate::debug!("cluster answer not sent error={e:?}");
    }
}

fn answer(s: &Shared, reply: ReplyTo, status: u16, text: &'static str) {
    s.mailboxes[reply.conn.worker].post(Msg::Answer { reply, status, text });
}

/// A scatter's rows: every node that answered, and `null` for the expected ones that did not.
fn scatter_rows(sc: Scatter) -> impl Iterator<Item = (String, Option<Vec<String>>)> {
    let mut got = sc.got;
    for n in sc.expected {
        got.entry(n).or_insert(None);
    }
    got.into_iter()
}

fn keys_answer(
    s: &Shared,
    reply: ReplyTo,
    others: impl Iterator<Item = (String, Option<Vec<String>>)>,
) {
    let body = s.keys_map_json(others);
    s.mailboxes[reply.conn.worker].post(Msg::Json { reply, status: 200, body });
}

fn located(s: &Shared, reply: ReplyTo, status: u16, addr: Option<Arc<str>>) {
    s.mailboxes[reply.conn.worker].post(Msg::Located { reply, status, addr });
}

fn claimed(s: &Shared, to: ConnId, outcome: ClaimOutcome) {
    s.mailboxes[to.worker].post(Msg::Claimed { to, outcome });
}
