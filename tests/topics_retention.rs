//! Retention by age (API-topics.md 2, 5.4, 9): whole segments go once their newest message is
//! older than `retention.hours` (an idle partition's last segment too), `oldest` advances while
//! `latest` stays, neither moves back across a restart, and a group whose commit fell behind
//! `oldest` jumps per its `reset`, with one WARN naming the number skipped.

mod common;

use common::topics::{Conn, FAST, Rec, Topics, decode_records};
use std::thread;
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";
/// 0.0003 h = 1.08 s: short enough for a test, long enough to see "kept at least that long".
const SHORT: &str = "0.0003";
const SHORT_MS: u64 = 1080;
/// Messages of this size roll a 4096-byte segment every few messages.
const PAYLOAD: usize = 400;
const COUNT: i64 = 40;
/// How long retention may take to act: the retention age plus a check period plus slack.
const RETENTION_DEADLINE: Duration = Duration::from_secs(15);

fn env() -> Vec<(&'static str, &'static str)> {
    vec![FAST, ("ESUB_TOPIC_SEGMENT_BYTES", "4096"), ("ESUB_TOPIC_RETENTION_CHECK_MS", "100")]
}

/// `POST /v1/topics/app1/orders/v1?partitions=1&retention.hours=H`, expecting `status`.
fn create(t: &Topics, hours: &str, status: u16) {
    t.once(
        "POST",
        &format!("/v1/topics/app1/orders/v1?partitions=1&retention.hours={hours}"),
        &[("Appid", "app1"), ("Pubkey", "pk")],
        b"",
    )
    .assert_ok(status);
}

fn payload(i: i64) -> Vec<u8> {
    let mut v = format!("m{i:03}-").into_bytes();
    v.resize(PAYLOAD, b'a' + (i % 26) as u8);
    v
}

fn publish(t: &Topics, body: &[u8]) -> i64 {
    let (p, o) = t.conn().publish("app1", PUB, &[], body).pubd();
    assert_eq!(p, 0);
    o
}

/// Files under the data dir (segment names are not part of the contract).
fn file_count(t: &Topics) -> usize {
    t.dir.files().iter().filter(|p| p.is_file()).count()
}

/// Polls the single partition's offsets until `done`; every sample must keep `latest` at
/// `latest` and never move `oldest` back. Returns the last sample and when it was taken.
#[track_caller]
fn poll_offsets(t: &Topics, latest: i64, done: impl Fn(i64) -> bool) -> (i64, Instant) {
    let deadline = Instant::now() + RETENTION_DEADLINE;
    let mut prev = 0;
    loop {
        let offs = t.offsets("app1", "orders", "v1");
        let at = Instant::now();
        assert_eq!(offs.len(), 1);
        let (oldest, l) = offs[0];
        assert_eq!(l, latest, "latest moved: {offs:?}");
        assert!(oldest >= prev, "oldest went back from {prev} to {oldest}");
        assert!(oldest <= latest, "oldest {oldest} past latest {latest}");
        prev = oldest;
        if done(oldest) {
            return (oldest, at);
        }
        assert!(
            Instant::now() < deadline,
            "retention did not act within {RETENTION_DEADLINE:?}: {offs:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn age_retention_advances_oldest_keeps_latest_and_survives_a_restart() {
    let t = Topics::start("ret-age", &env());
    create(&t, SHORT, 201);
    let first_sent = Instant::now();
    for i in 0..COUNT {
        assert_eq!(publish(&t, &payload(i)), i);
    }
    let files_full = file_count(&t);
    // Nothing goes before the first message is SHORT_MS old.
    let (oldest, at) = poll_offsets(&t, COUNT, |o| o > 0);
    let waited = at.duration_since(first_sent);
    assert!(waited >= Duration::from_millis(SHORT_MS), "oldest {oldest} after only {waited:?}");
    // The idle partition's last segment goes too: empty, `oldest` = `latest`.
    poll_offsets(&t, COUNT, |o| o == COUNT);
    assert!(file_count(&t) < files_full, "no segment file removed ({files_full} files before)");
    let mut c = t.conn();
    c.sub("app1", &format!("{SUB}?group=fresh"), &[]).assert_204();
    drop(c);

    // Across a restart neither moves back, and offsets are never reused.
    let t = t.restart(&env());
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(COUNT, COUNT)]);
    assert_eq!(publish(&t, b"after restart"), COUNT);
    let r = t.conn().sub("app1", &format!("{SUB}?group=fresh2"), &[]);
    assert_eq!(r.msg(), Rec::new(0, COUNT, b"after restart"));
}

/// Reads `n` messages with one `batch=n` GET in auto mode (committed as written).
fn read_batch(c: &mut Conn, group: &str, n: usize) -> Vec<Rec> {
    let r = c.sub("app1", &format!("{SUB}?group={group}&batch={n}"), &[]);
    r.batch()
}

/// The WARN lines naming `group` so far.
fn warns_for(t: &Topics, group: &str) -> Vec<String> {
    let tag = format!("group={group} ");
    t.stderr()
        .lines()
        .filter(|l| l.starts_with("WARN") && l.contains(&tag))
        .map(str::to_string)
        .collect()
}

/// Waits (stderr is collected asynchronously) for the WARN of `group`'s jump; it must name the
/// number of messages skipped.
#[track_caller]
fn wait_warn(t: &Topics, group: &str, skipped: i64) {
    let tag = format!("group={group} ");
    let line =
        t.wait_stderr(&format!("WARN for {group}"), |l| l.starts_with("WARN") && l.contains(&tag));
    assert!(line.contains(&format!("skipped={skipped}")), "{line}");
}

#[test]
fn lagging_groups_jump_per_reset_with_a_warn() {
    let t = Topics::start("ret-jump", &env());
    create(&t, "1", 201);
    for i in 0..COUNT {
        assert_eq!(publish(&t, &payload(i)), i);
    }
    // Three groups commit 0..4: two then leave, one stays connected (a live instance).
    for g in ["early", "late"] {
        let recs = read_batch(&mut t.conn(), g, 5);
        assert_eq!(recs, (0..5).map(|i| Rec::new(0, i, &payload(i))).collect::<Vec<_>>());
    }
    let mut live = t.conn();
    assert_eq!(read_batch(&mut live, "live", 5).len(), 5);

    // Retention shortened on the existing topic (200: same partitions), then restored once
    // everything published so far is gone.
    create(&t, SHORT, 200);
    poll_offsets(&t, COUNT, |o| o == COUNT);
    create(&t, "1", 200);
    for i in 0..3 {
        assert_eq!(publish(&t, format!("b{i}").as_bytes()), COUNT + i);
    }
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(COUNT, COUNT + 3)]);
    assert!(warns_for(&t, "early").is_empty(), "{:?}", warns_for(&t, "early"));

    // reset=oldest: the first retained message; 5..39 skipped.
    let mut c = t.conn();
    let r = c.sub("app1", &format!("{SUB}?group=early&reset=oldest"), &[]);
    assert_eq!(r.msg(), Rec::new(0, COUNT, b"b0"));
    wait_warn(&t, "early", COUNT - 5);

    // reset=newest: only what comes next; 5..42 skipped.
    let mut c = t.conn();
    c.sub("app1", &format!("{SUB}?group=late&reset=newest"), &[]).assert_204();
    wait_warn(&t, "late", COUNT + 3 - 5);
    assert_eq!(publish(&t, b"c0"), COUNT + 3);
    let r = c.sub("app1", &format!("{SUB}?group=late&reset=newest"), &[]);
    assert_eq!(r.msg(), Rec::new(0, COUNT + 3, b"c0"));

    // The live instance's cursor (at 5) jumps to oldest (its reset, the default).
    let r = live.sub("app1", &format!("{SUB}?group=live&batch=10"), &[]);
    let recs = decode_records(&r.body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        recs,
        vec![
            Rec::new(0, COUNT, b"b0"),
            Rec::new(0, COUNT + 1, b"b1"),
            Rec::new(0, COUNT + 2, b"b2"),
            Rec::new(0, COUNT + 3, b"c0"),
        ]
    );
    wait_warn(&t, "live", COUNT - 5);

    // One WARN per jump, none for the groups' later fetches.
    for g in ["early", "late", "live"] {
        assert_eq!(warns_for(&t, g).len(), 1, "{:?}", warns_for(&t, g));
    }

    // The jumps were committed: after a restart every group continues after them.
    let t = t.restart(&env());
    assert_eq!(publish(&t, b"d0"), COUNT + 4);
    for g in ["early", "late", "live"] {
        let (_c, r) = common::topics::join(&t, "app1", &format!("{SUB}?group={g}&batch=10"), &[]);
        let want: Vec<Rec> = match g {
            "early" => vec![
                Rec::new(0, COUNT + 1, b"b1"),
                Rec::new(0, COUNT + 2, b"b2"),
                Rec::new(0, COUNT + 3, b"c0"),
                Rec::new(0, COUNT + 4, b"d0"),
            ],
            _ => vec![Rec::new(0, COUNT + 4, b"d0")],
        };
        assert_eq!(r.batch(), want, "group {g}");
    }
}

#[test]
fn older_segments_go_while_newer_ones_stay_readable_from_oldest() {
    let t = Topics::start("ret-partial", &env());
    create(&t, "1", 201);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..COUNT {
        sent.push(payload(i));
        assert_eq!(publish(&t, &payload(i)), i);
    }
    // Shorten retention and keep publishing, so the newest segments always hold young messages.
    create(&t, SHORT, 200);
    let deadline = Instant::now() + RETENTION_DEADLINE;
    loop {
        let i = sent.len() as i64;
        sent.push(payload(i));
        assert_eq!(publish(&t, &payload(i)), i);
        let offs = t.offsets("app1", "orders", "v1");
        assert_eq!(offs[0].1, i + 1, "latest: {offs:?}");
        if offs[0].0 > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "oldest never advanced: {offs:?}");
        thread::sleep(Duration::from_millis(20));
    }
    // Freeze: nothing else expires under a long retention.
    create(&t, "1", 200);
    let offs = t.offsets("app1", "orders", "v1");
    let (oldest, latest) = offs[0];
    assert_eq!(latest, sent.len() as i64);
    assert!(oldest > 0 && oldest < latest, "young messages went too: {offs:?}");
    // A fresh group starts at `oldest` and gets every retained message, in order.
    let mut c = t.conn();
    let mut got = Vec::new();
    while (got.len() as i64) < latest - oldest {
        let r = c.sub("app1", &format!("{SUB}?group=fresh&batch=4000"), &[]);
        assert_eq!(r.status, 200, "retained messages missing after {} of them: {r:?}", got.len());
        got.extend(r.batch());
    }
    let want: Vec<Rec> = (oldest..latest).map(|o| Rec::new(0, o, &sent[o as usize])).collect();
    assert_eq!(got, want);
    c.sub("app1", &format!("{SUB}?group=fresh"), &[]).assert_204();
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(oldest, latest)]);
}
