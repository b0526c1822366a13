//! The journal's format: entries read back whole and in order; a torn or corrupt tail ends it.

use std::io::Write;

use super::*;
use crate::topics::log::tests::{TempDir, msg};

fn msgs(range: std::ops::Range<i64>) -> Vec<Arc<Message>> {
    range.map(|o| msg(o, 7)).collect()
}

fn plain(v: &[Arc<Message>]) -> Vec<Message> {
    v.iter().map(|m| (**m).clone()).collect()
}

#[test]
fn groups_read_back_whole_and_in_order_and_a_torn_tail_ends_the_journal() {
    let t = TempDir::new("journal-read");
    std::fs::create_dir_all(&t.0).unwrap();
    assert_eq!(read(&t.0).unwrap(), (Vec::new(), 0), "no journal: nothing to replay");
    let mut j = Journal::open(&t.0).unwrap();
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
    assert_eq!(read(&t.0).unwrap(), (want.clone(), 0));
    // Half of a group written when the power went: the whole entries before it stand.
    let mut half = Vec::new();
    let mut g = Journal { file: tempfile_like(&t), len: 0, buf: Vec::new() };
    g.add("c.y.v1", 2, &msgs(0..4));
    half.extend_from_slice(&g.buf[..g.buf.len() - 5]);
    std::fs::OpenOptions::new().append(true).open(path(&t.0)).unwrap().write_all(&half).unwrap();
    assert_eq!(read(&t.0).unwrap(), (want.clone(), half.len() as u64));
    // Garbage instead of an entry: the same.
    let mut j = Journal::open(&t.0).unwrap();
    j.reset().unwrap();
    assert_eq!(read(&t.0).unwrap(), (Vec::new(), 0));
    j.add("a.orders.v1", 0, &msgs(0..1));
    j.commit().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(path(&t.0))
        .unwrap()
        .write_all(&[0xff; 40])
        .unwrap();
    let (entries, torn) = read(&t.0).unwrap();
    assert_eq!((entries.len(), torn), (1, 40));
}

/// A scratch file for a `Journal` used only to encode.
fn tempfile_like(t: &TempDir) -> File {
    File::options().create(true).append(true).open(t.0.join("scratch")).unwrap()
}

#[test]
fn checkpoint_size_is_reached_by_length() {
    let t = TempDir::new("journal-size");
    std::fs::create_dir_all(&t.0).unwrap();
    let mut j = Journal::open(&t.0).unwrap();
    assert!(!j.needs_checkpoint());
    j.len = CHECKPOINT_BYTES;
    assert!(j.needs_checkpoint());
    j.reset().unwrap();
    assert!(!j.needs_checkpoint());
    assert_eq!(std::fs::metadata(path(&t.0)).unwrap().len(), 0);
}
