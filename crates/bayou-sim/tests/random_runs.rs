//! Randomised simulation: ten thousand seeded runs with clock skew, cut-off
//! sessions, commits, crashes, log truncation with random retention,
//! full-state transfers (cut off, resumed, crashed during), and bundles
//! carried between servers late, twice and out of order, signed writes
//! with a byzantine relay changing some in transit (one seed in eight),
//! servers that come and go (one seed in four, and every one of another
//! ten thousand seeds: creations, concurrent creations of one id,
//! retirements, handoffs, [P97 §4.3]), then healing;
//! every invariant of `bayou_sim::check` is verified after each step. A
//! failure prints the seed and a scenario file that reproduces it.
//!
//! More seeds: `BAYOU_SEEDS=100000 cargo test --release -p bayou-sim --test random_runs`,
//! or `bayou random --seeds 100000 --start 0`.

use bayou_sim::Coverage;

/// A count from the environment variable `name`, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
use bayou_sim::random::{Params, generate, run_seed, run_seed_with_coverage};

#[test]
fn random_runs_satisfy_every_invariant() {
    let seeds: u64 = env_or("BAYOU_SEEDS", 10_000);
    let start: u64 = env_or("BAYOU_SEED_START", 0);
    let mut coverage = Coverage::default();
    for seed in start..start + seeds {
        let result = run_seed_with_coverage(seed, Params::default());
        if let Ok(c) = &result {
            coverage.add(c);
        }
        if let Err(failure) = result {
            let dir = std::env::temp_dir().join("bayou-sim-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("seed-{seed}.bayou"));
            let _ = std::fs::write(&file, &failure.scenario);
            panic!(
                "{failure}\nscenario saved to {} (run: bayou sim --check {})",
                file.display(),
                file.display()
            );
        }
    }
    eprintln!("{seeds} seeds from {start}: {coverage:?}");
    if seeds >= 1000 {
        // The mix really reaches the paths truncation added.
        let c = coverage;
        for (what, n) in [
            ("truncations", c.truncations),
            ("full-state transfer parts", c.snapshot_parts),
            ("transfers cut off", c.cut_transfers),
            ("transfers resumed", c.resumed_transfers),
            ("installs", c.installs),
            ("restores from a checkpoint", c.restores_from_checkpoint),
            ("bundle files imported", c.bundle_files_applied),
            ("stale bundle files refused", c.bundle_files_stale),
            ("late sessions refused", c.redeliveries_refused),
            ("forged writes refused", c.forgeries_refused),
        ] {
            assert!(n > 0, "no {what} in {seeds} seeds: {c:?}");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for seed in [0, 1, 42, 9999] {
        assert_eq!(
            generate(seed, Params::default()),
            generate(seed, Params::default())
        );
    }
    assert_ne!(
        generate(1, Params::default()),
        generate(2, Params::default())
    );
}

#[test]
fn random_meeting_room_runs_converge_and_never_double_book() {
    // [T95 §2.1, Fig. 3]: requests with alternates, merged on conflict, over
    // seeded runs with crashes and cut-off sessions. Every step checks both
    // views for a slot booked twice; healing checks convergence.
    use bayou_sim::random::Workload;
    let seeds: u64 = env_or("BAYOU_MEETING_SEEDS", 2000);
    let params = Params {
        workload: Workload::Meetings,
        ..Params::default()
    };
    for seed in 0..seeds {
        if let Err(failure) = run_seed(seed, params) {
            panic!("{failure}");
        }
    }
}

#[test]
fn random_runs_with_servers_coming_and_going_satisfy_every_invariant() {
    // [P97 §4.3]: every seed creates servers (a third of them twice, by two
    // sponsors that cannot know of each other), retires some, hands the
    // primary's role around, in the whole fault mix above; every
    // invariant of `bayou_sim::check` after each step, the membership
    // ones included, and convergence of the servers still running.
    use bayou_sim::random::{Members, run_seed_members};
    let seeds: u64 = env_or("BAYOU_MEMBER_SEEDS", 10_000);
    let start: u64 = env_or("BAYOU_SEED_START", 0);
    let began = std::time::Instant::now();
    let mut coverage = Coverage::default();
    for seed in start..start + seeds {
        match run_seed_members(seed, Params::default(), true, Members::Always) {
            Ok(c) => coverage.add(&c),
            Err(failure) => {
                let dir = std::env::temp_dir().join("bayou-sim-failures");
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("members-seed-{seed}.bayou"));
                let _ = std::fs::write(&file, &failure.scenario);
                panic!("{failure}\nscenario saved to {}", file.display());
            }
        }
    }
    eprintln!(
        "{seeds} seeds with membership changes from {start} in {:.1?}: {coverage:?}",
        began.elapsed()
    );
    if seeds >= 1000 {
        let c = coverage;
        for (what, n) in [
            ("creations", c.creations),
            ("concurrent creations of one id", c.duplicate_creations),
            ("servers bound to their id", c.bound),
            ("identities lost", c.identities_lost),
            ("retirements", c.retirements),
            ("retired servers stopped", c.retirees_stopped),
            ("handoffs", c.handoffs),
            ("new primaries", c.new_primaries),
            ("client writes refused", c.writes_refused),
            ("membership commands refused", c.member_refusals),
            ("truncations", c.truncations),
            ("installs", c.installs),
            ("bundle files imported", c.bundle_files_applied),
        ] {
            assert!(n > 0, "no {what} in {seeds} seeds: {c:?}");
        }
    }
}
