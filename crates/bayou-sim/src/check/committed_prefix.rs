//! Committed prefix ([T95 §6]; [P97 §3.1, §3.3]): the primary alone commits,
//! in one order, so every server's committed sequence is a prefix of the
//! primary's. Truncated logs retain only a suffix of it, so the check
//! compares the CSNs both logs retain, and every server's commit vector
//! against the record of every CSN made durable anywhere. (That a durable
//! CSN never changes and never names two writes is checked as items become
//! durable, in [`super::Checker::record_durable`].)

use std::collections::BTreeMap;

use bayou_core::{Csn, Replica, WriteId, format_entry};

/// The server's committed writes are a prefix of the primary's, compared
/// where both logs retain them ([T95 §6]). Across handoffs ([P97 §4.3])
/// the checker passes as `primary` the server with the longest committed
/// sequence: the current primary's, or one that received all of it (the
/// old primary stops at its handoff's CSN).
pub fn committed_prefix(replica: &Replica, primary: &Replica) -> Result<(), String> {
    let theirs: Vec<_> = primary.committed().collect();
    let posn = primary.osn();
    let ok = replica.csn() <= primary.csn()
        && replica
            .committed()
            .filter(|(c, _)| *c > posn)
            .all(|(c, w)| theirs[(c - posn - 1) as usize].1.id == w.id);
    if !ok {
        let show = |ws: Vec<(Csn, &bayou_core::Write)>| {
            ws.iter()
                .map(|(c, w)| format_entry(Some(*c), w))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "committed prefix violated: {} has [{}] (CSN {}), primary {} has [{}] (CSN {})",
            replica.id(),
            show(replica.committed().collect()),
            replica.csn(),
            primary.id(),
            show(theirs),
            primary.csn()
        ));
    }
    Ok(())
}

/// The server's commit vector covers exactly the writes durably committed
/// anywhere with a CSN up to its own ([P97 §3.3]): truncation and full-state
/// transfers keep the committed order whole even where the log is gone.
pub fn commit_vector_agrees(
    replica: &Replica,
    write_of: &BTreeMap<Csn, WriteId>,
) -> Result<(), String> {
    for (&csn, id) in write_of {
        let covered = replica.commit_vv().covers(id);
        if covered != (csn <= replica.csn()) {
            return Err(format!(
                "committed prefix violated at {}: CSN {csn} is {id}, but at CSN {} its commit vector {:?} {} it",
                replica.id(),
                replica.csn(),
                replica.commit_vv(),
                if covered { "covers" } else { "does not cover" }
            ));
        }
    }
    Ok(())
}
