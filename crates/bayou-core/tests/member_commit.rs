//! A membership write whose committed execution differs from its tentative
//! one ([P97 §4.3]: a retirement records its CSN only where it commits)
//! must leave the full view equal to what executing the log gives.

use bayou_core::{Item, Op, Replica, Role, ServerId, View};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

fn sync(from: &Replica, to: &mut Replica) {
    let items: Vec<_> = from.items_for(&to.summary()).collect();
    to.receive(items).unwrap();
}

#[test]
fn a_retirement_committed_after_it_executed_tentatively_updates_the_full_view_too() {
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = Replica::new(s("B"), Role::Secondary);
    p.found(1, "p:1").unwrap();
    p.sponsor(2, s("A"), "a:1").unwrap();
    p.sponsor(3, s("B"), "b:1").unwrap();
    sync(&p, &mut a);
    sync(&p, &mut b);
    // A writes, then retires: both execute tentatively at A (no CSN yet);
    // a later write of B executes after them there.
    a.client_write(5, Op::put("y", "1"));
    a.retire(10).unwrap();
    b.client_write(20, Op::put("x", "1"));
    sync(&b, &mut a);
    // The primary commits A's writes alone; A learns the commits of writes
    // it had already executed, with B's still tentative after them. The
    // retirement's committed execution records its CSN, which its
    // tentative one could not: the full view must show it too (before the
    // fix, the debug check of the full view's rebuild failed here).
    let retire: Vec<Item> = a
        .items_for(&p.summary())
        .filter(|i| matches!(i, Item::Write { write, .. } if write.id.server == s("A")))
        .collect();
    p.receive(retire).unwrap();
    sync(&p, &mut a);
    assert_eq!(a.tentative_len(), 1);
    let committed = a.member(&s("A"), View::Committed).unwrap();
    assert_eq!(committed.retired_csn, Some(5));
    assert_eq!(a.member(&s("A"), View::Full), Some(committed));
}
