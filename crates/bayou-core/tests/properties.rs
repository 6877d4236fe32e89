//! Property tests of the replica ([T95 §5], [P97 §2-3]), with shrinking:
//! random client writes at three servers with skewed clocks, one-way
//! sessions cut off at random points (chunk by chunk, full-state transfers
//! included), bundle files, truncations and commits; after every step the
//! committed view equals a replay of the primary's commit order up to the
//! replica's CSN and the full view continues it with the tentative log, and
//! once every pair has synced all servers hold the same state.

use bayou_core::{
    ChunkLimits, Db, Op, Replica, Role, ServerId, SessionSender, View, Write, bundle,
};
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
    Truncate {
        at: usize,
        keep: u64,
    },
    Bundle {
        from: usize,
        to: usize,
        max_bytes: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..40u64, 0..4u8, any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(at, clock, key, value, delete)| Step::Write { at, clock, key, value, delete }),
        4 => (0..3usize, 0..3usize, prop::option::of(0..5usize))
            .prop_map(|(from, to, cut)| Step::Sync { from, to, cut }),
        1 => Just(Step::Commit),
        1 => (0..3usize, 0..4u64).prop_map(|(at, keep)| Step::Truncate { at, keep }),
        1 => (0..3usize, 0..3usize, 40..400usize)
            .prop_map(|(from, to, max_bytes)| Step::Bundle { from, to, max_bytes }),
    ]
}

/// The committed view is the primary's commit order replayed up to this
/// replica's CSN ([T95 §6]); the full view continues it with the tentative
/// writes in log order ([T95 §5]).
fn replay_matches(r: &Replica, history: &[Write]) -> Result<(), TestCaseError> {
    let mut committed = Db::new();
    for w in &history[..r.csn() as usize] {
        committed.execute(&w.op);
    }
    prop_assert_eq!(&committed, r.db(View::Committed));
    let mut full = committed;
    for (_, w) in r.log().skip(r.retained_len()) {
        full.execute(&w.op);
    }
    prop_assert_eq!(&full, r.db(View::Full));
    // The retained committed writes are the primary's, at their CSNs.
    for (csn, w) in r.committed() {
        prop_assert_eq!(&history[csn as usize - 1].id, &w.id);
    }
    Ok(())
}

/// One-way session, one item or database entry per chunk, cut after `cut`
/// chunks.
fn session(servers: &mut [Replica], from: usize, to: usize, cut: Option<usize>) {
    let base = servers[to].summary();
    let mut sender = SessionSender::new(base.clone());
    let limits = ChunkLimits { items: 1, bytes: 1 };
    let mut chunks = Vec::new();
    while cut.is_none_or(|n| chunks.len() < n) {
        match sender.next_chunk(&mut servers[from], limits) {
            Some(c) => chunks.push(c),
            None => break,
        }
    }
    servers[to].receive_session(&base, chunks).unwrap();
}

/// Records the primary's new commits before any truncation can drop them.
fn capture(primary: &Replica, history: &mut Vec<Write>) {
    for (csn, w) in primary.committed() {
        if csn as usize > history.len() {
            assert_eq!(csn as usize, history.len() + 1);
            history.push(w.clone());
        }
    }
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
        let mut history: Vec<Write> = Vec::new();
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
                Step::Truncate { at, keep } => {
                    servers[at].checkpoint(Some(keep));
                }
                Step::Bundle { from, to, max_bytes } if from != to => {
                    let base = servers[to].summary();
                    let files = bundle::export(&mut servers[from], base, max_bytes, ChunkLimits::default());
                    // Every part, in order; re-importing is harmless.
                    for f in files.iter().chain(&files) {
                        let b = bundle::decode(f).unwrap();
                        servers[to].import_bundle(&b).unwrap();
                    }
                }
                Step::Bundle { .. } => {}
            }
            capture(&servers[0], &mut history);
            for r in &servers {
                replay_matches(r, &history)?;
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
            capture(&servers[0], &mut history);
        }
        for from in 1..3 {
            session(&mut servers, 0, from, None);
        }
        for r in &servers {
            replay_matches(r, &history)?;
        }
        for r in &servers[1..] {
            prop_assert_eq!(r.csn(), servers[0].csn());
            prop_assert_eq!(r.vv(), servers[0].vv());
            prop_assert_eq!(r.db(View::Full), servers[0].db(View::Full));
            prop_assert_eq!(r.db(View::Committed), servers[0].db(View::Committed));
            prop_assert_eq!(r.tentative_len(), 0);
        }
    }
}
