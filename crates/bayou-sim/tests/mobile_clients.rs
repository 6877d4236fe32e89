//! Mobile clients with session guarantees ([T94 §3–4]): ten thousand seeded
//! runs of clients hopping between servers at random, every session asking
//! for all four guarantees, checked by one checker per guarantee over the
//! recorded history; and each checker shown to catch its guarantee broken
//! (the servers skip that one check).
//!
//! More seeds: `BAYOU_MOBILE_SEEDS=100000 cargo test --release -p bayou-sim --test mobile_clients`.

use bayou_core::{Guarantee, Guarantees};
use bayou_sim::mobile::{Mutation, Params, Stats, check_one, run_seed, simulate};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mobile_clients_with_all_four_guarantees_never_see_a_violation() {
    let seeds = env("BAYOU_MOBILE_SEEDS", 10_000);
    let start = env("BAYOU_MOBILE_SEED_START", 0);
    let mut total = Stats::default();
    for seed in start..start + seeds {
        match run_seed(seed, Params::default()) {
            Ok(stats) => total.add(&stats),
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!("{seeds} mobile seeds from {start}: {total:?}");
    if seeds >= 1000 {
        // The runs exercise every path: refusals, pulls, moves.
        assert!(
            total.not_yet > 0 && total.served_after_pull > 0 && total.moved > 0,
            "{total:?}"
        );
    }
}

/// Seeds, out of `within`, whose history the checker of `g` rejects when
/// the servers run with `params`.
fn caught(g: Guarantee, params: Params, within: u64) -> u64 {
    (0..within)
        .filter(|&seed| !check_one(&simulate(seed, params).0, g).is_empty())
        .count() as u64
}

#[test]
fn each_checker_catches_its_guarantee_switched_off() {
    // [T94 §3]: each guarantee's checker fails when the servers skip that
    // guarantee's check, and passes on the same seeds with the check.
    for g in Guarantee::ALL {
        let broken = Params {
            mutation: Some(Mutation::SkipCheck(g)),
            ..Params::default()
        };
        let n = caught(g, broken, 300);
        assert!(
            n > 0,
            "{g}: no violation found in 300 seeds with its check off"
        );
        assert_eq!(caught(g, Params::default(), 300), 0, "{g}");
        eprintln!("{g}: check off, violations in {n} of 300 seeds");
    }
}

#[test]
fn without_guarantees_the_checkers_find_violations_of_all_four() {
    // The same workload with sessions that ask for nothing, checked as if
    // they had asked for everything: what the guarantees prevent happens.
    for g in Guarantee::ALL {
        let n = (0..300u64)
            .filter(|&seed| {
                let (mut history, _) = simulate(
                    seed,
                    Params {
                        guarantees: Guarantees::NONE,
                        ..Params::default()
                    },
                );
                history.sessions = vec![Guarantees::ALL; history.sessions.len()];
                !check_one(&history, g).is_empty()
            })
            .count();
        assert!(n > 0, "{g}");
    }
}
