//! One server per name ([P97 §4.3]): a name is bound to the creation write
//! that committed first; a server created by another creation of that name
//! (a concurrent creation in another partition) lost it, and must have
//! accepted no write: its writes would carry the winner's name. So a
//! server accepts client writes only once the committed order binds its
//! name to its own creation; a write accepted otherwise is recorded
//! ([`super::Checker::record_acceptor`]) and must never be in any log.

use std::collections::BTreeMap;

use bayou_core::{Replica, WriteId, WriteStatus};

/// No write accepted by a server whose name was not bound to it is in
/// `replica`'s log (or was, before truncation) ([P97 §4.3]). `unbound`
/// maps each such write to why it does not belong.
pub fn no_duplicate_identity(
    replica: &Replica,
    unbound: &BTreeMap<WriteId, String>,
) -> Result<(), String> {
    for (w, why) in unbound {
        if matches!(
            replica.status(w),
            WriteStatus::Tentative | WriteStatus::Committed(_) | WriteStatus::Truncated
        ) {
            return Err(format!(
                "one server per name violated: {} holds {w}, {why}",
                replica.id()
            ));
        }
    }
    Ok(())
}
