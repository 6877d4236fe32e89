//! Executed once ([P97 §3.3]; [T95 §7] on the `O` vector): a write a server
//! discarded by truncation, or received inside a full-state transfer, is in
//! its checkpoint's database, so it must not also be in its log; no write
//! appears twice in a log; a write is either committed or tentative, never
//! both. Otherwise a write would be executed twice (once in the snapshot,
//! once from the log), e.g. after a full-state transfer. And counting: the
//! commits a replica executed on its committed view since it started, plus
//! the CSNs it got already executed (its recovery checkpoint, installed
//! snapshots), are exactly its CSN, so no committed write runs twice even
//! where running it again would leave the database unchanged.

use std::collections::BTreeSet;

use bayou_core::{Csn, Replica};

/// No write covered by `O` is still in the log, none appears twice, the
/// commit vector covers exactly the committed ones, and the commits executed
/// plus the `unexecuted` CSNs (reflected by a checkpoint or an installed
/// snapshot, see [`crate::world::Node::unexecuted`]) are its CSN
/// ([P97 §3.3]).
pub fn executed_once(replica: &Replica, unexecuted: Csn) -> Result<(), String> {
    let id = replica.id();
    let executed = replica.stats().commit_executions;
    if executed + unexecuted != replica.csn() {
        return Err(format!(
            "executed once violated at {id}: it executed {executed} commits and holds {unexecuted} CSNs from checkpoints and snapshots, but its CSN is {}",
            replica.csn()
        ));
    }
    let omitted = replica.omitted();
    let commit_vv = replica.commit_vv();
    // The complete vector: a retired server's entry is gone from the
    // version vector (+∞), not from `O` ([P97 §4.3]).
    if !replica.complete_vv().dominates(omitted) || !commit_vv.dominates(omitted) {
        return Err(format!(
            "executed once violated at {id}: O {omitted:?} is not below its versions {:?} and commit vector {commit_vv:?}",
            replica.vv()
        ));
    }
    let mut seen = BTreeSet::new();
    for (csn, w) in replica.log() {
        if omitted.covers(&w.id) {
            return Err(format!(
                "executed once violated at {id}: {} is covered by O {omitted:?} (in the checkpoint) but still in the log",
                w.id
            ));
        }
        if !seen.insert(w.id.clone()) {
            return Err(format!(
                "executed once violated at {id}: {} appears twice in the log",
                w.id
            ));
        }
        if csn.is_some() != commit_vv.covers(&w.id) {
            return Err(format!(
                "executed once violated at {id}: {} is {} in the log but the commit vector {commit_vv:?} says otherwise",
                w.id,
                if csn.is_some() {
                    "committed"
                } else {
                    "tentative"
                }
            ));
        }
    }
    Ok(())
}
