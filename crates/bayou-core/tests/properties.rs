//! Property tests of the replica ([T95 §5], [P97 §2-3]), with shrinking:
//! random client writes at three servers with skewed clocks, one-way
//! sessions cut off at random points, and commits; after every step each
//! view equals a fresh replay of the log, and once every pair has synced
//! all servers hold the same log and databases.

use bayou_core::{Db, Item, Op, Replica, Role, ServerId, View};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Write {
        at: usize,
        clock: u64,
        key: u8,
        value: u8,
        delete: bool,
    },
    Sync {
        from: usize,
        to: usize,
        cut: Option<usize>,
    },
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..40u64, 0..4u8, any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(at, clock, key, value, delete)| Step::Write { at, clock, key, value, delete }),
        4 => (0..3usize, 0..3usize, prop::option::of(0..5usize))
            .prop_map(|(from, to, cut)| Step::Sync { from, to, cut }),
        1 => Just(Step::Commit),
    ]
}

fn replay_matches(r: &Replica) -> Result<(), TestCaseError> {
    let mut committed = Db::new();
    for w in r.committed() {
        committed.execute(&w.op);
    }
    prop_assert_eq!(&committed, r.db(View::Committed));
    let mut full = Db::new();
    for (_, w) in r.log() {
        full.execute(&w.op);
    }
    prop_assert_eq!(&full, r.db(View::Full));
    Ok(())
}

fn session(servers: &mut [Replica], from: usize, to: usize, cut: Option<usize>) {
    let base = servers[to].summary();
    let items: Vec<Item> = {
        let all = servers[from].items_for(&base);
        match cut {
            Some(n) => all.take(n).collect(),
            None => all.collect(),
        }
    };
    servers[to].receive_session(&base, items).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn views_equal_replay_and_servers_converge(steps in prop::collection::vec(step(), 1..60)) {
        let ids = ["P", "A", "B"];
        let mut servers: Vec<Replica> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let role = if i == 0 { Role::Primary { autocommit: false } } else { Role::Secondary };
                Replica::new(ServerId::new(id).unwrap(), role)
            })
            .collect();
        for s in &steps {
            match *s {
                Step::Write { at, clock, key, value, delete } => {
                    let key = format!("K{key}");
                    let op = if delete { Op::delete(key) } else { Op::put(key, value.to_string()) };
                    servers[at].client_write(clock, op);
                }
                Step::Sync { from, to, cut } if from != to => session(&mut servers, from, to, cut),
                Step::Sync { .. } => {}
                Step::Commit => {
                    servers[0].commit_all().unwrap();
                }
            }
            for r in &servers {
                replay_matches(r)?;
            }
        }
        // Heal: every ordered pair syncs, the primary commits, again.
        for _ in 0..2 {
            for from in 0..3 {
                for to in 0..3 {
                    if from != to {
                        session(&mut servers, from, to, None);
                    }
                }
            }
            servers[0].commit_all().unwrap();
        }
        for from in 1..3 {
            session(&mut servers, 0, from, None);
        }
        let log = |r: &Replica| r.log().map(|(c, w)| bayou_core::format_entry(c, &w)).collect::<Vec<_>>();
        for r in &servers[1..] {
            prop_assert_eq!(log(r), log(&servers[0]));
            prop_assert_eq!(r.vv(), servers[0].vv());
            prop_assert_eq!(r.db(View::Full), servers[0].db(View::Full));
            prop_assert_eq!(r.tentative_len(), 0);
        }
    }
}
