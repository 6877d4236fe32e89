//! No acknowledged write lost ([T95 §6]; [P97 §3]: a server makes a write
//! durable before it acknowledges it to the client): every acknowledged
//! write stays covered by its server's version vector forever, across
//! crashes, truncations and full-state transfers, and once the system has
//! healed, by every server's.

use bayou_core::{Replica, WriteId};

/// `replica` still covers every write in `acked` ([T95 §6]).
pub fn acknowledged_kept<'a>(
    replica: &Replica,
    acked: impl IntoIterator<Item = &'a WriteId>,
) -> Result<(), String> {
    // The complete vector: a server whose retirement is held has no entry,
    // and counts as +∞ ([P97 §4.3]); `retirees_kept` checks those writes
    // one by one.
    let vv = replica.complete_vv();
    for w in acked {
        if !vv.covers(w) {
            return Err(format!(
                "acknowledged write lost: {} does not hold {w} (its versions are {:?})",
                replica.id(),
                replica.vv()
            ));
        }
    }
    Ok(())
}
