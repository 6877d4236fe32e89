//! One booking per slot ([T95 §2.1]): the meeting-room scheduler must never
//! book a room twice for one slot, in either view.

use bayou_core::{Replica, View};

/// No room is booked twice for one slot, in either view ([T95 §2.1]).
pub fn schedule(replica: &Replica) -> Result<(), String> {
    for view in [View::Full, View::Committed] {
        let db = replica.db(view);
        bayou_apps::meeting::check_schedule(db.iter().map(|(k, v)| (&k[..], &v[..])))
            .map_err(|e| format!("schedule broken at {} ({view:?} view): {e}", replica.id()))?;
    }
    Ok(())
}
