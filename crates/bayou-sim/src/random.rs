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
//! as without them. One seed in four (or every seed, with
//! [`Members::Always`]) also has servers come and go ([P97 §4.3]), drawn
//! from a third generator: the founder records itself (`found`), new
//! servers are created with fresh ids by random sponsors (`create`), a
//! third of them concurrently with a second creation of the same id by
//! another sponsor that cannot know of the first (`create ... as dN`), so
//! one of the two loses its identity; created servers take part in the
//! random mix in place of static ones, retire (`retire`, a primary hands
//! off first), and the primary hands off at random points (`handoff`);
//! commits go to whichever server is the primary then (`commit *`). A
//! healing phase follows in which every ordered pair of servers syncs, the
//! primary commits, and every pair syncs again (three rounds with
//! membership changes, as a handoff's commit must reach the new primary
//! before it commits the rest); the run then demands convergence of the
//! servers still running. A run is a scenario
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

/// Whether a run has servers come and go ([P97 §4.3]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// One seed in four, as the seed decides ([`generate`]).
    PerSeed,
    /// Every seed.
    Always,
    /// No seed: the runs from before membership changes.
    Never,
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
    generate_with(seed, params, Members::PerSeed)
}

/// [`generate`], with membership changes as `members` says.
pub fn generate_with(seed: u64, params: Params, members: Members) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.random_range(3..=7usize);
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
    // Servers that come and go, from their own generator too.
    let mut member_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4d45_4d42_4552);
    let coming_and_going = match members {
        Members::PerSeed => member_rng.random_bool(0.25),
        Members::Always => true,
        Members::Never => false,
    };
    let mut pool = Membership {
        unused: POOL
            .iter()
            .filter(|id| !ids.contains(id))
            .map(|id| id.to_string())
            .collect(),
        live: ids.iter().map(|id| id.to_string()).collect(),
        created: Vec::new(),
        handles: ids.iter().map(|id| id.to_string()).collect(),
        primary: primary.to_string(),
        duplicates: 0,
        founder: primary.to_string(),
    };
    if coming_and_going {
        out.push(format!("found {primary}"));
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
        // This step's servers: with membership changes, a created server
        // sometimes stands in for one of the static ones.
        let mut step_ids: Vec<&str> = ids.clone();
        if coming_and_going {
            pool.step(&mut member_rng, &mut out);
            if !pool.created.is_empty() && member_rng.random_bool(0.4) {
                let k = member_rng.random_range(0..n);
                let h = member_rng.random_range(0..pool.created.len());
                step_ids[k] = &pool.created[h];
            }
        }
        let commit = if coming_and_going {
            "commit *".to_string()
        } else {
            format!("commit {primary}")
        };
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
                out.push(format!(
                    "truncate {} {}",
                    step_ids[s],
                    rng.random_range(0..=5)
                ));
            } else if roll < 35 {
                out.push(format!(
                    "retain {} {}",
                    step_ids[s],
                    rng.random_range(0..=5)
                ));
            } else if roll < 55 {
                bundles += 1;
                let r = other(&mut rng);
                let max = [80, 300, 1000, 1 << 20][rng.random_range(0..4)];
                out.push(format!(
                    "export {} {} b{bundles} {max}",
                    step_ids[s], step_ids[r]
                ));
            } else if roll < 80 {
                if bundles > 0 {
                    // A bundle carried late to any server; sometimes only
                    // one of its files (a later one first: out of order).
                    let b = rng.random_range(1..=bundles);
                    if rng.random_bool(0.25) {
                        let part = rng.random_range(1..=3);
                        out.push(format!("import-part b{b} {part} {}", step_ids[s]));
                    } else {
                        out.push(format!("import b{b} {}", step_ids[s]));
                    }
                }
            } else {
                // A crash during a transfer: a session cut part-way, then
                // its receiver or its sender crashes.
                let r = other(&mut rng);
                out.push(format!(
                    "sync {} {} {}",
                    step_ids[s],
                    step_ids[r],
                    rng.random_range(0..8)
                ));
                let victim = if rng.random_bool(0.5) { r } else { s };
                out.push(format!("crash {}", step_ids[victim]));
            }
            continue;
        }
        let roll = roll * 100 / 80;
        if roll < 40 {
            if !stuck[s] {
                out.push(format!("clock {} {}", step_ids[s], (now + skew[s]).max(0)));
            }
            match params.workload {
                Workload::KeyValue => {
                    let key = keys[rng.random_range(0..keys.len())];
                    if rng.random_bool(0.2) {
                        out.push(format!("write {} D({key})", step_ids[s]));
                    } else {
                        let value = rng.random_range(0..100);
                        out.push(format!("write {} W({key},{value})", step_ids[s]));
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
                        step_ids[s],
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
                    step_ids[s],
                    step_ids[r],
                    rng.random_range(0..6)
                ));
            } else {
                out.push(format!("sync {} {}", step_ids[s], step_ids[r]));
            }
        } else if roll < 84 {
            // A late duplicate of an earlier session between two servers.
            let mut r = rng.random_range(0..n - 1);
            if r >= s {
                r += 1;
            }
            out.push(format!("redeliver {} {}", step_ids[s], step_ids[r]));
        } else if roll < 88 {
            out.push(commit);
        } else if roll < 95 {
            out.push(format!("crash {}", step_ids[s]));
        } else {
            // Crash the primary more often than the others: it holds the CSNs.
            out.push(format!(
                "crash {}",
                pool.primary_now(coming_and_going, primary)
            ));
        }
    }
    out.push("# healing: every ordered pair syncs, the primary commits, again".into());
    let everyone: Vec<String> = if coming_and_going {
        pool.handles.clone()
    } else {
        ids.iter().map(|id| id.to_string()).collect()
    };
    let heal_round = |out: &mut Vec<String>| {
        for a in &everyone {
            for b in &everyone {
                if a != b {
                    out.push(format!("sync {a} {b}"));
                }
            }
        }
    };
    heal_round(&mut out);
    if coming_and_going {
        // By now most creations are bound: a retirement (after a handoff,
        // for the primary) that the next rounds carry everywhere.
        out.push("commit *".into());
        if !pool.created.is_empty() && member_rng.random_bool(0.5) {
            pool.retire(&mut member_rng, &mut out);
        }
        // A handoff committed in the last round reaches the new primary in
        // this one; it commits the rest, and the third round spreads that.
        heal_round(&mut out);
        out.push("commit *".into());
    } else {
        out.push(format!("commit {primary}"));
    }
    heal_round(&mut out);
    out.push("expect-converged".into());
    out.join("\n") + "\n"
}

/// Ids that exercise byte-order tie breaks: upper before lower case, "10"
/// before "9", prefixes before longer ids.
const POOL: [&str; 12] = [
    "P", "A", "B", "C", "a", "b", "9", "10", "AB", "Q7", "z", "M",
];

/// What the generator knows of the servers that come and go: what it asked
/// for, not what happened (the core may refuse; the world records that).
struct Membership {
    /// Ids of the pool not used yet.
    unused: Vec<String>,
    /// Handles of the servers not asked to retire.
    live: Vec<String>,
    /// Handles of the created servers not asked to retire.
    created: Vec<String>,
    /// Every handle, for the healing phase.
    handles: Vec<String>,
    /// The server last asked to become the primary.
    primary: String,
    /// Second creations of one id so far (handles `d1`, `d2`, …).
    duplicates: usize,
    /// The server started as primary.
    founder: String,
}

impl Membership {
    /// Perhaps one membership change: a creation (sometimes two of one id
    /// at once, by two sponsors), a retirement, or a handoff.
    fn step(&mut self, rng: &mut ChaCha8Rng, out: &mut Vec<String>) {
        let roll = rng.random_range(0..100);
        if roll < 4 && !self.unused.is_empty() && self.created.len() < 4 {
            let id = self.unused.remove(rng.random_range(0..self.unused.len()));
            let sponsor = self.live[rng.random_range(0..self.live.len())].clone();
            out.push(format!("create {id} by {sponsor}"));
            if self.live.len() > 1 && rng.random_bool(0.35) {
                // The same id by another sponsor, before the two exchange
                // anything: a concurrent creation in another partition.
                let mut other = sponsor.clone();
                while other == sponsor {
                    other = self.live[rng.random_range(0..self.live.len())].clone();
                }
                self.duplicates += 1;
                let handle = format!("d{}", self.duplicates);
                out.push(format!("create {id} by {other} as {handle}"));
                self.live.push(handle.clone());
                self.created.push(handle.clone());
                self.handles.push(handle);
            }
            self.live.push(id.clone());
            self.created.push(id.clone());
            self.handles.push(id);
        } else if roll < 7 && !self.created.is_empty() {
            self.retire(rng, out);
        } else if roll < 9 && !self.created.is_empty() {
            let to = self.created[rng.random_range(0..self.created.len())].clone();
            out.push(format!("handoff {to}"));
            if rng.random_bool(0.5) {
                out.push("commit *".into());
            }
            self.primary = to;
        }
    }

    /// A created server, or now and then the founder, retires; the
    /// primary hands off first ([P97 §4.3]).
    fn retire(&mut self, rng: &mut ChaCha8Rng, out: &mut Vec<String>) {
        let founder = rng.random_bool(0.2) && self.live.contains(&self.founder);
        let (i, x) = if founder {
            (None, self.founder.clone())
        } else {
            let i = rng.random_range(0..self.created.len());
            (Some(i), self.created[i].clone())
        };
        if x == self.primary {
            let Some(to) = self.live.iter().find(|h| **h != x).cloned() else {
                return;
            };
            out.push(format!("handoff {to}"));
            out.push("commit *".into());
            self.primary = to;
        }
        out.push(format!("retire {x}"));
        if let Some(i) = i {
            self.created.remove(i);
        }
        self.live.retain(|h| *h != x);
    }

    /// Which server the generator believes is the primary.
    fn primary_now<'a>(&'a self, coming_and_going: bool, first: &'a str) -> &'a str {
        if coming_and_going {
            &self.primary
        } else {
            first
        }
    }
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
    run_seed_members(seed, params, incremental, Members::PerSeed)
}

/// [`run_seed_with`], with membership changes as `members` says.
pub fn run_seed_members(
    seed: u64,
    params: Params,
    incremental: bool,
    members: Members,
) -> Result<Coverage, Box<Failure>> {
    let scenario = generate_with(seed, params, members);
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
