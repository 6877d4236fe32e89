//! Ring maintenance and lookups of the message-driven core, driven by the
//! simulator. The core stores no keys: where keys live follows from the ring
//! (`successor(key)` and its successors), which these tests check through
//! lookups; stored records are the data plane's (`tests/data_plane.rs`). Invariants are Zave's (TSE 2017 / Alloy 2016): after churn
//! stops, stabilization reaches *Ideal* — one ordered ring, correct
//! predecessors, successor lists equal to the next `r` members.

use chord_core::node::{Command, Config, LookupMode};
use chord_core::ring::Walk;
use chord_core::{Id, IdSpace, StaticRing};
use chord_sim::{NetConfig, Sim};
use proptest::prelude::*;

fn cfg(bits: u32, r: usize) -> Config {
    let mut c = Config::new(IdSpace::new(bits).unwrap());
    c.successors = r;
    c
}

fn lossy() -> NetConfig {
    NetConfig {
        delay_ms_min: 5,
        delay_ms_mean_extra: 30.0,
        loss: 0.01,
    }
}

/// Grows a ring one join at a time from a single `create`, then waits for Ideal.
fn grow(sim: &mut Sim, ids: &[u64]) -> Vec<u32> {
    let space = sim.config().space;
    let mut addrs = vec![sim.create(space.id(ids[0]))];
    for (i, &id) in ids.iter().enumerate().skip(1) {
        let b = addrs[i / 2];
        addrs.push(sim.join(space.id(id), b));
        let t = sim.now() + 300;
        sim.run_until(t);
    }
    let deadline = sim.now() + 600_000;
    assert!(
        sim.run_until_ideal(1_000, deadline),
        "no convergence: {:?}",
        sim.check_ideal()
    );
    addrs
}

/// Looks `key` up from `from`, retrying after timeouts caused by lost messages.
fn lookup_retrying(sim: &mut Sim, from: u32, key: Id, mode: LookupMode) -> Vec<Id> {
    for _ in 0..10 {
        sim.lookup(from, key, mode);
        let done = run_lookups(sim, 1);
        if let Command::LookupDone {
            result: Ok(out), ..
        } = &done[0]
        {
            assert_eq!(out.owner.id, sim.true_successor(key).unwrap().0);
            return out.path.iter().map(|n| n.id).collect();
        }
    }
    panic!("lookup of {key} from {from} kept failing");
}

fn run_lookups(sim: &mut Sim, n: usize) -> Vec<Command<u32>> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(sim.take_completions().into_iter().map(|c| c.cmd));
        if out.len() < n && !sim.step() {
            break;
        }
    }
    out
}

/// Reference: ToN Fig. 6 `create`/`join` and Zave's Join; SIGCOMM §5.1 Thm. 5
/// ("at some time after the last join all successor pointers are correct").
#[test]
fn sequential_joins_converge_to_one_ordered_ring() {
    let mut sim = Sim::new(cfg(7, 3), NetConfig::default(), 1);
    grow(&mut sim, &[10, 32, 60, 90, 105, 120]);
    sim.check_ideal().unwrap();
    // Fingers converge to the definition as fix_fingers runs.
    let t = sim.now() + 30_000;
    sim.run_until(t);
    sim.check_fingers().unwrap();
}

/// Reference: seed slides "Route k = 15"; SIGCOMM §6.1 iterative and recursive
/// styles visit the same nodes.
#[test]
fn seed_route_of_key_15_is_the_same_iteratively_and_recursively() {
    let mut sim = Sim::new(cfg(7, 3), NetConfig::default(), 2);
    let addrs = grow(&mut sim, &[10, 32, 60, 90, 105, 120]);
    let t = sim.now() + 30_000;
    sim.run_until(t);
    let space = sim.config().space;
    let from = addrs[3]; // node 90
    for mode in [LookupMode::Iterative, LookupMode::Recursive] {
        sim.lookup(from, space.id(15), mode);
        let done = run_lookups(&mut sim, 1);
        let Command::LookupDone { result, .. } = &done[0] else {
            panic!("unexpected {done:?}")
        };
        let out = result.as_ref().unwrap();
        let path: Vec<Id> = out.path.iter().map(|n| n.id).collect();
        assert_eq!(
            path,
            vec![space.id(90), space.id(10), space.id(32)],
            "{mode:?}"
        );
        assert_eq!(out.owner.id, space.id(32));
    }
}

/// Reference: SIGCOMM §4.3 (successor-only lookups): with finger routing off,
/// the message-driven lookup visits exactly the nodes of the static successor
/// walk, for every key and origin of the seed ring.
#[test]
fn successor_only_lookups_follow_the_successor_walk() {
    let space = IdSpace::new(7).unwrap();
    let ids = [10u64, 32, 60, 90, 105, 120].map(|v| space.id(v)).to_vec();
    let ring = StaticRing::new(space, ids).unwrap();
    let mut c = cfg(7, 3);
    c.finger_routing = false;
    let mut sim = Sim::new(c, NetConfig::default(), 5);
    let addrs = sim.build_stable(&ring);
    for (from, addr) in addrs.iter().enumerate() {
        for key in 0..128 {
            let key = space.id(key);
            let want: Vec<Id> = ring
                .lookup_path(from, key, Walk::Successor)
                .iter()
                .map(|i| ring.id(*i))
                .collect();
            let got = lookup_retrying(&mut sim, *addr, key, LookupMode::Iterative);
            assert_eq!(got, want, "from {} key {key}", ring.id(from));
        }
    }
}

/// Reference: ToN §IV-E.3 (voluntary leave), SIGCOMM §5.2 (successor-list
/// failover) and §4.2 (a key's owner is `successor(key)`, so ownership moves
/// on join and leave): after a leave, a crash and a restart under the old id,
/// the ring is Ideal again and lookups of every key, from several members, end
/// at the key's current owner.
#[test]
fn lookups_follow_the_owner_after_a_leave_a_crash_and_a_restart() {
    let mut sim = Sim::new(cfg(16, 3), lossy(), 3);
    let ids: Vec<u64> = (0..10).map(|i| 1000 + i * 6151).collect();
    let addrs = grow(&mut sim, &ids);
    let space = sim.config().space;
    let keys: Vec<Id> = (0..50u64).map(|k| space.hash(&k.to_le_bytes())).collect();
    let owned_by = |sim: &Sim, a: u32| {
        keys.iter()
            .filter(|k| sim.true_successor(**k).unwrap().1 == a)
            .count()
    };
    assert!(owned_by(&sim, addrs[4]) > 0 && owned_by(&sim, addrs[7]) > 0);
    sim.leave(addrs[4]);
    sim.crash(addrs[7]);
    // Liveness is checked with the network healed (safety under loss above).
    sim.set_net(NetConfig::default());
    let deadline = sim.now() + 600_000;
    assert!(
        sim.run_until_ideal(1_000, deadline),
        "{:?}",
        sim.check_ideal()
    );
    let t = sim.now() + 20_000;
    sim.run_until(t);
    for (i, k) in keys.iter().enumerate() {
        // lookup_retrying checks that the lookup ends at successor(key).
        let from = [addrs[0], addrs[5], addrs[9]][i % 3];
        lookup_retrying(&mut sim, from, *k, LookupMode::Iterative);
    }
    // A restarted node rejoins with its old id and owns its keys again.
    sim.restart(addrs[7], addrs[0]);
    let deadline = sim.now() + 600_000;
    assert!(
        sim.run_until_ideal(1_000, deadline),
        "{:?}",
        sim.check_ideal()
    );
    let t = sim.now() + 20_000;
    sim.run_until(t);
    assert!(owned_by(&sim, addrs[7]) > 0);
    for (i, k) in keys.iter().enumerate() {
        let mode = if i % 2 == 0 {
            LookupMode::Iterative
        } else {
            LookupMode::Recursive
        };
        lookup_retrying(&mut sim, addrs[0], *k, mode);
    }
}

/// Determinism meta-test (style guide): the same seed gives the same trace.
#[test]
fn same_seed_gives_the_same_event_trace() {
    let run = |seed| {
        let mut sim = Sim::new(cfg(32, 3), lossy(), seed);
        let ids: Vec<u64> = (0..12).map(|i| 77 + i * 350_000_001).collect();
        grow(&mut sim, &ids);
        (sim.trace_hash(), sim.events(), sim.now())
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9).0, run(10).0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Reference: SIGCOMM §4.3 Table 1; the run-length finger table and the
    /// on-demand fingers of the static ring both equal `successor(n + 2^(i-1))`.
    #[test]
    fn fingers_equal_the_definition(bits in 3u32..=24, seed in any::<u64>(), n in 1usize..40) {
        let space = IdSpace::new(bits).unwrap();
        let n = n.min(1usize << bits.min(20));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let ring = StaticRing::random(space, n, &mut rng);
        for i in 0..n {
            let id = ring.id(i);
            for (k, row) in ring.finger_table(i).iter().enumerate() {
                let start = space.add(id, space.pow2(k as u32));
                // Brute force successor: smallest clockwise distance from start.
                let want = *ring.ids().iter().min_by_key(|x| space.distance(start, **x)).unwrap();
                prop_assert_eq!(row.start, start);
                prop_assert_eq!(row.node, want);
            }
        }
    }

    /// Reference: SIGCOMM Thm. 2; every finger-walk lookup ends at
    /// `successor(key)` within m hops, every successor-walk lookup too (O(N)).
    #[test]
    fn static_lookups_end_at_the_successor_within_m_hops(
        bits in 3u32..=64, seed in any::<u64>(), n in 1usize..200,
    ) {
        let space = IdSpace::new(bits).unwrap();
        let n = n.min(1usize << bits.min(20));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let ring = StaticRing::random(space, n, &mut rng);
        for _ in 0..50 {
            let from = rand::RngExt::random_range(&mut rng, 0..n);
            let key = space.random(&mut rng);
            let path = ring.lookup_path(from, key, Walk::Finger);
            prop_assert_eq!(ring.id(*path.last().unwrap()), ring.successor(key));
            prop_assert!(path.len() - 1 <= bits as usize, "{} hops > m", path.len() - 1);
            prop_assert_eq!(ring.lookup_hops(from, key) as usize, path.len() - 1);
            let spath = ring.lookup_path(from, key, Walk::Successor);
            prop_assert_eq!(ring.id(*spath.last().unwrap()), ring.successor(key));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Reference: Zave 2017 (Join, Stabilize, Rectify; Fail precondition: no
    /// member is left without a live successor). Joins and crashes of fewer
    /// than r consecutive members at a time, with partial stabilization in
    /// between; afterwards the ring is Ideal and lookups from every member end
    /// at successor(key).
    #[test]
    fn joins_and_crashes_restore_one_ordered_ring(
        seed in any::<u64>(),
        ops in proptest::collection::vec((0u8..3, any::<u64>(), 0u64..20_000), 1..16),
    ) {
        let r = 3;
        let mut sim = Sim::new(cfg(20, r), lossy(), seed);
        let space = sim.config().space;
        let first: Vec<u64> = (0..8).map(|i| (seed.rotate_left(i * 9) ^ (i as u64 * 0x9e37)) % (1 << 20)).collect();
        let mut ids = first.clone();
        ids.sort();
        ids.dedup();
        prop_assume!(ids.len() >= r + 2);
        grow(&mut sim, &ids);
        let keys: Vec<Id> = (0..40u64).map(|k| space.hash(&(seed ^ k).to_le_bytes())).collect();
        let t = sim.now() + 10_000;
        sim.run_until(t);
        for (op, x, wait) in ops {
            let members: Vec<(Id, u32)> = sim.members().iter().copied().collect();
            match op {
                0 | 1 => {
                    // Join a new node through a random member.
                    let id = space.id(x % (1 << 20));
                    if members.iter().all(|m| m.0 != id) {
                        let b = members[(x as usize / 7) % members.len()].1;
                        sim.join(id, b);
                    }
                }
                _ => {
                    // Crash a run of fewer than r consecutive members, keeping at
                    // least r + 1 members (Zave's minimum ring size).
                    let run = 1 + (x as usize / 3) % (r - 1);
                    if members.len() >= r + 1 + run {
                        let start = (x as usize / 11) % members.len();
                        for k in 0..run {
                            sim.crash(members[(start + k) % members.len()].1);
                        }
                        // The ring must be repaired before the next crash batch
                        // (Zave's precondition is per batch of < r consecutive failures).
                        let deadline = sim.now() + 600_000;
                        prop_assert!(sim.run_until_ideal(1_000, deadline), "{:?}", sim.check_ideal());
                        let t = sim.now() + 5_000;
                        sim.run_until(t);
                    }
                }
            }
            let t = sim.now() + wait;
            sim.run_until(t);
            // Safety under chaos: Zave's OneLiveSuccessor holds after every step.
            prop_assert!(sim.check_live_successor().is_ok(), "{:?}", sim.check_live_successor());
        }
        // Liveness phase: heal the network, then the ring must become Ideal.
        sim.set_net(NetConfig::default());
        let deadline = sim.now() + 600_000;
        prop_assert!(sim.run_until_ideal(1_000, deadline), "{:?}", sim.check_ideal());
        let t = sim.now() + 5_000;
        sim.run_until(t);
        prop_assert!(sim.check_ideal().is_ok(), "{:?}", sim.check_ideal());
        // One ordered ring: following successors from any member visits all.
        let members: Vec<(Id, u32)> = sim.members().iter().copied().collect();
        let mut cur = members[0].1;
        for k in 1..=members.len() {
            let s = sim.node(cur).unwrap().successor();
            prop_assert_eq!(s.id, members[k % members.len()].0);
            cur = s.addr;
        }
        // Lookups from every member end at successor(key).
        for (i, (_, a)) in members.iter().enumerate() {
            let mode = if i % 2 == 0 { LookupMode::Iterative } else { LookupMode::Recursive };
            let path = lookup_retrying(&mut sim, *a, keys[i % keys.len()], mode);
            prop_assert!(path.len() <= 21, "path too long: {:?}", path);
        }
    }
}
