//! The topics store thread end to end through its channel, against real files.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::*;
use crate::topics::log::tests::{TempDir, msg};

fn cfg(dir: &Path, fsync: Fsync) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        fsync,
        fsync_interval: Duration::from_millis(20),
        segment_bytes: 2048,
        retention_check: Duration::from_millis(20),
        job_tick: Duration::from_millis(100),
    }
}

fn spec(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec { name: name.into(), partitions, retention_hours: 168.0, retention_bytes: -1 }
}

type Retained = Arc<Mutex<Vec<(String, u32, i64)>>>;

fn start(cfg: EngineConfig) -> (Sender<TReq>, JoinHandle<()>, Opened, Retained) {
    let (engine, opened) = TopicEngine::open(cfg).unwrap();
    let (tx, rx) = channel();
    let retained: Retained = Arc::default();
    let r = retained.clone();
    let on = Box::new(move |t: &str, p: u32, o: i64| r.lock().unwrap().push((t.into(), p, o)));
    let h = std::thread::spawn(move || engine.run(rx, on));
    (tx, h, opened, retained)
}

fn create(tx: &Sender<TReq>, spec: TopicSpec) -> Result<Vec<PartitionReader>, StoreFail> {
    let (dtx, drx) = channel();
    tx.send(TReq::Topic { spec, done: Box::new(move |r| dtx.send(r).unwrap()) }).unwrap();
    drx.recv_timeout(Duration::from_secs(10)).unwrap().map(|parts| parts.readers)
}

fn append_req(
    topic: &str,
    p: u32,
    offsets: std::ops::Range<i64>,
    id: usize,
    out: &Sender<(usize, Result<(), StoreFail>)>,
) -> TReq {
    append_at(topic, p, offsets, crate::server::unix_ms(), id, out)
}

fn append_at(
    topic: &str,
    p: u32,
    offsets: std::ops::Range<i64>,
    time_ms: u64,
    id: usize,
    out: &Sender<(usize, Result<(), StoreFail>)>,
) -> TReq {
    let out = out.clone();
    TReq::Append {
        topic: Arc::from(topic),
        partition: p,
        msgs: offsets.map(|o| msg(o, time_ms)).collect(),
        done: Box::new(move |r| out.send((id, r)).unwrap()),
    }
}

fn answers(
    rx: &Receiver<(usize, Result<(), StoreFail>)>,
    n: usize,
) -> Vec<(usize, Result<(), StoreFail>)> {
    (0..n).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect()
}

#[test]
fn nothing_on_disk_before_the_first_topic_then_all_of_it_after_a_restart() {
    let t = TempDir::new("teng");
    let dir = t.0.join("topics");
    for fsync in [Fsync::Always, Fsync::Interval] {
        let _ = std::fs::remove_dir_all(&t.0);
        let (tx, h, opened, _) = start(cfg(&dir, fsync));
        assert!(opened.topics.is_empty() && opened.commits.is_empty());
        tx.send(TReq::Shutdown).unwrap();
        h.join().unwrap();
        assert!(!t.0.exists(), "created {}", t.0.display());

        let (tx, h, _, _) = start(cfg(&dir, fsync));
        let readers = create(&tx, spec("a.t.v1", 2)).unwrap();
        assert_eq!(readers.len(), 2);
        assert!(dir.join("meta.log").exists() && dir.join("a.t.v1/1").is_dir());
        // Appends queued together are one batch, answered in arrival order.
        let (otx, orx) = channel();
        let mut next = [0i64; 2];
        for id in 0..40 {
            let p = (id % 2) as u32;
            let n = 1 + (id % 3) as i64;
            let from = next[p as usize];
            next[p as usize] += n;
            tx.send(append_req("a.t.v1", p, from..from + n, id, &otx)).unwrap();
        }
        // An unknown topic or partition fails alone.
        tx.send(append_req("nope", 0, 0..1, 40, &otx)).unwrap();
        tx.send(append_req("a.t.v1", 2, 0..1, 41, &otx)).unwrap();
        let k = CommitKey {
            topic: "a.t.v1".into(),
            app: "app".into(),
            group: "g".into(),
            queue: String::new(),
            partition: 1,
        };
        let (mtx, mrx) = channel();
        let recs = vec![MetaRec::Commit { key: k.clone(), offset: 7 }];
        tx.send(TReq::Meta { recs, done: Box::new(move |r| mtx.send(r).unwrap()) }).unwrap();
        let got = answers(&orx, 42);
        assert_eq!(got.iter().map(|a| a.0).collect::<Vec<_>>(), (0..42).collect::<Vec<_>>());
        assert!(got[..40].iter().all(|a| a.1.is_ok()));
        assert_eq!((got[40].1, got[41].1), (Err(StoreFail::Io), Err(StoreFail::Io)));
        assert_eq!(mrx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
        assert_eq!((readers[0].end(), readers[1].end()), (next[0], next[1]));
        // Creating it again with the same count changes its retention; another count is refused.
        let again =
            TopicSpec { retention_hours: 2.5, retention_bytes: 1 << 20, ..spec("a.t.v1", 2) };
        assert_eq!(create(&tx, again.clone()).unwrap()[1].end(), next[1]);
        assert_eq!(create(&tx, spec("a.t.v1", 3)).unwrap_err(), StoreFail::Io);
        tx.send(TReq::Shutdown).unwrap();
        h.join().unwrap();

        let (tx, h, opened, _) = start(cfg(&dir, fsync));
        assert_eq!(opened.topics.len(), 1);
        assert_eq!(opened.topics[0].spec, again);
        assert_eq!(opened.commits, [(k, 7)].into());
        for (p, r) in opened.topics[0].parts.readers.iter().enumerate() {
            assert_eq!((r.oldest(), r.end()), (0, next[p]));
            let all = r.read(0, 1000, usize::MAX).unwrap();
            assert_eq!(
                all.iter().map(|m| m.offset).collect::<Vec<_>>(),
                (0..next[p]).collect::<Vec<_>>()
            );
            assert_eq!(all[3], *msg(3, all[3].time_ms));
        }
        drop(tx); // every sender gone: the thread ends as on Shutdown
        h.join().unwrap();
    }
}

#[test]
fn retention_runs_on_its_own_and_reports() {
    let t = TempDir::new("teng-ret");
    let (tx, h, _, retained) = start(cfg(&t.0, Fsync::Interval));
    // 0.36 ms: every message (time_ms = 1, 1970) expired long ago.
    let s = TopicSpec { retention_hours: 1e-7, ..spec("a.r.v1", 1) };
    let readers = create(&tx, s).unwrap();
    let (otx, orx) = channel();
    tx.send(append_at("a.r.v1", 0, 0..100, 1, 0, &otx)).unwrap();
    assert!(answers(&orx, 1)[0].1.is_ok());
    let deadline = Instant::now() + Duration::from_secs(10);
    while readers[0].oldest() < 100 {
        assert!(Instant::now() < deadline, "retention did not run");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(readers[0].end(), 100);
    tx.send(TReq::Shutdown).unwrap();
    h.join().unwrap();
    let seen = retained.lock().unwrap().clone();
    assert_eq!(seen.last(), Some(&("a.r.v1".to_string(), 0, 100)));
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "{seen:?}");
}

#[test]
fn an_unusable_dir_names_the_variable() {
    let t = TempDir::new("teng-bad");
    std::fs::write(&t.0, b"a file").unwrap();
    let e = TopicEngine::open(cfg(&t.0, Fsync::Always)).err().unwrap();
    assert!(e.contains("ESUB_DATA_DIR"), "{e}");
    let _ = std::fs::remove_file(&t.0);
    std::fs::create_dir_all(&t.0).unwrap();
    std::fs::write(t.0.join("meta.log"), b"not a meta log at all").unwrap();
    let e = TopicEngine::open(cfg(&t.0, Fsync::Always)).err().unwrap();
    assert!(e.contains("ESUB_DATA_DIR") && e.contains("meta"), "{e}");
}

#[test]
fn long_names_get_a_short_dir() {
    let root = Path::new("/x");
    assert_eq!(topic_dir(root, "a.b.c"), root.join("a.b.c"));
    let long = "a".repeat(150) + "." + &"b".repeat(140);
    let d = topic_dir(root, &long);
    let name = d.file_name().unwrap().to_str().unwrap();
    assert!(name.len() <= DIR_NAME_MAX, "{}", name.len());
    assert_ne!(topic_dir(root, &(long.clone() + "x")), d);
}

/// Copies a directory tree (the state a power cut would find of what was synced, plus more).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The newest segment of partition `p` of `topic` under `dir`.
fn last_segment(dir: &Path, topic: &str, p: u32) -> PathBuf {
    let pdir = topic_dir(dir, topic).join(p.to_string());
    let mut segs: Vec<PathBuf> = std::fs::read_dir(pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// `ESUB_FSYNC=always` syncs one journal per group, not the partitions: a partition whose tail
/// was lost (it was never synced) gets it back from the journal at start-up, and only then.
#[test]
fn always_mode_restores_a_partition_tail_from_the_journal() {
    let t = TempDir::new("teng-journal");
    let dir = t.0.join("topics");
    let (tx, h, _, _) = start(cfg(&dir, Fsync::Always));
    create(&tx, spec("a.j.v1", 2)).unwrap();
    let (atx, arx) = channel();
    for i in 0..5 {
        tx.send(append_req("a.j.v1", 0, i * 4..i * 4 + 4, i as usize, &atx)).unwrap();
        tx.send(append_req("a.j.v1", 1, i * 2..i * 2 + 2, 10 + i as usize, &atx)).unwrap();
    }
    assert!(answers(&arx, 10).iter().all(|(_, r)| r.is_ok()));
    assert!(journal::path(&dir).exists());
    // What a power cut could leave: the journal whole, partition 0 without its last records.
    let cut = t.0.join("cut");
    copy_tree(&dir, &cut);
    let seg = last_segment(&cut, "a.j.v1", 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 700).unwrap();
    // The same without the journal: the loss shows, so the test below can fail.
    let bare = t.0.join("bare");
    copy_tree(&cut, &bare);
    std::fs::remove_file(journal::path(&bare)).unwrap();
    let (_, opened) = TopicEngine::open(cfg(&bare, Fsync::Always)).unwrap();
    assert!(opened.topics[0].parts.readers[0].end() < 20);

    let (_, opened) = TopicEngine::open(cfg(&cut, Fsync::Always)).unwrap();
    let readers = &opened.topics[0].parts.readers;
    assert_eq!((readers[0].end(), readers[1].end()), (20, 10));
    let got: Vec<Message> = readers[0]
        .read(0, 100, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|m| Message { time_ms: 0, ..m })
        .collect();
    let want: Vec<Message> =
        (0..20).map(|o| Message { time_ms: 0, ..(*msg(o, 0)).clone() }).collect();
    assert_eq!(got, want);
    // Replayed, synced, and started over.
    assert!(journal::read(&cut).unwrap().unwrap().1.entries.is_empty());

    drop(tx);
    h.join().unwrap();
    // A clean stop checkpoints: the journal holds nothing to replay.
    assert!(journal::read(&dir).unwrap().unwrap().1.entries.is_empty());
}
