//! `cargo bench -p chord-sim`: throughput and footprint figures (printed, not
//! asserted).
//!
//! * time and memory to build a stable 10^6-node ring (sorted ids, m = 160);
//! * static lookups per second (finger walk over the stable ring) at N = 10^4
//!   and N = 10^6;
//! * message-driven lookups per second through the simulator (every hop a
//!   simulated message through the event queue) at N = 10^4, and the time and
//!   memory to set up those 10^4 nodes.

use std::hint::black_box;
use std::time::Instant;

use chord_core::node::{Command, Config, LookupMode};
use chord_core::{IdSpace, StaticRing};
use chord_sim::{NetConfig, Sim};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Resident set size of this process in bytes (Linux), or 0 when unknown.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn static_lookups(ring: &StaticRing, n_lookups: usize, rng: &mut ChaCha8Rng) -> (f64, f64) {
    let space = ring.space();
    let work: Vec<(usize, chord_core::Id)> = (0..n_lookups)
        .map(|_| (rng.random_range(0..ring.len()), space.random(rng)))
        .collect();
    let t = Instant::now();
    let mut hops = 0u64;
    for (from, key) in &work {
        hops += u64::from(black_box(ring.lookup_hops(*from, *key)));
    }
    let secs = t.elapsed().as_secs_f64();
    (n_lookups as f64 / secs, hops as f64 / n_lookups as f64)
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent; keep it quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let space = IdSpace::new(160).expect("160 bits");
    let mut rng = ChaCha8Rng::seed_from_u64(42);

    let big = if quick { 100_000 } else { 1_000_000 };
    let before = rss_bytes();
    let t = Instant::now();
    let ring = StaticRing::random(space, big, &mut rng);
    let build = t.elapsed().as_secs_f64();
    let after = rss_bytes();
    println!(
        "build stable ring: N = {big}, m = 160: {:.3} s, {:.1} MiB ids ({} B/node), RSS +{:.1} MiB",
        build,
        mib((ring.len() * std::mem::size_of::<chord_core::Id>()) as u64),
        std::mem::size_of::<chord_core::Id>(),
        mib(after.saturating_sub(before)),
    );
    for n in [10_000usize, big] {
        let r = if n == big {
            ring.clone()
        } else {
            StaticRing::random(space, n, &mut rng)
        };
        let (per_s, mean) = static_lookups(&r, if quick { 20_000 } else { 1_000_000 }, &mut rng);
        println!(
            "static finger-walk lookups: N = {n}: {:.0} lookups/s (mean {:.2} hops)",
            per_s, mean
        );
    }

    // A simulator holding 10^5 full protocol nodes (the dynamic experiments' scale).
    let n = if quick { 10_000 } else { 100_000 };
    let mut cfg = Config::new(space);
    cfg.successors = 8;
    let before = rss_bytes();
    let t = Instant::now();
    let mut sim = Sim::new(cfg.clone(), NetConfig::default(), 7);
    let ring = StaticRing::random(space, n, &mut rng);
    sim.build_stable(&ring);
    let setup = t.elapsed().as_secs_f64();
    let after = rss_bytes();
    println!(
        "simulator setup: {n} stable nodes (m = 160, r = 8): {:.3} s, RSS +{:.1} MiB ({:.0} B/node)",
        setup,
        mib(after.saturating_sub(before)),
        after.saturating_sub(before) as f64 / n as f64
    );
    drop(sim);

    // Message-driven lookups through the simulator. Maintenance timers are
    // pushed out so that the figure measures lookups, not stabilization.
    let n = if quick { 1_000 } else { 10_000 };
    cfg.stabilize_ms_min = 3_600_000;
    cfg.stabilize_ms_max = 3_600_000;
    cfg.fix_fingers_ms = 3_600_000;
    cfg.check_predecessor_ms = 3_600_000;
    let mut sim = Sim::new(cfg, NetConfig::default(), 7);
    let ring = StaticRing::random(space, n, &mut rng);
    let addrs = sim.build_stable(&ring);
    let lookups = if quick { 5_000 } else { 100_000 };
    let t = Instant::now();
    let mut done = 0usize;
    let mut issued = 0usize;
    let mut hops = 0usize;
    while done < lookups {
        // Keep ~1000 lookups in flight; background stabilization runs too.
        while issued < lookups && issued - done < 1000 {
            let from = addrs[rng.random_range(0..n)];
            sim.lookup(from, space.random(&mut rng), LookupMode::Iterative);
            issued += 1;
        }
        if !sim.step() {
            break;
        }
        for c in sim.take_completions() {
            if let Command::LookupDone { result: Ok(o), .. } = c.cmd {
                hops += o.path.len() - 1;
            }
            done += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "simulated message-driven lookups: N = {n}: {:.0} lookups/s wall clock (mean {:.2} hops, {:.0} events/s)",
        done as f64 / secs,
        hops as f64 / done.max(1) as f64,
        sim.events() as f64 / secs
    );
}
