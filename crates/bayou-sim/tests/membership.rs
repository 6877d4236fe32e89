//! Servers that come and go in the simulator ([P97 §4.3]): creation through
//! a sponsor, concurrent creations of one name, retirement, primary
//! handoff, each run with every checker on; and each membership checker
//! shown to catch a deliberate mutation.

use bayou_core::member::MemberOp;
use bayou_core::{Item, Op, ServerId, VersionVector, View, WriteId};
use bayou_sim::check::{Checker, committed_prefix};
use bayou_sim::{RunError, World, parse};

fn id(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

fn try_run(world: &mut World, text: &str) -> Result<(), RunError> {
    world.run(&parse(text).unwrap(), |_| {})
}

fn run(text: &str) -> World {
    let mut world = World::new(true);
    if let Err(e) = try_run(&mut world, text) {
        panic!("{e}\nrefusals: {:#?}", world.refusals());
    }
    world
}

fn values(world: &World, handle: &str) -> Vec<(String, String)> {
    let r = &world.node(&id(handle)).unwrap().replica;
    r.db(View::Full)
        .user_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

/// Two rounds in which every ordered pair of `handles` syncs, the
/// primary committing in between (a stopped server's syncs are skipped).
fn heal(handles: &[&str]) -> String {
    let mut out = String::new();
    for round in 0..2 {
        for a in handles {
            for b in handles {
                if a != b {
                    out.push_str(&format!("sync {a} {b}\n"));
                }
            }
        }
        if round == 0 {
            out.push_str("commit *\n");
        }
    }
    out
}

#[test]
fn a_created_server_writes_only_once_its_creation_is_committed_and_bound() {
    // [P97 §4.3]: C's name is bound to the creation write A accepted; C
    // accepts client writes only once its committed view says so.
    let world = run(&format!(
        "servers P A B\nprimary P\nautocommit P\ncreate C by A\nwrite C W(X,1)\nsync A C\nwrite C W(X,2)\nsync A P\nsync P C\nwrite C W(X,3)\nsync C P\n{}expect-converged\n",
        heal(&["P", "A", "B", "C"])
    ));
    assert_eq!(
        world.refusals(),
        [
            "write C W(X,1): refused, C's creation is not committed and bound to it (yet)",
            // Holding its creation tentatively is not enough.
            "write C W(X,2): refused, C's creation is not committed and bound to it (yet)",
        ]
    );
    let c = &world.node(&id("C")).unwrap().replica;
    let created = c.member(&id("C"), View::Committed).unwrap().created;
    assert_eq!(created, WriteId::new(1, id("A")));
    // The founder recorded itself first (the first `create` made it).
    assert!(c.member(&id("P"), View::Committed).is_some());
    for s in ["P", "A", "B", "C"] {
        assert_eq!(values(&world, s), [("X".into(), "3".into())], "{s}");
    }
    let cov = world.coverage();
    assert_eq!((cov.creations, cov.bound, cov.writes_refused), (1, 1, 2));
}

#[test]
fn the_loser_of_a_concurrent_creation_stops_having_written_nothing() {
    // [P97 §4.3]: A and B create C in two partitions; B's creation commits
    // first, so its C (addressed as C2) holds the name, and A's C, on
    // learning that, stops without having written.
    let world = run(&format!(
        "servers P A B\nprimary P\nautocommit P\nfound P\ncreate C by A\ncreate C by B as C2\nwrite C W(X,1)\nwrite C2 W(X,2)\nsync B P\nsync A P\nsync P C2\nwrite C2 W(Y,2)\nsync C2 P\nsync P C\nwrite C W(X,9)\n{}expect-converged\n",
        heal(&["P", "A", "B", "C", "C2"])
    ));
    let stopped: Vec<(String, String)> = world
        .stopped()
        .map(|(h, why)| (h.to_string(), why.to_string()))
        .collect();
    assert_eq!(
        stopped,
        [(
            "C".into(),
            "lost its name: C was created by 1:B, not 1:A".into()
        )]
    );
    assert!(
        world
            .refusals()
            .contains(&"write C W(X,9): skipped, C has stopped (lost its name: C was created by 1:B, not 1:A)".into()),
        "{:#?}",
        world.refusals()
    );
    // A's creation write is in every log, executed as a failed no-op.
    let p = &world.node(&id("P")).unwrap().replica;
    let losing = WriteId::new(1, id("A"));
    assert!(p.committed().any(|(_, w)| w.id == losing));
    assert!(p.outcome(&losing).to_string().contains("already exists"));
    assert_eq!(values(&world, "P"), [("Y".into(), "2".into())]);
    assert_eq!(world.coverage().identities_lost, 1);
    assert_eq!(world.coverage().duplicate_creations, 1);
}

#[test]
fn a_retired_server_stops_once_a_live_member_durably_holds_its_retirement() {
    // [P97 §4.3]: C's retirement is its last write; C keeps running until
    // another member holds it committed, durably (a server flushes when it
    // next sends): A's tentative copy is not enough (`sync C B 2` still
    // runs), P's commit is once P has flushed it.
    let world = run(&format!(
        "servers P A B\nprimary P\nautocommit P\ncreate C by A\nsync A P\nsync P C\nwrite C W(X,1)\nretire C\nwrite C W(X,2)\nsync C A\nsync A B\nsync C B 2\nsync A P\nsync P B\nsync C B\n{}expect-converged\n",
        heal(&["P", "A", "B", "C"])
    ));
    // (Then the healing's syncs with C, skipped.)
    assert_eq!(
        world.refusals()[..2],
        [
            "write C W(X,2): refused, C has retired",
            "sync C B: skipped, C has stopped (retired; P holds its retirement, committed)",
        ]
    );
    for s in ["P", "A", "B"] {
        let r = &world.node(&id(s)).unwrap().replica;
        assert!(r.is_retired(&id("C")), "{s}");
        assert_eq!(r.vv().entry(&id("C")), None, "{s}: the entry goes");
        assert_eq!(values(&world, s), [("X".into(), "1".into())], "{s}");
    }
    assert_eq!(world.coverage().retirees_stopped, 1);
}

#[test]
fn handoff_moves_csn_assignment_and_a_retiring_primary_hands_off_first() {
    // [P97 §4.3]: the handoff takes effect where it commits; the new
    // primary assigns from the next CSN once it holds that commit. Every
    // step checks one assigner per CSN and the committed prefix.
    let world = run(&format!(
        "servers P A B\nprimary P\ncreate C by A\nsync A P\ncommit P\nhandoff C\nretire P\nsync P C\nhandoff A\ncommit *\ncommit *\nsync P C\nretire C\nwrite A W(X,1)\nsync A C\nretire P\nsync P A\nsync A B\n{}expect-converged\n",
        heal(&["P", "A", "B", "C"])
    ));
    assert_eq!(
        world.refusals()[..4],
        [
            "retire P: refused, P is the primary: hand off to another server first",
            // The committed view of P binds C only after its commit.
            "handoff A: refused, A is not a live member (created, committed and not retired)",
            // P commits its handoff: from then on no server is the primary
            // until C holds that commit.
            "commit *: refused, no running server is the primary",
            "retire C: refused, C is the primary: hand off to another server first",
        ]
    );
    let c = &world.node(&id("C")).unwrap().replica;
    assert!(c.is_primary());
    // P commits 1:A (C's creation) before 1:P (its own record: ties on
    // the stamp go by server id), then its handoff as CSN 3; CSN 4 is A's
    // write, assigned by C on receipt (a new primary autocommits), and
    // CSN 5 P's retirement.
    let committed: Vec<String> = c
        .committed()
        .map(|(n, w)| format!("{n}:{}", w.id))
        .collect();
    assert_eq!(committed, ["1:1:A", "2:1:P", "3:2:P", "4:2:A", "5:3:P"]);
    // P retired after handing off, and stopped once A held it.
    assert_eq!(world.stopped().count(), 1);
    assert_eq!(world.coverage().new_primaries, 1);
}

#[test]
fn committed_prefix_holds_across_a_handoff() {
    // [T95 §6], [P97 §4.3]: the old primary's committed sequence is a
    // prefix of the new one's, and not the other way round.
    let world = run(
        "servers P A\nprimary P\nautocommit P\ncreate C by A\nsync A P\nsync P C\nhandoff C\nsync P C\nwrite C W(X,1)\n",
    );
    let p = &world.node(&id("P")).unwrap().replica;
    let c = &world.node(&id("C")).unwrap().replica;
    assert_eq!((p.csn(), c.csn()), (3, 4));
    committed_prefix(p, c).unwrap();
    let err = committed_prefix(c, p).unwrap_err();
    assert!(err.contains("committed prefix violated: C has"), "{err}");
}

#[test]
fn the_identity_checker_catches_a_loser_that_wrote() {
    // The mutation: servers accept client writes before their creation is
    // bound. A's C writes, then B's creation of C commits first: a write
    // under the name C that the name's owner never made is in a log.
    let text = "servers P A B\nprimary P\nautocommit P\nfound P\ncreate C by A\ncreate C by B as C2\nwrite C W(X,1)\n";
    let mut world = World::new(true);
    world.set_unbound_writes(true);
    let err = try_run(&mut world, text).unwrap_err();
    assert!(err.violation);
    assert!(
        err.message.contains(
            "one server per name violated: C holds 1:C, accepted by the C created by 1:A before any creation of the name committed"
        ),
        "{err}"
    );
    // Without the mutation the same run refuses the write and passes.
    let world = run(text);
    assert_eq!(world.coverage().writes_refused, 1);
}

#[test]
fn the_retirement_checker_catches_a_retiree_that_stopped_too_early() {
    // The mutation: C stops as soon as it retires, before anyone holds its
    // retirement, so its last write exists nowhere else.
    let text = format!(
        "servers P A B\nprimary P\nautocommit P\ncreate C by A\nsync A P\nsync P C\nwrite C W(X,1)\nretire C\n{}expect-converged\n",
        heal(&["P", "A", "B", "C"])
    );
    let mut world = World::new(true);
    world.set_early_stop(true);
    let err = try_run(&mut world, &text).unwrap_err();
    assert!(err.violation);
    assert!(
        err.message
            .contains("write of a retired server lost: P is a final member after C retired but does not hold 2:C"),
        "{err}"
    );
    run(&text);
}

fn accepted(checker: &mut Checker, id: WriteId, op: Op) {
    checker.record_write(id, VersionVector::new(), None, &op);
}

fn commit(id: &WriteId, csn: u64) -> Vec<Item> {
    vec![Item::Commit {
        id: id.clone(),
        csn,
    }]
}

#[test]
fn the_epoch_checker_catches_a_second_assigner() {
    // [P97 §4.3]: P assigns CSNs 1-3, the third its handoff to C; C assigns
    // from 4. A CSN first made durable by any other server is a second
    // assigner.
    let mut checker = Checker::default();
    checker.set_first_primary(id("P"));
    let found = WriteId::new(1, id("P"));
    let create = WriteId::new(1, id("A"));
    let handoff = WriteId::new(2, id("P"));
    let w = WriteId::new(1, id("C"));
    let late = WriteId::new(3, id("P"));
    let member = |op| Op::Member(op);
    accepted(
        &mut checker,
        found.clone(),
        member(MemberOp::Create {
            server: id("P"),
            addr: "p".into(),
        }),
    );
    accepted(
        &mut checker,
        create.clone(),
        member(MemberOp::Create {
            server: id("C"),
            addr: "c".into(),
        }),
    );
    accepted(
        &mut checker,
        handoff.clone(),
        member(MemberOp::Handoff { to: id("C") }),
    );
    accepted(&mut checker, w.clone(), Op::put("X", "1"));
    accepted(&mut checker, late.clone(), Op::put("X", "2"));
    // C assigning before the handoff commits: caught.
    let mut early = checker.clone();
    let err = early
        .record_durable(&id("C"), &commit(&found, 1))
        .unwrap_err();
    assert!(
        err.contains("CSN 1 was assigned by C, but the committed order up to CSN 0 names P"),
        "{err}"
    );
    checker
        .record_durable(&id("P"), &commit(&found, 1))
        .unwrap();
    checker
        .record_durable(&id("P"), &commit(&create, 2))
        .unwrap();
    checker
        .record_durable(&id("P"), &commit(&handoff, 3))
        .unwrap();
    // Received, not assigned: no new CSN.
    checker
        .record_durable(&id("A"), &commit(&handoff, 3))
        .unwrap();
    // The old primary going on after its handoff committed: caught.
    let mut old = checker.clone();
    let err = old.record_durable(&id("P"), &commit(&late, 4)).unwrap_err();
    assert!(
        err.contains("CSN 4 was assigned by P, but the committed order up to CSN 3 names C"),
        "{err}"
    );
    checker.record_durable(&id("C"), &commit(&w, 4)).unwrap();
}

#[test]
fn membership_commands_report_bad_input() {
    // Scenario mistakes stop the run with the line; refusals by the core
    // ([P97 §4.3]) are recorded instead.
    let bad = |text: &str| {
        let err = try_run(&mut World::new(true), text).unwrap_err();
        assert!(!err.violation, "{err}");
        err.to_string()
    };
    let base = "servers P A\nprimary P\n";
    assert!(
        bad(&format!("{base}create C by A\ncreate C by P\n"))
            .contains("line 4: create C by P: a server is already called C here; address the new one `as` another name")
    );
    assert!(
        bad(&format!("{base}create A by P as A2\n"))
            .contains("line 3: create A by P: A is a static server of this run")
    );
    assert!(bad(&format!("{base}found A\n")).contains("line 3: found A: A is not the primary"));
    assert!(bad(&format!("{base}retire Q\n")).contains("line 3: unknown server Q"));
    let world = run(&format!(
        "{base}retire A\nhandoff A\ncreate C by A\ncreate D by C\nwrite D W(X,1)\n"
    ));
    assert_eq!(
        world.refusals(),
        [
            "retire A: refused, A has no committed creation record (a static server)",
            "handoff A: refused, A is not a live member (created, committed and not retired)",
            "create D by C: refused, C's creation is not committed and bound to it (yet)",
            "write D W(X,1): skipped, D was never created (C's creation is not committed and bound to it (yet))",
        ]
    );
}

#[test]
fn a_server_that_retires_before_it_learns_it_is_the_primary_passes_the_role_on() {
    // [P97 §4.3]: P's handoff to C commits at P at once (autocommit) while C
    // does not know it; C retires, which the core accepts (C is not the
    // primary where it retires). On receiving the commit C is the primary
    // and commits its own retirement; there, in the committed order, the
    // role passes to the first live member by name (P), since a retired
    // server can write nothing more, not even a handoff. C then stops, and
    // A's write commits at P.
    let world = run(&format!(
        "servers P A\nprimary P\nautocommit P\ncreate C by A\nsync A P\nsync P C\nhandoff C\nretire C\nsync C P\nsync P C\nwrite A W(X,1)\nsync A C\n{}expect-converged\n",
        heal(&["P", "A", "C"])
    ));
    let c = &world.node(&id("C")).unwrap().replica;
    assert!(c.has_retired() && !c.is_primary());
    assert!(world.node(&id("P")).unwrap().replica.is_primary());
    assert_eq!(world.stopped().count(), 1);
    for r in ["P", "A"].map(|s| &world.node(&id(s)).unwrap().replica) {
        assert_eq!(r.tentative_len(), 0, "{}", r.id());
        assert_eq!(r.csn(), 5, "{}", r.id());
    }
}

#[test]
fn a_loser_that_learns_in_a_session_it_lost_is_never_the_primary_and_stops() {
    // [P97 §4.3]: B's creation of C commits first, then a handoff to C (the
    // name, so B's C, here C2), which commits CSN 5. A's C receives CSNs
    // 1-5 in one session: at CSN 4 the handoff names its name, but the
    // committed table binds the name to B's creation, not to the one A's
    // C was given, so the core does not take it for the primary
    // (`Replica::lost_name`): the session applies whole, and C stops.
    let world = run(&format!(
        "servers P A B\nprimary P\nautocommit P\nfound P\ncreate C by A\ncreate C by B as C2\nsync B P\nsync A P\nhandoff C2\nsync P C2\nwrite C2 W(X,1)\nsync C2 P\nsync P C\n{}expect-converged\n",
        heal(&["P", "A", "B", "C", "C2"])
    ));
    assert!(
        world
            .refusals()
            .iter()
            .all(|r| !r.contains("protocol error")),
        "{:?}",
        world.refusals()
    );
    assert_eq!(world.coverage().sessions_refused_by_losers, 0);
    let (h, why) = world.stopped().next().unwrap();
    assert_eq!(
        (h.as_str(), why),
        ("C", "lost its name: C was created by 1:B, not 1:A")
    );
}

#[test]
fn a_server_recovers_a_retirement_its_checkpoint_already_records() {
    // [P97 §3.3, §4.3]: A holds C's retirement as a tentative write, then
    // its commit; A checkpoints (the table now says C retired) keeping the
    // log, and crashes. Recovery puts the retained writes back before it
    // counts C's writes as held, else the commit finds no write.
    let world = run(&format!(
        "servers P A\nprimary P\nautocommit P\ncreate C by A\nsync A P\nsync P C\nretire C\nsync C A\nsync C P\nsync P A\ntruncate A 5\ncrash A\n{}expect-converged\n",
        heal(&["P", "A", "C"])
    ));
    assert_eq!(world.coverage().restores_from_checkpoint, 1);
    assert_eq!(world.stopped().count(), 1);
}
