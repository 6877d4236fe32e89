//! The data plane (`chord_core::data`) under the fault simulator
//! (`chord_sim::data_sim`): message loss, duplication, delay, partitions,
//! crashes that lose unsynced data, joins, a leave, power cuts.
//!
//! Each test runs a block of seeds and reports every failing seed; one seed
//! replays exactly with `CHORD_DATA_SEED=<seed> cargo test --release -p chord-sim
//! --test data_plane`. `CHORD_DATA_SEEDS=<n>` changes the number of seeds per
//! block (CI default below: 10 000 with faults in all).

use chord_sim::data_sim::{DataSimConfig, run_seed};

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("CHORD_DATA_SEED") {
        return vec![s.parse().expect("CHORD_DATA_SEED is a number")];
    }
    let n = std::env::var("CHORD_DATA_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

fn run_block(cfg: &DataSimConfig, base: u64, n: u64) {
    let mut failures = Vec::new();
    let mut acked = 0;
    let mut purged = 0;
    let seeds = seeds(n);
    for s in &seeds {
        let seed = if seeds.len() == 1 { *s } else { base + s };
        match run_seed(cfg, seed) {
            Ok(r) => {
                acked += r.writes_acked;
                purged += r.purged;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds violated a checker; first ones:\n{}",
        failures.len(),
        seeds.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    if seeds.len() > 1 {
        assert!(acked > 0, "no write was ever acknowledged");
        assert!(purged > 0, "no tombstone was ever purged");
    }
}

#[test]
fn without_faults_every_key_has_k_copies_and_reads_return_the_last_write() {
    let cfg = DataSimConfig {
        faults: false,
        ..DataSimConfig::default()
    };
    run_block(&cfg, 1_000_000, 50);
}

#[test]
fn under_faults_three_copies_lose_no_acknowledged_write_seeds_0_to_2999() {
    run_block(&DataSimConfig::default(), 0, 3000);
}

#[test]
fn under_faults_three_copies_lose_no_acknowledged_write_seeds_3000_to_5999() {
    run_block(&DataSimConfig::default(), 3000, 3000);
}

#[test]
fn under_faults_three_copies_lose_no_acknowledged_write_seeds_6000_to_7999() {
    run_block(&DataSimConfig::default(), 6000, 2000);
}

#[test]
fn under_faults_two_copies_and_seven_nodes_lose_no_acknowledged_write() {
    let cfg = DataSimConfig {
        nodes: 7,
        copies: 2,
        ..DataSimConfig::default()
    };
    run_block(&cfg, 100_000, 2000);
}
