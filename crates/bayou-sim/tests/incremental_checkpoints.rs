//! Disks that write each checkpoint incrementally (only the keys it lists
//! as changed, as `bayou-store` does) must end up holding the checkpoint's
//! database ([P97 §3.3]). Ignored until bayou-core folds a checkpoint not
//! yet taken ([`bayou_core::Replica::take_checkpoint`]) into the next one:
//! today the second of two automatic checkpoints in one session replaces
//! the first, and the first's changed keys (or its "write everything") are
//! lost, so a store that writes only the listed keys holds a wrong database
//! and a crash restores it. Run with
//! `cargo test --release -p bayou-sim --test incremental_checkpoints -- --ignored`.

use bayou_sim::random::{Params, Workload, run_seed_with};
use bayou_sim::{World, parse};

/// A receives six commits in one session with retention 0: automatic
/// checkpoints at CSN 3 (the first: the whole database) and CSN 6 (only X
/// changed since). Only the second reaches the disk.
const TWO_CHECKPOINTS_IN_ONE_SESSION: &str = "servers P A
primary P
autocommit P
retain A 0
write P W(Z,1)
write P W(Y,1)
write P W(X,1)
write P W(X,2)
write P W(X,3)
write P W(X,4)
sync P A
sync A P
crash A
expect-converged
";

#[test]
#[ignore = "bayou-core overwrites an untaken checkpoint, losing its changed keys"]
fn two_checkpoints_in_one_session_reach_the_disk_whole() {
    let mut world = World::new(true);
    world.set_incremental_checkpoints(true);
    world
        .run(&parse(TWO_CHECKPOINTS_IN_ONE_SESSION).unwrap(), |_| {})
        .unwrap();
}

#[test]
#[ignore = "bayou-core overwrites an untaken checkpoint, losing its changed keys"]
fn random_runs_with_incremental_checkpoints() {
    let seeds: u64 = std::env::var("BAYOU_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    for workload in [Workload::KeyValue, Workload::Meetings] {
        let params = Params {
            workload,
            ..Params::default()
        };
        let n = if workload == Workload::KeyValue {
            seeds
        } else {
            seeds / 5
        };
        for seed in 0..n {
            if let Err(failure) = run_seed_with(seed, params, true) {
                panic!("{failure}");
            }
        }
    }
}

#[test]
fn whole_checkpoints_reach_the_disk() {
    // The same scenario with disks that write the whole database.
    let mut world = World::new(true);
    world
        .run(&parse(TWO_CHECKPOINTS_IN_ONE_SESSION).unwrap(), |_| {})
        .unwrap();
}
