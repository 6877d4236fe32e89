//! Behaviour of one replica and of anti-entropy between two, each test
//! naming the paper section it comes from ([T95] Terry et al. SOSP'95,
//! [P97] Petersen et al. SOSP'97).

use bayou_core::{
    CommitError, Item, Op, ProtocolError, Replica, Role, ServerId, View, WriteId, WriteStatus,
    format_entry,
};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

fn secondary(id: &str) -> Replica {
    Replica::new(s(id), Role::Secondary)
}

fn primary(id: &str, autocommit: bool) -> Replica {
    Replica::new(s(id), Role::Primary { autocommit })
}

fn log(r: &Replica) -> Vec<String> {
    r.log().map(|(c, w)| format_entry(c, &w)).collect()
}

/// One complete one-way session from `from` to `to`.
fn sync(from: &Replica, to: &mut Replica) -> bayou_core::ReceiveReport {
    let summary = to.summary();
    let items: Vec<Item> = from.items_for(&summary).collect();
    to.receive(items).unwrap()
}

fn get(r: &Replica, key: &str, view: View) -> Option<String> {
    r.get(key.as_bytes(), view)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn client_write_stamp_is_max_of_clock_and_logical_clock_plus_one() {
    // [T95 Fig. 5]: logicalclock = MAX(systemclock, logicalclock + 1).
    let mut a = secondary("A");
    assert_eq!(
        a.client_write(7, Op::put("X", "1")),
        WriteId::new(7, s("A"))
    );
    // The clock has not moved: the stamp still increases.
    assert_eq!(
        a.client_write(7, Op::put("X", "2")),
        WriteId::new(8, s("A"))
    );
    // A clock reading behind the logical clock never lowers it.
    assert_eq!(
        a.client_write(3, Op::put("X", "3")),
        WriteId::new(9, s("A"))
    );
    assert_eq!(
        a.client_write(20, Op::put("X", "4")),
        WriteId::new(20, s("A"))
    );
    assert_eq!(a.logical_clock(), 20);
}

#[test]
fn receiving_a_write_advances_the_logical_clock_so_a_delete_follows_its_create() {
    // MR-4 of the research notes ([T95 §5], MIT 6.824 notes): B's wall clock
    // is slow (9), but its delete of A's meeting (stamp 10) must sort after it.
    let mut a = secondary("A");
    let mut b = secondary("B");
    a.client_write(10, Op::put("meeting", "staff"));
    sync(&a, &mut b);
    assert_eq!(b.logical_clock(), 10);
    let del = b.client_write(9, Op::delete("meeting"));
    assert_eq!(del, WriteId::new(11, s("B")));
    sync(&b, &mut a);
    assert_eq!(get(&a, "meeting", View::Full), None);
    assert_eq!(log(&a), ["∞:10:A W(meeting,staff)", "∞:11:B D(meeting)"]);
}

#[test]
fn tentative_writes_are_ordered_by_stamp_then_server_bytes() {
    // [T95 §5]: <accept-stamp, server-id>, server id only to break ties.
    let mut p = secondary("P");
    let mut a = secondary("A");
    p.client_write(7, Op::put("Y", "8"));
    a.client_write(7, Op::put("X", "3"));
    a.client_write(5, Op::put("X", "5")); // stamped 8
    sync(&p, &mut a);
    assert_eq!(log(&a), ["∞:7:A W(X,3)", "∞:7:P W(Y,8)", "∞:8:A W(X,5)"]);
}

#[test]
fn an_earlier_write_arriving_rolls_back_and_redoes_once_per_session() {
    // [T95 Fig. 5], [P97 §3.5]: roll back to the earliest insertion point,
    // once per session, then redo in the new order.
    let mut a = secondary("A");
    let mut b = secondary("B");
    for t in 10..20 {
        a.client_write(t, Op::put("K", format!("a{t}")));
    }
    b.client_write(1, Op::put("K", "b1"));
    b.client_write(2, Op::put("J", "b2"));
    b.client_write(15, Op::put("K", "b15"));
    let before = a.stats();
    let report = sync(&b, &mut a);
    assert_eq!(report.new_writes, 3);
    // All ten of A's writes sort after 1:B: undone once, not once per write.
    assert_eq!(report.undone, 10);
    let after = a.stats();
    assert_eq!(after.undos - before.undos, 10);
    assert_eq!(after.tentative_executions - before.tentative_executions, 13);
    // 13 executions: B's 3 writes for the first time, A's 10 again.
    assert_eq!(after.redos - before.redos, 10);
    // K's last write in log order is 19:A.
    assert_eq!(get(&a, "K", View::Full).as_deref(), Some("a19"));
    assert_eq!(get(&a, "J", View::Full).as_deref(), Some("b2"));
}

#[test]
fn an_interrupted_session_leaves_a_prefix_and_the_next_sends_only_the_rest() {
    // AE-1 from [P97 §2]: incremental, restartable anti-entropy.
    let mut a = secondary("A");
    let mut b = secondary("B");
    for t in 1..=5 {
        a.client_write(t, Op::put(format!("K{t}"), "v"));
    }
    let first: Vec<Item> = a.items_for(&b.summary()).take(2).collect();
    b.receive(first).unwrap();
    assert_eq!(log(&b), ["∞:1:A W(K1,v)", "∞:2:A W(K2,v)"]);
    assert_eq!(b.vv().get(&s("A")), 2);
    let rest: Vec<Item> = a.items_for(&b.summary()).collect();
    assert_eq!(rest.len(), 3);
    b.receive(rest).unwrap();
    assert_eq!(log(&a), log(&b));
}

#[test]
fn a_receiver_holding_a_write_tentatively_gets_a_commit_notification() {
    // AE-2 from [P97 Fig. 2].
    let mut p = primary("P", false);
    let mut a = secondary("A");
    let mut b = secondary("B");
    a.client_write(3, Op::put("X", "1"));
    sync(&a, &mut p);
    sync(&a, &mut b);
    p.commit_all().unwrap();
    let items: Vec<Item> = p.items_for(&b.summary()).collect();
    assert_eq!(
        items,
        [Item::Commit {
            id: WriteId::new(3, s("A")),
            csn: 1
        }]
    );
    b.receive(items).unwrap();
    assert_eq!(log(&b), ["1:3:A W(X,1)"]);
    assert_eq!(
        b.status(&WriteId::new(3, s("A"))),
        WriteStatus::Committed(1)
    );
    // A receiver that lacks the write gets the write with its CSN.
    let mut c = secondary("C");
    let items: Vec<Item> = p.items_for(&c.summary()).collect();
    assert!(matches!(&items[..], [Item::Write { csn: Some(1), .. }]));
    c.receive(items).unwrap();
    assert_eq!(log(&c), ["1:3:A W(X,1)"]);
}

#[test]
fn committed_writes_move_in_front_of_tentative_ones() {
    // [T95 §6-7]: commit order may differ from tentative order (MR-3).
    let mut p = primary("P", true);
    let mut a = secondary("A");
    let mut b = secondary("B");
    let mut c = secondary("C");
    a.client_write(10, Op::put("room", "W1"));
    b.client_write(20, Op::put("room", "W2"));
    sync(&a, &mut c);
    sync(&b, &mut c);
    assert_eq!(get(&c, "room", View::Full).as_deref(), Some("W2"));
    // B reaches the primary first: W2 commits before W1.
    sync(&b, &mut p);
    sync(&a, &mut p);
    sync(&p, &mut c);
    assert_eq!(log(&c), ["1:20:B W(room,W2)", "2:10:A W(room,W1)"]);
    assert_eq!(get(&c, "room", View::Full).as_deref(), Some("W1"));
    assert_eq!(get(&c, "room", View::Committed).as_deref(), Some("W1"));
}

#[test]
fn views_differ_under_a_tentative_delete() {
    // VIEW-1 from [T95 §7]: neither view is a subset of the other.
    let mut p = primary("P", true);
    p.client_write(1, Op::put("X", "1"));
    let mut a = secondary("A");
    sync(&p, &mut a);
    a.client_write(2, Op::delete("X"));
    a.client_write(3, Op::put("Y", "2"));
    assert_eq!(get(&a, "X", View::Committed).as_deref(), Some("1"));
    assert_eq!(get(&a, "X", View::Full), None);
    assert_eq!(get(&a, "Y", View::Committed), None);
    assert_eq!(get(&a, "Y", View::Full).as_deref(), Some("2"));
}

#[test]
fn only_the_primary_commits_and_it_refuses_foreign_csns() {
    // [T95 §6]: exactly one server assigns CSNs.
    let mut a = secondary("A");
    assert_eq!(a.commit_all(), Err(CommitError::NotPrimary(s("A"))));
    let mut p = primary("P", false);
    let foreign = Item::Write {
        write: bayou_core::Write::new(WriteId::new(1, s("A")), Op::put("X", "1")),
        csn: Some(1),
    };
    assert_eq!(p.receive([foreign]), Err(ProtocolError::ForeignCommit(1)));
    assert_eq!(p.csn(), 0);
}

#[test]
fn commits_must_arrive_in_csn_order() {
    // [P97 §3.2]: committed writes propagate in CSN order.
    let mut a = secondary("A");
    let w = |stamp| bayou_core::Write::new(WriteId::new(stamp, s("P")), Op::put("X", "1"));
    let gap = a.receive([Item::Write {
        write: w(2),
        csn: Some(2),
    }]);
    assert!(matches!(
        gap,
        Err(ProtocolError::CommitGap {
            expected: 1,
            got: 2,
            ..
        })
    ));
    a.receive([Item::Write {
        write: w(1),
        csn: Some(1),
    }])
    .unwrap();
    let conflict = a.receive([Item::Write {
        write: w(5),
        csn: Some(1),
    }]);
    assert!(matches!(
        conflict,
        Err(ProtocolError::ConflictingCommit { csn: 1, .. })
    ));
    let unknown = a.receive([Item::Commit {
        id: WriteId::new(9, s("Q")),
        csn: 2,
    }]);
    assert_eq!(
        unknown,
        Err(ProtocolError::UnknownWrite(WriteId::new(9, s("Q"))))
    );
}

#[test]
fn duplicates_are_ignored() {
    let mut a = secondary("A");
    let mut b = secondary("B");
    a.client_write(1, Op::put("X", "1"));
    let items: Vec<Item> = a.items_for(&b.summary()).collect();
    b.receive(items.clone()).unwrap();
    let report = b.receive(items).unwrap();
    assert_eq!(report.duplicates, 1);
    assert_eq!(log(&b), ["∞:1:A W(X,1)"]);
}

#[test]
fn recovery_from_persisted_items_rebuilds_the_same_state() {
    // [T95 §7]: recovery replays the stable log.
    let mut p = primary("P", true);
    let mut a = secondary("A");
    let mut disk = Vec::new();
    a.client_write(5, Op::put("X", "1"));
    disk.extend(a.take_persist());
    p.client_write(1, Op::put("Y", "2"));
    sync(&p, &mut a);
    disk.extend(a.take_persist());
    sync(&a, &mut p);
    sync(&p, &mut a);
    disk.extend(a.take_persist());
    a.client_write(6, Op::delete("Y"));
    disk.extend(a.take_persist());
    let recovered = Replica::recover(s("A"), Role::Secondary, disk).unwrap();
    assert_eq!(log(&recovered), log(&a));
    assert_eq!(recovered.vv(), a.vv());
    assert_eq!(recovered.logical_clock(), a.logical_clock());
    for v in [View::Full, View::Committed] {
        assert_eq!(recovered.db(v), a.db(v));
    }
}

#[test]
fn a_primary_recovering_with_uncommitted_writes_commits_and_persists_them() {
    let mut p = primary("P", true);
    p.client_write(1, Op::put("X", "1"));
    // Crash after the write was durable but before its commit was.
    let mut durable = p.take_persist();
    durable.truncate(1);
    let mut r = Replica::recover(s("P"), Role::Primary { autocommit: true }, durable).unwrap();
    assert_eq!(log(&r), ["1:1:P W(X,1)"]);
    assert_eq!(
        r.take_persist(),
        [Item::Commit {
            id: WriteId::new(1, s("P")),
            csn: 1
        }]
    );
}

#[test]
fn anti_entropy_sends_only_what_the_receiver_lacks_in_log_order() {
    // [P97 Fig. 2]: committed writes R lacks in CSN order, then tentative ones.
    let mut p = primary("P", false);
    let mut a = secondary("A");
    let mut b = secondary("B");
    a.client_write(7, Op::put("X", "3"));
    a.client_write(12, Op::put("Y", "4"));
    b.client_write(5, Op::put("Z", "8"));
    p.client_write(1, Op::put("X", "4"));
    p.client_write(7, Op::put("Y", "8"));
    p.commit_all().unwrap();
    sync(&a, &mut p);
    sync(&b, &mut p);
    sync(&a, &mut b);
    let items: Vec<String> = p
        .items_for(&b.summary())
        .map(|i| format!("{i:?}"))
        .collect();
    // B holds 5:B, 7:A, 12:A: it gets only P's two committed writes.
    assert_eq!(items, ["1:1:P W(X,4)", "2:7:P W(Y,8)"]);
}

#[test]
fn a_session_computed_before_a_crash_is_refused_whole() {
    // [P97 §2]: items keep the prefix property only relative to the
    // summary they were computed from. A receiver that lost writes since
    // (crash before fsync) must not apply a late copy of such a session.
    let mut z = secondary("Z");
    let mut r = secondary("R");
    z.client_write(70, Op::put("K", "70"));
    z.client_write(75, Op::put("K", "75"));
    // R gets 70 and 75, durably only 70.
    let base = r.summary();
    let first: Vec<Item> = z.items_for(&base).take(1).collect();
    r.receive_session(&base, first).unwrap();
    let durable = r.take_persist();
    let base = r.summary();
    let second: Vec<Item> = z.items_for(&base).collect();
    r.receive_session(&base, second).unwrap();
    // Z writes 84; a session computed for R's current state carries only 84.
    z.client_write(84, Op::put("K", "84"));
    let base = r.summary();
    let late: Vec<Item> = z.items_for(&base).collect();
    assert_eq!(late.len(), 1);
    // R crashes, losing 75, then the old session arrives.
    let mut r = Replica::recover(s("R"), Role::Secondary, durable).unwrap();
    assert_eq!(r.vv().get(&s("Z")), 70);
    assert!(matches!(
        r.receive_session(&base, late),
        Err(ProtocolError::StaleSession { .. })
    ));
    assert_eq!(log(&r), ["∞:70:Z W(K,70)"]);
    // A fresh session sends 75 and 84, in order.
    let fresh = r.summary();
    let items: Vec<Item> = z.items_for(&fresh).collect();
    r.receive_session(&fresh, items).unwrap();
    assert_eq!(
        log(&r),
        ["∞:70:Z W(K,70)", "∞:75:Z W(K,75)", "∞:84:Z W(K,84)"]
    );
}

#[test]
fn a_write_whose_outcome_changes_at_commit_is_recorded_with_its_tentative_outcome() {
    // [T95 §7]: a write is re-executed at commit, where another server's
    // write committed first can change what it does.
    use bayou_core::Outcome;
    let mut p = primary("P", true);
    let mut b = secondary("B");
    let set = p.client_write(1, Op::put("k", "not a number"));
    let incr = b.client_write(
        2,
        Op::Incr {
            key: "k".into(),
            by: 1,
        },
    );
    let keep = b.client_write(3, Op::put("other", "1"));
    // At B the INCR runs on a missing key: applied.
    assert_eq!(b.outcome(&incr), Outcome::Applied);
    assert_eq!(get(&b, "k", View::Full).as_deref(), Some("1"));
    sync(&b, &mut p);
    // The primary commits it after its own SET: it fails there, but it
    // never ran tentatively at the primary, so nothing changed there.
    assert!(matches!(p.outcome(&incr), Outcome::Failed(_)));
    assert_eq!(p.changed_outcome(&incr), None);
    sync(&p, &mut b);
    assert!(matches!(b.status(&incr), WriteStatus::Committed(_)));
    assert!(matches!(b.outcome(&incr), Outcome::Failed(_)));
    assert_eq!(b.changed_outcome(&incr), Some(&Outcome::Applied));
    // The SET never ran tentatively at B; the other write kept its outcome.
    assert_eq!(b.changed_outcome(&set), None);
    assert_eq!(b.changed_outcome(&keep), None);
    assert_eq!(
        get(&b, "k", View::Committed).as_deref(),
        Some("not a number")
    );
    // Truncation discards the record with the write.
    b.checkpoint(Some(0));
    assert_eq!(b.changed_outcome(&incr), None);
}

#[test]
fn a_write_whose_tentative_reexecution_already_failed_is_not_reported_changed() {
    // The SET arrives before the INCR commits: the INCR is rolled back and
    // redone after it tentatively, fails there, and fails at commit too.
    use bayou_core::Outcome;
    let mut p = primary("P", true);
    let mut b = secondary("B");
    p.client_write(1, Op::put("k", "x"));
    let incr = b.client_write(
        2,
        Op::Incr {
            key: "k".into(),
            by: 1,
        },
    );
    sync(&p, &mut b);
    assert!(matches!(b.outcome(&incr), Outcome::Failed(_)));
    sync(&b, &mut p);
    sync(&p, &mut b);
    assert!(matches!(b.status(&incr), WriteStatus::Committed(_)));
    assert_eq!(b.changed_outcome(&incr), None);
}
