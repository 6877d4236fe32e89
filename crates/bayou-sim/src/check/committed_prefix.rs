//! Committed prefix ([T95 §6]; [P97 §3.1]): the primary alone commits, in
//! one order, so every server's committed sequence is a prefix of the
//! primary's. (That a durable CSN never changes and never names two writes is
//! checked as items become durable, in [`super::Checker::record_durable`].)

use bayou_core::{Csn, Replica, format_entry};

/// The server's committed writes are a prefix of the primary's ([T95 §6]).
pub fn committed_prefix(replica: &Replica, primary: &Replica) -> Result<(), String> {
    let mine = replica.committed();
    let theirs = primary.committed();
    let ok = mine.len() <= theirs.len() && mine.iter().zip(theirs).all(|(a, b)| a.id == b.id);
    if !ok {
        let show = |ws: &[bayou_core::Write]| {
            ws.iter()
                .enumerate()
                .map(|(i, w)| format_entry(Some(i as Csn + 1), w))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "committed prefix violated: {} has [{}], primary {} has [{}]",
            replica.id(),
            show(mine),
            primary.id(),
            show(theirs)
        ));
    }
    Ok(())
}
