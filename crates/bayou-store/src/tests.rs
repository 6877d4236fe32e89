use super::*;
use bayou_core::{Op, Summary, View};

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// Applies every pending change of `r` to `store`.
fn persist(r: &mut Replica, csn: &mut Csn, store: &mut RedbStore) {
    if let Some(b) = take_batch(r, csn, 1, false) {
        store.append(&b).unwrap();
    }
}

#[test]
fn new_directory_recovers_to_an_empty_replica() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let (r, loaded) = recover(&store, Role::Secondary).unwrap();
    assert_eq!(r.log().count(), 0);
    assert!(loaded.state.is_none());
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
        let mut csn = 0;
        p.client_write(1, Op::put("X", "1"));
        persist(&mut p, &mut csn, &mut store);
        let items: Vec<Item> = b.items_for(&p.summary()).collect();
        p.receive(items).unwrap();
        p.client_write(10, Op::delete("X"));
        persist(&mut p, &mut csn, &mut store);
        assert_eq!(store.log_len(), 8); // 4 writes, 4 commits
    }
    let store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let (r, loaded) = recover(&store, role).unwrap();
    assert_eq!(r.log().collect::<Vec<_>>(), p.log().collect::<Vec<_>>());
    assert_eq!(r.vv(), p.vv());
    assert_eq!(r.csn(), 4);
    assert_eq!(loaded.checkpoint_csn, 4);
    assert_eq!(&loaded.checkpoint, p.db(View::Committed).as_map());
    assert_eq!(r.get(b"Z", View::Committed).unwrap(), "8");
    assert!(r.get(b"X", View::Committed).is_none());
    assert_eq!(loaded.state.unwrap(), State::of(&p));
}

#[test]
fn a_tentative_replica_keeps_an_empty_checkpoint_until_commits_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let mut a = Replica::new(sid("A"), Role::Secondary);
    let mut csn = 0;
    a.client_write(3, Op::put("K", "v"));
    persist(&mut a, &mut csn, &mut store);
    let loaded = store.load().unwrap();
    assert!(loaded.checkpoint.is_empty());
    // The primary commits it; A learns by anti-entropy.
    let mut p = Replica::new(sid("P"), Role::Primary { autocommit: true });
    p.receive(a.items_for(&p.summary()).collect::<Vec<_>>())
        .unwrap();
    let s: Summary = a.summary();
    a.receive(p.items_for(&s).collect::<Vec<_>>()).unwrap();
    persist(&mut a, &mut csn, &mut store);
    let loaded = store.load().unwrap();
    assert_eq!(loaded.checkpoint_csn, 1);
    assert_eq!(loaded.checkpoint.get(&b"K"[..]).unwrap(), "v");
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
        let mut csn = 0;
        a.client_write(3, Op::put("K", "v"));
        persist(&mut a, &mut csn, &mut store);
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
    let store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let err = recover(&store, Role::Secondary).unwrap_err();
    assert!(err.to_string().contains("log record 0"), "{err}");
}

#[test]
fn a_checkpoint_that_disagrees_with_the_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    {
        let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
        let mut p = Replica::new(sid("P"), role);
        let mut csn = 0;
        p.client_write(3, Op::put("K", "v"));
        persist(&mut p, &mut csn, &mut store);
    }
    {
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(CHECKPOINT)
            .unwrap()
            .insert(&b"K"[..], &b"other"[..])
            .unwrap();
        tx.commit().unwrap();
    }
    let store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let err = recover(&store, role).unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn a_checkpoint_ahead_of_the_state_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RedbStore::open(dir.path(), &sid("A")).unwrap();
    let batch = Batch {
        items: vec![],
        state: State::default(),
        checkpoint: Some(Checkpoint {
            csn: 3,
            entries: vec![],
        }),
    };
    assert!(matches!(
        store.append(&batch),
        Err(StoreError::BadBatch { .. })
    ));
    assert_eq!(store.load().unwrap().items.len(), 0);
}

#[test]
fn checkpoints_are_taken_every_so_many_commits_and_when_forced() {
    let dir = tempfile::tempdir().unwrap();
    let role = Role::Primary { autocommit: true };
    let mut store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let mut p = Replica::new(sid("P"), role);
    let mut cp = 0;
    for i in 0..5u8 {
        p.client_write(1, Op::put(vec![b'k', i], vec![i]));
        let b = take_batch(&mut p, &mut cp, 3, false).unwrap();
        store.append(&b).unwrap();
    }
    // Commits 1..=3 made a checkpoint at 3; 4 and 5 did not reach the next.
    let loaded = store.load().unwrap();
    assert_eq!(loaded.checkpoint_csn, 3);
    assert_eq!(loaded.checkpoint.len(), 3);
    assert!(take_batch(&mut p, &mut cp, 3, false).is_none());
    let b = take_batch(&mut p, &mut cp, 3, true).unwrap();
    assert!(b.items.is_empty());
    store.append(&b).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.checkpoint_csn, 5);
    assert_eq!(&loaded.checkpoint, p.db(View::Committed).as_map());
    assert!(take_batch(&mut p, &mut cp, 3, true).is_none());
    drop(store);
    let store = RedbStore::open(dir.path(), &sid("P")).unwrap();
    let (r, _) = recover(&store, role).unwrap();
    assert_eq!(r.db(View::Committed), p.db(View::Committed));
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
