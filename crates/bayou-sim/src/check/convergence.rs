//! Eventual consistency ([T95 §1, §5]; [P97 §4.2]): once every pair of
//! servers has synced and no writes are pending, all servers hold the same
//! log, version vector and database.

use bayou_core::{View, format_entry};

use crate::world::World;

/// All servers hold the same log, version vector and both views
/// ([T95 §1]: eventual consistency).
pub fn converged(world: &World) -> Result<(), String> {
    let mut replicas = world.replicas();
    let Some(first) = replicas.next() else {
        return Ok(());
    };
    let first_log: Vec<String> = first.log().map(|(c, w)| format_entry(c, &w)).collect();
    for other in replicas {
        let log: Vec<String> = other.log().map(|(c, w)| format_entry(c, &w)).collect();
        if log != first_log {
            return Err(format!(
                "not converged: {} has log [{}] but {} has [{}]",
                first.id(),
                first_log.join(", "),
                other.id(),
                log.join(", ")
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
