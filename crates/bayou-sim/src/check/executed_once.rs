//! Executed once ([P97 §3.3]; [T95 §7] on the `O` vector): a write a server
//! discarded by truncation, or received inside a full-state transfer, is in
//! its checkpoint's database, so it must not also be in its log; no write
//! appears twice in a log; a write is either committed or tentative, never
//! both. Otherwise a write would be executed twice (once in the snapshot,
//! once from the log), e.g. after a full-state transfer.

use std::collections::BTreeSet;

use bayou_core::Replica;

/// No write covered by `O` is still in the log, none appears twice, and the
/// commit vector covers exactly the committed ones ([P97 §3.3]).
pub fn executed_once(replica: &Replica) -> Result<(), String> {
    let id = replica.id();
    let omitted = replica.omitted();
    let commit_vv = replica.commit_vv();
    if !replica.vv().dominates(omitted) || !commit_vv.dominates(omitted) {
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
