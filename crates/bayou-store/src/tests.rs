use super::*;
use bayou_core::{Op, Summary, View};

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// Applies every pending change of `r` to `store`.
fn persist(r: &mut Replica, store: &mut RedbStore) {
    if let Some(b) = take_batch(r) {
        store.append(&b).unwrap();
    }
}

#[test]
fn new_directory_recovers_to_an_empty_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let r = recover(&mut store, Role::Secondary, Retention::default()).unwrap();
    assert_eq!(r.log().count(), 0);
    assert!(store.load().unwrap().state.is_none());
}

#[test]
fn appended_items_survive_reopen_with_state_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    let mut p = Replica::new(sid("P"), role);
    let mut b = Replica::new(sid("B"), Role::Secondary);
    b.client_write(5, Op::put("Z", "8"));
    b.client_write(6, Op::put("Y", "1"));
    {
        let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
        p.client_write(1, Op::put("X", "1"));
        persist(&mut p, &mut store);
        let items: Vec<Item> = b.items_for(&p.summary()).collect();
        p.receive(items).unwrap();
        p.client_write(10, Op::delete("X"));
        persist(&mut p, &mut store);
        // Two batches: one record each, 4 writes and 4 commits in all.
        assert_eq!(store.log_len(), 2);
        assert_eq!(store.retained_items(), 8);
    }
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let r = recover(&mut store, role, Retention::KEEP_ALL).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(r.log().collect::<Vec<_>>(), p.log().collect::<Vec<_>>());
    assert_eq!(r.vv(), p.vv());
    assert_eq!(r.csn(), 4);
    assert!(
        loaded.checkpoint.is_none(),
        "4 commits: no checkpoint due yet"
    );
    assert_eq!(r.get(b"Z", View::Committed).unwrap(), "8");
    assert!(r.get(b"X", View::Committed).is_none());
    assert_eq!(loaded.state.unwrap(), State::of(&p));
}

#[test]
fn a_tentative_replica_keeps_an_empty_checkpoint_until_commits_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let mut a = Replica::new(sid("A"), Role::Secondary);
    a.client_write(3, Op::put("K", "v"));
    persist(&mut a, &mut store);
    let loaded = store.load().unwrap();
    assert!(loaded.checkpoint.is_none());
    // The primary commits it; A learns by anti-entropy.
    let mut p = Replica::new(sid("P"), Role::Primary { autocommit: true });
    p.receive(a.items_for(&p.summary()).collect::<Vec<_>>())
        .unwrap();
    let s: Summary = a.summary();
    a.receive(p.items_for(&s).collect::<Vec<_>>()).unwrap();
    a.checkpoint(Some(0));
    persist(&mut a, &mut store);
    let loaded = store.load().unwrap();
    let cp = loaded.checkpoint.unwrap();
    assert_eq!((cp.snapshot.csn, cp.osn), (1, 1));
    assert_eq!(cp.snapshot.db.get(b"K").unwrap(), "v");
    assert!(
        loaded.items.is_empty(),
        "the write and its commit were discarded"
    );
}

#[test]
fn another_replicas_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path(), &sid("A")).unwrap());
    let err = RedbStore::open(dir.path(), &sid("B")).unwrap_err();
    assert!(matches!(err, StoreError::WrongServer { .. }), "{err}");
    assert!(err.to_string().contains("belongs to replica A"), "{err}");
}

#[test]
fn a_non_empty_directory_without_a_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(matches!(err, StoreError::Foreign(_)), "{err}");
    assert!(!dir.path().join(DB_FILE).exists());
    assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_garbage_database_file_is_refused_and_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
    fs::write(dir.path().join(DB_FILE), &garbage).unwrap();
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(dir.path().join(DB_FILE)).unwrap(), garbage);
}

#[test]
fn a_redb_file_of_another_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: TableDefinition<&str, u64> = TableDefinition::new("other");
            tx.open_table(def).unwrap().insert("x", 1).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path(), &sid("A")).unwrap());
    {
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(IDENTITY)
            .unwrap()
            .insert("format", &99u32.to_le_bytes()[..])
            .unwrap();
        tx.commit().unwrap();
    }
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFormat { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_tampered_log_record_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
        let mut a = Replica::new(sid("A"), Role::Secondary);
        a.client_write(3, Op::put("K", "v"));
        persist(&mut a, &mut store);
    }
    {
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(LOG)
            .unwrap()
            .insert(0, &[RECORD_VERSION, 0xff, 0xff, 0xff][..])
            .unwrap();
        tx.commit().unwrap();
    }
    // Refused when opened, before anything is written.
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(err.to_string().contains("log record 0"), "{err}");
}

/// One byte of a stored value changed (a bad disk): the store refuses to
/// open, names the record, and the file is exactly as it was.
#[test]
fn a_changed_byte_in_a_stored_value_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
        let mut a = Replica::new(sid("A"), Role::Secondary);
        a.client_write(3, Op::put("K", "a-rather-distinctive-value"));
        persist(&mut a, &mut store);
    }
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"distinct")
        .expect("the value is in the file");
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(err.to_string().contains("log record 0"), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a refused open wrote to the file"
    );
}

#[test]
fn a_damaged_checkpoint_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    {
        let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
        let mut p = Replica::new(sid("P"), role);
        p.client_write(3, Op::put("K", "v"));
        p.checkpoint(None);
        persist(&mut p, &mut store);
    }
    {
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("checkpoint", &[RECORD_VERSION, 0xff][..])
            .unwrap();
        tx.commit().unwrap();
    }
    let err = RedbStore::open(dir.path(), &sid("P")).unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn a_checkpoint_ahead_of_the_state_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let batch = Batch {
        items: vec![],
        state: State::default(),
        checkpoint: Some(Arc::new(Checkpoint {
            snapshot: Snapshot {
                csn: 3,
                vv: VersionVector::new(),
                db: Arc::new(Db::new()),
            },
            osn: 0,
            omitted: VersionVector::new(),
            changed: None,
        })),
    };
    assert!(matches!(
        store.append(&batch),
        Err(StoreError::BadBatch { .. })
    ));
    assert_eq!(store.load().unwrap().items.len(), 0);
}

#[test]
fn truncation_keeps_the_store_to_the_live_data_and_the_retained_window() {
    // [P97 §3.3]: 1,500 writes over 10 keys, retain 100: the file holds
    // the checkpoint (10 keys) and at most 100 + one interval of items, and
    // a restart rebuilds exactly the same replica.
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    let retention = Retention {
        writes: 100,
        bytes: u64::MAX,
        checkpoint_every: 200,
    };
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let mut p = Replica::new(sid("P"), role);
    p.set_retention(retention);
    for i in 0..1_500u32 {
        // Some deletes, so checkpoints that write only the changed keys
        // must remove keys too.
        let op = if i % 7 == 3 {
            Op::delete(format!("k{}", i % 10))
        } else {
            Op::put(format!("k{}", i % 10), i.to_string())
        };
        p.client_write(1, op);
        persist(&mut p, &mut store);
    }
    // Each write is two items (write, commit), one record a batch (here a
    // write); at most 300 writes retained.
    assert!(store.retained_items() <= 600, "{}", store.retained_items());
    assert!(store.retained_records() <= 300);
    assert!(p.retained_len() <= 300);
    assert_eq!(p.osn() + p.retained_len() as u64, 1_500);
    assert!(p.osn() >= 1_200);
    drop(store);
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let r = recover(&mut store, role, retention).unwrap();
    assert_eq!(r.csn(), 1_500);
    assert_eq!(r.osn(), p.osn());
    assert_eq!(r.vv(), p.vv());
    assert_eq!(r.db(View::Committed), p.db(View::Committed));
    assert_eq!(r.db(View::Full), p.db(View::Full));
    assert_eq!(r.log().collect::<Vec<_>>(), p.log().collect::<Vec<_>>());
    // Go on from the recovered replica: its checkpoints write only what
    // changed since the stored one, and a second restart agrees again.
    let mut r = r;
    for i in 0..700u32 {
        let op = if i % 5 == 0 {
            Op::delete(format!("k{}", i % 12))
        } else {
            Op::put(format!("k{}", i % 12), format!("again{i}"))
        };
        r.client_write(1, op);
        persist(&mut r, &mut store);
    }
    drop(store);
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let again = recover(&mut store, role, retention).unwrap();
    assert_eq!(again.csn(), 2_200);
    assert_eq!(again.db(View::Committed), r.db(View::Committed));
    assert_eq!(again.log().collect::<Vec<_>>(), r.log().collect::<Vec<_>>());
}

#[test]
fn a_directory_in_use_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let err = RedbStore::open(dir.path(), &sid("A")).unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    drop(first);
    RedbStore::open(dir.path(), &sid("A")).unwrap();
}

/// Random damage to a cleanly closed store, 60 trials (the adversary's
/// table: random bytes changed, a 4 KiB page zeroed, 512 random bytes):
/// opening and recovering never panics, a refused open leaves the file as
/// it was, and a store that opens recovers the writes it had, unchanged
/// (the damage fell in free space) or not at all (refused).
#[test]
fn random_damage_is_refused_without_panic_and_without_a_change() {
    let role = Role::Primary { autocommit: true };
    let mut rng = 0x5EED_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut refused, mut opened) = (0, 0);
    for trial in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let mut want = Vec::new();
        {
            let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
            let mut p = Replica::new(sid("P"), role);
            for i in 0..200u64 {
                p.client_write(
                    i + 1,
                    Op::put(format!("k{}", i % 50), format!("value-{i:06}")),
                );
                if i % 20 == 19 {
                    persist(&mut p, &mut store);
                }
            }
            p.checkpoint(Some(40));
            persist(&mut p, &mut store);
            for i in 150..200u64 {
                want.push((format!("k{}", i % 50), format!("value-{i:06}")));
            }
        }
        let path = dir.path().join(DB_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        match trial % 3 {
            0 => {
                for _ in 0..8 {
                    let at = (next() % len) as usize;
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            1 => {
                let page = (next() % (len / 4096).max(1)) as usize * 4096;
                for b in &mut bytes[page..(page + 4096).min(len as usize)] {
                    *b = 0;
                }
            }
            _ => {
                let at = (next() % len.saturating_sub(512).max(1)) as usize;
                for b in &mut bytes[at..(at + 512).min(len as usize)] {
                    *b = next() as u8;
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let mut store = RedbStore::open(dir.path(), &sid("P"))?;
            recover(&mut store, role, Retention::default()).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })
        });
        match outcome {
            Err(_) => panic!("trial {trial}: a panic escaped"),
            Ok(Err(_)) => {
                refused += 1;
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    bytes,
                    "trial {trial}: a refused open wrote"
                );
            }
            Ok(Ok(r)) => {
                opened += 1;
                for (k, v) in &want {
                    assert_eq!(
                        r.get(k.as_bytes(), View::Full).map(|b| b.to_vec()),
                        Some(v.as_bytes().to_vec()),
                        "trial {trial}: {k} served wrong after damage"
                    );
                }
            }
        }
    }
    eprintln!("random damage: 60 trials, {refused} refused, {opened} opened intact, 0 panics");
    assert!(refused > 0);
}

/// A format 3 store (one sealed record per log item) opens, recovers the
/// same replica, and is upgraded in place to the current format, whose new
/// records hold a batch each; both kinds are read back together.
#[test]
fn a_format_3_store_is_read_and_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    let mut p = Replica::new(sid("P"), role);
    p.client_write(1, Op::put("X", "1"));
    p.client_write(2, Op::put("Y", "2"));
    drop(RedbStore::open(dir.path(), &sid("P")).unwrap());
    {
        // What a format 3 build wrote for these two writes.
        let batch = take_batch(&mut p).unwrap();
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut log = tx.open_table(LOG).unwrap();
            for (seq, item) in batch.items.iter().enumerate() {
                let seq = seq as u64;
                let item = LegacyItem::from(item);
                log.insert(seq, encode(&seq.to_be_bytes(), &item).as_slice())
                    .unwrap();
            }
            tx.open_table(META)
                .unwrap()
                .insert("state", encode(b"state", &batch.state).as_slice())
                .unwrap();
            tx.open_table(IDENTITY)
                .unwrap()
                .insert("format", &3u32.to_le_bytes()[..])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    {
        let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
        let mut r = recover(&mut store, role, Retention::KEEP_ALL).unwrap();
        assert_eq!(r.log().collect::<Vec<_>>(), p.log().collect::<Vec<_>>());
        assert_eq!(store.retained_records(), 4, "one record an item");
        r.client_write(3, Op::put("Z", "3"));
        persist(&mut r, &mut store);
        assert_eq!(store.retained_records(), 5, "then one record a batch");
    }
    let db = Database::open(dir.path().join(DB_FILE)).unwrap();
    let format = db
        .begin_read()
        .unwrap()
        .open_table(IDENTITY)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(format, FORMAT_VERSION.to_le_bytes());
    drop(db);
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let r = recover(&mut store, role, Retention::KEEP_ALL).unwrap();
    assert_eq!(r.csn(), 3);
    assert_eq!(r.get(b"Z", View::Full).unwrap(), "3");
    assert_eq!(r.get(b"X", View::Committed).unwrap(), "1");
}

/// A format 4 store (batches of writes without author or signature) opens,
/// recovers the same replica, and is upgraded in place to format 5: its old
/// records read as writes without author, and a signed write by an author
/// appended after the upgrade comes back with both.
#[test]
fn a_format_4_store_is_read_and_upgraded_in_place_and_keeps_authors_after() {
    use bayou_core::{Ed25519Authority, Keyring};
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    let mut p = Replica::new(sid("P"), role);
    p.client_write(1, Op::put("X", "1"));
    p.client_write(2, Op::put("Y", "2"));
    drop(RedbStore::open(dir.path(), &sid("P")).unwrap());
    {
        // What a format 4 build wrote for these two writes: one batch.
        let batch = take_batch(&mut p).unwrap();
        let legacy: Vec<LegacyItem> = batch.items.iter().map(LegacyItem::from).collect();
        let body = postcard::to_stdvec(&legacy).unwrap();
        let record = sealed::seal(BATCH_RECORD_VERSION, &0u64.to_be_bytes(), &body);
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            tx.open_table(LOG)
                .unwrap()
                .insert(0, record.as_slice())
                .unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("state", encode(b"state", &batch.state).as_slice())
                .unwrap();
            tx.open_table(IDENTITY)
                .unwrap()
                .insert("format", &4u32.to_le_bytes()[..])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let authority = Arc::new(Ed25519Authority::new(sid("P"), &[7; 32], Keyring::new()).unwrap());
    {
        let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
        let mut r = recover(&mut store, role, Retention::KEEP_ALL).unwrap();
        assert_eq!(r.log().collect::<Vec<_>>(), p.log().collect::<Vec<_>>());
        r.set_authority(Some(authority.clone()));
        r.client_write_as(3, Op::put("Z", "3"), Some(Arc::from("alice")));
        persist(&mut r, &mut store);
    }
    let db = Database::open(dir.path().join(DB_FILE)).unwrap();
    let format = db
        .begin_read()
        .unwrap()
        .open_table(IDENTITY)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(format, 5u32.to_le_bytes());
    drop(db);
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let r = recover(&mut store, role, Retention::KEEP_ALL).unwrap();
    let entries: Vec<String> = r
        .log()
        .map(|(c, w)| bayou_core::format_entry(c, &w))
        .collect();
    assert_eq!(
        entries,
        ["1:1:P W(X,1)", "2:2:P W(Y,2)", "3:3:P W(Z,3) by alice"]
    );
    let (_, last) = r.log().last().unwrap();
    assert!(last.signature.is_some());
    assert_eq!(
        bayou_core::WriteAuthority::verify(&*authority, &last),
        Ok(())
    );
}
