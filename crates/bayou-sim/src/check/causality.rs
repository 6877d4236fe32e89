//! Causality ([P97 §4.2], the causal-accept-order): if `w2` was accepted at
//! a server that already held `w1`, then `w1` precedes `w2` in every server's
//! log, and no server holds `w2` without `w1` (or `w1` was committed and
//! discarded by truncation, [P97 §3.3], and so precedes the whole log).

use std::collections::BTreeMap;

use bayou_core::{Replica, ServerId, VersionVector, WriteId};

/// Causal order in one server's log ([P97 §4.2]): every write a client write
/// depended on is held and precedes it, and each server's writes appear in
/// accept-stamp order.
pub fn causality(replica: &Replica, deps: &BTreeMap<WriteId, VersionVector>) -> Result<(), String> {
    // Per accepting server, its writes in this log as (stamp, position).
    let mut by_server: BTreeMap<ServerId, Vec<(u64, usize)>> = BTreeMap::new();
    let mut position: BTreeMap<WriteId, usize> = BTreeMap::new();
    for (pos, (_, w)) in replica.log().enumerate() {
        by_server
            .entry(w.id.server.clone())
            .or_default()
            .push((w.id.stamp, pos));
        position.insert(w.id, pos);
    }
    for (server, writes) in &mut by_server {
        let in_log_order = writes.windows(2).all(|p| p[0].0 < p[1].0);
        if !in_log_order {
            return Err(format!(
                "causality violated at {}: writes of {server} out of accept order",
                replica.id()
            ));
        }
        // Sorted by stamp (they are, by the check above) for the searches below.
        writes.sort_unstable();
    }
    for (w2, pos2) in &position {
        let Some(dep) = deps.get(w2) else { continue };
        for (server, stamp) in dep.iter() {
            if replica.omitted().get(server) >= stamp {
                // Discarded by truncation ([P97 §3.3]): it was committed, and
                // so precedes every write still in the log.
                continue;
            }
            // A vector entry is the stamp of a real write: <stamp, server> is
            // the latest write of `server` that w2 depends on. It must be
            // held here, before w2.
            let writes = by_server.get(server).map(Vec::as_slice).unwrap_or(&[]);
            let idx = writes.partition_point(|&(s, _)| s <= stamp);
            if idx == 0 || writes[idx - 1].0 != stamp {
                return Err(format!(
                    "causality violated at {}: holds {w2} but not {stamp}:{server}, which it depends on",
                    replica.id()
                ));
            }
            if writes[idx - 1].1 > *pos2 {
                return Err(format!(
                    "causality violated at {}: {w2} precedes {stamp}:{server}, which it depends on",
                    replica.id()
                ));
            }
        }
    }
    Ok(())
}
