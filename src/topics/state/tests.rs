//! Unit and property tests of the topic state: assignment, joins and leaves, acks.
use super::*;

#[test]
fn assignment_table() {
    let parts = |p, k| (0..k).map(|i| assign(p, k, i)).collect::<Vec<_>>();
    assert_eq!(parts(4, 2), vec![0..2, 2..4]);
    assert_eq!(parts(4, 3), vec![0..2, 2..3, 3..4]);
    assert_eq!(parts(5, 2), vec![0..3, 3..5]);
    assert_eq!(parts(1, 1), vec![0..1]);
    assert_eq!(parts(20, 20)[19], 19..20);
}

/// Every partition is owned exactly once, contiguous, for every P and k <= P.
#[test]
fn assignment_property() {
    for p in 1..=64u32 {
        for k in 1..=p as usize {
            let mut next = 0;
            for i in 0..k {
                let r = assign(p, k, i);
                assert_eq!(r.start, next, "p={p} k={k} i={i}");
                assert!(r.len() as u32 == p / k as u32 || r.len() as u32 == p / k as u32 + 1);
                next = r.end;
            }
            assert_eq!(next, p);
        }
    }
}

fn conn(token: usize) -> ConnId {
    ConnId { worker: 0, token, generation: token as u64 }
}

fn state(p: u32) -> TopicState {
    TopicState {
        name: Arc::from("a.t.v1"),
        retention_hours: 1.0,
        retention_bytes: -1,
        parts: (0..p).map(|_| Part::new(0, 0)).collect(),
        rr: 0,
        groups: HashMap::new(),
        skipped: 0,
        redelivered: 0,
    }
}

/// A message with `payload` and nothing else, before `assign_offset`.
fn message(payload: Vec<u8>) -> Message {
    let (key, tag, msg_id) = (Vec::new(), Vec::new(), Vec::new());
    Message { offset: 0, time_ms: 0, key, tag, msg_id, payload }
}

fn gid() -> GroupId {
    GroupId { app: "a".into(), group: "g".into(), queue: String::new() }
}

fn owned(s: &TopicState, id: u64) -> Vec<u32> {
    let g = &s.groups[&gid()];
    let inst = g.instances.iter().find(|i| i.id == id).unwrap();
    inst.cursors.iter().map(|c| c.partition).collect()
}

/// Partitions move only on join and leave; cursors of kept partitions stay.
#[test]
fn join_leave_moves() {
    let mut s = state(4);
    let g = gid();
    assert!(s.join(&g, conn(1), false, Reset::Oldest, String::new(), 1).is_ok());
    assert_eq!(owned(&s, 1), vec![0, 1, 2, 3]);
    assert!(s.join(&g, conn(2), false, Reset::Oldest, String::new(), 2).is_ok());
    assert_eq!((owned(&s, 1), owned(&s, 2)), (vec![0, 1], vec![2, 3]));
    assert!(s.join(&g, conn(3), false, Reset::Oldest, String::new(), 3).is_ok());
    assert!(s.join(&g, conn(4), false, Reset::Oldest, String::new(), 4).is_ok());
    let refused = s.join(&g, conn(5), false, Reset::Oldest, String::new(), 5);
    assert!(matches!(refused, Err(JoinError::TooMany)));
    // mux shares the instance with the fewest connections, oldest first.
    let Ok((id, _, _)) = s.join(&g, conn(5), true, Reset::Oldest, String::new(), 5) else {
        panic!("mux join refused")
    };
    assert_eq!(id, 1);
    s.leave(&g, 2, conn(2));
    assert_eq!((owned(&s, 1), owned(&s, 3), owned(&s, 4)), (vec![0, 1], vec![2], vec![3]));
    // Instance 1 still has conn 5 after conn 1 leaves.
    s.leave(&g, 1, conn(1));
    assert_eq!(s.instances(&g), 3);
    s.leave(&g, 1, conn(5));
    assert_eq!((owned(&s, 3), owned(&s, 4)), (vec![0, 1], vec![2, 3]));
}

/// Random joins, leaves, pubs, fetches and acks: after every step each partition has
/// exactly one owner when any instance lives, owners hold contiguous runs in join order,
/// and only a join or a leave changes who owns what (a kept partition keeps its cursor).
#[test]
fn ownership_moves_only_on_join_and_leave() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for p in 1..=8u32 {
        let mut s = state(p);
        let g = gid();
        let mut live: Vec<(u64, ConnId)> = Vec::new();
        let mut next_id = 1;
        for _ in 0..300 {
            let before = owners(&s, p);
            let cursors_before = cursors(&s);
            let membership = match rnd(5) {
                0 if live.len() < p as usize => {
                    let c = conn(next_id as usize);
                    let joined = s.join(&g, c, false, Reset::Oldest, String::new(), next_id);
                    assert!(joined.is_ok());
                    live.push((next_id, c));
                    next_id += 1;
                    true
                }
                1 if !live.is_empty() => {
                    let (id, c) = live.remove(rnd(live.len() as u64) as usize);
                    s.leave(&g, id, c);
                    true
                }
                2 => {
                    let part = rnd(u64::from(p)) as u32;
                    let m = message(b"m".to_vec());
                    let (m, _) = s.assign_offset(part, m);
                    s.stored(part, &[m]);
                    false
                }
                3 if !live.is_empty() => {
                    let (id, _) = live[rnd(live.len() as u64) as usize];
                    let _ = s.fetch(&g, id, 1 + rnd(4) as usize);
                    false
                }
                _ => {
                    let part = rnd(u64::from(p)) as i64;
                    let latest = s.parts[part as usize].stored;
                    if latest > 0 {
                        let _ = s.ack(&g, &[(part, rnd(latest as u64) as i64)]);
                    }
                    false
                }
            };
            let after = owners(&s, p);
            if !membership {
                assert_eq!(before, after, "ownership moved without a join or leave");
            }
            if live.is_empty() {
                assert!(after.iter().all(Option::is_none));
                continue;
            }
            assert!(after.iter().all(Option::is_some), "a partition without an owner");
            // Contiguous runs, in join order.
            let order: Vec<u64> = s.groups[&g].instances.iter().map(|i| i.id).collect();
            let mut last = 0;
            for o in after.iter().flatten() {
                let pos = order.iter().position(|x| x == o).unwrap();
                assert!(pos >= last, "runs out of join order: {after:?} {order:?}");
                last = pos;
            }
            // A partition kept by its instance keeps its cursor (unless acks moved it).
            if membership {
                for (part, (owner, cur)) in cursors_before {
                    if after[part as usize] == Some(owner) {
                        let now = cursors(&s)[&part].1;
                        assert!(now >= cur, "kept partition {part} lost its cursor");
                    }
                }
            }
        }
    }
}

fn owners(s: &TopicState, p: u32) -> Vec<Option<u64>> {
    let mut o = vec![None; p as usize];
    if let Some(g) = s.groups.get(&gid()) {
        for inst in &g.instances {
            for c in &inst.cursors {
                assert!(o[c.partition as usize].is_none(), "partition owned twice");
                o[c.partition as usize] = Some(inst.id);
            }
        }
    }
    o
}

fn cursors(s: &TopicState) -> HashMap<u32, (u64, i64)> {
    let mut m = HashMap::new();
    if let Some(g) = s.groups.get(&gid()) {
        for inst in &g.instances {
            for c in &inst.cursors {
                m.insert(c.partition, (inst.id, c.next));
            }
        }
    }
    m
}

#[test]
fn acks_validate_then_apply() {
    let mut s = state(2);
    for p in 0..2 {
        for _ in 0..3 {
            let m = message(b"x".to_vec());
            let (m, _) = s.assign_offset(p, m);
            s.stored(p, &[m]);
        }
    }
    let g = gid();
    assert_eq!(s.ack(&g, &[(0, 1), (2, 0)]).err(), Some("ack with bad partition"));
    assert_eq!(s.ack(&g, &[(0, 1), (1, 3)]).err(), Some("ack with bad offset"));
    assert_eq!(s.ack(&g, &[(0, -2)]).err(), Some("ack with bad offset"));
    assert!(s.groups.get(&g).is_none_or(|g| g.committed.iter().all(Option::is_none)));
    assert_eq!(s.ack(&g, &[(0, 1), (1, 2)]).map(|r| r.len()).ok(), Some(2));
    // Lower ack ignored.
    assert_eq!(s.ack(&g, &[(0, 0)]).map(|r| r.len()).ok(), Some(0));
    assert_eq!(s.groups[&g].committed, vec![Some(1), Some(2)]);
}

#[test]
fn tail_keeps_the_newest_and_frees_the_evicted_in_groups() {
    let mut s = state(1);
    let mut first = None;
    for i in 0..TAIL_MSGS + EVICT_MSGS {
        let m = message(vec![i as u8; 10]);
        let (m, _) = s.assign_offset(0, m);
        if i == 0 {
            first = Some(m.clone());
        }
        s.stored(0, &[m]);
        let part = &s.parts[0];
        // The tail never holds more than its bound, evicted ones wait at most one group.
        assert_eq!(part.tail.len(), (i + 1).min(TAIL_MSGS), "after {i}");
        assert!(part.evicted.len() < EVICT_MSGS, "after {i}");
        let first = first.as_ref().expect("kept");
        let evicted = i >= TAIL_MSGS;
        assert_eq!(part.get(0).is_some(), !evicted, "after {i}");
        // Held by this test, and by the tail or the evicted group until it is freed.
        let freed = i + 1 >= TAIL_MSGS + EVICT_MSGS;
        assert_eq!(Arc::strong_count(first), if freed { 1 } else { 2 }, "after {i}");
    }
    let part = &s.parts[0];
    let newest = (TAIL_MSGS + EVICT_MSGS - 1) as i64;
    assert_eq!(part.get(newest).map(|m| m.payload[0]), Some(newest as u8));
    assert_eq!(
        part.get(newest - TAIL_MSGS as i64 + 1).map(|m| m.offset),
        Some(newest - TAIL_MSGS as i64 + 1)
    );
    assert!(part.get(newest - TAIL_MSGS as i64).is_none());
}
