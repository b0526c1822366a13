//! `MetaLog` replay, torn tails and compaction against real files.

use std::fs::OpenOptions;
use std::io::Write;

use super::*;
use crate::topics::log::tests::TempDir;

fn spec(name: &str, partitions: u32, hours: f64, bytes: i64) -> TopicSpec {
    TopicSpec { name: name.into(), partitions, retention_hours: hours, retention_bytes: bytes }
}

fn key(topic: &str, app: &str, group: &str, queue: &str, partition: u32) -> CommitKey {
    CommitKey {
        topic: topic.into(),
        app: app.into(),
        group: group.into(),
        queue: queue.into(),
        partition,
    }
}

fn commit(k: CommitKey, offset: i64) -> MetaRec {
    MetaRec::Commit { key: k, offset }
}

#[test]
fn records_round_trip_and_refuse_garbage() {
    let recs = [
        MetaRec::Topic(spec("a.orders.v1", 4, 0.001, -1)),
        commit(key("a.orders.v1", "app2", "billing", "retry", 3), -1),
        MetaRec::ForgetGroup { topic: "t".into(), app: "x".into(), group: "g".into() },
    ];
    for r in &recs {
        let mut v = Vec::new();
        r.encode(&mut v);
        assert_eq!(decode(&v), Ok(Some((r.clone(), v.len()))));
        for cut in 0..v.len() {
            assert_eq!(decode(&v[..cut]), Ok(None));
        }
        v[9] ^= 0x40;
        assert!(matches!(decode(&v), Err(Bad::Corrupt(_))), "{r:?}");
    }
    // A well-framed record of a later kind is not taken for garbage.
    let mut v = Vec::new();
    let start = record::begin_frame(&mut v);
    v.push(9);
    record::end_frame(&mut v, start);
    assert_eq!(decode(&v), Err(Bad::UnknownKind(9)));
    let mut file = header();
    file.extend_from_slice(&v);
    assert_eq!(replay(&file).unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[test]
fn replay_keeps_the_latest_commit_and_forgets_groups() {
    let t = TempDir::new("tmeta");
    let (mut log, state) = MetaLog::open(&t.0).unwrap();
    assert_eq!(state, MetaState::default());
    let k = |g: &str, q: &str, p| key("a.t.v1", "app", g, q, p);
    log.append(&[MetaRec::Topic(spec("a.t.v1", 2, 168.0, -1)), commit(k("g1", "", 0), 5)]).unwrap();
    log.append(&[commit(k("g1", "", 0), 9), commit(k("g1", "retry", 0), 1)]).unwrap();
    log.append(&[commit(k("g2", "", 1), 3), commit(k("g1", "", 1), 2)]).unwrap();
    log.append(&[commit(key("b.t.v1", "app", "g1", "", 0), 7)]).unwrap();
    log.append(&[MetaRec::ForgetGroup {
        topic: "a.t.v1".into(),
        app: "app".into(),
        group: "g1".into(),
    }])
    .unwrap();
    log.append(&[MetaRec::Topic(spec("a.t.v1", 2, 0.5, 1000)), commit(k("g2", "", 1), 4)]).unwrap();
    log.sync().unwrap();
    let before = std::fs::metadata(t.0.join(FILE)).unwrap().len();
    drop(log);
    let (log, state) = MetaLog::open(&t.0).unwrap();
    let want = MetaState {
        topics: [("a.t.v1".to_string(), spec("a.t.v1", 2, 0.5, 1000))].into(),
        commits: [(k("g2", "", 1), 4), (key("b.t.v1", "app", "g1", "", 0), 7)].into(),
    };
    assert_eq!(state, want);
    assert_eq!(log.state, want);
    // Compacted: one record per topic and commit, no temp file left.
    let after = std::fs::metadata(t.0.join(FILE)).unwrap().len();
    assert!(after < before, "{after} {before}");
    assert!(!t.0.join(TMP).exists());
    drop(log);
    assert_eq!(MetaLog::open(&t.0).unwrap().1, want);
}

#[test]
fn torn_tail_is_cut() {
    let t = TempDir::new("tmeta-torn");
    let (mut log, _) = MetaLog::open(&t.0).unwrap();
    log.append(&[MetaRec::Topic(spec("x.y.z", 1, 1.0, -1))]).unwrap();
    log.append(&[commit(key("x.y.z", "a", "g", "", 0), 10)]).unwrap();
    drop(log);
    let path = t.0.join(FILE);
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 2).unwrap();
    let (mut log, state) = MetaLog::open(&t.0).unwrap();
    assert_eq!(state.topics.len(), 1);
    assert!(state.commits.is_empty());
    log.append(&[commit(key("x.y.z", "a", "g", "", 0), 11)]).unwrap();
    drop(log);
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\x30\0\0\0junk").unwrap();
    let (_, state) = MetaLog::open(&t.0).unwrap();
    assert_eq!(state.commits.values().copied().collect::<Vec<_>>(), vec![11]);
    // Not a meta log at all: an error, the file left alone.
    std::fs::write(&path, b"something else entirely").unwrap();
    assert!(MetaLog::open(&t.0).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"something else entirely");
}

#[test]
fn compacts_while_running_once_it_grows() {
    let t = TempDir::new("tmeta-grow");
    let (mut log, _) = MetaLog::open(&t.0).unwrap();
    log.compact_at = 4096;
    let mut shrank = 0;
    for i in 0..500 {
        let before = log.len;
        log.append(&[commit(key("a.b.c", "app", "g", "", 0), i)]).unwrap();
        if log.len < before {
            shrank += 1;
            // Rewritten as the state: the header and one commit.
            assert_eq!(log.len, std::fs::metadata(t.0.join(FILE)).unwrap().len());
            assert!(log.len < 100, "{}", log.len);
        }
    }
    assert_eq!(shrank, 1);
    assert!(log.compact_at >= COMPACT_MIN);
    drop(log);
    let (_, state) = MetaLog::open(&t.0).unwrap();
    assert_eq!(state.commits.values().copied().collect::<Vec<_>>(), vec![499]);
}

#[test]
fn a_failed_append_leaves_nothing() {
    let t = TempDir::new("tmeta-fail");
    let (mut log, _) = MetaLog::open(&t.0).unwrap();
    log.append(&[commit(key("a.b.c", "app", "g", "", 0), 1)]).unwrap();
    let len = log.len;
    log.file = File::open(t.0.join(FILE)).unwrap();
    assert_eq!(log.append(&[commit(key("a.b.c", "app", "g", "", 0), 2)]), Err(StoreFail::Io));
    assert_eq!(std::fs::metadata(t.0.join(FILE)).unwrap().len(), len);
    assert_eq!(log.state.commits.values().copied().collect::<Vec<_>>(), vec![1]);
}
