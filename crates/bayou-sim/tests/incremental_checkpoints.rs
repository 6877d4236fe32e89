//! Disks that write each checkpoint incrementally (only the keys it lists
//! as changed, as `bayou-store` does) must end up holding the checkpoint's
//! database ([P97 §3.3]). The scenario below found that bayou-core replaced
//! a checkpoint not yet taken ([`bayou_core::Replica::take_checkpoint`])
//! with the next one, losing the first's changed keys, so a store that
//! writes only the listed keys held a wrong database and a crash restored
//! it; checkpoints not yet taken are now folded together. The random runs
//! use incremental disks too.

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
fn two_checkpoints_in_one_session_reach_the_disk_whole() {
    let mut world = World::new(true);
    world.set_incremental_checkpoints(true);
    world
        .run(&parse(TWO_CHECKPOINTS_IN_ONE_SESSION).unwrap(), |_| {})
        .unwrap();
}

#[test]
fn whole_checkpoints_reach_the_disk() {
    // The same scenario with disks that write the whole database.
    let mut world = World::new(true);
    world
        .run(&parse(TWO_CHECKPOINTS_IN_ONE_SESSION).unwrap(), |_| {})
        .unwrap();
}
