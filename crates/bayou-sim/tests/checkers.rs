//! The checkers added for truncation reject states that break them: each is
//! fed a real replica with a wrong expectation ([P97 §3.3], [T95 §6]).

use std::collections::BTreeMap;

use bayou_core::{Op, Replica, Role, ServerId, WriteId};
use bayou_sim::check::{acknowledged_kept, commit_vector_agrees, executed_once, log_is_truth};

fn id(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// A primary with three committed writes, truncated to its last one.
fn truncated() -> (Replica, std::sync::Arc<bayou_core::Checkpoint>) {
    let mut p = Replica::new(id("P"), Role::Primary { autocommit: true });
    for (t, v) in [(1, "1"), (2, "2"), (3, "3")] {
        p.client_write(t, Op::put("X", v));
    }
    p.checkpoint(Some(1));
    let cp = p.take_checkpoint().expect("a checkpoint was queued");
    (p, cp)
}

#[test]
fn log_truth_needs_the_right_checkpoint() {
    let (p, cp) = truncated();
    log_is_truth(&p, Some(&cp)).unwrap();
    // Without it, the discarded writes are missing from the replay.
    let err = log_is_truth(&p, None).unwrap_err();
    assert!(err.contains("its last checkpoint has OSN 0"), "{err}");
    // With a checkpoint whose database differs, the views disagree.
    let mut wrong = (*cp).clone();
    let mut db = (*wrong.snapshot.db).clone();
    db.execute(&Op::put("Y", "9"));
    wrong.snapshot.db = std::sync::Arc::new(db);
    let err = log_is_truth(&p, Some(&wrong)).unwrap_err();
    assert!(err.contains("committed view"), "{err}");
}

#[test]
fn executed_once_holds_for_a_truncated_replica() {
    let (p, _) = truncated();
    executed_once(&p, 0).unwrap();
    // Counting a commit twice (as if the checkpoint had been replayed).
    let err = executed_once(&p, 1).unwrap_err();
    assert!(err.contains("executed 3 commits"), "{err}");
}

#[test]
fn acknowledged_and_commit_vector_checks_fire() {
    let (p, _) = truncated();
    let held = WriteId::new(2, id("P"));
    let lost = WriteId::new(4, id("P"));
    acknowledged_kept(&p, [&held]).unwrap();
    let err = acknowledged_kept(&p, [&held, &lost]).unwrap_err();
    assert!(
        err.contains("acknowledged write lost: P does not hold 4:P"),
        "{err}"
    );
    let mut write_of = BTreeMap::new();
    write_of.insert(1, WriteId::new(1, id("P")));
    write_of.insert(3, WriteId::new(3, id("P")));
    commit_vector_agrees(&p, &write_of).unwrap();
    // A CSN beyond P's own naming a write P's commit vector covers.
    write_of.insert(4, WriteId::new(2, id("P")));
    let err = commit_vector_agrees(&p, &write_of).unwrap_err();
    assert!(err.contains("CSN 4 is 2:P"), "{err}");
}
