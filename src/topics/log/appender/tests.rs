//! `Appender`: queued appends written in offset order by whoever holds the log, answered once
//! each and in order; a worker never waits for the log, never rolls a segment, and never leaves
//! an append behind.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::super::tests::{TempDir, msg};
use super::*;

fn appender(dir: &TempDir, segment_bytes: u64) -> Appender {
    Appender::new(PartitionLog::open(&dir.0, segment_bytes).unwrap())
}

/// How many segment files the partition dir holds.
fn segment_files(dir: &TempDir) -> usize {
    std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
        .count()
}

/// A `Done` that records (first offset, result) into `log`.
/// Records each answer; the answer is handed its own append's messages back.
fn record(log: &Arc<Mutex<Vec<(i64, bool)>>>, first: i64) -> AppendDone {
    let log = log.clone();
    Box::new(move |msgs, r| {
        assert_eq!(msgs.first().map(|m| m.offset), Some(first), "the append's own messages");
        log.lock().unwrap().push((first, r.is_ok()))
    })
}

#[test]
fn a_flush_writes_everything_queued_in_one_append_and_answers_in_order() {
    let dir = TempDir::new("appender-order");
    let a = appender(&dir, 1 << 20);
    let answers = Arc::new(Mutex::new(Vec::new()));
    a.queue((0..3).map(|o| msg(o, 1)).collect::<Vec<_>>(), record(&answers, 0));
    a.queue((3..4).map(|o| msg(o, 1)).collect::<Vec<_>>(), record(&answers, 3));
    a.queue((4..9).map(|o| msg(o, 1)).collect::<Vec<_>>(), record(&answers, 4));
    assert!(!a.is_dirty());
    assert_eq!(a.flush(false), Flushed::Done);
    assert_eq!(*answers.lock().unwrap(), vec![(0, true), (3, true), (4, true)]);
    let reader = a.with_log(|log| log.reader());
    assert_eq!(reader.end(), 9);
    let got: Vec<i64> = reader.read(0, 100, usize::MAX).unwrap().iter().map(|m| m.offset).collect();
    assert_eq!(got, (0..9).collect::<Vec<_>>());
    assert!(a.take_dirty());
    assert!(!a.take_dirty());
    // Nothing queued: a flush writes and answers nothing.
    assert_eq!(a.flush(false), Flushed::Done);
    assert_eq!(answers.lock().unwrap().len(), 3);
}

#[test]
fn a_worker_leaves_its_appends_to_the_holder_of_the_log_who_writes_them_after() {
    let dir = TempDir::new("appender-holder");
    let a = Arc::new(appender(&dir, 1 << 20));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.with_log(|_| {
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })
        })
    };
    held_rx.recv().unwrap();
    a.queue(vec![msg(0, 1), msg(1, 1)], record(&answers, 0));
    // The log is taken: the worker neither waits nor writes.
    assert_eq!(a.flush(false), Flushed::Done);
    assert!(answers.lock().unwrap().is_empty());
    go_tx.send(()).unwrap();
    holder.join().unwrap();
    // `with_log` wrote what was queued while it held the log.
    assert_eq!(*answers.lock().unwrap(), vec![(0, true)]);
    assert_eq!(a.with_log(|log| log.latest()), 2);
}

#[test]
fn a_worker_never_rolls_a_segment_the_store_thread_does() {
    let dir = TempDir::new("appender-roll");
    // Room for a few records only: the batch below cannot fit.
    let a = appender(&dir, 2048);
    let answers = Arc::new(Mutex::new(Vec::new()));
    a.queue((0..20).map(|o| msg(o, 1)).collect::<Vec<_>>(), record(&answers, 0));
    assert_eq!(a.flush(false), Flushed::NeedsStore);
    assert!(answers.lock().unwrap().is_empty());
    // The store thread's `with_log` writes the queue once it lets the log go, rolling.
    a.with_log(|_| {});
    assert_eq!(a.with_log(|log| log.latest()), 20);
    assert_eq!(*answers.lock().unwrap(), vec![(0, true)]);
    let segments = segment_files(&dir);
    assert!(segments > 1, "the batch rolled the segment: {segments} segment files");
}

#[test]
fn a_failed_append_answers_every_queued_append_with_the_error() {
    let dir = TempDir::new("appender-fail");
    let a = appender(&dir, 1 << 20);
    let answers = Arc::new(Mutex::new(Vec::new()));
    // Offsets that do not follow the log's end: refused whole, nothing stored.
    a.queue(vec![msg(5, 1)], record(&answers, 5));
    a.queue(vec![msg(6, 1)], record(&answers, 6));
    assert_eq!(a.flush(false), Flushed::Done);
    assert_eq!(*answers.lock().unwrap(), vec![(5, false), (6, false)]);
    assert!(!a.is_dirty());
    assert_eq!(a.with_log(|log| log.latest()), 0);
}

/// Threads publish like workers (offsets taken and queued under one lock, then a flush at
/// once), racing a store thread that takes the log now and then: every append is written once,
/// the log is dense, and answers come in offset order.
#[test]
fn racing_workers_and_a_store_thread_lose_nothing_and_keep_order() {
    let dir = TempDir::new("appender-race");
    let a = Arc::new(appender(&dir, 64 << 10));
    let topic_lock = Arc::new(Mutex::new(0i64));
    let answered = Arc::new(Mutex::new(Vec::new()));
    const THREADS: i64 = 4;
    const PUBS: i64 = 400;
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (a, topic_lock, answered) = (a.clone(), topic_lock.clone(), answered.clone());
            std::thread::spawn(move || {
                for i in 0..PUBS {
                    {
                        let mut next = topic_lock.lock().unwrap();
                        let n = 1 + (i % 3);
                        let msgs = (*next..*next + n).map(|o| msg(o, 1)).collect::<Vec<_>>();
                        a.queue(msgs, record(&answered, *next));
                        *next += n;
                    }
                    if a.flush(false) == Flushed::NeedsStore {
                        a.with_log(|_| {});
                    }
                }
            })
        })
        .collect();
    let stop = Arc::new(AtomicI64::new(0));
    let store = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            while stop.load(Ordering::Relaxed) == 0 {
                a.with_log(|log| log.sync()).unwrap();
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    stop.store(1, Ordering::Relaxed);
    store.join().unwrap();
    let total = *topic_lock.lock().unwrap();
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len() as i64, THREADS * PUBS);
    assert!(answered.iter().all(|(_, ok)| *ok));
    assert!(answered.windows(2).all(|w| w[0].0 < w[1].0), "answers in offset order");
    let reader = a.with_log(|log| log.reader());
    assert_eq!((reader.oldest(), reader.end()), (0, total));
    let mut next = 0;
    while next < total {
        let got = reader.read(next, 1000, usize::MAX).unwrap();
        for m in &got {
            assert_eq!(m.offset, next);
            assert_eq!(*m.payload, *msg(next, 1).payload);
            next += 1;
        }
    }
    // The log rolled its 64 KiB segments on the way (whichever thread did it: a worker's
    // `NeedsStore` or the store thread's own flush, as the timing fell).
    let segments = segment_files(&dir);
    assert!(segments > 3, "{segments} segments");
}
