//! Log truncation, full-state transfer, resumed transfers and bundle files
//! ([P97 §3.3–3.4, §4.1]; acceptance tests AE-3 and AE-4).

use bayou_core::bundle::{self, BundleError, ImportError};
use bayou_core::{
    ChunkLimits, Item, Op, ProtocolError, Replica, Retention, Role, ServerId, SessionSender, View,
    WriteStatus,
};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

/// One whole one-way session from `from` to `to`, in chunks of `limits`.
fn sync(from: &mut Replica, to: &mut Replica, limits: ChunkLimits) -> usize {
    let base = to.summary();
    let mut sender = SessionSender::new(base.clone());
    let mut chunks = Vec::new();
    while let Some(c) = sender.next_chunk(from, limits) {
        chunks.push(c);
    }
    let n = chunks.len();
    to.receive_session(&base, chunks).unwrap();
    n
}

fn small() -> ChunkLimits {
    ChunkLimits {
        items: 2,
        bytes: 1 << 20,
    }
}

/// P commits 10 writes of A to keys k0..k4; A truncates them all.
fn truncated_pair() -> (Replica, Replica) {
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    let mut a = Replica::new(s("A"), Role::Secondary);
    for i in 0..10u64 {
        a.client_write(i + 1, Op::put(format!("k{}", i % 5), format!("v{i}")));
    }
    sync(&mut a, &mut p, small());
    sync(&mut p, &mut a, small());
    assert_eq!(a.csn(), 10);
    assert_eq!(a.checkpoint(Some(0)), 10);
    assert_eq!(a.osn(), 10);
    assert_eq!(a.retained_len(), 0);
    assert!(a.take_checkpoint().is_some());
    (p, a)
}

#[test]
fn a_receiver_behind_the_truncation_point_gets_the_database_and_keeps_its_own_writes() {
    // AE-3 [P97 §3.3]: R.CSN < S.OSN → full DB transfer; R installs the DB,
    // O := S.O, OSN := S.OSN, drops covered writes, and keeps its own
    // tentative writes not covered by S.O, which still reach the primary.
    let (mut p, mut a) = truncated_pair();
    let mut r = Replica::new(s("R"), Role::Secondary);
    r.client_write(100, Op::put("mine", "1"));
    let chunks = sync(&mut a, &mut r, small());
    assert!(chunks >= 3, "5 keys in parts of 2: {chunks} chunks");
    assert_eq!(r.csn(), 10);
    assert_eq!(r.osn(), 10);
    assert_eq!(r.omitted(), a.commit_vv());
    assert_eq!(r.db(View::Committed), a.db(View::Committed));
    assert_eq!(r.get(b"mine", View::Full).unwrap().as_ref(), b"1");
    assert_eq!(r.tentative_len(), 1);
    let cp = r
        .take_checkpoint()
        .expect("the install is persisted as a checkpoint");
    assert_eq!(cp.osn, 10);
    // R's own write still reaches the primary and commits.
    sync(&mut r, &mut p, small());
    sync(&mut p, &mut r, small());
    assert_eq!(r.csn(), 11);
    assert_eq!(r.tentative_len(), 0);
    assert_eq!(r.db(View::Full), p.db(View::Full));
    // A truncated write is known, committed and discarded.
    let first = a.omitted().iter().next().map(|(s, _)| s.clone()).unwrap();
    assert_eq!(
        r.status(&bayou_core::WriteId::new(1, first)),
        WriteStatus::Truncated
    );
}

#[test]
fn tentative_writes_the_snapshot_covers_are_dropped_not_run_twice() {
    // R holds some of A's writes tentatively; the snapshot reflects them:
    // they leave R's log, and the database counts them once.
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut r = Replica::new(s("R"), Role::Secondary);
    let counter = |n: u64| {
        Op::parse(&format!(
            r#"BAYOU{{"update":[],"merge":"let v = get(\"c\"); if v == () {{ put(\"c\", \"{n}\"); }} else {{ put(\"c\", (parse_int(v) + {n}).to_string()); }}","check":{{"query":"false","expected":"true"}}}}"#
        ))
        .unwrap()
    };
    for i in 1..=4 {
        a.client_write(i, counter(i));
    }
    sync(&mut a, &mut r, small()); // R holds all four tentatively
    assert_eq!(r.get(b"c", View::Full).unwrap().as_ref(), b"10");
    sync(&mut a, &mut p, small());
    sync(&mut p, &mut a, small());
    a.checkpoint(Some(0));
    sync(&mut a, &mut r, small());
    assert_eq!(r.tentative_len(), 0);
    assert_eq!(r.retained_len(), 0);
    assert_eq!(r.get(b"c", View::Full).unwrap().as_ref(), b"10");
    assert_eq!(r.get(b"c", View::Committed).unwrap().as_ref(), b"10");
}

#[test]
fn a_cut_transfer_resumes_after_the_last_staged_key() {
    let (_, mut a) = truncated_pair();
    let mut r = Replica::new(s("R"), Role::Secondary);
    let base = r.summary();
    let mut sender = SessionSender::new(base.clone());
    let one = ChunkLimits {
        items: 1,
        bytes: 1 << 20,
    };
    let first = sender.next_chunk(&mut a, one).unwrap();
    let second = sender.next_chunk(&mut a, one).unwrap();
    r.receive_session(&base, [first, second]).unwrap();
    assert_eq!(r.csn(), 0, "nothing installed before the last part");
    let resumed = r.summary();
    let resume = resumed.resume.clone().expect("R says where it got to");
    assert_eq!(resume.csn, 10);
    assert_eq!(resume.after.as_ref(), b"k1");
    // A new session continues after k1: three more keys, nothing resent.
    let mut sender = SessionSender::new(resumed.clone());
    let mut entries = 0;
    let mut chunks = Vec::new();
    while let Some(c) = sender.next_chunk(&mut a, one) {
        if let bayou_core::Chunk::Snapshot(p) = &c {
            entries += p.entries.len();
        }
        chunks.push(c);
    }
    assert_eq!(entries, 3);
    r.receive_session(&resumed, chunks).unwrap();
    assert_eq!(r.csn(), 10);
    assert_eq!(r.db(View::Committed), a.db(View::Committed));
}

#[test]
fn a_part_that_skips_staged_keys_is_refused() {
    let (_, mut a) = truncated_pair();
    let mut r = Replica::new(s("R"), Role::Secondary);
    let mut sender = SessionSender::new(r.summary());
    let one = ChunkLimits {
        items: 1,
        bytes: 1 << 20,
    };
    let _lost = sender.next_chunk(&mut a, one).unwrap();
    let second = sender.next_chunk(&mut a, one).unwrap();
    assert!(matches!(
        r.receive_chunk(second),
        Err(ProtocolError::SnapshotGap { .. })
    ));
    assert_eq!(r.csn(), 0);
}

#[test]
fn a_part_with_keys_out_of_order_is_refused() {
    let mut r = Replica::new(s("R"), Role::Secondary);
    let part = |after: Option<&str>, keys: &[&str]| {
        bayou_core::Chunk::Snapshot(bayou_core::SnapshotPart {
            csn: 3,
            vv: bayou_core::VersionVector::new(),
            after: after.map(|a| bytes::Bytes::copy_from_slice(a.as_bytes())),
            entries: keys
                .iter()
                .map(|k| (bytes::Bytes::copy_from_slice(k.as_bytes()), "v".into()))
                .collect(),
            last: false,
        })
    };
    for bad in [part(None, &["b", "a"]), part(None, &["a", "a"])] {
        assert_eq!(r.receive_chunk(bad), Err(ProtocolError::SnapshotOrder(3)));
    }
    r.receive_chunk(part(None, &["a", "b"])).unwrap();
    assert_eq!(
        r.receive_chunk(part(Some("b"), &["b", "c"])),
        Err(ProtocolError::SnapshotOrder(3))
    );
    assert_eq!(r.summary().resume.unwrap().after.as_ref(), b"b");
}

#[test]
fn recovery_is_the_checkpoint_plus_the_retained_log() {
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    p.set_retention(Retention {
        writes: 3,
        bytes: u64::MAX,
        checkpoint_every: 4,
    });
    let mut items: Vec<Item> = Vec::new();
    let mut checkpoint = None;
    for i in 0..11u64 {
        p.client_write(i, Op::put(format!("k{}", i % 3), format!("v{i}")));
        items.extend(p.take_persist());
        if let Some(cp) = p.take_checkpoint() {
            items.retain(|it| !cp.covers(it));
            checkpoint = Some(cp);
        }
    }
    let cp = checkpoint.expect("a checkpoint every 4 commits");
    assert_eq!(cp.snapshot.csn, 8);
    assert_eq!(cp.osn, 5, "8 commits, 3 retained");
    assert_eq!(p.retained_len(), 6, "3 kept at the checkpoint, 3 since");
    let r = Replica::restore(
        s("P"),
        Role::Primary { autocommit: true },
        p.retention(),
        Some(&cp),
        items,
    )
    .unwrap();
    assert_eq!(r.csn(), 11);
    assert_eq!(r.osn(), 5);
    assert_eq!(r.vv(), p.vv());
    assert_eq!(r.db(View::Committed), p.db(View::Committed));
    assert_eq!(r.db(View::Full), p.db(View::Full));
    assert_eq!(r.log().collect::<Vec<_>>(), p.log().collect::<Vec<_>>());
}

#[test]
fn bundles_chain_without_a_network_and_refuse_what_does_not_fit() {
    // AE-4 [P97 §4.1]: A → file → B → file → C delivers A's writes to C.
    let (_, mut a) = truncated_pair();
    a.client_write(50, Op::put("late", "x"));
    let mut b = Replica::new(s("B"), Role::Secondary);
    let mut c = Replica::new(s("C"), Role::Secondary);
    let files = bundle::export(&mut a, b.summary(), 120, ChunkLimits::default());
    assert!(files.len() > 1, "split at 120 bytes: {} files", files.len());
    // Out of order: the second part needs the first.
    let second = bundle::decode(&files[1]).unwrap();
    assert!(matches!(
        b.import_bundle(&second),
        Err(ImportError::Stale { .. })
    ));
    assert_eq!(b.csn(), 0);
    for f in &files {
        b.import_bundle(&bundle::decode(f).unwrap()).unwrap();
    }
    assert_eq!(b.db(View::Full), a.db(View::Full));
    // Re-importing changes nothing.
    let before = b.summary();
    for f in &files {
        let r = b.import_bundle(&bundle::decode(f).unwrap()).unwrap();
        assert_eq!(r.new_writes + r.commits, 0);
    }
    assert_eq!(b.summary(), before);
    // B → file → C.
    for f in bundle::export(&mut b, c.summary(), 1 << 20, ChunkLimits::default()) {
        c.import_bundle(&bundle::decode(&f).unwrap()).unwrap();
    }
    assert_eq!(c.db(View::Full), a.db(View::Full));
    assert_eq!(c.get(b"late", View::Full).unwrap().as_ref(), b"x");
}

#[test]
fn damaged_truncated_and_foreign_files_are_refused() {
    let (_, mut a) = truncated_pair();
    let b = Replica::new(s("B"), Role::Secondary);
    let file = bundle::export(&mut a, b.summary(), 1 << 20, ChunkLimits::default()).remove(0);
    assert!(bundle::decode(&file).is_ok());
    assert_eq!(bundle::decode(b"hello world"), Err(BundleError::NotABundle));
    assert_eq!(bundle::decode(&[]), Err(BundleError::NotABundle));
    for cut in [10, 20, file.len() / 2, file.len() - 1] {
        assert!(
            matches!(bundle::decode(&file[..cut]), Err(BundleError::Truncated(_))),
            "cut at {cut}"
        );
    }
    for at in [14, 30, file.len() / 2, file.len() - 2] {
        let mut bad = file.clone();
        bad[at] ^= 0x40;
        assert!(
            matches!(bundle::decode(&bad), Err(BundleError::Checksum { .. })),
            "flip at {at}"
        );
    }
    // Version 1, from before writes carried author and signature, is
    // refused by its version, as is any other.
    for version in [1, 3] {
        let mut other = file.clone();
        other[8] = version;
        assert_eq!(
            bundle::decode(&other),
            Err(BundleError::UnsupportedVersion(version as u16))
        );
    }
}

#[test]
fn internal_collections_stay_bounded_whatever_the_history() {
    // A long history over few keys: every collection a replica keeps must
    // follow the retention window, the tentative writes and the key count,
    // never the number of writes ever made. Writes come from two servers,
    // some fail (INCR of a non-integer, remembered as an outcome while
    // retained), and the primary commits them in batches, so tentative
    // writes, undo records, outcomes and dirty keys all come and go.
    let retention = Retention {
        writes: 200,
        bytes: u64::MAX,
        checkpoint_every: 50,
    };
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = Replica::new(s("B"), Role::Secondary);
    for r in [&mut p, &mut a, &mut b] {
        r.set_retention(retention);
    }
    let limits = ChunkLimits {
        items: 64,
        bytes: 1 << 20,
    };
    let mut worst = bayou_core::MemoryReport::default();
    let rounds = 100u64;
    for round in 0..rounds {
        for i in 0..30u64 {
            let n = round * 30 + i;
            let key = format!("k{}", n % 10);
            let op = if n % 7 == 0 {
                Op::Incr {
                    key: key.into(),
                    by: 1,
                }
            } else {
                Op::put(key, format!("v{n}"))
            };
            if n % 2 == 0 {
                a.client_write(n + 1, op);
            } else {
                b.client_write(n + 1, op);
            }
        }
        // A hears from B before the primary commits, so it holds tentative
        // writes of two servers and undoes and redoes some.
        sync(&mut b, &mut a, limits);
        sync(&mut a, &mut p, limits);
        sync(&mut b, &mut p, limits);
        sync(&mut p, &mut a, limits);
        sync(&mut p, &mut b, limits);
        for r in [&mut p, &mut a, &mut b] {
            r.take_persist();
            r.take_checkpoint();
            let m = r.memory_report();
            worst.retained_writes = worst.retained_writes.max(m.retained_writes);
            worst.outcomes = worst.outcomes.max(m.outcomes);
            worst.dirty_keys = worst.dirty_keys.max(m.dirty_keys);
            worst.tentative_writes = worst.tentative_writes.max(m.tentative_writes);
            worst.executed = worst.executed.max(m.executed);
            worst.tentative_servers = worst.tentative_servers.max(m.tentative_servers);
            worst.full_keys = worst.full_keys.max(m.full_keys);
            worst.vv_entries = worst.vv_entries.max(m.vv_entries);
        }
    }
    assert_eq!(p.csn(), rounds * 30);
    for r in [&p, &a, &b] {
        let m = r.memory_report();
        assert_eq!(m.tentative_writes, 0, "{}: {m:?}", r.id());
        assert_eq!(m.tentative_servers, 0, "{}: {m:?}", r.id());
        assert_eq!(m.executed, 0, "{}: {m:?}", r.id());
        assert_eq!(m.unpersisted_items, 0, "{}: {m:?}", r.id());
        assert_eq!(r.db(View::Full), p.db(View::Full));
    }
    // 3,000 writes went through; the window is 200 writes plus at most one
    // checkpoint interval (50) plus one round (30) not yet truncated.
    assert!(worst.retained_writes <= 200 + 50 + 30, "{worst:?}");
    // Failed writes are remembered only while retained (about one in 7).
    assert!(
        worst.outcomes <= worst.retained_writes / 7 + 30,
        "{worst:?}"
    );
    assert!(worst.dirty_keys <= 10, "{worst:?}");
    assert!(worst.tentative_writes <= 60, "{worst:?}");
    assert!(worst.executed <= 60, "{worst:?}");
    assert!(worst.tentative_servers <= 2, "{worst:?}");
    assert!(worst.full_keys <= 10, "{worst:?}");
    assert!(worst.vv_entries <= 3, "{worst:?}");
}
