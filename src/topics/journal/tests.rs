//! The journal's format: entries read back whole and in order; a torn or corrupt tail ends it;
//! a checkpoint starts a new generation over the same, already written, space.

use std::os::unix::fs::FileExt;

use super::*;
use crate::topics::log::tests::{TempDir, msg};

fn msgs(range: std::ops::Range<i64>) -> Vec<Arc<Message>> {
    range.map(|o| msg(o, 7)).collect()
}

fn plain(v: &[Arc<Message>]) -> Vec<Message> {
    v.iter().map(|m| (**m).clone()).collect()
}

fn entries(dir: &Path) -> Vec<Entry> {
    read(dir).unwrap().expect("a journal").1.entries
}

/// A new journal in a scratch directory of its own.
fn fresh(name: &str) -> (TempDir, Journal) {
    let t = TempDir::new(name);
    std::fs::create_dir_all(&t.0).unwrap();
    let (j, _) = Journal::open(&t.0).unwrap();
    (t, j)
}

fn raw(dir: &Path) -> File {
    File::options().read(true).write(true).open(path(dir)).unwrap()
}

#[test]
fn groups_read_back_whole_and_in_order_and_a_torn_tail_ends_the_journal() {
    let t = TempDir::new("journal-read");
    std::fs::create_dir_all(&t.0).unwrap();
    assert_eq!(read(&t.0).unwrap(), None, "no journal: nothing to replay");
    let (mut j, found) = Journal::open(&t.0).unwrap();
    assert_eq!(found, Parsed { entries: Vec::new(), used: 0, torn: false });
    assert!(!j.pending());
    j.add("a.orders.v1", 0, &msgs(0..3));
    j.add("a.orders.v1", 3, &msgs(10..12));
    assert!(j.pending());
    j.commit().unwrap();
    j.add("b.x.v1", 1, &msgs(5..6));
    j.commit().unwrap();
    let want = vec![
        ("a.orders.v1".to_string(), 0, plain(&msgs(0..3))),
        ("a.orders.v1".to_string(), 3, plain(&msgs(10..12))),
        ("b.x.v1".to_string(), 1, plain(&msgs(5..6))),
    ];
    let (generation, parsed) = read(&t.0).unwrap().unwrap();
    assert_eq!(generation, 1);
    assert_eq!((parsed.entries, parsed.torn), (want.clone(), false));
    let end = HEAD + parsed.used as u64;
    // The space after the entries is written zeros: the file's size does not move per group.
    assert_eq!(std::fs::metadata(path(&t.0)).unwrap().len(), STEP);

    // Half of a group written when the power went: the whole entries before it stand.
    let mut half = Vec::new();
    encode_entry(&mut half, generation, "c.y.v1", 2, &msgs(0..4));
    half.truncate(half.len() - 5);
    raw(&t.0).write_all_at(&half, end).unwrap();
    let (_, parsed) = read(&t.0).unwrap().unwrap();
    assert_eq!((parsed.entries, parsed.torn), (want.clone(), true));
    // Reopened, the journal goes on from the last whole entry, over the torn one.
    let (mut j, found) = Journal::open(&t.0).unwrap();
    assert_eq!((found.entries, found.torn), (want.clone(), true));
    j.add("d.z.v1", 0, &msgs(1..2));
    j.commit().unwrap();
    let mut more = want.clone();
    more.push(("d.z.v1".to_string(), 0, plain(&msgs(1..2))));
    assert_eq!(entries(&t.0), more);

    // Garbage instead of an entry: the same.
    raw(&t.0).write_all_at(&[0xff; 40], HEAD + read(&t.0).unwrap().unwrap().1.used as u64).unwrap();
    let (_, parsed) = read(&t.0).unwrap().unwrap();
    assert_eq!((parsed.entries, parsed.torn), (more, true));
}

#[test]
fn a_checkpoint_starts_a_new_generation_over_the_old_entries() {
    let (t, mut j) = fresh("journal-generation");
    j.add("a.o.v1", 0, &msgs(0..6));
    j.add("a.o.v1", 1, &msgs(0..6));
    j.commit().unwrap();
    j.reset().unwrap();
    // The old entries are still in the file, but of generation 1: nothing to replay.
    let (generation, parsed) = read(&t.0).unwrap().unwrap();
    assert_eq!((generation, parsed.used, parsed.torn), (2, 0, false));
    assert!(parsed.entries.is_empty());
    // A shorter new group over them: only it is read; the old bytes after it end the journal
    // cleanly (an earlier generation's entry, or the rest of one: not a torn group).
    j.add("b.o.v1", 0, &msgs(9..10));
    j.commit().unwrap();
    let (_, parsed) = read(&t.0).unwrap().unwrap();
    assert_eq!(parsed.entries, vec![("b.o.v1".to_string(), 0, plain(&msgs(9..10)))]);
    // Reopened (a restart), the generation and position carry on.
    drop(j);
    let (mut j, found) = Journal::open(&t.0).unwrap();
    assert_eq!(found.entries.len(), 1);
    j.add("b.o.v1", 0, &msgs(10..11));
    j.commit().unwrap();
    assert_eq!(entries(&t.0).len(), 2);
    assert_eq!(read(&t.0).unwrap().unwrap().0, 2);
}

#[test]
fn a_torn_header_starts_the_journal_over() {
    let (t, mut j) = fresh("journal-header");
    j.add("a.o.v1", 0, &msgs(0..2));
    j.commit().unwrap();
    drop(j);
    raw(&t.0).write_all_at(&[0x55; 8], 4).unwrap();
    let (generation, parsed) = read(&t.0).unwrap().unwrap();
    assert_eq!((generation, parsed.entries.len()), (0, 0), "a bad header reads as nothing");
    let (j, found) = Journal::open(&t.0).unwrap();
    assert!(found.entries.is_empty());
    assert_eq!(j.generation, 1);
    assert_eq!(read(&t.0).unwrap().unwrap().0, 1);
}

#[test]
fn the_file_grows_in_steps_and_a_checkpoint_cuts_a_huge_one_back() {
    let (t, mut j) = fresh("journal-size");
    let size = || std::fs::metadata(path(&t.0)).unwrap().len();
    assert_eq!(size(), STEP);
    // A group that does not fit the space left: the file grows by whole steps to take it.
    let big = Message { payload: vec![7; STEP as usize], ..(*msg(0, 0)).clone() };
    j.add("a.o.v1", 0, &[Arc::new(big.clone())]);
    j.commit().unwrap();
    assert_eq!(size(), 2 * STEP);
    assert_eq!(entries(&t.0), vec![("a.o.v1".to_string(), 0, vec![big])]);
    assert!(!j.needs_checkpoint());
    j.len = CHECKPOINT_BYTES;
    assert!(j.needs_checkpoint());
    j.reset().unwrap();
    assert!(!j.needs_checkpoint());
    assert_eq!(size(), 2 * STEP, "the space is kept");
    // Grown past what is kept (by one group larger than a checkpoint): cut back.
    j.file.set_len(KEEP_BYTES + STEP).unwrap();
    j.cap = KEEP_BYTES + STEP;
    j.reset().unwrap();
    assert_eq!(size(), KEEP_BYTES);
    assert!(entries(&t.0).is_empty());
}
