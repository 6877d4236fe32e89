//! Eventual consistency ([T95 §1, §5]; [P97 §4.2]): once every pair of
//! servers has synced and no writes are pending, all servers hold the same
//! CSN, version vector and database (both views), and the same log where
//! both retain it: truncation ([P97 §3.3]) lets servers keep different
//! amounts of committed history, never different histories.

use bayou_core::{Replica, View, format_entry};

use crate::world::World;

/// The log entries of `r` after CSN `from` (the tentative ones included).
fn log_after(r: &Replica, from: u64) -> Vec<String> {
    r.log()
        .filter(|(c, _)| c.is_none_or(|c| c > from))
        .map(|(c, w)| format_entry(c, &w))
        .collect()
}

/// All running servers hold the same CSN, version vector, both views, and
/// log where both retain it ([T95 §1]: eventual consistency). Servers that
/// stopped (retired, or lost their name, [P97 §4.3]) are not compared: the
/// final membership is the servers still running.
pub fn converged(world: &World) -> Result<(), String> {
    let mut replicas = world.replicas();
    let Some(first) = replicas.next() else {
        return Ok(());
    };
    for other in replicas {
        let from = first.osn().max(other.osn());
        let first_log = log_after(first, from);
        let log = log_after(other, from);
        if log != first_log {
            return Err(format!(
                "not converged: {} has log [{}] but {} has [{}]",
                first.id(),
                first_log.join(", "),
                other.id(),
                log.join(", ")
            ));
        }
        if other.csn() != first.csn() {
            return Err(format!(
                "not converged: {} has CSN {} but {} has {}",
                first.id(),
                first.csn(),
                other.id(),
                other.csn()
            ));
        }
        if other.vv() != first.vv() {
            return Err(format!(
                "not converged: {} has versions {:?} but {} has {:?}",
                first.id(),
                first.vv(),
                other.id(),
                other.vv()
            ));
        }
        for view in [View::Full, View::Committed] {
            if other.db(view) != first.db(view) {
                return Err(format!(
                    "not converged: {} has {view:?} db {:?} but {} has {:?}",
                    first.id(),
                    first.db(view),
                    other.id(),
                    other.db(view)
                ));
            }
        }
    }
    Ok(())
}
