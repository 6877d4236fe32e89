//! Servers that come and go ([P97 §4.3]): creation through a sponsor,
//! retirement with the entry leaving version vectors (CompleteV), and the
//! primary handing off CSN assignment at a point of the committed order.

use bayou_core::{
    Csn, Item, MemberError, Op, Replica, Role, ServerId, Stamp, View, WriteId, WriteStatus,
};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

fn sync(from: &Replica, to: &mut Replica) -> bayou_core::ReceiveReport {
    let summary = to.summary();
    let items: Vec<Item> = from.items_for(&summary).collect();
    to.receive_session(&summary, [bayou_core::Chunk::Items(items)])
        .unwrap()
}

fn committed_ids(r: &Replica) -> Vec<(Csn, WriteId)> {
    r.log().filter_map(|(c, w)| c.map(|c| (c, w.id))).collect()
}

fn get(r: &Replica, key: &str, view: View) -> Option<String> {
    r.get(key.as_bytes(), view)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// P founds a cluster and sponsors A, which syncs from P: A's creation is
/// committed and bound to it.
fn founded_pair() -> (Replica, Replica, WriteId) {
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    p.found(1, "127.0.0.1:7001").unwrap();
    let created = p.sponsor(2, s("A"), "127.0.0.1:7002").unwrap();
    let mut a = Replica::new(s("A"), Role::Secondary);
    sync(&p, &mut a);
    (p, a, created)
}

/// `sponsor` creates `name` at clock `t`; the new server, told its
/// creation, syncs from the sponsor.
fn joined(sponsor: &mut Replica, name: &str, t: Stamp) -> Replica {
    let created = sponsor.sponsor(t, s(name), &format!("{name}:1")).unwrap();
    let mut r = Replica::new(s(name), Role::Secondary);
    r.set_creation(created);
    sync(sponsor, &mut r);
    r
}

#[test]
fn a_created_server_is_bound_to_its_creation_write_once_it_commits() {
    let (p, a, created) = founded_pair();
    let record = a.member(&s("A"), View::Committed).unwrap();
    assert_eq!(record.created, created);
    assert_eq!(record.addr, "127.0.0.1:7002");
    assert!(record.is_live());
    // The membership table is not client data.
    assert_eq!(p.db(View::Committed).len(), 0);
    assert_eq!(p.db(View::Committed).user_iter().count(), 0);
    // A's vector has an entry for P (and for itself: 0, created).
    assert_eq!(a.vv().entry(&s("A")), Some(0));
}

#[test]
fn a_name_already_bound_is_refused_by_the_sponsor() {
    let (mut p, mut a, created) = founded_pair();
    assert_eq!(
        p.sponsor(3, s("A"), "elsewhere:1"),
        Err(MemberError::Taken(s("A"), created.clone()))
    );
    // A sponsor that holds the creation refuses too, and so does any
    // server asked to create the founder's name.
    assert_eq!(
        a.sponsor(4, s("A"), "x:1"),
        Err(MemberError::Itself(s("A")))
    );
    assert!(matches!(
        a.sponsor(4, s("P"), "x:1"),
        Err(MemberError::Taken(..))
    ));
}

#[test]
fn of_two_concurrent_creations_of_one_name_the_first_committed_wins() {
    // A and B each sponsor C while apart; the primary commits A's first.
    let (mut p, mut a, _) = founded_pair();
    let b_created = p.sponsor(5, s("B"), "b:1").unwrap();
    let mut b = Replica::new(s("B"), Role::Secondary);
    sync(&p, &mut b);
    assert_eq!(
        b.member(&s("B"), View::Committed).unwrap().created,
        b_created
    );
    let by_a = a.sponsor(10, s("C"), "c-from-a:1").unwrap();
    let by_b = b.sponsor(20, s("C"), "c-from-b:1").unwrap();
    sync(&a, &mut p);
    sync(&b, &mut p);
    for r in [&mut a, &mut b] {
        sync(&p, r);
    }
    for r in [&p, &a, &b] {
        let record = r.member(&s("C"), View::Committed).unwrap();
        assert_eq!(record.created, by_a, "at {}", r.id());
        assert_eq!(record.addr, "c-from-a:1");
    }
    // The loser's creation is a failed no-op, the same everywhere.
    assert!(matches!(
        p.outcome(&by_b),
        bayou_core::Outcome::Failed(why) if why.contains("already exists")
    ));
}

#[test]
fn a_retired_server_leaves_version_vectors_and_completev_sends_nothing_of_it() {
    // [P97 §4.3]: a server that holds the retirement drops the entry; a
    // vector without the entry, from a server that holds the creation,
    // means "retired", so the retiree's writes are not sent again; one
    // that never saw the creation gets them all.
    let (mut p, mut a, _) = founded_pair();
    a.client_write(10, Op::put("x", "1"));
    a.client_write(11, Op::put("y", "2"));
    let retirement = a.retire(12).unwrap();
    assert!(a.has_retired());
    assert_eq!(a.retire(13), Err(MemberError::Retired(s("A"))));
    sync(&a, &mut p);
    assert_eq!(p.vv().entry(&s("A")), None, "P dropped A's entry");
    assert!(p.is_retired(&s("A")));
    assert_eq!(p.status(&retirement), WriteStatus::Committed(5));
    let record = p.member(&s("A"), View::Committed).unwrap();
    assert_eq!(record.retired, Some(retirement));
    assert_eq!(record.retired_csn, Some(5));
    // B, created before A's writes, syncs from P: it gets them.
    let mut b = Replica::new(s("B"), Role::Secondary);
    sync(&p, &mut b);
    assert_eq!(get(&b, "x", View::Committed).as_deref(), Some("1"));
    assert!(b.is_retired(&s("A")));
    assert_eq!(b.vv().entry(&s("A")), None);
    // Now P, whose vector lacks A, asks A (still up) for what it lacks:
    // nothing, A's writes included.
    let items: Vec<Item> = a.items_for(&p.summary()).collect();
    assert!(items.is_empty(), "{items:?}");
    // And a re-sent write of A is a duplicate, not a new write.
    let old: Vec<Item> = a
        .items_for(&Replica::new(s("Z"), Role::Secondary).summary())
        .collect();
    let report = p.receive(old).unwrap();
    assert_eq!(report.new_writes, 0);
}

#[test]
fn a_tentatively_held_retirement_counts_as_infinite_by_completev() {
    // B holds A's creation and A's retirement only tentatively: its vector
    // lacks A, and a sender that knows A's creation infers from B's
    // covering the creation that B saw A retire.
    let (mut p, mut a, _) = founded_pair();
    let mut b = Replica::new(s("B"), Role::Secondary);
    sync(&a, &mut b); // A's creation (committed) reaches B
    a.client_write(10, Op::put("x", "1"));
    a.retire(11).unwrap();
    sync(&a, &mut b); // tentative at B
    assert_eq!(b.vv().entry(&s("A")), None);
    sync(&a, &mut p);
    let items: Vec<Item> = p.items_for(&b.summary()).collect();
    // Only commit notices: no write of A is sent again.
    assert!(
        items.iter().all(|i| matches!(i, Item::Commit { .. })),
        "{items:?}"
    );
    sync(&p, &mut b);
    assert_eq!(get(&b, "x", View::Committed).as_deref(), Some("1"));
}

#[test]
fn the_primary_hands_off_at_the_handoffs_csn_and_the_next_assigns_after_it() {
    let (mut p, mut a, _) = founded_pair();
    p.client_write(10, Op::put("k", "p1"));
    assert_eq!(p.handoff(11, s("Q")), Err(MemberError::NotMember(s("Q"))));
    assert_eq!(a.handoff(11, s("P")), Err(MemberError::NotPrimary(s("A"))));
    let handoff = p.handoff(12, s("A")).unwrap();
    assert_eq!(p.status(&handoff), WriteStatus::Committed(4));
    assert!(!p.is_primary());
    assert_eq!(p.role(), Role::Secondary);
    // P's writes now stay tentative; A is not primary until it has the
    // handoff's commit.
    let after = p.client_write(20, Op::put("k", "p2"));
    assert_eq!(p.status(&after), WriteStatus::Tentative);
    let a_write = a.client_write(15, Op::put("j", "a1"));
    assert!(!a.is_primary());
    assert_eq!(a.status(&a_write), WriteStatus::Tentative);
    sync(&p, &mut a);
    assert!(a.is_primary());
    // A commits what it holds, after CSN 4, in its log order.
    assert_eq!(a.status(&a_write), WriteStatus::Committed(5));
    assert_eq!(a.status(&after), WriteStatus::Committed(6));
    sync(&a, &mut p);
    assert_eq!(committed_ids(&p), committed_ids(&a));
    let csns: Vec<Csn> = committed_ids(&a).iter().map(|c| c.0).collect();
    assert_eq!(csns, (1..=6).collect::<Vec<Csn>>());
    // A commit from P now would be foreign at A, and P cannot commit.
    assert!(p.commit_all().is_err());
}

#[test]
fn a_restarted_old_primary_stays_secondary_after_a_handoff() {
    // The handoff is in P's durable items: replaying them, P (started
    // with Role::Primary, as its command line says) learns it handed off.
    let (mut p, _a, _) = founded_pair();
    let mut items = p.take_persist();
    p.handoff(12, s("A")).unwrap();
    items.extend(p.take_persist());
    let r = Replica::recover(s("P"), Role::Primary { autocommit: true }, items).unwrap();
    assert!(!r.is_primary());
    let mut r = r;
    let w = r.client_write(30, Op::put("k", "v"));
    assert_eq!(r.status(&w), WriteStatus::Tentative);
}

#[test]
fn a_crash_before_the_handoff_was_durable_leaves_the_old_primary_primary() {
    let (mut p, _a, _) = founded_pair();
    let items = p.take_persist();
    p.handoff(12, s("A")).unwrap();
    // Crash: the handoff's items never reached the disk, so nobody saw it.
    let r = Replica::recover(s("P"), Role::Primary { autocommit: true }, items).unwrap();
    assert!(r.is_primary());
}

#[test]
fn a_primary_must_hand_off_before_it_retires() {
    let (mut p, _a, _) = founded_pair();
    assert_eq!(p.retire(10), Err(MemberError::PrimaryMustHandOff(s("P"))));
    p.handoff(11, s("A")).unwrap();
    assert!(p.retire(12).is_ok());
}

#[test]
fn clients_cannot_touch_the_membership_table() {
    let (mut p, _a, _) = founded_pair();
    let w = p.client_write(10, Op::put(&b"\xffbayou/primary"[..], "Z"));
    assert!(matches!(p.outcome(&w), bayou_core::Outcome::Failed(_)));
    p.client_write(11, Op::put("x", "1"));
    p.client_write(12, Op::DeleteAll);
    assert_eq!(p.db(View::Committed).len(), 0);
    assert!(p.member(&s("A"), View::Committed).is_some());
    assert!(p.is_primary());
}

#[test]
fn the_membership_table_survives_truncation_and_a_full_state_transfer() {
    let (mut p, mut a, created) = founded_pair();
    a.client_write(10, Op::put("x", "1"));
    a.retire(11).unwrap();
    sync(&a, &mut p);
    p.checkpoint(Some(0));
    assert_eq!(p.osn(), p.csn());
    // B never heard of anything: it gets P's state by full-state transfer.
    let mut b = Replica::new(s("B"), Role::Secondary);
    let base = b.summary();
    let mut sender = bayou_core::SessionSender::new(base.clone());
    let mut chunks = Vec::new();
    while let Some(c) = sender.next_chunk(&mut p, bayou_core::ChunkLimits::default()) {
        chunks.push(c);
    }
    b.receive_session(&base, chunks).unwrap();
    let record = b.member(&s("A"), View::Committed).unwrap();
    assert_eq!(record.created, created);
    assert!(b.is_retired(&s("A")));
    assert_eq!(b.vv().entry(&s("A")), None);
    assert_eq!(get(&b, "x", View::Committed).as_deref(), Some("1"));
    let stamp_max: Stamp = Stamp::MAX;
    assert_eq!(b.complete_vv().get(&s("A")), stamp_max);
}

#[test]
fn a_restart_from_a_checkpoint_rebuilds_the_same_version_vector() {
    // C's creation is truncated before C writes anything: the entry C:0 it
    // gave the vector must come back from the checkpoint's membership
    // table, or the replayed vector would differ from the one stored.
    let (mut p, _a, _) = founded_pair();
    p.sponsor(5, s("C"), "c:1").unwrap();
    p.checkpoint(Some(0));
    let cp = p.take_checkpoint().unwrap();
    let r = Replica::restore(
        s("P"),
        Role::Primary { autocommit: true },
        bayou_core::Retention::default(),
        Some(&cp),
        Vec::<Item>::new(),
    )
    .unwrap();
    assert_eq!(r.vv(), p.vv());
    assert_eq!(r.vv().entry(&s("C")), Some(0));
}

#[test]
fn an_address_travels_with_the_creation_and_changes_by_a_write() {
    let (mut p, mut a, _) = founded_pair();
    assert_eq!(
        p.member(&s("A"), View::Committed).unwrap().addr,
        "127.0.0.1:7002"
    );
    a.set_address(10, "10.0.0.2:7002").unwrap();
    sync(&a, &mut p);
    assert_eq!(
        p.member(&s("A"), View::Committed).unwrap().addr,
        "10.0.0.2:7002"
    );
    let mut stranger = Replica::new(s("Z"), Role::Secondary);
    assert_eq!(
        stranger.set_address(1, "x:1"),
        Err(MemberError::NotMember(s("Z")))
    );
}

#[test]
fn a_server_that_retires_while_a_handoff_to_it_commits_passes_the_role_on() {
    // The handoff to A commits at P while A, not knowing yet, retires. A
    // becomes the primary and commits its own retirement; there the role
    // passes to the first live member by name, so CSNs go on being
    // assigned (a retired server can write nothing more, not even a
    // handoff).
    let (mut p, mut a, _) = founded_pair();
    let mut b = joined(&mut p, "B", 3);
    sync(&p, &mut a);
    p.handoff(10, s("A")).unwrap();
    a.retire(11).unwrap();
    sync(&p, &mut a);
    assert!(
        !a.is_primary(),
        "A committed its retirement and passed the role"
    );
    assert_eq!(
        a.member(&s("A"), View::Committed).unwrap().retired_csn,
        Some(5)
    );
    sync(&a, &mut b);
    assert!(b.is_primary());
    let w = b.client_write(20, Op::put("k", "v"));
    assert_eq!(b.status(&w), WriteStatus::Committed(6));
}

#[test]
fn a_server_that_lost_its_name_is_never_the_primary() {
    // C is created twice (by A and by B, apart); A's creation commits
    // first. A handoff to the name C makes the winner primary, never the
    // loser, even when the loser holds that commit.
    let (mut p, mut a, _) = founded_pair();
    let mut b = joined(&mut p, "B", 3);
    sync(&p, &mut a);
    let by_a = a.sponsor(10, s("C"), "c1:1").unwrap();
    let by_b = b.sponsor(11, s("C"), "c2:1").unwrap();
    sync(&a, &mut p);
    sync(&b, &mut p);
    p.handoff(12, s("C")).unwrap();
    let mut loser = Replica::new(s("C"), Role::Secondary);
    loser.set_creation(by_b);
    sync(&p, &mut loser);
    assert!(loser.lost_name());
    assert!(!loser.is_primary());
    let mut winner = Replica::new(s("C"), Role::Secondary);
    winner.set_creation(by_a);
    sync(&p, &mut winner);
    assert!(!winner.lost_name());
    assert!(winner.is_primary());
}

#[test]
fn a_server_without_a_record_cannot_retire() {
    let mut stat = Replica::new(s("S"), Role::Secondary);
    assert_eq!(stat.retire(1), Err(MemberError::NotMember(s("S"))));
}
