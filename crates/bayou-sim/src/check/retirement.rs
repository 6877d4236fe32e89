//! No write of a retired server lost ([P97 §4.3]; [T95 §6]): a server's
//! retirement is its last write, and it stops once another server holds
//! it, so that server must hold every write the retiree accepted:
//! retirement travels behind them (a session sends a server's writes in
//! stamp order, and commits in CSN order). Version vectors cannot show it
//! (a holder drops the retiree's entry and counts it as +∞), so this
//! checker looks for each write: committed (the commit vector keeps the
//! retiree's entry) or tentative in the log. After healing, every running
//! server holds every write of every retired server.

use std::collections::{BTreeMap, BTreeSet};

use bayou_core::{Replica, ServerId, WriteId, WriteStatus};

/// `replica` holds, committed or tentative, every write in `accepted` of
/// each server in `retirees`, or (with `only_held`) of each whose
/// retirement it holds ([P97 §4.3]).
pub fn retirees_kept(
    replica: &Replica,
    retirees: &BTreeSet<ServerId>,
    accepted: &BTreeMap<ServerId, Vec<WriteId>>,
    only_held: bool,
) -> Result<(), String> {
    for x in retirees {
        if only_held && !replica.is_retired(x) {
            continue;
        }
        for w in accepted.get(x).into_iter().flatten() {
            let held = replica.commit_vv().covers(w)
                || matches!(replica.status(w), WriteStatus::Tentative);
            if !held {
                return Err(format!(
                    "write of a retired server lost: {} {} but does not hold {w}",
                    replica.id(),
                    if replica.is_retired(x) {
                        format!("holds the retirement of {x}")
                    } else {
                        format!("is a final member after {x} retired")
                    }
                ));
            }
        }
    }
    Ok(())
}
