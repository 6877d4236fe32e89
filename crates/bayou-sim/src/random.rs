//! Seeded random runs: a generator of scenarios, and a driver that runs them
//! with every invariant checked.
//!
//! One seed determines everything: the number of servers (3–7) and their ids,
//! which is primary and whether it commits on receipt, each server's clock
//! skew, each server's retention policy, and a sequence of client writes,
//! one-way syncs in random order, sessions cut off part-way (in a log
//! transfer or in a full-state transfer, [P97 §3.3]), late duplicates of old
//! sessions, commits, crashes (also right after a cut session, of its sender
//! or its receiver), truncations keeping 0–5 committed writes, and bundles
//! ([P97 §4.1]) exported for one server's state, possibly split into several
//! files, and imported later at random servers: delayed, duplicated, out of
//! order. One seed in eight also signs writes (`sign`), gives the servers'
//! clients authors (`author`), and has a byzantine relay change writes in
//! transit (`tamper`), which the receivers must refuse; those commands are
//! drawn from a second generator, so the rest of each seed's run is the same
//! as without them. A healing phase follows in
//! which every ordered pair of servers syncs, the primary commits, and every
//! pair syncs again; the run then demands convergence. A run is a scenario
//! file, so a failing seed is reproduced by `bayou sim --check` on the file
//! printed with the failure, as well as by replaying the seed.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{self, Command, Line};
use crate::world::{Coverage, RunError, World};

/// What the clients write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Plain `W(key,value)` and `D(key)` writes on a few keys.
    KeyValue,
    /// Meeting-room requests with alternates ([T95 Fig. 3]): Bayou writes
    /// with dependency checks and merge procedures, competing for few slots.
    Meetings,
}

/// Knobs of the generator, all derived from the seed unless overridden.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// How many commands before the healing phase, at most.
    pub max_steps: usize,
    /// What the clients write.
    pub workload: Workload,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_steps: 120,
            workload: Workload::KeyValue,
        }
    }
}

/// Generates the scenario of `seed` as text in the scenario language.
pub fn generate(seed: u64, params: Params) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.random_range(3..=7usize);
    // Ids that exercise byte-order tie breaks: upper before lower case,
    // "10" before "9", prefixes before longer ids.
    const POOL: [&str; 12] = [
        "P", "A", "B", "C", "a", "b", "9", "10", "AB", "Q7", "z", "M",
    ];
    let mut ids: Vec<&str> = Vec::new();
    while ids.len() < n {
        let id = POOL[rng.random_range(0..POOL.len())];
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut out = vec![
        format!("# random run, seed {seed}, {:?} workload", params.workload),
        format!("servers {}", ids.join(" ")),
    ];
    let primary = ids[rng.random_range(0..n)];
    out.push(format!("primary {primary}"));
    let autocommit = rng.random_bool(0.5);
    if autocommit {
        out.push(format!("autocommit {primary}"));
    }
    // Signed writes and tampering relays, from their own generator.
    let mut byzantine = ChaCha8Rng::seed_from_u64(seed ^ 0x5349_474e_4544);
    let signed = byzantine.random_bool(0.125);
    if signed {
        out.push("sign".into());
    }
    // Clock skew: each server runs ahead or behind by up to 20 ticks, and
    // some clocks are stuck (never advance), like the slides' servers.
    let skew: Vec<i64> = (0..n).map(|_| rng.random_range(-20..=20)).collect();
    let stuck: Vec<bool> = (0..n).map(|_| rng.random_bool(0.2)).collect();
    // Some servers truncate automatically: keep at most 0-5 committed writes.
    for id in &ids {
        if rng.random_bool(0.3) {
            out.push(format!("retain {id} {}", rng.random_range(0..=5)));
        }
    }
    let mut bundles = 0;
    let keys = ["X", "Y", "Z", "K1", "K2"];
    let steps = rng.random_range(params.max_steps / 4..=params.max_steps);
    let mut now: i64 = 0;
    let mut meetings = 0;
    for _ in 0..steps {
        if signed {
            let roll = byzantine.random_range(0..100);
            let s = byzantine.random_range(0..n);
            if roll < 8 {
                let who = ["alice", "bob", "-"][byzantine.random_range(0..3)];
                out.push(format!("author {} {who}", ids[s]));
            } else if roll < 16 {
                let r = (s + byzantine.random_range(1..n)) % n;
                let what = if byzantine.random_bool(0.5) {
                    "value"
                } else {
                    "author"
                };
                out.push(format!("tamper {} {} {what}", ids[s], ids[r]));
            }
        }
        now += rng.random_range(0..4);
        let s = rng.random_range(0..n);
        let roll = rng.random_range(0..100);
        let other = |rng: &mut ChaCha8Rng| {
            let mut r = rng.random_range(0..n - 1);
            if r >= s {
                r += 1;
            }
            r
        };
        if roll >= 80 {
            // Truncation and bundles, then the old mix below 80.
            let roll = rng.random_range(0..100);
            if roll < 30 {
                out.push(format!("truncate {} {}", ids[s], rng.random_range(0..=5)));
            } else if roll < 35 {
                out.push(format!("retain {} {}", ids[s], rng.random_range(0..=5)));
            } else if roll < 55 {
                bundles += 1;
                let r = other(&mut rng);
                let max = [80, 300, 1000, 1 << 20][rng.random_range(0..4)];
                out.push(format!("export {} {} b{bundles} {max}", ids[s], ids[r]));
            } else if roll < 80 {
                if bundles > 0 {
                    // A bundle carried late to any server; sometimes only
                    // one of its files (a later one first: out of order).
                    let b = rng.random_range(1..=bundles);
                    if rng.random_bool(0.25) {
                        let part = rng.random_range(1..=3);
                        out.push(format!("import-part b{b} {part} {}", ids[s]));
                    } else {
                        out.push(format!("import b{b} {}", ids[s]));
                    }
                }
            } else {
                // A crash during a transfer: a session cut part-way, then
                // its receiver or its sender crashes.
                let r = other(&mut rng);
                out.push(format!(
                    "sync {} {} {}",
                    ids[s],
                    ids[r],
                    rng.random_range(0..8)
                ));
                let victim = if rng.random_bool(0.5) { r } else { s };
                out.push(format!("crash {}", ids[victim]));
            }
            continue;
        }
        let roll = roll * 100 / 80;
        if roll < 40 {
            if !stuck[s] {
                out.push(format!("clock {} {}", ids[s], (now + skew[s]).max(0)));
            }
            match params.workload {
                Workload::KeyValue => {
                    let key = keys[rng.random_range(0..keys.len())];
                    if rng.random_bool(0.2) {
                        out.push(format!("write {} D({key})", ids[s]));
                    } else {
                        let value = rng.random_range(0..100);
                        out.push(format!("write {} W({key},{value})", ids[s]));
                    }
                }
                Workload::Meetings => {
                    // Two rooms, two days, hours 9-12: few slots, many conflicts.
                    meetings += 1;
                    let room = rng.random_range(1..=2);
                    let hours = rng.random_range(1..=2);
                    let mut times = Vec::new();
                    for _ in 0..rng.random_range(1..=4) {
                        times.push(format!(
                            "{}/{}",
                            rng.random_range(1..=2),
                            rng.random_range(9..=12)
                        ));
                    }
                    out.push(format!(
                        "meeting {} m{meetings} R{room} {hours} {}",
                        ids[s],
                        times.join(" ")
                    ));
                }
            }
        } else if roll < 80 {
            let mut r = rng.random_range(0..n - 1);
            if r >= s {
                r += 1;
            }
            if rng.random_bool(0.3) {
                out.push(format!(
                    "sync {} {} {}",
                    ids[s],
                    ids[r],
                    rng.random_range(0..6)
                ));
            } else {
                out.push(format!("sync {} {}", ids[s], ids[r]));
            }
        } else if roll < 84 {
            // A late duplicate of an earlier session between two servers.
            let mut r = rng.random_range(0..n - 1);
            if r >= s {
                r += 1;
            }
            out.push(format!("redeliver {} {}", ids[s], ids[r]));
        } else if roll < 88 {
            out.push(format!("commit {primary}"));
        } else if roll < 95 {
            out.push(format!("crash {}", ids[s]));
        } else {
            // Crash the primary more often than the others: it holds the CSNs.
            out.push(format!("crash {primary}"));
        }
    }
    out.push("# healing: every ordered pair syncs, the primary commits, again".into());
    let heal_round = |out: &mut Vec<String>| {
        for a in &ids {
            for b in &ids {
                if a != b {
                    out.push(format!("sync {a} {b}"));
                }
            }
        }
    };
    heal_round(&mut out);
    out.push(format!("commit {primary}"));
    heal_round(&mut out);
    out.push("expect-converged".into());
    out.join("\n") + "\n"
}

/// A failed random run.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What went wrong, with the line of the scenario.
    pub error: RunError,
    /// The scenario that reproduces it with `bayou sim --check`.
    pub scenario: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at {}\nreplay: bayou random --seed {} (or save the scenario below and run `bayou sim --check FILE`)\n--- scenario ---\n{}",
            self.seed, self.error, self.seed, self.scenario
        )
    }
}

/// Runs the scenario of `seed` with every invariant checked, and requires
/// that everything committed in the end.
pub fn run_seed(seed: u64, params: Params) -> Result<(), Box<Failure>> {
    run_seed_with_coverage(seed, params).map(|_| ())
}

/// [`run_seed`], also returning what the run exercised.
pub fn run_seed_with_coverage(seed: u64, params: Params) -> Result<Coverage, Box<Failure>> {
    run_seed_with(seed, params, true)
}

/// [`run_seed_with_coverage`], with disks that write checkpoints
/// incrementally when `incremental` ([`World::set_incremental_checkpoints`]).
pub fn run_seed_with(
    seed: u64,
    params: Params,
    incremental: bool,
) -> Result<Coverage, Box<Failure>> {
    let scenario = generate(seed, params);
    let fail = |error: RunError| {
        Box::new(Failure {
            seed,
            error,
            scenario: scenario.clone(),
        })
    };
    let lines: Vec<Line> = scenario::parse(&scenario).map_err(|e| {
        fail(RunError {
            line: e.line,
            message: format!("generated scenario does not parse: {}", e.message),
            violation: true,
        })
    })?;
    let mut world = World::new(true);
    world.set_incremental_checkpoints(incremental);
    world.run(&lines, |_| {}).map_err(fail)?;
    // After healing, nothing is left tentative (the primary saw every write).
    let last_line = lines.last().map(|l| l.number).unwrap_or(0);
    for r in world.replicas() {
        if r.tentative_len() > 0 {
            return Err(fail(RunError {
                line: last_line,
                message: format!(
                    "{} still holds {} tentative writes after healing",
                    r.id(),
                    r.tentative_len()
                ),
                violation: true,
            }));
        }
    }
    debug_assert!(matches!(
        lines.last().map(|l| &l.command),
        Some(Command::ExpectConverged)
    ));
    Ok(*world.coverage())
}
