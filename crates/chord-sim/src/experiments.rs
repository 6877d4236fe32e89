//! The experiments of SIGCOMM 2001 §6 (and the seed's examples), as functions
//! returning serializable reports. The `chord sim …` subcommands print them.
//!
//! * **Static** experiments run on a [`StaticRing`] (a sorted vector of ids,
//!   every finger computed from the definition on demand), which is exactly the
//!   state stabilization converges to; they scale to `10^6` nodes:
//!   [`path_length`] (Fig. 10) and [`load_balance`] (Fig. 8, 9).
//! * **Dynamic** experiments run the message-driven [`chord_core::Node`] in the
//!   [`Sim`]: [`failures`] (Fig. 11: a fraction of nodes fails at once, the ring
//!   re-stabilizes, then lookups) and [`churn`] (Fig. 12: Poisson joins, failures
//!   and lookups with stabilization every 15–45 s).
//!
//! Hop counting: `hops = len(path) - 1`, where the path runs from the origin to
//! the key's owner inclusive. The paper counts nodes traversed up to the key's
//! predecessor, which is one fewer for every lookup whose origin is not the
//! owner; subtract 1 to compare with its Fig. 10.

use std::collections::BTreeMap;

use chord_core::node::{Command, Config, LookupMode};
use chord_core::{ChordError, FingerRow, Id, IdSpace, StaticRing};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::sim::{NetConfig, Sim};

/// Errors from experiment parameters.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A ring or identifier problem (bits out of range, duplicates, unknown node).
    #[error(transparent)]
    Chord(#[from] ChordError),
    /// A parameter is outside its meaningful range.
    #[error("invalid parameter: {0}")]
    Invalid(String),
    /// The simulated ring did not converge in the allotted time.
    #[error("the ring did not stabilize within {0} simulated seconds")]
    NoConvergence(u64),
}

fn ensure(ok: bool, msg: impl Into<String>) -> Result<(), ExperimentError> {
    if ok {
        Ok(())
    } else {
        Err(ExperimentError::Invalid(msg.into()))
    }
}

/// Nearest-rank percentile of a sorted slice, `p` in `[0, 100]`.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ring_of(bits: u32, nodes: &[u64]) -> Result<StaticRing, ExperimentError> {
    let space = IdSpace::new(bits)?;
    let mut ids = Vec::with_capacity(nodes.len());
    for &n in nodes {
        let id = Id::from_u64(n);
        if !space.contains(id) {
            return Err(ChordError::IdOutOfRange {
                id: n.to_string(),
                bits,
            }
            .into());
        }
        ids.push(id);
    }
    Ok(StaticRing::new(space, ids)?)
}

/// `chord sim fingers`: the finger table of one node.
#[derive(Debug, Serialize)]
pub struct FingersReport {
    /// The node.
    pub node: Id,
    /// `m` rows; each interval is `[start, end)`.
    pub fingers: Vec<FingerRow>,
}

/// The finger table of `node` in the ring `nodes` with `m = bits`.
pub fn fingers(bits: u32, nodes: &[u64], node: u64) -> Result<FingersReport, ExperimentError> {
    let ring = ring_of(bits, nodes)?;
    let i = ring.index_of(Id::from_u64(node))?;
    Ok(FingersReport {
        node: ring.id(i),
        fingers: ring.finger_table(i),
    })
}

/// How `chord sim lookup` routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Message-driven iterative finger lookup in the simulator.
    Iterative,
    /// Message-driven recursive finger lookup in the simulator.
    Recursive,
    /// Successor pointers only (O(N) hops), iteratively.
    Successor,
}

/// `chord sim lookup`: one lookup's owner and path.
#[derive(Debug, Serialize)]
pub struct LookupReport {
    /// The key id.
    pub key: Id,
    /// `successor(key)`.
    pub owner: Id,
    /// Every node visited, origin first, owner last.
    pub path: Vec<Id>,
}

/// Looks up `key` from `from` on the stabilized ring `nodes` (`m = bits`).
///
/// This builds the ring in the simulator from the stabilized state (successor
/// lists of length `min(3, N-1)`), runs the message-driven lookup of
/// [`chord_core::Node`] (fingers, or successors only for [`Route::Successor`]),
/// and checks the owner against consistent hashing.
pub fn lookup(
    bits: u32,
    nodes: &[u64],
    from: u64,
    key: Id,
    route: Route,
) -> Result<LookupReport, ExperimentError> {
    let ring = ring_of(bits, nodes)?;
    let from_i = ring.index_of(Id::from_u64(from))?;
    let space = ring.space();
    ensure(
        space.contains(key),
        format!("key {key} does not fit in {bits} bits"),
    )?;
    let mut cfg = Config::new(space);
    cfg.successors = 3;
    cfg.finger_routing = route != Route::Successor;
    let mut sim = Sim::new(cfg, NetConfig::default(), 0);
    let addrs = sim.build_stable(&ring);
    let mode = if route == Route::Recursive {
        LookupMode::Recursive
    } else {
        LookupMode::Iterative
    };
    sim.lookup(addrs[from_i], key, mode);
    loop {
        for c in sim.take_completions() {
            if let Command::LookupDone { result, .. } = c.cmd {
                let out = result.map_err(|e| ExperimentError::Invalid(e.to_string()))?;
                let owner = out.owner.id;
                if owner != ring.successor(key) {
                    return Err(ExperimentError::Invalid(format!(
                        "lookup ended at {owner}, but successor({key}) is {}",
                        ring.successor(key)
                    )));
                }
                return Ok(LookupReport {
                    key,
                    owner,
                    path: out.path.iter().map(|n| n.id).collect(),
                });
            }
        }
        if !sim.step() {
            return Err(ExperimentError::Invalid("lookup did not complete".into()));
        }
    }
}

/// `chord sim path-length` (SIGCOMM Fig. 10).
#[derive(Debug, Serialize)]
pub struct PathLengthReport {
    /// N.
    pub nodes: usize,
    /// Number of lookups.
    pub lookups: usize,
    /// Mean of `len(path) - 1`.
    pub mean_hops: f64,
    /// 1st percentile of hops.
    pub p1: f64,
    /// 99th percentile of hops.
    pub p99: f64,
    /// hops → number of lookups.
    pub histogram: BTreeMap<u32, u64>,
}

/// Lookups from random origins for random keys on a ring of `nodes` random ids
/// (`m = bits`), finger walk, hops counted as `len(path) - 1`.
pub fn path_length(
    nodes: usize,
    lookups: usize,
    seed: u64,
    bits: u32,
) -> Result<PathLengthReport, ExperimentError> {
    let space = IdSpace::new(bits)?;
    ensure(nodes >= 1, "--nodes must be at least 1")?;
    ensure(lookups >= 1, "--lookups must be at least 1")?;
    ensure(
        bits >= 64 || (nodes as u128) <= (1u128 << bits),
        "more nodes than identifiers",
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ring = StaticRing::random(space, nodes, &mut rng);
    let mut hops: Vec<u32> = (0..lookups)
        .map(|_| {
            let from = rng.random_range(0..nodes);
            let key = space.random(&mut rng);
            ring.lookup_hops(from, key)
        })
        .collect();
    hops.sort_unstable();
    let mut histogram = BTreeMap::new();
    for h in &hops {
        *histogram.entry(*h).or_insert(0) += 1;
    }
    Ok(PathLengthReport {
        nodes,
        lookups,
        mean_hops: hops.iter().map(|h| *h as f64).sum::<f64>() / lookups as f64,
        p1: percentile(&hops, 1.0) as f64,
        p99: percentile(&hops, 99.0) as f64,
        histogram,
    })
}

/// `chord sim load-balance` (SIGCOMM Fig. 8, 9): keys per physical node.
#[derive(Debug, Serialize)]
pub struct LoadBalanceReport {
    /// Mean keys per physical node.
    pub mean: f64,
    /// 1st percentile.
    pub p1: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Places `keys` random keys on `nodes` physical nodes with `virtual_nodes`
/// random ids each; percentiles over all physical nodes of all `runs`.
pub fn load_balance(
    nodes: usize,
    keys: usize,
    virtual_nodes: usize,
    seed: u64,
    runs: usize,
    bits: u32,
) -> Result<LoadBalanceReport, ExperimentError> {
    let space = IdSpace::new(bits)?;
    ensure(nodes >= 1, "--nodes must be at least 1")?;
    ensure(virtual_nodes >= 1, "--virtual must be at least 1")?;
    ensure(runs >= 1, "--runs must be at least 1")?;
    ensure(
        bits >= 64 || ((nodes * virtual_nodes) as u128) <= (1u128 << bits),
        "more virtual nodes than identifiers",
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut all: Vec<u64> = Vec::with_capacity(nodes * runs);
    for _ in 0..runs {
        let ring = StaticRing::random(space, nodes * virtual_nodes, &mut rng);
        // Assign the distinct random ids to physical nodes at random: equivalent
        // to each physical node drawing `virtual_nodes` random ids.
        let mut owner: Vec<u32> = (0..nodes * virtual_nodes)
            .map(|i| (i % nodes) as u32)
            .collect();
        for i in (1..owner.len()).rev() {
            let j = rng.random_range(0..=i);
            owner.swap(i, j);
        }
        let mut count = vec![0u64; nodes];
        for _ in 0..keys {
            let k = space.random(&mut rng);
            count[owner[ring.successor_index(k)] as usize] += 1;
        }
        all.extend(count);
    }
    all.sort_unstable();
    Ok(LoadBalanceReport {
        mean: all.iter().sum::<u64>() as f64 / all.len() as f64,
        p1: percentile(&all, 1.0) as f64,
        p99: percentile(&all, 99.0) as f64,
        max: *all.last().expect("nonempty") as f64,
    })
}

/// Parameters of [`failures`].
#[derive(Clone, Debug)]
pub struct FailuresParams {
    /// N.
    pub nodes: usize,
    /// K.
    pub keys: usize,
    /// Fraction of nodes that fail at once.
    pub fail: f64,
    /// Successor-list length r.
    pub successors: usize,
    /// Copies of each key in total (`--replicas k`): the owner and its first
    /// `k - 1` successors, 1 to r + 1.
    pub replicas: usize,
    /// Lookups issued after stabilization.
    pub lookups: usize,
    /// Seed.
    pub seed: u64,
    /// m.
    pub bits: u32,
}

/// `chord sim failures` (SIGCOMM Fig. 11).
#[derive(Debug, Serialize)]
pub struct FailuresReport {
    /// Lookups that did not reach the key's owner from before the failures.
    pub failed_lookup_fraction: f64,
    /// Keys whose every copy (the owner before the failures and its first
    /// `replicas - 1` successors) failed, so no node is left to restore them from.
    pub lost_key_fraction: f64,
}

/// Details of a [`failures`] run beyond the report.
#[derive(Debug, Serialize)]
pub struct FailuresDetail {
    /// Nodes that failed.
    pub failed_nodes: usize,
    /// Simulated seconds until the ring was ideal again.
    pub stabilize_s: f64,
    /// Lookups that errored (timeouts) rather than returning a wrong owner.
    pub lookup_errors: usize,
    /// Mean hops of the successful lookups.
    pub mean_hops: f64,
    /// Events simulated.
    pub events: u64,
}

/// Builds a stable ring of `nodes` random ids and `keys` random keys, each
/// placed (by ownership, SIGCOMM §5.2) in `replicas` copies: at its owner and
/// the owner's first `replicas - 1` successors, crashes a random fraction `fail` of the nodes at
/// once, runs the message-driven protocol until Zave's *Ideal* state holds
/// (plus one more stabilization period so fingers are refreshed), then issues
/// `lookups` lookups for random keys from random live nodes. A key is lost when
/// all its copies failed; the ring core stores no values (the data plane,
/// `chord_core::data`, restores the surviving copies).
pub fn failures(p: &FailuresParams) -> Result<(FailuresReport, FailuresDetail), ExperimentError> {
    let space = IdSpace::new(p.bits)?;
    ensure(p.nodes >= 2, "--nodes must be at least 2")?;
    ensure((0.0..1.0).contains(&p.fail), "--fail must be in [0, 1)")?;
    ensure(p.successors >= 1, "--successors must be at least 1")?;
    ensure(
        (1..=p.successors + 1).contains(&p.replicas),
        "--replicas must be between 1 and successors + 1",
    )?;
    ensure(p.keys >= 1, "--keys must be at least 1")?;
    ensure(p.lookups >= 1, "--lookups must be at least 1")?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let ring = StaticRing::random(space, p.nodes, &mut rng);
    let mut cfg = Config::new(space);
    cfg.successors = p.successors;
    cfg.stabilize_ms_min = 15_000;
    cfg.stabilize_ms_max = 45_000;
    // ToN Fig. 6 fix_fingers: one finger every 10 s. Refreshing every finger at
    // each stabilization (as in the churn set-up) costs ~50x the messages at
    // N = 10^4 and changes nothing here: lookups skip dead fingers after a
    // timeout (ToN §IV-E).
    cfg.fix_fingers_ms = 10_000;
    cfg.check_predecessor_ms = 30_000;
    cfg.rpc_timeout_ms = 1_000;
    let mut sim = Sim::new(cfg, NetConfig::default(), rng.next_u64());
    let addrs = sim.build_stable(&ring);
    let keys: Vec<Id> = (0..p.keys).map(|_| space.random(&mut rng)).collect();
    let original_owner: Vec<usize> = keys.iter().map(|&k| ring.successor_index(k)).collect();
    // Fail a random subset at once.
    let failed = ((p.fail * p.nodes as f64).round() as usize).min(p.nodes - 1);
    let mut order: Vec<usize> = (0..p.nodes).collect();
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    sim.run_until(1_000);
    for &i in &order[..failed] {
        sim.crash(addrs[i]);
    }
    let t0 = sim.now();
    let deadline = t0 + 3_600_000;
    if !sim.run_until_ideal(5_000, deadline) {
        return Err(ExperimentError::NoConvergence(3_600));
    }
    let stabilize_s = (sim.now() - t0) as f64 / 1000.0;
    // One more full stabilization period: every finger refreshed.
    let t = sim.now() + 50_000;
    sim.run_until(t);

    // Lost keys: all `replicas` copies (owner and successors) failed.
    let copies = p.replicas.min(p.nodes);
    let lost = original_owner
        .iter()
        .filter(|&&o| {
            let mut j = o;
            (0..copies).all(|_| {
                let dead = !sim.is_up(addrs[j]);
                j = ring.next_index(j);
                dead
            })
        })
        .count();
    // Lookups for stored keys from random live members.
    let members: Vec<u32> = sim.members().iter().map(|m| m.1).collect();
    let mut expect = BTreeMap::new();
    for _ in 0..p.lookups {
        let ki = rng.random_range(0..keys.len());
        let from = members[rng.random_range(0..members.len())];
        if let Some(l) = sim.lookup(from, keys[ki], LookupMode::Iterative) {
            expect.insert((from, l), ring.id(original_owner[ki]));
        }
    }
    let mut failed_lookups = 0usize;
    let mut errors = 0usize;
    let mut hops = 0u64;
    let mut ok = 0u64;
    let mut done = 0usize;
    while done < expect.len() {
        for c in sim.take_completions() {
            if let Command::LookupDone { lookup, result, .. } = c.cmd
                && let Some(want) = expect.get(&(c.addr, lookup))
            {
                done += 1;
                match result {
                    Ok(o) if o.owner.id == *want => {
                        ok += 1;
                        hops += o.path.len() as u64 - 1;
                    }
                    Ok(_) => failed_lookups += 1,
                    Err(_) => {
                        failed_lookups += 1;
                        errors += 1;
                    }
                }
            }
        }
        if done < expect.len() && !sim.step() {
            break;
        }
    }
    Ok((
        FailuresReport {
            failed_lookup_fraction: failed_lookups as f64 / p.lookups as f64,
            lost_key_fraction: lost as f64 / keys.len() as f64,
        },
        FailuresDetail {
            failed_nodes: failed,
            stabilize_s,
            lookup_errors: errors,
            mean_hops: if ok > 0 { hops as f64 / ok as f64 } else { 0.0 },
            events: sim.events(),
        },
    ))
}

/// Parameters of [`churn`].
#[derive(Clone, Debug)]
pub struct ChurnParams {
    /// Initial number of nodes.
    pub nodes: usize,
    /// Joins per second and failures per second (each a Poisson process).
    pub rate: f64,
    /// Seed.
    pub seed: u64,
    /// Simulated duration per run (s).
    pub duration_s: u64,
    /// Independent runs (seeds `seed..seed+runs`).
    pub runs: usize,
    /// Successor-list length r.
    pub successors: usize,
    /// m.
    pub bits: u32,
}

/// `chord sim churn` (SIGCOMM Fig. 12).
#[derive(Debug, Serialize)]
pub struct ChurnReport {
    /// Initial nodes.
    pub nodes: usize,
    /// Join rate = failure rate (per second).
    pub rate: f64,
    /// Lookups issued (all runs).
    pub lookups: u64,
    /// Fraction of lookups that failed (timeout at a dead node, or a wrong owner).
    pub failed_lookup_fraction: f64,
    /// Half-width of the 95% confidence interval over runs (0 for one run).
    pub ci95: f64,
}

/// Starts from a stable ring of `nodes` random ids; nodes join and fail as
/// Poisson processes of rate `rate`/s each; lookups for random keys from random
/// members arrive at 1/s; each node stabilizes at intervals uniform in
/// [15, 45] s (mean 30 s) and refreshes all fingers each time; lookups are not
/// retried, so forwarding to a dead node fails the lookup; a lookup succeeds if
/// it returns the key's current owner (SIGCOMM §6.4).
pub fn churn(p: &ChurnParams) -> Result<ChurnReport, ExperimentError> {
    let space = IdSpace::new(p.bits)?;
    ensure(p.nodes >= 2, "--nodes must be at least 2")?;
    ensure(p.rate >= 0.0 && p.rate.is_finite(), "--rate must be >= 0")?;
    ensure(p.runs >= 1, "--runs must be at least 1")?;
    ensure(p.successors >= 1, "--successors must be at least 1")?;
    let mut fractions = Vec::new();
    let mut total_lookups = 0u64;
    let mut total_failed = 0u64;
    for run in 0..p.runs {
        let (l, f) = churn_run(p, space, p.seed.wrapping_add(run as u64));
        total_lookups += l;
        total_failed += f;
        fractions.push(if l > 0 { f as f64 / l as f64 } else { 0.0 });
    }
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    let ci95 = if fractions.len() > 1 {
        let var = fractions.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
            / (fractions.len() - 1) as f64;
        1.96 * (var / fractions.len() as f64).sqrt()
    } else {
        0.0
    };
    Ok(ChurnReport {
        nodes: p.nodes,
        rate: p.rate,
        lookups: total_lookups,
        failed_lookup_fraction: if total_lookups > 0 {
            total_failed as f64 / total_lookups as f64
        } else {
            0.0
        },
        ci95,
    })
}

fn exp_ms(rng: &mut ChaCha8Rng, rate_per_s: f64) -> u64 {
    if rate_per_s <= 0.0 {
        return u64::MAX / 4;
    }
    let u: f64 = rng.random();
    (-(1.0 - u).ln() / rate_per_s * 1000.0) as u64 + 1
}

fn churn_run(p: &ChurnParams, space: IdSpace, seed: u64) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ring = StaticRing::random(space, p.nodes, &mut rng);
    let mut cfg = Config::new(space);
    cfg.successors = p.successors;
    cfg.stabilize_ms_min = 15_000;
    cfg.stabilize_ms_max = 45_000;
    cfg.fix_fingers_ms = 0;
    cfg.check_predecessor_ms = 30_000;
    cfg.rpc_timeout_ms = 1_000;
    cfg.lookup_retries = false;
    let mut sim = Sim::new(cfg, NetConfig::default(), rng.next_u64());
    sim.build_stable(&ring);
    let end = p.duration_s * 1000;
    let mut next_join = exp_ms(&mut rng, p.rate);
    let mut next_fail = exp_ms(&mut rng, p.rate);
    let mut next_lookup = exp_ms(&mut rng, 1.0);
    let mut issued = 0u64;
    let mut ok = 0u64;
    let mut failed = 0u64;
    let min_size = p.successors + 1;
    loop {
        let t = next_join.min(next_fail).min(next_lookup);
        // Process events strictly before t, judging completions as they happen.
        while let Some(at) = sim.next_event_time() {
            if at >= t.min(end) {
                break;
            }
            sim.step();
            for c in sim.take_completions() {
                if let Command::LookupDone { key, result, .. } = c.cmd {
                    let truth = sim.true_successor(key).map(|x| x.0);
                    match result {
                        Ok(o) if Some(o.owner.id) == truth => ok += 1,
                        _ => failed += 1,
                    }
                }
            }
        }
        if t >= end {
            break;
        }
        sim.run_until(t);
        let members: Vec<(Id, u32)> = sim.members().iter().copied().collect();
        if t == next_lookup {
            next_lookup = t + exp_ms(&mut rng, 1.0);
            let from = members[rng.random_range(0..members.len())].1;
            let key = space.random(&mut rng);
            sim.lookup(from, key, LookupMode::Iterative);
            issued += 1;
        } else if t == next_join {
            next_join = t + exp_ms(&mut rng, p.rate);
            let mut id = space.random(&mut rng);
            while members.iter().any(|m| m.0 == id) {
                id = space.random(&mut rng);
            }
            let b = members[rng.random_range(0..members.len())].1;
            sim.join(id, b);
        } else {
            next_fail = t + exp_ms(&mut rng, p.rate);
            if members.len() > min_size {
                let victim = members[rng.random_range(0..members.len())].1;
                sim.crash(victim);
            }
        }
    }
    // Lookups still in flight at the end are not counted.
    debug_assert!(ok + failed <= issued);
    (ok + failed, failed)
}
