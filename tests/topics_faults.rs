//! Faults on the topics half (API-topics.md 2, 4.1, 4.3, 5.3, 10; API.md 4 and 8): at-least-once
//! with `ack=1` across a consumer dropped mid-batch, a full disk (507, nothing partial, dense
//! offsets after a restart) and an unusable data directory (exit 2 naming ESUB_DATA_DIR).

mod common;

use common::run_to_exit;
use common::topics::{
    DataDir, FAST, Rec, Topics, join, key_for, partitions_json, pubh, rec, ws_err, ws_frame, ws_ok,
    ws_text,
};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

fn payload(p: u32, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("p{p}m{i:04}-").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

// ---------------------------------------------------------------------------------------------
// At-least-once across a dropped consumer (2, 5.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn ack_mode_consumer_dropped_mid_batch_loses_nothing() {
    const PER_PARTITION: usize = 150;
    let t = Topics::start("fault-ack", &[FAST, ("ESUB_SUB_BATCH_IDLE_MS", "200")]);
    t.create("app1", "orders", "v1", 2);
    let mut sent: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    for p in 0..2u32 {
        let key = key_for(p, 2);
        let body: Vec<u8> = (0..PER_PARTITION)
            .flat_map(|i| rec(key.as_bytes(), b"", &payload(p, i, 1000)))
            .collect();
        let r = t.conn().publish("app1", &format!("{PUB}?batch=1"), &[], &body);
        assert_eq!(r.status, 201, "{r:?}");
        for i in 0..PER_PARTITION {
            sent.insert((p as i32, i as i64), payload(p, i, 1000));
        }
    }
    let path = format!("{SUB}?group=g&batch=100&ack=1");

    // Consumer 1 processes in order: all of its first batch, then the first 30 records of the
    // second; each GET carries the piggy-back ack of what it processed so far, one pair per
    // partition, as lists. It dies after the first chunk of its third answer.
    let mut c1 = t.conn();
    let mut acked: BTreeMap<i32, i64> = BTreeMap::from([(0, -1), (1, -1)]);
    let ack_headers = |acked: &BTreeMap<i32, i64>| -> (String, String) {
        let done: Vec<(i32, i64)> =
            acked.iter().filter(|(_, o)| **o >= 0).map(|(p, o)| (*p, *o)).collect();
        let ps: Vec<String> = done.iter().map(|(p, _)| p.to_string()).collect();
        let os: Vec<String> = done.iter().map(|(_, o)| o.to_string()).collect();
        (ps.join(","), os.join(","))
    };
    for processed in [100, 30] {
        let (ps, os) = ack_headers(&acked);
        let h: Vec<(&str, &str)> =
            if ps.is_empty() { vec![] } else { vec![("X-Partition", &ps), ("X-Offset", &os)] };
        let batch = c1.sub("app1", &path, &h).batch();
        assert_eq!(batch.len(), 100);
        for r in &batch {
            let at = (r.partition, r.offset);
            assert_eq!(Some(&r.payload), sent.get(&at), "{at:?}");
        }
        for r in &batch[..processed] {
            let a = acked.get_mut(&r.partition).unwrap();
            assert_eq!(r.offset, *a + 1, "partition {} out of order", r.partition);
            *a = r.offset;
        }
    }
    eprintln!("consumer 1 processed up to {acked:?}");
    let (ps, os) = ack_headers(&acked);
    c1.send_sub("app1", &path, &[("X-Partition", &ps), ("X-Offset", &os)]);
    let head = c1.read_head();
    assert_eq!((head.status, head.chunked), (200, true), "{head:?}");
    let chunk = c1.read_chunk().expect("a first chunk");
    assert!(!chunk.is_empty());
    drop(c1);

    // Consumer 2 of the same group: each partition from committed + 1, nothing lost.
    let (mut c2, r) = join(&t, "app1", &path, &[]);
    let mut got: Vec<Rec> = Vec::new();
    let mut r = r;
    loop {
        if r.status == 204 {
            r.assert_204();
            break;
        }
        got.extend(r.batch());
        assert!(got.len() <= 2 * PER_PARTITION, "more than was published");
        r = c2.sub("app1", &path, &[]);
    }
    for p in 0..2 {
        let offs: Vec<i64> = got.iter().filter(|r| r.partition == p).map(|r| r.offset).collect();
        let want: Vec<i64> = (acked[&p] + 1..PER_PARTITION as i64).collect();
        assert_eq!(offs, want, "partition {p} after ack {}", acked[&p]);
    }
    for r in &got {
        assert_eq!(Some(&r.payload), sent.get(&(r.partition, r.offset)));
    }
}

// ---------------------------------------------------------------------------------------------
// Full disk (4.1, 4.3; API.md 4)
// ---------------------------------------------------------------------------------------------

/// Lower the running server's file size limit (RLIMIT_FSIZE): writes past it fail (EFBIG).
fn limit_file_size(t: &Topics, bytes: u64) {
    let st = Command::new("prlimit")
        .args(["--pid", &t.pid().to_string(), &format!("--fsize={bytes}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(st.success(), "prlimit failed: {st:?}");
}

#[test]
fn full_disk_answers_507_and_every_201_is_readable_after_a_restart() {
    let env = [FAST, ("ESUB_FSYNC", "always")];
    let t = Topics::start("fault-full", &env);
    t.create("app1", "orders", "v1", 1);
    t.create("app1", "events", "v1", 1);
    limit_file_size(&t, 40_000);
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    while refused < 3 {
        assert!(i < 100, "no 507 after {i} pubs of 3000 bytes under a 40000-byte file limit");
        let body = payload(0, i, 3000);
        let r = t.conn().publish("app1", PUB, &[], &body);
        if r.status == 507 {
            r.assert_err(507, "Insufficient Storage");
            assert!(!r.has_header("x-offset"), "{r:?}");
            refused += 1;
        } else {
            // 201 at the next dense offset; none after a refusal of the same size.
            assert_eq!(r.pubd(), (0, acked.len() as i64), "pub {i}");
            assert_eq!(refused, 0, "a 3000-byte pub stored after one was refused");
            acked.push(body);
        }
        i += 1;
    }
    assert!(!acked.is_empty(), "nothing fitted under the limit");
    // Smaller pubs may still fit; whatever gets 201 takes the next dense offset.
    for j in 0..20 {
        let body = payload(0, 1000 + j, 50 + j);
        let r = t.conn().publish("app1", PUB, &[], &body);
        if r.status == 507 {
            r.assert_err(507, "Insufficient Storage");
        } else {
            assert_eq!(r.pubd(), (0, acked.len() as i64), "small pub {j}");
            acked.push(body);
        }
    }
    // A ws pub frame that does not fit gets the error frame; the socket stays usable.
    let mut ws = t.ws_raw("/v1/ws/msgs/orders/v1", &pubh("app1"));
    ws.send(&ws_frame(false, &payload(0, 2000, 3000)));
    assert_eq!(ws_text(&mut ws), ws_err("Insufficient Storage"));
    drop(ws);
    // The server is fine otherwise, and another topic's log has room of its own.
    t.conn().req("GET", "/alive", &[], b"").assert_ok(200);
    let r = t.conn().publish("app1", "/v1/msgs/events/v1", &[], b"elsewhere");
    assert_eq!(r.pubd(), (0, 0));
    eprintln!("acknowledged {}, refused {refused} + small ones", acked.len());

    // Without the limit: exactly the acknowledged messages, at dense offsets.
    let t = t.restart(&env);
    let n = acked.len() as i64;
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, n)]));
    let mut c = t.conn();
    let mut got = Vec::new();
    loop {
        let r = c.sub("app1", &format!("{SUB}?group=g&batch=4000"), &[]);
        if r.status == 204 {
            break;
        }
        got.extend(r.batch());
    }
    let want: Vec<Rec> = acked.iter().enumerate().map(|(o, b)| Rec::new(0, o as i64, b)).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    let r = t.conn().publish("app1", PUB, &[], b"after");
    assert_eq!(r.pubd(), (0, n), "offsets continue densely after the restart");
    let mut ws = t.ws_raw("/v1/ws/msgs/orders/v1", &pubh("app1"));
    ws.send(&ws_frame(false, b"ws after"));
    assert_eq!(ws_text(&mut ws), ws_ok(0, n + 1));
}

// ---------------------------------------------------------------------------------------------
// Unusable data directory (API.md 4 and 8; API-topics 10)
// ---------------------------------------------------------------------------------------------

/// Removes a regular file on drop ([`DataDir`] removes directories only).
struct RemoveFile(std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn unusable_data_dir_exits_2_naming_the_variable() {
    let base = DataDir::new("fault-unusable");
    std::fs::write(&base.path, b"a regular file, not a directory").unwrap();
    let _rm = RemoveFile(base.path.clone());
    // A data dir whose `topics` is a regular file.
    let inner = DataDir::new("fault-unusable-inner");
    std::fs::create_dir_all(&inner.path).unwrap();
    std::fs::write(inner.path.join("topics"), b"not a directory either").unwrap();
    let under_file = base.path.join("data");
    let cases = [base.as_str(), under_file.to_str().unwrap(), inner.as_str()];
    for dir in cases {
        let out = run_to_exit(&[], &[("ESUB_DATA_DIR", dir)], EXIT_DEADLINE);
        assert_eq!(
            out.status.map(|s| s.code()),
            Some(Some(2)),
            "ESUB_DATA_DIR={dir}: exit (None: still running); stderr: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("listening on"), "started anyway: {}", out.stdout);
        let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("ERROR")).collect();
        assert_eq!(errors.len(), 1, "want one ERROR line, stderr:\n{}", out.stderr);
        assert!(errors[0].contains("ESUB_DATA_DIR"), "ERROR line: {}", errors[0]);
    }
    // Both files were left alone.
    assert_eq!(std::fs::read(&base.path).unwrap(), b"a regular file, not a directory");
    assert_eq!(std::fs::read(inner.path.join("topics")).unwrap(), b"not a directory either");
}
